"""The shared store: PostgreSQL, for any number of stateless verifier replicas.

The store methods (what is kept, the SQL, row decoding) are ``verifier.store.sql.SqlStore``'s;
this module supplies the PostgreSQL dialect, its connections and the three primitives
``_read``, ``_write`` and ``_transaction``.

Invariants (the contract of ``verifier.store.base``, as for SQLite):
- Single use across replicas: ``take_enrollment_challenge`` and ``consume_nonce`` are each ONE
  conditional ``DELETE ... WHERE key AND owner AND expires_at > now RETURNING``. Under READ
  COMMITTED a second concurrent DELETE of the same row waits for the first to commit, re-checks
  the row, finds it gone and returns nothing: exactly one caller gets it. An expired row
  matches nothing.
- One transaction per call: a single statement in autocommit mode, or ``conn.transaction()``.
- ``add_verdict`` takes a transaction-scoped advisory lock in the inserting statement before the
  identity value is drawn, so identity values are assigned AND committed in the same order: a
  stream reader that has seen sequence n never later finds a verdict below n (a bare identity
  column would not promise that).
- Failures raise ``StoreUnavailable`` naming the operation; a row referring to a missing device
  raises ``UnknownDevice``; evidence over ``limits.max_stored_evidence_bytes`` raises
  ``LimitExceeded`` before anything is written.
- Outages (the server stopped, restarted, or replaced by another at the same address): a call
  fails with ``StoreUnavailable``, never half done and never retried (a write whose commit
  was lost with the connection is not replayed). A broken connection is dropped, and so is
  every other thread's connection opened before the break (``_generation``): after the first
  failure, each thread's next call opens a fresh connection instead of failing once more on
  a dead one. Connecting gives up after ``CONNECT_TIMEOUT`` seconds, so an unreachable server
  cannot hold RPC threads for long.

Connections: one per thread (``threading.local``), autocommit, statements prepared by the
server after first use. psycopg (3.x) is imported only when this backend is opened.
"""

# SQL texts below are composed from module constants only, never from input (S608 is moot):
# ruff: noqa: S608

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from verifier.errors import StoreUnavailable, UnknownDevice
from verifier.limits import DEFAULT_LIMITS, Limits
from verifier.store.auditsql import Run, audit_dialect
from verifier.store.pgschema import SCHEMA_VERSION, VERDICT_LOCK, migrate
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

# One statement (one round trip): the FROM clause takes the lock before the identity value is
# drawn, and the statement's own transaction holds it until it commits. The lock key is a
# module constant, written into the text.
_STATEMENTS = dialect(
    placeholder="%s",
    empty_blob="''::bytea",
    in_devices=" AND device_id = ANY(?)",
    verdict_rows=(
        f"SELECT {marks(VERDICT_PARAMS)}"
        f" FROM (SELECT pg_advisory_xact_lock({VERDICT_LOCK:d})) AS sequence_order"
    ),
    true="TRUE",
    false="FALSE",
)

_AUDIT_STATEMENTS = audit_dialect(
    placeholder="%s",
    in_sequences=" sequence = ANY(?)",
    verdict_columns=VERDICT_COLUMNS,
)
# The audit log's order lock is the verdict sequence lock: one order for both.
_ORDER_LOCK = f"SELECT pg_advisory_xact_lock({VERDICT_LOCK:d})"
T = TypeVar("T")


CONNECT_TIMEOUT = 5  # seconds; libpq's connect_timeout (whole seconds)


def _import_psycopg() -> Any:
    try:
        import psycopg  # type: ignore[import-not-found, unused-ignore]  # noqa: PLC0415
    except ImportError as exc:
        raise StoreUnavailable(
            "the PostgreSQL store needs psycopg 3: pip install 'psycopg[binary]'"
        ) from exc
    return psycopg


def _redact(url: str) -> str:
    """The URL without a password, for messages."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return f"{scheme}{sep}{userinfo.split(':', 1)[0]}:***@{host}"


class PostgresStore(SqlStore[Any]):
    statements = _STATEMENTS
    audit_statements = _AUDIT_STATEMENTS

    def __init__(
        self, url: str, limits: Limits = DEFAULT_LIMITS, *, read_only: bool = False
    ) -> None:
        self._psycopg = _import_psycopg()
        self.url = url
        self._read_only = read_only
        self._generation = 0  # bumped on every broken connection; older connections are dropped
        self._generation_lock = threading.Lock()
        super().__init__(_redact(url), limits)
        conn = self._conn()
        try:
            if read_only:
                row = conn.execute(VERSION_QUERY).fetchone()
                check_schema_current(row, SCHEMA_VERSION, self.where)
            else:
                migrate(conn, self.where)
        except StoreUnavailable:
            self.close()
            raise
        except self._psycopg.Error as exc:
            self.close()
            raise StoreUnavailable(f"store: cannot open {self.where}: {exc}") from exc
        except BaseException:
            self.close()
            raise
        self._opened()

    # -------------------------------------------------------------- connections

    def _conn(self) -> Any:
        """This thread's connection, unless it was opened before a connection broke."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "generation", -1) != self._generation:
            self._forget(conn)
            with contextlib.suppress(Exception):
                conn.close()
        if getattr(self._local, "conn", None) is None:
            self._local.generation = self._generation
        return super()._conn()

    def _connect(self) -> Any:
        try:
            conn = self._psycopg.connect(
                self.url, autocommit=True, prepare_threshold=0, connect_timeout=CONNECT_TIMEOUT
            )
            if self._read_only:  # the server itself refuses every write on this session
                conn.execute("SET default_transaction_read_only = on")
            return conn
        except self._psycopg.Error as exc:
            raise StoreUnavailable(f"store: cannot open {self.where}: {exc}") from exc

    def _drop_if_broken(self, conn: Any) -> None:
        if conn.broken or conn.closed:
            with self._generation_lock:
                self._generation += 1
            self._forget(conn)

    def _forget(self, conn: Any) -> None:
        self._local.conn = None
        with self._registry_lock, contextlib.suppress(ValueError):
            self._connections.remove(conn)

    # -------------------------------------------------------------- statement helpers

    def _fail(self, op: str, conn: Any, exc: Exception) -> Exception:
        self._drop_if_broken(conn)
        if isinstance(exc, self._psycopg.errors.ForeignKeyViolation):
            return UnknownDevice(f"store: {op}: no enrolled device with that id")
        return StoreUnavailable(f"store: {op} failed: {exc}")

    def _read(self, op: str, sql: str, params: Params) -> list[Row]:
        conn = self._conn()
        try:
            cursor = conn.execute(sql, params)
            return list(cursor.fetchall()) if cursor.description is not None else []
        except self._psycopg.Error as exc:
            raise self._fail(op, conn, exc) from exc

    # autocommit: one statement is one transaction, read or write
    _write = _read

    def _transaction(self, op: str, statements: Sequence[tuple[str, Params]]) -> list[int]:
        """Several statements in one transaction; returns each one's row count."""
        conn = self._conn()
        try:
            with conn.transaction():
                counts = [conn.execute(sql, params).rowcount for sql, params in statements]
        except self._psycopg.Error as exc:
            raise self._fail(op, conn, exc) from exc
        return counts

    def _serialized(self, op: str, body: Callable[[Run], T], lock: bool = True) -> T:
        """``body(run)`` in one transaction; with ``lock`` it first takes the advisory lock
        that orders verdicts and log positions across replicas (held until commit)."""
        conn = self._conn()

        def run(sql: str, params: Params) -> list[Row]:
            cursor = conn.execute(sql, params)
            return list(cursor.fetchall()) if cursor.description is not None else []

        try:
            with conn.transaction():
                if lock:
                    conn.execute(_ORDER_LOCK)
                return body(run)
        except self._psycopg.Error as exc:
            raise self._fail(op, conn, exc) from exc

    @staticmethod
    def _device_list(device_ids: Sequence[str]) -> object:
        return [str(device_id) for device_id in device_ids]  # a text[] for ANY

    @staticmethod
    def _sequence_list(sequences: Sequence[int]) -> object:
        return [int(s) for s in sequences]  # a bigint[] for ANY
