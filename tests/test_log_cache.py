"""The log-appraisal memo returns exactly what the pure function returns, and nothing stale."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from simulator.firmware import boot
from simulator.profiles import GOOD_A, INIT_SH
from verifier.golden.evidence_policy import LogAppraisalCache, appraise_profile_log
from verifier.golden.load import load_golden_dir

GOLDEN = load_golden_dir(Path(__file__).resolve().parent.parent / "golden_measurements")
PROFILE = GOLDEN.profiles[0]


def record(firmware: object) -> tuple[bytes, dict[int, bytes]]:
    rec = boot(firmware, lambda pcr, digests: None)  # type: ignore[arg-type]
    pcrs = rec.expected_pcrs["sha256"]
    return rec.log, {i: pcrs.get(i, bytes(32)) for i in PROFILE.pcrs}


def test_cached_appraisal_equals_the_pure_one_and_is_reused() -> None:
    cache = LogAppraisalCache()
    log, pcrs = record(GOOD_A)
    first = cache.appraise(PROFILE, log, "sha256", pcrs)
    again = cache.appraise(PROFILE, log, "sha256", dict(pcrs))
    assert first == appraise_profile_log(PROFILE, log, "sha256", pcrs)
    assert again is first and (cache.hits, cache.misses) == (1, 1)


def test_same_log_against_other_quoted_pcrs_is_not_served_from_the_cache() -> None:
    cache = LogAppraisalCache()
    log, pcrs = record(GOOD_A)
    good = cache.appraise(PROFILE, log, "sha256", pcrs)
    forged = dict(pcrs)
    forged[4] = b"\x44" * 32  # the quote proves another PCR 4: the log no longer replays
    other = cache.appraise(PROFILE, log, "sha256", forged)
    assert other != good
    assert "eventlog_replay_mismatch" in {r.code for r in other.reasons}
    assert cache.misses == 2


def test_a_different_log_or_quirk_set_is_a_different_entry() -> None:
    cache = LogAppraisalCache()
    log, pcrs = record(GOOD_A)
    bad_log, bad_pcrs = record(INIT_SH)
    cache.appraise(PROFILE, log, "sha256", pcrs)
    bad = cache.appraise(PROFILE, bad_log, "sha256", bad_pcrs)
    assert bad.facts is not None and "init=/bin/sh" in (bad.facts.kernel_cmdline or "")
    quirky = replace(PROFILE, quirks=frozenset({"missing_exit_boot_services"}))
    cache.appraise(quirky, log, "sha256", pcrs)
    assert cache.misses == 3 and cache.hits == 0


def test_cache_stays_within_its_capacity() -> None:
    cache = LogAppraisalCache(capacity=2)
    log, pcrs = record(GOOD_A)
    for k in range(5):
        changed = dict(pcrs)
        changed[9] = bytes([k]) * 32
        cache.appraise(PROFILE, log, "sha256", changed)
    assert len(cache._entries) == 2
