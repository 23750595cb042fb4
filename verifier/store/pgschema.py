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
    (  # 2: operator-owned devices: bound profiles, approval, revocations, supersession events
        "ALTER TABLE devices ADD COLUMN profile TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE devices ADD COLUMN approved BOOLEAN NOT NULL DEFAULT TRUE",
        # the CA certificates the agent sent with its EK certificate (JSON list of hex DER)
        "ALTER TABLE devices ADD COLUMN ek_intermediates TEXT NOT NULL DEFAULT '[]'",
        "ALTER TABLE enrollment_challenges ADD COLUMN ek_intermediates TEXT NOT NULL DEFAULT '[]'",
        "ALTER TABLE verdicts ADD COLUMN supersession TEXT NOT NULL DEFAULT ''",
        "CREATE UNIQUE INDEX verdicts_superseded_once ON verdicts (verdict_id)"
        " WHERE supersession != ''",
        """CREATE TABLE revocations (
            revocation_id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            kind TEXT NOT NULL CHECK (kind IN ('device', 'ek', 'ak', 'ek_certificate')),
            subject TEXT NOT NULL,
            device_id TEXT NOT NULL,
            reason TEXT NOT NULL,
            actor TEXT NOT NULL,
            at DOUBLE PRECISION NOT NULL,
            lifted_at DOUBLE PRECISION,
            lifted_by TEXT NOT NULL DEFAULT '',
            lifted_reason TEXT NOT NULL DEFAULT ''
        )""",
        "CREATE UNIQUE INDEX revocations_standing ON revocations (kind, subject)"
        " WHERE lifted_at IS NULL",
        """CREATE TABLE inventory (
            key TEXT PRIMARY KEY,
            profile TEXT NOT NULL,
            labels TEXT NOT NULL,
            added_by TEXT NOT NULL,
            added_at DOUBLE PRECISION NOT NULL
        )""",
        """CREATE TABLE device_changes (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            device_id TEXT NOT NULL REFERENCES devices (device_id),
            what TEXT NOT NULL,
            before TEXT NOT NULL,
            after TEXT NOT NULL,
            actor TEXT NOT NULL,
            at DOUBLE PRECISION NOT NULL,
            reason TEXT NOT NULL
        )""",
        "CREATE INDEX device_changes_by_device ON device_changes (device_id, id)",
    ),
    (  # 3 (audit): attestation history, the append-only audit log, checkpoints, golden files
        """CREATE TABLE attested_aks (
            digest BYTEA PRIMARY KEY,
            ak_public BYTEA NOT NULL
        )""",
        """CREATE TABLE attestations (
            sequence BIGINT PRIMARY KEY,
            verdict_id TEXT NOT NULL UNIQUE,
            device_id TEXT NOT NULL,
            received_at DOUBLE PRECISION NOT NULL,
            evidence_digest TEXT NOT NULL,
            audit_position BIGINT NOT NULL,
            purged_at DOUBLE PRECISION,
            nonce BYTEA,
            quote BYTEA,
            signature BYTEA,
            pcr_values TEXT,
            log_digest BYTEA REFERENCES evidence_logs (digest),
            ak_digest BYTEA REFERENCES attested_aks (digest),
            context TEXT
        )""",
        "CREATE INDEX attestations_by_device ON attestations (device_id, received_at)",
        "CREATE INDEX attestations_by_log ON attestations (log_digest)",
        """CREATE TABLE audit_log (
            position BIGINT PRIMARY KEY CHECK (position >= 0),
            entry BYTEA NOT NULL,
            leaf_hash BYTEA NOT NULL,
            root BYTEA NOT NULL
        )""",
        """CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$""",
        """CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
            FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()""",
        """CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
            FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()""",
        """CREATE TABLE audit_state (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            size BIGINT NOT NULL,
            subtrees BYTEA NOT NULL
        )""",
        """CREATE TABLE audit_checkpoints (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            size BIGINT NOT NULL,
            note BYTEA NOT NULL,
            signed_at DOUBLE PRECISION NOT NULL
        )""",
        """CREATE TABLE golden_files (
            digest BYTEA PRIMARY KEY,
            content BYTEA NOT NULL
        )""",
    ),
    (  # 4: IMA incremental state, one row per device (its latest boot)
        """CREATE TABLE ima_states (
            device_id TEXT PRIMARY KEY REFERENCES devices (device_id),
            boot_id TEXT NOT NULL,
            entry_count BIGINT NOT NULL CHECK (entry_count >= 0),
            state TEXT NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL
        )""",
    ),
    (  # 5: a device's standing revocations found without reading the fleet's
        "CREATE INDEX revocations_of_device ON revocations (device_id) WHERE lifted_at IS NULL",
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
