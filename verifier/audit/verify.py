"""``audit verify``: recompute the log's tree from stored entries and check every checkpoint.

Pure: entries and signed checkpoints in, an ``AuditReport`` out; nothing raises for a problem
in the data, every problem is reported with the log position it concerns. Entries stream
(an iterable, e.g. a database cursor); the tree state is a ``CompactRange``.

Checks, in the order they are reported:

1. per stored entry, in the order given (that order is the log's order):
   - its stored position continues the previous one (``POSITION_GAP``: deleted, inserted or
     reordered rows);
   - its bytes are a canonical ``LogEntry`` (``ENTRY_MALFORMED``);
   - its bytes hash to the leaf hash recorded at append time (``ENTRY_CHANGED``);
   - if the store recorded the running root at append time, the root recomputed from the bytes
     equals it (``ROOT_DIVERGES``, reported at the first position of each diverging run: with
     running roots a swap, deletion or insertion is located exactly);
2. per signed checkpoint: the log's key signed it (``CHECKPOINT_INVALID``); two checkpoints of
   one size have one root (``FORK``); the log holds at least its size (``CHECKPOINT_BEYOND_LOG``:
   truncated); its root equals the recomputed root of that prefix, else either ``FORK`` (a larger
   checkpoint matches the stored log, so the key signed two histories) or
   ``CHECKPOINT_MISMATCH``, located at the first known problem in the prefix or, failing that,
   between the largest matching smaller checkpoint and the checkpoint's size.

The tree is always recomputed from the entries' bytes, never from the recorded hashes.
``RECORD_CHANGED`` and ``RECORD_MISSING`` are reported by the store-side check
(``verifier.auditlog.check_records``), which compares verdict and evidence rows with the
entries recorded for them.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from verifier.audit.checkpoint import Checkpoint, open_checkpoint
from verifier.audit.entry import LogEntry
from verifier.audit.errors import AuditError
from verifier.audit.merkle import EMPTY_ROOT, CompactRange, leaf_hash
from verifier.audit.note import VerifierKey
from verifier.limits import DEFAULT_LIMITS, Limits


@dataclass(frozen=True)
class StoredEntry:
    """One row of the log as the store holds it."""

    position: int
    data: bytes  # the entry's canonical bytes
    recorded_hash: bytes  # the leaf hash computed when it was appended
    recorded_root: bytes | None = None  # root of positions [0, position] when it was appended


class ProblemKind(enum.Enum):
    POSITION_GAP = "position_gap"
    ENTRY_MALFORMED = "entry_malformed"
    ENTRY_CHANGED = "entry_changed"
    ROOT_DIVERGES = "root_diverges"
    CHECKPOINT_INVALID = "checkpoint_invalid"
    CHECKPOINT_BEYOND_LOG = "checkpoint_beyond_log"
    CHECKPOINT_MISMATCH = "checkpoint_mismatch"
    FORK = "fork"
    RECORD_CHANGED = "record_changed"  # a verdict or evidence row differs from its entry
    RECORD_MISSING = "record_missing"  # a verdict row deleted without retention purging it


@dataclass(frozen=True)
class Problem:
    kind: ProblemKind
    position: int | None  # the (first) log position concerned, if it can be determined
    checkpoint: int | None  # index of the checkpoint concerned in the list given
    detail: str


@dataclass(frozen=True)
class AuditReport:
    size: int  # entries read
    root: bytes  # root recomputed from their bytes
    checkpoints_verified: int  # checkpoints whose signature verified
    latest_matching: Checkpoint | None  # the largest checkpoint that matches the stored log
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class _Scan:
    """What one pass over the entries found."""

    compact: CompactRange
    problems: list[Problem]
    roots_at: dict[int, bytes]  # recomputed root at each checkpoint size
    first_problem: int | None = None

    def report(self, kind: ProblemKind, position: int, detail: str) -> None:
        self.problems.append(Problem(kind, position, None, detail))
        if self.first_problem is None:
            self.first_problem = position


def verify_log(
    entries: Iterable[StoredEntry],
    checkpoints: Sequence[bytes],
    key: VerifierKey,
    origin: str | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> AuditReport:
    """Recompute the tree of ``entries`` and check them and ``checkpoints`` (see module doc)."""
    problems: list[Problem] = []
    opened = _open_checkpoints(checkpoints, key, origin, limits, problems)
    scan = _scan_entries(entries, {cp.size for _, cp in opened}, limits)
    problems[:0] = scan.problems
    matching = _check_checkpoints(opened, scan, problems)
    return AuditReport(
        size=scan.compact.size,
        root=scan.compact.root(),
        checkpoints_verified=len(opened),
        latest_matching=max(matching, key=lambda cp: cp.size, default=None),
        problems=tuple(problems),
    )


def _open_checkpoints(
    checkpoints: Sequence[bytes],
    key: VerifierKey,
    origin: str | None,
    limits: Limits,
    problems: list[Problem],
) -> list[tuple[int, Checkpoint]]:
    opened: list[tuple[int, Checkpoint]] = []
    for index, data in enumerate(checkpoints):
        try:
            opened.append((index, open_checkpoint(data, key, origin, limits)))
        except AuditError as exc:
            problems.append(Problem(ProblemKind.CHECKPOINT_INVALID, None, index, str(exc)))
    return opened


def _scan_entries(entries: Iterable[StoredEntry], sizes: set[int], limits: Limits) -> _Scan:
    scan = _Scan(CompactRange(), [], {0: EMPTY_ROOT} if 0 in sizes else {})
    diverging = False
    expected_position = 0
    for index, entry in enumerate(entries):
        if entry.position != expected_position:
            scan.report(
                ProblemKind.POSITION_GAP,
                index,
                f"stored position {entry.position} follows {expected_position - 1}: "
                "entries deleted, inserted or reordered",
            )
        expected_position = entry.position + 1
        try:
            LogEntry.from_canonical(entry.data, limits)
        except AuditError as exc:
            scan.report(ProblemKind.ENTRY_MALFORMED, index, str(exc))
        computed = leaf_hash(entry.data)
        if computed != entry.recorded_hash:
            scan.report(
                ProblemKind.ENTRY_CHANGED,
                index,
                "the entry's bytes no longer hash to the leaf hash recorded when it was appended",
            )
        scan.compact.append(computed)
        size = index + 1
        if entry.recorded_root is not None:
            matches = scan.compact.root() == entry.recorded_root
            if not matches and not diverging:
                scan.report(
                    ProblemKind.ROOT_DIVERGES,
                    index,
                    "the tree recomputed up to here differs from the root recorded at append "
                    "time: an entry here was changed, deleted, inserted or moved",
                )
            diverging = not matches
        if size in sizes:
            scan.roots_at[size] = scan.compact.root()
    return scan


def _check_checkpoints(
    opened: list[tuple[int, Checkpoint]], scan: _Scan, problems: list[Problem]
) -> list[Checkpoint]:
    by_size: dict[int, tuple[int, Checkpoint]] = {}
    for index, cp in opened:
        first = by_size.setdefault(cp.size, (index, cp))
        if first[1].root_hash != cp.root_hash:
            problems.append(
                Problem(
                    ProblemKind.FORK,
                    None,
                    index,
                    f"checkpoints {first[0]} and {index} sign different roots for size {cp.size}",
                )
            )
    matching = [(index, cp) for index, cp in opened if scan.roots_at.get(cp.size) == cp.root_hash]
    for index, cp in opened:
        if cp.size > scan.compact.size:
            problems.append(
                Problem(
                    ProblemKind.CHECKPOINT_BEYOND_LOG,
                    scan.compact.size,
                    index,
                    f"the checkpoint signs {cp.size} entries but the log holds "
                    f"{scan.compact.size}: entries from position {scan.compact.size} are missing",
                )
            )
        elif scan.roots_at[cp.size] != cp.root_hash:
            problems.append(_mismatch(index, cp, matching, scan.first_problem))
    return [cp for _, cp in matching]


def _mismatch(
    index: int,
    cp: Checkpoint,
    matching: list[tuple[int, Checkpoint]],
    first_problem: int | None,
) -> Problem:
    larger = [(i, m) for i, m in matching if m.size > cp.size]
    if larger:
        other, m = min(larger, key=lambda item: item[1].size)
        return Problem(
            ProblemKind.FORK,
            first_problem if first_problem is not None and first_problem < cp.size else None,
            index,
            f"checkpoint {index} (size {cp.size}) is not a prefix of checkpoint {other} "
            f"(size {m.size}), which matches the stored log: the log key signed two histories",
        )
    good = max((m.size for _, m in matching if m.size < cp.size), default=0)
    if first_problem is not None and first_problem < cp.size:
        where, located = first_problem, f"first known problem at position {first_problem}"
    else:
        where, located = good, f"the first divergence is in positions {good} to {cp.size - 1}"
    return Problem(
        ProblemKind.CHECKPOINT_MISMATCH,
        where,
        index,
        f"the first {cp.size} stored entries do not hash to the signed root; {located}",
    )
