"""IMA measurement list parsing: real lists (tests/data/ima, see NOTICE-ima.md) and attacks."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from verifier.errors import ImaLogError
from verifier.ima import write
from verifier.ima.parse import parse_ascii, parse_binary, parse_measurement_list
from verifier.limits import Limits

DATA = Path(__file__).parent / "data" / "ima"

# (file, bytes of whole entries, entries, templates)
TPM2_TSS = [
    ("sml-ima-sha1.bin", 916, 12, {"ima"}),
    ("sml-ima-ng-sha1.bin", 558, 6, {"ima-ng"}),
    ("sml-ima-sig-sha256.bin", 987, 9, {"ima-sig"}),
]


@pytest.mark.parametrize(("name", "whole", "count", "templates"), TPM2_TSS)
def test_tpm2_tss_lists_parse_with_every_template_hash_checked(
    name: str, whole: int, count: int, templates: set[str]
) -> None:
    data = (DATA / name).read_bytes()
    log = parse_binary(data[:whole])
    assert len(log.entries) == count
    assert {e.template for e in log.entries} == templates
    assert [e.number for e in log.entries] == list(range(count))
    assert log.entries[0].path == "boot_aggregate"
    assert log.entries[1].path == "/init"
    assert not any(e.violation for e in log.entries)


@pytest.mark.parametrize(("name", "whole", "count", "templates"), TPM2_TSS)
def test_tpm2_tss_list_with_trailing_partial_entry_is_refused(
    name: str, whole: int, count: int, templates: set[str]
) -> None:
    data = (DATA / name).read_bytes()
    assert len(data) > whole
    with pytest.raises(ImaLogError, match=f"entry {count}: header truncated"):
        parse_binary(data)


def test_tpm2_tss_invalidated_lists_hold_violations() -> None:
    (only,) = parse_binary((DATA / "sml-ima-sha1-invalidated.bin").read_bytes()).entries
    assert only.violation and only.template == "ima"
    log = parse_binary((DATA / "sml-ima-sig-sha256-invalidated.bin").read_bytes())
    assert [e.violation for e in log.entries] == [False, True]
    assert log.entries[1].path == "/init" and log.entries[1].digest == bytes(32)


def test_tpm2_tss_truncated_invalidated_list_is_refused() -> None:
    with pytest.raises(ImaLogError, match="entry 0: template data of 49 bytes is truncated"):
        parse_binary((DATA / "sml-ima-ng-sha1-invalidated.bin").read_bytes())


@pytest.mark.parametrize(
    ("name", "alg"),
    [
        ("sha1", "sha1"),
        ("sha256", "sha1"),
        ("sha384", "sha1"),
        ("sha512", "sha1"),
        ("sm3_256", "sm3"),
    ],
)
def test_keylime_ascii_lists_parse_with_template_hashes_checked(name: str, alg: str) -> None:
    log = parse_ascii((DATA / f"ima-log-{name}").read_bytes(), template_hash_alg=alg)
    assert [e.path for e in log.entries] == ["boot_aggregate", "/data"]
    assert log.entries[1].digest_alg == name and not log.entries[1].violation


def test_keylime_ascii_entry_with_foreign_template_hash_is_refused() -> None:
    with pytest.raises(ImaLogError, match=r"entry 1 \(ima-ng '/data'\): its data does not hash"):
        parse_ascii((DATA / "ima-log-unknown").read_bytes(), template_hash_alg="sm3")


def test_ascii_list_with_wrong_template_hash_size_is_refused() -> None:
    with pytest.raises(ImaLogError, match="template hash of 32 bytes, sha1 has 20"):
        parse_ascii((DATA / "ima-log-sm3_256").read_bytes())


def test_binary_and_ascii_forms_of_one_list_agree() -> None:
    entries = [
        write.file_entry("/usr/bin/a b", hashlib.sha256(b"a").digest()),
        write.file_entry("/usr/bin/c", hashlib.sha256(b"c").digest(), signature=b""),
        write.file_entry("/usr/bin/d", hashlib.sha256(b"d").digest(), signature=b"\x03\x02sig"),
        write.buf_entry("kexec-cmdline", b"root=/dev/vda1 ro"),
        write.entry("ima", (hashlib.sha1(b"e").digest(), b"/sbin/init")),
    ]
    binary = parse_binary(b"".join(entries))
    lines = []
    for e in binary.entries:
        head = f"10 {e.template_hash.hex()} {e.template} "
        if e.template == "ima":
            lines.append(head + f"{e.digest.hex()} {e.path}")
        elif e.template == "ima-ng":
            lines.append(head + f"{e.digest_alg}:{e.digest.hex()} {e.path}")
        else:
            extra = e.signature if e.template == "ima-sig" else e.buf
            lines.append(head + f"{e.digest_alg}:{e.digest.hex()} {e.path} {extra.hex()}")
    ascii_log = parse_measurement_list("\n".join(lines).encode() + b"\n")
    assert ascii_log.entries == binary.entries


def test_entry_with_path_changed_and_digest_kept_is_refused() -> None:
    good = write.file_entry("/usr/bin/evil", hashlib.sha256(b"evil").digest())
    forged = good.replace(b"/usr/bin/evil", b"/usr/bin/true")
    with pytest.raises(ImaLogError, match=r"entry 0 .*'/usr/bin/true'.*does not hash"):
        parse_binary(forged)


def test_legacy_entry_with_name_changed_is_refused() -> None:
    good = write.entry("ima", (hashlib.sha1(b"x").digest(), b"/bin/evil"))
    with pytest.raises(ImaLogError, match="does not hash"):
        parse_binary(good.replace(b"/bin/evil", b"/bin/good"))


def test_oversized_log_is_refused() -> None:
    entry = write.file_entry("/x", bytes(32))
    with pytest.raises(ImaLogError, match="exceeds the limit"):
        parse_binary(entry * 10, limits=Limits(max_ima_log_bytes=len(entry) * 9))


def test_log_with_too_many_entries_is_refused() -> None:
    entry = write.file_entry("/x", bytes(32))
    with pytest.raises(ImaLogError, match="more than 3 entries"):
        parse_binary(entry * 4, limits=Limits(max_ima_entries=3))


def test_oversized_template_data_is_refused() -> None:
    entry = write.buf_entry("big", b"x" * 2000)
    with pytest.raises(ImaLogError, match=r"template data of .* exceeds"):
        parse_binary(entry, limits=Limits(max_ima_template_data_bytes=1000))


def test_unknown_template_is_refused() -> None:
    entry = write.file_entry("/x", bytes(32)).replace(b"ima-ng", b"ima-xx")
    with pytest.raises(ImaLogError, match="unsupported template 'ima-xx'"):
        parse_binary(entry)


def test_field_lengths_that_overrun_the_template_data_are_refused() -> None:
    entry = bytearray(write.file_entry("/x", bytes(32)))
    name_end = 4 + 20 + 4 + len(b"ima-ng")
    entry[name_end + 4 : name_end + 8] = (0xFFFF).to_bytes(4, "little")  # d-ng length
    with pytest.raises(ImaLogError, match="overruns"):
        parse_binary(bytes(entry))


def test_pcr_index_out_of_range_is_refused() -> None:
    entry = write.entry("ima-ng", (write.dng("sha256", bytes(32)), write.nng("/x")), pcr=99)
    with pytest.raises(ImaLogError, match="PCR index 99"):
        parse_binary(entry)


def test_digest_of_the_wrong_size_for_its_algorithm_is_refused() -> None:
    entry = write.entry("ima-ng", (write.dng("sha256", bytes(20)), write.nng("/x")))
    with pytest.raises(ImaLogError, match="sha256 digest of 20 bytes"):
        parse_binary(entry)


def test_entries_are_numbered_from_the_offset() -> None:
    raw = write.file_entry("/a", bytes(32)) + write.file_entry("/b", bytes(32))
    log = parse_binary(raw, first_index=40)
    assert [e.number for e in log.entries] == [40, 41] and log.end_index == 42


def test_empty_list_is_empty() -> None:
    assert parse_measurement_list(b"").entries == ()
