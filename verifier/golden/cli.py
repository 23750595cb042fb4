"""``attest-verifier golden ...``: operator commands on golden measurement files.

    attest-verifier golden lint DIR

``lint`` loads DIR exactly as the verifier would (same loader, same limits) and prints each
problem as ``file:line:column: message`` with its hint on the next line, then a summary.
Exit codes: 0 clean, 1 problems found, 2 DIR missing or unreadable.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TextIO

from verifier.golden.load import GoldenError, GoldenProblem, load_golden_dir
from verifier.golden.model import GoldenSet

Subparsers = argparse._SubParsersAction  # argparse has no public name for it


def register(
    subparsers: Subparsers[argparse.ArgumentParser],
) -> Subparsers[argparse.ArgumentParser]:
    """Add the ``golden`` command group; returns its subparsers so others can add commands."""
    golden = subparsers.add_parser("golden", help="operate golden measurement files")
    commands = golden.add_subparsers(dest="golden_command", required=True, metavar="COMMAND")
    lint = commands.add_parser(
        "lint",
        help="validate a golden directory; print file:line:column: problems",
        description="Validate every *.yaml/*.yml file of DIR as the verifier would load it.",
    )
    lint.add_argument("directory", type=Path, metavar="DIR")
    lint.set_defaults(func=cmd_lint)
    return commands


def cmd_lint(ns: argparse.Namespace) -> int:
    return lint(ns.directory, sys.stdout, sys.stderr)


def lint(directory: Path, out: TextIO, err: TextIO) -> int:
    if not directory.is_dir() or not os.access(directory, os.R_OK | os.X_OK):
        print(f"attest-verifier golden lint: {directory}: not a readable directory", file=err)
        return 2
    try:
        golden = load_golden_dir(directory)
    except GoldenError as exc:
        _print_problems(exc.problems, out)
        return 1
    _print_summary(golden, out)
    return 0


def _print_problems(problems: tuple[GoldenProblem, ...], out: TextIO) -> None:
    for problem in problems:
        print(f"{problem.file}:{problem.line}:{problem.column}: {problem.message}", file=out)
        if problem.hint:
            print(f"    hint: {problem.hint}", file=out)
    files = len({p.file for p in problems})
    noun = "problem" if len(problems) == 1 else "problems"
    print(f"{len(problems)} {noun} in {files} file{'s' if files != 1 else ''}", file=out)


def _print_summary(golden: GoldenSet, out: TextIO) -> None:
    releases = sum(len(p.releases) for p in golden.profiles)
    print(
        f"ok: {len(golden.files)} files, {len(golden.profiles)} profiles, {releases} releases; "
        f"digest {golden.digest}",
        file=out,
    )
