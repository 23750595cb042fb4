"""The simulator's programs as a new user runs them: scenarios, the demo and the rollout.

The scenario table is the verifier's acceptance test against real swtpm devices: every
scenario must come out as expected. The demo and the rollout run as subprocesses so that
their exit codes, output and clean shutdown (no swtpm left behind, also on Ctrl-C) are checked
the way a user meets them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from agent.tpm import Tpm
from fleetattest.v1 import fleetattest_pb2 as pb
from simulator.fleet import Fleet
from simulator.profiles import GOOD_A, GOOD_B, TAMPERED_BOOTLOADER
from simulator.rollout import run_rollout
from simulator.scenarios import SCENARIOS
from verifier.eventlog import parse_event_log, replay
from verifier.golden.learn import learn_release

pytestmark = pytest.mark.swtpm
GOLDEN = Path(__file__).resolve().parent.parent / "golden_measurements"
ENV = {**os.environ, "GRPC_VERBOSITY": "ERROR"}


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_scenario_has_its_expected_outcome(scenario: object, tmp_path: Path) -> None:
    with Fleet(tmp_path) as fleet:
        verifier = fleet.start_verifier(GOLDEN)
        outcome = scenario.run(fleet, verifier.address)  # type: ignore[attr-defined]
    assert outcome.result == scenario.expected, outcome  # type: ignore[attr-defined]


def swtpm_children(pid: int) -> list[int]:
    """swtpm processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if name == "swtpm" and ppid == pid:
            found.append(int(entry.name))
    return found


def test_demo_prints_the_fleet_verdicts_and_leaves_no_swtpm_behind() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "simulator.cli", "demo", "--devices", "5"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env=ENV,
    )
    assert result.returncode == 0, result.stderr
    assert "5 devices: 3 affirming, 2 contraindicated" in result.stdout
    assert "boot_chain_mismatch" in result.stdout and "kernel_cmdline_mismatch" in result.stdout
    assert swtpm_with_state_under("/attest-sim-") == []


def swtpm_with_state_under(fragment: str) -> list[int]:
    """Live swtpm processes whose command line names a path containing ``fragment``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"swtpm") and fragment.encode() in b" ".join(argv):
            found.append(int(entry.name))
    return found


def test_demo_interrupted_with_ctrl_c_stops_every_swtpm() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "simulator.cli", "demo", "--devices", "8"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    deadline = time.monotonic() + 60
    while not swtpm_children(process.pid):
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.02)
    children = swtpm_children(process.pid)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "interrupted" in err
    time.sleep(0.2)
    assert [pid for pid in children if Path(f"/proc/{pid}").exists()] == []


def test_rollout_halts_on_a_device_that_comes_back_contraindicated(tmp_path: Path) -> None:
    with Fleet(tmp_path) as fleet:
        verifier = fleet.start_verifier(GOLDEN)
        devices = [fleet.add_device(f"gw-{i}", GOOD_A) for i in range(5)]
        for device in devices:
            device.attest(verifier.address)
        bad = devices[2]
        tampered = replace(GOOD_B, name="tampered-b", grub=TAMPERED_BOOTLOADER.grub)
        waves = [devices[0:2], devices[2:4], devices[4:]]
        report = run_rollout(
            verifier,
            waves,
            "fw-1.1.0",
            lambda d: tampered if d is bad else GOOD_B,
            log=lambda line: None,
        )
    assert report.halted and report.waves_done == 2
    assert [name for name, _ in report.halted_by] == ["gw-2"]
    assert report.upgraded == ["gw-0", "gw-1", "gw-3"]
    assert devices[4].firmware is GOOD_A  # the last wave was never shipped


def test_rollout_skips_a_device_the_verifier_does_not_vouch_for(tmp_path: Path) -> None:
    with Fleet(tmp_path) as fleet:
        verifier = fleet.start_verifier(GOLDEN)
        good = fleet.add_device("good", GOOD_A)
        good.attest(verifier.address)
        silent = fleet.add_device("silent", GOOD_A)
        silent.attest(verifier.address)
        verifier.clock.advance(3601)  # both verdicts expire...
        good.attest(verifier.address)  # ...but only one device attests again
        report = run_rollout(
            verifier, [[good, silent]], "fw-1.1.0", lambda d: GOOD_B, log=lambda s: None
        )
    assert report.upgraded == ["good"]
    assert [name for name, _ in report.skipped] == ["silent"]
    assert "verdict_expired" in report.skipped[0][1]


def test_a_real_machines_log_replayed_into_swtpm_attests_against_its_learned_release(
    tmp_path: Path,
) -> None:
    # keylime's RHEL 9 Secure Boot log starts PCR 0 at locality 3: swtpm starts there too.
    log = (Path(__file__).parent / "data/eventlogs/keylime/binary_bios_measurements").read_bytes()
    selection = list(range(10))
    with Fleet(tmp_path) as fleet:
        device = fleet.add_device("real", GOOD_A, labels={"model": "rhel9-laptop"})
        expected = device.boot_real_log(log)
        with Tpm.open(device.tpm.tcti) as tpm:
            assert tpm.read_pcrs("sha256", sorted(expected)) == expected
        assert replay(parse_event_log(log), "sha256").pcrs == expected
        release = learn_release(log, expected, "sha256", "rhel-9.5", selection)
        golden = tmp_path / "golden"
        golden.mkdir()
        (golden / "rhel9.yaml").write_text(
            "profile: rhel9-laptop\nmatch: {model: rhel9-laptop}\nverdict_lifetime: 1h\n"
            f"bank: sha256\npcrs: {selection}\nreleases:\n{release}"
        )
        verifier = fleet.start_verifier(golden)
        verdict = device.attest(verifier.address)
    assert verdict.status == pb.STATUS_AFFIRMING, verdict.reasons
    assert verdict.release == "rhel-9.5"
