"""The gRPC server: a sync server with a small thread pool (cheaper in CPU than grpc.aio).

Listeners (``Listen``), all serving every service behind one ``AuthorizationInterceptor``:

- the agent listener (``Listen.agent``): TLS with the server certificate only, so every
  caller there is anonymous (role agent); plaintext only on loopback, or anywhere with
  ``insecure`` (``check_listen``: refused otherwise, a warning logged on every start);
- the caller listener (``Listen.caller``, TLS only): mutual TLS, the client certificate names
  the caller's role (relying party, operator);
- the operator socket (``Listen.operator_socket``, optional): a Unix socket, mode 0600, whose
  callers are operators.

Load shedding: at most ``max_concurrent_rpcs`` requests are in flight; the rest get
RESOURCE_EXHAUSTED at once, and agents back off with jitter. Few threads per process
(``workers``, default 4) cost less CPU than many (they contend for the GIL: measured with
bench/bench_load.py); run one process per core (``--processes``) to use more cores. Verdict
streams hold a thread each: ``StreamSlots`` caps them per caller identity and in all (at most
half the threads by default), anonymous callers get none. The open calls that store something
(StartEnrollment, GetChallenge) are rate-limited per peer address and per device
(``RateLimiter``, from ``Limits``). Message size is capped by ``Limits.max_message_bytes``
before anything is parsed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc

from verifier.app import Verifier
from verifier.service.api import AgentService, OperatorService, RelyingPartyService
from verifier.service.authz import AuthorizationInterceptor
from verifier.service.decode import DecodeFailures, add_services, receive_cap
from verifier.service.health import HealthMonitor
from verifier.service.ratelimit import RateLimiter, StreamSlots
from verifier.tls.credentials import ServerTls, TlsConfigError, add_operator_socket, check_listen

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Listen:
    """Where and how to listen. ``tls`` None: plaintext on ``agent`` (no caller listener)."""

    agent: str  # HOST:PORT
    tls: ServerTls | None = None
    caller: str | None = None  # HOST:PORT of the mutual-TLS listener; needs ``tls``
    operator_socket: Path | None = None
    insecure: bool = False  # accept plaintext on a non-loopback ``agent`` address


@dataclass(frozen=True)
class Ports:
    agent: int
    caller: int | None  # None: no caller listener


def stream_slots(workers: int, per_identity: int, total: int | None = None) -> StreamSlots:
    """Stream caps that leave agents threads: ``total`` (default half the threads, at least 2)
    must stay below ``workers``."""
    total = max(2, workers // 2) if total is None else total
    if total >= workers:
        raise ValueError(
            f"{total} verdict streams would hold all {workers} RPC threads: raise --workers "
            "or lower --max-streams"
        )
    return StreamSlots(per_identity=per_identity, total=total)


def build_server(
    verifier: Verifier,
    listen: Listen,
    *,
    workers: int = 4,
    max_concurrent_rpcs: int = 256,
    reuse_port: bool = False,
    max_streams: int | None = None,
    clock: Callable[[], float] = time.monotonic,
    health: HealthMonitor | None = None,
) -> tuple[grpc.Server, Ports]:
    """Return the server (not started) and the ports it is bound to; ``health``: also serve
    the standard grpc.health.v1 service from that monitor.

    Raises ``TlsConfigError`` for a listener configuration that must not serve (plaintext on
    the network without ``insecure``, a caller listener without TLS, an unusable socket path),
    ``ValueError`` for stream caps that could hold every thread, ``OSError`` when a port
    cannot be bound.
    """
    _check(listen)
    limits = verifier.settings.limits
    options = [
        # above the limit, so that our decoder answers INVALID_ARGUMENT for an oversized body
        ("grpc.max_receive_message_length", receive_cap(limits.max_message_bytes)),
        ("grpc.max_send_message_length", limits.max_message_bytes),
        ("grpc.so_reuseport", 1 if reuse_port else 0),
    ]
    interceptor = AuthorizationInterceptor(
        listen.tls.trust_domain if listen.tls is not None else "",  # no TLS: no certificates
        rate_limiter=RateLimiter(clock, limits),
        streams=stream_slots(workers, limits.max_streams_per_identity, max_streams),
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rpc"),
        interceptors=[interceptor],
        options=options,
        maximum_concurrent_rpcs=max_concurrent_rpcs,
    )
    # Every request is decoded by us, not by grpc: an undecodable or oversized body gets
    # INVALID_ARGUMENT with one line (counted, logged at a bounded rate), never INTERNAL.
    add_services(
        server,
        {
            "Agent": AgentService(verifier),
            "RelyingParty": RelyingPartyService(verifier),
            "Operator": OperatorService(verifier),
        },
        limits.max_message_bytes,
        DecodeFailures(),
    )
    if health is not None:
        health.add_to_server(server)
    if listen.tls is None:
        agent_port = server.add_insecure_port(listen.agent)
    else:
        agent_port = server.add_secure_port(listen.agent, listen.tls.agent_credentials())
    _bound(agent_port, listen.agent)
    caller_port = None
    if listen.tls is not None and listen.caller is not None:
        caller_port = server.add_secure_port(listen.caller, listen.tls.caller_credentials())
        _bound(caller_port, listen.caller)
    if listen.operator_socket is not None:
        add_operator_socket(server, listen.operator_socket)
    return server, Ports(agent_port, caller_port)


def _check(listen: Listen) -> None:
    if listen.caller is not None and listen.tls is None:
        raise TlsConfigError(
            "the caller listener is mutual TLS: give --tls-cert, --tls-key and --client-ca"
        )
    check = check_listen(listen.agent, tls=listen.tls is not None, insecure=listen.insecure)
    if not check.ok:
        raise TlsConfigError(check.error or f"refusing to serve {listen.agent}")
    if check.warning:
        log.warning("%s", check.warning)


def _bound(port: int, address: str) -> None:
    if port == 0:
        raise OSError(f"cannot listen on {address}")
