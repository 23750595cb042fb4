"""A ``Store`` that times every call and counts the ones that raise, then delegates.

``InstrumentedStore(inner, metrics)`` implements the whole ``verifier.store.base.Store``
protocol: each method runs ``inner``'s under ``VerifierMetrics.store_call(op)`` with ``op``
the method's name (a fixed set: the label stays bounded), so
``fleetattest_store_operation_duration_seconds{op}`` and ``fleetattest_store_errors_total{op}``
cover every store access of the verifier. Results and exceptions pass through unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

from verifier.metrics import VerifierMetrics
from verifier.store.base import (
    DeviceRecord,
    EnrollmentChallenge,
    GoldenSetRecord,
    IssuedNonce,
    LatestVerdictCounts,
    Store,
    StoredEvidence,
)
from verifier.verdict import Verdict


class InstrumentedStore:
    def __init__(self, inner: Store, metrics: VerifierMetrics) -> None:
        self.inner = inner
        self._m = metrics

    # devices and enrollment
    def get_device(self, device_id: str) -> DeviceRecord | None:
        with self._m.store_call("get_device"):
            return self.inner.get_device(device_id)

    def list_devices(self) -> Sequence[DeviceRecord]:
        with self._m.store_call("list_devices"):
            return self.inner.list_devices()

    def device_ids_with_prefix(self, prefix: str, limit: int) -> Sequence[str]:
        with self._m.store_call("device_ids_with_prefix"):
            return self.inner.device_ids_with_prefix(prefix, limit)

    def insert_device(self, device: DeviceRecord) -> None:
        with self._m.store_call("insert_device"):
            self.inner.insert_device(device)

    def bump_enrollment(self, device_id: str, labels: dict[str, str]) -> int:
        with self._m.store_call("bump_enrollment"):
            return self.inner.bump_enrollment(device_id, labels)

    def set_pending_ak(self, device_id: str, ak_public: bytes, ak_name: bytes) -> None:
        with self._m.store_call("set_pending_ak"):
            self.inner.set_pending_ak(device_id, ak_public, ak_name)

    def approve_pending_ak(self, device_id: str, ak_name: bytes, now: float) -> bool:
        with self._m.store_call("approve_pending_ak"):
            return self.inner.approve_pending_ak(device_id, ak_name, now)

    def put_enrollment_challenge(self, challenge: EnrollmentChallenge) -> None:
        with self._m.store_call("put_enrollment_challenge"):
            self.inner.put_enrollment_challenge(challenge)

    def take_enrollment_challenge(
        self, challenge_id: str, now: float
    ) -> EnrollmentChallenge | None:
        with self._m.store_call("take_enrollment_challenge"):
            return self.inner.take_enrollment_challenge(challenge_id, now)

    # nonces
    def add_nonce(self, nonce: IssuedNonce) -> None:
        with self._m.store_call("add_nonce"):
            self.inner.add_nonce(nonce)

    def consume_nonce(self, device_id: str, nonce: bytes, now: float) -> IssuedNonce | None:
        with self._m.store_call("consume_nonce"):
            return self.inner.consume_nonce(device_id, nonce, now)

    # verdicts
    def add_verdict(self, verdict: Verdict) -> Verdict:
        with self._m.store_call("add_verdict"):
            return self.inner.add_verdict(verdict)

    def latest_verdict(self, device_id: str) -> Verdict | None:
        with self._m.store_call("latest_verdict"):
            return self.inner.latest_verdict(device_id)

    def verdict_history(self, device_id: str, limit: int = 50) -> Sequence[Verdict]:
        with self._m.store_call("verdict_history"):
            return self.inner.verdict_history(device_id, limit)

    def verdicts_after(
        self, sequence: int, device_ids: Sequence[str] = (), profile: str = "", limit: int = 500
    ) -> Sequence[Verdict]:
        with self._m.store_call("verdicts_after"):
            return self.inner.verdicts_after(sequence, device_ids, profile, limit)

    # evidence and golden history
    def put_evidence(self, evidence: StoredEvidence) -> None:
        with self._m.store_call("put_evidence"):
            self.inner.put_evidence(evidence)

    def latest_evidence(self, device_id: str) -> StoredEvidence | None:
        with self._m.store_call("latest_evidence"):
            return self.inner.latest_evidence(device_id)

    def all_latest_evidence(self) -> Sequence[StoredEvidence]:
        with self._m.store_call("all_latest_evidence"):
            return self.inner.all_latest_evidence()

    def record_golden_set(self, record: GoldenSetRecord) -> None:
        with self._m.store_call("record_golden_set"):
            self.inner.record_golden_set(record)

    def golden_set(self, digest: str) -> GoldenSetRecord | None:
        with self._m.store_call("golden_set"):
            return self.inner.golden_set(digest)

    def purge_expired(self, now: float) -> int:
        with self._m.store_call("purge_expired"):
            return self.inner.purge_expired(now)

    # health and coverage
    def ping(self) -> None:
        with self._m.store_call("ping"):
            self.inner.ping()

    def latest_verdict_counts(self, now: float) -> LatestVerdictCounts:
        with self._m.store_call("latest_verdict_counts"):
            return self.inner.latest_verdict_counts(now)

    def close(self) -> None:
        self.inner.close()
