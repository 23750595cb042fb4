"""The shipped systemd units: systemd itself checks them, and their sandbox stays tight.

``systemd-analyze verify`` checks a unit against the machine's systemd (directive names and
values, dependencies, that every Exec binary exists and is executable). It needs no running
systemd, but it resolves binaries on the machine it runs on, where fleet-attest is not
installed in /opt. So each test builds a root directory: the host's own system units (for
``sysinit.target`` and the rest), the shipped units unchanged in ``/etc/systemd/system``, the
install location's entry points (``/opt/fleet-attest/bin``, see deploy/README.md) as small
executables, and the host's ``kill`` and ``cp`` at the paths the units name; then runs
``systemd-analyze --root``. A unit naming any other binary fails. Verify reports unknown
directives as warnings with exit 0, so any output at all is a failure.

Skipped, with the reason, only where ``systemd-analyze`` is not installed (Debian package
``systemd``) or the host has no system unit directory to copy.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SYSTEMD = REPO / "deploy" / "systemd"
UNITS = ("attest-verifier.service", "attest-agent.service")
PREFIX = Path("/opt/fleet-attest")
MAX_EXPOSURE = 2.0  # systemd-analyze security's 0-10 scale; measured 1.2 and 1.5 (systemd 252)
HOST_UNITS = next(
    (d for d in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if d.is_dir()),
    None,
)

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None or HOST_UNITS is None,
    reason="systemd-analyze is not installed (apt-get install systemd)"
    if ANALYZE is None
    else "no system unit directory on this host to build a root from",
)


def make_root(tmp_path: Path, units: dict[str, str]) -> Path:
    root = tmp_path / "root"
    assert HOST_UNITS is not None
    shutil.copytree(HOST_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    for name, text in units.items():
        (root / "etc/systemd/system" / name).write_text(text)
    for program in ("attest-verifier", "attest-agent"):
        entry = root / PREFIX.relative_to("/") / "bin" / program
        entry.parent.mkdir(parents=True, exist_ok=True)
        entry.write_text("#!/bin/sh\nexit 0\n")
        entry.chmod(0o755)
    (root / "bin").mkdir()
    for tool in ("kill", "cp"):
        found = shutil.which(tool)
        assert found is not None, tool
        shutil.copy(found, root / "bin" / tool)
    return root


def shipped() -> dict[str, str]:
    return {name: (SYSTEMD / name).read_text() for name in UNITS}


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run([ANALYZE, *args], capture_output=True, text=True, timeout=60, check=False)


@needs_analyze
def test_shipped_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    root = make_root(tmp_path, shipped())
    result = analyze("verify", f"--root={root}", *UNITS)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@needs_analyze
def test_verify_reports_a_misspelt_directive(tmp_path: Path) -> None:
    units = shipped()
    units["attest-verifier.service"] = units["attest-verifier.service"].replace(
        "ProtectSystem=strict", "ProtectSystm=strict"
    )
    root = make_root(tmp_path, units)
    result = analyze("verify", f"--root={root}", *UNITS)
    assert "Unknown key 'ProtectSystm'" in result.stderr


@needs_analyze
def test_verify_reports_a_missing_executable(tmp_path: Path) -> None:
    units = shipped()
    units["attest-agent.service"] = units["attest-agent.service"].replace(
        "/opt/fleet-attest/bin/attest-agent", "/usr/bin/attest-agent"
    )
    root = make_root(tmp_path, units)
    result = analyze("verify", f"--root={root}", *UNITS)
    assert result.returncode != 0
    assert "/usr/bin/attest-agent is not executable" in result.stderr


def exposure(root: Path, unit: str) -> float:
    result = analyze("security", "--offline=yes", f"--root={root}", unit)
    found = re.search(rf"Overall exposure level for {re.escape(unit)}: (\d+\.\d+)", result.stdout)
    assert found, result.stdout + result.stderr
    return float(found[1])


@needs_analyze
@pytest.mark.parametrize("unit", UNITS)
def test_unit_exposure_stays_under_the_threshold(tmp_path: Path, unit: str) -> None:
    if "--offline" not in analyze("security", "--help").stdout:
        pytest.skip("this systemd-analyze has no 'security --offline' (systemd < 250)")
    assert exposure(make_root(tmp_path, shipped()), unit) < MAX_EXPOSURE


@needs_analyze
def test_exposure_check_sees_a_sandbox_removed(tmp_path: Path) -> None:
    if "--offline" not in analyze("security", "--help").stdout:
        pytest.skip("this systemd-analyze has no 'security --offline' (systemd < 250)")
    text = shipped()["attest-verifier.service"]
    loose = "\n".join(
        line for line in text.splitlines() if not line.startswith(("Protect", "Private", "System"))
    )
    root = make_root(tmp_path, {"attest-verifier.service": loose + "\n"})
    assert exposure(root, "attest-verifier.service") >= MAX_EXPOSURE


def test_entry_points_the_units_start_are_the_package_scripts() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    for unit, program in zip(UNITS, ("attest-verifier", "attest-agent"), strict=True):
        start = re.search(r"^ExecStart=(\S+)", (SYSTEMD / unit).read_text(), re.MULTILINE)
        assert start and start[1] == str(PREFIX / "bin" / program)
        assert program in scripts


def test_units_read_the_shipped_sample_configuration() -> None:
    verifier = (SYSTEMD / UNITS[0]).read_text()
    assert "--config /etc/fleet-attest/verifier.toml" in verifier
    assert (REPO / "deploy" / "verifier.toml").is_file()
    agent = (SYSTEMD / UNITS[1]).read_text()
    assert "EnvironmentFile=/etc/fleet-attest/agent.env" in agent
    env = (REPO / "deploy" / "agent.env").read_text()
    assert re.search(r"^VERIFIER=\S+$", env, re.M) and re.search(r"^AGENT_OPTS=", env, re.M)
    for text in (verifier, agent):
        assert "ConfigurationDirectory=fleet-attest" in text


def test_sample_paths_are_the_units_writable_directories() -> None:
    serve = tomllib.loads((REPO / "deploy/verifier.toml").read_text())["serve"]
    for key in ("db", "keys"):
        assert serve[key].startswith("/var/lib/attest-verifier/"), key
    agent = (SYSTEMD / UNITS[1]).read_text()
    assert "--state-dir /var/lib/attest-agent " in agent
    copy = re.search(r"^ExecStartPre=\+/bin/cp .* (\S+)$", agent, re.M)
    event_log = re.search(r"--event-log (\S+)", agent)
    assert copy and event_log and copy[1] == event_log[1]
    assert event_log[1].startswith("/run/attest-agent/")


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None, reason="systemd is not installed")
@pytest.mark.parametrize("user", ["attest-verifier", "attest-agent"])
def test_sysusers_file_creates_a_locked_system_user(tmp_path: Path, user: str) -> None:
    (tmp_path / "etc").mkdir()
    conf = SYSTEMD / f"{user}.sysusers.conf"
    subprocess.run(["systemd-sysusers", f"--root={tmp_path}", str(conf)], check=True, timeout=60)
    entries = [line.split(":") for line in (tmp_path / "etc/passwd").read_text().splitlines()]
    (entry,) = [e for e in entries if e[0] == user]
    assert int(entry[2]) < 1000  # a system user
    assert entry[5] == f"/var/lib/{user}"
    assert entry[6].endswith("nologin")
    unit = (SYSTEMD / f"{user}.service").read_text()
    assert f"User={user}\n" in unit and f"StateDirectory={user}\n" in unit
