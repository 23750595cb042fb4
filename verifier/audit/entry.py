"""Entries of the audit log and their canonical bytes (what the Merkle tree hashes).

An entry is ``(kind, time, fields)``. Its canonical encoding is JSON with sorted keys, no
whitespace, UTF-8 (not ASCII-escaped), integers only (no floats), and a format version:

    {"fields":{...},"kind":"verdict","time":"2026-07-23T14:00:00.000000Z","v":1}

Invariants, checked when an entry is built (so every ``LogEntry`` is encodable):

- ``kind`` is one of ``EntryKind``; the fields ``REQUIRED_FIELDS[kind]`` are present and are
  non-empty strings (an operator action names its ``caller``);
- ``time`` is timezone-aware; it is encoded in UTC with exactly six fraction digits;
- field names match ``[a-z][a-z0-9_]{0,63}`` (so key order is the same in every language);
  values are strings, integers in the signed 64-bit range, booleans, null, or tuples of those;
- the canonical encoding is at most ``Limits.max_audit_entry_bytes``.

``LogEntry.from_canonical`` accepts exactly the bytes ``canonical_bytes`` produces, nothing
else (re-encoding must give the same bytes), so one entry has one encoding and one leaf hash.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Union

from verifier.audit.errors import AuditMalformed
from verifier.audit.merkle import leaf_hash
from verifier.limits import DEFAULT_LIMITS, Limits

FORMAT_VERSION = 1
Scalar = Union[str, int, bool, None]  # noqa: UP007 (a runtime alias used in isinstance)
FieldValue = Union[Scalar, tuple["FieldValue", ...]]  # noqa: UP007
_FIELD_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")
_INT_MAX = 2**63 - 1
_MAX_DEPTH = 4
_NAMES_SEEN: set[str] = set()  # field names that matched _FIELD_NAME (a small, fixed set)
_NAMES_SEEN_MAX = 4096


class EntryKind(enum.Enum):
    VERDICT = "verdict"
    SUPERSESSION = "supersession"
    ENROLLMENT = "enrollment"
    OPERATOR_ACTION = "operator_action"
    GOLDEN_CHANGE = "golden_change"


REQUIRED_FIELDS: Mapping[EntryKind, tuple[str, ...]] = MappingProxyType(
    {
        EntryKind.VERDICT: ("device_id", "verdict_id", "status"),
        EntryKind.SUPERSESSION: ("device_id", "verdict_id", "superseded_by"),
        EntryKind.ENROLLMENT: ("device_id", "outcome"),
        EntryKind.OPERATOR_ACTION: ("caller", "action"),
        EntryKind.GOLDEN_CHANGE: ("golden_digest", "change"),
    }
)


def format_time(time: datetime) -> str:
    if time.tzinfo is None or time.utcoffset() is None:
        raise AuditMalformed("an entry time must be timezone-aware")
    utc = time.astimezone(UTC)
    if not 1970 <= utc.year <= 9999:
        raise AuditMalformed(f"entry time {utc} is outside the years 1970 to 9999")
    return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    if not _TIME.fullmatch(text):
        raise AuditMalformed(f"entry time {text!r} is not YYYY-MM-DDTHH:MM:SS.ffffffZ")
    try:
        return datetime.fromisoformat(text)  # the pattern above admits only UTC ("Z")
    except ValueError as exc:
        raise AuditMalformed(f"entry time {text!r} is not a valid date") from exc


def _check_value(name: str, value: object, depth: int = 0) -> FieldValue:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):  # UTF-8 encodability: checked once, on the canonical bytes
        return value
    if isinstance(value, int):
        if not -_INT_MAX - 1 <= value <= _INT_MAX:
            raise AuditMalformed(f"field {name} is outside the signed 64-bit range")
        return value
    if isinstance(value, tuple | list) and depth < _MAX_DEPTH:
        return tuple(_check_value(name, item, depth + 1) for item in value)
    raise AuditMalformed(f"field {name} has a value of type {type(value).__name__}")


def _to_json(value: FieldValue) -> object:
    return [_to_json(v) for v in value] if isinstance(value, tuple) else value


@dataclass(frozen=True)
class LogEntry:
    """One audited event. ``fields`` is a read-only mapping, sorted by name."""

    kind: EntryKind
    time: datetime
    fields: Mapping[str, FieldValue]
    _canonical: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.kind, EntryKind):
            raise AuditMalformed(f"unknown entry kind {self.kind!r}")
        checked: dict[str, FieldValue] = {}
        as_json: dict[str, object] = {}
        try:
            names = sorted(self.fields)
        except TypeError as exc:  # names of mixed types
            raise AuditMalformed("field names must be strings") from exc
        for name in names:
            if name not in _NAMES_SEEN:
                if not isinstance(name, str) or not _FIELD_NAME.fullmatch(name):
                    raise AuditMalformed(f"field name {name!r} is not [a-z][a-z0-9_]*")
                if len(_NAMES_SEEN) < _NAMES_SEEN_MAX:
                    _NAMES_SEEN.add(name)
            value = self.fields[name]
            if type(value) is str:  # the common case, without the generic walk
                checked[name] = as_json[name] = value
                continue
            checked[name] = valid = _check_value(name, value)
            as_json[name] = _to_json(valid)
        for name in REQUIRED_FIELDS[self.kind]:
            value = checked.get(name)
            if not isinstance(value, str) or not value:
                raise AuditMalformed(f"a {self.kind.value} entry needs a non-empty {name}")
        object.__setattr__(self, "fields", MappingProxyType(checked))
        document = {
            "fields": as_json,
            "kind": self.kind.value,
            "time": format_time(self.time),
            "v": FORMAT_VERSION,
        }
        text = json.dumps(
            document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
        try:
            canonical = text.encode("utf-8")
        except UnicodeEncodeError as exc:  # a lone surrogate in some string value
            raise AuditMalformed("a field is not encodable as UTF-8") from exc
        if len(canonical) > DEFAULT_LIMITS.max_audit_entry_bytes:
            raise AuditMalformed(f"an entry of {len(canonical)} bytes is over the limit")
        object.__setattr__(self, "_canonical", canonical)

    def canonical_bytes(self) -> bytes:
        return self._canonical

    def leaf_hash(self) -> bytes:
        """The RFC 6962 leaf hash of the canonical bytes: what the log's tree holds."""
        return leaf_hash(self._canonical)

    @classmethod
    def from_canonical(cls, data: bytes, limits: Limits = DEFAULT_LIMITS) -> LogEntry:
        """Parse canonical bytes; any other encoding of the same entry is refused."""
        if len(data) > limits.max_audit_entry_bytes:
            raise AuditMalformed(f"an entry of {len(data)} bytes exceeds the limit")
        try:
            document = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates)
        except (UnicodeDecodeError, ValueError) as exc:
            raise AuditMalformed("an entry is not UTF-8 JSON") from exc
        entry = cls._from_document(document)
        if entry.canonical_bytes() != data:
            raise AuditMalformed("an entry is not in canonical form")
        return entry

    @classmethod
    def _from_document(cls, document: object) -> LogEntry:
        if not isinstance(document, dict) or set(document) != {"fields", "kind", "time", "v"}:
            raise AuditMalformed("an entry is an object of fields, kind, time and v")
        if document["v"] != FORMAT_VERSION or isinstance(document["v"], bool):
            raise AuditMalformed(f"entry format version {document['v']!r} is not supported")
        kinds = {k.value: k for k in EntryKind}
        kind, time, fields = document["kind"], document["time"], document["fields"]
        if not isinstance(kind, str) or kind not in kinds:
            raise AuditMalformed(f"unknown entry kind {kind!r}")
        if not isinstance(time, str) or not isinstance(fields, dict):
            raise AuditMalformed("an entry's time is a string and its fields an object")
        return cls(kinds[kind], parse_time(time), fields)


def peek_fields(data: bytes) -> tuple[str, Mapping[str, object]] | None:
    """The kind and fields of an entry's bytes, without the canonical check ``from_canonical``
    makes: for a pass over entries that ``verify_log`` checks in the same run (a malformed
    entry is reported there). None if the bytes are not a JSON object of that shape."""
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(document, dict):
        return None
    kind, fields = document.get("kind"), document.get("fields")
    if not isinstance(kind, str) or not isinstance(fields, dict):
        return None
    return kind, fields


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise AuditMalformed("an entry has a duplicate key")
    return result
