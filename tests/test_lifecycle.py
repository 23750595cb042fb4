"""Devices the operators own: bound profiles, revocation, CRLs, and supersession on every path.

Real agents and swtpm devices against the real verifier over gRPC; commands run on the same
store. Each test names the attack (or the mistake) it tries.
"""

from __future__ import annotations

import datetime as dt
import json
import queue
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from agent.tpm import Tpm
from fleetattest.v1 import fleetattest_pb2 as pb
from fleetattest.v1 import fleetattest_pb2_grpc as pb_grpc
from simulator.fleet import Fleet, RunningVerifier, SimDevice
from simulator.profiles import GOOD_A
from verifier import cli
from verifier.cli import judge
from verifier.enrollment.ekchain import ek_fingerprint
from verifier.enrollment.policy import EnrollmentPolicy
from verifier.enrollment.tpmpublic import parse_tpm2b_public
from verifier.token import PinnedKeys, verify_token

pytestmark = pytest.mark.swtpm
GOLDEN = Path(__file__).resolve().parent.parent / "golden_measurements"
PROFILE_FILE = "sim-gateway.yaml"


@pytest.fixture
def golden(tmp_path: Path) -> Path:
    """The simulator's profile and a laxer one a device could try to claim with its labels."""
    directory = tmp_path / "golden"
    directory.mkdir()
    text = (GOLDEN / PROFILE_FILE).read_text()
    (directory / PROFILE_FILE).write_text(text)
    lax = text.replace("profile: sim-gateway", "profile: dev-board").replace(
        "match: {model: sim-gateway}", "match: {model: dev-board}"
    )
    (directory / "dev-board.yaml").write_text(lax)
    return directory


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with Fleet(tmp_path / "fleet") as fleet:
        yield fleet


def start(
    fleet: Fleet, golden: Path, policy: EnrollmentPolicy, **options: object
) -> RunningVerifier:
    fleet.verifier = RunningVerifier(
        fleet.workdir / "verifier",
        fleet.trust_dir,
        golden,
        pki=fleet.pki,
        enrollment_policy=policy,
        **options,  # type: ignore[arg-type]
    )
    return fleet.verifier


def db(fleet: Fleet) -> str:
    return str(fleet.live.workdir / "verifier.db")


def refused(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def relying(fleet: Fleet) -> pb_grpc.RelyingPartyStub:
    return pb_grpc.RelyingPartyStub(fleet.live.relying_party_channel())


def operator(fleet: Fleet) -> pb_grpc.OperatorStub:
    return pb_grpc.OperatorStub(fleet.live.operator_channel())


@contextmanager
def operated(fleet: Fleet) -> Iterator[pb_grpc.OperatorStub]:
    with fleet.live.operator_channel() as ch:
        yield pb_grpc.OperatorStub(ch)


def attested(fleet: Fleet, name: str) -> SimDevice:
    device = fleet.add_device(name, GOOD_A)
    assert device.attest(fleet.live.address).status == pb.STATUS_AFFIRMING
    return device


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli.main(argv)
    return code, capsys.readouterr().out


class Watcher:
    """A WatchVerdicts subscriber in a thread; ``events`` receives every message."""

    def __init__(self, verifier: RunningVerifier, after: int = 0) -> None:
        self.events: queue.Queue[pb.Verdict] = queue.Queue()
        self._channel = verifier.relying_party_channel()
        self._stream = pb_grpc.RelyingPartyStub(self._channel).WatchVerdicts(
            pb.WatchVerdictsRequest(after_sequence=after)
        )
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        try:
            for message in self._stream:
                self.events.put(message)
        except grpc.RpcError:
            return

    def supersession(self, device_id: str, timeout: float = 15) -> pb.Verdict:
        while True:
            message = self.events.get(timeout=timeout)
            if message.supersession and message.device_id == device_id:
                return message

    def close(self) -> None:
        self._stream.cancel()  # type: ignore[no-untyped-call]
        self._channel.close()
        self._thread.join(timeout=5)


# ------------------------------------------------------------------ enrollment policies


def test_device_claiming_a_laxer_profile_with_its_labels_gets_the_inventory_profile(
    fleet: Fleet, golden: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    start(fleet, golden, EnrollmentPolicy.INVENTORY)
    device = fleet.add_device("sly", GOOD_A, labels={"model": "dev-board"})
    fingerprint = _fingerprint(fleet, device)
    code, _ = run(
        [
            *("inventory", "add", "--ek", fingerprint, "--profile", "sim-gateway"),
            *("--label", "site=berlin", "--db", db(fleet), "--golden", str(golden)),
        ],
        capsys,
    )
    assert code == 0
    verdict = device.attest(fleet.live.address)
    assert verdict.profile == "sim-gateway"
    assert fleet.live.store.get_device(device.device_id).profile == "sim-gateway"  # type: ignore[union-attr]


def test_unlisted_device_is_refused_under_inventory_with_its_fingerprint(
    fleet: Fleet, golden: Path
) -> None:
    start(fleet, golden, EnrollmentPolicy.INVENTORY)
    device = fleet.add_device("stranger", GOOD_A)
    error = refused(lambda: device.enroll(fleet.live.address))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "NotInInventory" in str(error.details())
    assert _fingerprint(fleet, device) in str(error.details())
    assert fleet.live.store.list_devices() == []


def test_device_listed_by_certificate_issuer_and_serial_enrolls(
    fleet: Fleet, golden: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    start(fleet, golden, EnrollmentPolicy.INVENTORY)
    device = fleet.add_device("listed", GOOD_A)
    cert = x509.load_der_x509_certificate(device.ek_certificate)
    csv = fleet.workdir / "inventory.csv"
    csv.write_text(
        "ek_issuer,ek_serial,profile,labels\n"
        f'"{cert.issuer.rfc4514_string()}",{cert.serial_number:X},sim-gateway,site=hh\n'
    )
    assert run(["inventory", "import", str(csv), "--db", db(fleet)], capsys)[0] == 0
    assert device.attest(fleet.live.address).profile == "sim-gateway"


def test_new_device_under_approve_gets_no_verdict_until_an_operator_approves_it(
    fleet: Fleet, golden: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    start(fleet, golden, EnrollmentPolicy.APPROVE)
    device = fleet.add_device("newcomer", GOOD_A, labels={"model": "dev-board"})
    error = refused(lambda: device.enroll(fleet.live.address))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "approve-device" in str(error.details())
    device_id = fleet.live.store.list_devices()[0].device_id
    with fleet.live.agent_channel() as ch:
        waiting = refused(
            lambda: pb_grpc.AgentStub(ch).GetChallenge(pb.GetChallengeRequest(device_id=device_id))
        )
    assert waiting.code() == grpc.StatusCode.FAILED_PRECONDITION
    code, _ = run(
        ["approve-device", device_id[:12], "--profile", "sim-gateway", "--db", db(fleet)], capsys
    )
    assert code == 0
    assert device.attest(fleet.live.address).profile == "sim-gateway"
    code, out = run(["device", "history", device_id, "--db", db(fleet)], capsys)
    assert code == 0 and "approved" in out and "local/" in out


def test_profile_change_is_recorded_and_supersedes_the_verdict(fleet: Fleet, golden: Path) -> None:
    start(fleet, golden, EnrollmentPolicy.OPEN)
    device = attested(fleet, "moved")
    watcher = Watcher(fleet.live)
    try:
        with operated(fleet) as op:
            op.SetDeviceProfile(
                pb.SetDeviceProfileRequest(
                    device_id=device.device_id, profile="dev-board", reason="lab duty"
                )
            )
        event = watcher.supersession(device.device_id)
    finally:
        watcher.close()
    assert "dev-board" in event.currency_reason
    changes = fleet.live.store.device_changes(device.device_id)
    assert [(c.what, c.before, c.after, c.actor.split(" (")[0]) for c in changes] == [
        ("profile", "sim-gateway", "dev-board", "operator/operator")
    ]
    assert device.attest(fleet.live.address).profile == "dev-board"


# ------------------------------------------------------------------ revocation


def test_denied_ek_enrolling_again_is_refused_until_undenied(
    fleet: Fleet, golden: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    start(fleet, golden, EnrollmentPolicy.OPEN)
    device = attested(fleet, "stolen")
    watcher = Watcher(fleet.live)
    try:
        code, _ = run(
            ["ek", "deny", device.device_id, "--reason", "reported stolen", "--db", db(fleet)],
            capsys,
        )
        assert code == 0
        assert "EK denied" in watcher.supersession(device.device_id).currency_reason
    finally:
        watcher.close()
    assert refused(lambda: device.attest(fleet.live.address)).code() == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    shutil.rmtree(device.workdir / "agent-state")  # the thief enrolls the TPM afresh
    error = refused(lambda: device.enroll(fleet.live.address))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "EK denied" in str(error.details())
    code, _ = run(
        ["ek", "undeny", device.device_id, "--reason", "found again", "--db", db(fleet)], capsys
    )
    assert code == 0
    error = refused(lambda: device.enroll(fleet.live.address))  # no longer denied: its new AK
    assert "approve-ak" in str(error.details())  # waits for an operator, as any new AK does


def test_decommissioned_device_attesting_is_refused_and_no_path_says_trusted(
    fleet: Fleet, golden: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    start(fleet, golden, EnrollmentPolicy.OPEN)
    device = attested(fleet, "retired")
    watcher = Watcher(fleet.live)
    try:
        with operated(fleet) as op:
            reply = op.DecommissionDevice(
                pb.DecommissionDeviceRequest(device_id=device.device_id, reason="scrapped")
            )
        assert reply.superseded == 1
        assert reply.revocation.actor.startswith("operator/operator (")  # who, from the cert
        event = watcher.supersession(device.device_id)
        assert event.freshness == pb.FRESHNESS_SUPERSEDED and "decommissioned" in (
            event.currency_reason
        )
    finally:
        watcher.close()
    assert refused(lambda: device.attest(fleet.live.address)).code() == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    assert_not_trusted_anywhere(fleet, device, golden, tmp_path, capsys, "superseded")
    listed = operator(fleet).ListDevices(pb.ListDevicesRequest()).devices
    assert "decommissioned" in listed[0].revoked


def test_quote_signed_by_a_revoked_ak_is_refused(
    fleet: Fleet, golden: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    start(fleet, golden, EnrollmentPolicy.OPEN)
    device = attested(fleet, "leaky")
    ak = fleet.live.store.get_device(device.device_id).ak_name.hex()  # type: ignore[union-attr]
    watcher = Watcher(fleet.live)
    try:
        code, _ = run(
            ["revoke-ak", device.device_id, ak, "--reason", "key leaked", "--db", db(fleet)],
            capsys,
        )
        assert code == 0
        assert "AK revoked" in watcher.supersession(device.device_id).currency_reason
    finally:
        watcher.close()
    error = refused(lambda: device.attest(fleet.live.address))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED and "AK revoked" in str(
        error.details()
    )
    code, out = run(["revocations", "--db", db(fleet)], capsys)
    assert code == 0 and "key leaked" in out and "local/" in out


# ------------------------------------------------------------------ currency on every path


def assert_not_trusted_anywhere(
    fleet: Fleet,
    device: SimDevice,
    golden: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    state: str,
) -> None:
    """GetVerdict, CheckRollout, verdict check (gRPC and store), devices, verdict show."""
    with fleet.live.relying_party_channel() as ch:
        stub = pb_grpc.RelyingPartyStub(ch)
        served = stub.GetVerdict(pb.GetVerdictRequest(device_id=device.device_id)).verdict
        rollout = stub.CheckRollout(
            pb.CheckRolloutRequest(device_id=device.device_id, target_release="fw-1.1.0")
        )
    assert pb.Freshness.Name(served.freshness) == f"FRESHNESS_{state.upper()}"
    assert served.token == "" and served.currency_reason
    assert not rollout.allow
    store_db = db(fleet)
    base = ["verdict", "check", device.device_id, "--max-age", "10m"]
    for argv in (
        [*base, *fleet.live.client_flags("relying-party")],
        [*base, "--db", store_db, "--golden", str(golden)],
        [*base, "--db", store_db],  # no golden set: cannot decide, fails closed
    ):
        code, out = run(argv, capsys)
        assert code == 1 and "NOT TRUSTED" in out, argv
    code, out = run(["devices", "--db", store_db, "--golden", str(golden)], capsys)
    assert code == 0 and state in out and "fresh" not in out
    code, out = run(["devices", "--db", store_db], capsys)
    assert code == 0 and "unknown" in out and "fresh" not in out
    code, out = run(
        ["verdict", "show", device.device_id, "--db", store_db, "--golden", str(golden)], capsys
    )
    assert code == 0 and f"({state}; NOT TRUSTED)" in out


def test_every_path_on_a_revoked_release_says_not_trusted_and_subscribers_hear_of_it(
    fleet: Fleet, golden: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    start(fleet, golden, EnrollmentPolicy.OPEN)
    device = attested(fleet, "old-firmware")
    watcher = Watcher(fleet.live)
    try:
        path = golden / PROFILE_FILE
        path.write_text(
            path.read_text().replace(
                "  - name: fw-1.0.0\n", "  - name: fw-1.0.0\n    revoked: true\n", 1
            )
        )
        with operated(fleet) as op:
            assert op.ReloadGolden(pb.ReloadGoldenRequest()).applied
        event = watcher.supersession(device.device_id)
        assert event.currency_reason == "release fw-1.0.0 was revoked"
    finally:
        watcher.close()
    assert_not_trusted_anywhere(fleet, device, golden, tmp_path, capsys, "superseded")


def test_every_path_on_an_expired_verdict_says_not_trusted(
    fleet: Fleet,
    golden: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    start(fleet, golden, EnrollmentPolicy.OPEN)
    device = attested(fleet, "silent")
    fleet.live.clock.advance(2 * 3600)  # past the profile's verdict lifetime (1h)
    later = fleet.live.clock()
    monkeypatch.setattr(judge, "clock", lambda: later)
    assert_not_trusted_anywhere(fleet, device, golden, tmp_path, capsys, "expired")


def test_token_lives_no_longer_than_token_ttl(fleet: Fleet, golden: Path) -> None:
    start(fleet, golden, EnrollmentPolicy.OPEN, token_ttl=300.0)
    device = attested(fleet, "short")
    with fleet.live.relying_party_channel() as ch:
        stub = pb_grpc.RelyingPartyStub(ch)
        token = stub.GetVerdict(pb.GetVerdictRequest(device_id=device.device_id)).verdict.token
        keys = PinnedKeys.from_jwks(json.loads(stub.GetJwks(pb.GetJwksRequest()).jwks_json))
    now = fleet.live.clock()
    claims = verify_token(
        token, keys, issuer="fleet-attest", audience=None, subject=device.device_id, now=now
    )
    assert claims.expires_at <= now + 300


# ------------------------------------------------------------------ CRLs


def write_crl(fleet: Fleet, name: str, data: bytes) -> None:
    (fleet.trust_dir / name).write_bytes(data)


def test_ek_certificate_on_the_crl_cannot_enroll(fleet: Fleet, golden: Path) -> None:
    device = fleet.add_device("recalled", GOOD_A)
    serial = x509.load_der_x509_certificate(device.ek_certificate).serial_number
    write_crl(fleet, "intermediate.crl", fleet.ca.issue_crl([serial], pem=False))
    start(fleet, golden, EnrollmentPolicy.OPEN)
    error = refused(lambda: device.enroll(fleet.live.address))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "CertificateRevoked" in str(error.details()) and "revoked by the CRL" in str(
        error.details()
    )


def test_intermediate_on_the_roots_crl_cannot_enroll(fleet: Fleet, golden: Path) -> None:
    device = fleet.add_device("below-revoked-ca", GOOD_A)
    write_crl(
        fleet,
        "root.crl",
        fleet.ca.issue_crl([fleet.ca.intermediate.cert.serial_number], issuer="root"),
    )
    start(fleet, golden, EnrollmentPolicy.OPEN)
    error = refused(lambda: device.enroll(fleet.live.address))
    assert "Intermediate CA" in str(error.details()) and "revoked" in str(error.details())


def test_ek_certificate_revoked_after_enrollment_supersedes_the_device(
    fleet: Fleet, golden: Path
) -> None:
    write_crl(fleet, "intermediate.crl", fleet.ca.issue_crl([]))
    start(fleet, golden, EnrollmentPolicy.OPEN)
    device = attested(fleet, "recalled-later")
    watcher = Watcher(fleet.live)
    try:
        serial = x509.load_der_x509_certificate(device.ek_certificate).serial_number
        write_crl(fleet, "intermediate.crl", fleet.ca.issue_crl([serial]))
        event = watcher.supersession(device.device_id)  # the sweeper re-reads the CRLs
        assert "EK certificate revoked" in event.currency_reason
    finally:
        watcher.close()
    assert refused(lambda: device.attest(fleet.live.address)).code() == (
        grpc.StatusCode.PERMISSION_DENIED
    )


def test_stale_crl_fails_closed_and_is_reported_in_status(fleet: Fleet, golden: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    stale = fleet.ca.issue_crl(
        [], this_update=now - dt.timedelta(days=9), next_update=now - dt.timedelta(days=2)
    )
    write_crl(fleet, "intermediate.crl", stale)
    start(fleet, golden, EnrollmentPolicy.OPEN)
    device = fleet.add_device("unsure", GOOD_A)
    error = refused(lambda: device.enroll(fleet.live.address))
    assert "CrlStale" in str(error.details())
    status = operator(fleet).GetStatus(pb.GetStatusRequest())
    assert any("past its nextUpdate" in p for p in status.crl_problems)


def test_stale_crl_under_warn_is_used_and_reported(fleet: Fleet, golden: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    stale = fleet.ca.issue_crl(
        [], this_update=now - dt.timedelta(days=9), next_update=now - dt.timedelta(days=2)
    )
    write_crl(fleet, "intermediate.crl", stale)
    start(fleet, golden, EnrollmentPolicy.OPEN, crl_stale="warn")
    assert attested(fleet, "tolerated").device_id
    assert operator(fleet).GetStatus(pb.GetStatusRequest()).crl_problems


def test_ek_intermediate_sent_by_the_agent_lets_the_device_enroll(
    fleet: Fleet, golden: Path
) -> None:
    roots_only = fleet.workdir / "roots-only"
    roots_only.mkdir()
    shutil.copy(fleet.trust_dir / "root.pem", roots_only / "root.pem")
    fleet.verifier = RunningVerifier(
        fleet.workdir / "verifier",
        roots_only,
        golden,
        pki=fleet.pki,
        enrollment_policy=EnrollmentPolicy.OPEN,
    )
    device = fleet.add_device("field", GOOD_A)
    assert "missing intermediate" in str(
        refused(lambda: device.enroll(fleet.live.address)).details()
    )
    device.ek_intermediates = (
        fleet.ca.intermediate.cert.public_bytes(
            __import__("cryptography").hazmat.primitives.serialization.Encoding.DER
        ),
    )
    assert device.attest(fleet.live.address).status == pb.STATUS_AFFIRMING


def _fingerprint(fleet: Fleet, device: SimDevice) -> str:
    with Tpm.open(device.tpm.tcti) as tpm:
        ek = tpm.create_ek("rsa")
    return ek_fingerprint(parse_tpm2b_public(ek.public))


def test_revocation_and_its_supersession_are_in_the_audit_log_with_the_caller(
    fleet: Fleet, golden: Path
) -> None:
    """A revocation nobody can later deny: the operator action (who, from the certificate) and
    the supersession it caused are entries of the tamper-evident log."""
    from verifier.audit import EntryKind, LogEntry  # noqa: PLC0415

    start(fleet, golden, EnrollmentPolicy.OPEN)
    device = attested(fleet, "audited")
    with operated(fleet) as op:
        op.DecommissionDevice(
            pb.DecommissionDeviceRequest(device_id=device.device_id, reason="scrapped")
        )
    entries = [LogEntry.from_canonical(e.data) for e in fleet.live.store.iter_audit_entries()]
    [action] = [e for e in entries if e.kind is EntryKind.OPERATOR_ACTION]
    assert action.fields["action"] == "revoke device"
    assert str(action.fields["caller"]).startswith("operator/operator (")
    [superseded] = [e for e in entries if e.kind is EntryKind.SUPERSESSION]
    assert superseded.fields["device_id"] == device.device_id
    assert "scrapped" in str(superseded.fields["superseded_by"])
