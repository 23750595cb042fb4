"""Operator-supplied regular expressions, compiled with RE2 and matched in linear time.

A golden profile's ``kernel_cmdline.pattern`` (and every later operator- or caller-supplied
pattern, such as IMA path exclusions) is untrusted in one sense: an operator's mistake such
as ``((\\S+ ?)+)+X`` must not pin a CPU of the verifier. Python's ``re`` backtracks and can take
exponential time on such patterns; RE2 (the ``google-re2`` bindings) runs an automaton whose
time is linear in the input and never backtracks.

Invariants:

- ``LinearPattern`` is built only by ``compile_linear``; it always holds a compiled RE2 program.
- ``fullmatch`` answers in time linear in ``len(text)`` (RE2's guarantee), for any pattern.
- Syntax RE2 refuses (backreferences ``\\1``, lookarounds ``(?=``, ``(?<=``, possessive or
  atomic groups, repetition counts over 1000, programs over ``MAX_PROGRAM_BYTES``) is a
  ``PatternRefused`` with RE2's one-line reason; the loader reports it with file and line.

Differences from Python's ``re`` that an operator may meet: ``\\d``, ``\\w``, ``\\s`` and ``\\b``
are ASCII-only; there are no backreferences or lookarounds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import re2  # type: ignore[import-untyped]  # google-re2 ships no type information

# Memory RE2 may use for one compiled pattern (its default is 8 MiB); larger programs are
# refused at load time rather than slowing every match.
MAX_PROGRAM_BYTES = 8 << 20


class PatternRefused(ValueError):
    """The pattern is not in the syntax RE2 accepts; ``reason`` is RE2's one-line message."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Program(Protocol):
    """The part of a compiled ``re2`` pattern used here."""

    def fullmatch(self, text: str) -> object: ...


def _options() -> object:
    options = re2.Options()
    options.log_errors = False  # refusals are reported by the loader, not on stderr
    options.never_capture = True  # only a yes/no answer is needed: lets RE2 use its DFA
    options.max_mem = MAX_PROGRAM_BYTES
    return options


@dataclass(frozen=True)
class LinearPattern:
    """A compiled RE2 pattern. ``pattern`` is the source text, for messages and dry runs."""

    pattern: str
    _program: _Program = field(repr=False, compare=False)

    def fullmatch(self, text: str) -> bool:
        """Whether the whole of ``text`` matches; linear time in ``len(text)``."""
        return self._program.fullmatch(text) is not None


def compile_linear(text: str) -> LinearPattern:
    """Compile ``text`` with RE2 or raise ``PatternRefused`` saying why."""
    try:
        program: _Program = re2.compile(text, _options())
    except re2.error as exc:
        raise PatternRefused(_reason(exc)) from None
    return LinearPattern(text, program)


def _reason(exc: Exception) -> str:
    raw = exc.args[0] if exc.args else "refused"
    message = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return message.splitlines()[0] if message else "refused"
