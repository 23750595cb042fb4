"""``serve --processes N`` as operators run it: a dead worker comes back; a stale verifier on the
same port is refused (issue 18, findings 4 and 5)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "golden_measurements"
ENV = {**os.environ, "GRPC_VERBOSITY": "ERROR"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def serve_argv(port: int, db: Path, processes: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "verifier.cli",
        "serve",
        "--listen",
        f"127.0.0.1:{port}",
        "--db",
        str(db),
        "--golden",
        str(GOLDEN),
        "--processes",
        str(processes),
    ]


def children_of(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.add(int(entry.name))
    return found


def wait_for(condition: object, seconds: float = 60) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def verifier(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = free_port()
    process = subprocess.Popen(
        serve_argv(port, tmp_path / "v.db", 2),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        assert wait_for(lambda: len(children_of(process.pid)) == 2), "workers did not start"
        yield process, port
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def test_killed_worker_is_replaced(verifier: tuple[subprocess.Popen[str], int]) -> None:
    process, _ = verifier
    before = children_of(process.pid)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    assert wait_for(lambda: len(children_of(process.pid) - {victim}) == 2)
    after = children_of(process.pid)
    assert victim not in after and len(after - before) == 1
    assert process.poll() is None


def test_second_verifier_on_a_held_port_is_refused(
    verifier: tuple[subprocess.Popen[str], int], tmp_path: Path
) -> None:
    _, port = verifier
    second = subprocess.run(
        serve_argv(port, tmp_path / "other.db", 2),
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
        check=False,
    )
    assert second.returncode == 2
    assert "already in use" in second.stderr and "Traceback" not in second.stderr
    assert not (tmp_path / "other.db").exists()
