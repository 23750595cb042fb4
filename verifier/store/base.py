"""The store contract: one interface; SQLite (the embedded default) and PostgreSQL behind it.

Everything that must survive a restart or be shared between verifier replicas lives here:
enrolled devices, enrollment challenges, issued nonces, verdict history, the latest evidence
of each device (for golden dry runs) and the history of loaded golden sets.

Invariants every backend keeps:
- ``take_enrollment_challenge`` and ``consume_nonce`` are single-use across processes: of
  any number of concurrent callers, exactly one gets the record; an expired one is never
  returned. Each is one write (a conditional DELETE ... RETURNING).
- ``add_verdict`` assigns a strictly increasing ``sequence`` (the verdict stream's cursor)
  and a ``verdict_id``. ``add_supersession`` stores a stream event in the same sequence (a
  copy of the verdict with ``supersession`` set), at most once per verdict; it is never a
  device's ``latest_verdict`` nor in its ``verdict_history``.
- At most one standing (not lifted) revocation per kind and subject.
- A failure raises ``StoreUnavailable``; nothing is half written (one transaction per call).
- The audit log (``verifier.store.auditsql``) is append-only; every verdict and golden set
  change is appended in the transaction that stores it; retention never touches the log.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from verifier.audit.entry import LogEntry
from verifier.audit.history import AttestationRecord, Retention, StoredAttestation
from verifier.audit.verify import StoredEntry
from verifier.records import (
    DeviceChange,
    DeviceRecord,
    EnrollmentChallenge,
    GoldenSetRecord,
    ImaStateRecord,
    InventoryEntry,
    IssuedNonce,
    RevocationKind,
    RevocationRecord,
    StoredEvidence,
)
from verifier.verdict import Status, Verdict

__all__ = [
    "DeviceRecord",
    "EnrollmentChallenge",
    "GoldenSetRecord",
    "ImaStateRecord",
    "IssuedNonce",
    "LatestVerdictCounts",
    "LatestVerdictGroup",
    "Store",
    "StoredEvidence",
]


@dataclass(frozen=True)
class LatestVerdictGroup:
    """Devices whose latest verdict has this status, profile and release; ``live``: it had
    not expired at the time asked (supersession by the golden set is the caller's to judge)."""

    status: Status
    profile: str
    release: str
    live: bool
    devices: int


@dataclass(frozen=True)
class LatestVerdictCounts:
    """``enrolled`` devices; ``groups`` cover those with a verdict (the rest never attested)."""

    enrolled: int
    groups: tuple[LatestVerdictGroup, ...]


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
    def add_verdict(
        self,
        verdict: Verdict,
        evidence: AttestationRecord | None = None,
        latest: StoredEvidence | None = None,
    ) -> Verdict:
        """Store the verdict, its attestation (``evidence``: the appraisal's inputs), its
        audit log entry and (``latest``) the device's latest evidence, as ``put_evidence``
        would, in ONE transaction; returns it with ``sequence`` and ``verdict_id``.
        ``LimitExceeded`` (before anything is written) when evidence is over the limit."""
        ...

    def add_supersession(self, verdict: Verdict, why: str) -> Verdict | None: ...
    def latest_unsuperseded_verdicts(self) -> Sequence[Verdict]: ...
    def latest_verdict(self, device_id: str) -> Verdict | None: ...
    def verdict_history(self, device_id: str, limit: int = 50) -> Sequence[Verdict]: ...
    def verdicts_after(
        self, sequence: int, device_ids: Sequence[str] = (), profile: str = "", limit: int = 500
    ) -> Sequence[Verdict]: ...

    # evidence and golden history
    def put_evidence(self, evidence: StoredEvidence) -> None: ...
    def latest_evidence(self, device_id: str) -> StoredEvidence | None: ...
    def all_latest_evidence(self) -> Sequence[StoredEvidence]: ...
    def record_golden_set(
        self,
        record: GoldenSetRecord,
        contents: Mapping[str, bytes] | None = None,
        change: str = "loaded",
    ) -> None:
        """Record a set going live, its file contents (once per content, each must hash to
        ``record.files``) and its audit log entry, in one transaction."""
        ...

    def golden_file(self, sha256_hex: str) -> bytes | None: ...
    def golden_set_at(self, at: float) -> GoldenSetRecord | None: ...
    def golden_set(self, digest: str) -> GoldenSetRecord | None: ...

    # revocations, inventory, operator changes
    def add_revocation(self, record: RevocationRecord) -> RevocationRecord | None: ...
    def lift_revocation(
        self, kind: RevocationKind, subject: str, actor: str, reason: str, now: float
    ) -> bool: ...
    def revocations_of(self, device_id: str, ak_name: str) -> Sequence[RevocationRecord]:
        """The standing records that can concern ``device_id`` and its AK named ``ak_name``
        (hex): the device, its EK (by fingerprint), its EK certificate, any AK revoked for it
        and that AK by name. A snapshot of these answers every question about this device
        as a snapshot of all records would, without reading the fleet's."""
        ...

    def revocations(self, *, include_lifted: bool = False) -> Sequence[RevocationRecord]: ...
    def put_inventory(self, entry: InventoryEntry) -> None: ...
    def remove_inventory(self, key: str) -> bool: ...
    def inventory(self) -> Sequence[InventoryEntry]: ...
    def inventory_entry(self, key: str) -> InventoryEntry | None: ...
    def set_device_profile(self, change: DeviceChange) -> bool: ...
    def approve_device(self, change: DeviceChange) -> bool: ...
    def device_changes(self, device_id: str) -> Sequence[DeviceChange]: ...
    # IMA incremental state: one row per device, for its latest boot
    def put_ima_state(self, record: ImaStateRecord) -> None:
        """Replace the device's state unless the stored one was updated later."""
        ...

    def ima_state(self, device_id: str) -> ImaStateRecord | None: ...

    def purge_expired(self, now: float) -> int: ...

    # the audit log (append-only; positions dense and serialized across replicas)
    def append_audit(self, entry: LogEntry) -> int:
        """Append one entry in its own transaction; returns its position."""
        ...

    def audit_head(self) -> tuple[int, bytes]: ...
    def audit_entries(self, start: int, limit: int) -> Sequence[StoredEntry]: ...
    def iter_audit_entries(self, start: int = 0, chunk: int = 10_000) -> Iterator[StoredEntry]: ...
    def audit_leaf_hashes(self, start: int, end: int) -> list[bytes]: ...
    def add_checkpoint(self, size: int, note: bytes, signed_at: float) -> None: ...
    def checkpoints(self) -> Sequence[bytes]: ...
    def latest_checkpoint(self) -> bytes | None: ...

    # attestation history and retention
    def attestation(self, verdict_id: str) -> StoredAttestation | None: ...
    def attestation_at(self, device_id: str, at: float) -> StoredAttestation | None: ...
    def attestations_after(
        self, sequence: int, limit: int
    ) -> Sequence[tuple[StoredAttestation, Verdict | None]]: ...
    def attestations_of(
        self, device_id: str, before: int | None = None, limit: int = 100
    ) -> Sequence[StoredAttestation]:
        """The device's attestations, newest first, with sequence below ``before`` (None: all),
        at most ``limit``; purged ones too (``record`` None). The event log is not read."""
        ...

    def verdict_by_sequence(self, sequence: int) -> Verdict | None: ...
    def purge_history(self, now: float, retention: Retention, batch: int = 500) -> int:
        """One retention batch: bodies cleared, verdict rows deleted, digests and log kept."""
        ...

    def supersession_marker(self) -> tuple[int, ...]:
        """Changes whenever any replica records or lifts a revocation or changes a device's
        profile or approval: (standing revocations, the last revocation id, the last device
        change id). Cheap: the sweeper reads it every interval."""
        ...

    # health and coverage
    def ping(self) -> None:
        """Return when the database answers; raise ``StoreUnavailable`` when it does not."""
        ...

    def latest_verdict_counts(self, now: float) -> LatestVerdictCounts:
        """The latest verdict of every device, counted; cheap at a million devices."""
        ...

    def close(self) -> None: ...
