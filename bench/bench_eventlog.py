"""Benchmark: parse + replay + facts + event-rule evaluation of real event logs.

    .venv/bin/python bench/bench_eventlog.py [--runs N]

Prints the median and p99 wall time of one full pass (what the appraisal does per attestation)
for keylime's 99-event Secure Boot log and for tpm2-tss's 204-event H-CRTM log (three banks),
against rules that the boot passes (so every rule is evaluated in full). Targets: under 0.5 ms
for the 99-event log and under 1 ms for the 200-event one (median wall time; the CPU time of
the thread is printed too, as it is less disturbed by other processes on a busy machine).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from verifier.eventlog import BootFacts, extract_facts, parse_event_log, replay
from verifier.golden.model import CmdlineRule, EventRules
from verifier.golden.rules import evaluate_event_rules

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "eventlogs"
LOGS = {
    "keylime/binary_bios_measurements-secureboot": 0.5,
    "tpm2-tss/binary_measurements_hcrtm.bin": 1.0,
}
BANK = "sha256"


def golden_rules(facts: BootFacts) -> EventRules:
    """Rules the boot passes, with every kind of rule present."""
    db = facts.database("db")
    dbx = facts.database("dbx")
    return EventRules(
        scrtm_versions=(facts.scrtm_version or "",),
        secure_boot=facts.secure_boot,
        db_contains=db.content.certificates[:2] if db else (),
        dbx_contains=dbx.content.hashes[:10] if dbx else (),
        boot_chain=tuple(app.digest for app in facts.boot_apps),
        kernel_cmdline=CmdlineRule(exact=facts.kernel_cmdline or ""),
    )


def one_pass(data: bytes, rules: EventRules) -> Callable[[], int]:
    quirks: frozenset[str] = frozenset()

    def run() -> int:
        log = parse_event_log(data)
        replay(log, BANK)
        facts = extract_facts(log, BANK, quirks)
        return len(evaluate_event_rules(facts, rules, "bench"))

    return run


def measure(run: Callable[[], int], runs: int) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU (thread) seconds of each run, after a warm-up."""
    for _ in range(200):
        run()
    wall: list[float] = []
    cpu: list[float] = []
    clock = time.perf_counter
    thread = time.thread_time
    for _ in range(runs):
        start, start_cpu = clock(), thread()
        run()
        cpu.append(thread() - start_cpu)
        wall.append(clock() - start)
    return wall, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5000)
    ns = parser.parse_args()
    gc.collect()
    failed = False
    for rel, target_ms in LOGS.items():
        data = (DATA / rel).read_bytes()
        log = parse_event_log(data)
        facts = extract_facts(log, BANK, frozenset())
        rules = golden_rules(facts)
        run = one_pass(data, rules)
        assert run() == 0, "the golden rules must pass"
        wall, cpu = measure(run, ns.runs)
        wall.sort()
        median = statistics.median(wall) * 1000
        p99 = wall[int(len(wall) * 0.99) - 1] * 1000
        cpu_median = statistics.median(cpu) * 1000
        verdict = "ok" if median < target_ms else "OVER TARGET"
        failed |= median >= target_ms
        print(
            f"{rel:45} {len(log.events):4d} events {len(data):6d} bytes  "
            f"median {median:.3f} ms  p99 {p99:.3f} ms  cpu median {cpu_median:.3f} ms"
            f"  (target {target_ms} ms: {verdict})"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
