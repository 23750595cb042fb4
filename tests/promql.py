"""Test helper: the metric names a PromQL expression reads, and promtool's parse of it.

``metric_names`` is a deliberately small lexer, not a PromQL parser: it drops strings, label
matchers, range and subquery brackets, grouping clauses and function calls, and returns every
remaining identifier that is not a keyword. ``promtool_parse_errors`` gives the real parse
(``promtool check rules`` on a temporary rules file with each expression as a recording rule).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

import yaml

PROMTOOL = shutil.which("promtool")
NO_PROMTOOL = "promtool is not installed (apt-get install prometheus; scripts/bootstrap.sh does)"

# Series Prometheus makes itself for every scrape target.
SCRAPE_SERIES = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})

_KEYWORDS = frozenset(
    {
        "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
        "and", "or", "unless", "inf", "nan", "atan2",
    }
)  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w:.])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?")
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def metric_names(expr: str) -> frozenset[str]:
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("", text)
    text = _BRACKETS.sub("", text)
    text = _GROUPING.sub("", text)
    names = set()
    for match in _IDENT.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return frozenset(names)


def grafana_to_promql(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def promtool_parse_errors(exprs: Iterable[str]) -> str:
    """promtool's complaints about the expressions (empty when every one parses)."""
    assert PROMTOOL is not None
    rules = [{"record": f"check:expr_{i}", "expr": e} for i, e in enumerate(exprs)]
    document = {"groups": [{"name": "parse-check", "rules": rules}]}
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "exprs.yml"
        path.write_text(yaml.safe_dump(document))
        result = subprocess.run(
            [PROMTOOL, "check", "rules", str(path)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    return "" if result.returncode == 0 else result.stdout + result.stderr


def rules_file(path: Path) -> tuple[frozenset[str], list[tuple[str, str]]]:
    """The recorded names and every (rule name, expression) in a Prometheus rules file."""
    document = yaml.safe_load(path.read_text())
    recorded: set[str] = set()
    exprs: list[tuple[str, str]] = []
    for group in document["groups"]:
        for rule in group["rules"]:
            name = rule.get("record") or rule["alert"]
            if "record" in rule:
                recorded.add(rule["record"])
            exprs.append((name, str(rule["expr"])))
    return frozenset(recorded), exprs
