"""Event-level golden rules: each rule passes on the golden boot and names what differs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from verifier.eventlog import BootFacts, extract_facts, parse_event_log
from verifier.golden.model import CmdlineRule, EventRules
from verifier.golden.pattern import compile_linear
from verifier.golden.rules import evaluate_event_rules, rules_pcrs, rules_quote_pcrs
from verifier.verdict import Status

DATA = Path(__file__).parent / "data" / "eventlogs"
SHIM = bytes.fromhex("27b12463e599b3147635f272e3722960e443def60fef088eba600697017529f2")
GRUB = bytes.fromhex("0abc88ee4d2915c3c5c010a331be980766d6445419c22fe236867b92d254f01f")
KERNEL = bytes.fromhex("219b8b53c54951cd07a580622e384391bbd9e113448a12ad319903fcafb81e79")
MS_UEFI_CA_2011 = bytes.fromhex("48e99b991f57fc52f76149599bff0a58c47154229b9f8d603ac40d3500248507")


@pytest.fixture(scope="module")
def facts() -> BootFacts:
    data = (DATA / "keylime/binary_bios_measurements-secureboot").read_bytes()
    return extract_facts(parse_event_log(data), "sha256", frozenset())


@pytest.fixture(scope="module")
def golden(facts: BootFacts) -> EventRules:
    dbx = facts.database("dbx")
    assert dbx is not None and facts.kernel_cmdline is not None
    return EventRules(
        scrtm_versions=("edk2-20240524-7.el9", "edk2-20250101-1.el9"),
        secure_boot=True,
        db_contains=(MS_UEFI_CA_2011,),
        dbx_contains=dbx.content.hashes[:3],
        boot_chain=(SHIM, GRUB, KERNEL),
        kernel_cmdline=CmdlineRule(exact=facts.kernel_cmdline),
    )


def test_golden_boot_passes_every_rule(facts: BootFacts, golden: EventRules) -> None:
    assert evaluate_event_rules(facts, golden, "r1") == []


def test_empty_rules_pass_anything(facts: BootFacts) -> None:
    assert evaluate_event_rules(facts, EventRules(), "r1") == []


def test_unknown_firmware_version_fails(facts: BootFacts, golden: EventRules) -> None:
    rules = dataclasses.replace(golden, scrtm_versions=("edk2-20250101-1.el9",))
    [reason] = evaluate_event_rules(facts, rules, "r2")
    assert reason.code == "scrtm_version_mismatch"
    assert reason.rule == "scrtm_versions" and reason.release == "r2"
    assert reason.event_index == 1 and reason.pcr == 0
    assert reason.actual == "edk2-20240524-7.el9"
    assert reason.expected == "edk2-20250101-1.el9"
    assert reason.severity is Status.CONTRAINDICATED


def test_secure_boot_required_off_fails(facts: BootFacts, golden: EventRules) -> None:
    [reason] = evaluate_event_rules(facts, dataclasses.replace(golden, secure_boot=False), "r")
    assert (reason.code, reason.expected, reason.actual, reason.event_index) == (
        "secure_boot_mismatch",
        "false",
        "true",
        4,
    )


def test_db_missing_a_required_certificate_fails(facts: BootFacts, golden: EventRules) -> None:
    rules = dataclasses.replace(golden, db_contains=(MS_UEFI_CA_2011, b"\x01" * 32))
    [reason] = evaluate_event_rules(facts, rules, "r")
    assert reason.code == "db_missing_certificate"
    assert reason.expected == "01" * 32
    assert reason.event_index == 7


def test_dbx_missing_a_required_revocation_fails(facts: BootFacts, golden: EventRules) -> None:
    rules = dataclasses.replace(golden, dbx_contains=(b"\x02" * 32,))
    [reason] = evaluate_event_rules(facts, rules, "r")
    assert reason.code == "dbx_missing_hash" and reason.event_index == 8


def test_swapped_boot_loader_fails_with_its_event(facts: BootFacts, golden: EventRules) -> None:
    rules = dataclasses.replace(golden, boot_chain=(SHIM, b"\x03" * 32, KERNEL))
    [reason] = evaluate_event_rules(facts, rules, "r")
    assert reason.code == "boot_chain_mismatch"
    assert reason.event_index == 35
    assert reason.actual.split(",") == [SHIM.hex(), GRUB.hex(), KERNEL.hex()]


def test_extra_boot_application_fails(facts: BootFacts, golden: EventRules) -> None:
    [reason] = evaluate_event_rules(
        facts, dataclasses.replace(golden, boot_chain=(SHIM, GRUB)), "r"
    )
    assert reason.code == "boot_chain_mismatch" and reason.event_index == 93


def test_kernel_cmdline_exact_mismatch_fails(facts: BootFacts, golden: EventRules) -> None:
    rules = dataclasses.replace(golden, kernel_cmdline=CmdlineRule(exact="ro quiet"))
    [reason] = evaluate_event_rules(facts, rules, "r")
    assert reason.code == "kernel_cmdline_mismatch"
    assert reason.actual == facts.kernel_cmdline and reason.expected == "ro quiet"
    assert reason.event_index == 94


def test_kernel_cmdline_pattern(facts: BootFacts, golden: EventRules) -> None:
    ok = CmdlineRule(pattern=compile_linear(r"\(hd0,gpt2\)/vmlinuz-\S+ root=\S+ ro .*"))
    assert evaluate_event_rules(facts, dataclasses.replace(golden, kernel_cmdline=ok), "r") == []
    bad = CmdlineRule(pattern=compile_linear(r".* init=/bin/sh.*"))
    [reason] = evaluate_event_rules(facts, dataclasses.replace(golden, kernel_cmdline=bad), "r")
    assert reason.code == "kernel_cmdline_mismatch"


def test_missing_facts_fail_every_rule_that_needs_them(golden: EventRules) -> None:
    empty = BootFacts(bank="sha256", trusted_pcrs=())
    reasons = evaluate_event_rules(empty, golden, "r")
    assert sorted(r.code for r in reasons) == sorted(
        [
            "scrtm_version_mismatch",
            "secure_boot_mismatch",
            "db_missing_certificate",
            "dbx_missing_hash",
            "dbx_missing_hash",
            "dbx_missing_hash",
            "boot_chain_mismatch",
            "kernel_cmdline_mismatch",
        ]
    )
    assert all(r.severity is Status.CONTRAINDICATED for r in reasons)


def test_rules_pcrs() -> None:
    assert rules_pcrs(EventRules()) == frozenset()
    assert rules_pcrs(EventRules(scrtm_versions=("x",))) == {0}
    assert rules_pcrs(EventRules(secure_boot=True)) == {7}
    assert rules_pcrs(EventRules(dbx_contains=(b"x",))) == {7}
    assert rules_pcrs(EventRules(boot_chain=())) == {4}
    assert rules_pcrs(EventRules(kernel_cmdline=CmdlineRule(exact="x"))) == frozenset()
    assert rules_quote_pcrs(EventRules(kernel_cmdline=CmdlineRule(exact="x"))) == {8, 12}
    assert rules_quote_pcrs(EventRules(boot_chain=())) == {4, 5}
