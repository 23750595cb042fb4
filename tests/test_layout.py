"""The layer rule, read from the imports with ``ast`` (ARCHITECTURE.md).

The pure core (quote, event-log decoding, golden evaluation, appraisal, verdicts, token
verification and the records it shares with the store) imports nothing from the edges: no
gRPC, no generated API, no store, no service, no command line, no application layer. Nothing
below ``verifier.cli`` imports it, and the agent never imports the verifier.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VERIFIER = ROOT / "verifier"

CORE = (
    "verifier/appraisal.py",
    "verifier/verdict.py",
    "verifier/quote.py",
    "verifier/evidence.py",
    "verifier/records.py",
    "verifier/rollout.py",
    "verifier/marshal.py",
    "verifier/limits.py",
    "verifier/errors.py",
    "verifier/eventlog",
    "verifier/golden",
    "verifier/enrollment/credential.py",
    "verifier/enrollment/der.py",
    "verifier/enrollment/ekchain.py",
    "verifier/enrollment/identity.py",
    "verifier/enrollment/tpmpublic.py",
    "verifier/token/ear.py",
    "verifier/token/jws.py",
    "verifier/token/verify.py",
    "verifier/token/errors.py",
    "verifier/audit",
    "verifier/ima",
    "verifier/tls/identity.py",
    "verifier/currency.py",
    "verifier/clock.py",
    "verifier/enrollment/crl.py",
    "verifier/enrollment/policy.py",
    "verifier/enrollment/refusal.py",
)
EDGES = (
    "grpc",
    "fleetattest",
    "psycopg",
    "sqlite3",
    "argparse",
    "verifier.cli",
    "verifier.service",
    "verifier.store",
    "verifier.app",
    "verifier.livegolden",
    "verifier.enrollment.flow",
)


def _modules(entry: str) -> list[Path]:
    path = ROOT / entry
    return sorted(path.rglob("*.py")) if path.is_dir() else [path]


def imports_of(path: Path) -> set[str]:
    """Every module name ``path`` imports, absolute (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _violations(paths: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    found = []
    for path in paths:
        for name in sorted(imports_of(path)):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                found.append(f"{path.relative_to(ROOT)} imports {name}")
    return found


@pytest.mark.parametrize("entry", CORE)
def test_core_module_imports_no_edge(entry: str) -> None:
    paths = _modules(entry)
    assert paths and all(p.is_file() for p in paths), f"{entry} is missing: update CORE"
    assert _violations(paths, EDGES) == []


def test_nothing_below_the_command_line_imports_it() -> None:
    below = [p for p in VERIFIER.rglob("*.py") if "cli" not in p.relative_to(VERIFIER).parts]
    assert _violations(below, ("verifier.cli",)) == []


def test_agent_never_imports_the_verifier() -> None:
    assert _violations(sorted((ROOT / "agent").rglob("*.py")), ("verifier",)) == []


def test_the_rule_catches_an_edge_import(tmp_path: Path) -> None:
    """The checker itself: an import of the store from a core-looking module is caught."""
    probe = ROOT / "verifier" / "golden" / "_probe_layer_rule.py"
    probe.write_text("from ..store import open_store\nimport grpc\n")
    try:
        found = _violations([probe], EDGES)
    finally:
        probe.unlink()
    assert found == [
        "verifier/golden/_probe_layer_rule.py imports grpc",
        "verifier/golden/_probe_layer_rule.py imports verifier.store",
        "verifier/golden/_probe_layer_rule.py imports verifier.store.open_store",
    ]
