"""A runtime policy whose digests ship in a digests file, end to end: the in-process verifier
(``softruntime``) appraises software devices against it, the audit log replays its verdicts,
and a change to the file alone goes live and re-judges the boot."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from softruntime import Served, SoftRuntimeDevice, served, without_digest

from fleetattest.v1 import fleetattest_pb2 as pb
from fleetattest.v1 import fleetattest_pb2_grpc as pb_grpc
from simulator.ima import SIM_FILES, file_digest
from verifier import auditlog
from verifier.errors import ImaLogRequired
from verifier.verdict import Status

SIDE = "sim-runtime.sums"


def ls_in_a_digests_file(golden: Path) -> None:
    """Move /usr/bin/ls's digest out of sim-runtime.yaml into a digests file it names."""
    without_digest(golden, "/usr/bin/ls")
    (golden / SIDE).write_text(
        "# /usr/bin/ls, shipped beside the profile\n"
        f"{file_digest(SIM_FILES['/usr/bin/ls']).hex()}  /usr/bin/ls\n"
    )
    profile = golden / "sim-runtime.yaml"
    text = profile.read_text()
    assert "\n  digests:\n" in text
    profile.write_text(text.replace("\n  digests:\n", f"\n  digests_file: {SIDE}\n  digests:\n"))


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Served]:
    with served(tmp_path / "fleet", ls_in_a_digests_file) as fleet:
        yield fleet


def device(fleet: Served, name: str) -> SoftRuntimeDevice:
    dev = SoftRuntimeDevice(name)
    fleet.store.insert_device(dev.record())
    dev.boot()
    return dev


def test_an_entry_allowed_only_by_the_digests_file_is_affirmed_and_an_unlisted_one_named(
    fleet: Served,
) -> None:
    live = fleet.verifier.golden.current().profile_set
    assert SIDE in live.files
    dev = device(fleet, "rt-side-file")
    dev.run("/usr/bin/bash")
    dev.run("/usr/bin/ls")  # in the digests file only
    attested = dev.attest(fleet.verifier)
    assert attested.verdict.status is Status.AFFIRMING, attested.verdict.reasons
    assert attested.verdict.golden_digest == live.digest
    dev.run("/usr/local/bin/miner", b"not shipped")
    attested = dev.attest(fleet.verifier)
    assert attested.verdict.status is Status.CONTRAINDICATED
    (reason,) = attested.verdict.reasons
    assert reason.code == "ima_unknown_entry" and "'/usr/local/bin/miner'" in reason.text


def test_replay_of_a_verdict_under_a_digests_file_policy_reproduces(fleet: Served) -> None:
    dev = device(fleet, "rt-replay")
    dev.run("/usr/bin/ls")
    first = dev.attest(fleet.verifier).verdict
    dev.run("/usr/bin/ls", b"a trojaned ls")
    second = dev.attest(fleet.verifier).verdict
    assert (first.status, second.status) == (Status.AFFIRMING, Status.CONTRAINDICATED)
    assert second.reasons[0].code == "ima_digest_not_allowed"
    for verdict in (first, second):
        result = auditlog.replay(fleet.store, verdict.verdict_id)
        assert result.reproduced, result
        assert result.replayed.reasons == verdict.reasons


def test_a_digests_file_changed_alone_goes_live_and_rejudges_the_boot(fleet: Served) -> None:
    dev = device(fleet, "rt-reload")
    dev.run("/usr/bin/ls")
    assert dev.attest(fleet.verifier).verdict.status is Status.AFFIRMING
    before = fleet.verifier.golden.current().profile_set.digest
    (fleet.golden / SIDE).write_text(f"{'00' * 32}  /usr/bin/ls\n")  # ls withdrawn
    result = fleet.verifier.golden.reload_if_changed()
    assert result is not None and result.applied and result.digest != before
    dev.run("/usr/bin/bash")
    with pytest.raises(ImaLogRequired, match="the runtime policy changed"):
        dev.attest(fleet.verifier)  # the state bound to the old policy is not reused
    attested = dev.attest(fleet.verifier, whole=True)  # the agent's answer: the whole list
    assert attested.verdict.golden_digest == result.digest
    assert attested.verdict.status is Status.CONTRAINDICATED
    assert any("'/usr/bin/ls'" in r.text for r in attested.verdict.reasons)
    replayed = auditlog.replay(fleet.store, attested.verdict.verdict_id)
    assert replayed.reproduced


def test_a_dry_run_takes_a_proposed_digests_file_by_its_name(fleet: Served) -> None:
    runner = device(fleet, "rt-dry-run")
    runner.run("/usr/bin/ls")
    assert runner.attest(fleet.verifier).verdict.status is Status.AFFIRMING
    files = {p.name: p.read_text() for p in sorted(fleet.golden.glob("*.yaml"))}
    stub = pb_grpc.OperatorStub(fleet.operator)
    withdrawn = {**files, SIDE: f"{'00' * 32}  /usr/bin/ls\n"}
    reply = stub.DryRunGolden(pb.DryRunGoldenRequest(files=withdrawn))
    assert not reply.problems
    assert [c.device_id for c in reply.changes] == [runner.device_id]
    missing = stub.DryRunGolden(pb.DryRunGoldenRequest(files=files))  # the file left out
    assert any("is not among the given files" in p.message for p in missing.problems)
