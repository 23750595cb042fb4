"""IMA fields of ``Evidence.build``: an oversized list or offset is refused before parsing."""

from __future__ import annotations

import pytest

from verifier.errors import LimitExceeded
from verifier.evidence import Evidence
from verifier.limits import Limits


def build(limits: Limits, ima_log: bytes = b"", ima_offset: int = 0) -> Evidence:
    return Evidence.build(
        device_id="d",
        nonce=b"n" * 32,
        quote=b"q",
        signature=b"s",
        pcr_values=((10, b"\x00" * 32),),
        event_log=b"",
        limits=limits,
        ima_log=ima_log,
        ima_offset=ima_offset,
    )


def test_an_oversized_ima_log_is_refused() -> None:
    with pytest.raises(LimitExceeded, match="IMA log is 11 bytes"):
        build(Limits(max_ima_log_bytes=10), b"x" * 11)


def test_an_offset_past_the_entry_limit_is_refused() -> None:
    with pytest.raises(LimitExceeded, match="ima_offset"):
        build(Limits(max_ima_entries=100), b"", 100)


def test_a_log_at_its_limits_is_kept_as_sent() -> None:
    evidence = build(Limits(max_ima_log_bytes=10, max_ima_entries=100), b"x" * 10, 99)
    assert (evidence.ima_log, evidence.ima_offset) == (b"x" * 10, 99)
