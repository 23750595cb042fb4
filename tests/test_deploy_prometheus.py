"""deploy/prometheus: the rules parse, their promtool unit tests pass, and they read only
metrics the verifier exports (or the recording rules defined beside them)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from promql import (
    NO_PROMTOOL,
    PROMTOOL,
    SCRAPE_SERIES,
    metric_names,
    promtool_parse_errors,
    rules_file,
)

from verifier.metrics import VerifierMetrics, exported_names

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "prometheus"
RULES = DEPLOY / "rules.yml"
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason=NO_PROMTOOL)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=DEPLOY, capture_output=True, text=True, timeout=300, check=False
    )


@needs_promtool
def test_rules_pass_promtool_check() -> None:
    result = promtool("check", "rules", "rules.yml")
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_alert_unit_tests_pass() -> None:
    result = promtool("test", "rules", "rules_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_read_only_exported_metrics() -> None:
    exported = exported_names(VerifierMetrics().registry)
    recorded, exprs = rules_file(RULES)
    known = exported | recorded | SCRAPE_SERIES
    unknown = {name: sorted(metric_names(expr) - known) for name, expr in exprs}
    assert {name: names for name, names in unknown.items() if names} == {}


def test_every_alert_the_issue_asks_for_is_defined() -> None:
    _, exprs = rules_file(RULES)
    alerts = {name for name, _ in exprs if not name.startswith("fleetattest:")}
    assert {
        "VerifierDown",
        "VerificationSuccessRateLow",
        "FreshnessFailuresHigh",
        "CoverageBelowTarget",
        "GoldenReloadFailing",
        "TokenKeyRotationOverdue",
        "StoreErrors",
    } <= alerts


def test_the_name_check_catches_a_metric_the_verifier_does_not_export() -> None:
    exported = exported_names(VerifierMetrics().registry)
    expr = 'sum by (rpc) (rate(fleetattest_attest_total{rpc="Attest"}[5m])) / on() up'
    assert metric_names(expr) - exported - SCRAPE_SERIES == {"fleetattest_attest_total"}


def test_the_name_lexer_skips_functions_labels_and_keywords() -> None:
    expr = (
        'histogram_quantile(0.99, sum without (instance) (rate(a_bucket{le="0.2",x=~"b|c"}'
        "[5m] offset 1h))) > bool 1e3 and on (job) time() - b_seconds unless c:rule"
    )
    assert metric_names(expr) == {"a_bucket", "b_seconds", "c:rule"}


@needs_promtool
def test_the_parse_check_rejects_broken_promql() -> None:
    assert promtool_parse_errors(["sum(rate(fleetattest_attestations_total[5m])"]) != ""
    assert promtool_parse_errors(["sum(rate(fleetattest_attestations_total[5m]))"]) == ""
