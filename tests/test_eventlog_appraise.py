"""The event log against the quote: replay must match, relied PCRs need events, fail closed."""

from __future__ import annotations

from pathlib import Path

from verifier.eventlog import parse_event_log, replay
from verifier.eventlog.parse import EV_EFI_BOOT_SERVICES_APPLICATION, EV_IPL
from verifier.eventlog.write import RawEvent, encode_event, measured
from verifier.golden.logcheck import appraise_event_log
from verifier.verdict import Status, worst

DATA = Path(__file__).parent / "data" / "eventlogs"
SECUREBOOT = (DATA / "keylime/binary_bios_measurements-secureboot").read_bytes()
NO_QUIRKS: frozenset[str] = frozenset()


def quote_of(data: bytes, bank: str, pcrs: set[int] | None = None) -> dict[int, bytes]:
    """What an honest TPM would quote for this log: its replayed values."""
    replayed = replay(parse_event_log(data), bank).pcrs
    return {p: v for p, v in replayed.items() if pcrs is None or p in pcrs}


def test_honest_log_matching_its_quote_is_clean() -> None:
    quoted = quote_of(SECUREBOOT, "sha256")
    result = appraise_event_log(SECUREBOOT, "sha256", quoted, frozenset({0, 4, 7}), NO_QUIRKS)
    assert result.reasons == ()
    assert result.facts is not None
    assert result.facts.secure_boot is True
    assert len(result.facts.boot_apps) == 3


def test_quoted_pcr_differing_from_replay_is_contraindicated() -> None:
    quoted = quote_of(SECUREBOOT, "sha256")
    quoted[4] = b"\x55" * 32
    result = appraise_event_log(SECUREBOOT, "sha256", quoted, frozenset({4}), NO_QUIRKS)
    [reason] = result.reasons
    assert reason.code == "eventlog_replay_mismatch" and reason.pcr == 4
    assert reason.expected == "55" * 32
    assert reason.actual == replay(parse_event_log(SECUREBOOT), "sha256").pcrs[4].hex()
    assert reason.severity is Status.CONTRAINDICATED
    # The log's PCR 4 events are not trusted, so they yield no facts.
    assert result.facts is not None and result.facts.boot_apps == ()
    assert result.facts.secure_boot is True


def test_forged_events_appended_do_not_replay_to_the_quote() -> None:
    quoted = quote_of(SECUREBOOT, "sha256")
    forged = measured(4, EV_EFI_BOOT_SERVICES_APPLICATION, b"", ("sha256",), b"rootkit.efi")
    data = SECUREBOOT + encode_event(forged, ("sha256",))
    result = appraise_event_log(data, "sha256", quoted, frozenset({4}), NO_QUIRKS)
    assert [r.code for r in result.reasons] == ["eventlog_replay_mismatch"]
    assert result.facts is not None and result.facts.boot_apps == ()


def test_golden_text_over_a_quoted_evil_digest_is_contraindicated() -> None:
    golden = b"/vmlinuz root=/dev/sda1 ro"
    evil = measured(
        8, EV_IPL, b"kernel_cmdline: " + golden + b"\x00", ("sha256",), golden + b" init=/bin/sh"
    )
    data = SECUREBOOT + encode_event(evil, ("sha256",))
    quoted = quote_of(data, "sha256")  # the TPM really measured init=/bin/sh
    result = appraise_event_log(data, "sha256", quoted, frozenset({8}), NO_QUIRKS)
    assert [r.code for r in result.reasons] == ["event_digest_mismatch"]
    assert result.reasons[0].event_index == 99
    assert result.facts is not None
    assert result.facts.kernel_cmdline is not None
    assert "init=/bin/sh" not in result.facts.kernel_cmdline
    assert worst(result.reasons) is Status.CONTRAINDICATED


def test_relied_pcr_not_quoted_is_contraindicated() -> None:
    quoted = quote_of(SECUREBOOT, "sha256", {0, 7})
    result = appraise_event_log(SECUREBOOT, "sha256", quoted, frozenset({0, 4, 7}), NO_QUIRKS)
    [reason] = result.reasons
    assert (reason.code, reason.pcr) == ("pcr_not_quoted", 4)


def test_relied_pcr_without_events_is_contraindicated() -> None:
    quoted = quote_of(SECUREBOOT, "sha256")
    quoted[12] = bytes(32)
    result = appraise_event_log(SECUREBOOT, "sha256", quoted, frozenset({12}), NO_QUIRKS)
    [reason] = result.reasons
    assert (reason.code, reason.pcr, reason.severity) == (
        "pcr_without_events",
        12,
        Status.CONTRAINDICATED,
    )


def test_malformed_log_is_one_reason_not_an_exception() -> None:
    result = appraise_event_log(SECUREBOOT[:-7], "sha256", {}, frozenset({0}), NO_QUIRKS)
    assert result.facts is None
    [reason] = result.reasons
    assert reason.code == "eventlog_malformed" and reason.severity is Status.CONTRAINDICATED


def test_ima_log_sent_as_firmware_log_is_malformed() -> None:
    data = (DATA / "tpm2-tss/sml-ima-ng-sha1.bin").read_bytes()
    result = appraise_event_log(data, "sha1", {}, frozenset(), NO_QUIRKS)
    assert [r.code for r in result.reasons] == ["eventlog_malformed"]


def test_missing_log_while_pcrs_are_relied_on_is_contraindicated() -> None:
    result = appraise_event_log(b"", "sha256", {0: bytes(32)}, frozenset({0}), NO_QUIRKS)
    assert [r.code for r in result.reasons] == ["eventlog_missing"]
    assert appraise_event_log(b"", "sha256", {}, frozenset(), NO_QUIRKS).reasons == ()


def test_log_without_the_quoted_bank_is_contraindicated() -> None:
    data = (DATA / "go-attestation/linux_tpm12.eventlog.bin").read_bytes()
    result = appraise_event_log(data, "sha256", {0: bytes(32)}, frozenset({0}), NO_QUIRKS)
    assert [r.code for r in result.reasons] == ["eventlog_bank_missing"]


def test_missing_exit_boot_services_workaround_is_opt_in_and_reported() -> None:
    data = (DATA / "go-attestation/ebs_event_missing_eventlog").read_bytes()
    recorded_pcr5 = bytes.fromhex("31245808d6d35849bc394f6343f2b3ff908ed5e3")
    strict = appraise_event_log(data, "sha1", {5: recorded_pcr5}, frozenset({5}), NO_QUIRKS)
    assert [r.code for r in strict.reasons] == ["eventlog_replay_mismatch"]
    lenient = appraise_event_log(
        data, "sha1", {5: recorded_pcr5}, frozenset({5}), frozenset({"missing_exit_boot_services"})
    )
    [reason] = lenient.reasons
    assert reason.code == "eventlog_workaround" and reason.severity is Status.WARNING


def test_altered_hirs_log_against_its_recorded_pcrs() -> None:
    expected = (DATA / "hirs/TpmLogExpectedPcrs.txt").read_text().split()
    quoted = {i: bytes.fromhex(v) for i, v in enumerate(expected)}
    data = (DATA / "hirs/TPMLog_Altered.bin").read_bytes()
    result = appraise_event_log(data, "sha256", quoted, frozenset(range(8)), NO_QUIRKS)
    mismatched = {r.pcr for r in result.reasons if r.code == "eventlog_replay_mismatch"}
    assert mismatched == {0, 1}
    honest = appraise_event_log(
        (DATA / "hirs/TpmLog.bin").read_bytes(), "sha256", quoted, frozenset(range(8)), NO_QUIRKS
    )
    assert honest.reasons == ()


def test_events_of_unquoted_pcrs_yield_no_facts() -> None:
    quoted = quote_of(SECUREBOOT, "sha256", {0})
    result = appraise_event_log(SECUREBOOT, "sha256", quoted, frozenset({0}), NO_QUIRKS)
    assert result.reasons == ()
    assert result.facts is not None
    assert result.facts.trusted_pcrs == (0,)
    assert result.facts.secure_boot is None
    assert result.facts.scrtm_version == "edk2-20240524-7.el9"


def test_raw_event_helper_round_trips() -> None:
    event = RawEvent(3, 0x80000007, {"sha256": b"\x01" * 32}, b"abc")
    assert encode_event(event, ("sha256",)).endswith(b"\x03\x00\x00\x00abc")
