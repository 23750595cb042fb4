"""``golden lint`` (output and exit codes) and ``golden_measurements/schema.json`` kept in
agreement with the loader.

The schema is checked with a small JSON Schema (2020-12) evaluator below that implements
exactly the keywords the schema uses (a test fails if the schema starts using another), so
the project needs no ``jsonschema`` dependency. YAML is turned into JSON the way YAML 1.2
editors see it (``true``/``false`` only, decimal integers, quoted scalars are strings).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from verifier.cli import main
from verifier.cli.golden import lint
from verifier.golden import fields
from verifier.golden.load import GoldenError, load_golden_dir, load_golden_texts
from verifier.golden.model import BANKS, QUIRKS
from verifier.golden.nodes import Mapping, Node, Scalar, compose
from verifier.limits import DEFAULT_LIMITS

ROOT = Path(__file__).parent.parent
SCHEMA_PATH = ROOT / "golden_measurements" / "schema.json"
DATA = Path(__file__).parent / "data" / "golden"
VALID = DATA / "valid"
BROKEN = DATA / "broken"

# ------------------------------------------------------------------ lint command


def run_lint(directory: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = lint(directory, out, err)
    return code, out.getvalue(), err.getvalue()


def test_lint_of_a_clean_directory_exits_0_with_a_summary() -> None:
    code, out, err = run_lint(VALID)
    digest = load_golden_dir(VALID).digest
    assert (code, err) == (0, "")
    assert out == f"ok: 3 files, 3 profiles, 4 releases; digest {digest}\n"


def test_lint_prints_every_problem_with_its_hint_and_exits_1() -> None:
    with pytest.raises(GoldenError) as info:
        load_golden_dir(BROKEN)
    problems = info.value.problems
    code, out, err = run_lint(BROKEN)
    assert (code, err) == (1, "")
    expected: list[str] = []
    for p in problems:
        expected.append(f"{p.file}:{p.line}:{p.column}: {p.message}")
        if p.hint:
            expected.append(f"    hint: {p.hint}")
    expected.append(f"{len(problems)} problems in {len(list(BROKEN.iterdir()))} files")
    assert out.splitlines() == expected
    assert f"{BROKEN / 'unknown-key.yaml'}:3:1: unknown key 'verdict_lifetme' in the profile" in out
    assert "    hint: did you mean 'verdict_lifetime'?" in out


def test_lint_of_a_missing_or_unreadable_directory_exits_2(tmp_path: Path) -> None:
    code, out, err = run_lint(tmp_path / "missing")
    assert (code, out) == (2, "")
    assert err == f"attest-verifier golden lint: {tmp_path / 'missing'}: not a readable directory\n"
    a_file = tmp_path / "file.yaml"
    a_file.write_text("profile: x\n")
    assert run_lint(a_file)[0] == 2


def test_lint_of_an_empty_directory_is_a_problem_not_success(tmp_path: Path) -> None:
    code, out, _ = run_lint(tmp_path)
    assert code == 1
    assert out.splitlines() == [
        f"{tmp_path}:0:0: no golden files",
        "    hint: add one *.yaml file per device profile",
        "1 problem in 1 file",
    ]


def test_attest_verifier_golden_lint_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["golden", "lint", str(VALID)]) == 0
    assert capsys.readouterr().out.startswith("ok: 3 files")
    assert main(["golden", "lint", str(BROKEN)]) == 1
    assert main(["golden", "lint", str(BROKEN / "missing")]) == 2


# ------------------------------------------------------------------ a small JSON Schema checker

SUPPORTED = {
    "$schema",
    "$id",
    "$defs",
    "$ref",
    "title",
    "description",
    "type",
    "properties",
    "additionalProperties",
    "required",
    "propertyNames",
    "items",
    "enum",
    "pattern",
    "minimum",
    "maximum",
    "minItems",
    "uniqueItems",
    "minLength",
    "maxLength",
    "minProperties",
    "maxProperties",
    "oneOf",
}
_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
    return loaded


def check(value: Any, sch: dict[str, Any], root: dict[str, Any], at: str = "$") -> list[str]:
    """Errors of ``value`` under ``sch`` (empty when valid)."""
    if "$ref" in sch:
        target: Any = root
        for part in sch["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return check(value, target, root, at)
    errors: list[str] = []
    if "type" in sch and not _TYPES[sch["type"]](value):
        return [f"{at}: not {sch['type']}"]
    if "enum" in sch and value not in sch["enum"]:
        errors.append(f"{at}: {value!r} not in enum")
    if "oneOf" in sch:
        passing = [s for s in sch["oneOf"] if not check(value, s, root, at)]
        if len(passing) != 1:
            errors.append(f"{at}: matches {len(passing)} of oneOf")
    if isinstance(value, str):
        errors += _check_string(value, sch, at)
    if _TYPES["integer"](value) and not sch.get("minimum", value) <= value <= sch.get(
        "maximum", value
    ):
        errors.append(f"{at}: {value} out of range")
    if isinstance(value, list):
        errors += _check_array(value, sch, root, at)
    if isinstance(value, dict):
        errors += _check_object(value, sch, root, at)
    return errors


def _check_string(value: str, sch: dict[str, Any], at: str) -> list[str]:
    errors = []
    if "pattern" in sch and re.search(sch["pattern"], value) is None:
        errors.append(f"{at}: {value!r} does not match {sch['pattern']}")
    if not sch.get("minLength", 0) <= len(value) <= sch.get("maxLength", len(value)):
        errors.append(f"{at}: bad length")
    return errors


def _check_array(value: list[Any], sch: dict[str, Any], root: dict[str, Any], at: str) -> list[str]:
    errors = []
    if len(value) < sch.get("minItems", 0):
        errors.append(f"{at}: too few items")
    if sch.get("uniqueItems") and len({json.dumps(v, sort_keys=True) for v in value}) != len(value):
        errors.append(f"{at}: items not unique")
    for i, item in enumerate(value):
        if "items" in sch:
            errors += check(item, sch["items"], root, f"{at}[{i}]")
    return errors


def _check_object(
    value: dict[str, Any], sch: dict[str, Any], root: dict[str, Any], at: str
) -> list[str]:
    errors = [f"{at}: missing {key}" for key in sch.get("required", []) if key not in value]
    if not sch.get("minProperties", 0) <= len(value) <= sch.get("maxProperties", len(value)):
        errors.append(f"{at}: wrong number of properties")
    props = sch.get("properties", {})
    for key, item in value.items():
        if "propertyNames" in sch:
            errors += check(key, sch["propertyNames"], root, f"{at}.{key}(name)")
        if key in props:
            errors += check(item, props[key], root, f"{at}.{key}")
        elif sch.get("additionalProperties") is False:
            errors.append(f"{at}: unknown key {key}")
        elif isinstance(sch.get("additionalProperties"), dict):
            errors += check(item, sch["additionalProperties"], root, f"{at}.{key}")
    return errors


def to_json(node: Node) -> Any:
    """The JSON a YAML 1.2 (core schema) editor sees."""
    if isinstance(node, Mapping):
        return {_key(k): to_json(v) for k, v in node.pairs}
    if not isinstance(node, Scalar):
        return [to_json(item) for item in node.items]
    if not node.plain:
        return node.value
    if node.value in {"", "~", "null", "Null", "NULL"}:
        return None
    if node.value in {"true", "True", "TRUE", "false", "False", "FALSE"}:
        return node.value.lower() == "true"
    if re.fullmatch(r"[-+]?[0-9]+", node.value):
        return int(node.value)
    return node.value


def _key(node: Node) -> str:
    assert isinstance(node, Scalar)
    return node.value


def json_of(text: str) -> Any:
    root, issues = compose(text)
    assert root is not None and not issues
    return to_json(root)


def schema_errors(path: Path) -> list[str]:
    return check(json_of(path.read_text()), schema(), schema())


# ------------------------------------------------------------------ schema and loader agree


def _schema_objects(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for key, value in node.items():
            if key in {"properties", "$defs"}:
                for sub in value.values():
                    yield from _schema_objects(sub)
            elif key == "oneOf":
                for sub in value:
                    yield from _schema_objects(sub)
            elif key in {"items", "additionalProperties", "propertyNames"}:
                yield from _schema_objects(value)


def test_schema_uses_only_keywords_the_checker_implements() -> None:
    used = {key for obj in _schema_objects(schema()) for key in obj}
    assert used <= SUPPORTED, used - SUPPORTED
    assert schema()["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def _props(sch: dict[str, Any]) -> tuple[set[str], set[str]]:
    """(keys, required keys) of an object schema, through ``oneOf`` branches."""
    branches = sch.get("oneOf", [sch])
    for branch in branches:
        assert branch.get("additionalProperties") is False, branch
    keys = {k for branch in branches for k in branch["properties"]}
    required = set.intersection(*(set(b.get("required", [])) for b in branches))
    return keys, required


def test_every_key_the_loader_accepts_is_in_the_schema_and_no_other() -> None:
    sch = schema()
    release = sch["$defs"]["release"]
    rp = release["properties"]
    assert _props(sch) == (set(fields.PROFILE_KEYS), set(fields.PROFILE_REQUIRED))
    assert _props(release) == (set(fields.RELEASE_KEYS), set(fields.RELEASE_REQUIRED))
    assert _props(rp["firmware"]) == (set(fields.FIRMWARE_KEYS), set(fields.FIRMWARE_KEYS))
    assert _props(rp["secure_boot"]) == (set(fields.SECURE_BOOT_KEYS), set())
    assert _props(rp["kernel_cmdline"])[0] == set(fields.CMDLINE_KEYS)


def test_schema_values_match_the_model_and_limits() -> None:
    sch = schema()
    props, defs = sch["properties"], sch["$defs"]
    assert set(props["bank"]["enum"]) == set(BANKS)
    assert set(props["quirks"]["items"]["enum"]) == set(QUIRKS)
    assert defs["name"]["pattern"] == f"^{fields.NAME_RE.pattern}$"
    assert (defs["pcr_index"]["minimum"], defs["pcr_index"]["maximum"]) == (0, 23)
    assert props["verdict_lifetime"]["oneOf"][0]["maximum"] == fields.MAX_LIFETIME
    assert props["match"]["maxProperties"] == DEFAULT_LIMITS.max_labels
    lengths = {len(m) for m in re.findall(r"\{(\d+)\}", defs["digest"]["pattern"])}
    assert lengths  # the digest pattern lists one alternative per bank
    assert set(re.findall(r"\{(\d+)\}", defs["digest"]["pattern"])) == {
        str(2 * size) for size in BANKS.values()
    }


@pytest.mark.parametrize("path", sorted(VALID.iterdir()), ids=lambda p: p.name)
def test_valid_fixtures_validate_under_the_schema(path: Path) -> None:
    assert schema_errors(path) == []


# Broken fixtures whose fault is structural: the schema must reject them too. The others
# (duplicate names, PCRs outside the selection, dates like 2027-02-30, a lifetime of 31d, ...)
# need the loader.
SCHEMA_REJECTS = [
    "unknown-key.yaml",
    "wrong-types.yaml",
    "bad-digest.yaml",
    "unknown-quirk.yaml",
    "bad-regex.yaml",
    "pcr-range.yaml",
    "lifetime-zero.yaml",
    "release-expects-nothing.yaml",
    "not-a-mapping.yaml",
]


@pytest.mark.parametrize("name", SCHEMA_REJECTS)
def test_structurally_broken_fixtures_fail_the_schema_too(name: str) -> None:
    assert schema_errors(BROKEN / name) != []


FREE_KEYS = {"match", "pcrs"}  # mappings keyed by label names or PCR indices, not by field names


def _objects(data: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Paths of the mappings whose keys are field names."""
    if isinstance(data, dict):
        if not (path and path[-1] in FREE_KEYS):
            yield path
        for key, value in data.items():
            yield from _objects(value, (*path, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from _objects(value, (*path, i))


def _at(data: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        data = data[part]
    return data


@pytest.mark.parametrize("path", sorted(VALID.iterdir()), ids=lambda p: p.name)
def test_an_unknown_key_anywhere_is_refused_by_both(path: Path) -> None:
    original = json_of(path.read_text())
    for where in _objects(original):
        data = json_of(path.read_text())
        _at(data, where)["bogus_key"] = True
        assert check(data, schema(), schema()), where
        with pytest.raises(GoldenError) as info:
            load_golden_texts({path.name: yaml.safe_dump(data, sort_keys=False)})
        assert any("unknown key 'bogus_key'" in p.message for p in info.value.problems), where


@pytest.mark.parametrize("path", sorted(VALID.iterdir()), ids=lambda p: p.name)
def test_a_missing_required_key_is_refused_by_both(path: Path) -> None:
    original = json_of(path.read_text())
    levels: list[tuple[tuple[Any, ...], frozenset[str]]] = [((), fields.PROFILE_REQUIRED)]
    levels += [(("releases", i), fields.RELEASE_REQUIRED) for i in range(len(original["releases"]))]
    for where, required in levels:
        for key in list(_at(original, where)):
            data = json_of(path.read_text())
            del _at(data, where)[key]
            schema_ok = not check(data, schema(), schema())
            try:
                load_golden_texts({path.name: yaml.safe_dump(data, sort_keys=False)})
                loader_ok = True
            except GoldenError:
                loader_ok = False
            assert schema_ok or not loader_ok, (where, key)  # the loader is never laxer
            if key in required:
                assert not schema_ok and not loader_ok, (where, key)


def test_valid_fixtures_round_trip_through_json_unchanged() -> None:
    """The mutation tests above rely on safe_dump of the JSON form loading to the same set."""
    for path in VALID.iterdir():
        dumped = yaml.safe_dump(json_of(path.read_text()), sort_keys=False)
        a = load_golden_texts({path.name: path.read_text()}).profiles[0]
        b = load_golden_texts({path.name: dumped}).profiles[0]
        unplaced = [replace(r, line=0) for r in a.releases]
        assert replace(a, releases=tuple(unplaced)) == replace(
            b, releases=tuple(replace(r, line=0) for r in b.releases)
        )


def test_the_readme_example_is_valid_and_matches_the_fixture() -> None:
    readme = (ROOT / "golden_measurements" / "README.md").read_text()
    (example,) = re.findall(r"```yaml\n(.*?)```", readme, flags=re.DOTALL)
    documented = load_golden_texts({"edge-gateway.yaml": example}).profiles[0]
    fixture = load_golden_dir(VALID).profiles[0]
    assert documented.name == fixture.name and documented.pcrs == fixture.pcrs
    assert [r.name for r in documented.releases] == [r.name for r in fixture.releases]
    assert check(json_of(example), schema(), schema()) == []
