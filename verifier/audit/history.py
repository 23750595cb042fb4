"""What the audit log says about a verdict, and the evidence it was decided on (pure).

An ``AttestationRecord`` is everything the appraisal of one attestation read besides the
golden set: the nonce as issued (selection, bank, profile), the quote, its signature, the PCR
values in the order sent, the event log, the AK and the EK certificate's notAfter the device
had, and the counters of the previous verdict. With the golden set of that time and the same
``now`` the pure appraisal is a function of it, so a stored record can be replayed.

Invariants:
- ``evidence_digest(record)`` and ``verdict_digest(verdict)`` are SHA-256 over a canonical
  JSON encoding (sorted keys, no spaces, bytes as lowercase hex, floats as Python's shortest
  round-trip ``repr``), prefixed ``sha256:``; equal values give equal digests, and any change
  to a field the appraisal reads (or the verdict reports) changes the digest. The event log
  enters the evidence digest by its own SHA-256, so a log stored once per content is covered.
- ``verdict_entry`` records the verdict's digest and its evidence digest in the signed log:
  editing a verdict row or its evidence afterwards is detectable (``verdict_digest`` of the
  row no longer matches the entry), and so is a purged body replaced by another.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from verifier.audit.entry import EntryKind, FieldValue, LogEntry
from verifier.audit.errors import AuditMalformed
from verifier.records import IssuedNonce
from verifier.verdict import Verdict

_COMPACT = (",", ":")


@dataclass(frozen=True)
class PreviousCounters:
    """The counters of the verdict the appraisal compared the quote with."""

    reset_count: int
    restart_count: int
    clock: int


@dataclass(frozen=True)
class AttestationRecord:
    """The inputs of one appraisal, as received (see the module docstring)."""

    device_id: str
    received_at: float  # the appraisal's ``now``
    issued: IssuedNonce
    quote: bytes
    signature: bytes
    pcr_values: tuple[tuple[int, bytes], ...]
    event_log: bytes
    ak_public: bytes
    ek_not_after: float | None
    previous: PreviousCounters | None
    ima_log: bytes = b""  # the IMA entries sent (an increment from ``ima_offset``)
    ima_offset: int = 0
    ima_state: str = ""  # the device's IMA state the appraisal started from (JSON; "": none)
    # SHA-256 of ``event_log``: computed here unless the caller passes the one it computed
    # (``Evidence.log_digest``); nothing else may be passed.
    log_digest: bytes = b""

    def __post_init__(self) -> None:
        if not self.log_digest:
            object.__setattr__(self, "log_digest", hashlib.sha256(self.event_log).digest())


def _digest(document: object) -> str:
    text = json.dumps(document, sort_keys=True, separators=_COMPACT, allow_nan=False)
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def _float(value: float | None) -> str | None:
    return None if value is None else repr(float(value))


def evidence_document(record: AttestationRecord, log_digest: bytes) -> dict[str, object]:
    """The canonical form of a record, with the event log given by its digest."""
    previous = record.previous
    issued = record.issued
    document: dict[str, object] = {
        "ak_public": record.ak_public.hex(),
        "device_id": record.device_id,
        "ek_not_after": _float(record.ek_not_after),
        "event_log_sha256": log_digest.hex(),
        "issued": {
            "bank": issued.bank,
            "device_id": issued.device_id,
            "expires_at": _float(issued.expires_at),
            "nonce": issued.nonce.hex(),
            "pcrs": list(issued.pcrs),
            "profile": issued.profile,
        },
        "pcr_values": [[index, value.hex()] for index, value in record.pcr_values],
        "previous": None
        if previous is None
        else [previous.reset_count, previous.restart_count, previous.clock],
        "quote": record.quote.hex(),
        "received_at": _float(record.received_at),
        "signature": record.signature.hex(),
    }
    if record.ima_log or record.ima_state:  # runtime evidence (absent: older digests hold)
        document["ima"] = {
            "log_sha256": hashlib.sha256(record.ima_log).hexdigest(),
            "offset": record.ima_offset,
            "state": record.ima_state,
        }
    return document


def evidence_digest(record: AttestationRecord, log_digest: bytes | None = None) -> str:
    """The record's digest; ``log_digest`` when the event log itself was not read."""
    return _digest(
        evidence_document(record, record.log_digest if log_digest is None else log_digest)
    )


def verdict_document(verdict: Verdict) -> dict[str, object]:
    """Every field of a stored verdict, canonically (``extra`` included)."""
    return {
        "boot_epoch": [verdict.boot_epoch.reset_count, verdict.boot_epoch.restart_count],
        "clock": verdict.clock,
        "device_id": verdict.device_id,
        "expires_at": _float(verdict.expires_at),
        "extra": dict(verdict.extra),
        "firmware_version": verdict.firmware_version,
        "golden_digest": verdict.golden_digest,
        "issued_at": _float(verdict.issued_at),
        "profile": verdict.profile,
        "reasons": [
            {
                "actual": r.actual,
                "code": r.code,
                "event_index": r.event_index,
                "expected": r.expected,
                "pcr": r.pcr,
                "release": r.release,
                "rule": r.rule,
                "severity": r.severity.value,
                "text": r.text,
            }
            for r in verdict.reasons
        ],
        "release": verdict.release,
        "safe": verdict.safe,
        "sequence": verdict.sequence,
        "status": verdict.status.value,
        "verdict_id": verdict.verdict_id,
    }


def verdict_digest(verdict: Verdict) -> str:
    return _digest(verdict_document(verdict))


def reasons_digest(verdict: Verdict) -> str:
    """Status and reasons only: what a replay must reproduce byte for byte."""
    return _reasons_digest(verdict_document(verdict))


def _reasons_digest(document: dict[str, object]) -> str:
    return _digest({"reasons": document["reasons"], "status": document["status"]})


def entry_time(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def verdict_entry(verdict: Verdict, evidence: str) -> LogEntry:
    """The log entry of a stored verdict (``sequence`` and ``verdict_id`` assigned)."""
    document = verdict_document(verdict)
    return LogEntry(
        EntryKind.VERDICT,
        entry_time(verdict.issued_at),
        {
            "device_id": verdict.device_id,
            "verdict_id": verdict.verdict_id,
            "sequence": verdict.sequence,
            "status": verdict.status.value,
            "profile": verdict.profile,
            "release": verdict.release,
            "golden_digest": verdict.golden_digest,
            "verdict_digest": _digest(document),
            "reasons_digest": _reasons_digest(document),
            "evidence_digest": evidence,
            "codes": tuple(r.code for r in verdict.reasons),
        },
    )


def supersession_entry(event: Verdict, why: str, when: float) -> LogEntry:
    """A verdict that stopped being current (its stream event's ``sequence``) and why."""
    return LogEntry(
        EntryKind.SUPERSESSION,
        entry_time(when),
        {
            "device_id": event.device_id,
            "verdict_id": event.verdict_id,
            "superseded_by": why,
            "sequence": event.sequence,
        },
    )


def golden_entry(
    golden_digest: str, change: str, files: Mapping[str, str], loaded_at: float
) -> LogEntry:
    """A golden set going live: its digest and each file's SHA-256."""
    return LogEntry(
        EntryKind.GOLDEN_CHANGE,
        entry_time(loaded_at),
        {
            "golden_digest": golden_digest,
            "change": change,
            "files": tuple(f"{name}={files[name]}" for name in sorted(files)),
        },
    )


def plain_entry(
    kind: EntryKind, when: float, required: Mapping[str, str], fields: Mapping[str, FieldValue]
) -> LogEntry:
    """An entry of ``kind`` from its required fields and any others (which may not clash)."""
    clash = set(required) & set(fields)
    if clash:
        raise AuditMalformed(f"fields {sorted(clash)} are set by the caller twice")
    return LogEntry(kind, entry_time(when), {**fields, **required})


@dataclass(frozen=True)
class StoredAttestation:
    """One attestation of the history: always its digests and log position; its body
    (``record``) until retention purges it (then ``purged_at`` is set and ``record`` is None)."""

    sequence: int  # the verdict's sequence
    verdict_id: str
    device_id: str
    received_at: float
    evidence_digest: str  # "" for a verdict stored without evidence
    audit_position: int
    purged_at: float | None
    record: AttestationRecord | None
    log_digest: bytes | None = None  # SHA-256 of the event log, while the body is kept


@dataclass(frozen=True)
class Retention:
    """How long attestation bodies and verdict rows are kept: past ``max_age`` seconds, or
    beyond the newest ``keep_per_device`` of a device, whichever comes first (None: no bound).
    A device's newest attestation is always kept: it is the baseline of the next one."""

    max_age: float | None = None
    keep_per_device: int | None = None

    def __post_init__(self) -> None:
        if self.max_age is not None and self.max_age <= 0:
            raise AuditMalformed("retention max_age must be positive")
        if self.keep_per_device is not None and self.keep_per_device < 1:
            raise AuditMalformed("retention keep_per_device must be at least 1")

    @property
    def bounded(self) -> bool:
        return self.max_age is not None or self.keep_per_device is not None
