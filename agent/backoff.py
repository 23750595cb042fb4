"""Retry with exponential backoff and full jitter.

Thousands of devices boot at once after a power cut: each agent waits a random time in
``[0, min(cap, base * 2**attempt)]`` before retrying, so retries spread out instead of
arriving in waves. Only transient failures are retried (the verifier unreachable, shedding
load, or timing out); a refusal of the evidence is not.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc

log = logging.getLogger(__name__)

T = TypeVar("T")

TRANSIENT = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }
)


class Stopped(Exception):
    """The agent was asked to stop while waiting to retry."""


@dataclass(frozen=True)
class Backoff:
    base: float = 1.0
    cap: float = 60.0
    max_attempts: int | None = None  # None: until stopped

    def delay(self, attempt: int, rng: random.Random) -> float:
        return rng.uniform(0.0, min(self.cap, self.base * (2**attempt)))


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, grpc.RpcError) and exc.code() in TRANSIENT


def retry(
    call: Callable[[], T],
    stop: threading.Event,
    backoff: Backoff = Backoff(),
    rng: random.Random | None = None,
    what: str = "call",
) -> T:
    """Run ``call`` until it succeeds, retrying transient gRPC failures with jitter."""
    rng = rng or random.Random()
    attempt = 0
    while True:
        try:
            return call()
        except grpc.RpcError as exc:
            if not is_transient(exc):
                raise
            if backoff.max_attempts is not None and attempt + 1 >= backoff.max_attempts:
                raise
            wait = backoff.delay(attempt, rng)
            log.warning("%s failed (%s); retrying in %.1fs", what, exc.code().name, wait)
            attempt += 1
            if stop.wait(wait):
                raise Stopped(what) from exc
