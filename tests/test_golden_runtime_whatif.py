"""``golden explain`` and ``dry-run`` on runtime rules, by command and by Operator RPC.

An in-process verifier (``softruntime``): software devices boot, run files and attest
incrementally, so the verifier holds each boot as a whole list and increments after it. The
command line reads the store; the RPCs go through the running verifier; both must give the
same answer, from the same code.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from softruntime import Served, SoftRuntimeDevice, served, without_digest

from fleetattest.v1 import fleetattest_pb2 as pb
from fleetattest.v1 import fleetattest_pb2_grpc as pb_grpc
from verifier.audit.history import Retention
from verifier.cli import main
from verifier.ima import held
from verifier.imahistory import held_entries
from verifier.limits import Limits
from verifier.verdict import Status


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Served]:
    with served(tmp_path / "fleet") as fleet:
        yield fleet


def enrolled(fleet: Served, name: str) -> SoftRuntimeDevice:
    device = SoftRuntimeDevice(name)
    fleet.store.insert_device(device.record())
    device.boot()
    return device


def long_runtime(fleet: Served, name: str, *, runs_ls: bool, rounds: int = 4) -> SoftRuntimeDevice:
    """A device whose boot the verifier holds as a whole list and ``rounds - 1`` increments."""
    device = enrolled(fleet, name)
    device.run("/usr/lib/systemd/systemd")
    assert device.attest(fleet.verifier).verdict.status is Status.AFFIRMING
    for _ in range(rounds - 1):
        device.run("/usr/bin/bash")
        if runs_ls:
            device.run("/usr/bin/ls")
        attested = device.attest(fleet.verifier)
        assert attested.verdict.status is Status.AFFIRMING, attested.verdict.reasons
    assert device.accepted == len(device.raw)
    return device


def proposed_without_ls(fleet: Served, tmp_path: Path) -> Path:
    proposed = tmp_path / "proposed"
    shutil.copytree(fleet.golden, proposed)
    without_digest(proposed, "/usr/bin/ls")
    return proposed


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out + err


def operator(fleet: Served) -> pb_grpc.OperatorStub:
    return pb_grpc.OperatorStub(fleet.operator)


def files_of(directory: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(directory.glob("*.yaml"))}


def test_dry_run_flips_a_device_running_a_binary_the_proposed_set_no_longer_allows(
    fleet: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runner = long_runtime(fleet, "rt-runs-ls", runs_ls=True)
    long_runtime(fleet, "rt-no-ls", runs_ls=False)
    proposed = proposed_without_ls(fleet, tmp_path)
    argv = [
        "golden",
        "dry-run",
        str(proposed),
        "--db",
        str(fleet.db),
        "--golden",
        str(fleet.golden),
    ]
    code, out = run(argv, capsys)
    assert code == 0, out
    assert "1 device: affirming -> contraindicated, rule runtime.unknown\n" in out
    assert "1 device unchanged\n" in out
    assert "not re-evaluated" not in out
    (detail,) = [line for line in out.splitlines() if line.startswith(f"  {runner.device_id}:")]
    first_ls = next(i for i, r in enumerate(runner.raw) if b"/usr/bin/ls" in r)
    assert f"IMA entry {first_ls} (ima-ng) '/usr/bin/ls': not in the runtime policy" in detail
    assert run([*argv, "--fail-on-change"], capsys)[0] == 1

    reply = operator(fleet).DryRunGolden(pb.DryRunGoldenRequest(files=files_of(proposed)))
    assert not reply.problems and reply.devices_evaluated == 2
    assert [c.device_id for c in reply.changes] == [runner.device_id]
    (change,) = reply.changes
    assert (change.before, change.after) == (pb.STATUS_AFFIRMING, pb.STATUS_CONTRAINDICATED)
    summary = out.split("devices with stored evidence\n", 1)[1].splitlines()
    assert list(reply.summary) == summary[: len(reply.summary)]  # the same grouped lines
    assert {r.event_index for r in change.reasons if r.code == "ima_unknown_entry"} == {
        i for i, r in enumerate(runner.raw) if b"/usr/bin/ls" in r
    }


def test_explain_names_the_entry_the_set_does_not_allow(
    fleet: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    device = long_runtime(fleet, "rt-explain", runs_ls=True)
    proposed = proposed_without_ls(fleet, tmp_path)
    code, out = run(
        ["golden", "explain", "rt-explain", "--db", str(fleet.db), "--golden", str(proposed)],
        capsys,
    )
    assert code == 0, out
    assert "status   contraindicated" in out
    ls_entries = [i for i, r in enumerate(device.raw) if b"/usr/bin/ls" in r]
    rows = [line.split() for line in out.splitlines() if "/usr/bin/ls" in line]
    assert [int(row[0]) for row in rows] == ls_entries
    assert all(
        row[1:5] == ["ima-ng", "/usr/bin/ls", "contraindicated:", "ima_unknown_entry"]
        for row in rows
    )
    assert all(row[-1].startswith("sha256:") for row in rows)
    total = len(device.raw)
    summary = (
        f"runtime: {total} entries appraised: {total - 1 - len(ls_entries)} allowed by digest, "
        f"0 excluded, 0 signature-checked, {len(ls_entries)} unknown, 0 violations, 0 rejected"
    )
    assert summary in out.splitlines()
    assert "the whole list of attestation" in out  # where the entries came from

    # The live set made the same as the proposed one: the RPC explains with it.
    shutil.copy(proposed / "sim-runtime.yaml", fleet.golden / "sim-runtime.yaml")
    assert fleet.verifier.golden.reload().applied
    reply = operator(fleet).ExplainDevice(pb.ExplainDeviceRequest(device_id=device.device_id))
    assert reply.status == pb.STATUS_CONTRAINDICATED
    runtime = reply.runtime
    assert runtime.evaluated and runtime.summary == summary
    assert [(f.entry, f.path, f.template, f.code) for f in runtime.failures] == [
        (i, "/usr/bin/ls", "ima-ng", "ima_unknown_entry") for i in ls_entries
    ]
    assert (runtime.appraised, runtime.unknown) == (total, len(ls_entries))


def test_a_purged_history_is_reported_not_re_evaluated_never_unchanged(
    fleet: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    purged = long_runtime(fleet, "rt-purged", runs_ls=True)
    kept = long_runtime(fleet, "rt-kept", runs_ls=False, rounds=1)  # newest: its whole list
    while fleet.store.purge_history(1e12, Retention(keep_per_device=1)):
        pass  # only each device's newest attestation (an increment) is left
    proposed = proposed_without_ls(fleet, tmp_path)
    argv = [
        "golden",
        "dry-run",
        str(proposed),
        "--db",
        str(fleet.db),
        "--golden",
        str(fleet.golden),
    ]
    code, out = run(argv, capsys)
    assert code == 0, out
    lines = out.splitlines()
    assert "1 device: runtime not re-evaluated: history purged by retention" in lines
    assert "1 device unchanged" in lines  # rt-kept: its whole list is its newest attestation
    detail = next(line for line in lines if line.startswith(f"  {purged.device_id}:"))
    assert "runtime not re-evaluated: the evidence of attestation" in detail
    assert "purged by retention" in detail
    assert run([*argv, "--fail-on-change"], capsys)[0] == 1

    code, out = run(
        ["golden", "explain", purged.device_id, "--db", str(fleet.db), "--golden", str(proposed)],
        capsys,
    )
    assert code == 0 and "runtime not re-evaluated: the evidence of attestation" in out
    reply = operator(fleet).DryRunGolden(pb.DryRunGoldenRequest(files=files_of(proposed)))
    assert [n.device_id for n in reply.not_reevaluated] == [purged.device_id]
    assert {n.kind for n in reply.not_reevaluated} == {"history purged by retention"}
    assert "1 device unchanged" in reply.summary and kept.accepted == len(kept.raw)
    explained = operator(fleet).ExplainDevice(pb.ExplainDeviceRequest(device_id=purged.device_id))
    assert not explained.runtime.evaluated
    assert explained.runtime.summary.startswith("runtime not re-evaluated: the evidence of")
    assert explained.runtime.summary in out.splitlines()


def test_explain_of_an_operators_list_judges_that_list_by_command_and_by_rpc(
    fleet: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    device = long_runtime(fleet, "rt-file", runs_ls=False, rounds=1)
    device.run("/usr/local/bin/miner", b"xmrig 6.21")  # never sent: only in the operator's file
    listing = tmp_path / "binary_runtime_measurements"
    listing.write_bytes(device.log)
    code, out = run(
        [
            "golden",
            "explain",
            device.device_id,
            "--db",
            str(fleet.db),
            "--golden",
            str(fleet.golden),
            "--ima-log",
            str(listing),
        ],
        capsys,
    )
    assert code == 0, out
    miner = len(device.raw) - 1
    (row,) = [line.split() for line in out.splitlines() if "/usr/local/bin/miner" in line]
    assert row[:5] == [
        str(miner),
        "ima-ng",
        "/usr/local/bin/miner",
        "contraindicated:",
        "ima_unknown_entry",
    ]
    assert f"runtime  {listing}" in out
    reply = operator(fleet).ExplainDevice(
        pb.ExplainDeviceRequest(device_id=device.device_id, ima_log=device.log)
    )
    assert [(f.entry, f.path) for f in reply.runtime.failures] == [(miner, "/usr/local/bin/miner")]
    assert reply.runtime.summary in out.splitlines()
    held = operator(fleet).ExplainDevice(pb.ExplainDeviceRequest(device_id=device.device_id))
    assert held.runtime.evaluated and not held.runtime.failures  # what the verifier holds
    listing.write_bytes(device.log[:-3])
    code, out = run(
        [
            "golden",
            "explain",
            device.device_id,
            "--db",
            str(fleet.db),
            "--golden",
            str(fleet.golden),
            "--ima-log",
            str(listing),
        ],
        capsys,
    )
    assert code == 2 and len(out.strip().splitlines()) == 1 and "ImaLogError" in out


def test_an_attestation_stored_without_its_evidence_is_reported_not_re_evaluated(
    fleet: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    device = long_runtime(fleet, "rt-notkept", runs_ls=True)
    latest = fleet.store.latest_verdict(device.device_id)
    assert latest is not None
    fleet.store.add_verdict(latest)  # as when its evidence was over the stored-size limit
    code, out = run(
        [
            "golden",
            "explain",
            device.device_id,
            "--db",
            str(fleet.db),
            "--golden",
            str(fleet.golden),
        ],
        capsys,
    )
    assert code == 0
    assert "runtime not re-evaluated: attestation" in out
    assert "stored without its evidence" in out
    reply = operator(fleet).ExplainDevice(pb.ExplainDeviceRequest(device_id=device.device_id))
    assert not reply.runtime.evaluated and reply.runtime.summary in out.splitlines()


def test_a_new_boot_without_an_accepted_list_holds_nothing_of_the_old_one(
    fleet: Served,
) -> None:
    device = long_runtime(fleet, "rt-reboot", runs_ls=True)
    device.boot()
    device.run("/usr/local/bin/miner", b"xmrig 6.21")
    device.raw.pop()  # hidden from the list; PCR 10 was extended with it
    verdict = device.attest(fleet.verifier, whole=True).verdict
    assert "ima_replay_mismatch" in {r.code for r in verdict.reasons}
    found = held_entries(fleet.store, device.device_id, "sha1")
    assert found.kind == held.NO_LIST and not found.entries  # not the old boot's entries
    assert "current boot 3:0" in found.missing


def test_a_boot_longer_than_the_read_limit_is_reported_not_re_evaluated(fleet: Served) -> None:
    device = long_runtime(fleet, "rt-long", runs_ls=False, rounds=4)
    short = Limits(max_whatif_ima_attestations=2)
    found = held_entries(fleet.store, device.device_id, "sha1", short)
    assert found.kind == held.TOO_LONG and not found.entries
    assert held_entries(fleet.store, device.device_id, "sha1").complete
