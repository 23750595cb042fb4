"""Software devices under load, for the fault suite and its benchmarks.

Devices are enrolled straight into the store with software ECDSA AKs
(``simulator.softquote``); a ``Load`` runs client threads that loop GetChallenge -> quote ->
Attest over gRPC and keeps a ledger of what the verifier answered: every verdict it
acknowledged (returned), every nonce it issued, every request whose answer was lost, and how
many calls ended with each status code. The fault tests then check the ledger against the
store: nothing acknowledged is lost, no nonce is issued or consumed twice.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import grpc
from cryptography.hazmat.primitives.asymmetric import ec

from fleetattest.v1 import fleetattest_pb2 as pb
from fleetattest.v1 import fleetattest_pb2_grpc as pb_grpc
from simulator.firmware import boot
from simulator.fleet import DEVICE_LABELS
from simulator.profiles import GOOD_A
from simulator.softquote import QuoteFields, SoftAk, ecc_public_area
from verifier.store.base import DeviceRecord, Store

# Reconnect quickly after the verifier comes back (gRPC's default backoff grows to 120 s), and
# one connection per channel, as each real device has its own (by default channels of one
# process share their connections, which would put every client on one verifier process).
# ``grpc.min_reconnect_backoff_ms`` is not a backoff: gRPC takes it as the *minimum connect
# timeout* (the time a connection attempt has to finish TCP and the HTTP/2 SETTINGS exchange;
# src/core/client_channel/subchannel.cc). At 100 ms a boot storm's handshakes, which take up to
# a second on a loaded host, were abandoned ("connection attempt timed out before receiving
# SETTINGS frame", "tcp handshaker shutdown") and the call failed with UNAVAILABLE although
# the verifier was serving. It stays at gRPC's default, 20 s; the backoff between attempts
# (initial, max) stays short.
CONNECT_TIMEOUT_MS = 20_000
CHANNEL_OPTIONS = (
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", CONNECT_TIMEOUT_MS),
    ("grpc.max_reconnect_backoff_ms", 1000),
)
_RECORD = boot(GOOD_A, lambda pcr, digests: None)
PCRS = dict(_RECORD.expected_pcrs["sha256"])
EVENT_LOG = _RECORD.log


def soft_ak(index: int) -> SoftAk:
    """The AK of device ``index``: derived from the index, so any process can rebuild it."""
    key = ec.derive_private_key(10_000 + index, ec.SECP256R1())
    return SoftAk(key, ecc_public_area(key.public_key()))


def device_id(index: int) -> str:
    return f"dev-soft-{index}"


def enroll(store: Store, indices: Iterable[int], now: float) -> None:
    for index in indices:
        ak = soft_ak(index)
        store.insert_device(
            DeviceRecord(
                device_id=device_id(index),
                ek_public=b"",
                ek_certificate=b"",
                ek_not_after=None,
                ak_public=ak.tpm2b_public,
                ak_name=ak.name,
                labels=dict(DEVICE_LABELS),
                enrollment_count=1,
                enrolled_at=now,
                profile="sim-gateway",  # bound by an operator, as every enrolled device is
            )
        )


def attest_request(index: int, ak: SoftAk, challenge: pb.Challenge) -> pb.AttestRequest:
    quoted = {i: PCRS.get(i, bytes(32)) for i in challenge.selection.pcrs}
    attest, signature = ak.quote(QuoteFields(challenge.nonce, "sha256", quoted))
    return pb.AttestRequest(
        device_id=device_id(index),
        nonce=challenge.nonce,
        quote=attest,
        signature=signature,
        pcr_values=[pb.PcrValue(pcr=i, digest=d) for i, d in quoted.items()],
        event_log=EVENT_LOG,
    )


@dataclass
class Ledger:
    """What clients saw. Filled by several threads under ``lock``."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    acknowledged: dict[str, pb.Verdict] = field(default_factory=dict)  # verdict_id -> verdict
    answered: list[pb.AttestRequest] = field(default_factory=list)  # requests with a verdict
    unanswered: list[pb.AttestRequest] = field(default_factory=list)  # the answer was lost
    nonces: list[bytes] = field(default_factory=list)  # every nonce issued
    codes: Counter[str] = field(default_factory=Counter)  # per call, "OK" included
    details: Counter[str] = field(default_factory=Counter)  # non-OK details, by text

    def count(self, code: str) -> int:
        with self.lock:
            return self.codes[code]

    def acknowledged_count(self) -> int:
        with self.lock:
            return len(self.acknowledged)


class Load:
    """``threads`` client threads attesting devices ``first .. first+threads-1`` in a loop."""

    def __init__(self, address: str, first: int, threads: int, timeout: float = 20.0) -> None:
        self.address = address
        self.ledger = Ledger()
        self.timeout = timeout
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._loop, args=(first + k,), daemon=True)
            for k in range(threads)
        ]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.timeout + 10)

    def _failed(self, error: grpc.RpcError, request: pb.AttestRequest | None) -> None:
        with self.ledger.lock:
            self.ledger.codes[error.code().name] += 1
            self.ledger.details[f"{error.code().name}: {error.details()}"] += 1
            if request is not None:
                self.ledger.unanswered.append(request)

    def _loop(self, index: int) -> None:
        ak = soft_ak(index)
        ledger = self.ledger
        with grpc.insecure_channel(self.address, options=CHANNEL_OPTIONS) as ch:
            stub = pb_grpc.AgentStub(ch)
            while not self._stop.is_set():
                try:
                    challenge = stub.GetChallenge(
                        pb.GetChallengeRequest(device_id=device_id(index)), timeout=self.timeout
                    )
                except grpc.RpcError as error:
                    self._failed(error, None)
                    self._stop.wait(0.05)
                    continue
                with ledger.lock:
                    ledger.codes["OK"] += 1
                    ledger.nonces.append(challenge.nonce)
                request = attest_request(index, ak, challenge)
                try:
                    verdict = stub.Attest(request, timeout=self.timeout).verdict
                except grpc.RpcError as error:
                    self._failed(error, request)
                    self._stop.wait(0.05)
                    continue
                with ledger.lock:
                    ledger.codes["OK"] += 1
                    ledger.acknowledged[verdict.verdict_id] = verdict
                    ledger.answered.append(request)


def wait_until(condition: object, seconds: float, what: str) -> None:
    """Poll ``condition()`` every 50 ms; raise ``TimeoutError`` naming ``what`` on timeout."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise TimeoutError(f"gave up after {seconds:.0f} s waiting for {what}")
