"""Finding 1 of the fault run: undecodable requests got INTERNAL and a traceback each.

A real server with the verifier's real servicers, registered through
``verifier.service.decode``, gets raw bytes on every method of every service: random,
truncated, bit-flipped, bad UTF-8, invalid and mismatched wire types, oversized. Every one is
answered INVALID_ARGUMENT with a one-line reason, and nothing is logged with a traceback."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

from fleetattest.v1 import fleetattest_pb2 as pb
from simulator.fleet import Fleet
from verifier.service.api import AgentService, OperatorService, RelyingPartyService
from verifier.service.decode import (
    RECEIVE_MARGIN,
    DecodeFailures,
    Undecodable,
    add_services,
    receive_cap,
    request_deserializer,
)

LIMIT = 64 * 1024
METHODS = [
    (f"/{service.full_name}/{method.name}", method)
    for service in pb.DESCRIPTOR.services_by_name.values()
    for method in service.methods
]


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number: int, wire_type: int, payload: bytes = b"") -> bytes:
    return varint(number << 3 | wire_type) + payload


def length_delimited(number: int, data: bytes) -> bytes:
    return field(number, 2, varint(len(data)) + data)


RANDOM = random.Random(18)  # fixed seed: the same bodies on every run
BODIES = {
    "random bytes": bytes(RANDOM.randrange(256) for _ in range(200)),
    "truncated": length_delimited(1, b"device-1")[:-3],
    "lying length prefix": field(1, 2, varint(1000) + b"abc"),
    "bit-flipped wire type": bytes([length_delimited(1, b"x")[0] ^ 0b100]) + b"\x01x",
    "invalid wire type 7": field(1, 7) + b"\x00",
    "end group without start": field(1, 4),
    "oversized": length_delimited(15, b"\0" * (LIMIT + 1)),
}


def string_field(method: object) -> int | None:
    fields = method.input_type.fields  # type: ignore[attr-defined]
    return next((f.number for f in fields if f.type == f.TYPE_STRING), None)


@pytest.fixture
def failures() -> DecodeFailures:
    return DecodeFailures(interval=3600.0)


@pytest.fixture
def channel(fleet: Fleet, failures: DecodeFailures) -> Iterator[grpc.Channel]:
    """The verifier's real servicers behind ``add_services``, with a 64 KiB decoding limit."""
    verifier = fleet.live.verifier
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4),
        options=[("grpc.max_receive_message_length", receive_cap(LIMIT))],
    )
    servicers = {
        "Agent": AgentService(verifier),
        "RelyingParty": RelyingPartyService(verifier),
        "Operator": OperatorService(verifier),
    }
    add_services(server, servicers, LIMIT, failures)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    with grpc.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 8 * LIMIT)]
    ) as ch:
        yield ch
    server.stop(grace=None).wait()


def send_raw(
    channel: grpc.Channel, path: str, server_streaming: bool, body: bytes
) -> grpc.RpcError:
    """Send ``body`` as the request of ``path``; return the error the server answered."""
    if server_streaming:
        stream = channel.unary_stream(path, request_serializer=None, response_deserializer=None)
        call = stream(body, timeout=30)
        with pytest.raises(grpc.RpcError) as info:
            list(call)
    else:
        unary = channel.unary_unary(path, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as info:
            unary(body, timeout=30)
    return info.value


def assert_quiet(caplog: pytest.LogCaptureFixture) -> None:
    """No traceback, nothing at ERROR, nothing from grpc's own deserializing failure."""
    for record in caplog.records:
        assert record.exc_info is None, record.getMessage()
        assert record.levelno < logging.ERROR, record.getMessage()
        assert "Exception deserializing" not in record.getMessage()


def test_undecodable_bodies_on_every_method_get_invalid_argument_without_traceback(
    channel: grpc.Channel, failures: DecodeFailures, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sent = 0
    for path, method in METHODS:
        bodies = dict(BODIES)
        number = string_field(method)
        if number is not None:
            bodies["bad UTF-8 in a string field"] = length_delimited(number, b"dev\xff\xfe-1")
        for what, body in bodies.items():
            error = send_raw(channel, path, method.server_streaming, body)
            assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, (path, what, error)
            details = error.details() or ""
            assert "\n" not in details and details, (path, what)
            expected = "over the limit" if what == "oversized" else "is not a valid"
            assert expected in details, (path, what, details)
            sent += 1
    assert failures.total == sent
    assert_quiet(caplog)
    decode_lines = [r for r in caplog.records if r.name == "verifier.service.decode"]
    assert len(decode_lines) == 1  # one line per interval, with the count
    assert decode_lines[0].getMessage().startswith("1 undecodable requests refused")


def test_mismatched_wire_type_is_an_unknown_field_and_refused(
    channel: grpc.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    """A string field sent as a varint parses as an unknown field: the servicer refuses it."""
    caplog.set_level(logging.DEBUG)
    tried = 0
    for path, method in METHODS:
        number = string_field(method)
        if number is None:  # no string field: a varint is a valid value of some field
            continue
        body = field(number, 0, varint(5))
        tried += 1
        error = send_raw(channel, path, method.server_streaming, body)
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, (path, error)
    assert tried >= 10
    assert_quiet(caplog)


def test_body_over_grpc_receive_cap_gets_resource_exhausted(channel: grpc.Channel) -> None:
    """The documented remainder: past ``receive_cap`` gRPC refuses before any decoding."""
    body = length_delimited(15, b"\0" * (LIMIT + RECEIVE_MARGIN + 1))
    error = send_raw(channel, "/fleetattest.v1.Operator/GetStatus", False, body)
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


def test_valid_requests_still_reach_the_servicers(channel: grpc.Channel) -> None:
    status = channel.unary_unary(
        "/fleetattest.v1.Operator/GetStatus",
        request_serializer=pb.GetStatusRequest.SerializeToString,
        response_deserializer=pb.VerifierStatus.FromString,
    )(pb.GetStatusRequest(), timeout=30)
    assert status.version
    jwks = channel.unary_unary(
        "/fleetattest.v1.RelyingParty/GetJwks",
        request_serializer=pb.GetJwksRequest.SerializeToString,
        response_deserializer=pb.GetJwksResponse.FromString,
    )(pb.GetJwksRequest(), timeout=30)
    assert jwks.ListFields()


def test_log_lines_are_bounded_per_interval_and_carry_the_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    failures = DecodeFailures(interval=60.0, clock=lambda: now[0])
    caplog.set_level(logging.DEBUG, logger="verifier.service.decode")
    for second in range(180):  # 10 failures a second for three minutes
        now[0] = float(second)
        for _ in range(10):
            failures.note("/fleetattest.v1.Agent/Attest", "request is not a valid X message")
    messages = [r.getMessage() for r in caplog.records]
    assert failures.total == 1800
    assert [m.split(" undecodable")[0] for m in messages] == ["1", "600", "600"]
    assert all(r.levelno == logging.WARNING and r.exc_info is None for r in caplog.records)


def test_deserializer_never_raises() -> None:
    decode = request_deserializer(pb.AttestRequest, LIMIT)
    for body in BODIES.values():
        assert isinstance(decode(body), Undecodable)
    deep = b""
    for _ in range(200):  # nested deeper than the parser allows
        deep = length_delimited(1, deep)
    assert isinstance(request_deserializer(pb.DryRunGoldenRequest, LIMIT)(deep), Undecodable)
    ok = decode(pb.AttestRequest(device_id="d").SerializeToString())
    assert isinstance(ok, pb.AttestRequest) and ok.device_id == "d"


def test_every_service_needs_a_servicer() -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    with pytest.raises(ValueError, match=r"no servicer for fleetattest\.v1\.Operator"):
        add_services(server, {"Agent": object(), "RelyingParty": object()}, LIMIT, DecodeFailures())
    with pytest.raises(ValueError, match="no such service in the proto: Nope"):
        add_services(server, {"Nope": object()}, LIMIT, DecodeFailures())
    servicers = {"Agent": object(), "RelyingParty": object(), "Operator": object()}
    with pytest.raises(
        ValueError, match=r"object does not implement fleetattest\.v1\.Agent\.Start"
    ):
        add_services(server, servicers, LIMIT, DecodeFailures())
