"""dbx lookups by set (issue 17): the same answers as a scan of the raw signature lists.

A release may expect hundreds of dbx entries; ``dbx_contains`` is one set test against the
entries of the measured dbx. These tests try what a scan got right and a careless set could
get wrong: bytes that straddle an owner GUID and a hash, owner GUIDs themselves, truncated
digests, certificate fingerprints (which count as revocations) and the order of reasons.
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
from pathlib import Path

import pytest

from verifier.eventlog import BootFacts, extract_facts, parse_event_log
from verifier.eventlog.efi import (
    EFI_CERT_SHA256,
    EFI_CERT_X509,
    SignatureDb,
    parse_signature_lists,
)
from verifier.eventlog.facts import SecureBootDb
from verifier.golden.model import EventRules
from verifier.golden.rules import evaluate_event_rules

DATA = Path(__file__).parent / "data" / "eventlogs"
OWNER = bytes(range(16))


def signature_list(sig_type: bytes, entries: list[bytes]) -> bytes:
    size = 16 + len(entries[0])
    body = b"".join(OWNER + entry for entry in entries)
    return struct.pack("<16sIII", sig_type, 28 + len(body), 0, size) + body


@pytest.fixture(scope="module")
def facts() -> BootFacts:
    data = (DATA / "keylime/binary_bios_measurements-secureboot").read_bytes()
    return extract_facts(parse_event_log(data), "sha256", frozenset())


def dbx_of(facts: BootFacts) -> SignatureDb:
    dbx = facts.database("dbx")
    assert dbx is not None
    return dbx.content


def with_dbx(facts: BootFacts, content: SignatureDb) -> BootFacts:
    dbs = tuple((n, db) for n, db in facts.databases if n != "dbx")
    return dataclasses.replace(facts, databases=(*dbs, ("dbx", SecureBootDb(8, content))))


def test_every_learned_dbx_hash_passes(facts: BootFacts) -> None:
    content = dbx_of(facts)
    assert len(content.hash_set) == 371
    assert evaluate_event_rules(facts, EventRules(dbx_contains=content.hashes), "r") == []


def test_bytes_straddling_owner_and_hash_are_not_an_entry(facts: BootFacts) -> None:
    content = dbx_of(facts)
    first = content.hash_lists[0][0]
    straddle = content.raw[first + 8 : first + 40]
    assert content.raw.find(straddle) >= 0 and not content.has_hash(straddle)
    [reason] = evaluate_event_rules(facts, EventRules(dbx_contains=(straddle,)), "r")
    assert reason.code == "dbx_missing_hash" and reason.expected == straddle.hex()


def test_owner_guid_padded_to_a_hash_is_not_an_entry(facts: BootFacts) -> None:
    content = dbx_of(facts)
    first = content.hash_lists[0][0]
    owner = content.raw[first : first + 16]
    assert not content.has_hash(owner) and not content.has_hash(owner * 2)
    assert owner not in content.entries


def test_truncated_or_extended_digest_is_not_an_entry(facts: BootFacts) -> None:
    first = dbx_of(facts).hashes[0]
    assert not dbx_of(facts).has_hash(first[:31])
    assert not dbx_of(facts).has_hash(first + b"\x00")


def test_missing_hashes_are_each_reported_in_release_order(facts: BootFacts) -> None:
    hashes = dbx_of(facts).hashes
    absent_a, absent_b = b"\xaa" * 32, b"\xbb" * 32
    rules = EventRules(dbx_contains=(hashes[0], absent_b, hashes[5], absent_a, hashes[-1]))
    reasons = evaluate_event_rules(facts, rules, "r")
    assert [r.expected for r in reasons] == [absent_b.hex(), absent_a.hex()]
    assert all(r.actual == "371 hashes" and r.event_index is not None for r in reasons)


def test_no_dbx_measurement_fails_every_expected_hash(facts: BootFacts) -> None:
    without = dataclasses.replace(
        facts, databases=tuple((n, db) for n, db in facts.databases if n != "dbx")
    )
    wanted = dbx_of(facts).hashes[:3]
    reasons = evaluate_event_rules(without, EventRules(dbx_contains=wanted), "r")
    assert [r.expected for r in reasons] == [d.hex() for d in wanted]
    assert all("no verified dbx measurement" in r.text for r in reasons)


def test_revoked_certificate_counts_but_is_not_a_hash(facts: BootFacts) -> None:
    der, digest = b"not really DER, only hashed", b"\x11" * 32
    content = parse_signature_lists(
        signature_list(EFI_CERT_X509, [der]) + signature_list(EFI_CERT_SHA256, [digest])
    )
    fingerprint = hashlib.sha256(der).digest()
    assert content.hash_set == {digest}
    assert content.entries == {digest, fingerprint}
    assert not content.has_hash(fingerprint)
    rules = EventRules(dbx_contains=(fingerprint, digest))
    assert evaluate_event_rules(with_dbx(facts, content), rules, "r") == []
    [reason] = evaluate_event_rules(
        with_dbx(facts, content), EventRules(dbx_contains=(b"\x22" * 32,)), "r"
    )
    assert reason.actual == "1 hashes"
