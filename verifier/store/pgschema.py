"""The PostgreSQL schema: an ordered list of migrations and the one function that applies them.

Invariants (as for SQLite, ``verifier.store.schema``):
- ``MIGRATIONS[n]`` takes a database from version ``n`` to ``n + 1``; released migrations are
  only appended to. ``SCHEMA_VERSION`` is their count and matches the SQLite schema's.
- ``migrate`` runs at open in one transaction that first takes a transaction-scoped advisory
  lock, so replicas starting together migrate once; a newer schema is refused
  (``StoreUnavailable``, by ``verifier.store.sql.pending_migrations``) before anything is
  written.

Tables live in the connection's ``search_path`` schema (``public`` unless the URL says
otherwise). The columns mirror the SQLite schema: POSIX seconds as DOUBLE PRECISION, JSON as
TEXT (encoded by ``verifier.store.codec``), unsigned 64-bit counters in BIGINT.
"""

from __future__ import annotations

import itertools
from typing import Any

from verifier.store.sql import VERSION_QUERY, pending_migrations

MIGRATION_LOCK = 0x6661_7474_0001  # pg_advisory_xact_lock key: schema migration
VERDICT_LOCK = 0x6661_7474_0002  # pg_advisory_xact_lock key: verdict sequence order

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # 1: the initial schema
        """CREATE TABLE devices (
            device_id TEXT PRIMARY KEY,
            ek_public BYTEA NOT NULL,
            ek_certificate BYTEA NOT NULL,
            ek_not_after DOUBLE PRECISION,
            ak_public BYTEA NOT NULL,
            ak_name BYTEA NOT NULL,
            labels TEXT NOT NULL,
            enrollment_count BIGINT NOT NULL CHECK (enrollment_count >= 1),
            enrolled_at DOUBLE PRECISION NOT NULL,
            pending_ak_public BYTEA NOT NULL DEFAULT ''::bytea,
            pending_ak_name BYTEA NOT NULL DEFAULT ''::bytea
        )""",
        """CREATE TABLE enrollment_challenges (
            challenge_id TEXT PRIMARY KEY,
            device_id TEXT NOT NULL,
            ek_public BYTEA NOT NULL,
            ek_certificate BYTEA NOT NULL,
            ek_not_after DOUBLE PRECISION,
            ak_public BYTEA NOT NULL,
            ak_name BYTEA NOT NULL,
            labels TEXT NOT NULL,
            secret BYTEA NOT NULL,
            expires_at DOUBLE PRECISION NOT NULL
        )""",
        "CREATE INDEX enrollment_challenges_by_expiry ON enrollment_challenges (expires_at)",
        """CREATE TABLE nonces (
            nonce BYTEA PRIMARY KEY,
            device_id TEXT NOT NULL REFERENCES devices (device_id),
            bank TEXT NOT NULL,
            pcrs TEXT NOT NULL,
            profile TEXT NOT NULL,
            expires_at DOUBLE PRECISION NOT NULL
        )""",
        "CREATE INDEX nonces_by_expiry ON nonces (expires_at)",
        """CREATE TABLE verdicts (
            sequence BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            verdict_id TEXT NOT NULL,
            device_id TEXT NOT NULL REFERENCES devices (device_id),
            status TEXT NOT NULL
                CHECK (status IN ('affirming', 'warning', 'contraindicated')),
            reasons TEXT NOT NULL,
            profile TEXT NOT NULL,
            release_name TEXT NOT NULL,
            golden_digest TEXT NOT NULL,
            reset_count BIGINT NOT NULL,
            restart_count BIGINT NOT NULL,
            issued_at DOUBLE PRECISION NOT NULL,
            expires_at DOUBLE PRECISION NOT NULL,
            firmware_version BIGINT NOT NULL,
            clock BIGINT NOT NULL,
            safe BOOLEAN NOT NULL,
            extra TEXT NOT NULL
        )""",
        "CREATE INDEX verdicts_by_device ON verdicts (device_id, sequence)",
        """CREATE TABLE evidence_logs (
            digest BYTEA PRIMARY KEY,
            event_log BYTEA NOT NULL
        )""",
        """CREATE TABLE evidence (
            device_id TEXT PRIMARY KEY REFERENCES devices (device_id),
            received_at DOUBLE PRECISION NOT NULL,
            bank TEXT NOT NULL,
            pcrs TEXT NOT NULL,
            log_digest BYTEA NOT NULL REFERENCES evidence_logs (digest),
            labels TEXT NOT NULL
        )""",
        "CREATE INDEX evidence_by_log ON evidence (log_digest)",
        """CREATE TABLE golden_sets (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            digest TEXT NOT NULL,
            loaded_at DOUBLE PRECISION NOT NULL,
            files TEXT NOT NULL
        )""",
        "CREATE INDEX golden_sets_by_digest ON golden_sets (digest, id)",
    ),
    (  # 2: IMA incremental state, one row per device (its latest boot)
        """CREATE TABLE ima_states (
            device_id TEXT PRIMARY KEY REFERENCES devices (device_id),
            boot_id TEXT NOT NULL,
            entry_count BIGINT NOT NULL CHECK (entry_count >= 0),
            state TEXT NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL
        )""",
    ),
)

SCHEMA_VERSION = len(MIGRATIONS)

_VERSION_TABLE = """CREATE TABLE IF NOT EXISTS schema_version (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
)"""


def migrate(conn: Any, where: str) -> int:
    """Bring the database on ``conn`` (a psycopg connection in autocommit mode) up to date.

    Raises ``StoreUnavailable`` for a newer schema; psycopg errors propagate (the caller names
    the operation). Either way the transaction is rolled back.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute(_VERSION_TABLE)
        row = conn.execute(VERSION_QUERY).fetchone()
        pending = pending_migrations(row, MIGRATIONS, where)
        for statement in itertools.chain.from_iterable(pending):
            conn.execute(statement)
        if pending:
            conn.execute(
                "INSERT INTO schema_version (id, version) VALUES (1, %s)"
                " ON CONFLICT (id) DO UPDATE SET version = excluded.version",
                (SCHEMA_VERSION,),
            )
    return SCHEMA_VERSION
