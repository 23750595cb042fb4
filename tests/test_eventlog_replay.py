"""Replay: every PCR value recorded independently of its log is reproduced; tampering is not."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from verifier.errors import EventLogError
from verifier.eventlog import parse_event_log, replay
from verifier.eventlog.parse import EV_EFI_ACTION, EV_NO_ACTION, EV_SEPARATOR, EventLog
from verifier.eventlog.replay import EBS_WORKAROUND_NOTE
from verifier.eventlog.write import RawEvent, encode_log, encode_sha1_event, measured

DATA = Path(__file__).parent / "data" / "eventlogs"


def load(rel: str) -> EventLog:
    return parse_event_log((DATA / rel).read_bytes())


def recorded_json(rel: str) -> dict[int, str]:
    doc = json.loads((DATA / rel).read_text())
    return {p["index"]: p["digest"] for p in doc["pcrs"] if p["alg"] == "sha1"}


def recorded_txt(rel: str) -> dict[int, str]:
    return dict(enumerate((DATA / rel).read_text().split()))


@pytest.mark.parametrize("stem", ["linux_tpm12", "windows_gcp_shielded_vm"])
def test_go_attestation_logs_replay_to_the_pcrs_read_from_the_tpm(stem: str) -> None:
    log = load(f"go-attestation/{stem}.eventlog.bin")
    expected = recorded_json(f"go-attestation/{stem}.pcrs.json")
    result = replay(log, "sha1")
    assert len(result.pcrs) >= 8
    for pcr, value in result.pcrs.items():
        assert value.hex() == expected[pcr], f"PCR {pcr}"


@pytest.mark.parametrize(
    ("log_name", "expected_name", "bank"),
    [
        ("TpmLog.bin", "TpmLogExpectedPcrs.txt", "sha256"),
        ("TpmLogSHA1.bin", "TpmLogSHA1ExpectedPcrs.txt", "sha1"),
    ],
)
def test_hirs_logs_replay_to_their_expected_pcrs(
    log_name: str, expected_name: str, bank: str
) -> None:
    result = replay(load(f"hirs/{log_name}"), bank)
    expected = recorded_txt(f"hirs/{expected_name}")
    assert sorted(result.pcrs) == list(range(8))
    for pcr, value in result.pcrs.items():
        assert value.hex() == expected[pcr], f"PCR {pcr}"


def test_altered_hirs_log_does_not_reproduce_the_expected_pcrs() -> None:
    result = replay(load("hirs/TPMLog_Altered.bin"), "sha256")
    expected = recorded_txt("hirs/TpmLogExpectedPcrs.txt")
    mismatched = {pcr for pcr, value in result.pcrs.items() if value.hex() != expected[pcr]}
    assert mismatched == {0, 1}


def test_hcrtm_log_starts_pcr0_at_locality_four() -> None:
    result = replay(load("tpm2-tss/binary_measurements_hcrtm.bin"), "sha1")
    assert result.start_locality == 4
    assert result.pcrs[0].hex() == "15f4e6ca457d1af6bc49511a93ba3500ad69acc5"


def test_startup_locality_three_sets_pcr0_start() -> None:
    log = load("keylime/binary_bios_measurements")
    result = replay(log, "sha256")
    assert result.start_locality == 3
    value = bytes(31) + b"\x03"
    for event in log.events:
        if event.pcr == 0 and event.type != EV_NO_ACTION:
            value = hashlib.sha256(value + event.digests["sha256"]).digest()
    assert result.pcrs[0] == value
    assert value != _replay_from_zero(log, 0, "sha256")


def _replay_from_zero(log: EventLog, pcr: int, bank: str) -> bytes:
    value = bytes(hashlib.new(bank).digest_size)
    for event in log.events:
        if event.pcr == pcr and event.type != EV_NO_ACTION:
            value = hashlib.new(bank, value + event.digests[bank]).digest()
    return value


def test_missing_exit_boot_services_reproduces_pcr5_only_with_the_workaround() -> None:
    log = load("go-attestation/ebs_event_missing_eventlog")
    recorded = "31245808d6d35849bc394f6343f2b3ff908ed5e3"  # go-attestation TestEBSVerifyWorkaround
    plain = replay(log, "sha1")
    assert plain.pcrs[5].hex() != recorded
    assert EBS_WORKAROUND_NOTE not in plain.notes
    fixed = replay(log, "sha1", missing_exit_boot_services=True)
    assert fixed.pcrs[5].hex() == recorded
    assert EBS_WORKAROUND_NOTE in fixed.notes
    assert {p: v for p, v in fixed.pcrs.items() if p != 5} == {
        p: v for p, v in plain.pcrs.items() if p != 5
    }


def test_workaround_does_nothing_when_the_log_has_exit_boot_services() -> None:
    log = load("keylime/binary_bios_measurements-secureboot")
    assert replay(log, "sha256", missing_exit_boot_services=True) == replay(log, "sha256")


def test_no_action_event_is_never_extended_even_with_a_digest() -> None:
    banks = ("sha256",)
    base = [measured(4, EV_SEPARATOR, bytes(4), banks)]
    forged = RawEvent(4, EV_NO_ACTION, {"sha256": b"\x11" * 32}, b"not measured")
    with_noaction = replay(parse_event_log(encode_log([*base, forged], banks)), "sha256")
    without = replay(parse_event_log(encode_log(base, banks)), "sha256")
    assert with_noaction.pcrs == without.pcrs


def test_windows_event_in_pcr_ffffffff_is_not_extended() -> None:
    log = load("go-attestation/option_rom_eventlog")
    assert log.events[-1].pcr == 0xFFFFFFFF
    result = replay(log, "sha1")
    assert all(0 <= p <= 23 for p in result.pcrs)


@pytest.mark.parametrize("pcr", [24, 1000, 0xFFFFFFFF])
def test_pcr_index_outside_0_to_23_is_skipped_and_noted(pcr: int) -> None:
    first = measured(0, EV_EFI_ACTION, b"x", ("sha1",))
    odd = measured(pcr, EV_EFI_ACTION, b"y", ("sha1",))
    log = parse_event_log(encode_sha1_event(first) + encode_sha1_event(odd))
    result = replay(log, "sha1")
    assert set(result.pcrs) == {0}
    assert any(f"PCR index {pcr} is outside 0-23" in n for n in result.notes)


def test_replay_only_lists_pcrs_with_events() -> None:
    result = replay(load("go-attestation/sb_cert_eventlog"), "sha256")
    assert set(result.pcrs) == {0, 4, 5, 7}


def test_replay_of_a_bank_the_log_lacks_is_refused() -> None:
    with pytest.raises(EventLogError, match="no sha256"):
        replay(load("go-attestation/linux_tpm12.eventlog.bin"), "sha256")


def test_hirs_laptop_log_replays_to_the_extends_of_its_setpcrs_script() -> None:
    """HIRS ships, next to the laptop's log, the tpm2_pcrextend calls that recreate its PCRs."""
    script = (DATA / "hirs/laptop_default_setpcrs.sh").read_text()
    expected: dict[int, bytes] = {}
    for pcr, digest in re.findall(r"tpm2_pcrextend (\d+):sha256=([0-9a-f]{64})", script):
        old = expected.get(int(pcr), bytes(32))
        expected[int(pcr)] = hashlib.sha256(old + bytes.fromhex(digest)).digest()
    result = replay(load("hirs/laptop_default_binary_bios_measurements"), "sha256")
    assert result.pcrs == expected
