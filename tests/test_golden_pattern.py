"""Finding 7 of the fault run: one operator-written regular expression must not wedge the
verifier. Golden patterns are compiled with RE2 (linear time, never backtracks); syntax RE2
refuses is a load problem at the pattern's file, line and column, so lint shows it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from verifier.eventlog.facts import BootFacts
from verifier.golden.load import GoldenError, GoldenProblem, load_golden_dir, load_golden_texts
from verifier.golden.model import CmdlineRule, EventRules
from verifier.golden.pattern import PatternRefused, compile_linear
from verifier.golden.rules import evaluate_event_rules

ROOT = Path(__file__).resolve().parents[1]
CATASTROPHIC = r"((\S+ ?)+)+X"  # exponential in Python's re on a long non-matching line


def golden_text(pattern_yaml: str) -> str:
    """A one-release profile whose kernel_cmdline pattern is on line 7, column 31."""
    return textwrap.dedent(
        f"""\
        profile: p
        match: {{model: gw-100}}
        verdict_lifetime: 1h
        pcrs: [8]
        releases:
          - name: r1
            kernel_cmdline: {{pattern: {pattern_yaml}}}
        """
    )


def problems_of(files: dict[str, str]) -> tuple[GoldenProblem, ...]:
    with pytest.raises(GoldenError) as info:
        load_golden_texts(files)
    return info.value.problems


# The child loads a golden file holding the catastrophic pattern the way the verifier and
# DryRunGolden do, then appraises a 100,000-character command line that almost matches.
# With Python's re this does not finish within the age of the universe (30 characters already
# take minutes); with RE2 it returns at once. The parent allows a generous 120 s: a hang fails.
_CHILD = """
import dataclasses, sys
from verifier.golden.rules import evaluate_event_rules
from verifier.eventlog.facts import BootFacts
from verifier.golden.load import load_golden_texts

golden = load_golden_texts({"p.yaml": sys.stdin.read()})
events = golden.profiles[0].releases[0].events
cmdline = "a " * 50_000
facts = BootFacts(bank="sha256", trusted_pcrs=(8,), kernel_cmdline=cmdline, kernel_cmdline_event=3)
reasons = evaluate_event_rules(facts, events, "r1")
print(len(reasons), reasons[0].code)
facts = dataclasses.replace(facts, kernel_cmdline=cmdline + "X")
print(len(evaluate_event_rules(facts, events, "r1")))
"""


def test_catastrophic_backtracking_pattern_matches_in_linear_time() -> None:
    text = golden_text(f"'{CATASTROPHIC}'")
    done = subprocess.run(
        [sys.executable, "-c", _CHILD],
        input=text,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "kernel_cmdline_mismatch", "0"]


def test_catastrophic_pattern_returns_for_every_input_length() -> None:
    pattern = compile_linear(CATASTROPHIC)
    answers = [pattern.fullmatch("a " * n) for n in (10, 100, 1_000, 10_000, 100_000)]
    assert answers == [False] * 5
    assert pattern.fullmatch("a " * 100_000 + "X")


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        (r"'(ro) \1'", "invalid escape sequence: \\1"),
        ("'root=(?=/dev/sda)\\S+'", "invalid perl operator: (?="),
        ("'(?<=BOOT_IMAGE=)\\S+'", "invalid perl operator: (?<="),
        ("'(?!init=)\\S+'", "invalid perl operator: (?!"),
        ("'\\S++ ro'", "bad repetition operator: ++"),
        ("'(?>\\S+) ro'", "invalid perl operator: (?>"),
        ("'a{1001}'", "invalid repetition size: {1001}"),
    ],
)
def test_pattern_syntax_re2_refuses_is_a_problem_at_its_line(pattern: str, reason: str) -> None:
    [problem] = problems_of({"p.yaml": golden_text(pattern)})
    assert (problem.file, problem.line, problem.column) == ("p.yaml", 7, 31)
    assert problem.message == f"kernel_cmdline pattern is refused: {reason}"
    assert problem.hint is not None and "RE2" in problem.hint


def test_lint_of_a_directory_names_the_file_of_the_refused_pattern(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(golden_text("'ro( quiet)?'").replace("p\n", "good\n", 1))
    (tmp_path / "bad.yaml").write_text(golden_text(r"'(ro) \1'").replace("p\n", "bad\n", 1))
    with pytest.raises(GoldenError) as info:
        load_golden_dir(tmp_path)
    [problem] = info.value.problems
    assert problem.file.endswith("bad.yaml") and (problem.line, problem.column) == (7, 31)
    assert str(problem).startswith(f"{problem.file}:7:31: kernel_cmdline pattern is refused")


def test_refused_pattern_raises_with_re2_reason() -> None:
    with pytest.raises(PatternRefused) as info:
        compile_linear("root=(/dev/sda")
    assert info.value.reason == "missing ): root=(/dev/sda"


def test_accepted_pattern_still_matches_the_whole_line_only() -> None:
    rule = CmdlineRule(pattern=compile_linear(r"root=\S+ ro( quiet)?"))
    events = EventRules(kernel_cmdline=rule)
    facts = BootFacts(bank="sha256", trusted_pcrs=(8,), kernel_cmdline="root=/dev/sda2 ro quiet")
    assert evaluate_event_rules(facts, events, "r1") == []
    longer = BootFacts(
        bank="sha256", trusted_pcrs=(8,), kernel_cmdline="root=/dev/sda2 ro quiet init=/bin/sh"
    )
    [reason] = evaluate_event_rules(longer, events, "r1")
    assert reason.code == "kernel_cmdline_mismatch" and reason.expected == r"root=\S+ ro( quiet)?"
