"""Attestation end to end: real agents and swtpm devices against the real verifier over gRPC.

Each test is named after what it tries. A refused attestation records no verdict.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from tpm2_pytss import ESAPI
from tpm2_pytss.constants import ESYS_TR

from agent.flows import AgentConfig, channel, enroll, evidence_for
from agent.state import AgentState
from agent.tpm import Tpm, TpmError
from fleetattest.v1 import fleetattest_pb2 as pb
from fleetattest.v1 import fleetattest_pb2_grpc as pb_grpc
from simulator.fleet import Fleet, RunningVerifier, SimDevice
from simulator.profiles import GOOD_A
from simulator.swtpm import HOST

pytestmark = pytest.mark.swtpm
GOLDEN = Path(__file__).resolve().parent.parent / "golden_measurements"


def enrolled(fleet: Fleet, name: str) -> SimDevice:
    device = fleet.add_device(name, GOOD_A)
    device.enroll(fleet.live.address)
    return device


def challenge_and_evidence(
    device: SimDevice, address: str, challenged: SimDevice | None = None
) -> pb.AttestRequest:
    """Evidence from ``device`` over a challenge issued to ``challenged`` (default: itself)."""
    target = challenged or device
    with channel(address, device.verifier_ca) as ch:
        challenge = pb_grpc.AgentStub(ch).GetChallenge(
            pb.GetChallengeRequest(device_id=target.device_id)
        )
    return evidence_for(device.config(address), target.device_id, challenge)


def send_to(address: str, ca: Path, request: pb.AttestRequest) -> pb.Verdict:
    with channel(address, ca) as ch:
        return pb_grpc.AgentStub(ch).Attest(request).verdict


def send(fleet: Fleet, request: pb.AttestRequest) -> pb.Verdict:
    return send_to(fleet.live.address, fleet.live.ca, request)


def refused(fleet: Fleet, request: pb.AttestRequest) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        send(fleet, request)
    assert isinstance(info.value, grpc.RpcError)
    return info.value


def verdict_count(fleet: Fleet, device: SimDevice) -> int:
    return len(fleet.live.store.verdict_history(device.device_id))


def test_good_quote_is_affirming_with_lifetime_and_epoch(fleet: Fleet) -> None:
    device = enrolled(fleet, "good")
    verdict = device.attest(fleet.live.address)
    assert verdict.status == pb.STATUS_AFFIRMING
    assert verdict.release == "fw-1.0.0" and verdict.profile == "sim-gateway"
    assert verdict.golden_digest == fleet.live.golden.current().profile_set.digest
    lifetime = verdict.expires_at.seconds - verdict.issued_at.seconds
    assert 3590 <= lifetime <= 3600
    assert verdict.token == ""  # the agent does not ask for one (AttestRequest.want_token)


def test_pcr_extended_away_from_golden_is_contraindicated_naming_the_pcr(fleet: Fleet) -> None:
    device = enrolled(fleet, "extended")
    with Tpm.open(device.tpm.tcti) as tpm:
        tpm.extend(7, {"sha256": b"\x66" * 32})  # not in the event log
    verdict = device.attest(fleet.live.address)
    assert verdict.status == pb.STATUS_CONTRAINDICATED
    pcr7 = [r for r in verdict.reasons if r.HasField("pcr") and r.pcr == 7]
    assert pcr7, verdict.reasons
    assert pcr7[0].expected and pcr7[0].actual and pcr7[0].expected != pcr7[0].actual


def test_same_quote_submitted_twice_is_refused(fleet: Fleet) -> None:
    device = enrolled(fleet, "twice")
    address = fleet.live.address
    request = challenge_and_evidence(device, address)
    assert send(fleet, request).status == pb.STATUS_AFFIRMING
    error = refused(fleet, request)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "NonceMismatch" in str(error.details())
    assert verdict_count(fleet, device) == 1


def test_nonce_issued_to_another_device_is_refused(fleet: Fleet) -> None:
    victim = enrolled(fleet, "victim")
    attacker = enrolled(fleet, "attacker")
    address = fleet.live.address
    stolen = challenge_and_evidence(attacker, address, challenged=victim)
    stolen.device_id = attacker.device_id  # the attacker's own quote over the victim's nonce
    error = refused(fleet, stolen)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert verdict_count(fleet, attacker) == 0 and verdict_count(fleet, victim) == 0


def test_quote_by_another_tpm_presented_for_a_device_is_refused(fleet: Fleet) -> None:
    victim = enrolled(fleet, "victim")
    attacker = enrolled(fleet, "attacker")
    address = fleet.live.address
    forged = challenge_and_evidence(attacker, address, challenged=victim)  # signed by attacker
    error = refused(fleet, forged)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "SignatureInvalid" in str(error.details())
    assert verdict_count(fleet, victim) == 0


def test_expired_nonce_is_refused(fleet: Fleet) -> None:
    device = enrolled(fleet, "slow")
    address = fleet.live.address
    request = challenge_and_evidence(device, address)
    fleet.live.clock.advance(61)  # the nonce TTL is 60 s
    error = refused(fleet, request)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert verdict_count(fleet, device) == 0


def test_pcr_23_presented_as_pcr_7_is_refused(fleet: Fleet) -> None:
    device = enrolled(fleet, "relabel")
    address = fleet.live.address
    request = challenge_and_evidence(device, address)
    with Tpm.open(device.tpm.tcti) as tpm:
        pcr23 = tpm.read_pcrs("sha256", [23])[23]
    for value in request.pcr_values:
        if value.pcr == 7:
            value.digest = pcr23
    error = refused(fleet, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "pcrDigest" in str(error.details())


def test_pcr_values_that_do_not_hash_to_pcr_digest_are_refused(fleet: Fleet) -> None:
    device = enrolled(fleet, "forged-values")
    address = fleet.live.address
    request = challenge_and_evidence(device, address)
    request.pcr_values[0].digest = b"\x00" * 32
    assert refused(fleet, request).code() == grpc.StatusCode.INVALID_ARGUMENT


def test_pcr_select_different_from_the_one_requested_is_refused(fleet: Fleet) -> None:
    device = enrolled(fleet, "selection")
    with fleet.live.agent_channel() as ch:
        challenge = pb_grpc.AgentStub(ch).GetChallenge(
            pb.GetChallengeRequest(device_id=device.device_id)
        )
    state = AgentState(device.workdir / "agent-state")
    with Tpm.open(device.tpm.tcti) as tpm:
        ak = tpm.load_or_create_ak(state, "ecc")
        quote = tpm.quote(ak, challenge.nonce, "sha256", [0, 4, 7, 8])  # PCR 9 left out
    request = pb.AttestRequest(
        device_id=device.device_id,
        nonce=challenge.nonce,
        quote=quote.attest,
        signature=quote.signature,
        pcr_values=[pb.PcrValue(pcr=i, digest=d) for i, d in sorted(quote.pcr_values.items())],
    )
    error = refused(fleet, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "selection" in str(error.details())


def test_sha1_quote_is_refused_by_default(fleet: Fleet) -> None:
    device = enrolled(fleet, "sha1")
    address = fleet.live.address
    with fleet.live.agent_channel() as ch:
        challenge = pb_grpc.AgentStub(ch).GetChallenge(
            pb.GetChallengeRequest(device_id=device.device_id)
        )
    challenge.selection.bank = "sha1"  # a downgrading agent
    request = evidence_for(device.config(address), device.device_id, challenge)
    assert refused(fleet, request).code() == grpc.StatusCode.INVALID_ARGUMENT


def test_expired_verdict_is_reported_as_expired_never_trusted(fleet: Fleet) -> None:
    device = enrolled(fleet, "silent")
    address = fleet.live.address
    assert device.attest(address).status == pb.STATUS_AFFIRMING
    fleet.live.clock.advance(3601)
    with fleet.live.relying_party_channel() as ch:
        verdict = (
            pb_grpc.RelyingPartyStub(ch)
            .GetVerdict(pb.GetVerdictRequest(device_id=device.device_id))
            .verdict
        )
        rollout = pb_grpc.RelyingPartyStub(ch).CheckRollout(
            pb.CheckRolloutRequest(device_id=device.device_id, target_release="fw-1.1.0")
        )
    assert verdict.freshness == pb.FRESHNESS_EXPIRED
    assert verdict.token == ""  # nothing to vouch for
    assert not rollout.allow
    assert "verdict_expired" in {r.code for r in rollout.reasons}


def test_tpm_power_cycle_gives_a_new_boot_epoch(fleet: Fleet) -> None:
    device = enrolled(fleet, "reboot")
    address = fleet.live.address
    before = device.attest(address)
    device.reboot()
    after = device.attest(address)
    assert after.status == pb.STATUS_AFFIRMING
    assert after.boot_epoch.reset_count == before.boot_epoch.reset_count + 1
    history = fleet.live.store.verdict_history(device.device_id)
    assert history[0].boot_epoch.reset_count == after.boot_epoch.reset_count


def test_unclean_power_loss_gives_a_warning_not_a_lockout(fleet: Fleet) -> None:
    device = enrolled(fleet, "power-cut")
    address = fleet.live.address
    assert device.attest(address).status == pb.STATUS_AFFIRMING
    device.lose_power()
    verdict = device.attest(address)
    assert verdict.status == pb.STATUS_WARNING
    assert [r.code for r in verdict.reasons] == ["unclean_power_loss"]
    assert verdict.release == "fw-1.0.0"


def test_agent_backs_off_while_the_verifier_is_unreachable_and_recovers(
    fleet: Fleet, tmp_path: Path
) -> None:
    device = fleet.add_device("patient", GOOD_A)
    port = _free_port()
    config = AgentConfig(
        verifier=f"{HOST}:{port}",
        tcti=device.tpm.tcti,
        state_dir=device.workdir / "agent-state",
        event_log=device.event_log,
        labels=dict(device.labels),
        timeout=5.0,
        ca=fleet.pki / "ca.pem",
    )
    result: dict[str, str] = {}
    worker = threading.Thread(
        target=lambda: result.update(id=enroll(config, threading.Event())), daemon=True
    )
    worker.start()
    time.sleep(1.5)  # the agent is retrying against a closed port
    assert worker.is_alive()
    verifier = RunningVerifier(tmp_path / "late", fleet.trust_dir, GOLDEN, port=port, pki=fleet.pki)
    try:
        worker.join(timeout=60)
        assert not worker.is_alive()
        assert result["id"].startswith("dev-")
        assert verifier.store.get_device(result["id"]) is not None
    finally:
        verifier.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def test_two_verifier_processes_on_one_database_never_accept_one_nonce_twice(
    fleet: Fleet, tmp_path: Path
) -> None:
    device = enrolled(fleet, "race")
    first = fleet.live
    db = first.workdir / "verifier.db"
    port_file = tmp_path / "port"
    second = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "verifier.cli",
            "--log-level",
            "warning",
            "serve",
            "--listen",
            f"{HOST}:0",
            "--db",
            str(db),
            "--ek-ca",
            str(fleet.trust_dir),
            "--golden",
            str(GOLDEN),
            "--port-file",
            str(port_file),
            *tls_flags(fleet.pki),
        ],
        env={**os.environ, "GRPC_VERBOSITY": "ERROR"},
    )
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        other = f"{HOST}:{port_file.read_text().split()[0]}"  # the agent port
        for _ in range(5):
            request = challenge_and_evidence(device, first.address)
            with ThreadPoolExecutor(2) as pool:
                outcomes = list(
                    pool.map(_try, [first.address, other], [fleet.live.ca] * 2, [request] * 2)
                )
            assert sorted(outcomes) == ["accepted", "refused"], outcomes
    finally:
        second.terminate()
        second.wait(timeout=10)
    assert verdict_count(fleet, device) == 5


def tls_flags(pki: Path) -> list[str]:
    return [
        "--tls-cert",
        str(pki / "verifier.pem"),
        "--tls-key",
        str(pki / "verifier.key"),
        "--client-ca",
        str(pki / "ca.pem"),
    ]


def _try(address: str, ca: Path, request: pb.AttestRequest) -> str:
    try:
        send_to(address, ca, request)
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION, exc
        return "refused"
    return "accepted"


def test_tpm_clear_needs_a_new_ak_approved_and_then_starts_a_new_counter_baseline(
    fleet: Fleet,
) -> None:
    device = enrolled(fleet, "cleared")
    address = fleet.live.address
    device.reboot()
    device.reboot()
    before = device.attest(address)
    assert before.boot_epoch.reset_count >= 2
    with ESAPI(device.tpm.tcti) as esapi:
        esapi.clear(ESYS_TR.PLATFORM)  # the owner's keys, AK included, are gone
    device.reboot()
    with pytest.raises(TpmError, match="enroll --new-ak"):
        device.attest(address)
    config = replace(device.config(address), new_ak=True)
    with pytest.raises(grpc.RpcError) as info:
        enroll(config, threading.Event())
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    record = fleet.live.store.get_device(device.device_id)
    assert record is not None and record.pending_ak_name
    fleet.live.verifier.enrollment.approve_ak(device.device_id, record.pending_ak_name.hex())
    assert enroll(device.config(address), threading.Event()) == device.device_id
    after = device.attest(address)
    assert after.boot_epoch.reset_count < before.boot_epoch.reset_count  # counters were reset
    assert after.status == pb.STATUS_AFFIRMING, [r.code for r in after.reasons]
