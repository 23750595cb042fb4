"""The boot storm's client transport (issue 18): a slow handshake is not UNAVAILABLE.

The storm bench saw rare UNAVAILABLE "failed to connect to all addresses ... connection
attempt timed out before receiving SETTINGS frame" / "tcp handshaker shutdown" while the
verifier was serving: the storm clients' ``grpc.min_reconnect_backoff_ms`` of 100 ms is gRPC's
minimum *connect timeout*, and under a storm the TCP and HTTP/2 handshake take longer than
that. Here a proxy holds every new connection for ``DELAY`` seconds before it reaches a real
gRPC server, which is what a loaded verifier looks like to a connecting client.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from simulator.softfleet import CHANNEL_OPTIONS

DELAY = 0.5  # seconds a new connection waits before its handshake can go on


def _pump(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


@contextlib.contextmanager
def slow_handshake_proxy(upstream: int) -> Iterator[int]:
    """A TCP proxy on loopback that forwards each connection only after ``DELAY``."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    open_sockets: list[socket.socket] = []

    def handle(client: socket.socket) -> None:
        time.sleep(DELAY)  # the connection is accepted; nothing answers yet
        with contextlib.suppress(OSError):
            server = socket.create_connection(("127.0.0.1", upstream))
            open_sockets.append(server)
            threading.Thread(target=_pump, args=(server, client), daemon=True).start()
            _pump(client, server)

    def accept() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            open_sockets.append(client)
            threading.Thread(target=handle, args=(client,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        listener.close()
        for sock in open_sockets:
            with contextlib.suppress(OSError):
                sock.close()


@pytest.fixture
def slow_server() -> Iterator[int]:
    """A gRPC server (the standard health service) behind the slow-handshake proxy."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with slow_handshake_proxy(port) as proxied:
            yield proxied
    finally:
        server.stop(None)


def _check(port: int, options: tuple[tuple[str, int], ...]) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=30
        )
    return int(reply.status)


def test_slow_handshake_in_a_boot_storm_is_not_unavailable(slow_server: int) -> None:
    assert _check(slow_server, CHANNEL_OPTIONS) == health_pb2.HealthCheckResponse.SERVING


def test_a_100ms_min_reconnect_backoff_abandons_a_slow_handshake(slow_server: int) -> None:
    """The cause, kept as a check of gRPC's meaning of the option: at 100 ms the attempt is
    abandoned and the call is UNAVAILABLE, although the server answers."""
    old = tuple(
        (key, 100 if key == "grpc.min_reconnect_backoff_ms" else value)
        for key, value in CHANNEL_OPTIONS
    )
    with pytest.raises(grpc.RpcError) as raised:
        _check(slow_server, old)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
