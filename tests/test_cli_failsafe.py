"""Operator commands that fail safe: each reproduces a failure a new user met (issue 11).

Read-only commands never create or migrate a database; export never creates a key; a port in
use, a bad golden directory and an unreachable verifier are one line with exit 2; a device-id
prefix means the same to every command; AK names are printed in full; --json, --version and
--log-level everywhere; one spelling per quirk; dry-run can gate CI.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from simulator.fleet import Fleet
from simulator.profiles import GOOD_A, INIT_SH
from verifier import cli

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "golden_measurements"
LOG = ROOT / "tests" / "data" / "eventlogs" / "keylime" / "binary_bios_measurements-secureboot"
ENV = {**os.environ, "GRPC_VERBOSITY": "ERROR"}


def one_line_exit_2(capsys: pytest.CaptureFixture[str], code: int) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(
    "argv",
    [
        ["devices", "--db", "{db}"],
        ["devices", "--db", "{db}", "--json"],
        ["verdict", "show", "dev-1", "--db", "{db}"],
        ["verdict", "check", "dev-1", "--max-age", "10m", "--db", "{db}"],
        ["approve-ak", "dev-1", "00", "--db", "{db}"],
        ["golden", "explain", "dev-1", "--db", "{db}", "--golden", str(GOLDEN)],
    ],
)
def test_command_on_a_mistyped_database_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    typo = tmp_path / "typo.db"
    code = cli.main([a.replace("{db}", str(typo)) for a in argv])
    assert "typo.db" in one_line_exit_2(capsys, code)
    assert list(tmp_path.iterdir()) == []


def test_export_jwks_from_a_missing_key_directory_creates_no_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nonexistent"
    code = cli.main(["keys", "export-jwks", "--keys", str(missing), str(tmp_path / "out.json")])
    assert "no token signing key ring" in one_line_exit_2(capsys, code)
    assert not missing.exists() and not (tmp_path / "out.json").exists()
    code = cli.main(["keys", "rotate", "--keys", str(missing)])
    one_line_exit_2(capsys, code)
    assert not missing.exists()


def test_serve_on_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "verifier.cli",
                "--log-level",
                "error",
                "serve",
                "--listen",
                f"127.0.0.1:{port}",
                "--db",
                str(tmp_path / "v.db"),
                "--golden",
                str(GOLDEN),
            ],
            capture_output=True,
            text=True,
            env=ENV,
            timeout=60,
            check=False,
        )
    finally:
        holder.close()
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_serve_without_a_golden_directory_says_it_is_required(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli.main(["serve", "--db", str(tmp_path / "v.db")])
    assert stopped.value.code == 2
    assert "--golden" in capsys.readouterr().err
    assert not (tmp_path / "v.db").exists()


def test_serve_with_a_bad_golden_directory_refuses_to_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["serve", "--db", str(tmp_path / "v.db"), "--golden", str(tmp_path / "no")])
    assert code == 2
    assert "refusing to start" in capsys.readouterr().err


def test_status_of_an_unreachable_verifier_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["status", "--verifier", f"unix:{tmp_path / 'nobody.sock'}"])
    assert "unreachable" in one_line_exit_2(capsys, code)


@pytest.mark.swtpm
def test_sim_demo_with_a_bad_golden_directory_is_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "simulator.cli", "demo", "--golden", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


@pytest.mark.swtpm
def test_every_command_resolves_the_same_device_prefix(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    good = fleet.add_device("good", GOOD_A)
    good.attest(fleet.live.address)
    db = str(fleet.live.workdir / "verifier.db")
    prefix = good.device_id[:10]
    capsys.readouterr()
    assert cli.main(["verdict", "show", prefix, "--db", db]) == 0
    assert good.device_id in capsys.readouterr().out
    check = ["verdict", "check", prefix, "--max-age", "10m", "--db", db, "--golden", str(GOLDEN)]
    assert cli.main(check) == 0
    assert good.device_id in capsys.readouterr().out
    assert cli.main(["golden", "explain", prefix, "--db", db, "--golden", str(GOLDEN)]) == 0
    assert good.device_id in capsys.readouterr().out


@pytest.mark.swtpm
def test_an_ambiguous_prefix_lists_the_candidates(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    first = fleet.add_device("a", GOOD_A)
    second = fleet.add_device("b", INIT_SH)
    first.enroll(fleet.live.address)
    second.enroll(fleet.live.address)
    db = str(fleet.live.workdir / "verifier.db")
    capsys.readouterr()
    for argv in (["verdict", "show", "dev-"], ["verdict", "check", "dev-", "--max-age", "1m"]):
        err = one_line_exit_2(capsys, cli.main([*argv, "--db", db]))
        assert "matches several devices" in err
        assert first.device_id in err and second.device_id in err


@pytest.mark.swtpm
def test_devices_json_carries_full_ids_and_ak_names(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    device = fleet.add_device("good", GOOD_A)
    device.attest(fleet.live.address)
    db = str(fleet.live.workdir / "verifier.db")
    capsys.readouterr()
    assert cli.main(["devices", "--db", db, "--json"]) == 0
    [listed] = json.loads(capsys.readouterr().out)["devices"]
    assert listed["device_id"] == device.device_id
    assert len(listed["ak_name"]) == 68  # the full TPM name: 2-byte algorithm + SHA-256
    assert listed["latest_verdict"]["status"] == "affirming"
    assert cli.main(["verdict", "show", device.device_id, "--db", db, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["verdicts"][0]["verdict_id"] == listed["latest_verdict"]["verdict_id"]


def test_eventlog_show_json_lists_every_event(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["eventlog", "show", str(LOG), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["events"] and {"number", "pcr", "digests"} <= set(document["events"][0])


def test_the_replay_quirk_is_spelled_as_in_golden_files(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["eventlog", "replay", str(LOG), "--quirk", "missing_exit_boot_services"])
    assert code == 0
    with pytest.raises(SystemExit):
        cli.main(["eventlog", "replay", str(LOG), "--missing-exit-boot-services"])


@pytest.mark.parametrize(
    "program", [["verifier.cli"], ["agent.cli"], ["simulator.cli"]], ids=lambda p: p[0]
)
def test_every_program_has_version_and_log_level(program: list[str]) -> None:
    version = subprocess.run(
        [sys.executable, "-m", *program, "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert version.returncode == 0 and version.stdout.strip()
    helptext = subprocess.run(
        [sys.executable, "-m", *program, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "--log-level" in helptext.stdout
    assert "``" not in helptext.stdout  # no reStructuredText markup in help


@pytest.mark.swtpm
def test_dry_run_fail_on_change_gates_an_edit(
    fleet: Fleet, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    device = fleet.add_device("good", GOOD_A)
    device.attest(fleet.live.address)
    db = str(fleet.live.workdir / "verifier.db")
    same = ["golden", "dry-run", str(GOLDEN), "--db", db, "--golden", str(GOLDEN)]
    assert cli.main([*same, "--fail-on-change"]) == 0
    proposed = tmp_path / "proposed"
    proposed.mkdir()
    text = (GOLDEN / "sim-gateway.yaml").read_text()
    (proposed / "sim-gateway.yaml").write_text(text.replace("ro quiet", "ro", 1))
    edit = ["golden", "dry-run", str(proposed), "--db", db, "--golden", str(GOLDEN)]
    assert cli.main(edit) == 0
    assert cli.main([*edit, "--fail-on-change"]) == 1
    assert "would change" in capsys.readouterr().out


@pytest.mark.swtpm
@pytest.mark.slow
def test_demo_keep_leaves_a_fleet_for_the_operator_commands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keep = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "simulator.cli", "demo", "--devices", "3", "--keep", str(keep)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "attest-verifier devices --db" in result.stdout
    db = keep / "verifier" / "verifier.db"
    assert cli.main(["devices", "--db", str(db), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["devices"]) == 3
    again = subprocess.run(
        [sys.executable, "-m", "simulator.cli", "demo", "--devices", "1", "--keep", str(keep)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
        check=False,
    )
    assert again.returncode == 2 and "new or empty directory" in again.stderr
