"""The audit log at the application level: what is recorded, checkpoints, retention, and the
auditor's questions (verify, show, replay, proofs, export) answered from the store.

The pure pieces are ``verifier.audit`` (Merkle tree, signed notes, checkpoints, entries,
``verify_log``) and ``verifier.audit.history`` (digests, entries of verdicts and golden
sets); this module composes them with the store and the appraisal.

Recorded in the log (``EntryKind``): every verdict with its evidence digest (by the store, in
the verdict's transaction), every golden set that goes live (by the store, in its
transaction), enrollment outcomes of an authenticated finish (``record_enrollment``) and
operator actions with the caller's identity (``record_operator_action``).

Invariants:
- ``verify_store`` recomputes the tree from the stored entries' bytes (``verify_log``) AND
  checks every attestation row against the entry recorded for it: the verdict row's digest,
  the evidence body's digest, the positions. Nothing the store says is trusted without a hash
  that leads to a signed checkpoint.
- ``replay`` refuses (``ReplayUnavailable``) rather than guesses: a purged body, evidence
  that no longer hashes to its recorded digest, a golden set whose contents are not stored
  (and not supplied) or do not hash to the digest the verdict names.
- The checkpoint key is a file of its own (0600), never the token keys.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from verifier.appraisal import AppraisalContext, appraise_evidence
from verifier.audit import (
    AuditError,
    AuditMalformed,
    AuditRangeError,
    AuditReport,
    Checkpoint,
    EntryKind,
    LogEntry,
    MerkleTree,
    Problem,
    ProblemKind,
    SignerKey,
    StoredEntry,
    VerifierKey,
    open_checkpoint,
    sign_checkpoint,
    verify_log,
)
from verifier.audit.entry import FieldValue, peek_fields
from verifier.audit.history import (
    AttestationRecord,
    PreviousCounters,
    Retention,
    StoredAttestation,
    entry_time,
    evidence_digest,
    plain_entry,
    reasons_digest,
    verdict_digest,
)
from verifier.enrollment.tpmpublic import parse_tpm2b_public
from verifier.errors import StoreUnavailable
from verifier.evidence import Evidence
from verifier.golden.load import GoldenError, load_golden_files
from verifier.golden.model import GoldenSet
from verifier.ima.incremental import state_from_dict
from verifier.limits import DEFAULT_LIMITS, Limits
from verifier.records import DeviceRecord, IssuedNonce
from verifier.store.base import Store
from verifier.verdict import BootEpoch, Status, Verdict

log = logging.getLogger(__name__)

DEFAULT_KEY_NAME = "fleet-attest.audit"
CHECKPOINT_INTERVAL = 60.0  # seconds between checkpoints while the log grows
PURGE_BATCH = 500  # attestations per retention transaction


class ReplayUnavailable(AuditError):
    """A past decision that cannot be replayed from what is stored (said why)."""


# ------------------------------------------------------------------ recording


def record_operator_action(
    store: Store, caller: str, action: str, fields: Mapping[str, FieldValue], now: float
) -> int:
    """Append an operator action (who, what, on what) to the audit log; its position."""
    entry = plain_entry(
        EntryKind.OPERATOR_ACTION, now, {"caller": caller or "unknown", "action": action}, fields
    )
    return store.append_audit(entry)


def local_caller() -> str:
    """The identity of a command run on this machine: its user and host (``local/...``)."""
    try:
        user = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        user = f"uid{os.getuid()}"
    return f"local/{user}@{socket.gethostname()}"


def record_enrollment(
    store: Store, device_id: str, outcome: str, now: float, fields: Mapping[str, FieldValue]
) -> int:
    """Append an enrollment outcome (enrolled, reenrolled, approval_required)."""
    entry = plain_entry(
        EntryKind.ENROLLMENT, now, {"device_id": device_id, "outcome": outcome}, fields
    )
    return store.append_audit(entry)


def attestation_record(
    evidence: Evidence,
    device: DeviceRecord,
    issued: IssuedNonce,
    previous: Verdict | None,
    now: float,
    ima_state: str = "",
) -> AttestationRecord:
    """What one appraisal read, to keep with its verdict (``Store.add_verdict``);
    ``ima_state``: the device's IMA state (JSON) the appraisal started from."""
    return AttestationRecord(
        device_id=evidence.device_id,
        received_at=now,
        issued=issued,
        quote=evidence.quote,
        signature=evidence.signature,
        pcr_values=evidence.pcr_values,
        event_log=evidence.event_log,
        ak_public=device.ak_public,
        ek_not_after=device.ek_not_after,
        previous=None
        if previous is None
        else PreviousCounters(
            previous.boot_epoch.reset_count, previous.boot_epoch.restart_count, previous.clock
        ),
        ima_log=evidence.ima_log,
        ima_offset=evidence.ima_offset,
        ima_state=ima_state,
        log_digest=evidence.log_digest,
    )


# ------------------------------------------------------------------ keys and checkpoints


def create_key_file(path: Path, name: str = DEFAULT_KEY_NAME) -> SignerKey:
    """A new checkpoint signing key in ``path`` (created 0600; an existing file is refused)."""
    signer = SignerKey.generate(name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(signer.encode() + "\n")
    return signer


def load_signer(path: Path) -> SignerKey:
    mode = path.stat().st_mode & 0o077
    if mode:
        raise AuditMalformed(f"{path} is readable by others (mode {mode:o}); chmod 600 it")
    return SignerKey.parse(path.read_text().strip())


def write_checkpoint(store: Store, signer: SignerKey, now: float) -> bytes | None:
    """Sign the log's head when it grew since the latest checkpoint (or none exists)."""
    size, root = store.audit_head()
    latest = store.latest_checkpoint()
    if latest is not None:
        previous = open_checkpoint(latest, signer.verifier())
        if previous.size >= size:
            return None
    note = sign_checkpoint(Checkpoint(signer.name, size, root), signer)
    store.add_checkpoint(size, note, now)
    return note


def start_background(
    store: Store,
    stop: threading.Event,
    clock: Callable[[], float],
    signer: SignerKey | None,
    retention: Retention,
    interval: float = CHECKPOINT_INTERVAL,
) -> threading.Thread:
    """Checkpoints every ``interval`` and retention in small batches, until ``stop``.

    A purge batch is its own short transaction that does not take the log's order lock, so
    attestations are never waiting on it longer than one batch (SQLite: one write)."""

    def loop() -> None:
        while not stop.wait(interval):
            try:
                if signer is not None:
                    write_checkpoint(store, signer, clock())
                while retention.bounded and not stop.is_set():
                    if store.purge_history(clock(), retention, PURGE_BATCH) < PURGE_BATCH:
                        break
            except StoreUnavailable as exc:  # an outage: one line, no traceback
                log.warning("audit checkpoint or retention skipped (retrying): %s", exc)
            except Exception:  # the loop must survive anything; this is a bug
                log.exception("audit checkpoint or retention failed; retrying later")

    thread = threading.Thread(target=loop, name="audit", daemon=True)
    thread.start()
    return thread


# ------------------------------------------------------------------ verify


def _entry(store_entry: StoredEntry) -> LogEntry | None:
    try:
        return LogEntry.from_canonical(store_entry.data)
    except AuditError:
        return None


Progress = Callable[[str, int], None]  # (phase, items done so far), every PROGRESS_EVERY items
PROGRESS_EVERY = 100_000


def check_records(
    store: Store, chunk: int = 5_000, progress: Progress | None = None
) -> list[Problem]:
    """Every attestation row against the log entry recorded for it (see module docstring).

    Entries are read with ``peek_fields``: ``verify_store`` runs this with ``verify_log``,
    which checks every entry's form and hash, so a malformed entry is reported there."""
    problems: list[Problem] = []
    after = 0
    done = 0
    while True:
        rows = store.attestations_after(after, chunk)
        if not rows:
            return problems
        first = rows[0][0].audit_position
        last = max(a.audit_position for a, _ in rows)
        entries = {e.position: e for e in store.audit_entries(first, last - first + 1)}
        for attestation, verdict in rows:
            stored = entries.get(attestation.audit_position)
            problems.extend(
                _check_one(attestation, verdict, peek_fields(stored.data) if stored else None)
            )
        after = rows[-1][0].sequence
        if progress is not None and (done + len(rows)) // PROGRESS_EVERY > done // PROGRESS_EVERY:
            progress("records", done + len(rows))
        done += len(rows)


def _record_problem(position: int, detail: str) -> Problem:
    return Problem(ProblemKind.RECORD_CHANGED, position, None, detail)


def _check_one(
    attestation: StoredAttestation,
    verdict: Verdict | None,
    entry: tuple[str, Mapping[str, object]] | None,
) -> list[Problem]:
    pos = attestation.audit_position
    if entry is None or entry[0] != EntryKind.VERDICT.value:
        return [_record_problem(pos, f"verdict {attestation.verdict_id}: no verdict entry here")]
    fields = entry[1]
    found: list[Problem] = []
    if fields.get("verdict_id") != attestation.verdict_id:
        found.append(
            _record_problem(pos, f"verdict {attestation.verdict_id}: the entry names another")
        )
    if fields.get("evidence_digest") != attestation.evidence_digest:
        found.append(
            _record_problem(pos, f"verdict {attestation.verdict_id}: evidence digest changed")
        )
    if attestation.record is not None and evidence_digest(
        attestation.record, attestation.log_digest
    ) != (attestation.evidence_digest):
        found.append(
            _record_problem(pos, f"verdict {attestation.verdict_id}: evidence body changed")
        )
    if verdict is not None and verdict_digest(verdict) != fields.get("verdict_digest"):
        found.append(
            _record_problem(pos, f"verdict {attestation.verdict_id}: the verdict row changed")
        )
    if verdict is None and attestation.purged_at is None:
        found.append(
            Problem(
                ProblemKind.RECORD_MISSING,
                pos,
                None,
                f"verdict {attestation.verdict_id}: the row is gone but was never purged",
            )
        )
    return found


def _counted(entries: Iterator[StoredEntry], progress: Progress | None) -> Iterator[StoredEntry]:
    for index, entry in enumerate(entries, 1):
        yield entry
        if progress is not None and index % PROGRESS_EVERY == 0:
            progress("entries", index)


def verify_store(
    store: Store,
    key: VerifierKey,
    origin: str | None = None,
    progress: Progress | None = None,
) -> AuditReport:
    """``verify_log`` over the store's entries and checkpoints, plus ``check_records``;
    ``progress`` is told how far each pass has got."""
    entries = _counted(store.iter_audit_entries(), progress)
    report = verify_log(entries, store.checkpoints(), key, origin)
    extra = check_records(store, progress=progress)
    if not extra:
        return report
    return AuditReport(
        report.size,
        report.root,
        report.checkpoints_verified,
        report.latest_matching,
        report.problems + tuple(extra),
    )


# ------------------------------------------------------------------ export


def export_lines(store: Store, start: int = 0) -> Iterator[str]:
    """JSON lines: one per entry from ``start`` (resumable by position), then checkpoints."""
    for stored in store.iter_audit_entries(start):
        yield json.dumps(
            {
                "position": stored.position,
                "entry": stored.data.decode("utf-8", "replace"),
                "leaf_hash": stored.recorded_hash.hex(),
                "root": (stored.recorded_root or b"").hex(),
            },
            sort_keys=True,
            ensure_ascii=False,
        )
    for note in store.checkpoints():
        yield json.dumps({"checkpoint": note.decode("utf-8")}, sort_keys=True, ensure_ascii=False)


def read_export(lines: Iterator[str]) -> tuple[list[StoredEntry], list[bytes]]:
    entries: list[StoredEntry] = []
    checkpoints: list[bytes] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
            if "checkpoint" in doc:
                checkpoints.append(str(doc["checkpoint"]).encode("utf-8"))
                continue
            entries.append(
                StoredEntry(
                    int(doc["position"]),
                    str(doc["entry"]).encode("utf-8"),
                    bytes.fromhex(doc["leaf_hash"]),
                    bytes.fromhex(doc["root"]) or None,
                )
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise AuditMalformed(f"export line {number} is not an entry or checkpoint") from exc
    return entries, checkpoints


# ------------------------------------------------------------------ proofs


@dataclass(frozen=True)
class InclusionProof:
    position: int
    size: int
    leaf_hash: bytes
    root: bytes
    proof: tuple[bytes, ...]
    entry: bytes


@dataclass(frozen=True)
class ConsistencyProof:
    old_size: int
    new_size: int
    old_root: bytes
    new_root: bytes
    proof: tuple[bytes, ...]


def _tree(store: Store, size: int) -> MerkleTree:
    head, _ = store.audit_head()
    if not 0 <= size <= head:
        raise AuditRangeError(f"the log holds {head} entries, not {size}")
    return MerkleTree(store.audit_leaf_hashes(0, size))


def position_of(store: Store, verdict_id: str) -> int:
    attestation = store.attestation(verdict_id)
    if attestation is None:
        raise AuditRangeError(f"no verdict {verdict_id} in the history")
    return attestation.audit_position


def inclusion_proof(store: Store, position: int, size: int | None = None) -> InclusionProof:
    """Proof that the entry at ``position`` is in the tree of ``size`` (default: the head)."""
    size = store.audit_head()[0] if size is None else size
    if not 0 <= position < size:
        raise AuditRangeError(f"position {position} is not in a tree of {size}")
    tree = _tree(store, size)
    entries = store.audit_entries(position, 1)
    return InclusionProof(
        position,
        size,
        tree.leaf(position),
        tree.root(size),
        tuple(tree.inclusion_proof(position, size)),
        entries[0].data if entries else b"",
    )


def consistency_proof(store: Store, old_size: int, new_size: int) -> ConsistencyProof:
    if not 0 <= old_size <= new_size:
        raise AuditRangeError(f"no consistency proof from {old_size} to {new_size}")
    tree = _tree(store, new_size)
    return ConsistencyProof(
        old_size,
        new_size,
        tree.root(old_size),
        tree.root(new_size),
        tuple(tree.consistency_proof(old_size, new_size)),
    )


# ------------------------------------------------------------------ show and replay


@dataclass(frozen=True)
class PastDecision:
    """What ``audit show DEVICE --at TIME`` answers."""

    attestation: StoredAttestation
    verdict: Verdict | None  # None once retention purged the row
    entry: LogEntry | None  # the verdict's log entry (kept forever)
    golden_files: Mapping[str, str]  # file name -> SHA-256, from the golden history


def show(store: Store, device_id: str, at: float) -> PastDecision | None:
    attestation = store.attestation_at(device_id, at)
    if attestation is None:
        return None
    verdict = store.verdict_by_sequence(attestation.sequence)
    stored = store.audit_entries(attestation.audit_position, 1)
    entry = _entry(stored[0]) if stored else None
    golden_digest = verdict.golden_digest if verdict else _text(entry, "golden_digest")
    record = store.golden_set(golden_digest) if golden_digest else None
    return PastDecision(attestation, verdict, entry, record.files if record else {})


def _text(entry: LogEntry | None, name: str) -> str:
    value = entry.fields.get(name) if entry is not None else None
    return value if isinstance(value, str) else ""


@dataclass(frozen=True)
class ReplayResult:
    verdict_id: str
    recorded_status: str
    replayed: Verdict
    status_matches: bool
    reasons_match: bool  # status and every reason field, byte for byte (by digest)

    @property
    def reproduced(self) -> bool:
        return self.status_matches and self.reasons_match


GoldenSource = Callable[[str, Mapping[str, str]], Mapping[str, bytes] | None]


def golden_from_store(store: Store, files: Mapping[str, str]) -> dict[str, bytes] | None:
    contents: dict[str, bytes] = {}
    for name, sha in files.items():
        data = store.golden_file(sha)
        if data is None:
            return None
        contents[name] = data
    return contents


def golden_of(
    store: Store, digest: str, supplied: Mapping[str, bytes] | None, limits: Limits
) -> GoldenSet:
    """The golden set a verdict names, from the golden history (or, when its contents are not
    stored, the files of that name in ``supplied``: profiles and digests files alike)."""
    record = store.golden_set(digest)
    if record is None:
        raise ReplayUnavailable(f"golden set {digest} is not in the golden history")
    contents = golden_from_store(store, record.files)
    if contents is None:
        if supplied is None:
            raise ReplayUnavailable(
                f"the contents of golden set {digest} are not stored; pass its files"
            )
        missing = sorted(name for name in record.files if name not in supplied)
        if missing:
            raise ReplayUnavailable(
                f"golden set {digest} had {missing[0]!r}, which the given files lack"
            )
        contents = {name: supplied[name] for name in record.files}
    try:
        golden = load_golden_files(contents, limits)
    except GoldenError as exc:
        raise ReplayUnavailable(f"golden set {digest} does not load: {exc}") from None
    if golden.digest != digest:
        raise ReplayUnavailable(
            f"the files give golden set {golden.digest}, the verdict names {digest}"
        )
    return golden


def replay(
    store: Store,
    verdict_id: str,
    supplied_golden: Mapping[str, bytes] | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> ReplayResult:
    """Re-run the pure appraisal on the stored evidence with the golden set of that time and
    the same ``now``; compare status and reasons with what the log recorded."""
    attestation = store.attestation(verdict_id)
    if attestation is None:
        raise ReplayUnavailable(f"no verdict {verdict_id} in the history")
    record = attestation.record
    if record is None:
        raise ReplayUnavailable(f"the evidence of verdict {verdict_id} was purged (retention)")
    if evidence_digest(record) != attestation.evidence_digest:
        raise ReplayUnavailable(
            f"the evidence of verdict {verdict_id} no longer hashes to its digest"
        )
    stored = store.audit_entries(attestation.audit_position, 1)
    entry = _entry(stored[0]) if stored else None
    if entry is None or entry.fields.get("evidence_digest") != attestation.evidence_digest:
        raise ReplayUnavailable(f"verdict {verdict_id}: its log entry does not match its evidence")
    golden = golden_of(store, _text(entry, "golden_digest"), supplied_golden, limits)
    profile = golden.profile(record.issued.profile)
    if profile is None:
        raise ReplayUnavailable(
            f"golden set {golden.digest} has no profile {record.issued.profile}"
        )
    ak = parse_tpm2b_public(record.ak_public, limits)
    ctx = AppraisalContext(
        ak_public_key=ak.public_key,
        ak_hash=ak.signing_hash,
        issued=record.issued,
        profile=profile,
        golden_digest=golden.digest,
        previous=_previous(record),
        ek_not_after=record.ek_not_after,
        limits=limits,
        ima_state=state_from_dict(json.loads(record.ima_state)) if record.ima_state else None,
    )
    evidence = Evidence(
        record.device_id,
        record.issued.nonce,
        record.quote,
        record.signature,
        record.pcr_values,
        record.event_log,
        record.ima_log,
        record.ima_offset,
    )
    replayed = appraise_evidence(evidence, ctx, record.received_at).verdict
    recorded_status = _text(entry, "status")
    return ReplayResult(
        verdict_id,
        recorded_status,
        replayed,
        status_matches=replayed.status.value == recorded_status,
        reasons_match=reasons_digest(replayed) == _text(entry, "reasons_digest"),
    )


def _previous(record: AttestationRecord) -> Verdict | None:
    """The counters the appraisal compared with, as the verdict shape it reads them from."""
    if record.previous is None:
        return None
    p = record.previous
    return Verdict(
        device_id=record.device_id,
        status=Status.AFFIRMING,
        reasons=(),
        profile="",
        release="",
        golden_digest="",
        boot_epoch=BootEpoch(p.reset_count, p.restart_count),
        issued_at=0.0,
        expires_at=0.0,
        clock=p.clock,
    )


__all__ = [
    "ConsistencyProof",
    "InclusionProof",
    "PastDecision",
    "ReplayResult",
    "ReplayUnavailable",
    "Retention",
    "attestation_record",
    "check_records",
    "consistency_proof",
    "create_key_file",
    "entry_time",
    "export_lines",
    "inclusion_proof",
    "load_signer",
    "local_caller",
    "position_of",
    "read_export",
    "record_enrollment",
    "record_operator_action",
    "replay",
    "show",
    "start_background",
    "verify_store",
    "write_checkpoint",
]
