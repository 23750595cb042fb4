"""The audit log as the store keeps it, attacked in the database itself, on SQLite and PostgreSQL.

Each attack is what someone with write access to the database could do after the fact: edit a
verdict row, delete, swap or insert log entries (after dropping the append-only triggers),
sign a checkpoint with another key, show two histories, or purge more than retention allows.
``audit verify`` (``verify_store``) must report each with its position; the honest store must
verify clean, also after retention purged evidence bodies and verdict rows.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from pgcluster import fresh_schema_url, pg_cluster  # noqa: F401 (the fixture)

from verifier import auditlog
from verifier.audit import (
    Checkpoint,
    EntryKind,
    LogEntry,
    ProblemKind,
    SignerKey,
    leaf_hash,
    open_checkpoint,
    sign_checkpoint,
    verify_consistency,
    verify_inclusion,
    verify_log,
)
from verifier.audit.history import AttestationRecord, PreviousCounters, Retention, entry_time
from verifier.errors import StoreUnavailable
from verifier.records import DeviceRecord, GoldenSetRecord, IssuedNonce
from verifier.store import open_store
from verifier.store.base import Store
from verifier.verdict import BootEpoch, Reason, Status, Verdict

NOW = 1_800_000_000.0
KEY = SignerKey.generate("test.audit")
OTHER_KEY = SignerKey.generate("test.audit")  # same name, another key


@dataclass
class Db:
    """A store and raw SQL access to its database (the attacker's)."""

    store: Store
    sql: Callable[[str], None]
    backend: str


def _sqlite(path: Path) -> tuple[Store, Callable[[str], None]]:
    def run(statement: str) -> None:
        conn = sqlite3.connect(path)
        try:
            conn.executescript(statement)
            conn.commit()
        finally:
            conn.close()

    return open_store(path), run


def _postgres(url: str) -> tuple[Store, Callable[[str], None]]:
    import psycopg  # type: ignore[import-not-found, unused-ignore]  # noqa: PLC0415

    def run(statement: str) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(statement)

    return open_store(url), run


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    if request.param == "sqlite":
        store, run = _sqlite(tmp_path / "audit.db")
    else:
        store, run = _postgres(fresh_schema_url(request.getfixturevalue("pg_cluster")))
    yield Db(store, run, request.param)
    store.close()


def _drop_guards(db: Db) -> None:
    """What an attacker does first: the append-only triggers are in the way."""
    if db.backend == "sqlite":
        db.sql("DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete;")
    else:
        db.sql(
            "DROP TRIGGER audit_log_no_change ON audit_log;"
            " DROP TRIGGER audit_log_no_truncate ON audit_log"
        )


def _device(device_id: str) -> DeviceRecord:
    return DeviceRecord(
        device_id=device_id,
        ek_public=b"ek-" + device_id.encode(),
        ek_certificate=b"",
        ek_not_after=None,
        ak_public=b"ak-" + device_id.encode(),
        ak_name=b"\x00\x0b" + b"\xaa" * 32,
        labels={"model": "m1"},
        enrollment_count=1,
        enrolled_at=NOW,
    )


def _record(device_id: str, at: float, log: bytes = b"the same boot log") -> AttestationRecord:
    return AttestationRecord(
        device_id=device_id,
        received_at=at,
        issued=IssuedNonce(b"n" * 32, device_id, "sha256", (0, 7), "p", at + 60),
        quote=b"quote-" + str(at).encode(),
        signature=b"sig",
        pcr_values=((7, b"\x07" * 32), (0, b"\x00" * 32)),
        event_log=log,
        ak_public=b"ak-" + device_id.encode(),
        ek_not_after=None,
        previous=PreviousCounters(1, 0, 100),
    )


def _verdict(device_id: str, at: float, status: Status = Status.AFFIRMING) -> Verdict:
    return Verdict(
        device_id=device_id,
        status=status,
        reasons=(Reason("pcr.mismatch", "PCR 7 differs", Status.WARNING, 7),)
        if status is not Status.AFFIRMING
        else (),
        profile="p",
        release="r1",
        golden_digest="sha256:" + "g" * 64,
        boot_epoch=BootEpoch(1, 0),
        issued_at=at,
        expires_at=at + 3600,
        clock=100,
    )


def _fill(db: Db, devices: int = 2, per_device: int = 4) -> list[Verdict]:
    stored = []
    for d in range(devices):
        db.store.insert_device(_device(f"dev-{d}"))
    for i in range(per_device):
        for d in range(devices):
            at = NOW + i * 100 + d
            stored.append(db.store.add_verdict(_verdict(f"dev-{d}", at), _record(f"dev-{d}", at)))
    return stored


def _checkpoint(db: Db, signer: SignerKey = KEY) -> bytes:
    note = auditlog.write_checkpoint(db.store, signer, NOW)
    assert note is not None
    return note


def _problems(db: Db) -> list[tuple[ProblemKind, int | None]]:
    report = auditlog.verify_store(db.store, KEY.verifier())
    return [(p.kind, p.position) for p in report.problems]


# ------------------------------------------------------------------ the honest store


def test_honest_history_verifies_with_every_position_dense(db: Db) -> None:
    verdicts = _fill(db)
    _checkpoint(db)
    db.store.record_golden_set(
        GoldenSetRecord("sha256:" + "1" * 64, NOW + 1000, {"a.yaml": "2" * 64})
    )
    auditlog.record_operator_action(db.store, "local/alice", "approve_ak", {"device_id": "x"}, NOW)
    _checkpoint(db)
    report = auditlog.verify_store(db.store, KEY.verifier())
    assert report.ok, report.problems
    assert report.size == len(verdicts) + 2
    assert report.checkpoints_verified == 2
    positions = [e.position for e in db.store.iter_audit_entries()]
    assert positions == list(range(len(verdicts) + 2))


def test_verify_reports_progress_through_both_passes(
    db: Db, monkeypatch: pytest.MonkeyPatch
) -> None:
    verdicts = _fill(db)
    monkeypatch.setattr(auditlog, "PROGRESS_EVERY", 3)
    seen: list[tuple[str, int]] = []
    report = auditlog.verify_store(
        db.store, KEY.verifier(), progress=lambda phase, done: seen.append((phase, done))
    )
    assert report.ok, report.problems
    assert [n for phase, n in seen if phase == "entries"] == [3, 6]
    assert [phase for phase, _ in seen].count("records") >= 1
    assert len(verdicts) == 8


def test_verdict_and_its_entry_are_written_together(db: Db) -> None:
    [first, *_] = _fill(db, devices=1, per_device=1)
    attestation = db.store.attestation(first.verdict_id)
    assert attestation is not None and attestation.record is not None
    [stored] = db.store.audit_entries(attestation.audit_position, 1)
    entry = LogEntry.from_canonical(stored.data)
    assert entry.kind is EntryKind.VERDICT
    assert entry.fields["verdict_id"] == first.verdict_id
    assert entry.fields["evidence_digest"] == attestation.evidence_digest


def test_event_log_is_stored_once_for_a_fleet_booting_the_same_log(db: Db) -> None:
    _fill(db, devices=3, per_device=3)
    size, _ = db.store.audit_head()
    assert size == 9
    # every attestation refers to the one stored log
    attestations = db.store.attestations_after(0, 100)
    assert {a.log_digest for a, _ in attestations} == {_record("x", 0).log_digest}


def test_the_append_only_triggers_refuse_an_edit(db: Db) -> None:
    _fill(db, devices=1, per_device=1)
    with pytest.raises(Exception, match="append-only"):
        db.sql("UPDATE audit_log SET entry = entry WHERE position = 0")
    with pytest.raises(Exception, match="append-only"):
        db.sql("DELETE FROM audit_log WHERE position = 0")


# ------------------------------------------------------------------ the attacks


def test_verdict_row_edited_in_the_database_is_reported(db: Db) -> None:
    verdicts = _fill(db)
    _checkpoint(db)
    target = verdicts[3]
    db.sql(f"UPDATE verdicts SET status = 'contraindicated' WHERE sequence = {target.sequence}")
    attestation = db.store.attestation(target.verdict_id)
    assert attestation is not None
    assert (ProblemKind.RECORD_CHANGED, attestation.audit_position) in _problems(db)


def test_evidence_body_edited_in_the_database_is_reported(db: Db) -> None:
    verdicts = _fill(db)
    target = verdicts[2]
    db.sql(f"UPDATE attestations SET signature = quote WHERE sequence = {target.sequence}")
    attestation = db.store.attestation(target.verdict_id)
    assert attestation is not None
    assert (ProblemKind.RECORD_CHANGED, attestation.audit_position) in _problems(db)


def test_log_entry_deleted_is_reported_at_its_position(db: Db) -> None:
    _fill(db)
    _checkpoint(db)
    _drop_guards(db)
    db.sql("DELETE FROM audit_log WHERE position = 3")
    problems = _problems(db)
    assert (ProblemKind.POSITION_GAP, 3) in problems
    assert any(kind is ProblemKind.CHECKPOINT_BEYOND_LOG for kind, _ in problems)


def test_two_log_entries_swapped_are_reported_at_the_first(db: Db) -> None:
    _fill(db)
    _checkpoint(db)
    _drop_guards(db)
    db.sql("UPDATE audit_log SET position = 1000 WHERE position = 2")
    db.sql("UPDATE audit_log SET position = 2 WHERE position = 5")
    db.sql("UPDATE audit_log SET position = 5 WHERE position = 1000")
    problems = _problems(db)
    assert (ProblemKind.ROOT_DIVERGES, 2) in problems
    assert any(kind is ProblemKind.CHECKPOINT_MISMATCH for kind, _ in problems)


def test_log_entry_inserted_is_reported_at_its_position(db: Db) -> None:
    _fill(db, devices=1, per_device=3)
    _checkpoint(db)
    _drop_guards(db)
    forged = LogEntry(EntryKind.OPERATOR_ACTION, entry_time(NOW), {"caller": "x", "action": "y"})
    hex_entry = forged.canonical_bytes().hex()
    hex_leaf = forged.leaf_hash().hex()
    blob = "x'{}'" if db.backend == "sqlite" else "'\\x{}'::bytea"
    # shift positions 1.. up by one, then put the forged entry at 1
    for position in (2, 1):
        db.sql(f"UPDATE audit_log SET position = {position + 1} WHERE position = {position}")
    db.sql(
        "INSERT INTO audit_log (position, entry, leaf_hash, root) VALUES "
        f"(1, {blob.format(hex_entry)}, {blob.format(hex_leaf)}, {blob.format(hex_leaf)})"
    )
    problems = _problems(db)
    assert (ProblemKind.ROOT_DIVERGES, 1) in problems
    assert any(kind is ProblemKind.CHECKPOINT_MISMATCH for kind, _ in problems)


def test_log_entry_changed_is_reported_at_its_position(db: Db) -> None:
    _fill(db)
    _drop_guards(db)
    db.sql(
        "UPDATE audit_log SET entry = (SELECT entry FROM audit_log AS o WHERE o.position = 0)"
        " WHERE position = 4"
    )
    assert (ProblemKind.ENTRY_CHANGED, 4) in _problems(db)


def test_checkpoint_signed_by_another_key_is_rejected(db: Db) -> None:
    _fill(db)
    _checkpoint(db, OTHER_KEY)
    report = auditlog.verify_store(db.store, KEY.verifier())
    assert [p.kind for p in report.problems] == [ProblemKind.CHECKPOINT_INVALID]
    assert report.checkpoints_verified == 0


def test_forked_history_two_inconsistent_checkpoints_is_reported(db: Db) -> None:
    _fill(db)
    _checkpoint(db)
    size, _ = db.store.audit_head()
    # the key signed another root for a smaller size: a second history shown to someone
    forged = Checkpoint(KEY.name, size - 2, leaf_hash(b"another history"))
    db.store.add_checkpoint(size - 2, sign_checkpoint(forged, KEY), NOW)
    problems = _problems(db)
    assert any(kind is ProblemKind.FORK for kind, _ in problems)


def test_purge_never_removes_a_log_entry_and_the_log_still_verifies(db: Db) -> None:
    verdicts = _fill(db, devices=2, per_device=5)
    _checkpoint(db)
    before = list(db.store.iter_audit_entries())
    purged = 0
    while True:
        batch = db.store.purge_history(NOW + 10_000, Retention(keep_per_device=2), batch=3)
        if not batch:
            break
        purged += batch
    assert purged == 6  # 5 per device, 2 kept
    assert list(db.store.iter_audit_entries()) == before
    report = auditlog.verify_store(db.store, KEY.verifier())
    assert report.ok, report.problems
    oldest = db.store.attestation(verdicts[0].verdict_id)
    assert oldest is not None and oldest.record is None and oldest.evidence_digest
    assert db.store.verdict_by_sequence(verdicts[0].sequence) is None
    newest = db.store.latest_verdict("dev-0")
    assert newest is not None and newest.verdict_id == verdicts[-2].verdict_id


def test_purge_by_age_keeps_each_devices_newest(db: Db) -> None:
    verdicts = _fill(db, devices=2, per_device=3)
    while db.store.purge_history(NOW + 1e6, Retention(max_age=1.0), batch=2):
        pass
    kept = [a for a, v in db.store.attestations_after(0, 100) if a.record is not None]
    assert sorted(a.verdict_id for a in kept) == sorted(v.verdict_id for v in verdicts[-2:])
    assert auditlog.verify_store(db.store, KEY.verifier()).ok


def test_verdict_row_deleted_without_a_purge_is_reported(db: Db) -> None:
    verdicts = _fill(db)
    db.sql(f"DELETE FROM verdicts WHERE sequence = {verdicts[1].sequence}")
    attestation = db.store.attestation(verdicts[1].verdict_id)
    assert attestation is not None
    assert (ProblemKind.RECORD_MISSING, attestation.audit_position) in _problems(db)


# ------------------------------------------------------------------ proofs, export, golden


def test_inclusion_and_consistency_proofs_verify_against_signed_checkpoints(db: Db) -> None:
    verdicts = _fill(db)
    old = _checkpoint(db)
    _fill_more = [db.store.add_verdict(_verdict("dev-0", NOW + 5000)) for _ in range(3)]
    new = _checkpoint(db)
    old_cp = open_checkpoint(old, KEY.verifier())
    new_cp = open_checkpoint(new, KEY.verifier())
    position = auditlog.position_of(db.store, verdicts[5].verdict_id)
    proof = auditlog.inclusion_proof(db.store, position, new_cp.size)
    verify_inclusion(proof.leaf_hash, position, new_cp.size, list(proof.proof), new_cp.root_hash)
    assert leaf_hash(proof.entry) == proof.leaf_hash
    consistency = auditlog.consistency_proof(db.store, old_cp.size, new_cp.size)
    verify_consistency(
        old_cp.size, new_cp.size, old_cp.root_hash, new_cp.root_hash, list(consistency.proof)
    )
    assert len(_fill_more) == 3


def test_export_resumed_by_position_verifies_like_the_store(db: Db) -> None:
    _fill(db)
    _checkpoint(db)
    first = list(auditlog.export_lines(db.store, 0))
    entries = [line for line in first if '"position"' in line]
    resumed = list(auditlog.export_lines(db.store, 5))
    assert [line for line in resumed if '"position"' in line] == entries[5:]
    parsed, checkpoints = auditlog.read_export(iter(first))
    report = verify_log(parsed, checkpoints, KEY.verifier())
    assert report.ok and report.size == len(entries)


def test_golden_contents_are_kept_once_and_must_hash_to_the_record(db: Db) -> None:
    import hashlib  # noqa: PLC0415

    data = b"profile: x\n"
    sha = hashlib.sha256(data).hexdigest()
    record = GoldenSetRecord("sha256:" + "a" * 64, NOW, {"x.yaml": sha})
    db.store.record_golden_set(record, {"x.yaml": data})
    db.store.record_golden_set(replace(record, loaded_at=NOW + 1), {"x.yaml": data})
    assert db.store.golden_file(sha) == data
    assert db.store.golden_set_at(NOW + 0.5) == record
    with pytest.raises(StoreUnavailable):
        db.store.record_golden_set(record, {"x.yaml": b"something else"})
    assert db.store.audit_head()[0] == 2  # two changes logged, the refused one not


def test_a_devices_attestations_are_read_newest_first_by_page_purged_ones_included(
    db: Db,
) -> None:
    verdicts = _fill(db, devices=2, per_device=4)
    ima = replace(_record("dev-1", NOW + 900), ima_log=b"entries", ima_offset=7, ima_state="{}")
    last = db.store.add_verdict(_verdict("dev-1", NOW + 900), ima)
    mine = [v.verdict_id for v in reversed([*verdicts, last]) if v.device_id == "dev-1"]
    first = db.store.attestations_of("dev-1", None, 2)
    assert [a.verdict_id for a in first] == mine[:2]
    assert first[0].record is not None and first[0].record.event_log == b""  # not read
    assert (first[0].record.ima_log, first[0].record.ima_offset) == (b"entries", 7)
    rest = db.store.attestations_of("dev-1", first[-1].sequence, 100)
    assert [a.verdict_id for a in rest] == mine[2:]
    while db.store.purge_history(NOW + 1e6, Retention(keep_per_device=1)):
        pass
    after = db.store.attestations_of("dev-1")
    assert [a.verdict_id for a in after] == mine  # purged rows are still listed ...
    assert [a.record is None for a in after] == [False] + [True] * (len(mine) - 1)  # ... bare
    assert all(a.purged_at is not None for a in after[1:])
