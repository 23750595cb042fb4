"""Operator commands that talk to a running verifier over its Operator gRPC service.

    attest-verifier status --verifier HOST:PORT --ca CA --cert OP.pem --key OP.key
    attest-verifier golden reload --verifier unix:/run/attest-verifier/operator.sock

``status`` shows the verifier's health (the gRPC health service), the live golden digest and
refused reloads; ``golden reload`` validates and swaps the golden set now. Both are Operator
calls: over the caller port (mutual TLS, an operator certificate) or the operator socket
(``verifier.cli.connect``).

``golden reload`` exits 0 when the set on disk is live (swapped now or already), 1 when it was
refused (the problems are printed as ``file:line:column: message``; the last valid set keeps
serving), 2 when the verifier cannot be reached. ``status`` asks the standard gRPC health
service first (anyone may) and exits 1 when the verifier says NOT_SERVING (its store does not
answer or its golden set has no usable release) or has refused golden edits.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fleetattest.v1 import fleetattest_pb2 as pb
from fleetattest.v1 import fleetattest_pb2_grpc as pb_grpc
from verifier.cli.connect import add_connection_flags, connect, error_text

Subparsers = argparse._SubParsersAction


def register(
    sub: Subparsers[argparse.ArgumentParser], golden: Subparsers[argparse.ArgumentParser]
) -> None:
    status = sub.add_parser("status", help="a running verifier's golden set and problems")
    add_connection_flags(status, "operator")
    status.set_defaults(func=cmd_status)
    reload = golden.add_parser("reload", help="make a running verifier reload its golden set")
    add_connection_flags(reload, "operator")
    reload.set_defaults(func=cmd_reload)


def _problem(problem: pb.GoldenProblem) -> str:
    hint = f" (hint: {problem.hint})" if problem.hint else ""
    return f"{problem.file}:{problem.line}:{problem.column}: {problem.message}{hint}"


def _health(ch: grpc.Channel) -> tuple[bool, str]:
    """Serving or not, and the word to print; a verifier without the service is not judged."""
    try:
        reply = health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=10
        )
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
            return True, "not served by this verifier"
        raise
    serving = reply.status == health_pb2.HealthCheckResponse.SERVING
    return serving, health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def cmd_status(ns: argparse.Namespace) -> int:
    try:
        with connect(ns) as ch:
            serving, health_name = _health(ch)
            status = pb_grpc.OperatorStub(ch).GetStatus(pb.GetStatusRequest(), timeout=10)
    except grpc.RpcError as exc:
        print(f"attest-verifier: {error_text(ns.verifier, exc)}", file=sys.stderr)
        return 2
    loaded = datetime.fromtimestamp(status.golden_loaded_at.seconds, UTC).isoformat()
    print(f"health        {health_name}")
    print(f"version       {status.version}")
    print(f"golden set    {status.golden_digest} (live since {loaded})")
    print(f"devices       {status.devices}")
    for problem in status.golden_problems:
        print(f"refused edit  {_problem(problem)}")
    return 1 if status.golden_problems or not serving else 0


def cmd_reload(ns: argparse.Namespace) -> int:
    try:
        with connect(ns) as ch:
            reply = pb_grpc.OperatorStub(ch).ReloadGolden(pb.ReloadGoldenRequest(), timeout=30)
    except grpc.RpcError as exc:
        print(f"attest-verifier: {error_text(ns.verifier, exc)}", file=sys.stderr)
        return 2
    for problem in reply.problems:
        print(_problem(problem))
    if reply.problems:
        print(f"reload refused; still serving {reply.golden_digest}", file=sys.stderr)
        return 1
    print(f"{'now serving' if reply.applied else 'already serving'} {reply.golden_digest}")
    return 0
