"""Quote checks (appraisal invariants 1-3), each test named after the attack it tries.

Most quotes here are made by ``simulator.softquote`` (a software AK marshalling TPMS_ATTEST
exactly as a TPM does) so that the attacks a real TPM would never sign can be built; the
swtpm tests run the same checks on real quotes. One real quote from keylime's test data
checks RSASSA and the marshalling against a structure a TPM produced.
"""

from __future__ import annotations

import contextlib
import hashlib
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.softquote import QuoteFields, SoftAk, attest_bytes, sign
from verifier import errors
from verifier.quote import check_quote, parse_attest, parse_signature

DATA = Path(__file__).parent / "data" / "quotes" / "keylime"
NONCE = bytes(range(32))
PCRS = {0: b"\x00" * 32, 7: b"\x07" * 32, 23: b"\x23" * 32}


@pytest.fixture(scope="module")
def ak() -> SoftAk:
    return SoftAk.generate()


def check(
    ak: SoftAk,
    q: QuoteFields,
    *,
    sent: dict[int, bytes] | None = None,
    requested: tuple[int, ...] = (0, 7, 23),
    signature: bytes | None = None,
    key: object = None,
    attest: bytes | None = None,
) -> object:
    signed, sig = ak.quote(q)
    return check_quote(
        attest_bytes=attest if attest is not None else signed,
        signature_bytes=signature if signature is not None else sig,
        pcr_values=tuple((sent if sent is not None else dict(q.pcrs)).items()),
        ak_public_key=key if key is not None else ak.key.public_key(),
        ak_hash="sha256",
        nonce=NONCE,
        bank="sha256",
        pcrs=requested,
    )


def test_good_quote_is_accepted_and_proves_its_pcrs(ak: SoftAk) -> None:
    checked = check(ak, QuoteFields(NONCE, "sha256", PCRS))
    assert checked.pcrs == PCRS  # type: ignore[attr-defined]
    assert checked.clock_info.reset_count == 1  # type: ignore[attr-defined]


def test_quote_signed_by_another_key_is_rejected(ak: SoftAk) -> None:
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(errors.SignatureInvalid):
        check(ak, QuoteFields(NONCE, "sha256", PCRS), key=other)


def test_quote_with_a_flipped_byte_is_rejected(ak: SoftAk) -> None:
    q = QuoteFields(NONCE, "sha256", PCRS)
    attest = attest_bytes(q)
    tampered = attest[:-1] + bytes([attest[-1] ^ 1])
    with pytest.raises(errors.SignatureInvalid):
        check(ak, q, attest=tampered)


def test_structure_without_tpm_generated_magic_is_rejected(ak: SoftAk) -> None:
    # What TPM2_Sign of attacker-chosen bytes would give: signed, but not TPM-generated.
    with pytest.raises(errors.SignatureInvalid, match="TPM_GENERATED"):
        check(ak, QuoteFields(NONCE, "sha256", PCRS, magic=0x41414141))


def test_certify_structure_presented_as_quote_is_rejected(ak: SoftAk) -> None:
    with pytest.raises(errors.MalformedEvidence, match="not a quote"):
        check(ak, QuoteFields(NONCE, "sha256", PCRS, type=0x8017))


def test_old_quote_replayed_with_a_new_nonce_is_rejected(ak: SoftAk) -> None:
    with pytest.raises(errors.NonceMismatch):
        check(ak, QuoteFields(b"an older nonce of 32 bytes......", "sha256", PCRS))


def test_quote_of_pcr_23_relabelled_as_pcr_7_is_rejected(ak: SoftAk) -> None:
    # The TPM signed a quote of PCR 23 only; the agent presents its value as PCR 7.
    q = QuoteFields(NONCE, "sha256", {23: b"\x23" * 32})
    with pytest.raises(errors.ReplayMismatch, match="signed the selection"):
        check(ak, q, sent={7: b"\x23" * 32}, requested=(7,))


def test_pcr_values_swapped_between_indices_are_rejected(ak: SoftAk) -> None:
    q = QuoteFields(NONCE, "sha256", PCRS)
    swapped = {0: PCRS[0], 7: PCRS[23], 23: PCRS[7]}
    with pytest.raises(errors.ReplayMismatch, match="pcrDigest"):
        check(ak, q, sent=swapped)


def test_pcr_values_that_do_not_hash_to_pcr_digest_are_rejected(ak: SoftAk) -> None:
    q = QuoteFields(NONCE, "sha256", PCRS)
    forged = dict(PCRS)
    forged[7] = b"\x99" * 32
    with pytest.raises(errors.ReplayMismatch, match="pcrDigest"):
        check(ak, q, sent=forged)


def test_signed_selection_different_from_the_requested_one_is_rejected(ak: SoftAk) -> None:
    q = QuoteFields(NONCE, "sha256", {0: PCRS[0], 7: PCRS[7]})
    with pytest.raises(errors.ReplayMismatch, match="requested"):
        check(ak, q, sent={0: PCRS[0], 7: PCRS[7]}, requested=(0, 7, 23))


def test_extra_pcr_value_outside_the_signed_selection_is_rejected(ak: SoftAk) -> None:
    q = QuoteFields(NONCE, "sha256", PCRS)
    sent = dict(PCRS)
    sent[8] = b"\x08" * 32
    with pytest.raises(errors.ReplayMismatch, match="sent for"):
        check(ak, q, sent=sent)


def test_missing_pcr_value_is_rejected(ak: SoftAk) -> None:
    q = QuoteFields(NONCE, "sha256", PCRS)
    with pytest.raises(errors.ReplayMismatch):
        check(ak, q, sent={0: PCRS[0], 7: PCRS[7]})


def test_short_pcr_value_is_rejected(ak: SoftAk) -> None:
    pcrs = {0: b"\x00" * 20}
    q = QuoteFields(NONCE, "sha256", pcrs)
    with pytest.raises(errors.ReplayMismatch, match="bytes"):
        check(ak, q, requested=(0,))


def test_sha1_quote_where_sha256_was_requested_is_rejected(ak: SoftAk) -> None:
    sha1 = {0: b"\x00" * 20, 7: b"\x07" * 20, 23: b"\x23" * 20}
    q = QuoteFields(NONCE, "sha1", sha1)
    with pytest.raises(errors.ReplayMismatch, match="signed the selection"):
        check(ak, q)


def test_signature_with_a_hash_other_than_the_aks_scheme_is_rejected(ak: SoftAk) -> None:
    q = QuoteFields(NONCE, "sha256", PCRS)
    attest, sig = ak.quote(q)
    relabelled = sig[:2] + struct.pack(">H", 0x000C) + sig[4:]  # claims SHA-384
    with pytest.raises(errors.SignatureInvalid):
        check(ak, q, attest=attest, signature=relabelled)


def test_truncated_attest_is_rejected_as_malformed() -> None:
    attest = attest_bytes(QuoteFields(NONCE, "sha256", PCRS))
    for cut in (0, 4, 6, 30, len(attest) - 1):
        with pytest.raises(errors.MalformedEvidence, match="truncated"):
            parse_attest(attest[:cut])


def test_attest_with_trailing_bytes_is_rejected() -> None:
    attest = attest_bytes(QuoteFields(NONCE, "sha256", PCRS))
    with pytest.raises(errors.MalformedEvidence, match="trailing"):
        parse_attest(attest + b"\x00")


def test_unsafe_clock_is_reported_not_refused(ak: SoftAk) -> None:
    checked = check(ak, QuoteFields(NONCE, "sha256", PCRS, safe=0))
    assert checked.clock_info.safe is False  # type: ignore[attr-defined]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzzed_attest_and_signature_raise_only_evidence_errors(data: bytes) -> None:
    for parse in (parse_attest, parse_signature):
        with contextlib.suppress(errors.MalformedEvidence, errors.SignatureInvalid):
            parse(data)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=140), st.integers(min_value=0, max_value=255))
def test_every_single_byte_change_of_a_signed_quote_is_rejected(pos: int, value: int) -> None:
    key = ec.derive_private_key(12345, ec.SECP256R1())
    attest = attest_bytes(QuoteFields(NONCE, "sha256", PCRS))
    sig = sign(key, attest)
    pos %= len(attest)
    if attest[pos] == value:
        return
    mutated = attest[:pos] + bytes([value]) + attest[pos + 1 :]
    with pytest.raises((errors.SignatureInvalid, errors.MalformedEvidence)):
        check_quote(
            attest_bytes=mutated,
            signature_bytes=sig,
            pcr_values=tuple(PCRS.items()),
            ak_public_key=key.public_key(),
            ak_hash="sha256",
            nonce=NONCE,
            bank="sha256",
            pcrs=(0, 7, 23),
        )


def _keylime_pcr_values() -> list[bytes]:
    """PCR values from tpm2-tools' pcr output (TPML_PCR_SELECTION then TPML_DIGEST, host order)."""
    data = (DATA / "quotepcr.out").read_bytes()
    count = struct.unpack_from("<I", data, 0x88)[0]
    values = []
    for k in range(count):
        offset = 0x8C + k * 66
        size = struct.unpack_from("<H", data, offset)[0]
        values.append(data[offset + 2 : offset + 2 + size])
    return values


def test_real_rsa_quote_from_keylime_test_data_verifies() -> None:
    attest = (DATA / "quote.out").read_bytes()
    signature = (DATA / "quotesig.out").read_bytes()
    key = serialization.load_pem_public_key((DATA / "akpub.pem").read_bytes())
    parsed = parse_attest(attest)
    values = _keylime_pcr_values()
    checked = check_quote(
        attest_bytes=attest,
        signature_bytes=signature,
        pcr_values=tuple(zip((15, 16, 22), values, strict=True)),
        ak_public_key=key,
        ak_hash="sha256",
        nonce=parsed.extra_data,
        bank="sha256",
        pcrs=(15, 16, 22),
    )
    assert checked.pcrs[16] == values[1]
    assert hashlib.sha256(b"".join(values)).digest() == parsed.pcr_digest


def test_real_rsa_quote_with_pcrs_relabelled_is_rejected() -> None:
    attest = (DATA / "quote.out").read_bytes()
    signature = (DATA / "quotesig.out").read_bytes()
    key = serialization.load_pem_public_key((DATA / "akpub.pem").read_bytes())
    values = _keylime_pcr_values()
    with pytest.raises(errors.ReplayMismatch):
        check_quote(
            attest_bytes=attest,
            signature_bytes=signature,
            pcr_values=tuple(zip((7, 16, 22), values, strict=True)),
            ak_public_key=key,
            ak_hash="sha256",
            nonce=parse_attest(attest).extra_data,
            bank="sha256",
            pcrs=(7, 16, 22),
        )
