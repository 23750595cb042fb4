"""What TLS costs on the wire: a trivial unary RPC, plaintext against TLS, server CPU and latency.

    .venv/bin/python bench/bench_tls.py [--calls 2000] [--connections 200]

The server (its own process, so its CPU is measured alone) serves one method that returns its
request, behind ``AuthorizationInterceptor``, on a plaintext port, an agent TLS port
(server certificate only) and a mutual-TLS port, with certificates from ``init_pki``. Three
client patterns per port: ``reused`` (one channel, sequential calls: what ``attest-agent run``
would do if it kept its channel), ``new`` (a new channel, so a new TCP and TLS handshake, per
call: what ``attest-agent run`` does today, ``agent.flows.attest_once`` opens a channel per
attestation) and ``resumed`` (a new channel per call sharing a TLS session cache, option
``grpc.ssl_session_cache``: an abbreviated handshake). Prints microseconds of server CPU and
of wall time per call.
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import multiprocessing.connection
import tempfile
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from grpc.experimental import session_cache  # type: ignore[attr-defined]  # no stubs

from verifier.service.authz import AuthorizationInterceptor
from verifier.tls.credentials import (
    ServerTls,
    TlsFiles,
    agent_channel_credentials,
    caller_channel_credentials,
)
from verifier.tls.pki import init_pki

METHOD = "/fleetattest.v1.Agent/Attest"


def _serve(pki: Path, conn: multiprocessing.connection.Connection) -> None:
    tls = ServerTls(TlsFiles(pki / "verifier.pem", pki / "verifier.key", pki / "ca.pem"))
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4),
        interceptors=[AuthorizationInterceptor(tls.trust_domain)],
    )
    echo = grpc.unary_unary_rpc_method_handler(lambda request, context: request)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("fleetattest.v1.Agent", {"Attest": echo}),)
    )
    ports = (
        server.add_insecure_port("127.0.0.1:0"),
        server.add_secure_port("127.0.0.1:0", tls.agent_credentials()),
        server.add_secure_port("127.0.0.1:0", tls.caller_credentials()),
    )
    server.start()
    conn.send(ports)
    while conn.recv() == "cpu":
        conn.send(time.process_time())
    server.stop(None)


_SESSIONS = session_cache.ssl_session_cache_lru(16)


def _channel(kind: str, port: int, pki: Path, *, resume: bool = False) -> grpc.Channel:
    target = f"localhost:{port}"
    options = [("grpc.ssl_session_cache", _SESSIONS)] if resume else []
    if kind == "plaintext":
        return grpc.insecure_channel(target)
    if kind == "tls":
        creds = agent_channel_credentials(pki / "ca.pem")
    else:
        creds = caller_channel_credentials(
            pki / "ca.pem", pki / "relying-party.pem", pki / "relying-party.key"
        )
    return grpc.secure_channel(target, creds, options=options)


def _measure(
    conn: multiprocessing.connection.Connection, calls: int, run: Any
) -> tuple[float, float]:
    conn.send("cpu")
    cpu0, wall0 = conn.recv(), time.perf_counter()
    run()
    wall = time.perf_counter() - wall0
    conn.send("cpu")
    cpu = conn.recv() - cpu0
    return cpu / calls * 1e6, wall / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pki = Path(tmp) / "pki"
        init_pki(pki, verifier_names=[], now=dt.datetime.now(dt.UTC))
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_serve, args=(pki, child))
        proc.start()
        ports = dict(zip(("plaintext", "tls", "mtls"), parent.recv(), strict=True))
        header = f"{'port':<10} {'pattern':<8} {'calls':>6} {'server CPU us/call':>19}"
        print(f"{header} {'wall us/call':>13}")
        for kind, port in ports.items():
            with _channel(kind, port, pki) as ch:
                stub = ch.unary_unary(METHOD, None, None)
                stub(b"warm-up", timeout=10)

                def reused(stub: Any = stub) -> None:
                    for _ in range(args.calls):
                        stub(b"x" * 64, timeout=10)

                cpu, wall = _measure(parent, args.calls, reused)
            print(f"{kind:<10} {'reused':<8} {args.calls:>6} {cpu:>19.0f} {wall:>13.0f}")

            for pattern in ("new", "resumed") if kind != "plaintext" else ("new",):

                def new(
                    kind: str = kind, port: int = port, resume: bool = pattern == "resumed"
                ) -> None:
                    for _ in range(args.connections):
                        with _channel(kind, port, pki, resume=resume) as fresh:
                            fresh.unary_unary(METHOD, None, None)(b"x" * 64, timeout=10)

                cpu, wall = _measure(parent, args.connections, new)
                print(f"{kind:<10} {pattern:<8} {args.connections:>6} {cpu:>19.0f} {wall:>13.0f}")
        parent.send("stop")
        proc.join(10)


if __name__ == "__main__":
    main()
