"""What the SQL backends share: the store contract written once, over three primitives.

SQLite and PostgreSQL differ in how they connect, run a statement and hold a transaction, not
in what they keep or how a row is encoded. ``SqlStore`` implements every method of
``verifier.store.base.Store`` in terms of what a backend supplies:

- ``_read(op, sql, params)``: run one statement, return its rows;
- ``_write(op, sql, params)``: run one statement as its own transaction, return its RETURNING
  rows; a foreign key naming a missing device raises ``UnknownDevice``;
- ``_transaction(op, statements)``: run several statements in one transaction, return each
  one's row count;
- ``_connect()``: a new connection for the calling thread;
- ``statements``: the SQL text of its dialect (``dialect``), and ``_device_list`` (how a list
  of device ids is passed as one parameter).

Invariants:
- Every statement is written once here, with ``?`` for a parameter; ``dialect`` replaces it
  with the backend's placeholder (``?`` or ``%s``), so no SQL text may hold a literal ``?``.
  Only what really differs is given by the backend: the empty-blob literal, "device id in a
  list", and the row source of the verdict insert (where PostgreSQL takes its advisory lock).
- Texts are composed from constants only, never from input.
- ``take_enrollment_challenge`` and ``consume_nonce`` are each ONE ``_write`` of a conditional
  ``DELETE ... WHERE key AND owner AND expires_at > now RETURNING`` (each backend's docstring
  says why exactly one concurrent caller gets the row); an expired row matches nothing.
- ``put_evidence`` checks ``limits.max_stored_evidence_bytes`` (``LimitExceeded``) before it
  writes anything; the event log and the evidence row go in one transaction.
- Row decoders copy every blob column into ``bytes`` and decode every JSON column through
  ``verifier.store.codec``: a damaged row raises ``StoreUnavailable``, never a guess.
- Connections: one per thread (``threading.local``), each registered so ``close`` can close
  them all; a forked child forgets every inherited connection (``_forget_connections``) and
  opens its own.

``pending_migrations`` is the version check both schema modules run inside their migration
transaction.
"""

# SQL texts below are composed from module constants only, never from input (S608 is moot):
# ruff: noqa: S608

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from verifier.audit.history import supersession_entry
from verifier.enrollment.identity import PREFIX as DEVICE_PREFIX
from verifier.errors import LimitExceeded, StoreUnavailable, UnknownDevice
from verifier.limits import Limits
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
from verifier.store import codec
from verifier.store.auditsql import AuditSql, Run
from verifier.store.base import LatestVerdictCounts, LatestVerdictGroup
from verifier.verdict import SUPERSEDED_AT, BootEpoch, Verdict

Row = tuple[Any, ...]
Params = tuple[object, ...]


class _Connection(Protocol):
    def close(self) -> None: ...


Conn = TypeVar("Conn", bound=_Connection)

# ------------------------------------------------------------------ SQL, written once

_DEVICE_COLUMNS = (
    "device_id, ek_public, ek_certificate, ek_not_after, ak_public, ak_name, labels,"
    " enrollment_count, enrolled_at, pending_ak_public, pending_ak_name, profile, approved,"
    " ek_intermediates"
)
_CHALLENGE_COLUMNS = (
    "challenge_id, device_id, ek_public, ek_certificate, ek_not_after, ak_public, ak_name,"
    " labels, secret, expires_at, ek_intermediates"
)
VERDICT_COLUMNS = _VERDICT_COLUMNS = (
    "sequence, verdict_id, device_id, status, reasons, profile, release_name, golden_digest,"
    " reset_count, restart_count, issued_at, expires_at, firmware_version, clock, safe, extra,"
    " supersession"
)
_INSERT_VERDICT = (
    "INSERT INTO verdicts (verdict_id, device_id, status, reasons, profile, release_name,"
    " golden_digest, reset_count, restart_count, issued_at, expires_at, firmware_version,"
    " clock, safe, extra, supersession) {rows}"
)
VERDICT_PARAMS = 16  # parameters of the verdict insert, in the order above
_AFTER = f"SELECT {_VERDICT_COLUMNS} FROM verdicts WHERE sequence > ?"
_REVOCATION_COLUMNS = (
    "revocation_id, kind, subject, device_id, reason, actor, at, lifted_at, lifted_by,"
    " lifted_reason"
)
_CHANGE_COLUMNS = "device_id, what, before, after, actor, at, reason"
_OF_PROFILE = " AND profile = ?"
_IN_ORDER = " ORDER BY sequence LIMIT ?"
_EVIDENCE_JOIN = (
    "SELECT e.device_id, e.received_at, e.bank, e.pcrs, l.event_log, e.labels"
    " FROM evidence AS e JOIN evidence_logs AS l ON l.digest = e.log_digest"
)


def marks(count: int) -> str:
    """``count`` neutral placeholders: ``?,?,?``."""
    return ",".join("?" * count)


@dataclass(frozen=True)
class Statements:
    """The SQL text of one dialect; a field per statement the store runs."""

    select_device: str
    list_devices: str
    device_ids_with_prefix: str
    insert_device: str
    bump_enrollment: str
    set_pending_ak: str
    approve_pending_ak: str
    insert_challenge: str
    take_challenge: str
    insert_nonce: str
    consume_nonce: str
    insert_verdict: str
    insert_supersession: str
    device_verdicts: str
    latest_unsuperseded: str
    verdicts_after: dict[tuple[bool, bool], str]  # by (device ids given, profile given)
    put_evidence_log: str
    put_evidence: str
    select_evidence: str
    all_evidence: str
    insert_golden: str
    select_golden: str
    purge_nonces: str
    purge_challenges: str
    purge_logs: str
    insert_revocation: str
    lift_revocation: str
    revocations: str
    revocations_of: str
    all_revocations: str
    put_inventory: str
    remove_inventory: str
    inventory: str
    inventory_entry: str
    set_profile: str
    approve_device: str
    insert_change: str
    device_changes: str
    ping: str
    supersession_marker: str
    count_devices: str
    latest_verdict_counts: str
    put_ima_state: str
    select_ima_state: str


# Coverage: the latest verdict of each device (its highest sequence, supersession events
# aside), counted by what decides its freshness; a verdict with a supersession event (a
# revocation, a golden change the sweeper saw) is never live. One index seek per device on
# verdicts_by_device (device_id, sequence) finds the max, a primary-key lookup reads the row,
# one partial-index probe (verdicts_superseded_once) the event: O(devices x log verdicts),
# never a scan of the history; one result row per (status, profile, release, live) group.
_LATEST_VERDICT_COUNTS = (
    "SELECT v.status, v.profile, v.release_name,"
    " CASE WHEN v.expires_at > ? AND NOT EXISTS (SELECT 1 FROM verdicts AS s"
    " WHERE s.supersession != '' AND s.verdict_id = v.verdict_id) THEN 1 ELSE 0 END AS live,"
    " count(*)"
    " FROM devices AS d JOIN verdicts AS v ON v.sequence ="
    " (SELECT max(w.sequence) FROM verdicts AS w"
    " WHERE w.device_id = d.device_id AND w.supersession = '')"
    " GROUP BY v.status, v.profile, v.release_name, live"
)


def dialect(
    placeholder: str,
    empty_blob: str,
    in_devices: str,
    verdict_rows: str,
    true: str = "1",
    false: str = "0",
) -> Statements:
    """The statements with ``placeholder`` for ``?``.

    ``empty_blob`` is the literal of an empty blob, ``in_devices`` the condition "device_id is
    in the list given as one parameter" (``AND ...``), ``verdict_rows`` the row source of the
    verdict insert (``VALUES (...)`` or a ``SELECT``) taking ``VERDICT_PARAMS`` parameters;
    ``true`` and ``false`` the boolean literals.
    """

    def q(sql: str) -> str:
        return sql.replace("?", placeholder)

    return Statements(
        select_device=q(f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE device_id = ?"),
        list_devices=f"SELECT {_DEVICE_COLUMNS} FROM devices ORDER BY device_id",
        device_ids_with_prefix=q(
            "SELECT device_id FROM devices WHERE substr(device_id, 1, ?) = ?"
            " ORDER BY device_id LIMIT ?"
        ),
        insert_device=q(f"INSERT INTO devices ({_DEVICE_COLUMNS}) VALUES ({marks(14)})"),
        bump_enrollment=q(
            "UPDATE devices SET enrollment_count = enrollment_count + 1, labels = ?"
            " WHERE device_id = ? RETURNING enrollment_count"
        ),
        set_pending_ak=q(
            "UPDATE devices SET pending_ak_public = ?, pending_ak_name = ?"
            " WHERE device_id = ? RETURNING device_id"
        ),
        approve_pending_ak=q(
            "UPDATE devices SET ak_public = pending_ak_public, ak_name = pending_ak_name,"
            f" pending_ak_public = {empty_blob}, pending_ak_name = {empty_blob},"
            " enrolled_at = ?"
            " WHERE device_id = ? AND length(pending_ak_name) > 0 AND pending_ak_name = ?"
            " RETURNING device_id"
        ),
        insert_challenge=q(
            f"INSERT INTO enrollment_challenges ({_CHALLENGE_COLUMNS}) VALUES ({marks(11)})"
        ),
        take_challenge=q(
            "DELETE FROM enrollment_challenges WHERE challenge_id = ? AND expires_at > ?"
            f" RETURNING {_CHALLENGE_COLUMNS}"
        ),
        insert_nonce=q(
            "INSERT INTO nonces (nonce, device_id, bank, pcrs, profile, expires_at)"
            f" VALUES ({marks(6)})"
        ),
        consume_nonce=q(
            "DELETE FROM nonces WHERE nonce = ? AND device_id = ? AND expires_at > ?"
            " RETURNING bank, pcrs, profile, expires_at"
        ),
        insert_verdict=q(_INSERT_VERDICT.format(rows=verdict_rows) + " RETURNING sequence"),
        insert_supersession=q(
            _INSERT_VERDICT.format(rows=verdict_rows) + " ON CONFLICT DO NOTHING RETURNING sequence"
        ),
        device_verdicts=q(
            f"SELECT {_VERDICT_COLUMNS} FROM verdicts WHERE device_id = ? AND supersession = ''"
            " ORDER BY sequence DESC LIMIT ?"
        ),
        latest_unsuperseded=(
            f"SELECT {_VERDICT_COLUMNS} FROM verdicts AS v WHERE supersession = ''"
            " AND sequence = (SELECT max(sequence) FROM verdicts AS w"
            " WHERE w.device_id = v.device_id AND w.supersession = '')"
            " AND NOT EXISTS (SELECT 1 FROM verdicts AS s WHERE s.supersession != ''"
            " AND s.verdict_id = v.verdict_id)"
            " ORDER BY device_id"
        ),
        verdicts_after={
            (False, False): q(_AFTER + _IN_ORDER),
            (True, False): q(_AFTER + in_devices + _IN_ORDER),
            (False, True): q(_AFTER + _OF_PROFILE + _IN_ORDER),
            (True, True): q(_AFTER + in_devices + _OF_PROFILE + _IN_ORDER),
        },
        put_evidence_log=q(
            "INSERT INTO evidence_logs (digest, event_log) VALUES (?,?)"
            " ON CONFLICT (digest) DO NOTHING"
        ),
        put_evidence=q(
            "INSERT INTO evidence (device_id, received_at, bank, pcrs, log_digest, labels)"
            f" VALUES ({marks(6)})"
            " ON CONFLICT (device_id) DO UPDATE SET received_at = excluded.received_at,"
            " bank = excluded.bank, pcrs = excluded.pcrs, log_digest = excluded.log_digest,"
            " labels = excluded.labels WHERE excluded.received_at >= evidence.received_at"
        ),
        select_evidence=q(_EVIDENCE_JOIN + " WHERE e.device_id = ?"),
        all_evidence=_EVIDENCE_JOIN + " ORDER BY e.device_id",
        insert_golden=q("INSERT INTO golden_sets (digest, loaded_at, files) VALUES (?,?,?)"),
        select_golden=q(
            "SELECT digest, loaded_at, files FROM golden_sets WHERE digest = ?"
            " ORDER BY id DESC LIMIT 1"
        ),
        purge_nonces=q("DELETE FROM nonces WHERE expires_at <= ?"),
        purge_challenges=q("DELETE FROM enrollment_challenges WHERE expires_at <= ?"),
        purge_logs=(
            "DELETE FROM evidence_logs WHERE NOT EXISTS"
            " (SELECT 1 FROM evidence WHERE evidence.log_digest = evidence_logs.digest)"
            " AND NOT EXISTS (SELECT 1 FROM attestations AS a"
            " WHERE a.log_digest = evidence_logs.digest)"
        ),
        insert_revocation=q(
            "INSERT INTO revocations (kind, subject, device_id, reason, actor, at)"
            f" VALUES ({marks(6)}) ON CONFLICT DO NOTHING RETURNING revocation_id"
        ),
        lift_revocation=q(
            "UPDATE revocations SET lifted_at = ?, lifted_by = ?, lifted_reason = ?"
            " WHERE kind = ? AND subject = ? AND lifted_at IS NULL RETURNING revocation_id"
        ),
        revocations=(
            f"SELECT {_REVOCATION_COLUMNS} FROM revocations WHERE lifted_at IS NULL"
            " ORDER BY revocation_id"
        ),
        revocations_of=q(
            f"SELECT {_REVOCATION_COLUMNS} FROM revocations WHERE lifted_at IS NULL"
            " AND (device_id = ? OR (kind = 'device' AND subject = ?) OR (kind = 'ek' AND"
            " subject = ?) OR (kind = 'ek_certificate' AND subject = ?) OR (kind = 'ak' AND"
            " subject = ?)) ORDER BY revocation_id"
        ),
        all_revocations=f"SELECT {_REVOCATION_COLUMNS} FROM revocations ORDER BY revocation_id",
        put_inventory=q(
            f"INSERT INTO inventory (key, profile, labels, added_by, added_at) VALUES ({marks(5)})"
            " ON CONFLICT (key) DO UPDATE SET profile = excluded.profile,"
            " labels = excluded.labels, added_by = excluded.added_by,"
            " added_at = excluded.added_at"
        ),
        remove_inventory=q("DELETE FROM inventory WHERE key = ? RETURNING key"),
        inventory="SELECT key, profile, labels, added_by, added_at FROM inventory ORDER BY key",
        inventory_entry=q(
            "SELECT key, profile, labels, added_by, added_at FROM inventory WHERE key = ?"
        ),
        set_profile=q("UPDATE devices SET profile = ? WHERE device_id = ?"),
        approve_device=q(
            f"UPDATE devices SET profile = ?, approved = {true} WHERE device_id = ?"
            f" AND approved = {false}"
        ),
        insert_change=q(f"INSERT INTO device_changes ({_CHANGE_COLUMNS}) VALUES ({marks(7)})"),
        device_changes=q(
            f"SELECT {_CHANGE_COLUMNS} FROM device_changes WHERE device_id = ? ORDER BY id"
        ),
        ping=VERSION_QUERY,
        supersession_marker=(
            "SELECT (SELECT count(*) FROM revocations WHERE lifted_at IS NULL),"
            " (SELECT coalesce(max(revocation_id), 0) FROM revocations),"
            " (SELECT coalesce(max(id), 0) FROM device_changes)"
        ),
        count_devices="SELECT count(*) FROM devices",
        latest_verdict_counts=q(_LATEST_VERDICT_COUNTS),
        put_ima_state=q(
            "INSERT INTO ima_states (device_id, boot_id, entry_count, state, updated_at)"
            f" VALUES ({marks(5)})"
            " ON CONFLICT (device_id) DO UPDATE SET boot_id = excluded.boot_id,"
            " entry_count = excluded.entry_count, state = excluded.state,"
            " updated_at = excluded.updated_at"
            " WHERE excluded.updated_at >= ima_states.updated_at"
        ),
        select_ima_state=q(
            "SELECT device_id, boot_id, entry_count, state, updated_at FROM ima_states"
            " WHERE device_id = ?"
        ),
    )


# ------------------------------------------------------------------ schema version

VERSION_QUERY = "SELECT version FROM schema_version WHERE id = 1"


def check_schema_current(version_row: Row | None, schema_version: int, where: str) -> None:
    """A read-only open never migrates: the database must already be at ``schema_version``."""
    current = 0 if version_row is None else int(version_row[0])
    if current != schema_version:
        raise StoreUnavailable(
            f"store: {where} has schema version {current}, this verifier reads version "
            f"{schema_version}; start 'attest-verifier serve' on it once to migrate"
        )


def pending_migrations(
    version_row: Row | None, migrations: tuple[tuple[str, ...], ...], where: str
) -> tuple[tuple[str, ...], ...]:
    """The migrations a database at ``version_row`` (None: version 0) still needs.

    Raises ``StoreUnavailable`` when its version is newer than ``len(migrations)``: an older
    verifier must not write rows a newer one cannot trust.
    """
    current = 0 if version_row is None else int(version_row[0])
    if current > len(migrations):
        raise StoreUnavailable(
            f"the store {where} has schema version {current}, newer than this verifier "
            f"knows ({len(migrations)}); upgrade the verifier instead of downgrading the store"
        )
    return migrations[current:]


# ------------------------------------------------------------------ fork safety

_STORES: weakref.WeakSet[SqlStore[Any]] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for store in list(_STORES):
        store._forget_connections()


os.register_at_fork(after_in_child=_after_fork_in_child)


# ------------------------------------------------------------------ the store


class SqlStore(AuditSql, ABC, Generic[Conn]):
    """The ``Store`` methods both backends share; a subclass supplies the primitives."""

    statements: ClassVar[Statements]

    def __init__(self, where: str, limits: Limits) -> None:
        self.where = where  # names the store in messages (no password)
        self.limits = limits
        self._closed = False
        self._forget_connections()

    def _opened(self) -> None:
        """Register the open store, so a forked child drops its connections."""
        _STORES.add(self)

    # -------------------------------------------------------------- primitives

    @abstractmethod
    def _connect(self) -> Conn: ...

    @abstractmethod
    def _read(self, op: str, sql: str, params: Params) -> list[Row]: ...

    @abstractmethod
    def _write(self, op: str, sql: str, params: Params) -> list[Row]: ...

    @abstractmethod
    def _transaction(self, op: str, statements: Sequence[tuple[str, Params]]) -> list[int]: ...

    @staticmethod
    @abstractmethod
    def _device_list(device_ids: Sequence[str]) -> object:
        """The parameter that ``in_devices`` of the dialect compares ``device_id`` with."""

    # -------------------------------------------------------------- connections

    def _forget_connections(self) -> None:
        """Start with no connections (at init, and in a forked child: never reuse the parent's)."""
        self._local = threading.local()
        self._registry_lock = threading.Lock()
        self._connections: list[Conn] = []

    def _adopt(self, conn: Conn) -> None:
        with self._registry_lock:
            self._connections.append(conn)
        self._local.conn = conn

    def _conn(self) -> Conn:
        conn: Conn | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        if self._closed:
            raise StoreUnavailable(f"store: {self.where} is closed")
        conn = self._connect()
        self._adopt(conn)
        return conn

    def close(self) -> None:
        self._closed = True
        with self._registry_lock:
            connections, self._connections = self._connections, []
        self._local = threading.local()
        for conn in connections:
            with contextlib.suppress(Exception):  # best effort; the database stays consistent
                conn.close()

    # -------------------------------------------------------------- devices and enrollment

    def get_device(self, device_id: str) -> DeviceRecord | None:
        rows = self._read("get device", self.statements.select_device, (device_id,))
        return _device(rows[0]) if rows else None

    def list_devices(self) -> Sequence[DeviceRecord]:
        return [
            _device(row) for row in self._read("list devices", self.statements.list_devices, ())
        ]

    def device_ids_with_prefix(self, prefix: str, limit: int) -> Sequence[str]:
        rows = self._read(
            "find devices",
            self.statements.device_ids_with_prefix,
            (len(prefix), prefix, limit),
        )
        return [str(row[0]) for row in rows]

    def insert_device(self, device: DeviceRecord) -> None:
        self._write(
            "insert device",
            self.statements.insert_device,
            (
                device.device_id,
                device.ek_public,
                device.ek_certificate,
                device.ek_not_after,
                device.ak_public,
                device.ak_name,
                codec.encode_str_map(device.labels),
                device.enrollment_count,
                device.enrolled_at,
                device.pending_ak_public,
                device.pending_ak_name,
                device.profile,
                device.approved,
                _encode_certs(device.ek_intermediates),
            ),
        )

    def bump_enrollment(self, device_id: str, labels: dict[str, str]) -> int:
        params = (codec.encode_str_map(labels), device_id)
        rows = self._write("count enrollment", self.statements.bump_enrollment, params)
        if not rows:
            raise UnknownDevice(f"store: count enrollment: no enrolled device {device_id}")
        return int(rows[0][0])

    def set_pending_ak(self, device_id: str, ak_public: bytes, ak_name: bytes) -> None:
        params = (ak_public, ak_name, device_id)
        if not self._write("park new AK", self.statements.set_pending_ak, params):
            raise UnknownDevice(f"store: park new AK: no enrolled device {device_id}")

    def approve_pending_ak(self, device_id: str, ak_name: bytes, now: float) -> bool:
        params = (now, device_id, ak_name)
        return bool(self._write("approve AK", self.statements.approve_pending_ak, params))

    def put_enrollment_challenge(self, challenge: EnrollmentChallenge) -> None:
        self._write(
            "store enrollment challenge",
            self.statements.insert_challenge,
            (
                challenge.challenge_id,
                challenge.device_id,
                challenge.ek_public,
                challenge.ek_certificate,
                challenge.ek_not_after,
                challenge.ak_public,
                challenge.ak_name,
                codec.encode_str_map(challenge.labels),
                challenge.secret,
                challenge.expires_at,
                _encode_certs(challenge.ek_intermediates),
            ),
        )

    def take_enrollment_challenge(
        self, challenge_id: str, now: float
    ) -> EnrollmentChallenge | None:
        sql = self.statements.take_challenge
        rows = self._write("take enrollment challenge", sql, (challenge_id, now))
        return _challenge(rows[0]) if rows else None

    # -------------------------------------------------------------- nonces

    def add_nonce(self, nonce: IssuedNonce) -> None:
        self._write(
            "issue nonce",
            self.statements.insert_nonce,
            (
                nonce.nonce,
                nonce.device_id,
                nonce.bank,
                codec.encode_pcr_selection(nonce.pcrs),
                nonce.profile,
                nonce.expires_at,
            ),
        )

    def consume_nonce(self, device_id: str, nonce: bytes, now: float) -> IssuedNonce | None:
        rows = self._write("consume nonce", self.statements.consume_nonce, (nonce, device_id, now))
        if not rows:
            return None
        bank, pcrs, profile, expires_at = rows[0]
        selection = codec.decode_pcr_selection(pcrs, "nonce PCRs")
        return IssuedNonce(nonce, device_id, bank, selection, profile, expires_at)

    # -------------------------------------------------------------- verdicts

    def _insert_verdict(self, run: Run, verdict: Verdict) -> Verdict:
        """Insert the verdict row inside the caller's transaction; the stored verdict."""
        verdict_id = secrets.token_hex(16)
        params = _verdict_params(replace(verdict, verdict_id=verdict_id, supersession=""))
        rows = run(self.statements.insert_verdict, params)
        return replace(verdict, verdict_id=verdict_id, sequence=int(rows[0][0]), supersession="")

    def add_supersession(self, verdict: Verdict, why: str) -> Verdict | None:
        """The stream event "``verdict`` stopped being current because ``why``": a row in the
        verdict sequence repeating the verdict; None when it was already superseded."""
        if not why:
            raise ValueError("a supersession needs its reason")
        when = time.time()
        event = replace(
            verdict, supersession=why, extra={**verdict.extra, SUPERSEDED_AT: f"{when:.6f}"}
        )

        def body(run: Run) -> Verdict | None:
            rows = run(self.statements.insert_supersession, _verdict_params(event))
            if not rows:
                return None
            stored = replace(event, sequence=int(rows[0][0]))
            self._append_locked(run, supersession_entry(stored, why, when))
            return stored

        # the event and its audit log entry in one transaction, in log order
        return self._serialized("store supersession", body)

    def latest_unsuperseded_verdicts(self) -> Sequence[Verdict]:
        """Each device's latest verdict, unless a supersession event for it is stored."""
        rows = self._read("current verdicts", self.statements.latest_unsuperseded, ())
        return [_verdict(row) for row in rows]

    @staticmethod
    def _decode_verdict(row: Row) -> Verdict:
        return _verdict(row)

    def latest_verdict(self, device_id: str) -> Verdict | None:
        rows = self._read("latest verdict", self.statements.device_verdicts, (device_id, 1))
        return _verdict(rows[0]) if rows else None

    def verdict_history(self, device_id: str, limit: int = 50) -> Sequence[Verdict]:
        if limit <= 0:  # SQLite reads a negative LIMIT as "no limit"
            return []
        sql = self.statements.device_verdicts
        return [_verdict(row) for row in self._read("verdict history", sql, (device_id, limit))]

    def verdicts_after(
        self, sequence: int, device_ids: Sequence[str] = (), profile: str = "", limit: int = 500
    ) -> Sequence[Verdict]:
        if limit <= 0:
            return []
        sql = self.statements.verdicts_after[(bool(device_ids), bool(profile))]
        params: list[object] = [sequence]
        if device_ids:
            params.append(self._device_list(device_ids))
        if profile:
            params.append(profile)
        params.append(limit)
        return [_verdict(row) for row in self._read("verdicts after", sql, tuple(params))]

    # -------------------------------------------------------------- evidence and golden sets

    def put_evidence(self, evidence: StoredEvidence) -> None:
        digest, row = self._evidence_row(evidence)
        self._transaction(
            "keep evidence",
            [
                (self.statements.put_evidence_log, (digest, evidence.event_log)),
                (self.statements.put_evidence, row),
            ],
        )

    def _evidence_row(
        self, evidence: StoredEvidence, log_digest: bytes | None = None
    ) -> tuple[bytes, Params]:
        """The event log's digest (``log_digest`` when the caller has it) and the ``evidence``
        row; ``LimitExceeded`` before any write when the evidence is larger than
        ``limits.max_stored_evidence_bytes``."""
        pcrs = codec.encode_pcr_values(evidence.pcrs)
        labels = codec.encode_str_map(evidence.labels)
        size = len(evidence.event_log) + len(pcrs) + len(labels)
        limit = self.limits.max_stored_evidence_bytes
        if size > limit:
            raise LimitExceeded(
                f"evidence of {evidence.device_id} is {size} bytes stored; the limit is {limit}"
            )
        digest = log_digest or hashlib.sha256(evidence.event_log).digest()
        return digest, (
            evidence.device_id,
            evidence.received_at,
            evidence.bank,
            pcrs,
            digest,
            labels,
        )

    def latest_evidence(self, device_id: str) -> StoredEvidence | None:
        rows = self._read("latest evidence", self.statements.select_evidence, (device_id,))
        return _evidence(rows[0]) if rows else None

    def all_latest_evidence(self) -> Sequence[StoredEvidence]:
        rows = self._read("all evidence", self.statements.all_evidence, ())
        return [_evidence(row) for row in rows]

    def golden_set(self, digest: str) -> GoldenSetRecord | None:
        rows = self._read("golden set", self.statements.select_golden, (digest,))
        if not rows:
            return None
        found, loaded_at, files = rows[0]
        return GoldenSetRecord(found, loaded_at, codec.decode_str_map(files, "golden files"))

    # -------------------------------------------------------------- revocations

    def add_revocation(self, record: RevocationRecord) -> RevocationRecord | None:
        """Record a revocation; None when the same subject is already revoked (standing)."""
        rows = self._write(
            "record revocation",
            self.statements.insert_revocation,
            (
                record.kind.value,
                record.subject,
                record.device_id,
                record.reason,
                record.actor,
                record.at,
            ),
        )
        return replace(record, revocation_id=int(rows[0][0])) if rows else None

    def lift_revocation(
        self, kind: RevocationKind, subject: str, actor: str, reason: str, now: float
    ) -> bool:
        params = (now, actor, reason, kind.value, subject)
        return bool(self._write("lift revocation", self.statements.lift_revocation, params))

    def revocations_of(self, device_id: str, ak_name: str) -> Sequence[RevocationRecord]:
        fingerprint = device_id.removeprefix(DEVICE_PREFIX)
        params = (device_id, device_id, fingerprint, device_id, ak_name)
        rows = self._read("revocations of a device", self.statements.revocations_of, params)
        return [_revocation(row) for row in rows]

    def revocations(self, *, include_lifted: bool = False) -> Sequence[RevocationRecord]:
        sql = self.statements.all_revocations if include_lifted else self.statements.revocations
        return [_revocation(row) for row in self._read("revocations", sql, ())]

    # -------------------------------------------------------------- inventory

    def put_inventory(self, entry: InventoryEntry) -> None:
        self._write(
            "list device in inventory",
            self.statements.put_inventory,
            (
                entry.key,
                entry.profile,
                codec.encode_str_map(entry.labels),
                entry.added_by,
                entry.added_at,
            ),
        )

    def remove_inventory(self, key: str) -> bool:
        return bool(self._write("remove inventory entry", self.statements.remove_inventory, (key,)))

    def inventory(self) -> Sequence[InventoryEntry]:
        return [_inventory(row) for row in self._read("inventory", self.statements.inventory, ())]

    def inventory_entry(self, key: str) -> InventoryEntry | None:
        rows = self._read("inventory entry", self.statements.inventory_entry, (key,))
        return _inventory(rows[0]) if rows else None

    # -------------------------------------------------------------- operator changes

    def set_device_profile(self, change: DeviceChange) -> bool:
        """Bind the device to ``change.after`` and record the change, in one transaction."""
        counts = self._transaction(
            "set device profile",
            [
                (self.statements.set_profile, (change.after, change.device_id)),
                (self.statements.insert_change, _change_params(change)),
            ],
        )
        return counts[0] == 1

    def approve_device(self, change: DeviceChange) -> bool:
        """Approve a waiting device with profile ``change.after``; False when none waits.

        Two operators approving the same device at once may both be recorded; the device is
        bound to the profile of the first (the UPDATE only matches a waiting device).
        """
        device = self.get_device(change.device_id)
        if device is None or device.approved:
            return False
        counts = self._transaction(
            "approve device",
            [
                (self.statements.approve_device, (change.after, change.device_id)),
                (self.statements.insert_change, _change_params(change)),
            ],
        )
        return counts[0] == 1

    def device_changes(self, device_id: str) -> Sequence[DeviceChange]:
        rows = self._read("device changes", self.statements.device_changes, (device_id,))
        return [DeviceChange(*row) for row in rows]

    def put_ima_state(self, record: ImaStateRecord) -> None:
        row = (
            record.device_id,
            record.boot_id,
            record.entry_count,
            record.state,
            record.updated_at,
        )
        self._write("keep IMA state", self.statements.put_ima_state, row)

    def ima_state(self, device_id: str) -> ImaStateRecord | None:
        rows = self._read("IMA state", self.statements.select_ima_state, (device_id,))
        if not rows:
            return None
        found, boot, count, state, updated_at = rows[0]
        return ImaStateRecord(str(found), str(boot), int(count), str(state), float(updated_at))

    def purge_expired(self, now: float) -> int:
        """Drop expired nonces and challenges (counted) and event logs that neither the latest
        evidence nor an unpurged attestation refers to."""
        nonces, challenges, _ = self._transaction(
            "purge expired",
            [
                (self.statements.purge_nonces, (now,)),
                (self.statements.purge_challenges, (now,)),
                (self.statements.purge_logs, ()),
            ],
        )
        return nonces + challenges

    # -------------------------------------------------------------- health and coverage

    def supersession_marker(self) -> tuple[int, ...]:
        rows = self._read("supersession marker", self.statements.supersession_marker, ())
        return tuple(int(value) for value in rows[0])

    def ping(self) -> None:
        """One round trip to the database; ``StoreUnavailable`` when it does not answer."""
        self._read("ping", self.statements.ping, ())

    def latest_verdict_counts(self, now: float) -> LatestVerdictCounts:
        """Enrolled devices, and their latest verdicts counted by group (see the SQL)."""
        enrolled = int(self._read("count devices", self.statements.count_devices, ())[0][0])
        rows = self._read("coverage", self.statements.latest_verdict_counts, (now,))
        groups = tuple(
            LatestVerdictGroup(
                status=codec.decode_status(row[0]),
                profile=str(row[1]),
                release=str(row[2]),
                live=bool(row[3]),
                devices=int(row[4]),
            )
            for row in rows
        )
        return LatestVerdictCounts(enrolled, groups)


# ------------------------------------------------------------------ row decoders


def _device(row: Row) -> DeviceRecord:
    return DeviceRecord(
        device_id=row[0],
        ek_public=bytes(row[1]),
        ek_certificate=bytes(row[2]),
        ek_not_after=row[3],
        ak_public=bytes(row[4]),
        ak_name=bytes(row[5]),
        labels=codec.decode_str_map(row[6], "device labels"),
        enrollment_count=row[7],
        enrolled_at=row[8],
        pending_ak_public=bytes(row[9]),
        pending_ak_name=bytes(row[10]),
        profile=row[11],
        approved=bool(row[12]),
        ek_intermediates=_decode_certs(row[13], "device EK intermediates"),
    )


def _challenge(row: Row) -> EnrollmentChallenge:
    return EnrollmentChallenge(
        challenge_id=row[0],
        device_id=row[1],
        ek_public=bytes(row[2]),
        ek_certificate=bytes(row[3]),
        ek_not_after=row[4],
        ak_public=bytes(row[5]),
        ak_name=bytes(row[6]),
        labels=codec.decode_str_map(row[7], "challenge labels"),
        secret=bytes(row[8]),
        expires_at=row[9],
        ek_intermediates=_decode_certs(row[10], "challenge EK intermediates"),
    )


def _verdict(row: Row) -> Verdict:
    return Verdict(
        sequence=row[0],
        verdict_id=row[1],
        device_id=row[2],
        status=codec.decode_status(row[3]),
        reasons=codec.decode_reasons(row[4]),
        profile=row[5],
        release=row[6],
        golden_digest=row[7],
        boot_epoch=BootEpoch(row[8], row[9]),
        issued_at=row[10],
        expires_at=row[11],
        firmware_version=codec.from_i64(row[12]),
        clock=codec.from_i64(row[13]),
        safe=bool(row[14]),
        extra=codec.decode_str_map(row[15], "verdict extra"),
        supersession=row[16],
    )


def _verdict_params(verdict: Verdict) -> Params:
    return (
        verdict.verdict_id,
        verdict.device_id,
        verdict.status.value,
        codec.encode_reasons(verdict.reasons),
        verdict.profile,
        verdict.release,
        verdict.golden_digest,
        verdict.boot_epoch.reset_count,
        verdict.boot_epoch.restart_count,
        verdict.issued_at,
        verdict.expires_at,
        codec.to_i64(verdict.firmware_version, "firmware version"),
        codec.to_i64(verdict.clock, "TPM clock"),
        verdict.safe,  # a bool: SQLite stores 0 or 1, PostgreSQL a BOOLEAN
        codec.encode_str_map(verdict.extra),
        verdict.supersession,
    )


def _encode_certs(certs: Sequence[bytes]) -> str:
    return codec.encode_str_list([cert.hex() for cert in certs])


def _decode_certs(text: str, what: str) -> tuple[bytes, ...]:
    try:
        return tuple(bytes.fromhex(item) for item in codec.decode_str_list(text, what))
    except ValueError as exc:
        raise StoreUnavailable(f"store: damaged {what}") from exc


def _revocation(row: Row) -> RevocationRecord:
    try:
        kind = RevocationKind(row[1])
    except ValueError as exc:
        raise StoreUnavailable(f"store: damaged revocation row (kind {row[1]!r})") from exc
    return RevocationRecord(
        revocation_id=int(row[0]),
        kind=kind,
        subject=row[2],
        device_id=row[3],
        reason=row[4],
        actor=row[5],
        at=row[6],
        lifted_at=row[7],
        lifted_by=row[8],
        lifted_reason=row[9],
    )


def _inventory(row: Row) -> InventoryEntry:
    return InventoryEntry(
        key=row[0],
        profile=row[1],
        labels=codec.decode_str_map(row[2], "inventory labels"),
        added_by=row[3],
        added_at=row[4],
    )


def _change_params(change: DeviceChange) -> Params:
    return (
        change.device_id,
        change.what,
        change.before,
        change.after,
        change.actor,
        change.at,
        change.reason,
    )


def _evidence(row: Row) -> StoredEvidence:
    return StoredEvidence(
        device_id=row[0],
        received_at=row[1],
        bank=row[2],
        pcrs=codec.decode_pcr_values(row[3], "evidence PCRs"),
        event_log=bytes(row[4]),
        labels=codec.decode_str_map(row[5], "evidence labels"),
    )
