"""Boot facts: only from events bound to their digests; type labels are not trusted."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from verifier.errors import EventLogError
from verifier.eventlog import BootFacts, extract_facts, parse_event_log
from verifier.eventlog.efi import EFI_GLOBAL_VARIABLE, EFI_IMAGE_SECURITY_DATABASE
from verifier.eventlog.parse import (
    EV_EFI_ACTION,
    EV_EFI_BOOT_SERVICES_APPLICATION,
    EV_EFI_PLATFORM_FIRMWARE_BLOB,
    EV_EFI_VARIABLE_DRIVER_CONFIG,
    EV_IPL,
    EV_S_CRTM_VERSION,
    EV_SEPARATOR,
    EV_UNUSED,
    Event,
    EventLog,
)
from verifier.eventlog.write import RawEvent, encode_log, encode_sha1_event, measured
from verifier.verdict import Status

DATA = Path(__file__).parent / "data" / "eventlogs"
SECUREBOOT = "keylime/binary_bios_measurements-secureboot"
CALLING = b"Calling EFI Application from Boot Option"
FIRMWARE_PCRS = frozenset(range(8))  # the firmware's PCRs only
NO_QUIRKS: frozenset[str] = frozenset()


def load(rel: str) -> EventLog:
    return parse_event_log((DATA / rel).read_bytes())


def raw(event: Event) -> RawEvent:
    return RawEvent(event.pcr, event.type, event.digests, event.data)


def rebuild(log: EventLog, edit: Callable[[list[RawEvent]], None]) -> EventLog:
    """Re-encode a crypto-agile log after ``edit`` changed its events (Spec ID excluded)."""
    events = [raw(e) for e in log.events[1:]]
    edit(events)
    return parse_event_log(encode_log(events, log.banks))


def codes(facts: BootFacts) -> list[str]:
    return [p.code for p in facts.problems]


def find(log: EventLog, predicate: Callable[[Event], bool]) -> int:
    """The position in ``log.events[1:]`` of the first event matching ``predicate``."""
    return next(i for i, e in enumerate(log.events[1:]) if predicate(e))


def variable(name: str, guid: bytes, data: bytes) -> bytes:
    encoded = name.encode("utf-16-le")
    return guid + struct.pack("<QQ", len(name), len(data)) + encoded + data


# -- facts of real logs ------------------------------------------------------------------------


def test_secureboot_log_facts() -> None:
    facts = extract_facts(load(SECUREBOOT), "sha256", NO_QUIRKS)
    assert facts.problems == ()
    assert facts.scrtm_version == "edk2-20240524-7.el9"
    assert facts.secure_boot is True
    assert [a.path for a in facts.boot_apps] == [
        "\\EFI\\redhat\\shimx64.efi",
        "\\EFI\\redhat\\grubx64.efi",
        "",  # the kernel, loaded from memory by GRUB through shim
    ]
    assert [a.event_index for a in facts.boot_apps] == [29, 35, 93]
    db = facts.database("db")
    dbx = facts.database("dbx")
    assert db is not None and len(db.content.certificates) == 4
    assert dbx is not None and len(dbx.content.hashes) == 371
    assert facts.kernel_cmdline is not None
    assert facts.kernel_cmdline.startswith("(hd0,gpt2)/vmlinuz-5.14.0-503.11.1.el9_5.x86_64 root=")
    assert facts.exit_boot_services
    assert {pcr for pcr, _ in facts.separators} == set(range(8))
    assert [a.variable for a in facts.authorities] == ["db", "SbatLevel", "vendor_db"]
    assert len(facts.firmware_blobs) == 2


def test_systemd_boot_kernel_cmdline_from_pcr12() -> None:
    facts = extract_facts(
        load("tpm2-tools/event-sd-boot-fedora37.bin"),
        "sha256",
        frozenset({"empty_secureboot_variable"}),
    )
    assert facts.kernel_cmdline is not None
    assert facts.kernel_cmdline.startswith("console=ttyS0 console=tty0")
    assert facts.problems == ()


def test_only_trusted_pcrs_yield_facts() -> None:
    facts = extract_facts(load(SECUREBOOT), "sha256", NO_QUIRKS, frozenset({0}))
    assert facts.scrtm_version == "edk2-20240524-7.el9"
    assert facts.secure_boot is None
    assert facts.boot_apps == ()
    assert facts.kernel_cmdline is None
    assert facts.databases == ()


# -- text changed, digest kept -----------------------------------------------------------------


def test_kernel_cmdline_whose_digest_is_of_init_bin_sh_is_contraindicated() -> None:
    banks = ("sha256",)
    golden = b"/vmlinuz root=/dev/sda1 ro quiet"
    evil = golden + b" init=/bin/sh"
    event = measured(8, EV_IPL, b"kernel_cmdline: " + golden + b"\x00", banks, evil)
    log = parse_event_log(encode_log([event], banks))
    facts = extract_facts(log, "sha256", NO_QUIRKS)
    assert facts.kernel_cmdline is None
    assert codes(facts) == ["event_digest_mismatch"]
    problem = facts.problems[0]
    assert problem.severity is Status.CONTRAINDICATED
    assert problem.event_index == 1 and problem.pcr == 8
    assert problem.expected == hashlib.sha256(evil).hexdigest()
    assert problem.actual == hashlib.sha256(golden).hexdigest()


def test_real_kernel_cmdline_text_edited_with_digest_kept_is_contraindicated() -> None:
    log = load(SECUREBOOT)
    index = find(log, lambda e: e.data.startswith(b"kernel_cmdline: "))

    def edit(events: list[RawEvent]) -> None:
        old = events[index]
        events[index] = old._replace(data=old.data.replace(b" quiet", b" quiet init=/bin/sh"))

    facts = extract_facts(rebuild(log, edit), "sha256", NO_QUIRKS)
    # Never the edited text: the fact, if any, is what the measured linux command says.
    assert "init=/bin/sh" not in (facts.kernel_cmdline or "")
    assert "event_digest_mismatch" in codes(facts)


def test_grub_command_edited_with_digest_kept_is_contraindicated() -> None:
    log = load(SECUREBOOT)
    index = find(log, lambda e: e.data.startswith(b"grub_cmd: linux"))

    def edit(events: list[RawEvent]) -> None:
        events[index] = events[index]._replace(data=b"grub_cmd: linux /vmlinuz ro\x00")

    facts = extract_facts(rebuild(log, edit), "sha256", NO_QUIRKS)
    assert "event_digest_mismatch" in codes(facts)
    assert all(text != "linux /vmlinuz ro" for _, text in facts.grub_commands)


def test_scrtm_version_edited_with_digest_kept_is_contraindicated() -> None:
    log = load(SECUREBOOT)
    index = find(log, lambda e: e.type == EV_S_CRTM_VERSION)

    def edit(events: list[RawEvent]) -> None:
        events[index] = events[index]._replace(data="edk2-golden\x00".encode("utf-16-le"))

    facts = extract_facts(rebuild(log, edit), "sha256", NO_QUIRKS)
    assert facts.scrtm_version is None
    assert codes(facts) == ["event_digest_mismatch"]


def test_secure_boot_variable_flipped_with_digest_kept_is_contraindicated() -> None:
    banks = ("sha256",)
    measured_off = variable("SecureBoot", EFI_GLOBAL_VARIABLE, b"\x00")
    claimed_on = variable("SecureBoot", EFI_GLOBAL_VARIABLE, b"\x01")
    event = measured(7, EV_EFI_VARIABLE_DRIVER_CONFIG, claimed_on, banks, measured_off)
    facts = extract_facts(parse_event_log(encode_log([event], banks)), "sha256", NO_QUIRKS)
    assert facts.secure_boot is None
    assert codes(facts) == ["event_digest_mismatch"]


def test_db_with_an_added_certificate_and_digest_kept_is_contraindicated() -> None:
    log = load(SECUREBOOT)
    index = find(
        log, lambda e: e.type == EV_EFI_VARIABLE_DRIVER_CONFIG and b"d\x00b\x00\xa1" in e.data[:40]
    )

    def edit(events: list[RawEvent]) -> None:
        data = bytearray(events[index].data)
        data[-1] ^= 0xFF  # flip a byte of the last certificate
        events[index] = events[index]._replace(data=bytes(data))

    facts = extract_facts(rebuild(log, edit), "sha256", NO_QUIRKS)
    assert facts.database("db") is None
    assert "event_digest_mismatch" in codes(facts)


def test_efi_action_text_changed_is_contraindicated() -> None:
    banks = ("sha256",)
    event = measured(5, EV_EFI_ACTION, b"Some other action", banks, b"Exit Boot Services Oops")
    facts = extract_facts(parse_event_log(encode_log([event], banks)), "sha256", NO_QUIRKS)
    assert codes(facts) == ["event_digest_mismatch"]


# -- relabelled types --------------------------------------------------------------------------


def test_separator_relabelled_as_ev_unused_is_caught() -> None:
    log = load(SECUREBOOT)
    index = find(log, lambda e: e.pcr == 4 and e.type == EV_SEPARATOR)

    def edit(events: list[RawEvent]) -> None:
        events[index] = events[index]._replace(type=EV_UNUSED)

    facts = extract_facts(rebuild(log, edit), "sha256", NO_QUIRKS)
    assert codes(facts) == ["relabelled_event"]
    assert facts.problems[0].expected == "EV_SEPARATOR"
    assert facts.problems[0].actual == "EV_UNUSED"
    assert (4, index + 1) in facts.separators  # still recognised, by digest


def test_boot_application_relabelled_as_firmware_blob_is_caught() -> None:
    log = load(SECUREBOOT)
    grub = find(log, lambda e: e.number == 35)

    def edit(events: list[RawEvent]) -> None:
        events[grub] = events[grub]._replace(type=EV_EFI_PLATFORM_FIRMWARE_BLOB)

    facts = extract_facts(rebuild(log, edit), "sha256", NO_QUIRKS)
    assert codes(facts) == ["relabelled_event"]
    assert facts.problems[0].event_index == 35
    # It still counts in the boot chain: a label cannot hide a measurement.
    assert [a.event_index for a in facts.boot_apps] == [29, 35, 93]


def test_exit_boot_services_marker_relabelled_is_caught() -> None:
    log = load(SECUREBOOT)
    index = find(log, lambda e: e.data == b"Exit Boot Services Invocation")

    def edit(events: list[RawEvent]) -> None:
        events[index] = events[index]._replace(type=EV_IPL)

    facts = extract_facts(rebuild(log, edit), "sha256", NO_QUIRKS)
    assert codes(facts) == ["relabelled_event"]


def test_boot_application_moved_after_exit_boot_services_is_caught() -> None:
    log = load(SECUREBOOT)

    def edit(events: list[RawEvent]) -> None:
        kernel = next(i for i, e in enumerate(events) if e.pcr == 4 and e.data[:4] == b"@\xe4\xd3y")
        events.append(events.pop(kernel))

    facts = extract_facts(rebuild(log, edit), "sha256", NO_QUIRKS)
    assert codes(facts) == ["event_after_exit_boot_services"]


def test_unexpected_event_type_in_pcr7_is_caught() -> None:
    banks = ("sha256",)
    event = measured(7, EV_EFI_BOOT_SERVICES_APPLICATION, b"\x00" * 40, banks, b"payload")
    facts = extract_facts(parse_event_log(encode_log([event], banks)), "sha256", NO_QUIRKS)
    assert codes(facts) == ["unexpected_event_type"]


def test_boot_application_before_calling_marker_is_not_in_the_chain() -> None:
    banks = ("sha256",)
    events = [
        measured(4, EV_EFI_BOOT_SERVICES_APPLICATION, b"", banks, b"setup utility"),
        measured(4, EV_EFI_ACTION, CALLING, banks),
        measured(4, EV_EFI_BOOT_SERVICES_APPLICATION, b"", banks, b"shim"),
    ]
    facts = extract_facts(parse_event_log(encode_log(events, banks)), "sha256", NO_QUIRKS)
    assert [a.digest for a in facts.boot_apps] == [hashlib.sha256(b"shim").digest()]
    assert [a.digest for a in facts.preboot_apps] == [hashlib.sha256(b"setup utility").digest()]


def test_firmware_application_before_the_boot_option_is_preboot() -> None:
    log = load("keylime/binary_bios_measurements")
    pcr4 = [e for e in log.events if e.pcr == 4]
    assert pcr4[0].type == EV_EFI_BOOT_SERVICES_APPLICATION and pcr4[1].data == CALLING
    facts = extract_facts(log, "sha256", NO_QUIRKS)
    assert [a.event_index for a in facts.preboot_apps] == [pcr4[0].number]
    assert [a.event_index for a in facts.boot_apps] == [e.number for e in pcr4[3:]]
    assert facts.problems == ()


@pytest.mark.parametrize(
    ("rel", "quirks", "chain"),
    [
        ("tpm2-tools/event-arch-linux.bin", {"empty_secureboot_variable"}, 2),
        ("hirs/laptop_default_binary_bios_measurements", {"shim_authority_without_owner"}, 3),
        ("tpm2-tss/binary_measurements_nuc.bin", {"empty_secureboot_variable"}, 2),
    ],
)
def test_boot_chain_of_firmware_without_the_calling_marker_starts_at_pcr4_separator(
    rel: str, quirks: set[str], chain: int
) -> None:
    log = load(rel)
    bank = "sha256" if "sha256" in log.banks else "sha1"
    facts = extract_facts(log, bank, frozenset(quirks), FIRMWARE_PCRS)
    assert facts.problems == ()
    assert len(facts.boot_apps) == chain
    separator = next(i for pcr, i in facts.separators if pcr == 4)
    assert all(a.event_index > separator for a in facts.boot_apps)
    assert facts.boot_apps[0].path.lower().endswith(".efi")


# -- malformed content -------------------------------------------------------------------------


def test_malformed_signature_list_is_a_problem_not_an_exception() -> None:
    banks = ("sha256",)
    bad_list = b"\x00" * 16 + struct.pack("<III", 10_000, 0, 48)
    event = measured(
        7,
        EV_EFI_VARIABLE_DRIVER_CONFIG,
        variable("db", EFI_IMAGE_SECURITY_DATABASE, bad_list),
        banks,
    )
    facts = extract_facts(parse_event_log(encode_log([event], banks)), "sha256", NO_QUIRKS)
    assert codes(facts) == ["efi_signature_list_malformed"]
    assert facts.database("db") is None


def test_variable_with_lengths_past_its_data_is_a_problem() -> None:
    banks = ("sha256",)
    data = EFI_GLOBAL_VARIABLE + struct.pack("<QQ", 10, 1 << 40) + "SecureBoot".encode("utf-16-le")
    event = measured(7, EV_EFI_VARIABLE_DRIVER_CONFIG, data, banks)
    facts = extract_facts(parse_event_log(encode_log([event], banks)), "sha256", NO_QUIRKS)
    assert codes(facts) == ["event_data_malformed"]


# -- quirks are opt-in -------------------------------------------------------------------------


def test_unverifiable_pcr8_load_options_of_old_systemd_boot_are_not_trusted() -> None:
    # systemd-boot before v251 logged its load options in PCR 8 one byte short of what it
    # measured: the text cannot be bound to the digest, so it is neither a fact nor ignored.
    facts = extract_facts(load("tpm2-tools/event-arch-linux.bin"), "sha256", NO_QUIRKS)
    assert [(p.code, p.pcr) for p in facts.problems if p.pcr == 8] == [("unrecognised_event", 8)]
    assert facts.kernel_cmdline is None


def test_empty_secureboot_variable_needs_its_quirk() -> None:
    log = load("tpm2-tools/event-arch-linux.bin")
    strict = extract_facts(log, "sha256", NO_QUIRKS, FIRMWARE_PCRS)
    assert strict.secure_boot is None
    assert codes(strict) == ["secureboot_variable_malformed"]
    lenient = extract_facts(log, "sha256", frozenset({"empty_secureboot_variable"}), FIRMWARE_PCRS)
    assert lenient.secure_boot is False
    assert lenient.problems == ()


def test_variable_digest_over_data_only_needs_its_quirk() -> None:
    log = load("go-attestation/linux_tpm12.eventlog.bin")
    strict = extract_facts(log, "sha1", NO_QUIRKS)
    assert set(codes(strict)) == {"event_digest_mismatch"}
    assert strict.secure_boot is None
    lenient = extract_facts(log, "sha1", frozenset({"variable_digest_data_only"}))
    assert lenient.problems == ()
    assert lenient.secure_boot is False  # this Lenovo booted with Secure Boot off


@pytest.mark.parametrize("rel", ["keylime/mb_log.bin", "go-attestation/sb_cert_eventlog"])
def test_shim_authority_without_owner_needs_its_quirk(rel: str) -> None:
    log = load(rel)
    strict = extract_facts(log, "sha256", NO_QUIRKS)
    assert strict.problems
    assert set(codes(strict)) <= {"authority_without_owner", "event_digest_mismatch"}
    lenient = extract_facts(log, "sha256", frozenset({"shim_authority_without_owner"}))
    assert lenient.problems == ()
    assert any(a.owner_less and a.variable == "Shim" for a in lenient.authorities)


# -- dbx lookups -------------------------------------------------------------------------------


def test_dbx_lookup_matches_whole_entries_only() -> None:
    facts = extract_facts(load(SECUREBOOT), "sha256", NO_QUIRKS)
    dbx = facts.database("dbx")
    assert dbx is not None
    content = dbx.content
    assert content.hash_count == len(content.hashes) == 371
    first, last = content.hashes[0], content.hashes[-1]
    assert content.has_hash(first) and content.has_hash(last)
    assert not content.has_hash(b"\x00" * 32)
    owner_and_hash = content.raw[content.hash_lists[0][0] :][:48]
    assert owner_and_hash[16:] == first
    # 32 bytes that straddle the owner GUID and the hash are in the data but are not an entry
    assert content.raw.find(owner_and_hash[8:40]) >= 0
    assert not content.has_hash(owner_and_hash[8:40])
    assert not content.has_hash(first[:31])


def test_undefined_event_type_in_a_firmware_pcr_is_caught() -> None:
    banks = ("sha256",)
    event = measured(2, 0x7000_0001, b"vendor blob", banks)
    facts = extract_facts(parse_event_log(encode_log([event], banks)), "sha256", NO_QUIRKS)
    assert codes(facts) == ["unknown_event_type"]
    os_event = measured(13, 0x7000_0001, b"os-defined", banks)
    facts = extract_facts(parse_event_log(encode_log([os_event], banks)), "sha256", NO_QUIRKS)
    assert facts.problems == ()


def test_facts_of_a_bank_the_log_lacks_are_refused() -> None:
    with pytest.raises(EventLogError, match="no sha256"):
        extract_facts(load("go-attestation/linux_tpm12.eventlog.bin"), "sha256", NO_QUIRKS)


def test_variable_renamed_under_data_only_digests_loses_its_secure_boot_facts() -> None:
    """With digests over VariableData only, a name is bound by the spec's measuring order
    alone: renaming KEK to db (to pass KEK's certificates off as db's) must not work."""
    log = load("go-attestation/linux_tpm12.eventlog.bin")
    quirk = frozenset({"variable_digest_data_only"})

    def rename(event: Event) -> bytes:
        data = event.data
        if b"K\x00E\x00K\x00" not in data[:48]:
            return encode_sha1_event(raw(event))
        var_data = data[16 + 16 + 6 :]  # after GUID, lengths and the 3-character name
        renamed = variable("db", EFI_IMAGE_SECURITY_DATABASE, var_data)
        return encode_sha1_event(raw(event)._replace(data=renamed))

    tampered = parse_event_log(b"".join(rename(e) for e in log.events))
    facts = extract_facts(tampered, "sha1", quirk)
    assert "variable_names_unbound" in codes(facts)
    assert facts.databases == () and facts.secure_boot is None
    honest = extract_facts(log, "sha1", quirk)
    assert honest.problems == () and {n for n, _ in honest.databases} == {"PK", "KEK", "db", "dbx"}
