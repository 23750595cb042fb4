"""JSON logs: one object per record, one line per object, whatever the fields contain."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from verifier.logjson import JsonFormatter, choose_format, configure_logging


@pytest.fixture
def capture() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("test-logjson")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield logger, out
    logger.removeHandler(handler)


def records(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_extra_fields_become_json_fields(capture: tuple[logging.Logger, io.StringIO]) -> None:
    log, out = capture
    log.info(
        "device %s: %s",
        "dev-1",
        "contraindicated",
        extra={
            "device_id": "dev-1",
            "verdict_id": 42,
            "status": "contraindicated",
            "reasons": ("pcr_mismatch", "clock_rollback"),
            "caller": "spiffe://fleet/rp",
            "rpc": "Attest",
            "duration_ms": 12.5,
        },
    )
    [entry] = records(out)
    assert entry["msg"] == "device dev-1: contraindicated"
    assert entry["level"] == "info"
    assert entry["logger"] == "test-logjson"
    assert entry["device_id"] == "dev-1"
    assert entry["verdict_id"] == 42
    assert entry["reasons"] == ["pcr_mismatch", "clock_rollback"]
    assert entry["caller"] == "spiffe://fleet/rp"
    assert entry["rpc"] == "Attest"
    assert entry["duration_ms"] == 12.5
    assert isinstance(entry["ts"], float)


def test_fields_not_passed_are_absent(capture: tuple[logging.Logger, io.StringIO]) -> None:
    log, out = capture
    log.warning("plain")
    [entry] = records(out)
    assert set(entry) == {"ts", "level", "logger", "msg"}


def test_a_newline_in_a_device_id_cannot_forge_a_second_record(
    capture: tuple[logging.Logger, io.StringIO],
) -> None:
    log, out = capture
    forged = 'x"}\n{"level":"info","msg":"device trusted","status":"affirming'
    log.info("device %s refused", forged, extra={"device_id": forged, "status": "refused"})
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["device_id"] == forged
    assert entry["status"] == "refused"


def test_an_exception_is_one_field_on_one_line(
    capture: tuple[logging.Logger, io.StringIO],
) -> None:
    log, out = capture
    try:
        raise RuntimeError("store fell over\nbadly")
    except RuntimeError:
        log.exception("Attest failed unexpectedly", extra={"rpc": "Attest"})
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert "Traceback" in str(entry["exc"])
    assert "RuntimeError: store fell over\nbadly" in str(entry["exc"])


def test_unserialisable_values_are_written_as_text(
    capture: tuple[logging.Logger, io.StringIO],
) -> None:
    log, out = capture
    log.info("odd", extra={"status": object(), "reasons": [b"\x00", 1]})
    [entry] = records(out)
    assert str(entry["status"]).startswith("<object object")
    assert entry["reasons"] == ["b'\\x00'", 1]


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_auto_is_text_on_a_terminal_and_json_elsewhere() -> None:
    assert choose_format("auto", Tty()) == "text"
    assert choose_format("auto", io.StringIO()) == "json"
    assert choose_format("json", Tty()) == "json"
    assert choose_format("text", io.StringIO()) == "text"
    with pytest.raises(ValueError, match="unknown log format"):
        choose_format("xml", io.StringIO())


def test_configure_logging_installs_one_json_handler() -> None:
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    out = io.StringIO()
    try:
        assert configure_logging("json", stream=out) == "json"
        configure_logging("json", stream=out)  # twice: still one handler
        logging.getLogger("verifier.x").info("hello", extra={"rpc": "GetStatus"})
        assert len(root.handlers) == 1
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved:
            root.addHandler(handler)
        root.setLevel(level)
    [line] = out.getvalue().splitlines()
    assert json.loads(line)["rpc"] == "GetStatus"
