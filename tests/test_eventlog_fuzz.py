"""Property: whatever is done to a real log's bytes, only EventLogError comes out of the parser,
and a log that still parses can be replayed, have its facts extracted and be appraised."""

from __future__ import annotations

import contextlib
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verifier.cli.eventlog import describe
from verifier.errors import EventLogError
from verifier.eventlog import extract_facts, parse_event_log, replay
from verifier.golden.logcheck import appraise_event_log
from verifier.golden.model import QUIRKS

DATA = Path(__file__).parent / "data" / "eventlogs"
SEEDS = [
    (DATA / rel).read_bytes()
    for rel in (
        "keylime/binary_bios_measurements-secureboot",
        "keylime/mb_log.bin",
        "go-attestation/linux_tpm12.eventlog.bin",
        "go-attestation/sb_cert_eventlog",
        "tpm2-tss/binary_measurements_hcrtm.bin",
        "tpm2-tools/event-sd-boot-fedora37.bin",
        "hirs/TpmLogSHA1.bin",
    )
]


@st.composite
def mutated_logs(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "word", "cut", "insert", "delete"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "word" and len(data) >= pos + 4:
            value = draw(st.sampled_from([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 24, 3, 4]))
            data[pos : pos + 4] = value.to_bytes(4, "little")
        elif kind == "cut":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=40))
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 64))]
    return bytes(data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_logs())
def test_mutated_real_logs_raise_only_eventlogerror(data: bytes) -> None:
    try:
        log = parse_event_log(data)
    except EventLogError:
        return
    for event in log.events:
        assert isinstance(describe(event), str)
    for bank in log.banks:
        if bank in ("sha1", "sha256"):
            result = replay(log, bank)
            extract_facts(log, bank, QUIRKS)
            extract_facts(log, bank, frozenset())
            appraisal = appraise_event_log(data, bank, result.pcrs, frozenset({0, 4, 7}), QUIRKS)
            assert appraisal.facts is not None


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes_raise_only_eventlogerror(data: bytes) -> None:
    with contextlib.suppress(EventLogError):
        parse_event_log(data)
