"""Parser: every real log parses or is refused with EventLogError; lengths and limits hold."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from verifier.errors import EventLogError, MalformedEvidence
from verifier.eventlog import parse_event_log
from verifier.eventlog.parse import (
    EV_EFI_ACTION,
    EV_NO_ACTION,
    EV_S_CRTM_VERSION,
    EV_SEPARATOR,
)
from verifier.eventlog.write import RawEvent, encode_log, encode_sha1_event, measured
from verifier.limits import Limits

DATA = Path(__file__).parent / "data" / "eventlogs"
LOG_SUFFIXES = (".json", ".txt", ".sh")
ALL_LOGS = sorted(p for p in DATA.rglob("*") if p.is_file() and not p.name.endswith(LOG_SUFFIXES))
NOT_FIRMWARE_LOGS = {
    "keylime/binary_bios_measurements-bogus",
    "keylime/binary_bios_measurements-empty",
    "tpm2-tss/sml-ima-ng-sha1-invalidated.bin",
    "tpm2-tss/sml-ima-ng-sha1.bin",
    "tpm2-tss/sml-ima-sha1-invalidated.bin",
    "tpm2-tss/sml-ima-sha1.bin",
    "tpm2-tss/sml-ima-sig-sha256-invalidated.bin",
    "tpm2-tss/sml-ima-sig-sha256.bin",
    # Spec ID event whose vendorInfoSize runs past its EventSize
    "tpm2-tools/specid-vendordata.bin",
}


def name(path: Path) -> str:
    return path.relative_to(DATA).as_posix()


def read(rel: str) -> bytes:
    return (DATA / rel).read_bytes()


def test_corpus_is_present() -> None:
    assert len(ALL_LOGS) >= 45


@pytest.mark.parametrize("path", ALL_LOGS, ids=name)
def test_every_corpus_log_parses_or_is_refused_with_eventlogerror(path: Path) -> None:
    data = path.read_bytes()
    if name(path) in NOT_FIRMWARE_LOGS:
        with pytest.raises(EventLogError):
            parse_event_log(data)
        return
    log = parse_event_log(data)
    assert log.events
    assert log.size == len(data)
    assert log.events[-1].offset < len(data)


def test_eventlogerror_is_malformed_evidence() -> None:
    assert issubclass(EventLogError, MalformedEvidence)


def test_crypto_agile_log_reads_the_spec_id_algorithm_table() -> None:
    log = parse_event_log(read("tpm2-tss/binary_measurements_hcrtm.bin"))
    assert log.format == "crypto_agile"
    assert log.spec_id is not None
    assert log.spec_id.algorithms == ((0x0004, 20), (0x000B, 32), (0x0012, 32))
    assert log.banks == ("sha1", "sha256", "sm3_256")
    for event in log.events[1:]:
        assert len(event.digests["sha1"]) == 20
        assert len(event.digests["sha256"]) == 32


def test_sha1_format_log_has_only_the_sha1_bank() -> None:
    log = parse_event_log(read("go-attestation/linux_tpm12.eventlog.bin"))
    assert log.format == "sha1"
    assert log.banks == ("sha1",)
    assert log.events[0].type == EV_S_CRTM_VERSION


def test_startup_locality_is_read_from_its_no_action_event() -> None:
    assert parse_event_log(read("keylime/binary_bios_measurements")).startup_locality == 3
    assert parse_event_log(read("go-attestation/short_no_action_eventlog")).startup_locality == 3
    assert parse_event_log(read("keylime/mb_log.bin")).startup_locality is None


def test_windows_log_with_pcr_index_ffffffff_parses() -> None:
    log = parse_event_log(read("go-attestation/option_rom_eventlog"))
    assert log.events[-1].pcr == 0xFFFFFFFF


def test_event_with_fewer_digests_than_the_table_limits_the_replayable_banks() -> None:
    log = parse_event_log(read("tpm2-tools/event-uefiaction.bin"))
    assert log.spec_id is not None and len(log.spec_id.algorithms) == 4
    assert log.banks == ("sha1", "sha256")


# -- input that is not a firmware log ----------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00",
        bytes(4096),  # zero padding
        b"\xff" * 4096,  # erased flash
        b"bogus\ninvalid\nevent\nlog\n",
        b"\x00" * 31,
    ],
    ids=["empty", "one-byte", "zero-padding", "ff-padding", "text", "short-header"],
)
def test_non_firmware_input_is_refused(data: bytes) -> None:
    with pytest.raises(EventLogError):
        parse_event_log(data)


def test_ima_log_is_refused_as_not_a_firmware_log() -> None:
    with pytest.raises(EventLogError, match="PCR 10"):
        parse_event_log(read("tpm2-tss/sml-ima-ng-sha1.bin"))


def test_first_event_of_unknown_type_is_refused() -> None:
    event = RawEvent(0, 0x7777, {"sha1": bytes(20)}, b"")
    with pytest.raises(EventLogError, match="type"):
        parse_event_log(encode_sha1_event(event))


# -- truncation and absurd sizes ---------------------------------------------------------------


def _small_log() -> bytes:
    banks = ("sha1", "sha256")
    return encode_log(
        [
            measured(0, EV_S_CRTM_VERSION, "v1".encode("utf-16-le"), banks),
            measured(4, EV_EFI_ACTION, b"Calling EFI Application from Boot Option", banks),
            measured(4, EV_SEPARATOR, bytes(4), banks),
        ],
        banks,
    )


def test_truncated_log_is_refused_at_every_cut() -> None:
    data = _small_log()
    parse_event_log(data)
    for cut in range(1, len(data)):
        try:
            log = parse_event_log(data[:cut])
        except EventLogError:
            continue
        # A cut exactly between events leaves a shorter, valid log: never a partial event.
        assert sum(1 for _ in log.events) < 4


def test_truncated_log_cut_inside_an_event_is_refused() -> None:
    data = _small_log()
    with pytest.raises(EventLogError, match=r"runs past the end|truncated"):
        parse_event_log(data[:-1])


def test_absurd_event_size_is_refused_without_allocating() -> None:
    data = _small_log() + struct.pack("<IIIH20sI", 4, EV_EFI_ACTION, 1, 4, bytes(20), 0xFFFFFFF0)
    with pytest.raises(EventLogError, match=r"limit|past the end"):
        parse_event_log(data)


def test_absurd_digest_count_is_refused() -> None:
    data = _small_log() + struct.pack("<III", 4, EV_EFI_ACTION, 0xFFFFFFFF)
    with pytest.raises(EventLogError, match="digests"):
        parse_event_log(data)


def test_digest_of_an_algorithm_missing_from_the_spec_id_table_is_refused() -> None:
    data = _small_log() + struct.pack("<IIIH48sI", 4, EV_EFI_ACTION, 1, 0x000C, bytes(48), 0)
    with pytest.raises(EventLogError, match="does not list"):
        parse_event_log(data)


def test_two_digests_of_one_bank_are_refused() -> None:
    data = _small_log() + struct.pack(
        "<IIIH20sH20sI", 4, EV_EFI_ACTION, 2, 4, bytes(20), 4, bytes(20), 0
    )
    with pytest.raises(EventLogError, match="two sha1"):
        parse_event_log(data)


def test_spec_id_with_wrong_digest_size_is_refused() -> None:
    data = bytearray(_small_log())
    # the sha1 entry of the algorithm table: 32-byte header + 24 fixed + 4 count + alg id (2)
    offset = 32 + 24 + 4 + 2
    assert struct.unpack_from("<H", data, offset)[0] == 20
    struct.pack_into("<H", data, offset, 32)
    with pytest.raises(EventLogError, match="digest size"):
        parse_event_log(bytes(data))


def test_spec_id_with_absurd_algorithm_count_is_refused() -> None:
    data = bytearray(_small_log())
    struct.pack_into("<I", data, 32 + 24, 100_000)
    with pytest.raises(EventLogError, match="algorithms"):
        parse_event_log(bytes(data))


def test_log_over_the_size_limit_is_refused() -> None:
    data = _small_log()
    with pytest.raises(EventLogError, match="limit"):
        parse_event_log(data, Limits(max_event_log_bytes=len(data) - 1))


def test_too_many_events_are_refused() -> None:
    data = _small_log()
    parse_event_log(data, Limits(max_events=4))
    with pytest.raises(EventLogError, match="more than 3 events"):
        parse_event_log(data, Limits(max_events=3))


def test_event_over_the_data_limit_is_refused() -> None:
    data = read("keylime/binary_bios_measurements-secureboot")
    with pytest.raises(EventLogError, match="exceeds the limit"):
        parse_event_log(data, Limits(max_event_data_bytes=4096))


def test_too_many_digests_per_event_are_refused() -> None:
    data = read("tpm2-tss/binary_measurements_hcrtm.bin")  # three banks
    with pytest.raises(EventLogError, match="algorithms"):
        parse_event_log(data, Limits(max_digests_per_event=2))


def test_second_startup_locality_event_is_refused() -> None:
    locality = RawEvent(0, EV_NO_ACTION, {"sha1": bytes(20)}, b"StartupLocality\x00\x03")
    data = encode_sha1_event(locality) * 2
    with pytest.raises(EventLogError, match="second StartupLocality"):
        parse_event_log(data)


def test_startup_locality_above_four_is_refused() -> None:
    locality = RawEvent(0, EV_NO_ACTION, {"sha1": bytes(20)}, b"StartupLocality\x00\x09")
    with pytest.raises(EventLogError, match="locality 9"):
        parse_event_log(encode_sha1_event(locality))


def test_writer_round_trips_through_the_parser() -> None:
    original = parse_event_log(read("tpm2-tss/binary_measurements_hcrtm.bin"))
    banks = ("sha1", "sha256")
    events = [
        RawEvent(e.pcr, e.type, {b: e.digests[b] for b in banks}, e.data)
        for e in original.events[1:]
    ]
    again = parse_event_log(encode_log(events, banks))
    assert again.banks == banks
    assert [(e.pcr, e.type, e.data) for e in again.events[1:]] == [
        (e.pcr, e.type, e.data) for e in original.events[1:]
    ]
    assert [e.digests for e in again.events[1:]] == [r.digests for r in events]
