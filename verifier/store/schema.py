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
    (  # 2: operator-owned devices: bound profiles, approval, revocations, supersession events
        "ALTER TABLE devices ADD COLUMN profile TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE devices ADD COLUMN approved INTEGER NOT NULL DEFAULT 1"
        " CHECK (approved IN (0, 1))",
        # the CA certificates the agent sent with its EK certificate (JSON list of hex DER)
        "ALTER TABLE devices ADD COLUMN ek_intermediates TEXT NOT NULL DEFAULT '[]'",
        "ALTER TABLE enrollment_challenges ADD COLUMN ek_intermediates TEXT NOT NULL DEFAULT '[]'",
        "ALTER TABLE verdicts ADD COLUMN supersession TEXT NOT NULL DEFAULT ''",
        # at most one supersession event per verdict, whichever replica notices first
        "CREATE UNIQUE INDEX verdicts_superseded_once ON verdicts (verdict_id)"
        " WHERE supersession != ''",
        """CREATE TABLE revocations (
            revocation_id INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL CHECK (kind IN ('device', 'ek', 'ak', 'ek_certificate')),
            subject TEXT NOT NULL,
            device_id TEXT NOT NULL,
            reason TEXT NOT NULL,
            actor TEXT NOT NULL,
            at REAL NOT NULL,
            lifted_at REAL,
            lifted_by TEXT NOT NULL DEFAULT '',
            lifted_reason TEXT NOT NULL DEFAULT ''
        ) STRICT""",
        "CREATE UNIQUE INDEX revocations_standing ON revocations (kind, subject)"
        " WHERE lifted_at IS NULL",
        """CREATE TABLE inventory (
            key TEXT PRIMARY KEY,
            profile TEXT NOT NULL,
            labels TEXT NOT NULL,
            added_by TEXT NOT NULL,
            added_at REAL NOT NULL
        ) STRICT""",
        """CREATE TABLE device_changes (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            device_id TEXT NOT NULL REFERENCES devices (device_id),
            what TEXT NOT NULL,
            before TEXT NOT NULL,
            after TEXT NOT NULL,
            actor TEXT NOT NULL,
            at REAL NOT NULL,
            reason TEXT NOT NULL
        ) STRICT""",
        "CREATE INDEX device_changes_by_device ON device_changes (device_id, id)",
    ),
    (  # 3 (audit): attestation history, the append-only audit log, checkpoints, golden files
        """CREATE TABLE attested_aks (
            digest BLOB PRIMARY KEY,
            ak_public BLOB NOT NULL
        ) STRICT""",
        """CREATE TABLE attestations (
            sequence INTEGER PRIMARY KEY,
            verdict_id TEXT NOT NULL UNIQUE,
            device_id TEXT NOT NULL,
            received_at REAL NOT NULL,
            evidence_digest TEXT NOT NULL,
            audit_position INTEGER NOT NULL,
            purged_at REAL,
            nonce BLOB,
            quote BLOB,
            signature BLOB,
            pcr_values TEXT,
            log_digest BLOB REFERENCES evidence_logs (digest),
            ak_digest BLOB REFERENCES attested_aks (digest),
            context TEXT
        ) STRICT""",
        "CREATE INDEX attestations_by_device ON attestations (device_id, received_at)",
        "CREATE INDEX attestations_by_log ON attestations (log_digest)",
        """CREATE TABLE audit_log (
            position INTEGER PRIMARY KEY CHECK (position >= 0),
            entry BLOB NOT NULL,
            leaf_hash BLOB NOT NULL,
            root BLOB NOT NULL
        ) STRICT""",
        """CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
            BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
        """CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
            BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
        """CREATE TABLE audit_state (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            size INTEGER NOT NULL,
            subtrees BLOB NOT NULL
        ) STRICT""",
        """CREATE TABLE audit_checkpoints (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            size INTEGER NOT NULL,
            note BLOB NOT NULL,
            signed_at REAL NOT NULL
        ) STRICT""",
        """CREATE TABLE golden_files (
            digest BLOB PRIMARY KEY,
            content BLOB NOT NULL
        )""",
    ),
    (  # 4: IMA incremental state, one row per device (its latest boot)
        """CREATE TABLE ima_states (
            device_id TEXT PRIMARY KEY REFERENCES devices (device_id),
            boot_id TEXT NOT NULL,
            entry_count INTEGER NOT NULL CHECK (entry_count >= 0),
            state TEXT NOT NULL,
            updated_at REAL NOT NULL
        ) STRICT""",
    ),
    (  # 5: a device's standing revocations found without reading the fleet's
        "CREATE INDEX revocations_of_device ON revocations (device_id) WHERE lifted_at IS NULL",
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
