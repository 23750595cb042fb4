"""The verifier's metrics: recording, bounded labels, the coverage refresher, multiprocess sums."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import cast

import pytest
from prometheus_client import REGISTRY, CollectorRegistry

from verifier import errors
from verifier.metrics import (
    OTHER,
    BoundedLabel,
    Coverage,
    CoverageRefresher,
    EnrollmentResult,
    FreshnessFailure,
    Refusal,
    VerifierMetrics,
    exported_names,
    refusal_for,
)
from verifier.store.base import Store
from verifier.store.instrumented import instrument
from verifier.verdict import Status

ROOT = Path(__file__).resolve().parent.parent


def value(m: VerifierMetrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def test_each_metrics_object_has_its_own_registry() -> None:
    a, b = VerifierMetrics(), VerifierMetrics()
    a.attestation(Status.AFFIRMING)
    assert value(a, "fleetattest_attestations_total", outcome="affirming") == 1
    assert value(b, "fleetattest_attestations_total", outcome="affirming") == 0


def test_attestations_count_by_outcome_and_reason() -> None:
    m = VerifierMetrics()
    m.attestation(Status.AFFIRMING)
    m.attestation(Status.CONTRAINDICATED, ["pcr_mismatch", "clock_rollback"])
    m.attestation(Status.CONTRAINDICATED, ["pcr_mismatch"])
    assert value(m, "fleetattest_attestations_total", outcome="affirming") == 1
    assert value(m, "fleetattest_attestations_total", outcome="contraindicated") == 2
    assert value(m, "fleetattest_attestations_total", outcome="warning") == 0
    assert value(m, "fleetattest_verdict_reasons_total", code="pcr_mismatch") == 2
    assert value(m, "fleetattest_verdict_reasons_total", code="clock_rollback") == 1


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (errors.LimitExceeded("big"), Refusal.LIMIT_EXCEEDED),
        (errors.EventLogError("bad log"), Refusal.MALFORMED),
        (errors.MalformedEvidence("junk"), Refusal.MALFORMED),
        (errors.NonceMismatch("n"), Refusal.NONCE_MISMATCH),
        (errors.StaleEvidence("s"), Refusal.STALE_EVIDENCE),
        (errors.SignatureInvalid("sig"), Refusal.SIGNATURE),
        (errors.ApprovalRequired("a"), Refusal.ENROLLMENT_REFUSED),
        (errors.UntrustedEndorsement("ek"), Refusal.ENROLLMENT_REFUSED),
        (errors.UnknownDevice("d"), Refusal.UNKNOWN_DEVICE),
        (errors.PolicyViolation("p"), Refusal.POLICY),
        (errors.StoreUnavailable("db"), Refusal.STORE_UNAVAILABLE),
        (RuntimeError("boom"), Refusal.INTERNAL),
    ],
)
def test_refusal_label_follows_the_most_specific_error_class(
    exc: BaseException, kind: Refusal
) -> None:
    assert refusal_for(exc) is kind


def test_refusals_are_counted_per_rpc_and_type() -> None:
    m = VerifierMetrics()
    m.refusal("Attest", Refusal.NONCE_MISMATCH)
    m.refusal("Attest", Refusal.NONCE_MISMATCH)
    m.refusal("WatchVerdicts", Refusal.SHED_LOAD)
    assert value(m, "fleetattest_refusals_total", rpc="Attest", error_type="nonce_mismatch") == 2
    assert value(m, "fleetattest_refusals_total", rpc="WatchVerdicts", error_type="shed_load") == 1


def test_device_ids_offered_as_label_values_become_other() -> None:
    m = VerifierMetrics()
    m.attestation(Status.CONTRAINDICATED, ["dev-4f2a/../x", "Serial 1234"])
    m.refusal("/fleetattest.v1.Agent/Attest", Refusal.MALFORMED)
    m.store_error("DROP TABLE devices")
    assert value(m, "fleetattest_verdict_reasons_total", code=OTHER) == 2
    assert value(m, "fleetattest_refusals_total", rpc=OTHER, error_type="malformed") == 1
    assert value(m, "fleetattest_store_errors_total", op=OTHER) == 1


def test_label_values_stop_growing_at_the_cap() -> None:
    label = BoundedLabel(r"[a-z0-9_]+", cap=3)
    kept = [label(f"code_{i}") for i in range(10)]
    assert kept[:3] == ["code_0", "code_1", "code_2"]
    assert set(kept[3:]) == {OTHER}
    assert label("code_1") == "code_1"  # a value already kept stays kept


def test_every_metric_series_has_bounded_labels_after_a_flood() -> None:
    m = VerifierMetrics()
    for i in range(2000):
        m.attestation(Status.WARNING, [f"reason_{i}"])
        m.store_latency(f"op_{i}", 0.001)
        m.observe_rpc(f"Rpc{i}", 0.01)
    series = sum(len(family.samples) for family in m.registry.collect())
    assert series < 3000  # 128 reasons + 64 ops and 64 RPCs (x histogram buckets) + fixed


def test_golden_digest_label_is_replaced_on_reload() -> None:
    m = VerifierMetrics()
    m.golden_reload(True, "sha256:aaa", now=100.0)
    m.golden_reload(False, "sha256:aaa", now=150.0)
    assert value(m, "fleetattest_golden_reload_failing") == 1
    m.golden_reload(True, "sha256:bbb", now=200.0)
    assert value(m, "fleetattest_golden_info", digest="sha256:aaa") is None
    assert value(m, "fleetattest_golden_info", digest="sha256:bbb") == 1
    assert value(m, "fleetattest_golden_last_success_timestamp_seconds") == 200.0
    assert value(m, "fleetattest_golden_reload_failing") == 0
    assert value(m, "fleetattest_golden_reloads_total", result="ok") == 2
    assert value(m, "fleetattest_golden_reloads_total", result="failed") == 1


def test_failed_reload_keeps_the_last_good_time() -> None:
    m = VerifierMetrics()
    m.golden_reload(True, "sha256:aaa", now=100.0)
    m.golden_reload(False, "sha256:aaa", now=500.0)
    assert value(m, "fleetattest_golden_last_success_timestamp_seconds") == 100.0
    assert value(m, "fleetattest_golden_info", digest="sha256:aaa") == 1


def test_rpc_in_flight_is_released_when_the_handler_raises() -> None:
    m = VerifierMetrics()
    with pytest.raises(errors.NonceMismatch), m.rpc_in_flight("Attest"):
        assert value(m, "fleetattest_rpcs_in_flight", rpc="Attest") == 1
        raise errors.NonceMismatch("reused")
    assert value(m, "fleetattest_rpcs_in_flight", rpc="Attest") == 0
    assert value(m, "fleetattest_rpc_duration_seconds_count", rpc="Attest") == 1


def test_store_call_counts_the_error_and_lets_it_through() -> None:
    m = VerifierMetrics()

    class Flaky:
        calls = 0

        def consume_nonce(self, device_id: str, nonce: bytes, now: float) -> None:
            self.calls += 1
            if self.calls == 2:
                raise errors.StoreUnavailable("connection refused")

    store = instrument(cast(Store, Flaky()), m)
    store.consume_nonce("d", b"n", 0.0)
    with pytest.raises(errors.StoreUnavailable, match="connection refused"):
        store.consume_nonce("d", b"n", 0.0)
    assert value(m, "fleetattest_store_errors_total", op="consume_nonce") == 1
    assert value(m, "fleetattest_store_operation_duration_seconds_count", op="consume_nonce") == 2


def test_rollout_no_go_counts_every_reason() -> None:
    m = VerifierMetrics()
    m.rollout_decision(True)
    m.rollout_decision(False, ["verdict_expired", "not_affirming"])
    assert value(m, "fleetattest_rollout_decisions_total", decision="go") == 1
    assert value(m, "fleetattest_rollout_decisions_total", decision="no_go") == 1
    assert value(m, "fleetattest_rollout_deny_reasons_total", reason="not_affirming") == 1


def test_freshness_enrollment_streams_keys_and_propagation() -> None:
    m = VerifierMetrics()
    m.freshness_failure(FreshnessFailure.NONCE_REUSED)
    m.enrollment(EnrollmentResult.APPROVAL_REQUIRED)
    m.stream_opened()
    m.stream_opened()
    m.stream_closed()
    m.token_key(age_seconds=86400.0, overlap_left_seconds=-5.0)
    m.revocation_propagation(1.5)
    m.appraisal_seconds(0.004)
    assert value(m, "fleetattest_freshness_failures_total", kind="nonce_reused") == 1
    assert value(m, "fleetattest_freshness_failures_total", kind="nonce_expired") == 0
    assert value(m, "fleetattest_enrollments_total", outcome="approval_required") == 1
    assert value(m, "fleetattest_streams_open") == 1
    assert value(m, "fleetattest_token_signing_key_age_seconds") == 86400.0
    assert value(m, "fleetattest_token_rotation_overlap_seconds") == 0.0
    assert value(m, "fleetattest_revocation_propagation_seconds_bucket", le="2.5") == 1
    assert value(m, "fleetattest_revocation_propagation_seconds_bucket", le="1.0") == 0
    assert value(m, "fleetattest_appraisal_duration_seconds_count") == 1


def test_coverage_refresh_failure_keeps_the_last_counts() -> None:
    m = VerifierMetrics()
    answers: list[Coverage | Exception] = [
        Coverage(enrolled=10, current_affirming=7, expired=2, never_attested=1),
        errors.StoreUnavailable("down"),
    ]

    def query() -> Coverage:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    refresher = CoverageRefresher(m, query, period=60.0, clock=lambda: 1000.0)
    assert refresher.refresh()
    assert not refresher.refresh()
    assert value(m, "fleetattest_devices_enrolled") == 10
    assert value(m, "fleetattest_devices_current_affirming") == 7
    assert value(m, "fleetattest_devices_expired") == 2
    assert value(m, "fleetattest_devices_never_attested") == 1
    assert value(m, "fleetattest_coverage_refresh_timestamp_seconds") == 1000.0
    assert value(m, "fleetattest_coverage_refresh_failures_total") == 1


def test_coverage_refresher_thread_queries_until_stopped() -> None:
    m = VerifierMetrics()
    calls = 0
    third = threading.Event()

    def query() -> Coverage:
        nonlocal calls
        calls += 1
        if calls == 3:
            third.set()
        return Coverage(calls, 0, 0, calls)

    refresher = CoverageRefresher(m, query, period=0.01)
    refresher.start()
    assert third.wait(30)
    refresher.stop()
    stopped_at = calls
    assert value(m, "fleetattest_devices_enrolled") == stopped_at
    with pytest.raises(RuntimeError):
        refresher.start()


def test_refresher_refuses_a_zero_period() -> None:
    with pytest.raises(ValueError):
        CoverageRefresher(VerifierMetrics(), lambda: Coverage(0, 0, 0, 0), period=0)


def test_exported_names_include_type_suffixes() -> None:
    names = exported_names(VerifierMetrics().registry)
    assert "fleetattest_attestations_total" in names
    assert "fleetattest_rpc_duration_seconds_bucket" in names
    assert "fleetattest_rpc_duration_seconds_count" in names
    assert "fleetattest_devices_enrolled" in names


def test_metrics_do_not_leak_into_the_default_registry() -> None:
    VerifierMetrics()
    assert not any(n.startswith("fleetattest_") for n in exported_names(REGISTRY))
    assert isinstance(VerifierMetrics(CollectorRegistry()).registry, CollectorRegistry)


_MULTIPROCESS_SCRIPT = textwrap.dedent(
    """
    import json, multiprocessing, os, sys, urllib.request
    from pathlib import Path
    from verifier.metrics_http import (
        enable_multiprocess, mark_worker_dead, multiprocess_registry, start_metrics_server,
    )

    directory = Path(sys.argv[1])
    enable_multiprocess(directory)

    def worker(n, opened, release):
        from verifier.metrics import Coverage, Refusal, VerifierMetrics
        from verifier.verdict import Status
        m = VerifierMetrics(version="test")
        for _ in range(n):
            m.attestation(Status.AFFIRMING)
            m.observe_rpc("Attest", 0.05)
        m.attestation(Status.CONTRAINDICATED)
        m.refusal("Attest", Refusal.NONCE_MISMATCH)
        m.stream_opened()
        m.golden_reload(True, "sha256:abc", now=1000.0 + n)
        m.coverage(Coverage(100, 90 + n, 5, 5), now=1.0)
        opened.set()
        release.wait(60)

    ctx = multiprocessing.get_context("fork")
    release = ctx.Event()
    procs, events = [], []
    for n in (3, 5):
        opened = ctx.Event()
        p = ctx.Process(target=worker, args=(n, opened, release))
        p.start()
        procs.append(p)
        events.append(opened)
    for e in events:
        assert e.wait(60)

    def scrape(url):
        from prometheus_client.parser import text_string_to_metric_families
        text = urllib.request.urlopen(url, timeout=30).read().decode()
        out = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                key = s.name + json.dumps(s.labels, sort_keys=True)
                out[key] = s.value
        return out

    server = start_metrics_server("127.0.0.1:0", multiprocess_registry(directory))
    url = f"http://127.0.0.1:{server.port}/metrics"
    live = scrape(url)
    release.set()
    for p in procs:
        p.join(60)
        mark_worker_dead(p.pid, directory)
    dead = scrape(url)
    server.stop()
    print(json.dumps({"live": live, "dead": dead}))
    """
)


def test_two_worker_processes_are_summed_by_one_collector(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _MULTIPROCESS_SCRIPT, str(tmp_path / "mp")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    scraped = json.loads(result.stdout)
    live, dead = scraped["live"], scraped["dead"]

    def at(samples: dict[str, float], name: str, **labels: str) -> float | None:
        return samples.get(name + json.dumps(labels, sort_keys=True))

    for samples in (live, dead):  # counters and histograms survive their workers
        assert at(samples, "fleetattest_attestations_total", outcome="affirming") == 8
        assert at(samples, "fleetattest_attestations_total", outcome="contraindicated") == 2
        assert (
            at(samples, "fleetattest_refusals_total", rpc="Attest", error_type="nonce_mismatch")
            == 2
        )
        assert at(samples, "fleetattest_rpc_duration_seconds_count", rpc="Attest") == 8
        assert at(samples, "fleetattest_rpc_duration_seconds_bucket", rpc="Attest", le="0.1") == 8
    assert at(live, "fleetattest_streams_open") == 2  # livesum
    assert at(live, "fleetattest_golden_info", digest="sha256:abc") == 2  # both serve it
    assert at(live, "fleetattest_golden_last_success_timestamp_seconds") == 1003.0  # livemin
    assert at(live, "fleetattest_devices_current_affirming") in (93.0, 95.0)  # most recent
    assert at(dead, "fleetattest_streams_open") is None  # dead workers' live gauges dropped
    assert at(dead, "fleetattest_golden_info", digest="sha256:abc") is None
