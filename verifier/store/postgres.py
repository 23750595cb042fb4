"""The shared store: PostgreSQL, for any number of stateless verifier replicas.

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
  ``LimitExceeded`` before anything is written. A broken connection is dropped and the next
  call on that thread reconnects.

Connections: one per thread (``threading.local``), autocommit, statements prepared by the
server after first use. psycopg (3.x) is imported only when this backend is opened.
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
from collections.abc import Sequence
from dataclasses import replace
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
from verifier.store.pgschema import VERDICT_LOCK, migrate
from verifier.verdict import BootEpoch, Verdict

Row = tuple[Any, ...]
Params = tuple[object, ...]

_DEVICE_COLUMNS = (
    "device_id, ek_public, ek_certificate, ek_not_after, ak_public, ak_name, labels,"
    " enrollment_count, enrolled_at, pending_ak_public, pending_ak_name"
)
_SELECT_DEVICE = f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE device_id = %s"
_LIST_DEVICES = f"SELECT {_DEVICE_COLUMNS} FROM devices ORDER BY device_id"
_INSERT_DEVICE = (
    f"INSERT INTO devices ({_DEVICE_COLUMNS}) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
)
_BUMP_ENROLLMENT = (
    "UPDATE devices SET enrollment_count = enrollment_count + 1, labels = %s"
    " WHERE device_id = %s RETURNING enrollment_count"
)
_SET_PENDING_AK = (
    "UPDATE devices SET pending_ak_public = %s, pending_ak_name = %s"
    " WHERE device_id = %s RETURNING device_id"
)
_APPROVE_PENDING_AK = (
    "UPDATE devices SET ak_public = pending_ak_public, ak_name = pending_ak_name,"
    " pending_ak_public = ''::bytea, pending_ak_name = ''::bytea"
    " WHERE device_id = %s AND length(pending_ak_name) > 0 AND pending_ak_name = %s"
    " RETURNING device_id"
)
_CHALLENGE_COLUMNS = (
    "challenge_id, device_id, ek_public, ek_certificate, ek_not_after, ak_public, ak_name,"
    " labels, secret, expires_at"
)
_INSERT_CHALLENGE = (
    f"INSERT INTO enrollment_challenges ({_CHALLENGE_COLUMNS})"
    " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
)
_TAKE_CHALLENGE = (
    "DELETE FROM enrollment_challenges WHERE challenge_id = %s AND expires_at > %s"
    f" RETURNING {_CHALLENGE_COLUMNS}"
)
_INSERT_NONCE = (
    "INSERT INTO nonces (nonce, device_id, bank, pcrs, profile, expires_at)"
    " VALUES (%s,%s,%s,%s,%s,%s)"
)
_CONSUME_NONCE = (
    "DELETE FROM nonces WHERE nonce = %s AND device_id = %s AND expires_at > %s"
    " RETURNING bank, pcrs, profile, expires_at"
)
_VERDICT_COLUMNS = (
    "sequence, verdict_id, device_id, status, reasons, profile, release_name, golden_digest,"
    " reset_count, restart_count, issued_at, expires_at, firmware_version, clock, safe, extra"
)
# One statement (one round trip): the FROM clause takes the lock before the identity value is
# drawn, and the statement's own transaction holds it until it commits.
_INSERT_VERDICT = (
    "INSERT INTO verdicts (verdict_id, device_id, status, reasons, profile, release_name,"
    " golden_digest, reset_count, restart_count, issued_at, expires_at, firmware_version,"
    " clock, safe, extra) SELECT %s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s"
    " FROM (SELECT pg_advisory_xact_lock(%s)) AS sequence_order RETURNING sequence"
)
_DEVICE_VERDICTS = (
    f"SELECT {_VERDICT_COLUMNS} FROM verdicts WHERE device_id = %s ORDER BY sequence DESC LIMIT %s"
)
_AFTER = f"SELECT {_VERDICT_COLUMNS} FROM verdicts WHERE sequence > %s"
_IN_DEVICES = " AND device_id = ANY(%s)"
_OF_PROFILE = " AND profile = %s"
_IN_ORDER = " ORDER BY sequence LIMIT %s"
_VERDICTS_AFTER = {
    (False, False): _AFTER + _IN_ORDER,
    (True, False): _AFTER + _IN_DEVICES + _IN_ORDER,
    (False, True): _AFTER + _OF_PROFILE + _IN_ORDER,
    (True, True): _AFTER + _IN_DEVICES + _OF_PROFILE + _IN_ORDER,
}
_PUT_EVIDENCE_LOG = (
    "INSERT INTO evidence_logs (digest, event_log) VALUES (%s,%s) ON CONFLICT (digest) DO NOTHING"
)
_PUT_EVIDENCE = (
    "INSERT INTO evidence (device_id, received_at, bank, pcrs, log_digest, labels)"
    " VALUES (%s,%s,%s,%s,%s,%s)"
    " ON CONFLICT (device_id) DO UPDATE SET received_at = excluded.received_at,"
    " bank = excluded.bank, pcrs = excluded.pcrs, log_digest = excluded.log_digest,"
    " labels = excluded.labels WHERE excluded.received_at >= evidence.received_at"
)
_EVIDENCE_JOIN = (
    "SELECT e.device_id, e.received_at, e.bank, e.pcrs, l.event_log, e.labels"
    " FROM evidence AS e JOIN evidence_logs AS l ON l.digest = e.log_digest"
)
_SELECT_EVIDENCE = _EVIDENCE_JOIN + " WHERE e.device_id = %s"
_ALL_EVIDENCE = _EVIDENCE_JOIN + " ORDER BY e.device_id"
_INSERT_GOLDEN = "INSERT INTO golden_sets (digest, loaded_at, files) VALUES (%s,%s,%s)"
_SELECT_GOLDEN = (
    "SELECT digest, loaded_at, files FROM golden_sets WHERE digest = %s ORDER BY id DESC LIMIT 1"
)
_PURGE_NONCES = "DELETE FROM nonces WHERE expires_at <= %s"
_PURGE_CHALLENGES = "DELETE FROM enrollment_challenges WHERE expires_at <= %s"
_PURGE_LOGS = (
    "DELETE FROM evidence_logs WHERE NOT EXISTS"
    " (SELECT 1 FROM evidence WHERE evidence.log_digest = evidence_logs.digest)"
)


_STORES: weakref.WeakSet[PostgresStore] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for store in list(_STORES):
        store._forget_connections()


os.register_at_fork(after_in_child=_after_fork_in_child)


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


class PostgresStore:
    def __init__(self, url: str, limits: Limits = DEFAULT_LIMITS) -> None:
        self._psycopg = _import_psycopg()
        self.url = url
        self.where = _redact(url)
        self.limits = limits
        self._closed = False
        self._forget_connections()
        conn = self._conn()
        try:
            migrate(conn, self.where)
        except self._psycopg.Error as exc:
            self.close()
            raise StoreUnavailable(f"store: cannot open {self.where}: {exc}") from exc
        except BaseException:
            self.close()
            raise
        _STORES.add(self)

    # -------------------------------------------------------------- connections

    def _forget_connections(self) -> None:
        """Start with no connections (at init, and in a forked child: never reuse the parent's)."""
        self._local = threading.local()
        self._registry_lock = threading.Lock()
        self._connections: list[Any] = []

    def _conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        if self._closed:
            raise StoreUnavailable(f"store: {self.where} is closed")
        try:
            conn = self._psycopg.connect(self.url, autocommit=True, prepare_threshold=0)
        except self._psycopg.Error as exc:
            raise StoreUnavailable(f"store: cannot open {self.where}: {exc}") from exc
        with self._registry_lock:
            self._connections.append(conn)
        self._local.conn = conn
        return conn

    def _drop_if_broken(self, conn: Any) -> None:
        if conn.broken or conn.closed:
            self._local.conn = None
            with self._registry_lock, contextlib.suppress(ValueError):
                self._connections.remove(conn)

    def close(self) -> None:
        self._closed = True
        with self._registry_lock:
            connections, self._connections = self._connections, []
        self._local = threading.local()
        for conn in connections:
            with contextlib.suppress(Exception):  # best effort at shutdown
                conn.close()

    # -------------------------------------------------------------- statement helpers

    def _fail(self, op: str, conn: Any, exc: Exception) -> Exception:
        self._drop_if_broken(conn)
        if isinstance(exc, self._psycopg.errors.ForeignKeyViolation):
            return UnknownDevice(f"store: {op}: no enrolled device with that id")
        return StoreUnavailable(f"store: {op} failed: {exc}")

    def _run(self, op: str, sql: str, params: Params) -> list[Row]:
        conn = self._conn()
        try:
            cursor = conn.execute(sql, params)
            return list(cursor.fetchall()) if cursor.description is not None else []
        except self._psycopg.Error as exc:
            raise self._fail(op, conn, exc) from exc

    def _transaction(
        self, op: str, statements: Sequence[tuple[str, Params]]
    ) -> list[tuple[list[Row], int]]:
        """Several statements in one transaction; returns each one's rows and row count."""
        conn = self._conn()
        results: list[tuple[list[Row], int]] = []
        try:
            with conn.transaction():
                for sql, params in statements:
                    cursor = conn.execute(sql, params)
                    rows = cursor.fetchall() if cursor.description is not None else []
                    results.append((list(rows), cursor.rowcount))
        except self._psycopg.Error as exc:
            raise self._fail(op, conn, exc) from exc
        return results

    # -------------------------------------------------------------- devices and enrollment

    def get_device(self, device_id: str) -> DeviceRecord | None:
        rows = self._run("get device", _SELECT_DEVICE, (device_id,))
        return _device(rows[0]) if rows else None

    def list_devices(self) -> Sequence[DeviceRecord]:
        return [_device(row) for row in self._run("list devices", _LIST_DEVICES, ())]

    def insert_device(self, device: DeviceRecord) -> None:
        self._run(
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
        rows = self._run(
            "count enrollment", _BUMP_ENROLLMENT, (codec.encode_str_map(labels), device_id)
        )
        if not rows:
            raise UnknownDevice(f"store: count enrollment: no enrolled device {device_id}")
        return int(rows[0][0])

    def set_pending_ak(self, device_id: str, ak_public: bytes, ak_name: bytes) -> None:
        rows = self._run("park new AK", _SET_PENDING_AK, (ak_public, ak_name, device_id))
        if not rows:
            raise UnknownDevice(f"store: park new AK: no enrolled device {device_id}")

    def approve_pending_ak(self, device_id: str, ak_name: bytes) -> bool:
        return bool(self._run("approve AK", _APPROVE_PENDING_AK, (device_id, ak_name)))

    def put_enrollment_challenge(self, challenge: EnrollmentChallenge) -> None:
        self._run(
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
        rows = self._run("take enrollment challenge", _TAKE_CHALLENGE, (challenge_id, now))
        return _challenge(rows[0]) if rows else None

    # -------------------------------------------------------------- nonces

    def add_nonce(self, nonce: IssuedNonce) -> None:
        self._run(
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
        rows = self._run("consume nonce", _CONSUME_NONCE, (nonce, device_id, now))
        if not rows:
            return None
        bank, pcrs, profile, expires_at = rows[0]
        selection = codec.decode_pcr_selection(pcrs, "nonce PCRs")
        return IssuedNonce(nonce, device_id, bank, selection, profile, expires_at)

    # -------------------------------------------------------------- verdicts

    def add_verdict(self, verdict: Verdict) -> Verdict:
        verdict_id = secrets.token_hex(16)
        params = (
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
            verdict.safe,
            codec.encode_str_map(verdict.extra),
            VERDICT_LOCK,
        )
        rows = self._run("store verdict", _INSERT_VERDICT, params)
        return replace(verdict, verdict_id=verdict_id, sequence=int(rows[0][0]))

    def latest_verdict(self, device_id: str) -> Verdict | None:
        rows = self._run("latest verdict", _DEVICE_VERDICTS, (device_id, 1))
        return _verdict(rows[0]) if rows else None

    def verdict_history(self, device_id: str, limit: int = 50) -> Sequence[Verdict]:
        if limit <= 0:
            return []
        rows = self._run("verdict history", _DEVICE_VERDICTS, (device_id, limit))
        return [_verdict(row) for row in rows]

    def verdicts_after(
        self, sequence: int, device_ids: Sequence[str] = (), profile: str = "", limit: int = 500
    ) -> Sequence[Verdict]:
        if limit <= 0:
            return []
        sql = _VERDICTS_AFTER[(bool(device_ids), bool(profile))]
        params: list[object] = [sequence]
        if device_ids:
            params.append([str(device_id) for device_id in device_ids])
        if profile:
            params.append(profile)
        params.append(limit)
        return [_verdict(row) for row in self._run("verdicts after", sql, tuple(params))]

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
            [(_PUT_EVIDENCE_LOG, (digest, evidence.event_log)), (_PUT_EVIDENCE, row)],
        )

    def latest_evidence(self, device_id: str) -> StoredEvidence | None:
        rows = self._run("latest evidence", _SELECT_EVIDENCE, (device_id,))
        return _evidence(rows[0]) if rows else None

    def all_latest_evidence(self) -> Sequence[StoredEvidence]:
        return [_evidence(row) for row in self._run("all evidence", _ALL_EVIDENCE, ())]

    def record_golden_set(self, record: GoldenSetRecord) -> None:
        self._run(
            "record golden set",
            _INSERT_GOLDEN,
            (record.digest, record.loaded_at, codec.encode_str_map(record.files)),
        )

    def golden_set(self, digest: str) -> GoldenSetRecord | None:
        rows = self._run("golden set", _SELECT_GOLDEN, (digest,))
        if not rows:
            return None
        found, loaded_at, files = rows[0]
        return GoldenSetRecord(found, loaded_at, codec.decode_str_map(files, "golden files"))

    def purge_expired(self, now: float) -> int:
        """Drop expired nonces and challenges (counted) and event logs no evidence refers to."""
        (_, nonces), (_, challenges), _ = self._transaction(
            "purge expired",
            [(_PURGE_NONCES, (now,)), (_PURGE_CHALLENGES, (now,)), (_PURGE_LOGS, ())],
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
