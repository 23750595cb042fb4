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
import weakref
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from verifier.errors import LimitExceeded, StoreUnavailable, UnknownDevice
from verifier.limits import Limits
from verifier.store import codec
from verifier.store.base import (
    DeviceRecord,
    EnrollmentChallenge,
    GoldenSetRecord,
    ImaStateRecord,
    IssuedNonce,
    StoredEvidence,
)
from verifier.verdict import BootEpoch, Verdict

Row = tuple[Any, ...]
Params = tuple[object, ...]


class _Connection(Protocol):
    def close(self) -> None: ...


Conn = TypeVar("Conn", bound=_Connection)

# ------------------------------------------------------------------ SQL, written once

_DEVICE_COLUMNS = (
    "device_id, ek_public, ek_certificate, ek_not_after, ak_public, ak_name, labels,"
    " enrollment_count, enrolled_at, pending_ak_public, pending_ak_name"
)
_CHALLENGE_COLUMNS = (
    "challenge_id, device_id, ek_public, ek_certificate, ek_not_after, ak_public, ak_name,"
    " labels, secret, expires_at"
)
_VERDICT_COLUMNS = (
    "sequence, verdict_id, device_id, status, reasons, profile, release_name, golden_digest,"
    " reset_count, restart_count, issued_at, expires_at, firmware_version, clock, safe, extra"
)
_INSERT_VERDICT = (
    "INSERT INTO verdicts (verdict_id, device_id, status, reasons, profile, release_name,"
    " golden_digest, reset_count, restart_count, issued_at, expires_at, firmware_version,"
    " clock, safe, extra) {rows} RETURNING sequence"
)
VERDICT_PARAMS = 15  # parameters of the verdict insert, in the order above
_AFTER = f"SELECT {_VERDICT_COLUMNS} FROM verdicts WHERE sequence > ?"
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
    device_verdicts: str
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
    put_ima_state: str
    select_ima_state: str


def dialect(placeholder: str, empty_blob: str, in_devices: str, verdict_rows: str) -> Statements:
    """The statements with ``placeholder`` for ``?``.

    ``empty_blob`` is the literal of an empty blob, ``in_devices`` the condition "device_id is
    in the list given as one parameter" (``AND ...``), ``verdict_rows`` the row source of the
    verdict insert (``VALUES (...)`` or a ``SELECT``) taking ``VERDICT_PARAMS`` parameters.
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
        insert_device=q(f"INSERT INTO devices ({_DEVICE_COLUMNS}) VALUES ({marks(11)})"),
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
            f"INSERT INTO enrollment_challenges ({_CHALLENGE_COLUMNS}) VALUES ({marks(10)})"
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
        insert_verdict=q(_INSERT_VERDICT.format(rows=verdict_rows)),
        device_verdicts=q(
            f"SELECT {_VERDICT_COLUMNS} FROM verdicts WHERE device_id = ?"
            " ORDER BY sequence DESC LIMIT ?"
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
        ),
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


class SqlStore(ABC, Generic[Conn]):
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

    def add_verdict(self, verdict: Verdict) -> Verdict:
        verdict_id = secrets.token_hex(16)
        rows = self._write(
            "store verdict",
            self.statements.insert_verdict,
            (
                verdict_id,
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
            ),
        )
        return replace(verdict, verdict_id=verdict_id, sequence=int(rows[0][0]))

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
        pcrs = codec.encode_pcr_values(evidence.pcrs)
        labels = codec.encode_str_map(evidence.labels)
        size = len(evidence.event_log) + len(pcrs) + len(labels)
        limit = self.limits.max_stored_evidence_bytes
        if size > limit:
            raise LimitExceeded(
                f"evidence of {evidence.device_id} is {size} bytes stored; the limit is {limit}"
            )
        digest = hashlib.sha256(evidence.event_log).digest()
        row = (evidence.device_id, evidence.received_at, evidence.bank, pcrs, digest, labels)
        self._transaction(
            "keep evidence",
            [
                (self.statements.put_evidence_log, (digest, evidence.event_log)),
                (self.statements.put_evidence, row),
            ],
        )

    def latest_evidence(self, device_id: str) -> StoredEvidence | None:
        rows = self._read("latest evidence", self.statements.select_evidence, (device_id,))
        return _evidence(rows[0]) if rows else None

    def all_latest_evidence(self) -> Sequence[StoredEvidence]:
        rows = self._read("all evidence", self.statements.all_evidence, ())
        return [_evidence(row) for row in rows]

    def record_golden_set(self, record: GoldenSetRecord) -> None:
        self._write(
            "record golden set",
            self.statements.insert_golden,
            (record.digest, record.loaded_at, codec.encode_str_map(record.files)),
        )

    def golden_set(self, digest: str) -> GoldenSetRecord | None:
        rows = self._read("golden set", self.statements.select_golden, (digest,))
        if not rows:
            return None
        found, loaded_at, files = rows[0]
        return GoldenSetRecord(found, loaded_at, codec.decode_str_map(files, "golden files"))

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
        """Drop expired nonces and challenges (counted) and event logs no evidence refers to."""
        nonces, challenges, _ = self._transaction(
            "purge expired",
            [
                (self.statements.purge_nonces, (now,)),
                (self.statements.purge_challenges, (now,)),
                (self.statements.purge_logs, ()),
            ],
        )
        return nonces + challenges


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
