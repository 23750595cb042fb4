"""Golden measurements on a live fleet: hot reload, refusal of broken edits, revocation, history.

A typo must never lock a fleet out or let one in: a broken edit keeps the last good set live
and is reported; a valid edit takes effect without a restart; revoking a release makes the
verdicts that relied on it untrusted at once.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetattest.v1 import fleetattest_pb2 as pb
from fleetattest.v1 import fleetattest_pb2_grpc as pb_grpc
from simulator.fleet import Fleet, RunningVerifier
from simulator.profiles import GOOD_A, INIT_SH
from verifier import cli

pytestmark = pytest.mark.swtpm
GOLDEN = Path(__file__).resolve().parent.parent / "golden_measurements"
PROFILE_FILE = "sim-gateway.yaml"


@pytest.fixture
def golden(tmp_path: Path) -> Path:
    directory = tmp_path / "golden"
    directory.mkdir()
    shutil.copy(GOLDEN / PROFILE_FILE, directory / PROFILE_FILE)
    return directory


@pytest.fixture
def fleet(tmp_path: Path, golden: Path) -> Iterator[Fleet]:
    with Fleet(tmp_path / "fleet") as fleet:
        fleet.start_verifier(golden)
        yield fleet


def running(fleet: Fleet) -> RunningVerifier:
    assert fleet.verifier is not None
    return fleet.verifier


def operator(fleet: Fleet) -> pb_grpc.OperatorStub:
    return pb_grpc.OperatorStub(running(fleet).operator_channel())


def edit(golden: Path, old: str, new: str) -> None:
    path = golden / PROFILE_FILE
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_broken_edit_while_serving_keeps_the_old_set_and_reports_it(
    fleet: Fleet, golden: Path
) -> None:
    device = fleet.add_device("d", GOOD_A)
    before = running(fleet).golden.current().profile_set.digest
    edit(golden, "verdict_lifetime: 1h", "verdict_lifetime: 1h\nverdict_lifetme: 2h")
    reply = operator(fleet).ReloadGolden(pb.ReloadGoldenRequest())
    assert not reply.applied and reply.golden_digest == before
    problem = reply.problems[0]
    assert problem.file.endswith(PROFILE_FILE) and problem.line == 6
    status = operator(fleet).GetStatus(pb.GetStatusRequest())
    assert status.golden_digest == before and status.golden_problems
    verdict = device.attest(running(fleet).address)  # the fleet is still served
    assert verdict.status == pb.STATUS_AFFIRMING and verdict.golden_digest == before


def test_valid_edit_takes_effect_without_a_restart(fleet: Fleet, golden: Path) -> None:
    device = fleet.add_device("d", GOOD_A)
    before = running(fleet).golden.current().profile_set.digest
    edit(golden, "verdict_lifetime: 1h", "verdict_lifetime: 2h")
    deadline = time.monotonic() + 10
    while running(fleet).golden.current().profile_set.digest == before:
        assert time.monotonic() < deadline, "the file watcher did not pick up the edit"
        time.sleep(0.1)
    verdict = device.attest(running(fleet).address)
    after = running(fleet).golden.current().profile_set.digest
    assert verdict.golden_digest == after != before
    assert 7190 <= verdict.expires_at.seconds - verdict.issued_at.seconds <= 7200
    record = running(fleet).store.golden_set(after)  # a verdict's digest resolves to its files
    assert record is not None and PROFILE_FILE in record.files


def test_revoked_release_turns_its_verdicts_into_not_trusted(fleet: Fleet, golden: Path) -> None:
    device = fleet.add_device("d", GOOD_A)
    first = device.attest(running(fleet).address)
    assert first.status == pb.STATUS_AFFIRMING
    edit(golden, "  - name: fw-1.0.0\n", "  - name: fw-1.0.0\n    revoked: true\n")
    reply = operator(fleet).ReloadGolden(pb.ReloadGoldenRequest())  # or the watcher did it
    assert not reply.problems and reply.golden_digest != first.golden_digest
    with running(fleet).relying_party_channel() as ch:
        stub = pb_grpc.RelyingPartyStub(ch)
        verdict = stub.GetVerdict(pb.GetVerdictRequest(device_id=device.device_id)).verdict
        rollout = stub.CheckRollout(
            pb.CheckRolloutRequest(device_id=device.device_id, target_release="fw-1.1.0")
        )
    assert verdict.freshness == pb.FRESHNESS_SUPERSEDED
    assert verdict.token == ""
    assert not rollout.allow
    again = device.attest(running(fleet).address)
    assert again.status == pb.STATUS_CONTRAINDICATED
    assert "release_revoked" in {r.code for r in again.reasons}


def test_verifier_refuses_to_start_with_an_invalid_set(
    tmp_path: Path, golden: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit(golden, "bank: sha256", "bank: sha1")  # SHA-1 without allow_sha1
    code = cli.main(["serve", "--db", str(tmp_path / "v.db"), "--golden", str(golden)])
    assert code == 2
    err = capsys.readouterr().err
    assert f"{PROFILE_FILE}:" in err and "refusing to start" in err


def test_explain_over_grpc_names_each_rule_passed_or_failed(fleet: Fleet) -> None:
    device = fleet.add_device("init-sh", INIT_SH)
    device.attest(running(fleet).address)
    reply = operator(fleet).ExplainDevice(pb.ExplainDeviceRequest(device_id=device.device_id))
    assert reply.profile == "sim-gateway"
    rules = {(o.release, o.rule): o for o in reply.outcomes}
    cmdline = rules[("fw-1.0.0", "kernel_cmdline")]
    assert not cmdline.passed and "init=/bin/sh" in cmdline.actual
    assert rules[("fw-1.0.0", "boot_chain")].passed


def test_dry_run_over_grpc_reports_exactly_the_devices_a_change_would_flip(
    fleet: Fleet, golden: Path
) -> None:
    address = running(fleet).address
    good = [fleet.add_device(f"good-{i}", GOOD_A) for i in range(2)]
    bad = fleet.add_device("bad", INIT_SH)
    for device in (*good, bad):
        device.attest(address)
    history = {d.device_id: len(running(fleet).store.verdict_history(d.device_id)) for d in good}
    proposed = (
        (golden / PROFILE_FILE)
        .read_text()
        .replace("  - name: fw-1.0.0\n", "  - name: fw-1.0.0\n    revoked: true\n", 1)
    )
    reply = operator(fleet).DryRunGolden(pb.DryRunGoldenRequest(files={PROFILE_FILE: proposed}))
    assert reply.devices_evaluated == 3 and not reply.problems
    assert {c.device_id for c in reply.changes} == {d.device_id for d in good}
    assert {(c.before, c.after) for c in reply.changes} == {
        (pb.STATUS_AFFIRMING, pb.STATUS_CONTRAINDICATED)
    }
    after = {d.device_id: len(running(fleet).store.verdict_history(d.device_id)) for d in good}
    assert after == history  # nothing changed
    broken = operator(fleet).DryRunGolden(
        pb.DryRunGoldenRequest(files={PROFILE_FILE: proposed.replace("bank:", "bnak:")})
    )
    assert broken.problems and not broken.changes


def test_operator_commands_report_a_refused_edit_and_apply_a_good_one(
    fleet: Fleet, golden: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = running(fleet).client_flags("operator")
    edit(golden, "verdict_lifetime: 1h", "verdict_lifetime: 1h\nbank: sha1")
    assert cli.main(["golden", "reload", *flags]) == 1
    assert f"{PROFILE_FILE}:7:1: duplicate key 'bank'" in capsys.readouterr().out
    assert cli.main(["status", *flags]) == 1
    assert "refused edit" in capsys.readouterr().out
    edit(golden, "verdict_lifetime: 1h\nbank: sha1", "verdict_lifetime: 2h")
    assert cli.main(["golden", "reload", *flags]) == 0
    assert "serving sha256:" in capsys.readouterr().out
    assert cli.main(["status", *flags]) == 0


def test_runtime_dry_run_and_explain_over_grpc_agree_with_the_commands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A swtpm device runs the simulator's distribution (``/usr/bin/ls`` among it) and
    attests twice (a whole list, then an increment); a proposed set that no longer allows
    ``/usr/bin/ls`` flips it, and the RPCs say what the commands say."""
    golden = tmp_path / "golden"
    golden.mkdir()
    for name in (PROFILE_FILE, "sim-runtime.yaml"):
        shutil.copy(GOLDEN / name, golden / name)
    with Fleet(tmp_path / "fleet") as fleet:
        fleet.start_verifier(golden)
        address = running(fleet).address
        device = fleet.add_device("rt", GOOD_A, runtime=True)
        device.ima.run_distribution()
        assert device.attest(address).status == pb.STATUS_AFFIRMING
        device.ima.run("/usr/bin/ls", b"coreutils 9.1 ls")
        assert device.attest(address).status == pb.STATUS_AFFIRMING
        proposed = tmp_path / "proposed"
        shutil.copytree(golden, proposed)
        text = (proposed / "sim-runtime.yaml").read_text()
        kept = [line for line in text.splitlines(True) if "/usr/bin/ls:" not in line]
        (proposed / "sim-runtime.yaml").write_text("".join(kept))
        files = {p.name: p.read_text() for p in proposed.glob("*.yaml")}
        reply = operator(fleet).DryRunGolden(pb.DryRunGoldenRequest(files=files))
        db = str(running(fleet).workdir / "verifier.db")
        argv = ["golden", "dry-run", str(proposed), "--db", db, "--golden", str(golden)]
        assert cli.main(argv) == 0
        out = capsys.readouterr().out
        assert "1 device: affirming -> contraindicated, rule runtime.unknown" in reply.summary
        assert list(reply.summary) == [
            line for line in out.splitlines() if line in set(reply.summary)
        ]
        assert [c.device_id for c in reply.changes] == [device.device_id]
        explain = ["golden", "explain", device.device_id, "--db", db, "--golden", str(proposed)]
        assert cli.main(explain) == 0
        out = capsys.readouterr().out
        shutil.copy(proposed / "sim-runtime.yaml", golden / "sim-runtime.yaml")
        assert operator(fleet).ReloadGolden(pb.ReloadGoldenRequest()).applied
        explained = operator(fleet).ExplainDevice(
            pb.ExplainDeviceRequest(device_id=device.device_id)
        )
        assert explained.status == pb.STATUS_CONTRAINDICATED
        assert {f.path for f in explained.runtime.failures} == {"/usr/bin/ls"}
        assert len(explained.runtime.failures) == 2  # the distribution's and the later run
        assert explained.runtime.summary in out.splitlines()
