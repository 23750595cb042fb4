"""Typed readers for golden YAML nodes: each returns a value, or records a problem and ``None``.

Readers never raise: a file's walk goes on after a problem so that lint reports every
mistake at once. Types are strict and match ``golden_measurements/schema.json``: a string
field refuses an unquoted scalar that YAML reads as a number, boolean, null or date (the
hint says to quote it); booleans are ``true``/``false`` only (not ``yes``/``no``); integers are
plain decimals (no octal ``010``, no ``0x7``, no quotes).
"""

from __future__ import annotations

import difflib
import re
from datetime import UTC, date, datetime, timedelta

from verifier.golden.model import BANKS
from verifier.golden.nodes import STR_TAG, Mapping, Node, Scalar, Sequence
from verifier.ima.section import DigestsFiles
from verifier.limits import Limits

# The keys the loader accepts, per mapping (the schema test keeps schema.json in step).
PROFILE_KEYS = (
    "profile",
    "match",
    "priority",
    "verdict_lifetime",
    "bank",
    "pcrs",
    "allow_sha1",
    "quirks",
    "releases",
    "runtime",
)
PROFILE_REQUIRED = frozenset({"profile", "match", "verdict_lifetime", "pcrs", "releases"})
RELEASE_KEYS = (
    "name",
    "not_after",
    "revoked",
    "upgrades_to",
    "pcrs",
    "firmware",
    "secure_boot",
    "boot_chain",
    "kernel_cmdline",
)
RELEASE_REQUIRED = frozenset({"name"})
FIRMWARE_KEYS = ("scrtm_versions",)
SECURE_BOOT_KEYS = ("enabled", "db_contains", "dbx_contains")
CMDLINE_KEYS = ("exact", "pattern")

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
MAX_STRING = 4096  # characters in any one string value
MAX_LIFETIME = 30 * 24 * 3600  # seconds
_INT_RE = re.compile(r"[-+]?(?:0|[1-9][0-9]{0,11})")
_LEADING_ZERO_RE = re.compile(r"0[0-9_]+")
_HEX_RE = re.compile(r"[0-9a-fA-F]*")
_DURATION_RE = re.compile(r"([1-9][0-9]{0,9})([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_TIME_RE = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:[Zz]|[+-]\d{2}:\d{2})"
)
_NAIVE_TIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?")
_TRUE = frozenset({"true", "True", "TRUE"})
_FALSE = frozenset({"false", "False", "FALSE"})
_KINDS = {
    "str": "a string",
    "int": "an integer",
    "bool": "a boolean",
    "float": "a number",
    "timestamp": "a date",
    "null": "null",
}


class FileContext:
    """The problems found in one file, as (line, column, message, hint); ``digests_files``
    resolves a runtime section's ``digests_file`` (None: no digests file can be named)."""

    def __init__(
        self, file: str, limits: Limits, digests_files: DigestsFiles | None = None
    ) -> None:
        self.file = file
        self.limits = limits
        self.digests_files = digests_files
        self.problems: list[tuple[int, int, str, str]] = []

    def problem_at(self, line: int, column: int, message: str, hint: str = "") -> None:
        self.problems.append((line, column, message, hint))

    def problem(self, node: Node, message: str, hint: str = "") -> None:
        self.problem_at(node.line, node.column, message, hint)


def describe(node: Node) -> str:
    if isinstance(node, Mapping):
        return "a mapping"
    if isinstance(node, Sequence):
        return "a list"
    if node.is_null():
        return "nothing (null)"
    kind = _KINDS.get(node.implicit_tag().rsplit(":", 1)[-1], "a value")
    shown = node.value if len(node.value) <= 40 else node.value[:37] + "..."
    return f"{kind} ({shown!r})"


def fields(
    ctx: FileContext, node: Node, what: str, keys: tuple[str, ...], required: frozenset[str]
) -> dict[str, tuple[Scalar, Node]] | None:
    """The known keys of a mapping; unknown, duplicate and missing keys are problems."""
    if not isinstance(node, Mapping):
        ctx.problem(node, f"{what} must be a mapping, not {describe(node)}")
        return None
    out: dict[str, tuple[Scalar, Node]] = {}
    for key, value in node.pairs:
        if not isinstance(key, Scalar) or key.is_null():
            ctx.problem(key, f"keys of {what} must be names, not {describe(key)}")
            continue
        if key.value not in keys:
            ctx.problem(key, f"unknown key {key.value!r} in {what}", _suggest(key.value, keys))
            continue
        first = out.get(key.value)
        if first is not None:
            ctx.problem(
                key,
                f"duplicate key {key.value!r} in {what}",
                f"first set at line {first[0].line}; YAML would silently keep the last",
            )
            continue
        out[key.value] = (key, value)
    for name in keys:
        if name in required and name not in out:
            ctx.problem(node, f"{what} is missing the required key {name!r}")
    return out


def _suggest(word: str, keys: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, keys, n=1)
    if close:
        return f"did you mean {close[0]!r}?"
    return "known keys: " + ", ".join(keys)


def string(ctx: FileContext, node: Node, what: str) -> str | None:
    if not isinstance(node, Scalar) or node.is_null() or node.implicit_tag() != STR_TAG:
        hint = f'quote it: "{node.value}"' if isinstance(node, Scalar) and node.value else ""
        ctx.problem(node, f"{what} must be a string, not {describe(node)}", hint)
        return None
    if len(node.value) > MAX_STRING:
        ctx.problem(node, f"{what} is longer than {MAX_STRING} characters")
        return None
    return node.value


def name(ctx: FileContext, node: Node, what: str) -> str | None:
    value = string(ctx, node, what)
    if value is not None and NAME_RE.fullmatch(value) is None:
        ctx.problem(
            node,
            f"{what} {value!r} is not a valid name",
            "1-64 characters: letters, digits, '.', '_', '+', '-'; starting with a letter or digit",
        )
        return None
    return value


def boolean(ctx: FileContext, node: Node, what: str) -> bool | None:
    if isinstance(node, Scalar) and node.plain:
        if node.value in _TRUE:
            return True
        if node.value in _FALSE:
            return False
    if isinstance(node, Scalar) and node.plain and node.implicit_tag().endswith(":bool"):
        ctx.problem(
            node,
            f"{what} must be true or false, not {node.value!r}",
            "YAML 1.2 editors read yes/no/on/off as strings: write true or false",
        )
        return None
    hint = "write true or false" if isinstance(node, Scalar) else ""
    ctx.problem(node, f"{what} must be true or false, not {describe(node)}", hint)
    return None


def integer(ctx: FileContext, node: Node, what: str, low: int, high: int) -> int | None:
    if not (isinstance(node, Scalar) and node.plain and _INT_RE.fullmatch(node.value)):
        hint = "a plain decimal integer, unquoted" if isinstance(node, Scalar) else ""
        ctx.problem(node, f"{what} must be an integer, not {describe(node)}", hint)
        return None
    value = int(node.value)
    if not low <= value <= high:
        ctx.problem(node, f"{what} {value} is out of range {low}..{high}")
        return None
    return value


def pcr_index(ctx: FileContext, node: Node, what: str, quoted_ok: bool = False) -> int | None:
    """A PCR index 0-23; ``quoted_ok`` for mapping keys (JSON-style ``"7":`` keys)."""
    if quoted_ok and isinstance(node, Scalar) and not node.plain:
        node = Scalar(node.value, True, node.line, node.column)
    if isinstance(node, Scalar) and node.plain and _LEADING_ZERO_RE.fullmatch(node.value):
        ctx.problem(
            node,
            f"{what} {node.value!r} has a leading zero",
            "write plain decimals: YAML 1.1 reads 010 as octal 8",
        )
        return None
    if not (isinstance(node, Scalar) and node.plain and _INT_RE.fullmatch(node.value)):
        ctx.problem(node, f"{what} must be a PCR index (an integer 0-23), not {describe(node)}")
        return None
    value = int(node.value)
    if not 0 <= value <= 23:
        ctx.problem(node, f"{what} {value} is not a PCR index", "PCR indices are 0-23")
        return None
    return value


def sequence(ctx: FileContext, node: Node, what: str) -> tuple[Node, ...] | None:
    """A non-empty list (an empty list would read as a rule that checks nothing)."""
    if not isinstance(node, Sequence):
        ctx.problem(node, f"{what} must be a list, not {describe(node)}")
        return None
    if not node.items:
        ctx.problem(node, f"{what} is empty", "list at least one entry, or remove the key")
        return None
    return node.items


def duration(ctx: FileContext, node: Node, what: str) -> int | None:
    """Seconds: a positive integer, or a count with a unit (30s, 15m, 1h, 1d)."""
    if isinstance(node, Scalar) and node.plain and _INT_RE.fullmatch(node.value):
        seconds = int(node.value)
    elif isinstance(node, Scalar) and (match := _DURATION_RE.fullmatch(node.value)):
        seconds = int(match.group(1)) * _UNITS[match.group(2)]
    else:
        ctx.problem(
            node,
            f"{what} must be a duration, not {describe(node)}",
            "seconds, or a number with a unit: 30s, 15m, 1h, 1d",
        )
        return None
    if not 0 < seconds <= MAX_LIFETIME:
        ctx.problem(
            node, f"{what} of {seconds} seconds is not between 1 second and 30 days", "e.g. 1h"
        )
        return None
    return seconds


def timestamp(ctx: FileContext, node: Node, what: str) -> float | None:
    """POSIX seconds. A date means the end of that day, UTC; a time needs a UTC offset."""
    text = node.value if isinstance(node, Scalar) else ""
    try:
        if _DATE_RE.fullmatch(text):
            day = date.fromisoformat(text)
            end = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
            return end.timestamp()
        if _TIME_RE.fullmatch(text):
            return datetime.fromisoformat(text.upper().replace(" ", "T")).timestamp()
    except ValueError as exc:
        ctx.problem(node, f"{what} {text!r} is not a valid date: {exc}")
        return None
    if _NAIVE_TIME_RE.fullmatch(text):
        ctx.problem(
            node,
            f"{what} {text!r} has no UTC offset",
            f"append Z for UTC ({text}Z) or an offset such as +02:00",
        )
        return None
    ctx.problem(
        node,
        f"{what} must be a date or an RFC 3339 time, not {describe(node)}",
        "2027-06-30 (valid through that day, UTC) or 2027-06-30T12:00:00Z",
    )
    return None


def digest(ctx: FileContext, node: Node, what: str, bank: str | None) -> bytes | None:
    """Hex digits of one digest of ``bank`` (any whole digest length when bank is unknown)."""
    if not isinstance(node, Scalar) or node.is_null() or node.implicit_tag() != STR_TAG:
        hint = f'quote it: "{node.value}"' if isinstance(node, Scalar) and node.value else ""
        ctx.problem(node, f"{what} must be a hex string, not {describe(node)}", hint)
        return None
    text = node.value
    bad = _HEX_RE.match(text)
    end = bad.end() if bad else 0
    if end != len(text):
        ctx.problem(
            node,
            f"{what} is not hexadecimal: {text[end]!r} at position {end + 1}",
            "digests are written as hex digits, without 0x or separators",
        )
        return None
    size = BANKS.get(bank or "")
    if size is not None and len(text) != 2 * size:
        ctx.problem(
            node,
            f"{what} has {len(text)} hex digits; a {bank} digest has {2 * size}",
            _length_hint(len(text)),
        )
        return None
    if size is None and (not text or len(text) % 2):
        ctx.problem(node, f"{what} has {len(text)} hex digits; a digest has an even number")
        return None
    return bytes.fromhex(text)


def _length_hint(digits: int) -> str:
    for bank, size in BANKS.items():
        if digits == 2 * size:
            return f"that is the length of a {bank} digest: wrong bank or wrong value?"
    return "a truncated or mistyped value?"
