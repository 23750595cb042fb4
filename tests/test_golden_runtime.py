"""A golden profile's ``runtime:`` section: loaded once, problems at file:line, lint warnings."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from verifier.cli.golden import lint
from verifier.golden.load import GoldenError, load_golden_texts

BASE = """\
profile: runtime-devices
match: {model: rt}
verdict_lifetime: 1h
pcrs: [0, 7]
releases:
  - name: r1
    pcrs:
      0: "%s"
""" % ("00" * 32)
DIGEST = "sha256:" + "11" * 32


def load(runtime: str, base: str = BASE):  # type: ignore[no-untyped-def]
    return load_golden_texts({"rt.yaml": base + runtime})


def problems(runtime: str, base: str = BASE) -> list[str]:
    with pytest.raises(GoldenError) as info:
        load(runtime, base)
    return [str(p) for p in info.value.problems]


def test_a_runtime_section_loads_and_quotes_pcrs_0_to_10() -> None:
    golden = load(f"runtime:\n  digests:\n    /usr/bin/bash: [{DIGEST}]\n")
    (profile,) = golden.profiles
    assert profile.pcrs == tuple(range(11))
    assert profile.runtime is not None
    assert profile.runtime.digests["/usr/bin/bash"] == (bytes.fromhex("11" * 32),)
    assert profile.runtime_warnings == ()


def test_the_policy_is_one_object_shared_by_every_device_of_the_profile() -> None:
    golden = load(f"runtime:\n  digests:\n    /usr/bin/bash: [{DIGEST}]\n")
    first = golden.profile_for({"model": "rt"})
    second = golden.profile_for({"model": "rt", "site": "b"})
    assert first is not None and second is not None
    assert first.runtime is second.runtime


def test_a_profile_without_runtime_keeps_its_selection() -> None:
    (profile,) = load("").profiles
    assert profile.pcrs == (0, 7) and profile.runtime is None


def test_a_bad_digest_is_reported_at_its_line() -> None:
    found = problems(
        f"runtime:\n  digests:\n    /usr/bin/bash:\n      - {DIGEST}\n      - sha256:1f3a\n"
    )
    (text,) = found
    assert text.startswith("rt.yaml:13:9: runtime.digests['/usr/bin/bash'][1]")
    assert "no sha256 digest" in text


def test_an_unknown_runtime_key_is_reported_at_its_line() -> None:
    (text,) = problems(f"runtime:\n  digests: {{/a: {DIGEST}}}\n  unknwon: warning\n")
    assert text.startswith("rt.yaml:11:12: runtime.unknwon: unknown key")


def test_a_duplicate_path_is_refused_not_silently_merged() -> None:
    (text,) = problems(f"runtime:\n  digests:\n    /a: {DIGEST}\n    /a: {DIGEST}\n")
    assert "rt.yaml:12:5: duplicate key '/a'" in text


def test_yes_is_not_a_boolean() -> None:
    found = problems("runtime:\n  buf:\n    kexec-cmdline: {ignore: yes}\n")
    assert any("runtime.buf['kexec-cmdline'].ignore: must be true or false" in p for p in found)


def test_a_release_may_not_expect_pcr10_when_the_log_judges_it() -> None:
    base = BASE.replace("pcrs: [0, 7]", "pcrs: [0, 7, 10]") + '      10: "%s"\n' % ("22" * 32)
    found = problems(f"runtime:\n  digests: {{/a: {DIGEST}}}\n", base)
    assert any("expects a PCR 10 value" in p for p in found)


def test_a_section_allowing_nothing_is_refused() -> None:
    (text,) = problems("runtime:\n  unknown: warning\n")
    assert "rt.yaml:10:3: runtime: allows nothing" in text


def test_lint_warns_about_an_exclusion_matching_everything(tmp_path: Path) -> None:
    (tmp_path / "rt.yaml").write_text(
        BASE + f"runtime:\n  digests: {{/a: {DIGEST}}}\n  exclude:\n    - glob: /**\n"
    )
    out, err = io.StringIO(), io.StringIO()
    assert lint(tmp_path, out, err) == 0
    first = out.getvalue().splitlines()[0]
    assert first.startswith(f"warning: {tmp_path / 'rt.yaml'}:12:")
    assert "matches every path" in first
