"""The simulated firmware: logs that parse and replay elsewhere, extends that match them.

Second opinions: ``tpm2_eventlog`` (tpm2-tools) replays every profile's log; the verifier's own
parser replays it too; an in-memory TPM written here extends the digests ``boot`` hands out.
Real logs under tests/data/simulator/ (see tests/data/NOTICE-simulator.md) check the real-log
replay and, through digests real firmware logged, the byte layout of our events.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import struct
import subprocess
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from simulator import efi
from simulator.firmware import (
    BootRecord,
    FirmwareProfile,
    UnreplayableLog,
    boot,
    describe,
    replay_real_log,
)
from simulator.profiles import GOOD_A, PROFILES, profile
from simulator.secureboot import db_certificates, fingerprint
from simulator.tcglog import ALGORITHMS, EventType, LogEvent, parse_log
from verifier.errors import EventLogError

DATA = Path(__file__).parent / "data" / "simulator"
ALL_BANKS = ("sha256", "sha1", "sha384")


class MemoryTpm:
    """PCR banks in memory: TPM2_PCR_Extend semantics, PCR 0 started at ``locality``."""

    def __init__(self, banks: tuple[str, ...], locality: int = 0) -> None:
        self.pcrs = {
            b: {
                i: bytes(ALGORITHMS[b][1] - 1) + bytes([locality if i == 0 else 0])
                for i in range(24)
            }
            for b in banks
        }
        self.calls: list[tuple[int, dict[str, bytes]]] = []

    def extend(self, pcr: int, digests: Mapping[str, bytes]) -> None:
        self.calls.append((pcr, dict(digests)))
        for bank, digest in digests.items():
            assert len(digest) == ALGORITHMS[bank][1]
            self.pcrs[bank][pcr] = hashlib.new(bank, self.pcrs[bank][pcr] + digest).digest()


def _boot(p: FirmwareProfile, banks: tuple[str, ...] = ("sha256",)) -> BootRecord:
    return boot(p, lambda _pcr, _digests: None, banks)


def _tpm2_eventlog_pcrs(log: bytes, tmp_path: Path) -> dict[str, dict[int, bytes]]:
    if shutil.which("tpm2_eventlog") is None:
        pytest.skip("tpm2_eventlog (tpm2-tools) is not installed")
    path = tmp_path / "log.bin"
    path.write_bytes(log)
    out = subprocess.run(
        ["tpm2_eventlog", str(path)], check=True, capture_output=True, text=True
    ).stdout
    section = out.split("\npcrs:\n", 1)[1]
    result: dict[str, dict[int, bytes]] = {}
    bank = ""
    for line in section.splitlines():
        if m := re.fullmatch(r"  (\w+):", line):
            bank = m.group(1)
            result[bank] = {}
        elif m := re.fullmatch(r"\s+(\d+)\s*: 0x([0-9a-fA-F]+)", line):
            result[bank][int(m.group(1))] = bytes.fromhex(m.group(2))
    return result


def _events(record: BootRecord, event_type: int, pcr: int | None = None) -> list[LogEvent]:
    return [
        e for e in record.events if e.event_type == event_type and (pcr is None or e.pcr == pcr)
    ]


# --- second opinions on every profile ------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_profile_log_replays_with_tpm2_eventlog(name: str, tmp_path: Path) -> None:
    record = _boot(profile(name), ALL_BANKS)
    assert _tpm2_eventlog_pcrs(record.log, tmp_path) == record.expected_pcrs


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_profile_extends_reach_expected_pcrs(name: str) -> None:
    tpm = MemoryTpm(ALL_BANKS)
    record = boot(profile(name), tpm.extend, ALL_BANKS)
    for bank in ALL_BANKS:
        assert record.expected_pcrs[bank]
        for pcr, value in record.expected_pcrs[bank].items():
            assert tpm.pcrs[bank][pcr] == value, (bank, pcr)


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_profile_log_replays_with_verifier_parser(name: str) -> None:
    try:
        from verifier.eventlog.parse import parse_event_log  # noqa: PLC0415
        from verifier.eventlog.replay import replay  # noqa: PLC0415
    except ImportError as exc:  # pragma: no cover - only while verifier.eventlog is written
        pytest.skip(f"verifier.eventlog does not import yet: {exc}")
    record = _boot(profile(name), ALL_BANKS)
    log = parse_event_log(record.log)
    assert len(log.events) == len(record.events) + 1  # the parser keeps the Spec ID event
    for bank in ALL_BANKS:
        assert replay(log, bank).pcrs == record.expected_pcrs[bank]


def test_own_log_parses_back_to_the_same_events() -> None:
    record = _boot(GOOD_A, ALL_BANKS)
    parsed = parse_log(record.log)
    assert parsed.banks == ALL_BANKS
    assert parsed.events == record.events


def test_same_profile_gives_byte_identical_logs() -> None:
    for p in PROFILES.values():
        assert _boot(p, ALL_BANKS).log == _boot(p, ALL_BANKS).log


def test_default_log_is_sha256_only() -> None:
    record = _boot(GOOD_A)
    assert set(record.expected_pcrs) == {"sha256"}
    assert parse_log(record.log).banks == ("sha256",)
    assert all(len(e.digests) == 1 for e in record.events)


def test_unknown_bank_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown PCR bank"):
        _boot(GOOD_A, ("md5",))


# --- event layout against the PFP spec and real firmware -----------------------------------


def test_spec_id_header_is_sha1_format_no_action() -> None:
    log = _boot(GOOD_A, ("sha256", "sha1")).log
    pcr, event_type = struct.unpack_from("<II", log)
    assert (pcr, event_type) == (0, EventType.EV_NO_ACTION)
    assert log[8:28] == bytes(20)
    (size,) = struct.unpack_from("<I", log, 28)
    body = log[32 : 32 + size]
    assert body[:16] == b"Spec ID Event03\x00"
    assert struct.unpack_from("<IBBBBI", body, 16) == (0, 0, 2, 0, 2, 2)
    assert struct.unpack_from("<HHHH", body, 28) == (0x000B, 32, 0x0004, 20)
    assert body[36:] == b"\x00"  # vendorInfoSize 0


def _real_digest(name_or_data: bytes, event_type: int) -> bytes:
    """The sha256 digest real firmware logged for an event whose data contains the key."""
    real = parse_log((DATA / "binary_bios_measurements-secureboot").read_bytes())
    event = next(e for e in real.events if e.event_type == event_type and name_or_data in e.data)
    return event.digest("sha256")


def test_secureboot_variable_event_matches_real_firmware() -> None:
    # Real EDK2 measured SecureBoot=1 with the same UEFI_VARIABLE_DATA bytes we produce.
    ours = next(e for e in _events(_boot(GOOD_A), EventType.EV_EFI_VARIABLE_DRIVER_CONFIG))
    assert "SecureBoot".encode("utf-16-le") in ours.data
    assert ours.digest("sha256") == _real_digest(
        "SecureBoot".encode("utf-16-le"), EventType.EV_EFI_VARIABLE_DRIVER_CONFIG
    )


@pytest.mark.parametrize(
    ("text", "pcr"),
    [
        (b"Calling EFI Application from Boot Option", 4),
        (b"Exit Boot Services Invocation", 5),
        (b"Exit Boot Services Returned with Success", 5),
    ],
)
def test_efi_action_strings_match_real_firmware(text: bytes, pcr: int) -> None:
    actions = _events(_boot(GOOD_A), EventType.EV_EFI_ACTION, pcr)
    ours = next(e for e in actions if e.data == text)
    assert ours.digest("sha256") == _real_digest(text, EventType.EV_EFI_ACTION)


def test_separators_in_pcr0_to_7_hash_four_zero_bytes() -> None:
    record = _boot(GOOD_A)
    separators = _events(record, EventType.EV_SEPARATOR)
    assert sorted(e.pcr for e in separators) == list(range(8))
    for e in separators:
        assert e.data == bytes(4)
        assert e.digest("sha256") == _real_digest(bytes(4), EventType.EV_SEPARATOR)


def test_scrtm_version_is_nul_terminated_utf16_bound_to_digest() -> None:
    (event,) = _events(_boot(GOOD_A), EventType.EV_S_CRTM_VERSION)
    assert event.pcr == 0
    assert event.data == "FleetFW 1.0.0\x00".encode("utf-16-le")
    assert event.digest("sha256") == hashlib.sha256(event.data).digest()


def test_grub_kernel_cmdline_digest_is_text_without_prefix_or_nul() -> None:
    events = _events(_boot(GOOD_A), EventType.EV_IPL, 8)
    (cmdline,) = [e for e in events if e.data.startswith(b"kernel_cmdline: ")]
    assert cmdline.data == b"kernel_cmdline: /vmlinuz-6.1.0 root=/dev/sda1 ro quiet\x00"
    assert (
        cmdline.digest("sha256")
        == hashlib.sha256(b"/vmlinuz-6.1.0 root=/dev/sda1 ro quiet").digest()
    )
    linux = next(e for e in events if e.data.startswith(b"grub_cmd: linux "))
    assert linux.digest("sha256") == hashlib.sha256(linux.data[len(b"grub_cmd: ") : -1]).digest()


def test_init_sh_is_in_the_measured_cmdline_not_only_the_text() -> None:
    good = _events(_boot(GOOD_A), EventType.EV_IPL, 8)
    evil = _events(_boot(profile("init-sh")), EventType.EV_IPL, 8)
    (evil_cmdline,) = [e for e in evil if e.data.startswith(b"kernel_cmdline: ")]
    assert (
        evil_cmdline.digest("sha256")
        == hashlib.sha256(b"/vmlinuz-6.1.0 root=/dev/sda1 ro quiet init=/bin/sh").digest()
    )
    assert {e.digest("sha256") for e in evil} != {e.digest("sha256") for e in good}


def test_grub_files_in_pcr9_are_named_and_hash_their_content() -> None:
    events = _events(_boot(GOOD_A), EventType.EV_IPL, 9)
    names = [e.data for e in events]
    assert names == [
        b"(hd0,gpt1)/EFI/fleet/grub.cfg\x00",
        b"/vmlinuz-6.1.0\x00",
        b"/initrd.img-6.1.0\x00",
    ]
    kernel = events[1]
    assert kernel.digest("sha256") == GOOD_A.kernel.digest("sha256")


def test_boot_applications_in_pcr4_are_shim_grub_kernel_after_calling_marker() -> None:
    pcr4 = [e for e in _boot(GOOD_A).events if e.pcr == 4]
    types = [e.event_type for e in pcr4]
    assert types == [
        EventType.EV_EFI_ACTION,
        EventType.EV_SEPARATOR,
        EventType.EV_EFI_BOOT_SERVICES_APPLICATION,
        EventType.EV_EFI_BOOT_SERVICES_APPLICATION,
        EventType.EV_EFI_BOOT_SERVICES_APPLICATION,
    ]
    digests = [e.digest("sha256") for e in pcr4[2:]]
    assert digests == [c.digest("sha256") for c in (GOOD_A.shim, GOOD_A.grub, GOOD_A.kernel)]
    shim = pcr4[2].data
    _location, length, _link, path_len = struct.unpack_from("<QQQQ", shim)
    assert length == len(GOOD_A.shim.image())
    assert len(shim) == 32 + path_len
    assert "\\EFI\\fleet\\shimx64.efi".encode("utf-16-le") in shim


def test_authority_event_is_db_entry_that_verified_shim() -> None:
    record = _boot(GOOD_A)
    (authority,) = _events(record, EventType.EV_EFI_VARIABLE_AUTHORITY, 7)
    expected = efi.variable_data(
        efi.EFI_IMAGE_SECURITY_DATABASE_GUID,
        "db",
        efi.FLEET_OWNER_GUID + db_certificates()[0],
    )
    assert authority.data == expected
    assert authority.digest("sha256") == hashlib.sha256(expected).digest()
    pcr7 = [e for e in record.events if e.pcr == 7]
    assert pcr7.index(authority) > [e.event_type for e in pcr7].index(EventType.EV_SEPARATOR)


def test_db_variable_holds_x509_signature_lists_of_the_test_certs() -> None:
    value = _variable_value(_boot(GOOD_A), efi.EFI_IMAGE_SECURITY_DATABASE_GUID, "db")
    certs = []
    while value:
        sig_type = value[:16]
        list_size, header_size, sig_size = struct.unpack_from("<III", value, 16)
        assert sig_type == efi.EFI_CERT_X509_GUID and header_size == 0
        entry = value[28 : 28 + sig_size]
        assert entry[:16] == efi.FLEET_OWNER_GUID
        certs.append(x509.load_der_x509_certificate(entry[16:]))
        value = value[list_size:]
    assert [c.public_bytes(Encoding.DER) for c in certs] == list(db_certificates())
    assert "TEST ONLY" in certs[0].subject.rfc4514_string()


def _variable_value(record: BootRecord, vendor: bytes, name: str) -> bytes:
    """VariableData of the EV_EFI_VARIABLE_DRIVER_CONFIG event for ``vendor``:``name``."""
    for event in _events(record, EventType.EV_EFI_VARIABLE_DRIVER_CONFIG, 7):
        name_len, data_len = struct.unpack_from("<QQ", event.data, 16)
        raw_name = event.data[32 : 32 + 2 * name_len]
        if event.data[:16] == vendor and raw_name == name.encode("utf-16-le"):
            value = event.data[32 + 2 * name_len :]
            assert len(value) == data_len
            return value
    raise AssertionError(f"no {name} variable event")


def test_dbx_is_one_sha256_signature_list() -> None:
    value = efi.sha256_signature_list(efi.FLEET_OWNER_GUID, GOOD_A.secure_boot.dbx)
    assert value[:16] == efi.EFI_CERT_SHA256_GUID
    assert struct.unpack_from("<III", value, 16) == (28 + 2 * 48, 0, 48)
    assert value[28 + 16 : 28 + 48] == GOOD_A.secure_boot.dbx[0]


def test_signature_list_refuses_mixed_entry_sizes() -> None:
    with pytest.raises(ValueError, match="equal sizes"):
        efi.signature_list(efi.EFI_CERT_SHA256_GUID, efi.FLEET_OWNER_GUID, [b"a", b"bb"])


def test_boot_variables_are_measured_over_variable_data_as_edk2_does() -> None:
    record = _boot(replace(GOOD_A, boot_variables=True))
    order, option = _events(record, EventType.EV_EFI_VARIABLE_BOOT, 1)
    assert order.digest("sha256") == hashlib.sha256(b"\x01\x00").digest()
    assert option.data.endswith(efi.load_option("fleet", GOOD_A.shim.path))
    assert record.expected_pcrs["sha256"][1] != _boot(GOOD_A).expected_pcrs["sha256"][1]


# --- each attack changes exactly the PCRs it should -----------------------------------------


@pytest.mark.parametrize(
    ("name", "changed"),
    [
        ("good-b", {0, 4, 8, 9}),
        ("retired", {0, 4, 8, 9}),
        ("tampered-bootloader", {4}),
        ("secureboot-off", {7}),
        ("init-sh", {8}),
    ],
)
def test_profile_differs_from_good_a_in_exactly_its_pcrs(name: str, changed: set[int]) -> None:
    good = _boot(GOOD_A).expected_pcrs["sha256"]
    other = _boot(profile(name)).expected_pcrs["sha256"]
    assert set(good) == set(other)
    assert {i for i in good if good[i] != other[i]} == changed


def test_tampered_bootloader_keeps_name_and_version_but_not_digest() -> None:
    tampered = profile("tampered-bootloader")
    assert (tampered.grub.path, tampered.grub.version) == (GOOD_A.grub.path, GOOD_A.grub.version)
    assert tampered.grub.digest() != GOOD_A.grub.digest()


def test_secureboot_off_measures_zero_and_no_authority() -> None:
    record = _boot(profile("secureboot-off"))
    assert _variable_value(record, efi.EFI_GLOBAL_VARIABLE, "SecureBoot") == b"\x00"
    assert _variable_value(_boot(GOOD_A), efi.EFI_GLOBAL_VARIABLE, "SecureBoot") == b"\x01"
    assert not _events(record, EventType.EV_EFI_VARIABLE_AUTHORITY)


def test_missing_exit_boot_services_variant_omits_pcr5_actions() -> None:
    record = _boot(replace(GOOD_A, exit_boot_services=False))
    assert not _events(record, EventType.EV_EFI_ACTION, 5)
    assert record.expected_pcrs["sha256"][5] != _boot(GOOD_A).expected_pcrs["sha256"][5]


# --- EV_NO_ACTION and StartupLocality -------------------------------------------------------


def test_no_action_events_are_logged_but_never_extended() -> None:
    p = replace(GOOD_A, startup_locality=3)
    tpm = MemoryTpm(("sha256",), locality=3)
    record = boot(p, tpm.extend)
    no_action = _events(record, EventType.EV_NO_ACTION)
    assert [e.data for e in no_action] == [b"StartupLocality\x00\x03"]
    assert len(tpm.calls) == len(record.events) - 1
    assert all(any(d) for _, digests in tpm.calls for d in digests.values())


def test_startup_locality_sets_pcr0_start_in_expected_pcrs() -> None:
    p = replace(GOOD_A, startup_locality=3)
    record = _boot(p)
    at_three, at_zero = MemoryTpm(("sha256",), locality=3), MemoryTpm(("sha256",))
    boot(p, at_three.extend)
    boot(p, at_zero.extend)
    expected = record.expected_pcrs["sha256"]
    assert at_three.pcrs["sha256"][0] == expected[0]
    assert at_zero.pcrs["sha256"][0] != expected[0]  # a zero-started TPM cannot reach it
    assert expected[0] != _boot(GOOD_A).expected_pcrs["sha256"][0]
    assert {i: v for i, v in expected.items() if i} == {
        i: v for i, v in _boot(GOOD_A).expected_pcrs["sha256"].items() if i
    }


# --- replaying real machines' logs ---------------------------------------------------------


def _expected_file(name: str) -> dict[int, bytes]:
    lines = (DATA / name).read_text().split()
    return {i: bytes.fromhex(v) for i, v in enumerate(lines)}


@pytest.mark.parametrize(
    ("log", "bank", "expected"),
    [
        ("TpmLog.bin", "sha256", "TpmLogExpectedPcrs.txt"),
        ("TpmLogSHA1.bin", "sha1", "TpmLogSHA1ExpectedPcrs.txt"),
    ],
)
def test_real_log_replays_to_independently_recorded_pcrs(
    log: str, bank: str, expected: str
) -> None:
    tpm = MemoryTpm((bank,))
    pcrs = replay_real_log((DATA / log).read_bytes(), tpm.extend, bank)
    recorded = _expected_file(expected)
    assert pcrs
    for index, value in pcrs.items():
        assert value == recorded[index], index
        assert tpm.pcrs[bank][index] == value


def test_altered_real_log_does_not_reproduce_recorded_pcrs() -> None:
    pcrs = replay_real_log(
        (DATA / "TPMLog_Altered.bin").read_bytes(), MemoryTpm(("sha256",)).extend
    )
    recorded = _expected_file("TpmLogExpectedPcrs.txt")
    assert any(pcrs[i] != recorded[i] for i in pcrs)


@pytest.mark.parametrize("log", ["binary_bios_measurements", "binary_measurements_hcrtm.bin"])
def test_real_log_needing_nonzero_pcr0_start_is_refused_before_any_extend(log: str) -> None:
    tpm = MemoryTpm(("sha256",))
    with pytest.raises(UnreplayableLog, match="PCR 0"):
        replay_real_log((DATA / log).read_bytes(), tpm.extend)
    assert tpm.calls == []


def test_real_log_with_startup_locality_replays_other_pcrs_when_pcr0_skipped() -> None:
    data = (DATA / "binary_bios_measurements").read_bytes()
    tpm = MemoryTpm(("sha256",))
    pcrs = replay_real_log(data, tpm.extend, skip_pcr0=True)
    assert 0 not in pcrs and 4 in pcrs
    assert all(pcr != 0 for pcr, _ in tpm.calls)
    for index, value in pcrs.items():
        assert tpm.pcrs["sha256"][index] == value


def test_own_log_replays_through_real_log_path() -> None:
    record = _boot(GOOD_A, ALL_BANKS)
    for bank in ALL_BANKS:
        tpm = MemoryTpm((bank,))
        assert replay_real_log(record.log, tpm.extend, bank) == record.expected_pcrs[bank]


@pytest.mark.parametrize("data", [b"", b"\x00" * 7, (DATA / "binary_bios_measurements-bogus")])
def test_garbage_is_refused_as_event_log_error(data: bytes | Path) -> None:
    raw = data.read_bytes() if isinstance(data, Path) else data
    with pytest.raises(EventLogError):
        replay_real_log(raw, MemoryTpm(("sha256",)).extend)


def test_real_log_without_the_bank_is_refused() -> None:
    with pytest.raises(EventLogError, match="no sha256"):
        replay_real_log((DATA / "TpmLogSHA1.bin").read_bytes(), MemoryTpm(("sha256",)).extend)


def test_truncated_own_log_is_refused() -> None:
    log = _boot(GOOD_A).log
    with pytest.raises(EventLogError, match="truncated"):
        replay_real_log(log[:-5], MemoryTpm(("sha256",)).extend)


# --- describe ------------------------------------------------------------------------------


def test_describe_states_components_and_pcrs() -> None:
    d = describe(GOOD_A)
    assert d["scrtm_version"] == "FleetFW 1.0.0"
    assert d["secure_boot"] is True
    assert d["kernel_cmdline"] == "/vmlinuz-6.1.0 root=/dev/sda1 ro quiet"
    assert d["proc_cmdline"] == "BOOT_IMAGE=/vmlinuz-6.1.0 root=/dev/sda1 ro quiet"
    assert d["db_sha256"] == [fingerprint(c).hex() for c in db_certificates()]
    chain = d["boot_chain"]
    assert isinstance(chain, list)
    assert [c["sha256"] for c in chain] == [
        c.digest().hex() for c in (GOOD_A.shim, GOOD_A.grub, GOOD_A.kernel)
    ]
    assert d["pcrs"] == {
        "sha256": {i: v.hex() for i, v in _boot(GOOD_A).expected_pcrs["sha256"].items()}
    }
