"""Enrollment end to end: the real agent and a swtpm against the real verifier over gRPC.

Each test is named after what it tries. A refused enrollment must leave nothing stored.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import threading
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import serialization

from agent.flows import choose_ek, enroll
from agent.state import AgentState
from agent.tpm import Tpm
from fleetattest.v1 import fleetattest_pb2 as pb
from fleetattest.v1 import fleetattest_pb2_grpc as pb_grpc
from simulator.fleet import Fleet, RunningVerifier, SimDevice
from simulator.profiles import GOOD_A
from simulator.softquote import AK_ATTRIBUTES, DECRYPT, FIXED_TPM, RESTRICTED, SoftAk

pytestmark = pytest.mark.swtpm
GOLDEN = Path(__file__).resolve().parent.parent / "golden_measurements"


def address(fleet: Fleet) -> str:
    return fleet.live.address


def stored_devices(fleet: Fleet) -> int:
    return len(fleet.live.store.list_devices())


def refused(call: object) -> grpc.RpcError:
    assert callable(call)
    with pytest.raises(grpc.RpcError) as info:
        call()
    error = info.value
    assert isinstance(error, grpc.RpcError)
    return error


def start_request(device: SimDevice, ak_public: bytes | None = None) -> pb.StartEnrollmentRequest:
    """A StartEnrollment as the agent would send it, optionally with another AK."""
    state = AgentState(device.workdir / "agent-state")
    with Tpm.open(device.tpm.tcti) as tpm:
        alg, cert = choose_ek(tpm, "auto")
        ek = tpm.create_ek(alg)
        ak = tpm.load_or_create_ak(state, "ecc")
        return pb.StartEnrollmentRequest(
            ek_certificate=cert,
            ek_public=ek.public,
            ak_public=ak_public if ak_public is not None else ak.public,
            labels={"model": "sim-gateway"},
        )


def test_good_enrollment_stores_the_device_under_its_ek_derived_id(fleet: Fleet) -> None:
    device = fleet.add_device("good", GOOD_A)
    device_id = device.enroll(address(fleet))
    assert device_id.startswith("dev-") and len(device_id) == 68
    record = fleet.live.store.get_device(device_id)
    assert record is not None and record.enrollment_count == 1


def test_agent_restart_reuses_its_ak_without_reenrolling(fleet: Fleet) -> None:
    device = fleet.add_device("restart", GOOD_A)
    first = device.enroll(address(fleet))
    ak_before = (device.workdir / "agent-state").iterdir()
    snapshot = {p.name: p.read_bytes() for p in ak_before}
    second = enroll(device.config(address(fleet)), threading.Event())  # a new agent process
    assert second == first
    assert {p.name: p.read_bytes() for p in (device.workdir / "agent-state").iterdir()} == snapshot
    record = fleet.live.store.get_device(first)
    assert record is not None and record.enrollment_count == 1


def test_reenrolling_the_same_ek_and_ak_is_idempotent_and_counted(fleet: Fleet) -> None:
    device = fleet.add_device("again", GOOD_A)
    first = device.enroll(address(fleet))
    again = enroll(device.config(address(fleet)), threading.Event(), force=True)
    assert again == first
    record = fleet.live.store.get_device(first)
    assert record is not None and record.enrollment_count == 2
    assert stored_devices(fleet) == 1


def test_ek_certificate_from_an_unknown_ca_is_refused(fleet: Fleet) -> None:
    device = fleet.add_device("unknown-ca", GOOD_A, ek_issuer="unknown")
    error = refused(lambda: device.enroll(address(fleet)))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "UntrustedEndorsement" in str(error.details())
    assert stored_devices(fleet) == 0


def test_expired_ek_certificate_is_refused(fleet: Fleet) -> None:
    device = fleet.add_device("expired", GOOD_A)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    device.tpm.provision_ek_certificate(
        fleet.ca, "rsa", not_before=past - dt.timedelta(days=365), not_after=past
    )
    error = refused(lambda: device.enroll(address(fleet)))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert stored_devices(fleet) == 0


def test_ek_certificate_for_another_key_is_refused(fleet: Fleet) -> None:
    donor = fleet.add_device("donor", GOOD_A)
    device = fleet.add_device("mismatch", GOOD_A)
    device.tpm.provision_ek_certificate(fleet.ca, "rsa", key_override=donor.tpm.ek_public_key())
    error = refused(lambda: device.enroll(address(fleet)))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert stored_devices(fleet) == 0


def test_missing_intermediate_ca_is_refused(fleet: Fleet, tmp_path: Path) -> None:
    roots_only = fleet.ca.write_trust_dir(tmp_path / "roots-only", include_intermediate=False)
    verifier = RunningVerifier(tmp_path / "v2", roots_only, GOLDEN, pki=fleet.pki)
    try:
        device = fleet.add_device("no-intermediate", GOOD_A)
        error = refused(lambda: device.enroll(verifier.address))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert verifier.store.list_devices() == []
    finally:
        verifier.close()


def test_allowlisted_ek_without_a_certificate_enrolls(fleet: Fleet, tmp_path: Path) -> None:
    device = fleet.add_device("allowlisted", GOOD_A)
    device.tpm.remove_ek_certificate("rsa")
    refused_id = refused(lambda: device.enroll(address(fleet)))
    assert refused_id.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert start_request(device).ek_certificate == b""
    # The allowlist holds the EK fingerprint: SHA-256 of the EK's SubjectPublicKeyInfo.
    spki = device.tpm.ek_public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    fingerprint = hashlib.sha256(spki).hexdigest()
    device_id = f"dev-{fingerprint}"
    allowlist = tmp_path / "allowlist"
    allowlist.write_text(f"# lab TPM without EK certificate\n{fingerprint}\n")
    verifier = RunningVerifier(
        tmp_path / "v3", fleet.trust_dir, GOLDEN, allowlist=allowlist, pki=fleet.pki
    )
    try:
        assert device.enroll(verifier.address) == device_id
    finally:
        verifier.close()


@pytest.mark.parametrize(
    ("attributes", "attack"),
    [
        (AK_ATTRIBUTES & ~RESTRICTED, "unrestricted"),
        (AK_ATTRIBUTES | DECRYPT, "decrypt-capable"),
        (AK_ATTRIBUTES & ~FIXED_TPM, "exportable"),
    ],
)
def test_unacceptable_ak_is_refused(fleet: Fleet, attributes: int, attack: str) -> None:
    device = fleet.add_device(f"ak-{attack}", GOOD_A)
    request = start_request(device, SoftAk.generate(attributes).tpm2b_public)
    with fleet.live.agent_channel() as ch:
        error = refused(lambda: pb_grpc.AgentStub(ch).StartEnrollment(request))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "UnacceptableKey" in str(error.details())
    assert stored_devices(fleet) == 0


def test_wrong_activation_proof_is_refused(fleet: Fleet) -> None:
    device = fleet.add_device("wrong-proof", GOOD_A)
    with fleet.live.agent_channel() as ch:
        stub = pb_grpc.AgentStub(ch)
        started = stub.StartEnrollment(start_request(device))
        finish = pb.FinishEnrollmentRequest(
            challenge_id=started.challenge_id, proof=secrets.token_bytes(32)
        )
        error = refused(lambda: stub.FinishEnrollment(finish))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert stored_devices(fleet) == 0


def activate(device: SimDevice, started: pb.StartEnrollmentResponse) -> bytes:
    state = AgentState(device.workdir / "agent-state")
    with Tpm.open(device.tpm.tcti) as tpm:
        alg, _ = choose_ek(tpm, "auto")
        ek = tpm.create_ek(alg)
        ak = tpm.load_or_create_ak(state, "ecc")
        return tpm.activate_credential(ak, ek, started.credential_blob, started.encrypted_secret)


def test_replayed_activation_is_refused(fleet: Fleet) -> None:
    device = fleet.add_device("replay-activation", GOOD_A)
    with fleet.live.agent_channel() as ch:
        stub = pb_grpc.AgentStub(ch)
        started = stub.StartEnrollment(start_request(device))
        finish = pb.FinishEnrollmentRequest(
            challenge_id=started.challenge_id, proof=activate(device, started)
        )
        assert stub.FinishEnrollment(finish).outcome == pb.ENROLLMENT_OUTCOME_ENROLLED
        error = refused(lambda: stub.FinishEnrollment(finish))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert stored_devices(fleet) == 1


def test_new_ak_for_a_known_ek_waits_for_operator_approval(fleet: Fleet) -> None:
    device = fleet.add_device("new-ak", GOOD_A)
    device_id = device.enroll(address(fleet))
    AgentState(device.workdir / "agent-state").forget_ak()  # lost agent state: a reinstall
    error = refused(lambda: device.enroll(address(fleet)))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "approve" in str(error.details())
    record = fleet.live.store.get_device(device_id)
    assert record is not None and record.pending_ak_name
    fleet.live.verifier.enrollment.approve_ak(device_id, record.pending_ak_name.hex())
    assert device.enroll(address(fleet)) == device_id
    assert device.attest(address(fleet)).status == pb.STATUS_AFFIRMING


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ek_public", b"\x00\x05garbage"),
        ("ek_certificate", b"not a certificate"),
        ("ak_public", b"\xff" * 40),
        ("ek_certificate", b"\x30" * 20000),
    ],
)
def test_garbage_enrollment_input_is_refused_and_nothing_stored(
    fleet: Fleet, field: str, value: bytes
) -> None:
    device = fleet.add_device(f"garbage-{field}-{len(value)}", GOOD_A)
    request = start_request(device)
    setattr(request, field, value)
    with fleet.live.agent_channel() as ch:
        error = refused(lambda: pb_grpc.AgentStub(ch).StartEnrollment(request))
    assert error.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION)
    assert stored_devices(fleet) == 0


def test_request_with_unknown_fields_is_refused(fleet: Fleet) -> None:
    device = fleet.add_device("unknown-fields", GOOD_A)
    raw = start_request(device).SerializeToString() + b"\xa2\x06\x03abc"  # field 100, bytes
    with fleet.live.agent_channel() as ch:
        call = ch.unary_unary(
            "/fleetattest.v1.Agent/StartEnrollment",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        error = refused(lambda: call(raw))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert stored_devices(fleet) == 0


def test_reenrolling_with_other_labels_cannot_switch_the_golden_profile(fleet: Fleet) -> None:
    device = fleet.add_device("relabel", GOOD_A)
    device_id = device.enroll(address(fleet))
    device.labels = {"model": "a-more-lenient-model"}
    assert enroll(device.config(address(fleet)), threading.Event(), force=True) == device_id
    record = fleet.live.store.get_device(device_id)
    assert record is not None and record.labels == {"model": "sim-gateway"}
    assert record.enrollment_count == 2
