"""The gRPC server: a sync server with a small thread pool (cheaper in CPU than grpc.aio).

Load shedding: at most ``max_concurrent_rpcs`` requests are in flight; the rest get
RESOURCE_EXHAUSTED at once, and agents back off with jitter. Few threads per process
(``workers``, default 4) cost less CPU than many (they contend for the GIL: measured with
bench/bench_load.py); run one process per core (``--processes``) to use more cores. Verdict
streams hold a thread each and are capped at half the threads. Message size is capped by
``Limits.max_message_bytes`` before anything is parsed.
"""

from __future__ import annotations

from concurrent import futures

import grpc

from fleetattest.v1 import fleetattest_pb2_grpc as pb_grpc
from verifier.app import Verifier
from verifier.service.api import AgentService, OperatorService, RelyingPartyService
from verifier.service.health import HealthMonitor


def build_server(
    verifier: Verifier,
    listen: str,
    *,
    workers: int = 4,
    max_concurrent_rpcs: int = 256,
    reuse_port: bool = False,
    health: HealthMonitor | None = None,
) -> tuple[grpc.Server, int]:
    """Return the server (not started) and the port it is bound to; ``health``: serve the
    standard grpc.health.v1 service from that monitor."""
    limit = verifier.settings.limits.max_message_bytes
    options = [
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
        ("grpc.so_reuseport", 1 if reuse_port else 0),
    ]
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rpc"),
        options=options,
        maximum_concurrent_rpcs=max_concurrent_rpcs,
    )
    pb_grpc.add_AgentServicer_to_server(AgentService(verifier), server)
    pb_grpc.add_RelyingPartyServicer_to_server(
        RelyingPartyService(verifier, max_watchers=max(1, workers // 2)), server
    )
    pb_grpc.add_OperatorServicer_to_server(OperatorService(verifier), server)
    if health is not None:
        health.add_to_server(server)
    port = server.add_insecure_port(listen)
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    return server, port
