"""PCR 10 replay in both kernel behaviours, violations, boot_aggregate."""

from __future__ import annotations

import hashlib

import pytest
from imadevice import Device

from verifier.errors import ReplayMismatch
from verifier.ima import write
from verifier.ima.parse import parse_binary
from verifier.ima.replay import ExtendMode, check_boot_aggregate, match_quote, replay


def _device(mode: ExtendMode, bank: str = "sha256") -> Device:
    device = Device(bank=bank, mode=mode)
    for n in range(20):
        device.run(f"/usr/bin/tool{n}")
    return device


@pytest.mark.parametrize("mode", list(ExtendMode))
def test_log_replays_to_pcr10_and_the_kernel_behaviour_is_detected(mode: ExtendMode) -> None:
    device = _device(mode)
    log = parse_binary(device.log)
    match = match_quote(log.entries, "sha256", device.pcrs[10])
    assert match.mode is mode and match.count == len(log.entries)


@pytest.mark.parametrize("mode", list(ExtendMode))
def test_configured_kernel_behaviour_other_than_the_devices_is_a_mismatch(
    mode: ExtendMode,
) -> None:
    device = _device(mode)
    other = next(m for m in ExtendMode if m is not mode)
    with pytest.raises(ReplayMismatch, match="does not replay"):
        match_quote(parse_binary(device.log).entries, "sha256", device.pcrs[10], mode=other)


def test_sha1_bank_replays_with_the_sha1_template_hash() -> None:
    device = _device(ExtendMode.SHA1_PADDED, bank="sha1")
    match = match_quote(parse_binary(device.log).entries, "sha1", device.pcrs[10])
    assert match.mode is ExtendMode.SHA1_PADDED


def test_sha384_bank_padded_mode_replays() -> None:
    device = _device(ExtendMode.SHA1_PADDED, bank="sha384")
    match = match_quote(parse_binary(device.log).entries, "sha384", device.pcrs[10])
    assert match.mode is ExtendMode.SHA1_PADDED


@pytest.mark.parametrize("mode", list(ExtendMode))
def test_violation_is_extended_as_all_ones(mode: ExtendMode) -> None:
    device = _device(mode)
    device.append(write.file_entry("/var/log/open", bytes(32), violation=True))
    log = parse_binary(device.log)
    assert log.entries[-1].violation
    assert match_quote(log.entries, "sha256", device.pcrs[10], mode=mode).count == len(log.entries)
    # extending zeros (what the log shows) instead would not reproduce the PCR
    before = replay(log.entries[:-1], "sha256", mode)
    assert hashlib.sha256(before + bytes(32)).digest() != device.pcrs[10]


def test_log_with_an_entry_removed_does_not_replay() -> None:
    device = _device(ExtendMode.BANK_HASH)
    device.run("/tmp/rootkit")
    device.run("/usr/bin/ls")
    hidden = device.raw[:-2] + device.raw[-1:]
    with pytest.raises(ReplayMismatch, match="does not replay to the quoted sha256 PCR 10"):
        match_quote(parse_binary(b"".join(hidden)).entries, "sha256", device.pcrs[10])


def test_log_with_its_last_entry_removed_does_not_replay() -> None:
    device = _device(ExtendMode.BANK_HASH)
    device.run("/tmp/rootkit")
    with pytest.raises(ReplayMismatch):
        match_quote(parse_binary(b"".join(device.raw[:-1])).entries, "sha256", device.pcrs[10])


def test_quote_lagging_the_log_covers_a_prefix() -> None:
    device = _device(ExtendMode.BANK_HASH)
    quoted = device.pcrs[10]
    device.run("/usr/bin/late")
    match = match_quote(parse_binary(device.log).entries, "sha256", quoted)
    assert match.count == len(device.raw) - 1


def test_entry_for_another_pcr_is_refused() -> None:
    raw = write.entry("ima-ng", (write.dng("sha256", bytes(32)), write.nng("/x")), pcr=11)
    with pytest.raises(ReplayMismatch, match="PCR 11"):
        match_quote(parse_binary(raw).entries, "sha256", bytes(32))


@pytest.mark.parametrize("through", [7, 9])
def test_boot_aggregate_matches_quoted_pcrs(through: int) -> None:
    device = Device(boot_pcrs_through=through)
    entry = parse_binary(device.log).entries[0]
    assert check_boot_aggregate(entry, device.quoted()).pcrs == tuple(range(through + 1))


def test_boot_aggregate_of_another_boot_is_a_mismatch() -> None:
    device, other = Device(), Device()
    other.pcrs[4] = bytes(32)  # another boot chain
    entry = parse_binary(device.log).entries[0]
    with pytest.raises(ReplayMismatch, match="does not match the quoted sha256 PCRs"):
        check_boot_aggregate(entry, other.quoted())


def test_boot_aggregate_needs_the_quoted_pcrs() -> None:
    device = Device()
    entry = parse_binary(device.log).entries[0]
    quoted = {"sha256": {10: device.pcrs[10]}}
    with pytest.raises(ReplayMismatch, match="must include sha256 PCRs 0-7"):
        check_boot_aggregate(entry, quoted)


def test_first_entry_that_is_not_boot_aggregate_is_a_mismatch() -> None:
    entry = parse_binary(write.file_entry("/init", bytes(32))).entries[0]
    with pytest.raises(ReplayMismatch, match="not a boot_aggregate"):
        check_boot_aggregate(entry, Device().quoted())
