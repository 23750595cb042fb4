"""Findings 4 and 5 of the fault run: a SIGKILLed worker stayed dead, and a stale verifier could
share the port through SO_REUSEPORT.

The supervisor runs in a child Python process (it installs signal handlers and reaps with
``waitpid(-1)``, which must not touch pytest's own children). Waits are bounded polls for an
event (a pid file appearing, the process exiting), never assertions on elapsed time."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from verifier.supervisor import RestartPolicy, check_port_exclusive

ROOT = Path(__file__).resolve().parents[1]
WAIT = 60.0  # seconds: generous bound for a poll, only a hang reaches it

# Each worker writes its pid to DIR/<pid>, exits 0 on SIGTERM, and otherwise sleeps.
_SUPERVISED = """
import logging, os, signal, sys, time
from pathlib import Path
from verifier.supervisor import RestartPolicy, supervise

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
where, mode = Path(sys.argv[1]), sys.argv[2]

def worker(slot: int) -> int:
    (where / str(os.getpid())).write_text("")
    if mode == "die":
        return 3
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
    signal.signal(signal.SIGHUP, lambda *_: (where / f"hup-{os.getpid()}").write_text(""))
    while True:
        time.sleep(0.05)

policy = RestartPolicy(max_deaths=3, window=60.0, backoff=0.01, max_backoff=0.05)
sys.exit(supervise(worker, 2, policy))
"""


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.02)


def worker_pids(where: Path) -> set[int]:
    return {int(p.name) for p in where.iterdir() if p.name.isdigit()}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in _state(pid)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"


@pytest.fixture
def supervised(tmp_path: Path) -> Iterator[Callable[[str], subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []

    def start(mode: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", _SUPERVISED, str(tmp_path), mode],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for pid in worker_pids(tmp_path):
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_sigkilled_worker_is_replaced_with_a_log_line(
    supervised: Callable[[str], subprocess.Popen[str]], tmp_path: Path
) -> None:
    proc = supervised("sleep")
    wait_for(lambda: len(worker_pids(tmp_path)) == 2, "two workers")
    victim = min(worker_pids(tmp_path))
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(worker_pids(tmp_path)) == 3, "a replacement worker")
    running = {pid for pid in worker_pids(tmp_path) if alive(pid)}
    assert victim not in running and len(running) == 2
    proc.send_signal(signal.SIGHUP)  # forwarded, not a stop
    wait_for(lambda: len(list(tmp_path.glob("hup-*"))) == 2, "SIGHUP at both workers")
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0, err
    assert f"worker {victim} died (signal SIGKILL); restarting it in" in err
    assert "started worker" in err and "to replace a dead one" in err
    assert not any(alive(pid) for pid in worker_pids(tmp_path))


def test_workers_that_keep_dying_make_the_supervisor_exit_non_zero(
    supervised: Callable[[str], subprocess.Popen[str]], tmp_path: Path
) -> None:
    proc = supervised("die")
    _, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 1, err
    assert "died (exit code 3)" in err
    assert "workers keep dying: stopping the verifier" in err
    assert len(worker_pids(tmp_path)) >= 3  # two started, a replacement at least, three deaths
    assert err.count("died (exit code 3)") >= 3


def test_sigint_stops_every_worker(
    supervised: Callable[[str], subprocess.Popen[str]], tmp_path: Path
) -> None:
    proc = supervised("sleep")
    wait_for(lambda: len(worker_pids(tmp_path)) == 2, "two workers")
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=WAIT)
    assert proc.returncode == 0
    assert not any(alive(pid) for pid in worker_pids(tmp_path))


def test_backoff_doubles_per_death_up_to_its_cap() -> None:
    policy = RestartPolicy(backoff=0.5, max_backoff=3.0)
    assert [policy.delay(n) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


# ------------------------------------------------------------------ the port


def listening(reuse_port: bool, host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, 0))
    sock.listen()
    return sock


@pytest.mark.parametrize("reuse_port", [False, True], ids=["plain", "so_reuseport"])
def test_port_held_by_another_socket_is_refused(reuse_port: bool) -> None:
    with listening(reuse_port) as other:
        port = other.getsockname()[1]
        error = check_port_exclusive(f"127.0.0.1:{port}")
    assert error == (
        f"port {port} on 127.0.0.1 is already in use by another process"
        " (a verifier left running?): refusing to share it"
    )


def test_port_held_on_loopback_is_refused_for_the_wildcard_address() -> None:
    with listening(True) as other:
        port = other.getsockname()[1]
        assert check_port_exclusive(f"0.0.0.0:{port}") is not None
        assert check_port_exclusive(f"[::]:{port}") is not None


def test_bound_but_not_listening_socket_is_refused() -> None:
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        port = other.getsockname()[1]
        assert check_port_exclusive(f"127.0.0.1:{port}") is not None


def test_free_port_and_connections_left_in_time_wait_are_not_refused() -> None:
    with listening(False) as server:
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = server.accept()
            accepted.close()  # the server side closes first: its end stays in TIME_WAIT
            client.recv(1)
    assert check_port_exclusive(f"127.0.0.1:{port}") is None


def test_unresolvable_listen_address_is_a_one_line_error() -> None:
    error = check_port_exclusive("127.0.0.1:notaport")
    assert error is not None and error.startswith("cannot resolve --listen 127.0.0.1:notaport")
