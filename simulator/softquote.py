"""A software stand-in for a TPM's quote, for unit tests and the in-process benchmark.

It marshals TPMS_ATTEST, TPMT_SIGNATURE and an AK's TPM2B_PUBLIC exactly as a TPM does, and
signs with a software ECDSA P-256 key. Tests use it to build the attacks a real TPM would
never produce (relabelled PCRs, a foreign magic, a forged digest); the swtpm tests check the
same paths against a real TPM.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from verifier.marshal import ALG_ECC, ALG_ECDSA, ALG_NULL, ALG_SHA256, HASH_IDS, tpm2b, u16, u32

TPM_GENERATED = 0xFF544347
ST_ATTEST_QUOTE = 0x8018
ECC_NIST_P256 = 0x0003

# TPMA_OBJECT bits
FIXED_TPM = 1 << 1
FIXED_PARENT = 1 << 4
SENSITIVE_DATA_ORIGIN = 1 << 5
USER_WITH_AUTH = 1 << 6
RESTRICTED = 1 << 16
DECRYPT = 1 << 17
SIGN = 1 << 18
AK_ATTRIBUTES = (
    FIXED_TPM | FIXED_PARENT | SENSITIVE_DATA_ORIGIN | USER_WITH_AUTH | RESTRICTED | SIGN
)


def ecc_public_area(key: ec.EllipticCurvePublicKey, attributes: int = AK_ATTRIBUTES) -> bytes:
    """TPMT_PUBLIC of an ECC P-256 ECDSA-SHA256 key with ``attributes``."""
    numbers = key.public_numbers()
    return (
        u16(ALG_ECC)
        + u16(ALG_SHA256)
        + u32(attributes)
        + tpm2b(b"")  # authPolicy
        + u16(ALG_NULL)  # symmetric
        + u16(ALG_ECDSA)
        + u16(ALG_SHA256)  # scheme
        + u16(ECC_NIST_P256)
        + u16(ALG_NULL)  # kdf
        + tpm2b(numbers.x.to_bytes(32, "big"))
        + tpm2b(numbers.y.to_bytes(32, "big"))
    )


def tpm2b_public(public_area: bytes) -> bytes:
    return tpm2b(public_area)


def name_of(public_area: bytes) -> bytes:
    return u16(ALG_SHA256) + hashlib.sha256(public_area).digest()


def pcr_select(bank: str, pcrs: Sequence[int]) -> bytes:
    bitmap = bytearray(3)
    for index in pcrs:
        bitmap[index // 8] |= 1 << (index % 8)
    return u32(1) + u16(HASH_IDS[bank]) + bytes([3]) + bytes(bitmap)


@dataclass
class QuoteFields:
    """Every field of a quote's TPMS_ATTEST; tests change one to build an attack."""

    nonce: bytes
    bank: str
    pcrs: Mapping[int, bytes]
    magic: int = TPM_GENERATED
    type: int = ST_ATTEST_QUOTE
    signer: bytes = b"\x00\x0b" + b"\x11" * 32
    clock: int = 1_000_000
    reset_count: int = 1
    restart_count: int = 0
    safe: int = 1
    firmware_version: int = 0x2021_0101
    selection: Sequence[int] | None = None  # signed selection; default: the PCRs given
    digest: bytes | None = None  # pcrDigest; default: computed from ``pcrs``
    extra: dict[str, bytes] = field(default_factory=dict)


def attest_bytes(q: QuoteFields) -> bytes:
    selection = sorted(q.pcrs) if q.selection is None else list(q.selection)
    digest = q.digest
    if digest is None:
        digest = hashlib.sha256(b"".join(q.pcrs[i] for i in sorted(q.pcrs))).digest()
    return (
        struct.pack(">IH", q.magic, q.type)
        + tpm2b(q.signer)
        + tpm2b(q.nonce)
        + struct.pack(">QIIB", q.clock, q.reset_count, q.restart_count, q.safe)
        + struct.pack(">Q", q.firmware_version)
        + pcr_select(q.bank, selection)
        + tpm2b(digest)
    )


def sign(key: ec.EllipticCurvePrivateKey, attest: bytes) -> bytes:
    """TPMT_SIGNATURE (ECDSA, SHA-256) over ``attest``."""
    r, s = decode_dss_signature(key.sign(attest, ec.ECDSA(hashes.SHA256())))
    return (
        u16(ALG_ECDSA)
        + u16(ALG_SHA256)
        + tpm2b(r.to_bytes(32, "big"))
        + tpm2b(s.to_bytes(32, "big"))
    )


@dataclass
class SoftAk:
    """A software AK: its key, TPM2B_PUBLIC and name."""

    key: ec.EllipticCurvePrivateKey
    public_area: bytes
    attributes: int = AK_ATTRIBUTES

    @classmethod
    def generate(cls, attributes: int = AK_ATTRIBUTES) -> SoftAk:
        key = ec.generate_private_key(ec.SECP256R1())
        return cls(key, ecc_public_area(key.public_key(), attributes), attributes)

    @property
    def tpm2b_public(self) -> bytes:
        return tpm2b_public(self.public_area)

    @property
    def name(self) -> bytes:
        return name_of(self.public_area)

    def quote(self, q: QuoteFields) -> tuple[bytes, bytes]:
        attest = attest_bytes(q)
        return attest, sign(self.key, attest)
