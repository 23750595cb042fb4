"""IMA figures: full appraisal of a 50,000-entry log against a 200,000-digest policy,
incremental attestation of 100 new entries on 50,000 accepted, memory of the loaded policy.

Run from the repository root: ``PYTHONPATH=. python bench/bench_ima.py``.
``--digests-file`` instead loads a golden directory whose profile names a 200,000-digest
digests file (``runtime: digests_file:``) with the golden loader, as the verifier does, and
prints the load time, the memory the loaded set keeps and the peak while loading
(tracemalloc), and the process's peak RSS before and after.
Prints figures; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import hashlib
import resource
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from verifier.golden.load import load_golden_dir
from verifier.ima import write
from verifier.ima.appraise import appraise_ima
from verifier.ima.digestsfile import format_digest_lines
from verifier.ima.parse import parse_binary
from verifier.ima.replay import ExtendMode, replay
from verifier.ima.section import parse_runtime_section
from verifier.limits import Limits

ENTRIES = 50_000
POLICY_DIGESTS = 200_000
NEW = 100
BANK = "sha256"
BOOT_PCRS = {i: hashlib.sha256(b"pcr %d" % i).digest() for i in range(10)}


def _path(n: int) -> str:
    return f"/usr/lib/pkg{n % 997}/lib{n}.so.{n % 7}"


def _digest(n: int) -> bytes:
    return hashlib.sha256(n.to_bytes(8, "big")).digest()


def _section() -> dict[str, Any]:
    return {
        "digests": {_path(n): [f"sha256:{_digest(n).hex()}"] for n in range(POLICY_DIGESTS)},
        "exclude": [{"glob": "/tmp/**"}, {"regex": "/var/log/.*\\.log"}, {"glob": "/proc/*"}],
    }


def _log(count: int, start: int = 0) -> list[bytes]:
    return [write.file_entry(_path(n), _digest(n)) for n in range(start, start + count)]


def _time(func: Any, rounds: int) -> tuple[float, Any]:
    samples, result = [], None
    for _ in range(rounds):
        began = time.perf_counter()
        result = func()
        samples.append(time.perf_counter() - began)
    return statistics.median(samples), result


PROFILE = """\
profile: bench
match: {model: bench}
verdict_lifetime: 1h
pcrs: [0, 7]
releases:
  - name: r1
    pcrs:
      0: "%s"
runtime:
  digests_file: bench.sums
  exclude:
    - glob: /tmp/**
""" % ("00" * 32)


def _max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def digests_file_figures() -> None:
    with tempfile.TemporaryDirectory() as work:
        golden = Path(work)
        (golden / "bench.yaml").write_text(PROFILE)
        digests = {_path(n): [f"sha256:{_digest(n).hex()}"] for n in range(POLICY_DIGESTS)}
        with (golden / "bench.sums").open("w", encoding="utf-8") as handle:
            handle.writelines(format_digest_lines(digests))
        del digests
        size = (golden / "bench.sums").stat().st_size
        rss_before = _max_rss_mib()
        seconds, _ = _time(lambda: load_golden_dir(golden), 3)
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        loaded = load_golden_dir(golden)
        kept, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rss_after = _max_rss_mib()
    policy = loaded.profiles[0].runtime
    assert policy is not None and len(policy.digests) == POLICY_DIGESTS
    print(
        f"digests file: {POLICY_DIGESTS} digests, {size / 2**20:.1f} MiB of sha256sum lines; "
        f"load_golden_dir {seconds * 1000:.0f} ms (median of 3)"
    )
    print(
        f"memory: the loaded set keeps {(kept - base) / 2**20:.1f} MiB "
        f"({(kept - base) / POLICY_DIGESTS:.0f} bytes per digest), peak while loading "
        f"{(peak - base) / 2**20:.1f} MiB (tracemalloc); peak RSS {rss_before:.0f} MiB before "
        f"the loads, {rss_after:.0f} MiB after"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--digests-file",
        action="store_true",
        help="load the policy from a digests file through the golden loader instead",
    )
    if parser.parse_args().digests_file:
        digests_file_figures()
        return
    limits = Limits()
    section = _section()
    load, _ = _time(lambda: parse_runtime_section(section, limits=limits), 3)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    policy = parse_runtime_section(section, limits=limits).policy
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    print(
        f"policy: {POLICY_DIGESTS} digests loaded in {load * 1000:.0f} ms (median of 3), "
        f"{used / 2**20:.1f} MiB ({used / POLICY_DIGESTS:.0f} bytes per digest, tracemalloc)"
    )

    boot = write.boot_aggregate_entry(BOOT_PCRS, BANK)
    raw = [boot, *_log(ENTRIES - 1)]
    log_bytes = b"".join(raw)
    entries = parse_binary(log_bytes).entries
    pcr10 = replay(entries, BANK, ExtendMode.BANK_HASH)
    quoted = {BANK: {**BOOT_PCRS, 10: pcr10}}
    print(f"log: {ENTRIES} entries, {len(log_bytes) / 2**20:.1f} MiB binary")

    def full() -> Any:
        return appraise_ima(
            log_bytes,
            0,
            state=None,
            boot_id="1:0",
            bank=BANK,
            quoted=quoted,
            policy=policy,
            mode=ExtendMode.BANK_HASH,
        )

    seconds, result = _time(full, 5)
    assert result.new_entries == ENTRIES and not result.reasons
    print(
        f"full appraisal, mode given: {seconds * 1000:.0f} ms "
        f"({seconds / ENTRIES * 1e6:.2f} us per entry, median of 5)"
    )

    def detect() -> Any:
        return appraise_ima(
            log_bytes,
            0,
            state=None,
            boot_id="1:0",
            bank=BANK,
            quoted={BANK: {**BOOT_PCRS, 10: replay(entries, BANK, ExtendMode.SHA1_PADDED)}},
            policy=policy,
        )

    seconds, _ = _time(detect, 3)
    print(f"full appraisal, mode detected (the second mode matches): {seconds * 1000:.0f} ms")

    state = result.state
    extra = _log(NEW, start=ENTRIES)
    new_bytes = b"".join(extra)
    new_pcr = replay(parse_binary(new_bytes).entries, BANK, ExtendMode.BANK_HASH, state.pcr10)
    new_quoted = {BANK: {**BOOT_PCRS, 10: new_pcr}}

    def incremental() -> Any:
        return appraise_ima(
            new_bytes,
            ENTRIES,
            state=state,
            boot_id="1:0",
            bank=BANK,
            quoted=new_quoted,
            policy=policy,
        )

    seconds, inc = _time(incremental, 200)
    assert inc.new_entries == NEW and inc.state.entry_count == ENTRIES + NEW
    print(
        f"incremental: {NEW} new entries on {ENTRIES} accepted: {seconds * 1e6:.0f} us "
        f"(median of 200)"
    )


if __name__ == "__main__":
    main()
