"""Enrollment core: TPM2B_PUBLIC parsing, EK/AK checks, EK certificate paths, MakeCredential.

Every security check has a test named after the attack it stops. The test PKI (root ->
intermediate -> EK certificate) is generated here with ``cryptography``; the TPM2B_PUBLIC
vectors are marshalled here from generated keys, plus keylime's recorded ``ak.pub``/``ek.pub``
(tests/data/quotes/keylime, see NOTICE-quotes.md). Tests marked ``swtpm`` run MakeCredential
against a real TPM (a throwaway swtpm) and compare names with the ones the TPM computes.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import logging
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st
from tpm2_pytss import (
    ESAPI,
    TPM2B_ENCRYPTED_SECRET,
    TPM2B_ID_OBJECT,
    TPM2B_PUBLIC,
    TPMT_SYM_DEF,
)
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_SE
from tpm2_pytss.TSS2_Exception import TSS2_Exception
from tpm2_pytss.utils import NoSuchIndex, NVReadEK, create_ek_template

from verifier.enrollment import der
from verifier.enrollment.credential import check_proof, make_credential, new_secret
from verifier.enrollment.ekchain import (
    Allowlist,
    TrustConfigError,
    TrustStore,
    ek_fingerprint,
    parse_certificate,
    validate_ek_certificate,
)
from verifier.enrollment.flow import Enrollment
from verifier.enrollment.identity import device_id_for
from verifier.enrollment.policy import EnrollmentPolicy
from verifier.enrollment.tpmpublic import (
    DECRYPT,
    FIXED_PARENT,
    FIXED_TPM,
    RESTRICTED,
    SENSITIVE_DATA_ORIGIN,
    SIGN,
    TpmPublic,
    check_ak,
    check_ek,
    parse_tpm2b_public,
)
from verifier.errors import (
    ActivationFailed,
    ApprovalRequired,
    LimitExceeded,
    MalformedEvidence,
    UnacceptableKey,
    UntrustedEndorsement,
)
from verifier.limits import Limits
from verifier.marshal import (
    ALG_AES,
    ALG_CFB,
    ALG_ECC,
    ALG_ECDSA,
    ALG_NULL,
    ALG_RSA,
    ALG_RSASSA,
    ALG_SHA1,
    ALG_SHA256,
    tpm2b,
    u16,
    u32,
)
from verifier.store.base import EnrollmentChallenge, Store
from verifier.store.sqlite import SqliteStore

DATA = Path(__file__).parent / "data"
KEYLIME = DATA / "quotes" / "keylime"
USER_WITH_AUTH = 1 << 6
ADMIN_WITH_POLICY = 1 << 7
AK_ATTRS = FIXED_TPM | FIXED_PARENT | SENSITIVE_DATA_ORIGIN | USER_WITH_AUTH | RESTRICTED | SIGN
EK_ATTRS = FIXED_TPM | FIXED_PARENT | SENSITIVE_DATA_ORIGIN | ADMIN_WITH_POLICY | RESTRICTED
EK_ATTRS |= DECRYPT
EK_POLICY = bytes.fromhex("837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa")
P256 = 0x0003
AES128_CFB = (ALG_AES, 128, ALG_CFB)
NOW = datetime.datetime(2026, 6, 1, tzinfo=datetime.UTC).timestamp()


# ------------------------------------------------------------------ TPM2B_PUBLIC vectors


def _sym(sym: tuple[int, ...]) -> bytes:
    return b"".join(u16(v) for v in sym)


def rsa_public(
    key: rsa.RSAPublicKey,
    attributes: int = AK_ATTRS,
    *,
    name_alg: int = ALG_SHA256,
    scheme: tuple[int, ...] = (ALG_RSASSA, ALG_SHA256),
    sym: tuple[int, ...] = (ALG_NULL,),
    policy: bytes = b"",
    exponent: int = 0,
) -> bytes:
    numbers = key.public_numbers()
    area = (
        u16(ALG_RSA)
        + u16(name_alg)
        + u32(attributes)
        + tpm2b(policy)
        + _sym(sym)
        + b"".join(u16(v) for v in scheme)
        + u16(key.key_size)
        + u32(exponent)
        + tpm2b(numbers.n.to_bytes(key.key_size // 8, "big"))
    )
    return tpm2b(area)


def ecc_public(
    key: ec.EllipticCurvePublicKey,
    attributes: int = AK_ATTRS,
    *,
    name_alg: int = ALG_SHA256,
    scheme: tuple[int, ...] = (ALG_ECDSA, ALG_SHA256),
    sym: tuple[int, ...] = (ALG_NULL,),
    policy: bytes = b"",
    curve: int = P256,
) -> bytes:
    numbers = key.public_numbers()
    size = (key.curve.key_size + 7) // 8
    area = (
        u16(ALG_ECC)
        + u16(name_alg)
        + u32(attributes)
        + tpm2b(policy)
        + _sym(sym)
        + b"".join(u16(v) for v in scheme)
        + u16(curve)
        + u16(ALG_NULL)
        + tpm2b(numbers.x.to_bytes(size, "big"))
        + tpm2b(numbers.y.to_bytes(size, "big"))
    )
    return tpm2b(area)


@dataclass(frozen=True)
class Keys:
    rsa_ek: rsa.RSAPrivateKey
    ecc_ek: ec.EllipticCurvePrivateKey
    ak: ec.EllipticCurvePrivateKey
    rsa_ak: rsa.RSAPrivateKey
    other: ec.EllipticCurvePrivateKey


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(
        rsa_ek=rsa.generate_private_key(65537, 2048),
        ecc_ek=ec.generate_private_key(ec.SECP256R1()),
        ak=ec.generate_private_key(ec.SECP256R1()),
        rsa_ak=rsa.generate_private_key(65537, 2048),
        other=ec.generate_private_key(ec.SECP256R1()),
    )


def rsa_ek_public(keys: Keys) -> bytes:
    return rsa_public(
        keys.rsa_ek.public_key(), EK_ATTRS, scheme=(ALG_NULL,), sym=AES128_CFB, policy=EK_POLICY
    )


def ecc_ek_public(keys: Keys) -> bytes:
    return ecc_public(
        keys.ecc_ek.public_key(), EK_ATTRS, scheme=(ALG_NULL,), sym=AES128_CFB, policy=EK_POLICY
    )


# ------------------------------------------------------------------ parsing


def test_keylime_ak_vector_parses_to_its_recorded_name() -> None:
    ak = parse_tpm2b_public((KEYLIME / "ak.pub").read_bytes())
    assert ak.name == (KEYLIME / "ak.name").read_bytes()
    assert ak.type == ALG_RSA and ak.key_bits == 2048 and ak.signing_hash == "sha256"
    check_ak(ak)


def test_keylime_ek_vector_is_an_ek_and_never_an_ak() -> None:
    ek = parse_tpm2b_public((KEYLIME / "ek.pub").read_bytes())
    check_ek(ek)
    with pytest.raises(UnacceptableKey, match=r"decrypt|sign"):
        check_ak(ek)
    pem = serialization.load_pem_public_key((KEYLIME / "ekpub.pem").read_bytes())
    assert pem == ek.public_key


def test_parsed_fields_and_name_are_exact(keys: Keys) -> None:
    blob = ecc_public(keys.ak.public_key())
    ak = parse_tpm2b_public(blob)
    assert ak.public_area == blob[2:]
    assert ak.name == u16(ALG_SHA256) + hashlib.sha256(blob[2:]).digest()
    assert ak.object_attributes == AK_ATTRS and ak.curve == P256 and ak.key_bits == 256
    assert ak.scheme == ALG_ECDSA and ak.signing_hash == "sha256"
    assert ak.public_key == keys.ak.public_key()
    check_ak(ak)


def test_rsa_exponent_zero_means_65537(keys: Keys) -> None:
    ak = parse_tpm2b_public(rsa_public(keys.rsa_ak.public_key(), exponent=0))
    assert ak.exponent == 65537
    assert isinstance(ak.public_key, rsa.RSAPublicKey)
    assert ak.public_key.public_numbers().e == 65537


def test_truncated_tpm2b_public_is_malformed_at_every_length(keys: Keys) -> None:
    blob = ecc_public(keys.ak.public_key())
    for cut in range(len(blob)):
        with pytest.raises(MalformedEvidence):
            parse_tpm2b_public(blob[:cut])


def test_trailing_bytes_after_tpm2b_public_are_rejected(keys: Keys) -> None:
    blob = ecc_public(keys.ak.public_key())
    with pytest.raises(MalformedEvidence, match="trailing"):
        parse_tpm2b_public(blob + b"\x00")
    inner = blob[2:] + b"\x00"  # the TPM2B size covers a byte TPMT_PUBLIC does not use
    with pytest.raises(MalformedEvidence, match="trailing"):
        parse_tpm2b_public(tpm2b(inner))


def test_tpm2b_public_claiming_absurd_size_is_malformed(keys: Keys) -> None:
    blob = ecc_public(keys.ak.public_key())
    with pytest.raises(MalformedEvidence, match="truncated"):
        parse_tpm2b_public(u16(0xFFFF) + blob[2:])


def test_oversized_tpm2b_public_hits_the_limit(keys: Keys) -> None:
    blob = ecc_public(keys.ak.public_key())
    with pytest.raises(LimitExceeded):
        parse_tpm2b_public(blob, Limits(max_tpm_public_bytes=len(blob) - 1))
    with pytest.raises(LimitExceeded):
        parse_tpm2b_public(b"\x00" * 5000)


def test_unknown_algorithms_are_unacceptable(keys: Keys) -> None:
    blob = ecc_public(keys.ak.public_key())
    with pytest.raises(UnacceptableKey, match="object type"):
        parse_tpm2b_public(blob[:2] + u16(0x0008) + blob[4:])  # KEYEDHASH
    with pytest.raises(UnacceptableKey, match="nameAlg"):
        parse_tpm2b_public(blob[:4] + u16(0x7777) + blob[6:])
    with pytest.raises(UnacceptableKey, match="curve"):
        parse_tpm2b_public(ecc_public(keys.ak.public_key(), curve=0x0020))
    with pytest.raises(UnacceptableKey, match="scheme"):
        parse_tpm2b_public(ecc_public(keys.ak.public_key(), scheme=(0x4242, ALG_SHA256)))


def test_rsa_modulus_size_that_contradicts_key_bits_is_malformed(keys: Keys) -> None:
    blob = rsa_public(keys.rsa_ak.public_key())
    area = blob[2:]
    short = area[:-258] + tpm2b(area[-256:-128])  # keyBits says 2048, modulus has 1024 bits
    with pytest.raises(MalformedEvidence, match="modulus"):
        parse_tpm2b_public(tpm2b(short))


def test_ecc_point_off_the_curve_is_malformed(keys: Keys) -> None:
    blob = bytearray(ecc_public(keys.ak.public_key()))
    blob[-1] ^= 1
    with pytest.raises(MalformedEvidence, match="curve"):
        parse_tpm2b_public(bytes(blob))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_raise_only_typed_errors(data: bytes) -> None:
    with contextlib.suppress(MalformedEvidence, UnacceptableKey):
        parse_tpm2b_public(data)


_FUZZ_AK = ecc_public(ec.generate_private_key(ec.SECP256R1()).public_key())


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(_FUZZ_AK) - 1), st.integers(0, 255)), max_size=4))
def test_mutated_ak_raises_only_typed_errors(flips: list[tuple[int, int]]) -> None:
    blob = bytearray(_FUZZ_AK)
    for pos, value in flips:
        blob[pos] = value
    with contextlib.suppress(MalformedEvidence, UnacceptableKey):
        check_ak(parse_tpm2b_public(bytes(blob)))


# ------------------------------------------------------------------ AK and EK checks


def test_unrestricted_ak_is_rejected(keys: Keys) -> None:
    ak = parse_tpm2b_public(ecc_public(keys.ak.public_key(), AK_ATTRS & ~RESTRICTED))
    with pytest.raises(UnacceptableKey, match="restricted"):
        check_ak(ak)


def test_decrypt_capable_ak_is_rejected(keys: Keys) -> None:
    ak = parse_tpm2b_public(ecc_public(keys.ak.public_key(), AK_ATTRS | DECRYPT))
    with pytest.raises(UnacceptableKey, match="decrypt"):
        check_ak(ak)


@pytest.mark.parametrize(
    ("attribute", "name"),
    [
        (FIXED_TPM, "fixedTPM"),
        (FIXED_PARENT, "fixedParent"),
        (SENSITIVE_DATA_ORIGIN, "sensitiveDataOrigin"),
        (SIGN, "sign"),
    ],
)
def test_ak_missing_required_attribute_is_rejected(keys: Keys, attribute: int, name: str) -> None:
    ak = parse_tpm2b_public(ecc_public(keys.ak.public_key(), AK_ATTRS & ~attribute))
    with pytest.raises(UnacceptableKey, match=name):
        check_ak(ak)


def test_ak_with_sha1_name_or_scheme_is_rejected(keys: Keys) -> None:
    with pytest.raises(UnacceptableKey, match="name algorithm sha1"):
        check_ak(parse_tpm2b_public(ecc_public(keys.ak.public_key(), name_alg=ALG_SHA1)))
    with pytest.raises(UnacceptableKey, match="scheme hash sha1"):
        check_ak(parse_tpm2b_public(ecc_public(keys.ak.public_key(), scheme=(0x0018, ALG_SHA1))))


def test_ak_without_a_signing_scheme_is_rejected(keys: Keys) -> None:
    ak = parse_tpm2b_public(ecc_public(keys.ak.public_key(), scheme=(ALG_NULL,)))
    with pytest.raises(UnacceptableKey, match="signing scheme"):
        check_ak(ak)


def test_small_rsa_ak_is_rejected() -> None:
    small = rsa.generate_private_key(65537, 1024).public_key()
    with pytest.raises(UnacceptableKey, match="RSA-1024"):
        check_ak(parse_tpm2b_public(rsa_public(small)))


def test_rsa_ak_is_accepted(keys: Keys) -> None:
    check_ak(parse_tpm2b_public(rsa_public(keys.rsa_ak.public_key())))
    check_ak(parse_tpm2b_public(rsa_public(keys.rsa_ak.public_key(), scheme=(0x0016, 0x000C))))


def test_ek_that_can_sign_is_rejected(keys: Keys) -> None:
    blob = rsa_public(keys.rsa_ek.public_key(), EK_ATTRS | SIGN, scheme=(ALG_NULL,), sym=AES128_CFB)
    with pytest.raises(UnacceptableKey, match="sign"):
        check_ek(parse_tpm2b_public(blob))


def test_ek_without_storage_attributes_is_rejected(keys: Keys) -> None:
    for attribute in (RESTRICTED, DECRYPT, FIXED_TPM, FIXED_PARENT):
        blob = ecc_public(
            keys.ecc_ek.public_key(), EK_ATTRS & ~attribute, scheme=(ALG_NULL,), sym=AES128_CFB
        )
        with pytest.raises(UnacceptableKey):
            check_ek(parse_tpm2b_public(blob))


def test_ek_without_aes_cfb_is_rejected(keys: Keys) -> None:
    blob = ecc_public(keys.ecc_ek.public_key(), EK_ATTRS, scheme=(ALG_NULL,))
    with pytest.raises(UnacceptableKey, match="AES"):
        check_ek(parse_tpm2b_public(blob))


def test_standard_eks_are_accepted(keys: Keys) -> None:
    check_ek(parse_tpm2b_public(rsa_ek_public(keys)))
    check_ek(parse_tpm2b_public(ecc_ek_public(keys)))


# ------------------------------------------------------------------ test PKI


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _dt(year: int, month: int = 1) -> datetime.datetime:
    return datetime.datetime(year, month, 1, tzinfo=datetime.UTC)


CA_FROM, CA_UNTIL = _dt(2020), _dt(2040)
EK_FROM, EK_UNTIL = _dt(2024), _dt(2034)
CaKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class Ca:
    key: CaKey
    cert: x509.Certificate

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)


def make_ca(
    cn: str,
    issuer: Ca | None = None,
    *,
    key: CaKey | None = None,
    ca: bool | None = True,
    path_len: int | None = None,
    key_cert_sign: bool = True,
    not_before: datetime.datetime = CA_FROM,
    not_after: datetime.datetime = CA_UNTIL,
) -> Ca:
    key = key or ec.generate_private_key(ec.SECP384R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer.cert.subject if issuer else _name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca, path_len), critical=True)
    builder = builder.add_extension(
        x509.KeyUsage(
            digital_signature=False,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=key_cert_sign,
            crl_sign=True,
            encipher_only=False,
            decipher_only=False,
        ),
        critical=True,
    )
    signer = issuer.key if issuer else key
    return Ca(key, builder.sign(signer, hashes.SHA384()))


def make_ek_cert(
    issuer: Ca,
    ek_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
    *,
    not_before: datetime.datetime = EK_FROM,
    not_after: datetime.datetime = EK_UNTIL,
    extra: x509.ExtensionType | None = None,
    rsa_pss: bool = False,
) -> bytes:
    tpm = x509.Name(
        [
            x509.RelativeDistinguishedName(
                [
                    x509.NameAttribute(x509.ObjectIdentifier("2.23.133.2.1"), "id:4E544300"),
                    x509.NameAttribute(x509.ObjectIdentifier("2.23.133.2.2"), "NPCT75x"),
                    x509.NameAttribute(x509.ObjectIdentifier("2.23.133.2.3"), "id:00070002"),
                ]
            )
        ]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(issuer.cert.subject)
        .public_key(ek_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([x509.DirectoryName(tpm)]), critical=True)
        .add_extension(x509.BasicConstraints(False, None), critical=True)
    )
    if extra is not None:
        builder = builder.add_extension(extra, critical=True)
    pss = padding.PSS(padding.MGF1(hashes.SHA256()), 32) if rsa_pss else None
    cert = builder.sign(issuer.key, hashes.SHA256(), rsa_padding=pss)
    return cert.public_bytes(serialization.Encoding.DER)


def store_of(*cas: Ca) -> TrustStore:
    return TrustStore.from_certificates(parse_certificate(ca.der, "test CA") for ca in cas)


@dataclass(frozen=True)
class Pki:
    root: Ca
    intermediate: Ca
    trust: TrustStore
    rsa_ek: TpmPublic
    ecc_ek: TpmPublic
    rsa_cert: bytes
    ecc_cert: bytes


@pytest.fixture(scope="module")
def pki(keys: Keys) -> Pki:
    root = make_ca("Test TPM Root CA", path_len=1)
    intermediate = make_ca(
        "Test TPM EK Intermediate CA", root, key=rsa.generate_private_key(65537, 2048), path_len=0
    )
    rsa_ek = parse_tpm2b_public(rsa_ek_public(keys))
    ecc_ek = parse_tpm2b_public(ecc_ek_public(keys))
    return Pki(
        root=root,
        intermediate=intermediate,
        trust=store_of(root, intermediate),
        rsa_ek=rsa_ek,
        ecc_ek=ecc_ek,
        rsa_cert=make_ek_cert(intermediate, keys.rsa_ek.public_key()),
        ecc_cert=make_ek_cert(intermediate, keys.ecc_ek.public_key(), rsa_pss=True),
    )


# ------------------------------------------------------------------ EK certificate paths


def test_good_chains_validate_for_rsa_and_ecc_eks(pki: Pki) -> None:
    for cert, ek in ((pki.rsa_cert, pki.rsa_ek), (pki.ecc_cert, pki.ecc_ek)):
        result = validate_ek_certificate(cert, ek, pki.trust, NOW)
        assert result.subjects[1:] == (
            "CN=Test TPM EK Intermediate CA",
            "CN=Test TPM Root CA",
        )
        assert result.not_after == _dt(2034).timestamp()


def test_earliest_not_after_on_the_path_is_reported(keys: Keys) -> None:
    root = make_ca("Short Root", not_after=_dt(2030))
    ek = parse_tpm2b_public(ecc_ek_public(keys))
    cert = make_ek_cert(root, keys.ecc_ek.public_key(), not_after=_dt(2035))
    result = validate_ek_certificate(cert, ek, store_of(root), NOW)
    assert result.not_after == _dt(2030).timestamp()


def test_ek_certificate_from_unknown_ca_is_rejected(pki: Pki, keys: Keys) -> None:
    rogue = make_ca("Rogue TPM CA")
    cert = make_ek_cert(rogue, keys.rsa_ek.public_key())
    with pytest.raises(UntrustedEndorsement, match="no trusted issuer 'CN=Rogue TPM CA'"):
        validate_ek_certificate(cert, pki.rsa_ek, pki.trust, NOW)


def test_ek_certificate_signed_by_impostor_with_trusted_name_is_rejected(
    pki: Pki, keys: Keys
) -> None:
    impostor = make_ca("Test TPM EK Intermediate CA")  # same name, its own key
    cert = make_ek_cert(impostor, keys.rsa_ek.public_key())
    with pytest.raises(UntrustedEndorsement, match="does not verify"):
        validate_ek_certificate(cert, pki.rsa_ek, pki.trust, NOW)


def test_expired_ek_certificate_is_rejected(pki: Pki) -> None:
    after = _dt(2034, 2).timestamp()
    with pytest.raises(UntrustedEndorsement, match="expired at 2034-01-01"):
        validate_ek_certificate(pki.rsa_cert, pki.rsa_ek, pki.trust, after)


def test_not_yet_valid_ek_certificate_is_rejected(pki: Pki) -> None:
    before = _dt(2023, 6).timestamp()
    with pytest.raises(UntrustedEndorsement, match="not valid before 2024-01-01"):
        validate_ek_certificate(pki.rsa_cert, pki.rsa_ek, pki.trust, before)


def test_expired_intermediate_is_rejected(keys: Keys) -> None:
    root = make_ca("Root")
    old = make_ca("Old Intermediate", root, not_after=_dt(2025))
    cert = make_ek_cert(old, keys.rsa_ek.public_key(), not_before=_dt(2022))
    ek = parse_tpm2b_public(rsa_ek_public(keys))
    with pytest.raises(UntrustedEndorsement, match="'CN=Old Intermediate' expired"):
        validate_ek_certificate(cert, ek, store_of(root, old), NOW)


def test_ek_certificate_whose_key_differs_from_ek_is_rejected(pki: Pki) -> None:
    with pytest.raises(UntrustedEndorsement, match="not the EK public key"):
        validate_ek_certificate(pki.rsa_cert, pki.ecc_ek, pki.trust, NOW)
    with pytest.raises(UntrustedEndorsement, match="not the EK public key"):
        validate_ek_certificate(pki.ecc_cert, pki.rsa_ek, pki.trust, NOW)


def test_missing_intermediate_is_rejected(pki: Pki) -> None:
    root_only = store_of(pki.root)
    with pytest.raises(UntrustedEndorsement, match="missing intermediate"):
        validate_ek_certificate(pki.rsa_cert, pki.rsa_ek, root_only, NOW)
    result = validate_ek_certificate(
        pki.rsa_cert, pki.rsa_ek, root_only, NOW, intermediates=[pki.intermediate.der]
    )
    assert result.subjects[-1] == "CN=Test TPM Root CA"


def test_intermediate_without_ca_basic_constraints_is_rejected(keys: Keys) -> None:
    ek = parse_tpm2b_public(rsa_ek_public(keys))
    root = make_ca("Root")
    for ca in (False, None):
        not_ca = make_ca("Not A CA", root, ca=ca)
        cert = make_ek_cert(not_ca, keys.rsa_ek.public_key())
        with pytest.raises(UntrustedEndorsement, match="'CN=Not A CA' is not a CA"):
            validate_ek_certificate(cert, ek, store_of(root, not_ca), NOW)
        with pytest.raises(UntrustedEndorsement, match="is not a CA"):
            validate_ek_certificate(cert, ek, store_of(root), NOW, intermediates=[not_ca.der])


def test_intermediate_without_key_cert_sign_is_rejected(keys: Keys) -> None:
    ek = parse_tpm2b_public(rsa_ek_public(keys))
    root = make_ca("Root")
    no_sign = make_ca("No KeyCertSign", root, key_cert_sign=False)
    cert = make_ek_cert(no_sign, keys.rsa_ek.public_key())
    with pytest.raises(UntrustedEndorsement, match="keyCertSign"):
        validate_ek_certificate(cert, ek, store_of(root, no_sign), NOW)


def test_ca_below_a_path_len_zero_intermediate_is_rejected(keys: Keys) -> None:
    ek = parse_tpm2b_public(rsa_ek_public(keys))
    root = make_ca("Root")
    vendor = make_ca("Vendor CA", root, path_len=0)
    sneaky = make_ca("Sub CA", vendor)
    cert = make_ek_cert(sneaky, keys.rsa_ek.public_key())
    with pytest.raises(UntrustedEndorsement, match="allows 0 CAs below it"):
        validate_ek_certificate(cert, ek, store_of(root, vendor, sneaky), NOW)


def test_unhandled_critical_extension_is_rejected(pki: Pki, keys: Keys) -> None:
    odd = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00")
    cert = make_ek_cert(pki.intermediate, keys.rsa_ek.public_key(), extra=odd)
    with pytest.raises(
        UntrustedEndorsement, match=r"critical extension 1\.3\.6\.1\.4\.1\.99999\.1"
    ):
        validate_ek_certificate(cert, pki.rsa_ek, pki.trust, NOW)


def test_cross_signed_cas_without_anchor_do_not_loop(keys: Keys) -> None:
    key_a, key_b = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    seed_a = make_ca("CA A", key=key_a)
    seed_b = make_ca("CA B", key=key_b)
    a_by_b = make_ca("CA A", seed_b, key=key_a)
    b_by_a = make_ca("CA B", seed_a, key=key_b)
    store = TrustStore.from_certificates([parse_certificate(c.der, "x") for c in (a_by_b, b_by_a)])
    assert store.anchors == ()
    cert = make_ek_cert(a_by_b, keys.rsa_ek.public_key())
    ek = parse_tpm2b_public(rsa_ek_public(keys))
    with pytest.raises(UntrustedEndorsement):
        validate_ek_certificate(cert, ek, store, NOW)


@pytest.mark.parametrize(
    "garbage",
    [b"", b"\x30\x00", b"\x30\x82\xff\xff" + b"\x00" * 10, os.urandom(300), b"not a cert"],
)
def test_garbage_ek_certificate_is_rejected_as_unparseable(pki: Pki, garbage: bytes) -> None:
    with pytest.raises(UntrustedEndorsement, match="cannot parse the EK certificate"):
        validate_ek_certificate(garbage, pki.rsa_ek, pki.trust, NOW)


def test_truncated_ek_certificate_is_rejected_as_unparseable(pki: Pki) -> None:
    for cut in (1, 10, len(pki.rsa_cert) // 2, len(pki.rsa_cert) - 1):
        with pytest.raises(UntrustedEndorsement, match="cannot parse"):
            validate_ek_certificate(pki.rsa_cert[:cut], pki.rsa_ek, pki.trust, NOW)


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _resign(cert_der: bytes, mutate: Callable[[bytes], bytes], key: CaKey) -> bytes:
    """The certificate with tbsCertificate ``mutate(tbs)``, signed again by ``key`` with the
    original's hash (ECDSA or PKCS#1 v1.5)."""
    cert = der.top(cert_der)
    _, algorithm, _ = der.children(cert_der, cert)
    tbs = mutate(der.split_certificate(cert_der).tbs)
    hash_alg = x509.load_der_x509_certificate(cert_der).signature_hash_algorithm
    assert hash_alg is not None
    if isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(tbs, padding.PKCS1v15(), hash_alg)
    else:
        signature = key.sign(tbs, ec.ECDSA(hash_alg))
    bits = b"\x03" + _der_len(len(signature) + 1) + b"\x00" + signature
    body = tbs + cert_der[algorithm.start : algorithm.end] + bits
    return b"\x30" + _der_len(len(body)) + body


def _swap_first_two(data: bytes, rdn: der.Element) -> bytes:
    first, second = der.children(data, rdn)[:2]
    return (
        data[: first.start]
        + data[second.start : second.end]
        + data[first.start : first.end]
        + data[second.end :]
    )


def _unsort_name(field: int) -> Callable[[bytes], bytes]:
    """Swap the first two attributes of the first multi-valued RDN of issuer (3) or subject (5)."""

    def mutate(tbs: bytes) -> bytes:
        fields = der.children(tbs, der.top(tbs))
        name = fields[field]
        for rdn in der.children(tbs, name):
            if len(der.children(tbs, rdn)) > 1:
                return _swap_first_two(tbs, rdn)
        raise AssertionError("no multi-valued RDN")

    return mutate


def test_ek_certificate_with_negative_serial_still_validates(pki: Pki) -> None:
    assert isinstance(pki.intermediate.key, rsa.RSAPrivateKey)

    def negative(tbs: bytes) -> bytes:
        serial = der.children(tbs, der.top(tbs))[1]
        assert serial.tag == der.TAG_INTEGER
        return tbs[: serial.body] + bytes([tbs[serial.body] | 0x80]) + tbs[serial.body + 1 :]

    cert = _resign(pki.rsa_cert, negative, pki.intermediate.key)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # read on purpose: no deprecation noise for operators
        result = validate_ek_certificate(cert, pki.rsa_ek, pki.trust, NOW)
    assert result.subjects[-1] == "CN=Test TPM Root CA"


def test_unsorted_multi_valued_rdns_like_nuvotons_still_validate(keys: Keys) -> None:
    """Nuvoton's CAs put CN, O and C in one RDN, unsorted: not DER, yet signed like that."""
    root = make_ca("Root")
    vendor_name = x509.Name(
        [
            x509.RelativeDistinguishedName(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, "Vendor TPM CA 2110"),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Vendor Corporation"),
                    x509.NameAttribute(NameOID.COUNTRY_NAME, "TW"),
                ]
            )
        ]
    )
    vendor_key = ec.generate_private_key(ec.SECP384R1())
    sorted_vendor = Ca(
        vendor_key,
        x509.CertificateBuilder()
        .subject_name(vendor_name)
        .issuer_name(root.cert.subject)
        .public_key(vendor_key.public_key())
        .serial_number(7)
        .not_valid_before(CA_FROM)
        .not_valid_after(CA_UNTIL)
        .add_extension(x509.BasicConstraints(True, 0), critical=True)
        .sign(root.key, hashes.SHA384()),
    )
    vendor_der = _resign(sorted_vendor.der, _unsort_name(5), root.key)
    ek_der = _resign(
        make_ek_cert(sorted_vendor, keys.ecc_ek.public_key()), _unsort_name(3), vendor_key
    )
    for raw in (vendor_der, ek_der):
        assert der.canonical(raw) != raw
        with pytest.raises(ValueError):
            x509.load_der_x509_certificate(raw)  # what a strict parser does
    ek = parse_tpm2b_public(ecc_ek_public(keys))
    trust = TrustStore.from_certificates(
        [parse_certificate(root.der, "root"), parse_certificate(vendor_der, "vendor")]
    )
    result = validate_ek_certificate(ek_der, ek, trust, NOW)
    assert result.subjects[1:] == ("C=TW+CN=Vendor TPM CA 2110+O=Vendor Corporation", "CN=Root")
    tampered = bytearray(ek_der)
    tampered[ek_der.index(b"NPCT75x")] ^= 0x01
    with pytest.raises(UntrustedEndorsement, match="does not verify"):
        validate_ek_certificate(bytes(tampered), ek, trust, NOW)


def test_ek_certificate_labelled_rsaes_oaep_matches_the_ek(pki: Pki) -> None:
    assert isinstance(pki.intermediate.key, rsa.RSAPrivateKey)
    plain = bytes.fromhex("06092a864886f70d010101")
    oaep = bytes.fromhex("06092a864886f70d010107")

    def relabel(tbs: bytes) -> bytes:
        assert tbs.count(plain) == 1
        return tbs.replace(plain, oaep)

    cert = _resign(pki.rsa_cert, relabel, pki.intermediate.key)
    validate_ek_certificate(cert, pki.rsa_ek, pki.trust, NOW)
    with pytest.raises(UntrustedEndorsement, match="public key"):
        validate_ek_certificate(cert, pki.ecc_ek, pki.trust, NOW)


# ------------------------------------------------------------------ trust store and allowlist


def test_trust_store_loads_pem_bundles_and_der(pki: Pki, tmp_path: Path) -> None:
    pem = pki.root.cert.public_bytes(serialization.Encoding.PEM)
    (tmp_path / "bundle.pem").write_bytes(b"comment\n" + pem + pem)
    (tmp_path / "intermediate.der").write_bytes(pki.intermediate.der)
    (tmp_path / "README.txt").write_text("ignored")
    store = TrustStore.load(tmp_path)
    assert [c.subject for c in store.anchors] == ["CN=Test TPM Root CA"]
    assert [c.subject for c in store.intermediates] == ["CN=Test TPM EK Intermediate CA"]
    validate_ek_certificate(pki.ecc_cert, pki.ecc_ek, store, NOW)
    assert TrustStore.empty().anchors == ()


def test_trust_store_refuses_a_garbage_file(tmp_path: Path) -> None:
    (tmp_path / "broken.pem").write_bytes(
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"
    )
    with pytest.raises(TrustConfigError, match=r"broken\.pem"):
        TrustStore.load(tmp_path)
    with pytest.raises(TrustConfigError, match="not a directory"):
        TrustStore.load(tmp_path / "missing")


def test_empty_trust_store_trusts_no_certificate(pki: Pki) -> None:
    with pytest.raises(UntrustedEndorsement, match="no trusted issuer"):
        validate_ek_certificate(pki.rsa_cert, pki.rsa_ek, TrustStore.empty(), NOW)


def test_allowlisted_ek_without_certificate_is_found(pki: Pki, tmp_path: Path) -> None:
    spki = pki.rsa_ek.public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    listed = hashlib.sha256(spki).hexdigest()
    path = tmp_path / "allow.txt"
    path.write_text(f"# lab TPMs\n\n{listed.upper()}  # rack 4\n")
    allow = Allowlist.load(path)
    assert allow.contains(pki.rsa_ek)
    assert not allow.contains(pki.ecc_ek)
    assert not Allowlist.empty().contains(pki.rsa_ek)
    assert ek_fingerprint(pki.rsa_ek) == listed


def test_malformed_allowlist_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "allow.txt"
    path.write_text("# ok\n" + "ab" * 32 + "\nsha1:deadbeef\n")
    with pytest.raises(TrustConfigError, match=r"allow\.txt:3"):
        Allowlist.load(path)


# ------------------------------------------------------------------ identity and credential


def test_device_id_depends_on_the_ek_key_only(keys: Keys, pki: Pki) -> None:
    other_attrs = parse_tpm2b_public(
        rsa_public(
            keys.rsa_ek.public_key(), EK_ATTRS | USER_WITH_AUTH, scheme=(ALG_NULL,), sym=AES128_CFB
        )
    )
    assert device_id_for(other_attrs) == device_id_for(pki.rsa_ek)
    assert device_id_for(pki.rsa_ek) != device_id_for(pki.ecc_ek)
    assert device_id_for(pki.rsa_ek) == "dev-" + ek_fingerprint(pki.rsa_ek)
    assert len(device_id_for(pki.rsa_ek)) == 68


def test_new_secret_is_fresh() -> None:
    secrets = {new_secret() for _ in range(50)}
    assert len(secrets) == 50 and all(len(s) == 32 for s in secrets)


def test_wrong_activation_proof_is_rejected() -> None:
    secret = new_secret()
    check_proof(secret, secret)
    for wrong in (b"", secret[:-1], secret + b"\x00", bytes(32), new_secret()):
        with pytest.raises(ActivationFailed):
            check_proof(secret, wrong)


def test_credential_layout_matches_tpm2_tools_vector() -> None:
    """keylime's mkcred.out (tpm2-tools: magic, version, ID_OBJECT, ENCRYPTED_SECRET)."""
    recorded = (KEYLIME / "mkcred.out").read_bytes()
    assert recorded[:8] == bytes.fromhex("badcc0de00000001")
    ek = parse_tpm2b_public((KEYLIME / "ek.pub").read_bytes())
    ak_name = (KEYLIME / "ak.name").read_bytes()
    blob, encrypted = make_credential(ek, ak_name, (KEYLIME / "actcred.out").read_bytes())
    assert recorded[8:][:2] == blob[:2] and len(recorded) == 8 + len(blob) + len(encrypted)
    assert recorded[8 + len(blob) : 8 + len(blob) + 2] == encrypted[:2] == u16(256)


def test_credential_for_rsa_ek_decrypts_with_the_ek_private_key(keys: Keys, pki: Pki) -> None:
    """The seed is RSA-OAEP(SHA-256, label "IDENTITY\\0") to the EK, and only to it."""
    _, encrypted = make_credential(pki.rsa_ek, b"\x00\x0b" + bytes(32), new_secret())
    oaep = padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), b"IDENTITY\x00")
    assert len(keys.rsa_ek.decrypt(encrypted[2:], oaep)) == 32


def test_credential_is_never_the_same_twice(pki: Pki) -> None:
    secret = new_secret()
    name = b"\x00\x0b" + bytes(32)
    for ek in (pki.rsa_ek, pki.ecc_ek):
        first, second = make_credential(ek, name, secret), make_credential(ek, name, secret)
        assert first[0] != second[0] and first[1] != second[1]


# ------------------------------------------------------------------ against a real TPM


@dataclass
class Tpm:
    esapi: Any
    port: int


def _free_port_pair() -> int:
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port: int = first.getsockname()[1]
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port pair")


@contextlib.contextmanager
def _running_swtpm(state: Path) -> Iterator[Tpm]:
    """A swtpm on ``state`` (absolute), on free ports, stopped on exit whatever happens."""
    port = _free_port_pair()
    proc = subprocess.Popen(
        [
            "swtpm",
            "socket",
            "--tpmstate",
            f"dir={state.resolve()}",
            "--tpm2",
            "--server",
            f"type=tcp,port={port}",
            "--ctrl",
            f"type=tcp,port={port + 1}",
            "--flags",
            "not-need-init,startup-clear",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    esapi = None
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("swtpm did not start") from None
                time.sleep(0.05)
        esapi = ESAPI(f"swtpm:host=127.0.0.1,port={port}")
        yield Tpm(esapi, port)
    finally:
        if esapi is not None:
            esapi.close()
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def tpm() -> Iterator[Tpm]:
    if shutil.which("swtpm") is None:
        pytest.skip("swtpm is not installed")
    state = Path(tempfile.mkdtemp(prefix="enroll-core-swtpm-")).resolve()
    try:
        with _running_swtpm(state) as running:
            yield running
    finally:
        shutil.rmtree(state, ignore_errors=True)


@dataclass(frozen=True)
class Provisioned:
    tpm: Tpm
    trust_dir: Path  # the test CA's root and intermediate certificates


@pytest.fixture(scope="module")
def provisioned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provisioned]:
    """A swtpm manufactured by swtpm_setup with EK certificates from a CA made for this test."""
    if shutil.which("swtpm_setup") is None or shutil.which("swtpm_localca") is None:
        pytest.skip("swtpm_setup/swtpm_localca are not installed")
    base = tmp_path_factory.mktemp("swtpm-setup").resolve()
    ca, state, trust = base / "ca", base / "state", base / "trust"
    for folder in (ca, state, trust):
        folder.mkdir()
    (ca / "localca.conf").write_text(
        f"statedir = {ca}\nsigningkey = {ca}/signkey.pem\n"
        f"issuercert = {ca}/issuercert.pem\ncertserial = {ca}/certserial\n"
    )
    (ca / "setup.conf").write_text(
        f"create_certs_tool = {shutil.which('swtpm_localca')}\n"
        f"create_certs_tool_config = {ca}/localca.conf\n"
        "create_certs_tool_options = /dev/null\n"
    )
    subprocess.run(
        [
            "swtpm_setup",
            "--tpm2",
            "--tpmstate",
            str(state),
            "--create-ek-cert",
            "--config",
            str(ca / "setup.conf"),
            "--overwrite",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    for name in ("issuercert.pem", "swtpm-localca-rootca-cert.pem"):
        shutil.copy(ca / name, trust / name)
    with _running_swtpm(state) as running:
        yield Provisioned(running, trust)


def _ek_template(kind: str) -> Any:
    def no_nv(index: int) -> bytes:
        raise NoSuchIndex(index)

    return create_ek_template(kind, no_nv)[1]


def _activate(
    tpm: Tpm, ek_handle: Any, ak_handle: Any, blob: bytes, encrypted: bytes, policy: bool
) -> bytes:
    """ActivateCredential; the standard EKs need PolicySecret(TPM_RH_ENDORSEMENT)."""
    id_object, _ = TPM2B_ID_OBJECT.unmarshal(blob)
    secret, _ = TPM2B_ENCRYPTED_SECRET.unmarshal(encrypted)
    if not policy:
        return bytes(tpm.esapi.activate_credential(ak_handle, ek_handle, id_object, secret))
    session = tpm.esapi.start_auth_session(
        ESYS_TR.NONE,
        ESYS_TR.NONE,
        TPM2_SE.POLICY,
        TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL),
        TPM2_ALG.SHA256,
    )
    try:
        tpm.esapi.policy_secret(ESYS_TR.ENDORSEMENT, session)
        return bytes(
            tpm.esapi.activate_credential(ak_handle, ek_handle, id_object, secret, session2=session)
        )
    finally:
        tpm.esapi.flush_context(session)


_EK_ATTRIBUTES = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|decrypt"


def _ek_public_template(kind: str) -> Any:
    """A standard EK template (L-1, L-2), or "<alg>:<sym>/<nameAlg>" for a password-auth EK."""
    if kind.startswith("EK-"):
        return _ek_template(kind)
    spec, name_alg = kind.split("/")
    return TPM2B_PUBLIC.parse(spec, nameAlg=name_alg, objectAttributes=_EK_ATTRIBUTES)


@pytest.mark.swtpm
@pytest.mark.parametrize(
    "kind",
    [
        "EK-RSA2048",
        "EK-ECC256",
        "ecc384:aes256cfb/sha384",
        "rsa3072:aes256cfb/sha384",
        "ecc256:aes128cfb/sha512",
    ],
)
def test_tpm_activates_our_credential(tpm: Tpm, kind: str) -> None:
    ek_handle, ek_public, *_ = tpm.esapi.create_primary(
        None, _ek_public_template(kind), ESYS_TR.ENDORSEMENT
    )
    policy = kind.startswith("EK-")
    ak_template = TPM2B_PUBLIC.parse(
        "ecc256:ecdsa-sha256:null",
        objectAttributes="fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign",
    )
    ak_handle, ak_public, *_ = tpm.esapi.create_primary(None, ak_template, ESYS_TR.OWNER)
    try:
        ek = parse_tpm2b_public(ek_public.marshal())
        ak = parse_tpm2b_public(ak_public.marshal())
        check_ek(ek)
        check_ak(ak)
        assert ek.name == bytes(tpm.esapi.read_public(ek_handle)[1])
        assert ak.name == bytes(tpm.esapi.read_public(ak_handle)[1])

        secret = new_secret()
        blob, encrypted = make_credential(ek, ak.name, secret)
        recovered = _activate(tpm, ek_handle, ak_handle, blob, encrypted, policy)
        assert recovered == secret
        check_proof(secret, recovered)

        # a credential made out to another AK's name does not activate with this AK
        other = bytearray(ak.name)
        other[-1] ^= 1
        blob, encrypted = make_credential(ek, bytes(other), secret)
        with pytest.raises(TSS2_Exception):
            _activate(tpm, ek_handle, ak_handle, blob, encrypted, policy)
    finally:
        tpm.esapi.flush_context(ak_handle)
        tpm.esapi.flush_context(ek_handle)


@pytest.mark.swtpm
def test_tpm_rejects_an_unrestricted_key_as_ak(tpm: Tpm) -> None:
    """A key the TPM made without 'restricted' is parsed faithfully and refused."""
    template = TPM2B_PUBLIC.parse(
        "ecc256:ecdsa-sha256:null",
        objectAttributes="fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign",
    )
    handle, public, *_ = tpm.esapi.create_primary(None, template, ESYS_TR.OWNER)
    try:
        key = parse_tpm2b_public(public.marshal())
        assert key.name == bytes(tpm.esapi.read_public(handle)[1])
        with pytest.raises(UnacceptableKey, match="restricted"):
            check_ak(key)
    finally:
        tpm.esapi.flush_context(handle)


_FUZZ_ROOT = make_ca("Fuzz Root", key=rsa.generate_private_key(65537, 2048))
_FUZZ_EK = ec.generate_private_key(ec.SECP256R1())
_FUZZ_CERT = make_ek_cert(_FUZZ_ROOT, _FUZZ_EK.public_key())


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(_FUZZ_CERT) - 1), st.integers(0, 255)), max_size=3))
def test_mutated_ek_certificate_raises_only_untrusted_endorsement(
    flips: list[tuple[int, int]],
) -> None:
    cert = bytearray(_FUZZ_CERT)
    for pos, value in flips:
        cert[pos] = value
    ek = parse_tpm2b_public(
        ecc_public(_FUZZ_EK.public_key(), EK_ATTRS, scheme=(ALG_NULL,), sym=AES128_CFB)
    )
    trust = store_of(_FUZZ_ROOT)
    try:
        validate_ek_certificate(bytes(cert), ek, trust, NOW)
    except UntrustedEndorsement:
        return
    # accepted: then the signed bytes are the ones the CA signed
    assert der.split_certificate(bytes(cert)).tbs == der.split_certificate(_FUZZ_CERT).tbs


@pytest.mark.swtpm
def test_swtpm_setup_ek_certificates_chain_to_their_test_ca(provisioned: Provisioned) -> None:
    esapi = provisioned.tpm.esapi
    trust = TrustStore.load(provisioned.trust_dir)
    eks: list[tuple[bytes, TpmPublic]] = []
    for kind in ("EK-RSA2048", "EK-HIGH-ECC384"):
        cert, template = create_ek_template(kind, NVReadEK(esapi))
        handle, public, *_ = esapi.create_primary(None, template, ESYS_TR.ENDORSEMENT)
        esapi.flush_context(handle)
        ek = parse_tpm2b_public(public.marshal())
        check_ek(ek)
        result = validate_ek_certificate(bytes(cert), ek, trust, time.time())
        assert result.subjects[1:] == ("CN=swtpm-localca", "CN=swtpm-localca-rootca")
        eks.append((bytes(cert), ek))
    (rsa_cert, _), (ecc_cert, ecc_ek) = eks
    with pytest.raises(UntrustedEndorsement, match="not the EK public key"):
        validate_ek_certificate(rsa_cert, ecc_ek, trust, time.time())
    root_only = TrustStore.from_certificates(trust.anchors)
    with pytest.raises(UntrustedEndorsement, match="missing intermediate"):
        validate_ek_certificate(ecc_cert, ecc_ek, root_only, time.time())


# ------------------------------------------------------------------ refusal log lines

_FINGERPRINT = re.compile(r"EK fingerprint ([0-9a-f]{64}); ")


class _ChallengeSpy(SqliteStore):
    """A real store that also keeps every challenge it was given (to answer it in the test)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.challenges: list[EnrollmentChallenge] = []

    def put_enrollment_challenge(self, challenge: EnrollmentChallenge) -> None:
        self.challenges.append(challenge)
        super().put_enrollment_challenge(challenge)


@pytest.fixture
def spy_store(tmp_path: Path) -> Iterator[_ChallengeSpy]:
    store = _ChallengeSpy(tmp_path / "verifier.db")
    yield store
    store.close()


def _enrollment(store: Store, trust: TrustStore, allowlist: Allowlist) -> Enrollment:
    return Enrollment(store, trust, allowlist, clock=lambda: NOW, policy=EnrollmentPolicy.OPEN)


def _refusal_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "verifier.enrollment.flow"
        and r.levelno == logging.WARNING
        and r.getMessage().startswith("enrollment refused")
    ]


def _openssl_serial(cert_der: bytes) -> str:
    """The serial as ``openssl x509 -noout -serial`` prints it (positive serials)."""
    serial = x509.load_der_x509_certificate(cert_der).serial_number
    return serial.to_bytes((serial.bit_length() + 7) // 8, "big").hex().upper()


def test_unlisted_ek_refusal_logs_the_fingerprint_that_allowlists_it(
    keys: Keys, spy_store: _ChallengeSpy, caplog: pytest.LogCaptureFixture
) -> None:
    ek_public, ak_public = ecc_ek_public(keys), ecc_public(keys.ak.public_key())
    refusing = _enrollment(spy_store, TrustStore.empty(), Allowlist.empty())
    with caplog.at_level(logging.WARNING), pytest.raises(UntrustedEndorsement):
        refusing.start(b"", ek_public, ak_public, {})
    (line,) = _refusal_lines(caplog)
    assert "(UntrustedEndorsement)" in line and line.endswith("; no EK certificate")
    match = _FINGERPRINT.search(line)
    assert match is not None
    # The operator pastes the logged value into the allowlist file as it is: now it enrolls.
    allowlist = Allowlist.parse(f"# gw-17, seen refused\n{match.group(1)}\n", "allowlist")
    started = _enrollment(spy_store, TrustStore.empty(), allowlist).start(
        b"", ek_public, ak_public, {}
    )
    assert started.device_id == "dev-" + match.group(1)


def test_ek_certificate_from_an_untrusted_ca_logs_its_issuer_and_serial(
    keys: Keys, pki: Pki, spy_store: _ChallengeSpy, caplog: pytest.LogCaptureFixture
) -> None:
    other_root = store_of(make_ca("Some Other TPM Root CA"))
    with caplog.at_level(logging.WARNING), pytest.raises(UntrustedEndorsement):
        _enrollment(spy_store, other_root, Allowlist.empty()).start(
            pki.rsa_cert, rsa_ek_public(keys), ecc_public(keys.ak.public_key()), {}
        )
    (line,) = _refusal_lines(caplog)
    assert f"EK fingerprint {ek_fingerprint(pki.rsa_ek)}; " in line
    assert line.endswith(
        f"EK certificate issuer 'CN=Test TPM EK Intermediate CA' "
        f"serial {_openssl_serial(pki.rsa_cert)}"
    )
    assert spy_store.challenges == []


def test_unacceptable_ak_refusal_logs_the_ek_fingerprint(
    keys: Keys, pki: Pki, spy_store: _ChallengeSpy, caplog: pytest.LogCaptureFixture
) -> None:
    unrestricted = ecc_public(keys.ak.public_key(), AK_ATTRS & ~RESTRICTED)
    with caplog.at_level(logging.WARNING), pytest.raises(UnacceptableKey):
        _enrollment(spy_store, pki.trust, Allowlist.empty()).start(
            pki.ecc_cert, ecc_ek_public(keys), unrestricted, {}
        )
    (line,) = _refusal_lines(caplog)
    assert "(UnacceptableKey)" in line and "restricted" in line
    assert f"EK fingerprint {ek_fingerprint(pki.ecc_ek)}; " in line
    assert "EK certificate issuer 'CN=Test TPM EK Intermediate CA' serial " in line


def test_ek_that_does_not_parse_is_logged_without_a_fingerprint(
    keys: Keys, spy_store: _ChallengeSpy, caplog: pytest.LogCaptureFixture
) -> None:
    odd_curve = ecc_public(keys.ecc_ek.public_key(), EK_ATTRS, curve=0x0020)
    not_a_certificate = b"\x30\x03garbage"
    with caplog.at_level(logging.WARNING), pytest.raises(UnacceptableKey, match="curve"):
        _enrollment(spy_store, TrustStore.empty(), Allowlist.empty()).start(
            not_a_certificate, odd_curve, ecc_public(keys.ak.public_key()), {}
        )
    (line,) = _refusal_lines(caplog)
    assert "EK fingerprint none (the EK public key did not parse); " in line
    assert line.endswith(f"EK certificate unreadable ({len(not_a_certificate)} bytes)")


def test_new_ak_for_an_enrolled_ek_logs_fingerprint_issuer_and_serial(
    keys: Keys, pki: Pki, spy_store: _ChallengeSpy, caplog: pytest.LogCaptureFixture
) -> None:
    enrollment = _enrollment(spy_store, pki.trust, Allowlist.empty())
    first = enrollment.start(
        pki.rsa_cert, rsa_ek_public(keys), ecc_public(keys.ak.public_key()), {}
    )
    enrollment.finish(first.challenge_id, spy_store.challenges[-1].secret)
    second = enrollment.start(
        pki.rsa_cert, rsa_ek_public(keys), ecc_public(keys.other.public_key()), {}
    )
    with caplog.at_level(logging.WARNING), pytest.raises(ApprovalRequired):
        enrollment.finish(second.challenge_id, spy_store.challenges[-1].secret)
    (line,) = _refusal_lines(caplog)
    assert "(ApprovalRequired)" in line and f"approve-ak {first.device_id} " in line
    assert f"EK fingerprint {first.device_id.removeprefix('dev-')}; " in line
    assert line.endswith(
        f"EK certificate issuer 'CN=Test TPM EK Intermediate CA' "
        f"serial {_openssl_serial(pki.rsa_cert)}"
    )


def test_ek_certificate_issuer_with_a_newline_cannot_forge_a_log_line(
    keys: Keys, spy_store: _ChallengeSpy, caplog: pytest.LogCaptureFixture
) -> None:
    forger = make_ca("Evil CA\nenrollment refused (UntrustedEndorsement): all is well")
    cert = make_ek_cert(forger, keys.ecc_ek.public_key())
    with caplog.at_level(logging.WARNING), pytest.raises(UntrustedEndorsement):
        _enrollment(spy_store, TrustStore.empty(), Allowlist.empty()).start(
            cert, ecc_ek_public(keys), ecc_public(keys.ak.public_key()), {}
        )
    (line,) = _refusal_lines(caplog)
    assert "\n" not in line and "\r" not in line
    assert "Evil CA\\nenrollment refused" in line
