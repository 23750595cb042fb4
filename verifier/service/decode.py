"""Register the servicers with request decoding that never raises into gRPC.

gRPC's generated registration passes ``Message.FromString`` as the request deserializer; when
it raises (random, truncated or bit-flipped bytes, bad UTF-8 in a string field, an invalid wire
type) gRPC answers ``INTERNAL: Exception deserializing request!`` and logs a full traceback at
ERROR level for every such request, so a hostile client can flood the log.

Here the handlers are built from the proto's service descriptors instead, one per method and
with the method's own streaming kind. Each request deserializer:

1. refuses a body over ``limit`` bytes (``Limits.max_message_bytes``),
2. parses it, and on any parse failure
3. returns an ``Undecodable`` marker instead of raising.

The method's wrapper answers a marker with ``INVALID_ARGUMENT`` and a one-line reason before
the servicer sees it, and counts it in ``DecodeFailures``, which logs one WARNING line per
``interval`` seconds with the count, never a traceback.

Sizes: gRPC itself refuses a message over ``grpc.max_receive_message_length`` with
``RESOURCE_EXHAUSTED`` before any deserializer runs. ``receive_cap(limit)`` is the value to set
there: ``limit`` plus ``RECEIVE_MARGIN`` bytes, so a body between the two gets our
``INVALID_ARGUMENT``; only a body over the cap (more than ``RECEIVE_MARGIN`` bytes over the
limit) still gets gRPC's ``RESOURCE_EXHAUSTED``, and gRPC holds at most the cap in memory.

Client-streaming methods are refused at registration: the proto has none, and a stream of
requests needs its own handling of a bad element.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from fleetattest.v1 import fleetattest_pb2 as pb  # the generated API: one line to move

log = logging.getLogger(__name__)

RECEIVE_MARGIN = 1 << 20  # bytes over the limit that still get INVALID_ARGUMENT
DEFAULT_LOG_INTERVAL = 60.0  # seconds between two log lines about undecodable requests


def receive_cap(limit: int) -> int:
    """The ``grpc.max_receive_message_length`` to set for a decoding ``limit``."""
    return limit + RECEIVE_MARGIN


@dataclass(frozen=True)
class Undecodable:
    """Stands for a request body that could not be decoded; ``reason`` is one line."""

    reason: str


class DecodeFailures:
    """Counts undecodable requests; logs at most one line per ``interval`` seconds."""

    def __init__(
        self,
        interval: float = DEFAULT_LOG_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger = log,
    ) -> None:
        self.interval = interval
        self._clock = clock
        self._log = logger
        self._lock = threading.Lock()
        self._total = 0
        self._unreported = 0
        self._last_report: float | None = None

    @property
    def total(self) -> int:
        """Undecodable requests since the start (for metrics)."""
        with self._lock:
            return self._total

    def note(self, method: str, reason: str) -> None:
        with self._lock:
            self._total += 1
            self._unreported += 1
            now = self._clock()
            if self._last_report is not None and now - self._last_report < self.interval:
                return
            count, self._unreported, self._last_report = self._unreported, 0, now
            total = self._total
        self._log.warning(
            "%d undecodable requests refused since the last report (%d in all); latest: %s: %s",
            count,
            total,
            method,
            reason,
        )


def request_deserializer(
    message_class: type[Message], limit: int
) -> Callable[[bytes], Message | Undecodable]:
    """A deserializer that returns a message or an ``Undecodable``, and never raises."""
    name = message_class.DESCRIPTOR.full_name

    def decode(data: bytes) -> Message | Undecodable:
        if len(data) > limit:
            return Undecodable(f"request of {len(data)} bytes is over the limit of {limit} bytes")
        try:
            return message_class.FromString(data)
        except Exception:  # DecodeError, or anything else the parser may raise: never to grpc
            return Undecodable(f"request is not a valid {name} message")

    return decode


def add_services(
    server: grpc.Server,
    servicers: Mapping[str, object],
    limit: int,
    failures: DecodeFailures,
    services: Iterable[ServiceDescriptor] | None = None,
) -> None:
    """Register ``servicers`` (by service name: ``"Agent"``...) for every service of the proto.

    Every service of the proto must have a servicer, and every servicer a service.
    """
    descriptors = list(
        services if services is not None else pb.DESCRIPTOR.services_by_name.values()
    )
    unknown = set(servicers) - {d.name for d in descriptors}
    if unknown:
        raise ValueError(f"no such service in the proto: {', '.join(sorted(unknown))}")
    missing = [d.full_name for d in descriptors if d.name not in servicers]
    if missing:
        raise ValueError(f"no servicer for {', '.join(missing)}")
    built = {
        service.full_name: {
            method.name: _handler(method, servicers[service.name], limit, failures)
            for method in service.methods
        }
        for service in descriptors
    }  # every handler is built before any is registered
    for name, handlers in built.items():
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))
        register = getattr(server, "add_registered_method_handlers", None)
        if register is not None:
            register(name, handlers)


def _handler(
    method: MethodDescriptor, servicer: object, limit: int, failures: DecodeFailures
) -> grpc.RpcMethodHandler[Any, Any]:
    if method.client_streaming:
        raise ValueError(f"{method.full_name}: client-streaming methods are not supported")
    behaviour: Callable[[Message, grpc.ServicerContext], Any] | None = getattr(
        servicer, method.name, None
    )
    if behaviour is None:
        raise ValueError(f"{type(servicer).__name__} does not implement {method.full_name}")
    path = f"/{method.containing_service.full_name}/{method.name}"

    def checked(request: Message | Undecodable, context: grpc.ServicerContext) -> Any:
        if isinstance(request, Undecodable):
            failures.note(path, request.reason)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.reason)
        return behaviour(request, context)

    deserializer = request_deserializer(GetMessageClass(method.input_type), limit)
    serializer = GetMessageClass(method.output_type).SerializeToString
    if method.server_streaming:
        return grpc.unary_stream_rpc_method_handler(
            checked, request_deserializer=deserializer, response_serializer=serializer
        )
    return grpc.unary_unary_rpc_method_handler(
        checked, request_deserializer=deserializer, response_serializer=serializer
    )
