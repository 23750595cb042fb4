"""The golden loader: valid files give the expected model; every broken file gives the right
problem at the right file:line:column; all problems of all files are reported at once."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from verifier.errors import AttestationError, PolicyViolation
from verifier.golden import nodes
from verifier.golden.load import (
    GoldenError,
    GoldenProblem,
    golden_digest,
    load_golden_dir,
    load_golden_texts,
)
from verifier.golden.model import CmdlineRule, GoldenSet
from verifier.limits import Limits

DATA = Path(__file__).parent / "data" / "golden"
VALID = DATA / "valid"
BROKEN = DATA / "broken"
CROSS = DATA / "cross-file"


def sha256(label: str) -> bytes:
    """Fixture digests are SHA-256 of short labels (see tests/data/NOTICE-golden.md)."""
    return hashlib.sha256(label.encode()).digest()


def sha1(label: str) -> bytes:
    return hashlib.sha1(label.encode()).digest()


def problems_of(loader: Callable[[], object]) -> tuple[GoldenProblem, ...]:
    with pytest.raises(GoldenError) as info:
        loader()
    return info.value.problems


def load_one(name: str) -> tuple[GoldenProblem, ...]:
    text = (BROKEN / name).read_text()
    return problems_of(lambda: load_golden_texts({name: text}))


# ------------------------------------------------------------------ valid sets


def test_valid_directory_loads_to_the_expected_model() -> None:
    golden = load_golden_dir(VALID)
    assert golden.files == ("edge-gateway.yaml", "legacy.yaml", "sensor.yml")
    assert [p.name for p in golden.profiles] == ["edge-gateway", "legacy-sha1", "sensor"]

    gw = golden.profiles[0]
    assert gw.source == str(VALID / "edge-gateway.yaml")
    assert gw.match_labels == {"model": "gw-100"}
    assert (gw.priority, gw.verdict_lifetime, gw.bank) == (10, 3600, "sha256")
    assert gw.pcrs == (0, 2, 4, 7, 8, 9)
    assert gw.allow_sha1 is False
    assert gw.quirks == frozenset({"missing_exit_boot_services"})
    old, new = gw.releases
    assert old.name == "fw-1.0" and old.line == 11
    assert old.not_after == datetime(2027, 7, 1, tzinfo=UTC).timestamp()  # end of 2027-06-30
    assert old.revoked is False and old.upgrades_to == ("fw-1.1",)
    assert old.pcrs == {0: sha256("pcr0-1.0"), 2: sha256("pcr2")}
    ev = old.events
    assert ev.scrtm_versions == ("FleetFW 1.0.0",)
    assert ev.secure_boot is True
    assert ev.db_contains == (sha256("db-cert"),)
    assert ev.dbx_contains == (sha256("dbx-1"), sha256("dbx-2"))
    assert ev.boot_chain == (sha256("shim"), sha256("grub"), sha256("kernel-1.0"))
    assert ev.kernel_cmdline == CmdlineRule(exact="BOOT_IMAGE=/vmlinuz-6.1 root=/dev/sda2 ro quiet")

    assert new.name == "fw-1.1" and new.line == 30
    assert new.not_after == datetime(2028, 1, 1, 12, 30, tzinfo=UTC).timestamp()
    assert new.pcrs == {} and new.upgrades_to == ()
    assert new.events.scrtm_versions == ("FleetFW 1.1.0", "FleetFW 1.1.1")
    assert new.events.db_contains == () and new.events.dbx_contains == ()
    assert new.events.boot_chain == (sha256("shim"), sha256("grub"), sha256("kernel-1.1"))
    rule = new.events.kernel_cmdline
    assert rule is not None and rule.exact is None and rule.pattern is not None
    uuid = "0f3c2a9e-1b2d-4c5e-8f70-123456789abc"
    assert rule.pattern.fullmatch(f"BOOT_IMAGE=/vmlinuz-6.12 root=UUID={uuid} ro quiet")
    assert not rule.pattern.fullmatch(f"BOOT_IMAGE=/vmlinuz-6.12 root=UUID={uuid} ro init=/bin/sh")

    legacy = golden.profiles[1]
    assert (legacy.bank, legacy.allow_sha1, legacy.pcrs) == ("sha1", True, (0, 7))
    assert (legacy.match_labels, legacy.priority, legacy.verdict_lifetime) == ({}, -5, 172800)
    assert legacy.releases[0].pcrs == {0: sha1("legacy0"), 7: sha1("legacy7")}
    assert legacy.releases[0].events.is_empty()

    sensor = golden.profiles[2]
    assert sensor.match_labels == {"model": "s-7", "site": "lab"}
    assert (sensor.bank, sensor.verdict_lifetime, sensor.priority) == ("sha256", 900, 0)
    (release,) = sensor.releases
    assert (release.name, release.revoked, release.not_after) == ("1.0", True, None)
    assert release.pcrs == {0: sha256("sensor-pcr0"), 7: sha256("sensor-pcr7")}


def test_profile_selection_uses_labels_then_priority() -> None:
    golden = load_golden_dir(VALID)
    assert _name(golden, {"model": "gw-100"}) == "edge-gateway"
    assert _name(golden, {"model": "s-7", "site": "lab"}) == "sensor"
    assert _name(golden, {"model": "s-7"}) == "legacy-sha1"  # the catch-all (match: {})


def _name(golden: GoldenSet, labels: dict[str, str]) -> str | None:
    profile = golden.profile_for(labels)
    return profile.name if profile else None


def test_texts_and_directory_give_the_same_set_and_digest() -> None:
    texts = {p.name: p.read_text() for p in VALID.iterdir()}
    from_texts = load_golden_texts(texts)
    from_dir = load_golden_dir(VALID)
    assert from_texts.digest == from_dir.digest
    assert from_texts.files == from_dir.files
    assert [p.releases for p in from_texts.profiles] == [p.releases for p in from_dir.profiles]


def test_non_yaml_files_are_ignored_and_yml_is_loaded(tmp_path: Path) -> None:
    shutil.copy(VALID / "sensor.yml", tmp_path / "sensor.yml")
    (tmp_path / "README.md").write_text("profile: [not yaml we read")
    (tmp_path / "notes.txt").write_text("::")
    assert load_golden_dir(tmp_path).files == ("sensor.yml",)


# ------------------------------------------------------------------ broken files

# file -> [(line, column, fragment of the message)], in the order reported.
EXPECTED: dict[str, list[tuple[int, int, str]]] = {
    "unknown-key.yaml": [
        (1, 1, "missing the required key 'verdict_lifetime'"),
        (3, 1, "unknown key 'verdict_lifetme' in the profile"),
        (8, 5, "unknown key 'kernel_cmdlin' in a release"),
    ],
    "duplicate-key.yaml": [
        (6, 1, "duplicate key 'bank' in the profile"),
        (11, 7, "PCR 0 is set twice"),
        (12, 7, "PCR '07' has a leading zero"),
    ],
    "wrong-types.yaml": [
        (2, 16, "match label 'model' must be a string, not an integer ('100')"),
        (3, 11, "priority must be an integer, not a string ('5')"),
        (5, 13, "allow_sha1 must be true or false, not 'yes'"),
        (6, 7, "pcrs must be a list, not an integer ('7')"),
        (8, 11, "release name must be a string, not a number ('1.0')"),
        (9, 14, "revoked must be true or false, not a string ('false')"),
    ],
    "bad-digest.yaml": [
        (8, 10, "PCR 0 value is not hexadecimal: 'x' at position 2"),
        (9, 10, "PCR 4 value has 40 hex digits; a sha256 digest has 64"),
        (10, 10, "PCR 7 value must be a hex string, not an integer"),
        (11, 33, "db_contains entry has 62 hex digits; a sha256 digest has 64"),
    ],
    "duplicate-release.yaml": [(8, 11, "duplicate release name 'fw-1.0'")],
    "unknown-quirk.yaml": [(5, 37, "unknown quirk 'trust_everything'")],
    "bad-dates.yaml": [
        (7, 16, "not_after '2027-02-30' is not a valid date"),
        (10, 16, "not_after '2027-06-30T12:00:00' has no UTC offset"),
        (13, 16, "not_after must be a date or an RFC 3339 time, not a string ('next tuesday')"),
    ],
    "bad-regex.yaml": [
        (7, 31, "kernel_cmdline pattern is refused: missing ): root=(/dev/sda[0-9]"),
        (9, 21, "kernel_cmdline needs exactly one of exact or pattern"),
        (11, 21, "kernel_cmdline needs exactly one of exact or pattern"),
    ],
    "pcr-range.yaml": [
        (4, 11, "pcrs entry 24 is not a PCR index"),
        (4, 15, "pcrs entry -1 is not a PCR index"),
        (4, 19, "PCR 0 is listed twice in pcrs"),
        (7, 83, "PCR 31 is not a PCR index"),
    ],
    "rule-pcrs-not-selected.yaml": [
        (7, 12, "PCR 9 has a value but is not in the profile's pcrs [0, 2]"),
        (9, 5, "secure_boot rules read the events of PCR 7"),
        (10, 5, "boot_chain rules read the events of PCR 4"),
        (11, 5, "kernel_cmdline rules read the events of PCR 8 (GRUB) or PCR 12"),
    ],
    "sha1-without-opt-in.yaml": [(4, 7, "sha1 bank is refused unless the profile sets allow_sha1")],
    "upgrades-unknown.yaml": [
        (7, 19, "upgrades_to names unknown release 'fw-9'"),
        (7, 25, "release 'fw-1.0' lists itself in upgrades_to"),
    ],
    "lifetime-too-long.yaml": [(3, 19, "verdict_lifetime of 2678400 seconds is not between")],
    "lifetime-zero.yaml": [(3, 19, "verdict_lifetime of 0 seconds is not between")],
    "release-expects-nothing.yaml": [
        (6, 5, "release 'anything-goes' expects neither PCR values nor events"),
        (9, 11, "pcrs is empty"),
        (10, 18, "secure_boot sets no rule"),
        (11, 5, "boot_chain rules read the events of PCR 4"),
        (11, 17, "boot_chain is empty"),
    ],
    "syntax-error.yaml": [(3, 17, "YAML syntax error: ")],  # wording differs by parser
    "billion-laughs.yaml": [
        (4, 7, "YAML anchors are not allowed"),
        (5, 13, "YAML aliases are not allowed"),
    ],
    "not-utf8.yaml": [(2, 20, "not UTF-8 (byte 0xff)")],
    "empty.yaml": [(1, 1, "file is empty")],
    "two-documents.yaml": [(8, 1, "more than one YAML document")],
    "not-a-mapping.yaml": [(1, 1, "the profile must be a mapping, not a list")],
    "python-tag.yaml": [(1, 10, "explicit YAML tags are not allowed")],
}


def test_every_broken_fixture_has_expectations() -> None:
    assert sorted(p.name for p in BROKEN.iterdir()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_broken_file_reports_each_problem_at_its_line_and_column(name: str, tmp_path: Path) -> None:
    shutil.copy(BROKEN / name, tmp_path / name)
    problems = problems_of(lambda: load_golden_dir(tmp_path))
    assert [(p.line, p.column) for p in problems] == [(ln, col) for ln, col, _ in EXPECTED[name]], [
        str(p) for p in problems
    ]
    for problem, (_, _, fragment) in zip(problems, EXPECTED[name], strict=True):
        assert fragment in problem.message, str(problem)
        assert problem.file == str(tmp_path / name)


def test_all_problems_of_all_files_are_reported_at_once() -> None:
    problems = problems_of(lambda: load_golden_dir(BROKEN))
    assert {Path(p.file).name for p in problems} == set(EXPECTED)
    expected = sorted(
        (str(BROKEN / name), line, column)
        for name, entries in EXPECTED.items()
        for line, column, _ in entries
    )
    assert sorted((p.file, p.line, p.column) for p in problems) == expected


def test_one_broken_file_refuses_the_whole_set(tmp_path: Path) -> None:
    """The valid rest is not loaded on its own: a set is whole or refused."""
    for path in VALID.iterdir():
        shutil.copy(path, tmp_path / path.name)
    shutil.copy(BROKEN / "unknown-quirk.yaml", tmp_path / "unknown-quirk.yaml")
    problems = problems_of(lambda: load_golden_dir(tmp_path))
    assert [Path(p.file).name for p in problems] == ["unknown-quirk.yaml"]


def test_duplicate_profile_names_and_ambiguous_matches_across_files() -> None:
    problems = problems_of(lambda: load_golden_dir(CROSS))
    assert [(Path(p.file).name, p.line, p.column) for p in problems] == [
        ("b.yaml", 2, 1),
        ("d.yaml", 3, 1),
    ]
    assert problems[0].message == "duplicate profile name 'gateway'"
    assert problems[0].hint == f"also defined at {CROSS / 'a.yaml'}:2"
    assert "same match labels and priority as profile 'camera-indoor'" in problems[1].message


def test_golden_error_is_an_attestation_error_with_every_problem() -> None:
    with pytest.raises(GoldenError) as info:
        load_golden_dir(BROKEN)
    exc = info.value
    assert isinstance(exc, PolicyViolation) and isinstance(exc, AttestationError)
    assert str(exc) == f"{exc.problems[0]} (and {len(exc.problems) - 1} more problems)"


def test_problem_text_is_file_line_column_message_hint() -> None:
    assert str(GoldenProblem("a.yaml", 3, 7, "bad", "fix it")) == "a.yaml:3:7: bad (hint: fix it)"
    assert str(GoldenProblem("a.yaml", 3, 7, "bad")) == "a.yaml:3:7: bad"


# ------------------------------------------------------------------ attacks


def test_billion_laughs_is_refused_before_expansion() -> None:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    lines.append("profile: *a9")
    started = time.perf_counter()
    problems = problems_of(lambda: load_golden_texts({"laughs.yaml": "\n".join(lines)}))
    assert time.perf_counter() - started < 1.0
    assert [(p.line, p.column, p.message) for p in problems] == [
        (1, 5, "YAML anchors are not allowed"),
        (2, 10, "YAML aliases are not allowed"),
    ]


def test_python_object_tag_is_refused_and_never_constructed() -> None:
    text = 'profile: !!python/object/apply:os.system ["touch /tmp/golden-pwned"]\n'
    problems = problems_of(lambda: load_golden_texts({"t.yaml": text}))
    assert "explicit YAML tags are not allowed" in problems[0].message
    assert not Path("/tmp/golden-pwned").exists()


def test_duplicate_key_cannot_silently_switch_the_bank_to_sha1() -> None:
    problems = load_one("duplicate-key.yaml")
    assert problems[0].message == "duplicate key 'bank' in the profile"
    assert problems[0].hint == "first set at line 4; YAML would silently keep the last"


def test_release_that_expects_nothing_is_refused() -> None:
    problems = load_one("release-expects-nothing.yaml")
    assert "it would accept any device" in problems[0].message


def test_sha1_bank_without_opt_in_is_refused() -> None:
    (problem,) = load_one("sha1-without-opt-in.yaml")
    assert "allow_sha1: true" in problem.message


def test_event_rules_on_pcrs_the_quote_would_not_cover_are_refused() -> None:
    problems = load_one("rule-pcrs-not-selected.yaml")
    assert all("the quote would not cover" in p.hint for p in problems)


def test_digest_of_the_wrong_bank_length_is_refused() -> None:
    problems = load_one("bad-digest.yaml")
    assert problems[1].hint == "that is the length of a sha1 digest: wrong bank or wrong value?"


def test_octal_looking_pcr_index_is_refused() -> None:
    problems = load_one("duplicate-key.yaml")
    assert "leading zero" in problems[2].message


@pytest.mark.parametrize("loader", ["CSafeLoader", "SafeLoader"])
def test_deep_nesting_is_a_quick_problem_not_a_crash(
    loader: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not hasattr(yaml, loader):
        pytest.skip(f"PyYAML has no {loader}")
    monkeypatch.setattr(nodes, "LOADER", getattr(yaml, loader))
    text = "profile: " + "[" * 100_000 + "]" * 100_000
    started = time.perf_counter()
    (problem,) = problems_of(lambda: load_golden_texts({"deep.yaml": text}))
    assert time.perf_counter() - started < 2.0
    assert "nesting" in problem.message
    text = "profile: " + "[" * 900 + "]" * 900  # deep but within the limit: parsed normally
    problems = problems_of(lambda: load_golden_texts({"deep.yaml": text}))
    assert (1, 10, "profile name must be a string, not a list") in [
        (p.line, p.column, p.message) for p in problems
    ]


def test_control_character_is_reported_at_its_position() -> None:
    text = 'profile: é\nmatch: {model: "a\x01"}\n'
    (problem,) = problems_of(lambda: load_golden_texts({"ctl.yaml": text}))
    assert (problem.line, problem.column) == (2, 18)
    assert "characters are not allowed" in problem.message


def test_file_over_the_size_limit_is_refused_unparsed() -> None:
    limits = Limits(max_golden_file_bytes=64)
    problems = problems_of(lambda: load_golden_dir(VALID, limits))
    assert [(Path(p.file).name, p.line, p.column) for p in problems] == [
        ("edge-gateway.yaml", 1, 1),
        ("legacy.yaml", 1, 1),
        ("sensor.yml", 1, 1),
    ]
    assert all(p.message == "file is larger than 64 bytes" for p in problems)


def test_missing_and_empty_directories_are_errors(tmp_path: Path) -> None:
    (missing,) = problems_of(lambda: load_golden_dir(tmp_path / "nope"))
    assert (missing.line, missing.column) == (0, 0)
    assert missing.message.startswith("cannot read the golden directory")
    (tmp_path / "README.md").write_text("no yaml here")
    (empty,) = problems_of(lambda: load_golden_dir(tmp_path))
    assert empty.message == "no golden files"
    (none,) = problems_of(lambda: load_golden_texts({}))
    assert none.message == "no golden files"


def test_a_directory_named_like_a_yaml_file_is_a_problem(tmp_path: Path) -> None:
    shutil.copy(VALID / "sensor.yml", tmp_path / "sensor.yml")
    (tmp_path / "sub.yaml").mkdir()
    (problem,) = problems_of(lambda: load_golden_dir(tmp_path))
    assert problem.file == str(tmp_path / "sub.yaml")
    assert problem.message.startswith("cannot read the file")


def test_a_fifo_named_like_a_yaml_file_does_not_block_the_load(tmp_path: Path) -> None:
    shutil.copy(VALID / "sensor.yml", tmp_path / "sensor.yml")
    os.mkfifo(tmp_path / "pipe.yaml")
    (problem,) = problems_of(lambda: load_golden_dir(tmp_path))
    assert problem.message == "cannot read the file: not a regular file"


def test_lone_surrogates_in_proposed_text_are_reported_not_raised() -> None:
    (problem,) = problems_of(lambda: load_golden_texts({"s.yaml": "profile: \udcff\n"}))
    assert (problem.line, problem.column) == (1, 10)
    assert problem.message.startswith("not UTF-8")


def test_match_label_limits_follow_enrollment_limits() -> None:
    labels = ", ".join(f"l{i}: v" for i in range(17))
    text = (VALID / "sensor.yml").read_text().replace('model: "s-7"', f"x: {{{labels}}}")
    problems = problems_of(lambda: load_golden_texts({"s.yml": text}))
    assert problems[0].message == "match label 'x' must be a string, not a mapping"
    text = (VALID / "legacy.yaml").read_text().replace("match: {}", f"match: {{{labels}}}")
    (problem,) = problems_of(lambda: load_golden_texts({"l.yaml": text}))
    assert problem.message == "match has more than 16 labels"


# ------------------------------------------------------------------ digest


def test_digest_is_stable_when_nothing_changes(tmp_path: Path) -> None:
    first = load_golden_dir(VALID).digest
    shutil.copytree(VALID, tmp_path / "elsewhere")
    assert load_golden_dir(VALID).digest == first
    assert load_golden_dir(tmp_path / "elsewhere").digest == first  # the path is not hashed
    assert first.startswith("sha256:") and len(first) == len("sha256:") + 64


def test_digest_changes_when_any_byte_changes() -> None:
    data = (VALID / "legacy.yaml").read_bytes()
    base = golden_digest({"legacy.yaml": data})
    seen = {base}
    for i in range(len(data)):
        changed = data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :]
        seen.add(golden_digest({"legacy.yaml": changed}))
    assert len(seen) == len(data) + 1


def test_digest_changes_with_a_comment_edit_and_a_rename(tmp_path: Path) -> None:
    base = load_golden_dir(VALID).digest
    for path in VALID.iterdir():
        shutil.copy(path, tmp_path / path.name)
    edited = tmp_path / "sensor.yml"
    edited.write_text("# reviewed\n" + edited.read_text())
    commented = load_golden_dir(tmp_path).digest
    assert commented != base
    edited.rename(tmp_path / "sensor.yaml")
    assert load_golden_dir(tmp_path).digest not in {base, commented}


def test_digest_is_length_prefixed_so_boundaries_cannot_shift() -> None:
    assert golden_digest({"a": b"bc"}) != golden_digest({"ab": b"c"})
    assert golden_digest({"a": b"", "b": b"x"}) != golden_digest({"a": b"b", "": b"x"})
    assert golden_digest({"a": b"x"}) != golden_digest({"a": b"x", "b": b""})


# ------------------------------------------------------------------ YAML loader


@pytest.mark.skipif(not yaml.__with_libyaml__, reason="PyYAML built without libyaml")
def test_csafeloader_is_used_when_available(monkeypatch: pytest.MonkeyPatch) -> None:
    assert nodes.LOADER is yaml.CSafeLoader
    used: list[object] = []
    real_parse = yaml.parse

    def spy(stream: str, Loader: object) -> object:
        used.append(Loader)
        return real_parse(stream, Loader=Loader)  # type: ignore[arg-type]

    monkeypatch.setattr(yaml, "parse", spy)
    load_golden_dir(VALID)
    assert used == [yaml.CSafeLoader] * 3


def test_pure_python_fallback_gives_the_same_set_and_positions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fast = load_golden_dir(VALID)
    fast_problems = problems_of(lambda: load_golden_dir(BROKEN))
    monkeypatch.setattr(nodes, "LOADER", yaml.SafeLoader)
    slow = load_golden_dir(VALID)
    assert slow.digest == fast.digest
    assert [p.releases for p in slow.profiles] == [p.releases for p in fast.profiles]
    slow_problems = problems_of(lambda: load_golden_dir(BROKEN))

    # The two parsers word syntax errors differently; positions and the rest agree.
    def key(p: GoldenProblem) -> tuple[str, int, int, str]:
        return (p.file, p.line, p.column, "" if "YAML" in p.message else p.message)

    assert [key(p) for p in slow_problems] == [key(p) for p in fast_problems]


def test_realistic_directory_loads_fast(tmp_path: Path) -> None:
    template = (VALID / "edge-gateway.yaml").read_text()
    for i in range(10):
        text = template.replace("edge-gateway", f"edge-{i}").replace("gw-100", f"gw-{i}")
        (tmp_path / f"edge-{i}.yaml").write_text(text)
    load_golden_dir(tmp_path)
    started = time.perf_counter()
    rounds = 20
    for _ in range(rounds):
        golden = load_golden_dir(tmp_path)
    per_load = (time.perf_counter() - started) / rounds
    assert len(golden.profiles) == 10
    assert per_load < 0.25, f"{per_load * 1000:.1f} ms for 10 profiles"
