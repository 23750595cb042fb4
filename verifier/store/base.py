"""The store contract: one interface; SQLite (the embedded default) and PostgreSQL behind it.

Everything that must survive a restart or be shared between verifier replicas lives here:
enrolled devices, enrollment challenges, issued nonces, verdict history, the latest evidence
of each device (for golden dry runs) and the history of loaded golden sets.

Invariants every backend keeps:
- ``take_enrollment_challenge`` and ``consume_nonce`` are single-use across processes: of
  any number of concurrent callers, exactly one gets the record; an expired one is never
  returned. Each is one write (a conditional DELETE ... RETURNING).
- ``add_verdict`` assigns a strictly increasing ``sequence`` (the verdict stream's cursor)
  and a ``verdict_id``.
- A failure raises ``StoreUnavailable``; nothing is half written (one transaction per call).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from verifier.records import (
    DeviceRecord,
    EnrollmentChallenge,
    GoldenSetRecord,
    ImaStateRecord,
    IssuedNonce,
    StoredEvidence,
)
from verifier.verdict import Verdict

__all__ = [
    "DeviceRecord",
    "EnrollmentChallenge",
    "GoldenSetRecord",
    "ImaStateRecord",
    "IssuedNonce",
    "Store",
    "StoredEvidence",
]


class Store(Protocol):
    # devices and enrollment
    def get_device(self, device_id: str) -> DeviceRecord | None: ...
    def list_devices(self) -> Sequence[DeviceRecord]: ...
    def device_ids_with_prefix(self, prefix: str, limit: int) -> Sequence[str]:
        """At most ``limit`` device ids that start with ``prefix``, in order."""
        ...

    def insert_device(self, device: DeviceRecord) -> None: ...
    def bump_enrollment(self, device_id: str, labels: dict[str, str]) -> int:
        """Count a repeated enrollment of the same EK and AK; returns the new count."""
        ...

    def set_pending_ak(self, device_id: str, ak_public: bytes, ak_name: bytes) -> None: ...
    def approve_pending_ak(self, device_id: str, ak_name: bytes, now: float) -> bool:
        """Make the pending AK (whose name must equal ``ak_name``) the trusted one, from
        ``now`` (recorded as ``enrolled_at``)."""
        ...

    def put_enrollment_challenge(self, challenge: EnrollmentChallenge) -> None: ...
    def take_enrollment_challenge(
        self, challenge_id: str, now: float
    ) -> EnrollmentChallenge | None: ...

    # nonces
    def add_nonce(self, nonce: IssuedNonce) -> None: ...
    def consume_nonce(self, device_id: str, nonce: bytes, now: float) -> IssuedNonce | None: ...

    # verdicts
    def add_verdict(self, verdict: Verdict) -> Verdict: ...
    def latest_verdict(self, device_id: str) -> Verdict | None: ...
    def verdict_history(self, device_id: str, limit: int = 50) -> Sequence[Verdict]: ...
    def verdicts_after(
        self, sequence: int, device_ids: Sequence[str] = (), profile: str = "", limit: int = 500
    ) -> Sequence[Verdict]: ...

    # evidence and golden history
    def put_evidence(self, evidence: StoredEvidence) -> None: ...
    def latest_evidence(self, device_id: str) -> StoredEvidence | None: ...
    def all_latest_evidence(self) -> Sequence[StoredEvidence]: ...
    def record_golden_set(self, record: GoldenSetRecord) -> None: ...
    def golden_set(self, digest: str) -> GoldenSetRecord | None: ...

    # IMA incremental state: one row per device, for its latest boot
    def put_ima_state(self, record: ImaStateRecord) -> None:
        """Replace the device's state unless the stored one was updated later."""
        ...

    def ima_state(self, device_id: str) -> ImaStateRecord | None: ...

    def purge_expired(self, now: float) -> int: ...
    def close(self) -> None: ...
