"""The embedded store: one SQLite file in WAL mode, shared by threads and by processes.

Invariants (the contract of ``verifier.store.base``):
- Single use across threads and processes: ``take_enrollment_challenge`` and ``consume_nonce``
  are each ONE conditional ``DELETE ... WHERE key AND owner AND expires_at > now RETURNING``.
  SQLite runs one writer at a time, so of any number of concurrent callers exactly one deletes
  the row and gets it back; an expired row matches nothing and is never returned (it stays
  until ``purge_expired``). A nonce asked for by another device matches nothing and stays
  usable by its owner.
- One transaction per call: a single statement in autocommit mode, or ``BEGIN IMMEDIATE`` ...
  ``COMMIT`` when a call needs several; nothing is half written.
- ``add_verdict`` takes its ``sequence`` from an AUTOINCREMENT key under SQLite's single
  writer lock, so sequences are strictly increasing and become visible in order (a reader that
  sees sequence n has every verdict below n).
- Failures raise ``StoreUnavailable`` naming the operation (any ``sqlite3.Error``, a damaged
  row, a closed store); a row that refers to a device that does not exist raises
  ``UnknownDevice``; evidence over ``limits.max_stored_evidence_bytes`` raises
  ``LimitExceeded`` before anything is written.

Order of checks at open: SQLite library version (RETURNING, STRICT) -> open the file ->
WAL mode -> schema migration in one transaction (newer schema refused).

Connections: one per thread (``threading.local``), all in autocommit mode with
synchronous=NORMAL and foreign keys on. Writers of one process take a process-local lock so
they queue on it, not on SQLite's file lock. Another process holding the file's write lock
makes a statement fail with SQLITE_BUSY; it is retried after a short random pause (tens of
microseconds, growing to at most 1 ms) until ``busy_timeout`` seconds have passed. This is
SQLite's busy_timeout with a finer grain: SQLite's own handler sleeps 1, 2, 5, 10 ... ms,
which lets one busy process starve another. A forked child drops the inherited connections
and opens its own.
"""

# SQL texts below are composed from module constants only, never from input (S608 is moot):
# ruff: noqa: S608

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import secrets
import sqlite3
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from verifier.errors import LimitExceeded, StoreUnavailable, UnknownDevice
from verifier.limits import DEFAULT_LIMITS, Limits
from verifier.store import codec
from verifier.store.base import (
    DeviceRecord,
    EnrollmentChallenge,
    GoldenSetRecord,
    IssuedNonce,
    StoredEvidence,
)
from verifier.store.schema import migrate
from verifier.verdict import BootEpoch, Verdict

Row = tuple[Any, ...]
Params = tuple[object, ...]

_MIN_SQLITE = (3, 37, 0)  # STRICT tables (3.37); RETURNING needs 3.35
_DEFAULT_BUSY_TIMEOUT = 5.0  # seconds a statement waits for another process's write lock
_SQLITE_BUSY = 5
_FIRST_PAUSE = 20e-6  # seconds; doubles on each retry up to _LONGEST_PAUSE, with full jitter
_LONGEST_PAUSE = 1e-3

# ------------------------------------------------------------------ SQL (constant strings:
# sqlite3 caches a prepared statement per distinct text)

_DEVICE_COLUMNS = (
    "device_id, ek_public, ek_certificate, ek_not_after, ak_public, ak_name, labels,"
    " enrollment_count, enrolled_at, pending_ak_public, pending_ak_name"
)
_SELECT_DEVICE = f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE device_id = ?"
_LIST_DEVICES = f"SELECT {_DEVICE_COLUMNS} FROM devices ORDER BY device_id"
_INSERT_DEVICE = f"INSERT INTO devices ({_DEVICE_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
_BUMP_ENROLLMENT = (
    "UPDATE devices SET enrollment_count = enrollment_count + 1, labels = ?"
    " WHERE device_id = ? RETURNING enrollment_count"
)
_SET_PENDING_AK = (
    "UPDATE devices SET pending_ak_public = ?, pending_ak_name = ?"
    " WHERE device_id = ? RETURNING device_id"
)
_APPROVE_PENDING_AK = (
    "UPDATE devices SET ak_public = pending_ak_public, ak_name = pending_ak_name,"
    " pending_ak_public = x'', pending_ak_name = x''"
    " WHERE device_id = ? AND length(pending_ak_name) > 0 AND pending_ak_name = ?"
    " RETURNING device_id"
)

_CHALLENGE_COLUMNS = (
    "challenge_id, device_id, ek_public, ek_certificate, ek_not_after, ak_public, ak_name,"
    " labels, secret, expires_at"
)
_INSERT_CHALLENGE = (
    f"INSERT INTO enrollment_challenges ({_CHALLENGE_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)"
)
_TAKE_CHALLENGE = (
    "DELETE FROM enrollment_challenges WHERE challenge_id = ? AND expires_at > ?"
    f" RETURNING {_CHALLENGE_COLUMNS}"
)

_INSERT_NONCE = (
    "INSERT INTO nonces (nonce, device_id, bank, pcrs, profile, expires_at) VALUES (?,?,?,?,?,?)"
)
_CONSUME_NONCE = (
    "DELETE FROM nonces WHERE nonce = ? AND device_id = ? AND expires_at > ?"
    " RETURNING bank, pcrs, profile, expires_at"
)

_VERDICT_COLUMNS = (
    "sequence, verdict_id, device_id, status, reasons, profile, release_name, golden_digest,"
    " reset_count, restart_count, issued_at, expires_at, firmware_version, clock, safe, extra"
)
_INSERT_VERDICT = (
    "INSERT INTO verdicts (verdict_id, device_id, status, reasons, profile, release_name,"
    " golden_digest, reset_count, restart_count, issued_at, expires_at, firmware_version,"
    " clock, safe, extra) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) RETURNING sequence"
)
_DEVICE_VERDICTS = (
    f"SELECT {_VERDICT_COLUMNS} FROM verdicts WHERE device_id = ? ORDER BY sequence DESC LIMIT ?"
)
_AFTER = f"SELECT {_VERDICT_COLUMNS} FROM verdicts WHERE sequence > ?"
_IN_DEVICES = " AND device_id IN (SELECT value FROM json_each(?))"
_OF_PROFILE = " AND profile = ?"
_IN_ORDER = " ORDER BY sequence LIMIT ?"
_VERDICTS_AFTER = {
    (False, False): _AFTER + _IN_ORDER,
    (True, False): _AFTER + _IN_DEVICES + _IN_ORDER,
    (False, True): _AFTER + _OF_PROFILE + _IN_ORDER,
    (True, True): _AFTER + _IN_DEVICES + _OF_PROFILE + _IN_ORDER,
}

_PUT_EVIDENCE_LOG = (
    "INSERT INTO evidence_logs (digest, event_log) VALUES (?,?) ON CONFLICT (digest) DO NOTHING"
)
_PUT_EVIDENCE = (
    "INSERT INTO evidence (device_id, received_at, bank, pcrs, log_digest, labels)"
    " VALUES (?,?,?,?,?,?)"
    " ON CONFLICT (device_id) DO UPDATE SET received_at = excluded.received_at,"
    " bank = excluded.bank, pcrs = excluded.pcrs, log_digest = excluded.log_digest,"
    " labels = excluded.labels WHERE excluded.received_at >= evidence.received_at"
)
_EVIDENCE_JOIN = (
    "SELECT e.device_id, e.received_at, e.bank, e.pcrs, l.event_log, e.labels"
    " FROM evidence AS e JOIN evidence_logs AS l ON l.digest = e.log_digest"
)
_SELECT_EVIDENCE = _EVIDENCE_JOIN + " WHERE e.device_id = ?"
_ALL_EVIDENCE = _EVIDENCE_JOIN + " ORDER BY e.device_id"

_INSERT_GOLDEN = "INSERT INTO golden_sets (digest, loaded_at, files) VALUES (?,?,?)"
_SELECT_GOLDEN = (
    "SELECT digest, loaded_at, files FROM golden_sets WHERE digest = ? ORDER BY id DESC LIMIT 1"
)

_PURGE_NONCES = "DELETE FROM nonces WHERE expires_at <= ?"
_PURGE_CHALLENGES = "DELETE FROM enrollment_challenges WHERE expires_at <= ?"
_PURGE_LOGS = (
    "DELETE FROM evidence_logs WHERE NOT EXISTS"
    " (SELECT 1 FROM evidence WHERE evidence.log_digest = evidence_logs.digest)"
)


# ------------------------------------------------------------------ errors


def _unavailable(op: str, exc: sqlite3.Error) -> StoreUnavailable:
    return StoreUnavailable(f"store: {op} failed: {exc}")


def _integrity(op: str, exc: sqlite3.IntegrityError) -> Exception:
    if "FOREIGN KEY" in str(exc):
        return UnknownDevice(f"store: {op}: no enrolled device with that id")
    return _unavailable(op, exc)


# ------------------------------------------------------------------ fork safety

_STORES: weakref.WeakSet[SqliteStore] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for store in list(_STORES):
        store._forget_connections()


os.register_at_fork(after_in_child=_after_fork_in_child)


# ------------------------------------------------------------------ the store


class SqliteStore:
    def __init__(
        self,
        path: Path | str,
        limits: Limits = DEFAULT_LIMITS,
        busy_timeout: float = _DEFAULT_BUSY_TIMEOUT,
    ) -> None:
        self.path = Path(path)
        self.limits = limits
        self._busy_timeout = busy_timeout
        self._closed = False
        self._forget_connections()
        _check_library()
        self._adopt(self._open_and_migrate())
        _STORES.add(self)

    def _open_and_migrate(self) -> sqlite3.Connection:
        """Connect, switch to WAL and migrate, retrying while another process does the same.

        SQLite reports SQLITE_BUSY without calling its busy handler in some of the lock
        upgrades two processes opening one new file at once can meet, so the whole sequence
        is retried until ``busy_timeout`` runs out.
        """
        deadline = time.monotonic() + self._busy_timeout
        while True:
            conn = self._connect(sqlite_busy_timeout=self._busy_timeout)
            try:
                if _try_enable_wal(conn) or time.monotonic() >= deadline:
                    _enable_wal(conn, self.path)  # raises when WAL is still refused
                    migrate(conn, str(self.path))
                    conn.execute("PRAGMA busy_timeout = 0")  # from now on: _execute retries
                    return conn
            except sqlite3.OperationalError as exc:
                busy = exc.sqlite_errorcode & 0xFF == _SQLITE_BUSY
                if not busy or time.monotonic() >= deadline:
                    conn.close()
                    raise StoreUnavailable(f"store: cannot open {self.path}: {exc}") from exc
            except sqlite3.Error as exc:
                conn.close()
                raise StoreUnavailable(f"store: cannot open {self.path}: {exc}") from exc
            except BaseException:
                conn.close()
                raise
            conn.close()  # another process holds the lock: try again shortly
            time.sleep(_LONGEST_PAUSE * random.random())

    # -------------------------------------------------------------- connections

    def _forget_connections(self) -> None:
        """Start with no connections (at init, and in a forked child: never reuse the parent's)."""
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._registry_lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []

    def _connect(self, sqlite_busy_timeout: float = 0.0) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=sqlite_busy_timeout,
                isolation_level=None,  # autocommit: transactions are explicit
                check_same_thread=False,  # close() may run on another thread
                cached_statements=64,
            )
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"store: cannot open {self.path}: {exc}") from exc
        try:
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as exc:
            conn.close()
            raise StoreUnavailable(f"store: cannot open {self.path}: {exc}") from exc
        return conn

    def _adopt(self, conn: sqlite3.Connection) -> None:
        with self._registry_lock:
            self._connections.append(conn)
        self._local.conn = conn

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        if self._closed:
            raise StoreUnavailable(f"store: {self.path} is closed")
        conn = self._connect()
        self._adopt(conn)
        return conn

    def close(self) -> None:
        self._closed = True
        with self._registry_lock:
            connections, self._connections = self._connections, []
        self._local = threading.local()
        for conn in connections:
            with contextlib.suppress(sqlite3.Error):  # best effort; the file stays consistent
                conn.close()

    # -------------------------------------------------------------- statement helpers

    def _execute(self, conn: sqlite3.Connection, sql: str, params: Params) -> list[Row]:
        """Run one statement to completion, retrying while another process holds the lock."""
        deadline = 0.0
        pause = _FIRST_PAUSE
        while True:
            try:
                return conn.execute(sql, params).fetchall()
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode & 0xFF != _SQLITE_BUSY:
                    raise
                now = time.monotonic()
                if not deadline:
                    deadline = now + self._busy_timeout
                elif now >= deadline:
                    raise
            time.sleep(pause * random.random())
            pause = min(pause * 2, _LONGEST_PAUSE)

    def _read(self, op: str, sql: str, params: Params) -> list[Row]:
        try:
            return self._execute(self._conn(), sql, params)
        except sqlite3.Error as exc:
            raise _unavailable(op, exc) from exc

    def _write(self, op: str, sql: str, params: Params) -> list[Row]:
        """One statement, one (autocommit) transaction; RETURNING rows are fetched in full."""
        conn = self._conn()
        try:
            with self._write_lock:
                return self._execute(conn, sql, params)
        except sqlite3.IntegrityError as exc:
            raise _integrity(op, exc) from exc
        except sqlite3.Error as exc:
            raise _unavailable(op, exc) from exc

    def _transaction(self, op: str, statements: Sequence[tuple[str, Params]]) -> list[int]:
        """Several statements in one ``BEGIN IMMEDIATE`` transaction; returns row counts."""
        conn = self._conn()
        try:
            with self._write_lock:
                self._execute(conn, "BEGIN IMMEDIATE", ())
                try:
                    counts = [conn.execute(sql, params).rowcount for sql, params in statements]
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
        except sqlite3.IntegrityError as exc:
            raise _integrity(op, exc) from exc
        except sqlite3.Error as exc:
            raise _unavailable(op, exc) from exc
        return counts

    # -------------------------------------------------------------- devices and enrollment

    def get_device(self, device_id: str) -> DeviceRecord | None:
        rows = self._read("get device", _SELECT_DEVICE, (device_id,))
        return _device(rows[0]) if rows else None

    def list_devices(self) -> Sequence[DeviceRecord]:
        return [_device(row) for row in self._read("list devices", _LIST_DEVICES, ())]

    def insert_device(self, device: DeviceRecord) -> None:
        self._write(
            "insert device",
            _INSERT_DEVICE,
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
        rows = self._write(
            "count enrollment", _BUMP_ENROLLMENT, (codec.encode_str_map(labels), device_id)
        )
        if not rows:
            raise UnknownDevice(f"store: count enrollment: no enrolled device {device_id}")
        return int(rows[0][0])

    def set_pending_ak(self, device_id: str, ak_public: bytes, ak_name: bytes) -> None:
        rows = self._write("park new AK", _SET_PENDING_AK, (ak_public, ak_name, device_id))
        if not rows:
            raise UnknownDevice(f"store: park new AK: no enrolled device {device_id}")

    def approve_pending_ak(self, device_id: str, ak_name: bytes) -> bool:
        return bool(self._write("approve AK", _APPROVE_PENDING_AK, (device_id, ak_name)))

    def put_enrollment_challenge(self, challenge: EnrollmentChallenge) -> None:
        self._write(
            "store enrollment challenge",
            _INSERT_CHALLENGE,
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
        rows = self._write("take enrollment challenge", _TAKE_CHALLENGE, (challenge_id, now))
        return _challenge(rows[0]) if rows else None

    # -------------------------------------------------------------- nonces

    def add_nonce(self, nonce: IssuedNonce) -> None:
        self._write(
            "issue nonce",
            _INSERT_NONCE,
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
        rows = self._write("consume nonce", _CONSUME_NONCE, (nonce, device_id, now))
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
            _INSERT_VERDICT,
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
                int(verdict.safe),
                codec.encode_str_map(verdict.extra),
            ),
        )
        return replace(verdict, verdict_id=verdict_id, sequence=int(rows[0][0]))

    def latest_verdict(self, device_id: str) -> Verdict | None:
        rows = self._read("latest verdict", _DEVICE_VERDICTS, (device_id, 1))
        return _verdict(rows[0]) if rows else None

    def verdict_history(self, device_id: str, limit: int = 50) -> Sequence[Verdict]:
        if limit <= 0:  # SQLite reads a negative LIMIT as "no limit"
            return []
        rows = self._read("verdict history", _DEVICE_VERDICTS, (device_id, limit))
        return [_verdict(row) for row in rows]

    def verdicts_after(
        self, sequence: int, device_ids: Sequence[str] = (), profile: str = "", limit: int = 500
    ) -> Sequence[Verdict]:
        if limit <= 0:
            return []
        sql = _VERDICTS_AFTER[(bool(device_ids), bool(profile))]
        params: list[object] = [sequence]
        if device_ids:
            params.append(codec.encode_str_list(device_ids))
        if profile:
            params.append(profile)
        params.append(limit)
        rows = self._read("verdicts after", sql, tuple(params))
        return [_verdict(row) for row in rows]

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
        self._transaction(
            "keep evidence",
            [
                (_PUT_EVIDENCE_LOG, (digest, evidence.event_log)),
                (
                    _PUT_EVIDENCE,
                    (evidence.device_id, evidence.received_at, evidence.bank, pcrs, digest, labels),
                ),
            ],
        )

    def latest_evidence(self, device_id: str) -> StoredEvidence | None:
        rows = self._read("latest evidence", _SELECT_EVIDENCE, (device_id,))
        return _evidence(rows[0]) if rows else None

    def all_latest_evidence(self) -> Sequence[StoredEvidence]:
        return [_evidence(row) for row in self._read("all evidence", _ALL_EVIDENCE, ())]

    def record_golden_set(self, record: GoldenSetRecord) -> None:
        self._write(
            "record golden set",
            _INSERT_GOLDEN,
            (record.digest, record.loaded_at, codec.encode_str_map(record.files)),
        )

    def golden_set(self, digest: str) -> GoldenSetRecord | None:
        rows = self._read("golden set", _SELECT_GOLDEN, (digest,))
        if not rows:
            return None
        found, loaded_at, files = rows[0]
        return GoldenSetRecord(found, loaded_at, codec.decode_str_map(files, "golden files"))

    def purge_expired(self, now: float) -> int:
        """Drop expired nonces and challenges (counted) and event logs no evidence refers to."""
        nonces, challenges, _ = self._transaction(
            "purge expired",
            [(_PURGE_NONCES, (now,)), (_PURGE_CHALLENGES, (now,)), (_PURGE_LOGS, ())],
        )
        return nonces + challenges


# ------------------------------------------------------------------ open-time checks


def _check_library() -> None:
    if sqlite3.sqlite_version_info < _MIN_SQLITE:
        need = ".".join(map(str, _MIN_SQLITE))
        raise StoreUnavailable(
            f"store: SQLite {sqlite3.sqlite_version} is too old; the store needs {need} or newer"
        )


def _try_enable_wal(conn: sqlite3.Connection) -> bool:
    """Ask for WAL; False when the mode did not change (another opener holds the lock)."""
    row = conn.execute("PRAGMA journal_mode = WAL").fetchone()
    return bool(row) and str(row[0]).lower() == "wal"


def _enable_wal(conn: sqlite3.Connection, path: Path) -> None:
    """WAL is a property of the file: set once, then every connection uses it."""
    row = conn.execute("PRAGMA journal_mode = WAL").fetchone()
    mode = str(row[0]).lower() if row else ""
    if mode != "wal":
        raise StoreUnavailable(
            f"store: {path} cannot use WAL mode (journal mode stays {mode!r}); put it on a "
            "local file system"
        )


# ------------------------------------------------------------------ row decoders


def _device(row: Row) -> DeviceRecord:
    return DeviceRecord(
        device_id=row[0],
        ek_public=row[1],
        ek_certificate=row[2],
        ek_not_after=row[3],
        ak_public=row[4],
        ak_name=row[5],
        labels=codec.decode_str_map(row[6], "device labels"),
        enrollment_count=row[7],
        enrolled_at=row[8],
        pending_ak_public=row[9],
        pending_ak_name=row[10],
    )


def _challenge(row: Row) -> EnrollmentChallenge:
    return EnrollmentChallenge(
        challenge_id=row[0],
        device_id=row[1],
        ek_public=row[2],
        ek_certificate=row[3],
        ek_not_after=row[4],
        ak_public=row[5],
        ak_name=row[6],
        labels=codec.decode_str_map(row[7], "challenge labels"),
        secret=row[8],
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
        event_log=row[4],
        labels=codec.decode_str_map(row[5], "evidence labels"),
    )
