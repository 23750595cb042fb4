"""Operator commands that talk to a running verifier over its Operator gRPC service.

    attest-verifier status --verifier HOST:PORT --ca CA --cert OP.pem --key OP.key
    attest-verifier golden reload --verifier unix:/run/attest-verifier/operator.sock
    attest-verifier clock acknowledge --reason "checked NTP: chrony synced" --verifier ADDR

``status`` shows the verifier's health (the gRPC health service), the live golden digest and
refused reloads; ``golden reload`` validates and swaps the golden set now. Both are Operator
calls: over the caller port (mutual TLS, an operator certificate) or the operator socket
(``verifier.cli.connect``).

``golden reload`` exits 0 when the set on disk is live (swapped now or already), 1 when it was
refused (the problems are printed as ``file:line:column: message``; the last valid set keeps
serving), 2 when the verifier cannot be reached. ``status`` asks the standard gRPC health
service first (anyone may) and exits 1 when the verifier says NOT_SERVING (its store does not
answer or its golden set has no usable release), has refused golden edits, or doubts its wall
clock.

``clock acknowledge`` (issue 18): the operator, having checked the host's time (NTP), asserts
that the answering process's wall clock is right now; its clock doubt is cleared and the action
is audit-logged with the caller and the ``--reason`` (required). Exit 0 when done, 2 when the
call failed (unreachable, refused, no reason). With ``--processes N`` it reaches one worker:
the operator socket is worker 0's.
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
    clock = sub.add_parser("clock", help="a running verifier's wall clock")
    clock_sub = clock.add_subparsers(dest="clock_command", required=True, metavar="COMMAND")
    ack = clock_sub.add_parser(
        "acknowledge", help="assert the verifier's wall clock is right now (clears clock doubt)"
    )
    ack.add_argument("--reason", required=True, help="what was checked (audit-logged)")
    add_connection_flags(ack, "operator")
    ack.set_defaults(func=cmd_acknowledge_clock)


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
    print(f"clock         {_clock(status.clock)}")
    doubted = bool(status.clock.doubt)
    return 1 if status.golden_problems or not serving or doubted else 0


def _clock(state: pb.ClockState) -> str:
    wall = datetime.fromtimestamp(state.wall_time.seconds, UTC).isoformat()
    if not state.doubt:
        return f"trusted (wall clock {wall})"
    since = datetime.fromtimestamp(state.doubt_since.seconds, UTC).isoformat()
    return (
        f"IN DOUBT since {since}: {state.doubt} (wall clock {wall}; no tokens until it settles "
        "or 'attest-verifier clock acknowledge')"
    )


def cmd_acknowledge_clock(ns: argparse.Namespace) -> int:
    request = pb.AcknowledgeClockRequest(reason=ns.reason)
    try:
        with connect(ns) as ch:
            reply = pb_grpc.OperatorStub(ch).AcknowledgeClock(request, timeout=10)
    except grpc.RpcError as exc:
        print(f"attest-verifier: {error_text(ns.verifier, exc)}", file=sys.stderr)
        return 2
    what = f"cleared: {reply.cleared}" if reply.cleared else "the clock was not in doubt"
    print(f"acknowledged ({what}); audit entry {reply.audit_position}")
    print(f"clock         {_clock(reply.clock)}")
    return 0


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
