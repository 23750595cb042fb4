"""A software EK: TPM2B_PUBLIC of an ECC P-256 endorsement key and ActivateCredential.

For the boot-storm benchmark and tests that enroll many devices without swtpm. The EK's
public area is the TCG default ECC template's shape (restricted decrypt, AES-128-CFB, the
standard policy); ``activate_credential`` does what TPM2_ActivateCredential does with the
verifier's MakeCredential output (TPM 2.0 Part 1, "Credential Protection"): recover the seed
by ECDH with the EK's private key and KDFe, check the outer HMAC over the AK's name, decrypt
the identity. It raises ``ValueError`` when the HMAC does not match (a credential made for
another AK or another EK), as the TPM refuses it.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from cryptography.hazmat.primitives.kdf.kbkdf import KBKDFHMAC, CounterLocation, Mode

try:  # CFB lives in 'decrepit' since cryptography 47
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
except ImportError:  # pragma: no cover
    from cryptography.hazmat.primitives.ciphers.modes import CFB

from simulator.softquote import (
    DECRYPT,
    ECC_NIST_P256,
    FIXED_PARENT,
    FIXED_TPM,
    RESTRICTED,
    SENSITIVE_DATA_ORIGIN,
)
from verifier.marshal import ALG_ECC, ALG_NULL, ALG_SHA256, tpm2b, u16, u32

ALG_AES = 0x0006
ALG_CFB = 0x0043
ADMIN_WITH_POLICY = 1 << 7
EK_ATTRIBUTES = (
    FIXED_TPM | FIXED_PARENT | SENSITIVE_DATA_ORIGIN | ADMIN_WITH_POLICY | RESTRICTED | DECRYPT
)
# PolicySecret(TPM_RH_ENDORSEMENT): the authPolicy of the TCG default EK templates.
EK_POLICY = bytes.fromhex("837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa")
_IDENTITY = b"IDENTITY\x00"


def _kdfa(key: bytes, label: bytes, context: bytes, bits: int) -> bytes:
    return KBKDFHMAC(
        algorithm=hashes.SHA256(),
        mode=Mode.CounterMode,
        length=bits // 8,
        rlen=4,
        llen=4,
        location=CounterLocation.BeforeFixed,
        label=label,
        context=context,
        fixed=None,
    ).derive(key)


def _take_tpm2b(data: bytes, offset: int) -> tuple[bytes, int]:
    if len(data) - offset < 2:
        raise ValueError("truncated TPM2B")
    (size,) = struct.unpack_from(">H", data, offset)
    end = offset + 2 + size
    if end > len(data):
        raise ValueError("TPM2B runs past its buffer")
    return data[offset + 2 : end], end


@dataclass(frozen=True)
class SoftEk:
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def derive(cls, secret: int) -> SoftEk:
        """A reproducible EK (benchmarks derive the same EK in several processes)."""
        return cls(ec.derive_private_key(secret, ec.SECP256R1()))

    @property
    def tpm2b_public(self) -> bytes:
        numbers = self.key.public_key().public_numbers()
        area = (
            u16(ALG_ECC)
            + u16(ALG_SHA256)
            + u32(EK_ATTRIBUTES)
            + tpm2b(EK_POLICY)
            + u16(ALG_AES)
            + u16(128)
            + u16(ALG_CFB)
            + u16(ALG_NULL)  # scheme
            + u16(ECC_NIST_P256)
            + u16(ALG_NULL)  # kdf
            + tpm2b(numbers.x.to_bytes(32, "big"))
            + tpm2b(numbers.y.to_bytes(32, "big"))
        )
        return tpm2b(area)

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the DER SubjectPublicKeyInfo: the EK allowlist's entry."""
        der = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return hashlib.sha256(der).hexdigest()

    def activate_credential(
        self, credential_blob: bytes, encrypted_secret: bytes, ak_name: bytes
    ) -> bytes:
        """The secret MakeCredential protected to this EK for the AK named ``ak_name``."""
        point, _ = _take_tpm2b(encrypted_secret, 0)
        ex, offset = _take_tpm2b(point, 0)
        ey, _ = _take_tpm2b(point, offset)
        ephemeral = ec.EllipticCurvePublicNumbers(
            int.from_bytes(ex, "big"), int.from_bytes(ey, "big"), ec.SECP256R1()
        ).public_key()
        z = self.key.exchange(ec.ECDH(), ephemeral)
        ek_x = self.key.public_key().public_numbers().x.to_bytes(32, "big")
        seed = ConcatKDFHash(hashes.SHA256(), 32, _IDENTITY + ex + ek_x).derive(z)
        id_object, _ = _take_tpm2b(credential_blob, 0)
        outer, offset = _take_tpm2b(id_object, 0)
        enc_identity = id_object[offset:]
        hmac_key = _kdfa(seed, b"INTEGRITY", b"", 256)
        expected = hmac.new(hmac_key, enc_identity + ak_name, "sha256").digest()
        if not hmac.compare_digest(outer, expected):
            raise ValueError("the credential's HMAC does not match: not for this EK and AK")
        sym_key = _kdfa(seed, b"STORAGE", ak_name, 128)
        decryptor = Cipher(algorithms.AES(sym_key), CFB(bytes(16))).decryptor()
        identity = decryptor.update(enc_identity) + decryptor.finalize()
        secret, _ = _take_tpm2b(identity, 0)
        return secret
