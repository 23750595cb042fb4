"""The agent and operator programs as users run them: exit codes, output, signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simulator.fleet import Fleet, RunningVerifier, SimDevice
from simulator.profiles import GOOD_A, INIT_SH
from verifier import cli

pytestmark = pytest.mark.swtpm
GOLDEN = Path(__file__).resolve().parent.parent / "golden_measurements"
ENV = {**os.environ, "GRPC_VERBOSITY": "ERROR"}


def agent_argv(device: SimDevice, address: str, command: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "agent.cli",
        command,
        "--verifier",
        address,
        "--ca",
        str(device.verifier_ca),
        "--tcti",
        device.tpm.tcti,
        "--state-dir",
        str(device.workdir / "agent-state"),
        "--event-log",
        str(device.event_log),
        "--label",
        "model=sim-gateway",
    ]


def test_agent_attest_exits_0_only_for_an_affirming_verdict(fleet: Fleet) -> None:
    address = fleet.live.address
    good = fleet.add_device("good", GOOD_A)
    bad = fleet.add_device("bad", INIT_SH)
    ok = subprocess.run(
        agent_argv(good, address, "attest"), capture_output=True, text=True, env=ENV, check=False
    )
    assert ok.returncode == 0, ok.stderr
    assert "affirming" in ok.stdout
    refused = subprocess.run(
        agent_argv(bad, address, "attest"), capture_output=True, text=True, env=ENV, check=False
    )
    assert refused.returncode == 1
    assert "contraindicated" in refused.stdout and "kernel_cmdline_mismatch" in refused.stdout


def test_agent_run_attests_then_exits_cleanly_on_sigterm(fleet: Fleet) -> None:
    device = fleet.add_device("daemon", GOOD_A)
    process = subprocess.Popen(
        agent_argv(device, fleet.live.address, "run"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        deadline = time.monotonic() + 30
        while not fleet.live.store.list_devices() or not fleet.live.store.latest_verdict(
            fleet.live.store.list_devices()[0].device_id
        ):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the agent did not attest"
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err


def test_operator_sees_devices_and_verdict_reasons(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    address = fleet.live.address
    bad = fleet.add_device("bad", INIT_SH)
    bad.attest(address)
    db = str(fleet.live.workdir / "verifier.db")
    assert cli.main(["devices", "--db", db]) == 0
    listing = capsys.readouterr().out
    assert bad.device_id[:19] in listing and "contraindicated" in listing
    assert cli.main(["verdict", "show", bad.device_id[:12], "--db", db]) == 0
    shown = capsys.readouterr().out
    assert "kernel_cmdline_mismatch" in shown and "NOT TRUSTED" in shown
    assert cli.main(["verdict", "show", "dev-nope", "--db", db]) == 2
    assert "no enrolled device has an id starting with" in capsys.readouterr().err


def test_agent_run_enrolls_again_when_the_verifier_lost_its_database(
    fleet: Fleet, tmp_path: Path
) -> None:
    device = fleet.add_device("amnesia", GOOD_A)
    first = fleet.live
    device.attest(first.address)
    fresh = RunningVerifier(
        tmp_path / "fresh", fleet.trust_dir, GOLDEN, pki=fleet.pki
    )  # an empty store
    process = subprocess.Popen(
        agent_argv(device, fresh.address, "run"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        deadline = time.monotonic() + 30
        while fresh.store.latest_verdict(device.device_id) is None:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the agent did not enroll again"
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
        fresh.close()
    assert process.returncode == 0
