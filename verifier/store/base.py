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
from dataclasses import dataclass, field
from typing import Protocol

from verifier.verdict import Verdict


@dataclass(frozen=True)
class DeviceRecord:
    device_id: str
    ek_public: bytes  # TPM2B_PUBLIC
    ek_certificate: bytes  # DER, empty when allowlisted without a certificate
    ek_not_after: float | None  # the EK certificate's notAfter (POSIX seconds)
    ak_public: bytes  # TPM2B_PUBLIC of the trusted AK
    ak_name: bytes
    labels: dict[str, str]
    enrollment_count: int
    enrolled_at: float  # when the current AK became trusted (enrollment or approval)
    pending_ak_public: bytes = b""  # a new AK waiting for operator approval
    pending_ak_name: bytes = b""


@dataclass(frozen=True)
class EnrollmentChallenge:
    challenge_id: str
    device_id: str
    ek_public: bytes
    ek_certificate: bytes
    ek_not_after: float | None
    ak_public: bytes
    ak_name: bytes
    labels: dict[str, str]
    secret: bytes
    expires_at: float


@dataclass(frozen=True)
class IssuedNonce:
    nonce: bytes
    device_id: str
    bank: str
    pcrs: tuple[int, ...]
    profile: str
    expires_at: float


@dataclass(frozen=True)
class StoredEvidence:
    """The latest evidence of a device, kept for golden explain / dry run / learn."""

    device_id: str
    received_at: float
    bank: str
    pcrs: dict[int, bytes]
    event_log: bytes
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class GoldenSetRecord:
    digest: str
    loaded_at: float
    files: dict[str, str]  # file name -> sha256 hex of its content


class Store(Protocol):
    # devices and enrollment
    def get_device(self, device_id: str) -> DeviceRecord | None: ...
    def list_devices(self) -> Sequence[DeviceRecord]: ...
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

    def purge_expired(self, now: float) -> int: ...
    def close(self) -> None: ...
