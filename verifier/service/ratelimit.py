"""No caller can starve another: token buckets for the open calls, slots for streams.

``RateLimiter`` meters the unauthenticated calls that make the verifier store something
(StartEnrollment, GetChallenge): one token bucket per peer address (IPv4 host, IPv6 /64, since
one IPv6 host usually owns a whole /64) and one per device, and a call passes only when both
have a token (a refused call takes none). Memory is bounded: each table tracks at most
``max_keys`` keys. A new key in a full table drops the least recently used buckets: those
that have refilled (indistinguishable from an untracked key) silently, until one that has not
is evicted (counted in ``evicted``): a flood of fresh keys can at worst reset the least recently
used bucket, never grow memory. The clock is injected; nothing here reads time itself.

``StreamSlots`` caps response streams: at most ``per_identity`` for one caller and ``total``
for all, with ``per_identity < total`` so no identity fills the global cap alone; anonymous
callers get none.
"""

from __future__ import annotations

import ipaddress
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from verifier.limits import DEFAULT_LIMITS, Limits


@dataclass(frozen=True)
class Bucket:
    rate: float  # tokens added per second
    burst: float  # capacity (and the initial fill)


class TokenBuckets:
    """Token buckets keyed by string, at most ``max_keys`` of them. Not thread-safe alone."""

    def __init__(self, bucket: Bucket, max_keys: int) -> None:
        if bucket.rate <= 0 or bucket.burst < 1 or max_keys < 1:
            raise ValueError("a bucket needs rate > 0, burst >= 1 and max_keys >= 1")
        self.bucket = bucket
        self.max_keys = max_keys
        self.evicted = 0
        self._entries: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at

    def __len__(self) -> int:
        return len(self._entries)

    def _level(self, key: str, now: float) -> float:
        entry = self._entries.get(key)
        if entry is None:
            return self.bucket.burst
        tokens, at = entry
        return min(self.bucket.burst, tokens + max(0.0, now - at) * self.bucket.rate)

    def wait(self, key: str, now: float) -> float:
        """Seconds until ``key`` has a token (0.0: it has one now)."""
        level = self._level(key, now)
        return 0.0 if level >= 1.0 else (1.0 - level) / self.bucket.rate

    def take(self, key: str, now: float) -> None:
        """Consume one token (the caller checked ``wait`` first)."""
        level = self._level(key, now) - 1.0
        if key not in self._entries:
            self._make_room(now)
        self._entries[key] = (level, now)
        self._entries.move_to_end(key)

    def _make_room(self, now: float) -> None:
        while self._entries and len(self._entries) >= self.max_keys:
            oldest = next(iter(self._entries))
            if self._level(oldest, now) < self.bucket.burst:
                self._entries.popitem(last=False)
                self.evicted += 1
                return
            del self._entries[oldest]  # refilled: forgetting it changes nothing


class RateLimiter:
    """Per-peer and per-device limits for the unauthenticated calls. Thread-safe."""

    def __init__(self, clock: Callable[[], float], limits: Limits = DEFAULT_LIMITS) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.peers = TokenBuckets(
            Bucket(limits.open_calls_per_peer_per_second, limits.open_calls_peer_burst),
            limits.rate_limit_max_keys,
        )
        self.devices = TokenBuckets(
            Bucket(limits.open_calls_per_device_per_second, limits.open_calls_device_burst),
            limits.rate_limit_max_keys,
        )

    def take(self, peer: str, device: str) -> float | None:
        """None: the call may proceed (a token taken from both); else seconds to wait."""
        with self._lock:
            now = self._clock()
            wait = max(self.peers.wait(peer, now), self.devices.wait(device, now))
            if wait > 0.0:
                return wait
            self.peers.take(peer, now)
            self.devices.take(device, now)
            return None

    def tracked(self) -> int:
        with self._lock:
            return len(self.peers) + len(self.devices)


def peer_key(peer: str) -> str:
    """The rate-limit key of a gRPC peer string (``ipv4:H:P``, ``ipv6:[H]:P``, ``unix:...``)."""
    kind, _, rest = peer.partition(":")
    host = rest.rpartition(":")[0].strip("[]")
    try:
        if kind == "ipv4":
            return f"ipv4:{ipaddress.IPv4Address(host)}"
        if kind == "ipv6":
            address = ipaddress.IPv6Address(host.split("%")[0])
            if address.ipv4_mapped is not None:
                return f"ipv4:{address.ipv4_mapped}"
            return f"ipv6:{ipaddress.IPv6Network((address, 64), strict=False)}"
    except ValueError:
        pass
    return kind or "unknown"


class StreamSlots:
    """Stream slots: ``per_identity`` per caller, ``total`` in all; none for anonymous callers.

    ``acquire`` returns the function that releases the slot (idempotent: call it from every
    path that ends the stream) or None when no slot is free.
    """

    def __init__(self, *, per_identity: int, total: int) -> None:
        if not 1 <= per_identity < total:
            raise ValueError(
                f"stream caps need 1 <= per_identity < total (got {per_identity}, {total}): "
                "otherwise one identity can take every slot"
            )
        self.per_identity = per_identity
        self.total = total
        self._lock = threading.Lock()
        self._held: dict[str, int] = {}
        self._in_use = 0

    def acquire(self, identity: str | None) -> Callable[[], None] | None:
        if identity is None:
            return None
        with self._lock:
            held = self._held.get(identity, 0)
            if held >= self.per_identity or self._in_use >= self.total:
                return None
            self._held[identity] = held + 1
            self._in_use += 1
        released = threading.Event()

        def release() -> None:
            with self._lock:
                if released.is_set():
                    return
                released.set()
                self._in_use -= 1
                left = self._held[identity] - 1
                if left:
                    self._held[identity] = left
                else:
                    del self._held[identity]

        return release

    def in_use(self) -> int:
        with self._lock:
            return self._in_use
