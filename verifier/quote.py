"""TPM2_Quote checks: the signature, the attestation structure, the nonce and the PCR binding.

Order of checks (``check_quote``), each raising on failure:
1. The TPMT_SIGNATURE parses, uses a scheme the AK can produce (ECDSA for an ECC AK,
   RSASSA/RSAPSS for an RSA AK) with the AK's own hash, and verifies over the exact
   TPMS_ATTEST bytes with the enrolled AK (``SignatureInvalid``).
2. TPMS_ATTEST parses strictly; magic is TPM_GENERATED (``SignatureInvalid``: a structure
   the TPM did not generate) and type is ATTEST_QUOTE (``MalformedEvidence``).
3. extraData equals the nonce the verifier issued (constant-time; ``NonceMismatch``).
4. The signed pcrSelect is exactly the requested bank and PCRs (``ReplayMismatch``).
5. The PCR values sent are exactly that selection, of the bank's digest size, and hash (with
   the signing hash, in ascending PCR order as the TPM does) to pcrDigest (``ReplayMismatch``).
   Values are matched to indices by the signed selection, never by the agent's labels alone.

The result is a ``CheckedQuote`` of plain values: the PCRs it proves, the clock info and the
firmware version. Nothing here has a clock, a store or gRPC.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from verifier import errors
from verifier.marshal import (
    ALG_ECDSA,
    ALG_RSAPSS,
    ALG_RSASSA,
    DIGEST_SIZES,
    HASH_ALGS,
    Reader,
)

TPM_GENERATED = 0xFF544347
ST_ATTEST_QUOTE = 0x8018

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


@dataclass(frozen=True)
class Signature:
    scheme: int  # TPM_ALG_ECDSA, TPM_ALG_RSASSA or TPM_ALG_RSAPSS
    hash_name: str
    value: bytes  # DER ECDSA signature or the raw RSA signature


@dataclass(frozen=True)
class ClockInfo:
    clock: int  # milliseconds the TPM has been powered, persisted
    reset_count: int
    restart_count: int
    safe: bool


@dataclass(frozen=True)
class Attest:
    qualified_signer: bytes
    extra_data: bytes
    clock_info: ClockInfo
    firmware_version: int
    selections: tuple[tuple[str, tuple[int, ...]], ...]  # (bank, ascending PCRs)
    pcr_digest: bytes


@dataclass(frozen=True)
class CheckedQuote:
    """A quote that passed every check: what it proves."""

    bank: str
    pcrs: dict[int, bytes]
    clock_info: ClockInfo
    firmware_version: int


def parse_signature(data: bytes) -> Signature:
    r = Reader(data, "TPMT_SIGNATURE")
    scheme = r.u16("sigAlg")
    hash_alg = r.u16("hash")
    hash_name = HASH_ALGS.get(hash_alg)
    if hash_name is None:
        raise errors.SignatureInvalid(f"signature hash algorithm 0x{hash_alg:04x} is not supported")
    if scheme == ALG_ECDSA:
        sig_r = r.tpm2b("signatureR", 66)
        sig_s = r.tpm2b("signatureS", 66)
        value = encode_dss_signature(int.from_bytes(sig_r, "big"), int.from_bytes(sig_s, "big"))
    elif scheme in (ALG_RSASSA, ALG_RSAPSS):
        value = r.tpm2b("sig", 512)
    else:
        raise errors.SignatureInvalid(f"signature scheme 0x{scheme:04x} is not supported")
    r.finish()
    return Signature(scheme, hash_name, value)


def verify_signature(
    attest: bytes, signature: Signature, public_key: object, key_hash: str | None
) -> None:
    """Raise ``SignatureInvalid`` unless ``signature`` is the AK's over ``attest``."""
    if key_hash is not None and signature.hash_name != key_hash:
        raise errors.SignatureInvalid(
            f"signed with {signature.hash_name}, but the AK's scheme uses {key_hash}"
        )
    algorithm = _HASHES[signature.hash_name]()
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey) and signature.scheme == ALG_ECDSA:
            public_key.verify(signature.value, attest, ec.ECDSA(algorithm))
        elif isinstance(public_key, rsa.RSAPublicKey) and signature.scheme == ALG_RSASSA:
            public_key.verify(signature.value, attest, padding.PKCS1v15(), algorithm)
        elif isinstance(public_key, rsa.RSAPublicKey) and signature.scheme == ALG_RSAPSS:
            pss = padding.PSS(mgf=padding.MGF1(algorithm), salt_length=padding.PSS.AUTO)
            public_key.verify(signature.value, attest, pss, algorithm)
        else:
            raise errors.SignatureInvalid("the signature scheme does not match the AK's key type")
    except InvalidSignature as exc:
        raise errors.SignatureInvalid("the quote signature does not verify with the AK") from exc


def parse_attest(data: bytes) -> Attest:
    r = Reader(data, "TPMS_ATTEST")
    if r.u32("magic") != TPM_GENERATED:
        raise errors.SignatureInvalid("magic is not TPM_GENERATED: the TPM did not make this")
    if r.u16("type") != ST_ATTEST_QUOTE:
        raise errors.MalformedEvidence("the attestation structure is not a quote")
    signer = r.tpm2b("qualifiedSigner", 68)
    extra = r.tpm2b("extraData", 64)
    clock = ClockInfo(r.u64("clock"), r.u32("resetCount"), r.u32("restartCount"), False)
    safe = r.u8("safe")
    if safe > 1:
        raise errors.MalformedEvidence(f"clockInfo.safe is {safe}, not a TPMI_YES_NO")
    clock = ClockInfo(clock.clock, clock.reset_count, clock.restart_count, safe == 1)
    firmware = r.u64("firmwareVersion")
    selections = _pcr_selections(r)
    digest = r.tpm2b("pcrDigest", 64)
    r.finish()
    return Attest(signer, extra, clock, firmware, selections, digest)


def _pcr_selections(r: Reader) -> tuple[tuple[str, tuple[int, ...]], ...]:
    count = r.u32("pcrSelect count")
    if count > 8:
        raise errors.MalformedEvidence(f"pcrSelect has {count} banks")
    out = []
    for _ in range(count):
        alg = r.u16("pcrSelect hash")
        bank = HASH_ALGS.get(alg)
        if bank is None:
            raise errors.MalformedEvidence(f"pcrSelect bank 0x{alg:04x} is not supported")
        size = r.u8("sizeofSelect")
        if size > 4:
            raise errors.MalformedEvidence(f"sizeofSelect {size} is larger than 4")
        bitmap = r.raw(size, "pcrSelect")
        pcrs = tuple(i for i in range(size * 8) if bitmap[i // 8] >> (i % 8) & 1)
        out.append((bank, pcrs))
    return tuple(out)


def check_quote(
    *,
    attest_bytes: bytes,
    signature_bytes: bytes,
    pcr_values: Sequence[tuple[int, bytes]],
    ak_public_key: object,
    ak_hash: str | None,
    nonce: bytes,
    bank: str,
    pcrs: tuple[int, ...],
) -> CheckedQuote:
    """Run checks 1-5 of the module docstring; return what the quote proves."""
    signature = parse_signature(signature_bytes)
    verify_signature(attest_bytes, signature, ak_public_key, ak_hash)
    attest = parse_attest(attest_bytes)
    if not hmac.compare_digest(attest.extra_data, nonce):
        raise errors.NonceMismatch("the quote's extraData is not the nonce issued for it")
    if attest.selections != ((bank, tuple(sorted(pcrs))),):
        raise errors.ReplayMismatch(
            f"the TPM signed the selection {_describe(attest.selections)}, "
            f"but {bank}:{list(pcrs)} was requested"
        )
    values = _values_for_selection(pcr_values, tuple(sorted(pcrs)), DIGEST_SIZES[bank])
    composite = b"".join(values[i] for i in sorted(values))
    if not hmac.compare_digest(
        hashlib.new(signature.hash_name, composite).digest(), attest.pcr_digest
    ):
        raise errors.ReplayMismatch("the PCR values sent do not hash to the quote's pcrDigest")
    return CheckedQuote(bank, values, attest.clock_info, attest.firmware_version)


def _values_for_selection(
    pcr_values: Sequence[tuple[int, bytes]], selection: tuple[int, ...], size: int
) -> dict[int, bytes]:
    values = dict(pcr_values)
    if len(values) != len(pcr_values) or tuple(sorted(values)) != selection:
        raise errors.ReplayMismatch(
            f"PCR values were sent for {sorted(values)}, but the quote covers {list(selection)}"
        )
    for index, digest in values.items():
        if len(digest) != size:
            raise errors.ReplayMismatch(f"PCR {index} value is {len(digest)} bytes, not {size}")
    return values


def _describe(selections: tuple[tuple[str, tuple[int, ...]], ...]) -> str:
    return ", ".join(f"{bank}:{list(pcrs)}" for bank, pcrs in selections) or "(nothing)"
