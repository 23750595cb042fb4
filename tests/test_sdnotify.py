"""sd_notify: each message reaches a real AF_UNIX datagram socket as the manager would read it."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from verifier import sdnotify


@pytest.fixture
def manager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A datagram socket bound at a path, named in NOTIFY_SOCKET."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        yield sock


def received(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_ready_sends_one_datagram_with_ready_and_status(manager: socket.socket) -> None:
    assert sdnotify.ready("serving on\nport 50051") is True
    assert received(manager) == ["READY=1", "STATUS=serving on port 50051"]


def test_each_call_is_its_own_datagram(manager: socket.socket) -> None:
    sdnotify.status("one")
    sdnotify.stopping()
    sdnotify.watchdog()
    assert received(manager) == ["STATUS=one"]
    assert received(manager) == ["STOPPING=1"]
    assert received(manager) == ["WATCHDOG=1"]


def test_reloading_carries_the_monotonic_clock(manager: socket.socket) -> None:
    before = time.monotonic_ns() // 1000
    sdnotify.reloading()
    message = received(manager)
    assert message[0] == "RELOADING=1"
    key, _, usec = message[1].partition("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(usec) <= time.monotonic_ns() // 1000


def test_abstract_socket_name_is_reached(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"fleet-attest-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", f"@{name}")
        assert sdnotify.ready() is True
        assert received(sock) == ["READY=1"]


def test_without_notify_socket_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.ready() is False
    monkeypatch.setenv("NOTIFY_SOCKET", "")
    assert sdnotify.status("x") is False


def test_relative_notify_socket_is_an_error_not_silence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "notify")
    with pytest.raises(OSError, match="absolute path"):
        sdnotify.ready()


def test_socket_that_is_gone_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "absent"))
    with pytest.raises(OSError):
        sdnotify.ready()


def test_injected_assignment_is_refused(manager: socket.socket) -> None:
    with pytest.raises(ValueError, match="one KEY=VALUE line"):
        sdnotify.notify("STATUS=ok\nREADY=1")
    with pytest.raises(ValueError):
        sdnotify.notify("READY")
    manager.settimeout(0)
    with pytest.raises(BlockingIOError):
        manager.recv(4096)  # nothing was sent
