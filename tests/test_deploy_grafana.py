"""deploy/grafana: every panel expression parses as PromQL and reads only exported metrics."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from promql import (
    NO_PROMTOOL,
    PROMTOOL,
    SCRAPE_SERIES,
    grafana_to_promql,
    metric_names,
    promtool_parse_errors,
    rules_file,
)

from verifier.metrics import VerifierMetrics, exported_names

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
DASHBOARDS = ("executive", "oncall", "debug")


def load(name: str) -> dict[str, object]:
    document = json.loads((DEPLOY / "grafana" / f"{name}.json").read_text())
    assert isinstance(document, dict)
    return document


def panels(dashboard: dict[str, object]) -> Iterator[dict[str, object]]:
    """Every panel, including those nested in rows."""
    stack = list(dashboard.get("panels", []))  # type: ignore[call-overload]
    while stack:
        panel = stack.pop(0)
        yield panel
        stack.extend(panel.get("panels", []))


def expressions(name: str) -> list[tuple[str, str]]:
    out = []
    for panel in panels(load(name)):
        for target in panel.get("targets", []):  # type: ignore[attr-defined]
            out.append((str(panel["title"]), grafana_to_promql(str(target["expr"]))))
    return out


@pytest.mark.parametrize("name", DASHBOARDS)
def test_every_panel_queries_the_prometheus_datasource(name: str) -> None:
    seen_ids = set()
    for panel in panels(load(name)):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], f"panel {panel['title']} has no query"
        assert panel["id"] not in seen_ids
        seen_ids.add(panel["id"])
        grid = panel["gridPos"]
        assert isinstance(grid, dict)
        assert grid["x"] + grid["w"] <= 24


@pytest.mark.skipif(PROMTOOL is None, reason=NO_PROMTOOL)
@pytest.mark.parametrize("name", DASHBOARDS)
def test_every_panel_expression_parses(name: str) -> None:
    exprs = [expr for _, expr in expressions(name)]
    assert exprs
    assert promtool_parse_errors(exprs) == ""


@pytest.mark.parametrize("name", DASHBOARDS)
def test_every_panel_reads_only_exported_metrics(name: str) -> None:
    recorded, _ = rules_file(DEPLOY / "prometheus" / "rules.yml")
    known = exported_names(VerifierMetrics().registry) | recorded | SCRAPE_SERIES
    unknown = {title: sorted(metric_names(expr) - known) for title, expr in expressions(name)}
    assert {title: names for title, names in unknown.items() if names} == {}


def test_each_audience_gets_its_panels() -> None:
    titles = {name: " | ".join(t.lower() for t, _ in expressions(name)) for name in DASHBOARDS}
    for words, name in (
        (("coverage", "deny", "key"), "executive"),
        (("last 15 min", "denies", "store", "revocation"), "oncall"),
        (("latency", "reasons", "clock", "freshness"), "debug"),
    ):
        for word in words:
            assert word in titles[name], f"{name} dashboard has no {word!r} panel"
