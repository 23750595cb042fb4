"""Benchmark: the audit log's pure core at a million entries.

    .venv/bin/python bench/bench_audit.py [--entries N] [--proofs N]

Prints wall and process CPU time for: building canonical entries; appending their leaf hashes
to a ``CompactRange`` (what a log keeps per append) and to a ``MerkleTree`` (what proof serving
keeps), with the root; the per-append cost with a running root recorded; inclusion and
consistency proof generation and verification; signing and opening a checkpoint; and
``verify_log`` over the whole log, with and without recorded running roots. No assertions.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from verifier.audit import (
    Checkpoint,
    CompactRange,
    EntryKind,
    LogEntry,
    MerkleTree,
    SignerKey,
    StoredEntry,
    leaf_hash,
    open_checkpoint,
    sign_checkpoint,
    verify_consistency,
    verify_inclusion,
    verify_log,
)

T = TypeVar("T")
ORIGIN = "bench.example/audit"


def timed(label: str, fn: Callable[[], T], per: int = 0) -> T:
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    each = f"  ({wall / per * 1e6:.2f} us each)" if per else ""
    print(f"{label:<58} wall {wall:8.3f} s  cpu {cpu:8.3f} s{each}")
    return result


def make_entries(n: int) -> list[bytes]:
    t0 = datetime(2026, 7, 21, tzinfo=UTC)
    return [
        LogEntry(
            EntryKind.VERDICT,
            t0 + timedelta(milliseconds=i),
            {
                "device_id": f"device-{i % 10_000:05d}",
                "verdict_id": f"{i:016x}",
                "status": "affirming",
                "golden_digest": "sha256:" + "ab" * 32,
                "evidence_digest": "sha256:" + f"{i:064x}",
                "reasons": (),
            },
        ).canonical_bytes()
        for i in range(n)
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--proofs", type=int, default=10_000)
    args = parser.parse_args()
    n = args.entries

    data = timed(f"build {n} canonical verdict entries", lambda: make_entries(n), n)
    print(f"  mean canonical entry size: {sum(map(len, data)) / n:.0f} bytes")
    leaves = timed(f"leaf-hash {n} entries", lambda: [leaf_hash(d) for d in data], n)

    def compact_append() -> bytes:
        compact = CompactRange()
        for leaf in leaves:
            compact.append(leaf)
        return compact.root()

    root = timed(f"CompactRange: append {n} leaves + root", compact_append, n)

    def running_roots() -> list[bytes]:
        compact = CompactRange()
        roots = []
        for leaf in leaves:
            compact.append(leaf)
            roots.append(compact.root())
        return roots

    roots = timed(f"CompactRange: append {n} leaves + root after each", running_roots, n)
    tree = timed(f"MerkleTree: append {n} leaves", lambda: MerkleTree(leaves), n)
    assert tree.root() == root == roots[-1]

    rng = random.Random(1)
    picks = [rng.randrange(n) for _ in range(args.proofs)]
    proofs = timed(
        f"inclusion proofs x{args.proofs} (size {n})",
        lambda: [tree.inclusion_proof(i, n) for i in picks],
        args.proofs,
    )

    def verify_inclusions() -> None:
        for i, proof in zip(picks, proofs, strict=True):
            verify_inclusion(leaves[i], i, n, proof, root)

    timed(f"verify inclusion proofs x{args.proofs}", verify_inclusions, args.proofs)
    olds = [rng.randrange(1, n) for _ in range(args.proofs)]
    consistency = timed(
        f"consistency proofs x{args.proofs} (to size {n})",
        lambda: [tree.consistency_proof(m, n) for m in olds],
        args.proofs,
    )

    def verify_consistencies() -> None:
        for m, proof in zip(olds, consistency, strict=True):
            verify_consistency(m, n, tree.root(m), root, proof)

    timed(f"verify consistency proofs x{args.proofs}", verify_consistencies, args.proofs)

    key = SignerKey.generate(ORIGIN)
    sizes = sorted({*rng.sample(range(1, n + 1), 99), n})
    checkpoints = timed(
        f"sign {len(sizes)} checkpoints",
        lambda: [sign_checkpoint(Checkpoint(ORIGIN, s, tree.root(s)), key) for s in sizes],
        len(sizes),
    )
    timed(
        f"open {len(sizes)} checkpoints",
        lambda: [open_checkpoint(c, key.verifier()) for c in checkpoints],
        len(sizes),
    )

    plain = [StoredEntry(i, data[i], leaves[i]) for i in range(n)]
    with_roots = [StoredEntry(i, data[i], leaves[i], roots[i]) for i in range(n)]
    for label, rows in (("", plain), (" with running roots", with_roots)):
        report = timed(
            f"verify_log: {n} entries, {len(sizes)} checkpoints{label}",
            lambda rows=rows: verify_log(rows, checkpoints, key.verifier()),  # type: ignore[misc]
            n,
        )
        print(f"  ok={report.ok} problems={len(report.problems)} size={report.size}")


if __name__ == "__main__":
    main()
