"""Column encodings shared by the store backends: plain text and integers a database can hold.

Invariants:
- Every encoder is total on the values the store contract allows and its decoder inverts it
  exactly (``decode(encode(x)) == x``).
- A decoder that meets a value it did not write (a damaged or foreign row) raises
  ``StoreUnavailable`` naming the column: stored data is never guessed at, so a damaged row
  can never turn into a trusted device, key or verdict.
- JSON is compact (no spaces) and sorted where the input is a mapping, so equal values encode
  to equal text.

Unsigned 64-bit TPM counters (firmware version, clock) are kept in a signed 64-bit column by
two's complement: ``to_i64``/``from_i64``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from verifier.errors import StoreUnavailable
from verifier.verdict import Reason, Status

_U64 = 1 << 64
_I64_MAX = (1 << 63) - 1
_COMPACT = (",", ":")
_REASON_KEYS = frozenset(
    ("code", "text", "severity", "pcr", "expected", "actual", "release", "rule", "event_index")
)


def _damaged(column: str, detail: str) -> StoreUnavailable:
    return StoreUnavailable(f"stored {column} is damaged ({detail}); refusing to use it")


def _loads(text: object, column: str) -> Any:
    if not isinstance(text, str):
        raise _damaged(column, f"expected JSON text, found {type(text).__name__}")
    try:
        return json.loads(text)
    except ValueError as exc:
        raise _damaged(column, f"not JSON: {exc}") from exc


# ------------------------------------------------------------------ unsigned 64-bit integers


def to_i64(value: int, what: str) -> int:
    """Map an unsigned 64-bit value into SQL's signed 64-bit range (two's complement)."""
    if not 0 <= value < _U64:
        raise StoreUnavailable(f"cannot store {what} {value}: not an unsigned 64-bit integer")
    return value - _U64 if value > _I64_MAX else value


def from_i64(value: int) -> int:
    return value + _U64 if value < 0 else value


# ------------------------------------------------------------------ string maps (labels, files)


def encode_str_map(values: Mapping[str, str]) -> str:
    return json.dumps(dict(values), sort_keys=True, separators=_COMPACT)


def decode_str_map(text: object, column: str) -> dict[str, str]:
    data = _loads(text, column)
    if not isinstance(data, dict):
        raise _damaged(column, "not a JSON object")
    for key, value in data.items():
        if not isinstance(value, str):
            raise _damaged(column, f"value of {key!r} is not a string")
    return data


def encode_str_list(values: Iterable[str]) -> str:
    """A JSON array of strings (a query parameter for ``json_each``)."""
    return json.dumps([str(value) for value in values], separators=_COMPACT)


def decode_str_list(text: object, column: str) -> list[str]:
    data = _loads(text, column)
    if not isinstance(data, list) or not all(isinstance(item, str) for item in data):
        raise _damaged(column, "not a JSON array of strings")
    return data


# ------------------------------------------------------------------ PCR selections and values


def encode_pcr_selection(pcrs: Iterable[int]) -> str:
    return ",".join(str(int(index)) for index in pcrs)


def decode_pcr_selection(text: object, column: str) -> tuple[int, ...]:
    if not isinstance(text, str):
        raise _damaged(column, "not text")
    if not text:
        return ()
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError as exc:
        raise _damaged(column, str(exc)) from exc


def encode_pcr_values(values: Mapping[int, bytes]) -> str:
    """``{index: digest}`` as a JSON object of decimal index -> hex digest, by index."""
    return json.dumps(
        {str(index): values[index].hex() for index in sorted(values)}, separators=_COMPACT
    )


def decode_pcr_values(text: object, column: str) -> dict[int, bytes]:
    data = _loads(text, column)
    if not isinstance(data, dict):
        raise _damaged(column, "not a JSON object")
    out: dict[int, bytes] = {}
    try:
        for index, digest in data.items():
            out[int(index)] = bytes.fromhex(digest)
    except (ValueError, TypeError) as exc:
        raise _damaged(column, str(exc)) from exc
    return out


# ------------------------------------------------------------------ verdict reasons


def _reason_dict(reason: Reason) -> dict[str, object]:
    return {
        "code": reason.code,
        "text": reason.text,
        "severity": reason.severity.value,
        "pcr": reason.pcr,
        "expected": reason.expected,
        "actual": reason.actual,
        "release": reason.release,
        "rule": reason.rule,
        "event_index": reason.event_index,
    }


def encode_reasons(reasons: Iterable[Reason]) -> str:
    """All fields of every reason, in order; the severity as its ``Status`` value."""
    return json.dumps([_reason_dict(reason) for reason in reasons], separators=_COMPACT)


def _optional_int(value: object, name: str) -> int | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise _damaged("verdict reasons", f"{name} is not an integer")


def _text(entry: dict[str, object], name: str) -> str:
    value = entry.get(name, "")
    if not isinstance(value, str):
        raise _damaged("verdict reasons", f"{name} is not a string")
    return value


def _decode_reason(entry: object) -> Reason:
    if not isinstance(entry, dict) or not _REASON_KEYS.issuperset(entry):
        raise _damaged("verdict reasons", "a reason is not an object of known fields")
    try:
        severity = Status(entry.get("severity"))
    except ValueError as exc:
        raise _damaged("verdict reasons", str(exc)) from exc
    return Reason(
        code=_text(entry, "code"),
        text=_text(entry, "text"),
        severity=severity,
        pcr=_optional_int(entry.get("pcr"), "pcr"),
        expected=_text(entry, "expected"),
        actual=_text(entry, "actual"),
        release=_text(entry, "release"),
        rule=_text(entry, "rule"),
        event_index=_optional_int(entry.get("event_index"), "event_index"),
    )


def decode_reasons(text: object) -> tuple[Reason, ...]:
    data = _loads(text, "verdict reasons")
    if not isinstance(data, list):
        raise _damaged("verdict reasons", "not a JSON array")
    return tuple(_decode_reason(entry) for entry in data)


def decode_status(value: object) -> Status:
    try:
        return Status(value)
    except ValueError as exc:
        raise _damaged("verdict status", str(exc)) from exc
