"""The embedded store: one SQLite file in WAL mode, shared by threads and by processes.

The store methods (what is kept, the SQL, row decoding) are ``verifier.store.sql.SqlStore``'s;
this module supplies the SQLite dialect, its connections and the three primitives ``_read``,
``_write`` and ``_transaction``.

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

Headroom (``verifier.store.headroom``): every write first checks that the database's file
system keeps ``reserve_bytes`` free and is refused with ``StoreUnavailable`` ("disk nearly
full") below it; reads are never refused for space. The WAL is bounded (automatic checkpoints,
``journal_size_limit``; ``checkpoint`` for the serve loop). A connection whose statement failed
with a full disk or an I/O error is closed and forgotten: the thread's next call opens a new one,
so when space returns the next write succeeds without a restart.
"""

from __future__ import annotations

import contextlib
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from verifier.errors import StoreUnavailable, UnknownDevice
from verifier.limits import DEFAULT_LIMITS, Limits
from verifier.store import codec
from verifier.store.auditsql import Run, audit_dialect
from verifier.store.headroom import DEFAULT_RESERVE_BYTES, WAL_PRAGMAS, DiskReserve, is_disk_fault
from verifier.store.schema import SCHEMA_VERSION, migrate
from verifier.store.sql import (
    VERDICT_COLUMNS,
    VERDICT_PARAMS,
    VERSION_QUERY,
    Params,
    Row,
    SqlStore,
    check_schema_current,
    dialect,
    marks,
)

_MIN_SQLITE = (3, 37, 0)  # STRICT tables (3.37); RETURNING needs 3.35
_DEFAULT_BUSY_TIMEOUT = 5.0  # seconds a statement waits for another process's write lock
_SQLITE_BUSY = 5
_FIRST_PAUSE = 20e-6  # seconds; doubles on each retry up to _LONGEST_PAUSE, with full jitter
_LONGEST_PAUSE = 1e-3

_STATEMENTS = dialect(
    placeholder="?",
    empty_blob="x''",
    in_devices=" AND device_id IN (SELECT value FROM json_each(?))",
    verdict_rows=f"VALUES ({marks(VERDICT_PARAMS)})",
)

_AUDIT_STATEMENTS = audit_dialect(
    placeholder="?",
    in_sequences=" sequence IN (SELECT value FROM json_each(?))",
    verdict_columns=VERDICT_COLUMNS,
)
T = TypeVar("T")

# ------------------------------------------------------------------ errors


def _unavailable(op: str, exc: sqlite3.Error) -> StoreUnavailable:
    return StoreUnavailable(f"store: {op} failed: {exc}")


def _integrity(op: str, exc: sqlite3.IntegrityError) -> Exception:
    if "FOREIGN KEY" in str(exc):
        return UnknownDevice(f"store: {op}: no enrolled device with that id")
    return _unavailable(op, exc)


# ------------------------------------------------------------------ the store


class SqliteStore(SqlStore[sqlite3.Connection]):
    statements = _STATEMENTS
    audit_statements = _AUDIT_STATEMENTS

    def __init__(
        self,
        path: Path | str,
        limits: Limits = DEFAULT_LIMITS,
        busy_timeout: float = _DEFAULT_BUSY_TIMEOUT,
        *,
        read_only: bool = False,
        reserve_bytes: int = DEFAULT_RESERVE_BYTES,
    ) -> None:
        self.path = Path(path)
        self._busy_timeout = busy_timeout
        self._read_only = read_only
        self.reserve = DiskReserve(self.path.absolute().parent, reserve_bytes)
        super().__init__(str(self.path), limits)
        _check_library()
        self._adopt(self._open_read_only() if read_only else self._open_and_migrate())
        self._opened()

    def _open_read_only(self) -> sqlite3.Connection:
        """An existing database at the current schema, opened so that nothing can be written.

        A missing file is an error (a typo must not create an empty database), and so is an
        older or newer schema (a read-only open never migrates).
        """
        if not self.path.is_file():
            raise StoreUnavailable(f"store: no database at {self.path}")
        conn = self._connect()
        try:
            row = conn.execute(VERSION_QUERY).fetchone()
        except sqlite3.Error as exc:
            conn.close()
            raise StoreUnavailable(f"store: {self.path} is not a fleet-attest database") from exc
        try:
            check_schema_current(row, SCHEMA_VERSION, str(self.path))
        except StoreUnavailable:
            conn.close()
            raise
        return conn

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
        """No connections, and a fresh write lock (a forked child's is never held)."""
        super()._forget_connections()
        self._write_lock = threading.Lock()

    def _connect(self, sqlite_busy_timeout: float = 0.0) -> sqlite3.Connection:
        target = f"{self.path.resolve().as_uri()}?mode=ro" if self._read_only else str(self.path)
        try:
            conn = sqlite3.connect(
                target,
                uri=self._read_only,
                timeout=sqlite_busy_timeout,
                isolation_level=None,  # autocommit: transactions are explicit
                check_same_thread=False,  # close() may run on another thread
                cached_statements=64,
            )
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"store: cannot open {self.path}: {exc}") from exc
        try:
            if not self._read_only:
                conn.execute("PRAGMA synchronous = NORMAL")
                for pragma in WAL_PRAGMAS:
                    conn.execute(pragma)
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as exc:
            conn.close()
            raise StoreUnavailable(f"store: cannot open {self.path}: {exc}") from exc
        return conn

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
        conn = self._conn()
        try:
            return self._execute(conn, sql, params)
        except sqlite3.Error as exc:
            self._drop_after(conn, exc)
            raise _unavailable(op, exc) from exc

    def _write(self, op: str, sql: str, params: Params) -> list[Row]:
        """One statement, one (autocommit) transaction; RETURNING rows are fetched in full."""
        self.reserve.check(op)
        conn = self._conn()
        try:
            with self._write_lock:
                return self._execute(conn, sql, params)
        except sqlite3.IntegrityError as exc:
            raise _integrity(op, exc) from exc
        except sqlite3.Error as exc:
            self._drop_after(conn, exc)
            raise _unavailable(op, exc) from exc

    def _transaction(self, op: str, statements: Sequence[tuple[str, Params]]) -> list[int]:
        """Several statements in one ``BEGIN IMMEDIATE`` transaction; returns row counts.

        A transaction that cannot be rolled back (the disk is full) is never left open on a
        kept connection: it would hold the write lock of every process.
        """
        self.reserve.check(op)
        conn = self._conn()
        try:
            with self._write_lock:
                self._execute(conn, "BEGIN IMMEDIATE", ())
                try:
                    counts = [conn.execute(sql, params).rowcount for sql, params in statements]
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        with contextlib.suppress(sqlite3.Error):
                            conn.execute("ROLLBACK")
                    if conn.in_transaction:
                        self._drop(conn)  # closing it rolls back
                    raise
        except sqlite3.IntegrityError as exc:
            raise _integrity(op, exc) from exc
        except sqlite3.Error as exc:
            self._drop_after(conn, exc)
            raise _unavailable(op, exc) from exc
        return counts

    def _serialized(self, op: str, body: Callable[[Run], T], lock: bool = True) -> T:
        """``body(run)`` in one ``BEGIN IMMEDIATE`` transaction: SQLite's single writer lock
        serializes it against every other writer, of any process (``lock`` is always held).
        Disk faults are handled as in ``_transaction``."""
        self.reserve.check(op)
        conn = self._conn()

        def run(sql: str, params: Params) -> list[Row]:
            return conn.execute(sql, params).fetchall()

        try:
            with self._write_lock:
                self._execute(conn, "BEGIN IMMEDIATE", ())
                try:
                    result = body(run)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        with contextlib.suppress(sqlite3.Error):
                            conn.execute("ROLLBACK")
                    if conn.in_transaction:
                        self._drop(conn)  # closing it rolls back
                    raise
        except sqlite3.IntegrityError as exc:
            raise _integrity(op, exc) from exc
        except sqlite3.Error as exc:
            self._drop_after(conn, exc)
            raise _unavailable(op, exc) from exc
        return result

    # -------------------------------------------------------------- faults and checkpoints

    def _drop_after(self, conn: sqlite3.Connection, exc: sqlite3.Error) -> None:
        if is_disk_fault(exc):
            self._drop(conn)

    def _drop(self, conn: sqlite3.Connection) -> None:
        """Close ``conn`` and forget it; the calling thread's next call opens a new one."""
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None
        with self._registry_lock, contextlib.suppress(ValueError):
            self._connections.remove(conn)
        with contextlib.suppress(sqlite3.Error):
            conn.close()

    def checkpoint(self, mode: str = "PASSIVE") -> tuple[int, int, int]:
        """Run a WAL checkpoint: ``PASSIVE`` (never waits) or ``TRUNCATE`` (waits for readers
        up to ``busy_timeout``, then empties the WAL file). Returns SQLite's (busy, WAL
        frames, frames checkpointed); busy 1 means readers kept it from finishing."""
        if mode not in ("PASSIVE", "TRUNCATE"):
            raise ValueError(f"checkpoint mode {mode!r}: PASSIVE or TRUNCATE")
        conn = self._conn()
        try:
            with self._write_lock:
                rows = self._execute(conn, f"PRAGMA wal_checkpoint({mode})", ())
        except sqlite3.Error as exc:
            self._drop_after(conn, exc)
            raise _unavailable(f"checkpoint ({mode})", exc) from exc
        busy, frames, done = rows[0] if rows else (1, -1, -1)
        return int(busy), int(frames), int(done)

    @staticmethod
    def _device_list(device_ids: Sequence[str]) -> object:
        return codec.encode_str_list(device_ids)  # a JSON array for json_each

    @staticmethod
    def _sequence_list(sequences: Sequence[int]) -> object:
        return "[" + ",".join(str(int(s)) for s in sequences) + "]"


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
