"""``--log-format json``: one JSON object per log record, on one line.

Fields: ``ts`` (POSIX seconds), ``level``, ``logger``, ``msg`` (the formatted message), then
whichever of ``FIELDS`` the call passed with ``extra=`` (e.g.
``log.info("verdict", extra={"device_id": d, "status": "affirming"})``), then ``exc`` (the
traceback as one string) when the record carries an exception. ``json.dumps`` escapes every
newline, so a record is always exactly one line: a device id or reason text with a line break
in it cannot forge a second record.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import TextIO

FIELDS = ("device_id", "verdict_id", "status", "reasons", "caller", "rpc", "duration_ms")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in FIELDS:
            if name in record.__dict__:
                entry[name] = _plain(record.__dict__[name])
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, separators=(",", ":"), default=str)


def _plain(value: object) -> object:
    """JSON-friendly: sequences become lists, everything unknown becomes its ``str``."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    return str(value)


def choose_format(requested: str, stream: TextIO) -> str:
    """``text`` or ``json``; ``auto`` is text on a terminal and JSON otherwise."""
    if requested not in ("auto", "text", "json"):
        raise ValueError(f"unknown log format {requested!r}: expected auto, text or json")
    if requested != "auto":
        return requested
    isatty = getattr(stream, "isatty", None)
    return "text" if isatty is not None and isatty() else "json"


def configure_logging(
    requested: str, level: int = logging.INFO, stream: TextIO | None = None
) -> str:
    """Install one handler on the root logger with the chosen format; return the format."""
    out = stream if stream is not None else sys.stderr
    chosen = choose_format(requested, out)
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter() if chosen == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return chosen
