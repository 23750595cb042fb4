"""The SQLite schema: an ordered list of migrations and the one function that applies them.

Invariants:
- ``MIGRATIONS[n]`` takes a database from version ``n`` to ``n + 1``; a migration is never
  edited once released, only appended to. ``SCHEMA_VERSION`` is their count.
- ``migrate`` runs at open, inside one ``BEGIN IMMEDIATE`` transaction: all pending migrations
  and the new version are committed together or not at all, and two processes opening the
  same new file at once cannot both migrate it.
- A database whose version is newer than ``SCHEMA_VERSION`` is refused (``StoreUnavailable``)
  before anything is written: an older verifier must not write rows a newer one cannot trust
  (the check is ``verifier.store.sql.pending_migrations``, shared with PostgreSQL).

Tables are STRICT (SQLite checks every column's type on write), so a row read back has the
types the decoders expect. ``nonces`` is WITHOUT ROWID (small rows, looked up and deleted by
primary key only). Event logs are stored once per content (``evidence_logs``, keyed by
SHA-256): a device re-attesting the same boot, and a fleet of identical devices, share one
copy; ``purge_expired`` drops logs no evidence refers to any more. Verdict sequences use
AUTOINCREMENT, so a sequence is never reused even if the newest verdict were deleted.
"""

from __future__ import annotations

import itertools
import sqlite3

from verifier.store.sql import VERSION_QUERY, pending_migrations

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # 1: the initial schema
        """CREATE TABLE devices (
            device_id TEXT PRIMARY KEY,
            ek_public BLOB NOT NULL,
            ek_certificate BLOB NOT NULL,
            ek_not_after REAL,
            ak_public BLOB NOT NULL,
            ak_name BLOB NOT NULL,
            labels TEXT NOT NULL,
            enrollment_count INTEGER NOT NULL CHECK (enrollment_count >= 1),
            enrolled_at REAL NOT NULL,
            pending_ak_public BLOB NOT NULL DEFAULT x'',
            pending_ak_name BLOB NOT NULL DEFAULT x''
        ) STRICT""",
        """CREATE TABLE enrollment_challenges (
            challenge_id TEXT PRIMARY KEY,
            device_id TEXT NOT NULL,
            ek_public BLOB NOT NULL,
            ek_certificate BLOB NOT NULL,
            ek_not_after REAL,
            ak_public BLOB NOT NULL,
            ak_name BLOB NOT NULL,
            labels TEXT NOT NULL,
            secret BLOB NOT NULL,
            expires_at REAL NOT NULL
        ) STRICT""",
        "CREATE INDEX enrollment_challenges_by_expiry ON enrollment_challenges (expires_at)",
        """CREATE TABLE nonces (
            nonce BLOB PRIMARY KEY,
            device_id TEXT NOT NULL REFERENCES devices (device_id),
            bank TEXT NOT NULL,
            pcrs TEXT NOT NULL,
            profile TEXT NOT NULL,
            expires_at REAL NOT NULL
        ) STRICT, WITHOUT ROWID""",
        """CREATE TABLE verdicts (
            sequence INTEGER PRIMARY KEY AUTOINCREMENT,
            verdict_id TEXT NOT NULL,
            device_id TEXT NOT NULL REFERENCES devices (device_id),
            status TEXT NOT NULL
                CHECK (status IN ('affirming', 'warning', 'contraindicated')),
            reasons TEXT NOT NULL,
            profile TEXT NOT NULL,
            release_name TEXT NOT NULL,
            golden_digest TEXT NOT NULL,
            reset_count INTEGER NOT NULL,
            restart_count INTEGER NOT NULL,
            issued_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            firmware_version INTEGER NOT NULL,
            clock INTEGER NOT NULL,
            safe INTEGER NOT NULL CHECK (safe IN (0, 1)),
            extra TEXT NOT NULL
        ) STRICT""",
        "CREATE INDEX verdicts_by_device ON verdicts (device_id, sequence)",
        """CREATE TABLE evidence_logs (
            digest BLOB PRIMARY KEY,
            event_log BLOB NOT NULL
        ) STRICT""",
        """CREATE TABLE evidence (
            device_id TEXT PRIMARY KEY REFERENCES devices (device_id),
            received_at REAL NOT NULL,
            bank TEXT NOT NULL,
            pcrs TEXT NOT NULL,
            log_digest BLOB NOT NULL REFERENCES evidence_logs (digest),
            labels TEXT NOT NULL
        ) STRICT""",
        "CREATE INDEX evidence_by_log ON evidence (log_digest)",
        """CREATE TABLE golden_sets (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            digest TEXT NOT NULL,
            loaded_at REAL NOT NULL,
            files TEXT NOT NULL
        ) STRICT""",
        "CREATE INDEX golden_sets_by_digest ON golden_sets (digest, id)",
    ),
    (  # 2: IMA incremental state, one row per device (its latest boot)
        """CREATE TABLE ima_states (
            device_id TEXT PRIMARY KEY REFERENCES devices (device_id),
            boot_id TEXT NOT NULL,
            entry_count INTEGER NOT NULL CHECK (entry_count >= 0),
            state TEXT NOT NULL,
            updated_at REAL NOT NULL
        ) STRICT""",
    ),
)

SCHEMA_VERSION = len(MIGRATIONS)

_VERSION_TABLE = """CREATE TABLE IF NOT EXISTS schema_version (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
) STRICT"""


def migrate(conn: sqlite3.Connection, where: str) -> int:
    """Bring the database on ``conn`` (autocommit mode) to ``SCHEMA_VERSION``; returns it.

    Raises ``StoreUnavailable`` for a newer schema; ``sqlite3.Error`` propagates (the caller
    names the operation). Either way the transaction is rolled back.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(_VERSION_TABLE)
        row = conn.execute(VERSION_QUERY).fetchone()
        pending = pending_migrations(row, MIGRATIONS, where)
        for statement in itertools.chain.from_iterable(pending):
            conn.execute(statement)
        if pending:
            conn.execute(
                "INSERT OR REPLACE INTO schema_version (id, version) VALUES (1, ?)",
                (SCHEMA_VERSION,),
            )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return SCHEMA_VERSION
