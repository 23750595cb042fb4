"""Log entries and ``verify_log`` (verifier/audit/entry.py, verify.py), named after the attacks.

Every test builds an honest log through the same path the store will use (canonical bytes,
leaf hash and running root recorded at append time, checkpoints signed with the log key), then
tampers with the stored rows the way someone with write access to the database could.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from verifier.audit.checkpoint import Checkpoint, sign_checkpoint
from verifier.audit.entry import EntryKind, LogEntry, format_time
from verifier.audit.errors import AuditMalformed
from verifier.audit.merkle import CompactRange, MerkleTree, leaf_hash
from verifier.audit.note import SignerKey
from verifier.audit.verify import ProblemKind, StoredEntry, verify_log

ORIGIN = "verifier.example/audit"
T0 = datetime(2026, 7, 21, 14, 0, tzinfo=UTC)
LOG_KEY = SignerKey.generate(ORIGIN)


def entry(i: int) -> LogEntry:
    if i % 5 == 4:
        return LogEntry(
            EntryKind.OPERATOR_ACTION,
            T0 + timedelta(seconds=i),
            {"caller": "alice@ops", "action": "approve_ak", "device_id": f"dev-{i}"},
        )
    return LogEntry(
        EntryKind.VERDICT,
        T0 + timedelta(seconds=i),
        {"device_id": f"dev-{i % 3}", "verdict_id": f"v{i}", "status": "affirming", "seq": i},
    )


def honest_log(n: int, running_roots: bool = True) -> list[StoredEntry]:
    compact = CompactRange()
    rows = []
    for i in range(n):
        data = entry(i).canonical_bytes()
        compact.append(leaf_hash(data))
        root = compact.root() if running_roots else None
        rows.append(StoredEntry(i, data, leaf_hash(data), root))
    return rows


def checkpoint_of(rows: list[StoredEntry], size: int, key: SignerKey = LOG_KEY) -> bytes:
    tree = MerkleTree(leaf_hash(r.data) for r in rows[:size])
    return sign_checkpoint(Checkpoint(ORIGIN, size, tree.root()), key)


def kinds(report_problems: tuple[object, ...]) -> list[ProblemKind]:
    return [p.kind for p in report_problems]  # type: ignore[attr-defined]


def test_honest_log_verifies() -> None:
    rows = honest_log(40)
    checkpoints = [checkpoint_of(rows, s) for s in (0, 1, 7, 16, 40)]
    report = verify_log(rows, checkpoints, LOG_KEY.verifier())
    assert report.ok, report.problems
    assert report.size == 40
    assert report.checkpoints_verified == 5
    assert report.latest_matching is not None and report.latest_matching.size == 40
    assert report.root == MerkleTree(r.recorded_hash for r in rows).root()


def test_changed_entry_is_reported_at_its_position() -> None:
    rows = honest_log(30)
    checkpoints = [checkpoint_of(rows, 10), checkpoint_of(rows, 30)]
    edited = rows[17].data.replace(b'"affirming"', b'"contraindicated"')
    assert edited != rows[17].data
    rows[17] = dataclasses.replace(rows[17], data=edited)
    report = verify_log(rows, checkpoints, LOG_KEY.verifier())
    changed = [p for p in report.problems if p.kind is ProblemKind.ENTRY_CHANGED]
    assert [p.position for p in changed] == [17]
    mismatch = [p for p in report.problems if p.kind is ProblemKind.CHECKPOINT_MISMATCH]
    assert [(p.checkpoint, p.position) for p in mismatch] == [(1, 17)]
    assert report.latest_matching is not None and report.latest_matching.size == 10


def test_changed_entry_with_its_hash_rewritten_is_located_by_the_running_root() -> None:
    rows = honest_log(30)
    checkpoints = [checkpoint_of(rows, 30)]
    edited = rows[17].data.replace(b'"affirming"', b'"warning"')
    rows[17] = dataclasses.replace(rows[17], data=edited, recorded_hash=leaf_hash(edited))
    report = verify_log(rows, checkpoints, LOG_KEY.verifier())
    assert kinds(report.problems) == [ProblemKind.ROOT_DIVERGES, ProblemKind.CHECKPOINT_MISMATCH]
    assert [p.position for p in report.problems] == [17, 17]


def test_fully_rewritten_history_is_bracketed_by_the_checkpoints() -> None:
    """Bytes, hashes and running roots all recomputed: only the signatures still tell."""
    rows = honest_log(30)
    checkpoints = [checkpoint_of(rows, s) for s in (8, 16, 24, 30)]
    forged = [*[r.data for r in rows[:20]], b"x", *[r.data for r in rows[21:]]]
    forged[20] = entry(99).canonical_bytes()
    compact = CompactRange()
    rewritten = []
    for i, data in enumerate(forged):
        compact.append(leaf_hash(data))
        rewritten.append(StoredEntry(i, data, leaf_hash(data), compact.root()))
    report = verify_log(rewritten, checkpoints, LOG_KEY.verifier())
    mismatch = [p for p in report.problems if p.kind is ProblemKind.CHECKPOINT_MISMATCH]
    assert [(p.checkpoint, p.position) for p in mismatch] == [(2, 16), (3, 16)]
    assert "positions 16 to 23" in mismatch[0].detail
    assert report.latest_matching is not None and report.latest_matching.size == 16


def test_deleted_entry_is_reported_at_its_position() -> None:
    rows = honest_log(20)
    checkpoints = [checkpoint_of(rows, 20)]
    del rows[6]
    report = verify_log(rows, checkpoints, LOG_KEY.verifier())
    gap = [p for p in report.problems if p.kind is ProblemKind.POSITION_GAP]
    assert [p.position for p in gap] == [6]
    assert ProblemKind.CHECKPOINT_BEYOND_LOG in kinds(report.problems)


def test_deleted_entry_with_positions_renumbered_is_reported_at_its_position() -> None:
    rows = honest_log(20)
    checkpoints = [checkpoint_of(rows, 12)]
    del rows[6]
    rows = [dataclasses.replace(r, position=i) for i, r in enumerate(rows)]
    report = verify_log(rows, checkpoints, LOG_KEY.verifier())
    assert kinds(report.problems) == [ProblemKind.ROOT_DIVERGES, ProblemKind.CHECKPOINT_MISMATCH]
    assert [p.position for p in report.problems] == [6, 6]


def test_last_entries_deleted_is_reported_as_truncation() -> None:
    rows = honest_log(20)
    checkpoints = [checkpoint_of(rows, 20)]
    report = verify_log(rows[:15], checkpoints, LOG_KEY.verifier())
    assert [(p.kind, p.position) for p in report.problems] == [
        (ProblemKind.CHECKPOINT_BEYOND_LOG, 15)
    ]


def test_two_entries_swapped_are_reported_at_the_first() -> None:
    rows = honest_log(20)
    checkpoints = [checkpoint_of(rows, 20)]
    rows[9], rows[10] = (
        dataclasses.replace(rows[10], position=9, recorded_root=rows[9].recorded_root),
        dataclasses.replace(rows[9], position=10, recorded_root=rows[10].recorded_root),
    )
    report = verify_log(rows, checkpoints, LOG_KEY.verifier())
    assert [(p.kind, p.position) for p in report.problems] == [
        (ProblemKind.ROOT_DIVERGES, 9),
        (ProblemKind.CHECKPOINT_MISMATCH, 9),
    ]


def test_two_entries_swapped_without_running_roots_are_bracketed() -> None:
    rows = honest_log(20, running_roots=False)
    checkpoints = [checkpoint_of(rows, s) for s in (4, 8, 12, 20)]
    rows[9], rows[10] = (
        dataclasses.replace(rows[10], position=9),
        dataclasses.replace(rows[9], position=10),
    )
    report = verify_log(rows, checkpoints, LOG_KEY.verifier())
    mismatch = [p for p in report.problems if p.kind is ProblemKind.CHECKPOINT_MISMATCH]
    assert [(p.checkpoint, p.position) for p in mismatch] == [(2, 8), (3, 8)]
    assert "positions 8 to 11" in mismatch[0].detail


def test_two_rows_swapped_with_their_positions_are_reported_as_out_of_order() -> None:
    rows = honest_log(20)
    rows[9], rows[10] = rows[10], rows[9]
    report = verify_log(rows, [], LOG_KEY.verifier())
    gap = [p for p in report.problems if p.kind is ProblemKind.POSITION_GAP]
    assert [p.position for p in gap] == [9, 10, 11]
    assert report.problems[0].position == 9


def test_inserted_entry_is_reported_at_its_position() -> None:
    rows = honest_log(20)
    checkpoints = [checkpoint_of(rows, 20)]
    forged = entry(77).canonical_bytes()
    rows.insert(5, StoredEntry(5, forged, leaf_hash(forged), None))
    rows = [dataclasses.replace(r, position=i) for i, r in enumerate(rows)]
    report = verify_log(rows, checkpoints, LOG_KEY.verifier())
    divergence = [p for p in report.problems if p.kind is ProblemKind.ROOT_DIVERGES]
    assert [p.position for p in divergence] == [
        6
    ]  # the first row whose recorded root no longer fits
    mismatch = [p for p in report.problems if p.kind is ProblemKind.CHECKPOINT_MISMATCH]
    assert [p.position for p in mismatch] == [6]


def test_inserted_entry_with_a_running_root_forged_is_located() -> None:
    rows = honest_log(20)
    forged = entry(77).canonical_bytes()
    compact = CompactRange.from_leaf_hashes(r.recorded_hash for r in rows[:5])
    compact.append(leaf_hash(forged))
    rows.insert(5, StoredEntry(5, forged, leaf_hash(forged), compact.root()))
    rows = [dataclasses.replace(r, position=i) for i, r in enumerate(rows)]
    report = verify_log(rows, [checkpoint_of(honest_log(20), 20)], LOG_KEY.verifier())
    assert report.problems[0].kind is ProblemKind.ROOT_DIVERGES
    assert report.problems[0].position == 6


def test_checkpoint_signed_by_another_key_is_reported() -> None:
    rows = honest_log(10)
    other = SignerKey.generate(ORIGIN)
    checkpoints = [checkpoint_of(rows, 5), checkpoint_of(rows, 10, key=other)]
    report = verify_log(rows, checkpoints, LOG_KEY.verifier())
    assert [(p.kind, p.checkpoint) for p in report.problems] == [
        (ProblemKind.CHECKPOINT_INVALID, 1)
    ]
    assert "no trusted key" in report.problems[0].detail
    assert report.checkpoints_verified == 1


def test_forked_history_two_checkpoints_of_one_size_is_reported() -> None:
    rows = honest_log(10)
    fork = [
        *rows[:6],
        *[StoredEntry(i, entry(100 + i).canonical_bytes(), b"", None) for i in range(6, 10)],
    ]
    checkpoints = [checkpoint_of(rows, 10), checkpoint_of(fork, 10)]
    report = verify_log(rows, checkpoints, LOG_KEY.verifier())
    assert (ProblemKind.FORK, 1) in [(p.kind, p.checkpoint) for p in report.problems]


def test_forked_history_old_checkpoint_not_a_prefix_of_a_new_one_is_reported() -> None:
    """The log signed size 8 of one history, then rewrote it and signed size 12 of another."""
    first = honest_log(8)
    old = checkpoint_of(first, 8)
    rewritten_data = [r.data for r in first]
    rewritten_data[3] = entry(303).canonical_bytes()
    rewritten_data += [entry(i).canonical_bytes() for i in range(8, 12)]
    compact = CompactRange()
    rows = []
    for i, data in enumerate(rewritten_data):
        compact.append(leaf_hash(data))
        rows.append(StoredEntry(i, data, leaf_hash(data), compact.root()))
    new = checkpoint_of(rows, 12)
    report = verify_log(rows, [old, new], LOG_KEY.verifier())
    assert [(p.kind, p.checkpoint) for p in report.problems] == [(ProblemKind.FORK, 0)]
    assert report.latest_matching is not None and report.latest_matching.size == 12


def test_malformed_entry_bytes_are_reported() -> None:
    rows = honest_log(5, running_roots=False)
    bad = b'{"kind":"verdict"}'
    rows[2] = StoredEntry(2, bad, leaf_hash(bad), None)
    report = verify_log(rows, [], LOG_KEY.verifier())
    assert [(p.kind, p.position) for p in report.problems] == [(ProblemKind.ENTRY_MALFORMED, 2)]


# --- entries ---


def test_entry_canonical_bytes_are_sorted_compact_utf8() -> None:
    e = LogEntry(
        EntryKind.OPERATOR_ACTION,
        datetime(2026, 7, 21, 16, 0, 0, 5, tzinfo=timezone(timedelta(hours=2))),
        {"device_id": "capteur-é", "caller": "alice@ops", "action": "revoke", "pcrs": (0, 7)},
    )
    assert (
        e.canonical_bytes()
        == (
            '{"fields":{"action":"revoke","caller":"alice@ops","device_id":"capteur-é",'
            '"pcrs":[0,7]},"kind":"operator_action","time":"2026-07-21T14:00:00.000005Z","v":1}'
        ).encode()
    )
    assert LogEntry.from_canonical(e.canonical_bytes()) == e
    assert e.leaf_hash() == leaf_hash(e.canonical_bytes())


def test_operator_action_without_a_caller_is_refused() -> None:
    with pytest.raises(AuditMalformed, match="caller"):
        LogEntry(EntryKind.OPERATOR_ACTION, T0, {"action": "revoke"})
    with pytest.raises(AuditMalformed, match="caller"):
        LogEntry(EntryKind.OPERATOR_ACTION, T0, {"action": "revoke", "caller": ""})


@pytest.mark.parametrize(
    "fields",
    [
        {"device_id": "d", "verdict_id": "v", "status": "ok", "score": 0.5},  # float
        {"device_id": "d", "verdict_id": "v", "status": "ok", "Bad": 1},  # field name
        {"device_id": "d", "verdict_id": "v", "status": "ok", "big": 2**63},
        {"device_id": "d", "verdict_id": "v", "status": "ok", "nested": {"a": 1}},
        {"device_id": "d", "verdict_id": "v", "status": "ok", "s": "\ud800"},  # lone surrogate
        {"device_id": "d", "verdict_id": "v", "status": "ok", "codes": ("a", "\udfff")},
        {"device_id": "d", "verdict_id": "v", "status": "ok", 7: "not a name"},
        {"device_id": "d", "verdict_id": "v"},  # status missing
    ],
)
def test_entry_with_unencodable_fields_is_refused(fields: dict[str, object]) -> None:
    with pytest.raises(AuditMalformed):
        LogEntry(EntryKind.VERDICT, T0, fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text", ["2026-02-30T14:00:00.000000Z", "2026-07-21T14:00:00.000000+00:00"]
)
def test_entry_time_that_is_not_a_valid_utc_instant_is_refused(text: str) -> None:
    good = entry(0).canonical_bytes().decode()
    bad = good.replace(format_time(entry(0).time), text)
    assert bad != good
    with pytest.raises(AuditMalformed, match="entry time"):
        LogEntry.from_canonical(bad.encode())


def test_entry_time_must_be_timezone_aware() -> None:
    with pytest.raises(AuditMalformed):
        LogEntry(
            EntryKind.GOLDEN_CHANGE, datetime(2026, 1, 1), {"golden_digest": "g", "change": "add"}
        )


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: s.replace(",", ", ", 1),  # whitespace
        lambda s: s.replace('"v":1', '"v":1.0'),
        lambda s: s.replace('"v":1', '"v":2'),
        lambda s: s.replace('"kind":"verdict"', '"kind":"Verdict"'),
        lambda s: s.replace("14:00:00.000000Z", "14:00:00Z"),
        lambda s: s.replace('"v":1}', '"v":1,"v":1}'),  # duplicate key
        lambda s: s.replace("dev-0", "dev\\u002d0"),  # escaped form of the same string
        lambda s: json.dumps(json.loads(s)),  # same document, another encoding
    ],
)
def test_non_canonical_entry_bytes_are_refused(mutate: object) -> None:
    good = entry(0).canonical_bytes().decode()
    bad = mutate(good)  # type: ignore[operator]
    assert bad != good
    with pytest.raises(AuditMalformed):
        LogEntry.from_canonical(bad.encode())


def test_entry_fields_are_read_only() -> None:
    e = entry(0)
    with pytest.raises(TypeError):
        e.fields["status"] = "contraindicated"  # type: ignore[index]
