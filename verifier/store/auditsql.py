"""The store's audit half, shared by both SQL backends: attestation history, the append-only
log, checkpoints, golden file contents and retention.

``AuditSql`` is mixed into ``verifier.store.sql.SqlStore``; a backend supplies one more
primitive, ``_serialized(op, body, lock)``: run ``body(run)`` in ONE transaction, where
``run(sql, params)`` executes a statement and returns its rows. With ``lock`` the transaction
first takes the log's order lock (SQLite: its single writer lock, ``BEGIN IMMEDIATE``;
PostgreSQL: the transaction-scoped advisory lock ``VERDICT_LOCK`` that already orders verdict
sequences), so across processes and replicas appends are serialized.

Invariants:
- Position ``n`` of the log is appended only by a transaction that read the persisted
  ``CompactRange`` state of size ``n`` under the lock and writes the entry, its leaf hash, the
  running root and the state of size ``n + 1`` before it commits: positions are dense,
  assigned in commit order, and the running root of each row is the root of ``[0, n]``.
- ``add_verdict`` writes the verdict, its attestation (evidence body, event log once per
  content in ``evidence_logs``, AK once per key in ``attested_aks``) and its log entry in the
  same transaction: a verdict is never stored without its entry, nor an entry without it.
- The log tables are append-only: nothing here updates or deletes them, and triggers make
  the database refuse it (an attacker with the database can drop them; ``audit verify`` is
  what detects the result).
- Retention (``purge_history``) clears attestation BODIES and deletes verdict ROWS past the
  retention, in batches of its own short transactions that do not take the log lock; it keeps
  every digest, position and log entry, and a device's newest attestation and verdict.
"""

# SQL texts below are composed from module constants only, never from input:
# ruff: noqa: S608

from __future__ import annotations

import hashlib
import json
from abc import abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from verifier.audit.entry import LogEntry
from verifier.audit.errors import AuditError
from verifier.audit.history import (
    AttestationRecord,
    PreviousCounters,
    Retention,
    StoredAttestation,
    evidence_digest,
    golden_entry,
    verdict_entry,
)
from verifier.audit.merkle import HASH_SIZE, CompactRange
from verifier.audit.verify import StoredEntry
from verifier.errors import LimitExceeded, StoreUnavailable
from verifier.limits import Limits
from verifier.records import GoldenSetRecord, IssuedNonce, StoredEvidence
from verifier.store import codec
from verifier.verdict import Verdict

if TYPE_CHECKING:
    from verifier.store.sql import Statements

Row = tuple[Any, ...]
Params = tuple[object, ...]
Run = Callable[[str, Params], list[Row]]
T = TypeVar("T")

_ATTESTATION_COLUMNS = (
    "a.sequence, a.verdict_id, a.device_id, a.received_at, a.evidence_digest,"
    " a.audit_position, a.purged_at, a.nonce, a.quote, a.signature, a.pcr_values,"
    " l.event_log, k.ak_public, a.context"
)
# the same columns with the log's digest in place of its body: for checks over many rows
_DIGEST_COLUMNS = _ATTESTATION_COLUMNS.replace("l.event_log", "a.log_digest")
_ATTESTATION_FROM = (
    " FROM attestations AS a LEFT JOIN evidence_logs AS l ON l.digest = a.log_digest"
    " LEFT JOIN attested_aks AS k ON k.digest = a.ak_digest"
)
_BODY_NULL = (
    "nonce = NULL, quote = NULL, signature = NULL, pcr_values = NULL, log_digest = NULL,"
    " ak_digest = NULL, context = NULL"
)
_NOT_NEWEST = (
    " AND EXISTS (SELECT 1 FROM attestations AS newer WHERE newer.device_id = a.device_id"
    " AND newer.sequence > a.sequence)"
)


@dataclass(frozen=True)
class AuditStatements:
    insert_ak: str
    insert_attestation: str
    select_state: str
    upsert_state: str
    insert_entry: str
    entries_from: str
    leaf_hashes: str
    insert_checkpoint: str
    checkpoints: str
    latest_checkpoint: str
    attestation_by_id: str
    attestation_at: str
    attestations_after: str
    attestations_of: str
    verdict_by_sequence: str
    verdicts_by_sequences: str
    insert_golden_file: str
    select_golden_file: str
    golden_at: str
    purge_by_age: str
    purge_by_count: str
    delete_purged_verdicts: str


def audit_dialect(placeholder: str, in_sequences: str, verdict_columns: str) -> AuditStatements:
    """The statements with ``placeholder`` for ``?``; ``in_sequences`` is "sequence is in the
    list of integers given as one parameter"; ``verdict_columns`` the verdict row's columns."""

    def q(sql: str) -> str:
        return sql.replace("?", placeholder)

    purge_set = f"UPDATE attestations SET purged_at = ?, {_BODY_NULL} WHERE sequence IN "
    return AuditStatements(
        insert_ak=q(
            "INSERT INTO attested_aks (digest, ak_public) VALUES (?,?)"
            " ON CONFLICT (digest) DO NOTHING"
        ),
        insert_attestation=q(
            "INSERT INTO attestations (sequence, verdict_id, device_id, received_at,"
            " evidence_digest, audit_position, nonce, quote, signature, pcr_values, log_digest,"
            " ak_digest, context) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
        ),
        select_state="SELECT size, subtrees FROM audit_state WHERE id = 1",
        upsert_state=q(
            "INSERT INTO audit_state (id, size, subtrees) VALUES (1, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET size = excluded.size, subtrees = excluded.subtrees"
        ),
        insert_entry=q("INSERT INTO audit_log (position, entry, leaf_hash, root) VALUES (?,?,?,?)"),
        entries_from=q(
            "SELECT position, entry, leaf_hash, root FROM audit_log WHERE position >= ?"
            " ORDER BY position LIMIT ?"
        ),
        leaf_hashes=q(
            "SELECT leaf_hash FROM audit_log WHERE position >= ? AND position < ? ORDER BY position"
        ),
        insert_checkpoint=q("INSERT INTO audit_checkpoints (size, note, signed_at) VALUES (?,?,?)"),
        checkpoints="SELECT note FROM audit_checkpoints ORDER BY id",
        latest_checkpoint="SELECT note FROM audit_checkpoints ORDER BY id DESC LIMIT 1",
        attestation_by_id=q(
            f"SELECT {_ATTESTATION_COLUMNS}{_ATTESTATION_FROM} WHERE a.verdict_id = ?"
        ),
        attestation_at=q(
            f"SELECT {_ATTESTATION_COLUMNS}{_ATTESTATION_FROM}"
            " WHERE a.device_id = ? AND a.received_at <= ?"
            " ORDER BY a.received_at DESC, a.sequence DESC LIMIT 1"
        ),
        attestations_after=q(
            f"SELECT {_DIGEST_COLUMNS} FROM attestations AS a"
            " LEFT JOIN attested_aks AS k ON k.digest = a.ak_digest"
            " WHERE a.sequence > ? ORDER BY a.sequence LIMIT ?"
        ),
        attestations_of=q(
            f"SELECT {_DIGEST_COLUMNS} FROM attestations AS a"
            " LEFT JOIN attested_aks AS k ON k.digest = a.ak_digest"
            " WHERE a.device_id = ? AND a.sequence < ? ORDER BY a.sequence DESC LIMIT ?"
        ),
        verdict_by_sequence=q(f"SELECT {verdict_columns} FROM verdicts WHERE sequence = ?"),
        verdicts_by_sequences=q(
            f"SELECT {verdict_columns} FROM verdicts WHERE sequence >= ? AND sequence <= ?"
        ),
        insert_golden_file=q(
            "INSERT INTO golden_files (digest, content) VALUES (?,?)"
            " ON CONFLICT (digest) DO NOTHING"
        ),
        select_golden_file=q("SELECT content FROM golden_files WHERE digest = ?"),
        golden_at=q(
            "SELECT digest, loaded_at, files FROM golden_sets WHERE loaded_at <= ?"
            " ORDER BY loaded_at DESC, id DESC LIMIT 1"
        ),
        purge_by_age=q(
            purge_set + "(SELECT a.sequence FROM attestations AS a"
            " WHERE a.purged_at IS NULL AND a.received_at < ?" + _NOT_NEWEST + " LIMIT ?)"
            " RETURNING sequence"
        ),
        purge_by_count=q(
            purge_set + "(SELECT ranked.sequence FROM (SELECT sequence, purged_at,"
            " ROW_NUMBER() OVER (PARTITION BY device_id ORDER BY sequence DESC) AS age_rank"
            " FROM attestations) AS ranked"
            " WHERE ranked.purged_at IS NULL AND ranked.age_rank > ? LIMIT ?)"
            " RETURNING sequence"
        ),
        delete_purged_verdicts=q("DELETE FROM verdicts WHERE" + in_sequences),
    )


def _encode_context(record: AttestationRecord) -> str:
    issued, previous = record.issued, record.previous
    return json.dumps(
        {
            "bank": issued.bank,
            "pcrs": list(issued.pcrs),
            "profile": issued.profile,
            "nonce_expires_at": issued.expires_at,
            "ek_not_after": record.ek_not_after,
            "previous": None
            if previous is None
            else [previous.reset_count, previous.restart_count, previous.clock],
            **(
                {
                    "ima": {
                        "log": record.ima_log.hex(),
                        "offset": record.ima_offset,
                        "state": record.ima_state,
                    }
                }
                if record.ima_log or record.ima_state
                else {}
            ),
        },
        sort_keys=True,
        separators=(",", ":"),
    )


def _encode_pcr_list(values: Sequence[tuple[int, bytes]]) -> str:
    return json.dumps([[index, value.hex()] for index, value in values], separators=(",", ":"))


def _damaged(what: str, exc: Exception) -> StoreUnavailable:
    return StoreUnavailable(f"stored {what} is damaged ({exc}); refusing to use it")


def _attestation(row: Row, log_is_digest: bool = False) -> StoredAttestation:
    """A row of ``_ATTESTATION_COLUMNS`` (or ``_DIGEST_COLUMNS``: ``log_is_digest``, then the
    record's ``event_log`` is empty and ``log_digest`` says what it was)."""
    (seq, verdict_id, device_id, received_at, digest, position, purged_at) = row[:7]
    nonce, quote, signature, pcr_values, event_log, ak_public, context = row[7:]
    record = None
    if purged_at is None and quote is not None:
        try:
            ctx = json.loads(context)
            pcrs = tuple((int(i), bytes.fromhex(v)) for i, v in json.loads(pcr_values))
            prev = ctx["previous"]
            ima = ctx.get("ima") or {"log": "", "offset": 0, "state": ""}
            record = AttestationRecord(
                device_id=device_id,
                received_at=received_at,
                issued=IssuedNonce(
                    nonce=bytes(nonce),
                    device_id=device_id,
                    bank=ctx["bank"],
                    pcrs=tuple(int(p) for p in ctx["pcrs"]),
                    profile=ctx["profile"],
                    expires_at=float(ctx["nonce_expires_at"]),
                ),
                quote=bytes(quote),
                signature=bytes(signature),
                pcr_values=pcrs,
                event_log=b"" if event_log is None or log_is_digest else bytes(event_log),
                ak_public=b"" if ak_public is None else bytes(ak_public),
                ek_not_after=ctx["ek_not_after"],
                previous=None if prev is None else PreviousCounters(*(int(v) for v in prev)),
                ima_log=bytes.fromhex(ima["log"]),
                ima_offset=int(ima["offset"]),
                ima_state=str(ima["state"]),
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise _damaged(f"attestation {verdict_id}", exc) from exc
    return StoredAttestation(
        sequence=int(seq),
        verdict_id=verdict_id,
        device_id=device_id,
        received_at=received_at,
        evidence_digest=digest,
        audit_position=int(position),
        purged_at=purged_at,
        record=record,
        log_digest=None
        if record is None or event_log is None
        else (bytes(event_log) if log_is_digest else record.log_digest),
    )


def _split_subtrees(blob: bytes) -> list[bytes]:
    if len(blob) % HASH_SIZE:
        raise StoreUnavailable("stored audit state is damaged (subtrees not 32-byte hashes)")
    return [blob[i : i + HASH_SIZE] for i in range(0, len(blob), HASH_SIZE)]


class AuditSql:
    """The audit methods of the store contract (see the module docstring)."""

    statements: ClassVar[Statements]
    audit_statements: ClassVar[AuditStatements]
    limits: Limits

    # -------------------------------------------------------------- primitives

    @abstractmethod
    def _serialized(self, op: str, body: Callable[[Run], T], lock: bool = True) -> T: ...

    @abstractmethod
    def _read(self, op: str, sql: str, params: Params) -> list[Row]: ...

    @abstractmethod
    def _write(self, op: str, sql: str, params: Params) -> list[Row]: ...

    @staticmethod
    @abstractmethod
    def _sequence_list(sequences: Sequence[int]) -> object: ...

    @abstractmethod
    def _insert_verdict(self, run: Run, verdict: Verdict) -> Verdict: ...

    @abstractmethod
    def _evidence_row(
        self, evidence: StoredEvidence, log_digest: bytes | None = None
    ) -> tuple[bytes, Params]: ...

    @staticmethod
    @abstractmethod
    def _decode_verdict(row: Row) -> Verdict: ...

    # -------------------------------------------------------------- the log

    def _append_locked(self, run: Run, entry: LogEntry) -> int:
        """Append ``entry`` under the lock held by the caller's transaction; its position."""
        s = self.audit_statements
        rows = run(s.select_state, ())
        try:
            compact = (
                CompactRange.from_state(int(rows[0][0]), _split_subtrees(bytes(rows[0][1])))
                if rows
                else CompactRange()
            )
        except AuditError as exc:
            raise _damaged("audit state", exc) from exc
        position = compact.size
        data = entry.canonical_bytes()
        leaf = entry.leaf_hash()
        compact.append(leaf)
        run(s.insert_entry, (position, data, leaf, compact.root()))
        run(s.upsert_state, (compact.size, b"".join(compact.subtrees())))
        return position

    def append_audit(self, entry: LogEntry) -> int:
        return self._serialized(
            "append to the audit log", lambda run: self._append_locked(run, entry)
        )

    def audit_head(self) -> tuple[int, bytes]:
        """The log's size and root as of the last committed append."""
        rows = self._read("audit head", self.audit_statements.select_state, ())
        if not rows:
            return 0, CompactRange().root()
        try:
            compact = CompactRange.from_state(int(rows[0][0]), _split_subtrees(bytes(rows[0][1])))
        except AuditError as exc:
            raise _damaged("audit state", exc) from exc
        return compact.size, compact.root()

    def audit_entries(self, start: int, limit: int) -> Sequence[StoredEntry]:
        rows = self._read("audit entries", self.audit_statements.entries_from, (start, limit))
        return [
            StoredEntry(int(p), bytes(data), bytes(leaf), bytes(root))
            for p, data, leaf, root in rows
        ]

    def iter_audit_entries(self, start: int = 0, chunk: int = 10_000) -> Iterator[StoredEntry]:
        """Every entry from ``start`` in position order, read ``chunk`` rows at a time."""
        while True:
            rows = self.audit_entries(start, chunk)
            yield from rows
            if len(rows) < chunk:
                return
            start = rows[-1].position + 1

    def audit_leaf_hashes(self, start: int, end: int) -> list[bytes]:
        rows = self._read("audit leaf hashes", self.audit_statements.leaf_hashes, (start, end))
        return [bytes(row[0]) for row in rows]

    def add_checkpoint(self, size: int, note: bytes, signed_at: float) -> None:
        self._write(
            "store checkpoint", self.audit_statements.insert_checkpoint, (size, note, signed_at)
        )

    def checkpoints(self) -> Sequence[bytes]:
        rows = self._read("checkpoints", self.audit_statements.checkpoints, ())
        return [bytes(row[0]) for row in rows]

    def latest_checkpoint(self) -> bytes | None:
        rows = self._read("latest checkpoint", self.audit_statements.latest_checkpoint, ())
        return bytes(rows[0][0]) if rows else None

    # -------------------------------------------------------------- verdicts with history

    def add_verdict(
        self,
        verdict: Verdict,
        evidence: AttestationRecord | None = None,
        latest: StoredEvidence | None = None,
    ) -> Verdict:
        """Store the verdict, its attestation, its log entry and (``latest``) the device's
        latest evidence in one transaction; a size limit is checked before anything."""
        self._check_evidence_size(evidence)
        latest_row = None
        if latest is not None:
            same_log = evidence is not None and latest.event_log is evidence.event_log
            known = evidence.log_digest if same_log and evidence is not None else None
            latest_row = (*self._evidence_row(latest, known), latest.event_log)
        return self._serialized(
            "store verdict", lambda run: self._add_verdict_in(run, verdict, evidence, latest_row)
        )

    def _check_evidence_size(self, evidence: AttestationRecord | None) -> None:
        if evidence is None:
            return
        size = len(evidence.event_log) + len(evidence.quote) + len(evidence.signature)
        limit = self.limits.max_stored_evidence_bytes
        if size > limit:
            raise LimitExceeded(
                f"evidence of {evidence.device_id} is {size} bytes; the limit is {limit}"
            )

    def _add_verdict_in(
        self,
        run: Run,
        verdict: Verdict,
        evidence: AttestationRecord | None,
        latest: tuple[bytes, Params, bytes] | None = None,
    ) -> Verdict:
        """``add_verdict`` inside a transaction that holds the order lock (also the bulk path
        of ``bench/bench_audit_store.py``: many of these in one transaction). The event log
        is written once per transaction, and ``ON CONFLICT DO NOTHING`` once per distinct log."""
        s = self.audit_statements
        stored = self._insert_verdict(run, verdict)
        digest = ""
        columns: tuple[object, ...] = (None,) * 7
        log_written = b""
        if evidence is not None:
            digest = evidence_digest(evidence)
            log_digest = evidence.log_digest
            ak_digest = hashlib.sha256(evidence.ak_public).digest()
            run(self.statements.put_evidence_log, (log_digest, evidence.event_log))
            log_written = log_digest
            run(s.insert_ak, (ak_digest, evidence.ak_public))
            columns = (
                evidence.issued.nonce,
                evidence.quote,
                evidence.signature,
                _encode_pcr_list(evidence.pcr_values),
                log_digest,
                ak_digest,
                _encode_context(evidence),
            )
        if latest is not None:
            latest_digest, latest_params, latest_log = latest
            if latest_digest != log_written:
                run(self.statements.put_evidence_log, (latest_digest, latest_log))
            run(self.statements.put_evidence, latest_params)
        position = self._append_locked(run, verdict_entry(stored, digest))
        received_at = evidence.received_at if evidence is not None else stored.issued_at
        run(
            s.insert_attestation,
            (
                stored.sequence,
                stored.verdict_id,
                stored.device_id,
                received_at,
                digest,
                position,
                *columns,
            ),
        )
        return stored

    def attestation(self, verdict_id: str) -> StoredAttestation | None:
        rows = self._read("attestation", self.audit_statements.attestation_by_id, (verdict_id,))
        return _attestation(rows[0]) if rows else None

    def attestation_at(self, device_id: str, at: float) -> StoredAttestation | None:
        """The device's latest attestation received at or before ``at``."""
        rows = self._read("attestation at", self.audit_statements.attestation_at, (device_id, at))
        return _attestation(rows[0]) if rows else None

    def attestations_of(
        self, device_id: str, before: int | None = None, limit: int = 100
    ) -> Sequence[StoredAttestation]:
        """The device's attestations newest first, from before sequence ``before`` (None: from
        the newest), purged ones included (``record`` None); the event log is not read
        (``record.event_log`` is empty, ``log_digest`` its SHA-256)."""
        start = (2**63 - 1) if before is None else before
        rows = self._read(
            "device attestations",
            self.audit_statements.attestations_of,
            (device_id, start, limit),
        )
        return [_attestation(row, log_is_digest=True) for row in rows]

    def attestations_after(
        self, sequence: int, limit: int
    ) -> Sequence[tuple[StoredAttestation, Verdict | None]]:
        """Attestations in sequence order, each with its verdict row (None once purged).

        For checks over the whole history: the event log is not read (``record.event_log`` is
        empty); ``log_digest`` is its SHA-256."""
        s = self.audit_statements
        rows = self._read("attestations", s.attestations_after, (sequence, limit))
        found = [_attestation(row, log_is_digest=True) for row in rows]
        if not found:
            return []
        verdict_rows = self._read(
            "verdicts", s.verdicts_by_sequences, (found[0].sequence, found[-1].sequence)
        )
        verdicts = {v.sequence: v for v in map(self._decode_verdict, verdict_rows)}
        return [(a, verdicts.get(a.sequence)) for a in found]

    def verdict_by_sequence(self, sequence: int) -> Verdict | None:
        rows = self._read("verdict", self.audit_statements.verdict_by_sequence, (sequence,))
        return self._decode_verdict(rows[0]) if rows else None

    # -------------------------------------------------------------- golden history

    def record_golden_set(
        self,
        record: GoldenSetRecord,
        contents: Mapping[str, bytes] | None = None,
        change: str = "loaded",
    ) -> None:
        """Record a set going live, its file contents (once per content) and its log entry.

        ``contents`` must hash to ``record.files``; a mismatch is refused.
        """
        s = self.audit_statements
        contents = contents or {}
        for name, data in contents.items():
            if record.files.get(name) != hashlib.sha256(data).hexdigest():
                raise StoreUnavailable(f"golden file {name} does not hash to its recorded digest")

        def body(run: Run) -> None:
            run(
                self.statements.insert_golden,
                (record.digest, record.loaded_at, codec.encode_str_map(record.files)),
            )
            for data in contents.values():
                run(s.insert_golden_file, (hashlib.sha256(data).digest(), data))
            self._append_locked(
                run, golden_entry(record.digest, change, record.files, record.loaded_at)
            )

        self._serialized("record golden set", body)

    def golden_file(self, sha256_hex: str) -> bytes | None:
        try:
            key = bytes.fromhex(sha256_hex)
        except ValueError:
            return None
        rows = self._read("golden file", self.audit_statements.select_golden_file, (key,))
        return bytes(rows[0][0]) if rows else None

    def golden_set_at(self, at: float) -> GoldenSetRecord | None:
        """The golden set that went live last at or before ``at``."""
        rows = self._read("golden set at", self.audit_statements.golden_at, (at,))
        if not rows:
            return None
        digest, loaded_at, files = rows[0]
        return GoldenSetRecord(digest, loaded_at, codec.decode_str_map(files, "golden files"))

    # -------------------------------------------------------------- retention

    def purge_history(self, now: float, retention: Retention, batch: int = 500) -> int:
        """One batch of retention: at most ``batch`` attestation bodies cleared (and their
        verdict rows deleted); returns how many. Call until it returns 0."""
        if not retention.bounded or batch <= 0:
            return 0
        s = self.audit_statements

        def body(run: Run) -> int:
            sequences: list[int] = []
            if retention.max_age is not None:
                rows = run(s.purge_by_age, (now, now - retention.max_age, batch))
                sequences.extend(int(r[0]) for r in rows)
            left = batch - len(sequences)
            if retention.keep_per_device is not None and left > 0:
                rows = run(s.purge_by_count, (now, retention.keep_per_device, left))
                sequences.extend(int(r[0]) for r in rows)
            if sequences:
                run(s.delete_purged_verdicts, (self._sequence_list(sequences),))
            return len(sequences)

        return self._serialized("purge history", body, lock=False)


__all__ = ["AuditSql", "AuditStatements", "Run", "audit_dialect"]
