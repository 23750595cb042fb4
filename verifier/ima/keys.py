"""IMA file signatures (``ima-sig``): signature v2 over the file digest, RSA and ECDSA keys.

The ``sig`` field is ``struct signature_v2_hdr`` (security/integrity/integrity.h), big endian:
type (1 byte: 3 ``EVM_IMA_XATTR_DIGSIG`` or 5 ``EVM_XATTR_PORTABLE_DIGSIG``), version (2),
hash algorithm (1, ``enum hash_algo`` of include/uapi/linux/hash_info.h), key id (4), signature
size (2), then the signature: PKCS#1 v1.5 (RSA) or DER ECDSA over the file digest itself.

The key id is the last 4 bytes of the key's identifier as the kernel keyring matches it: the
X.509 Subject Key Identifier when the certificate has one, otherwise (and for a bare public
key, as evmctl computes it) SHA-1 of the public key (PKCS#1 RSAPublicKey DER for RSA, the
X9.62 uncompressed point for EC), i.e. the RFC 5280 method-1 SKID.

``verify_signature`` raises ``SignatureInvalid`` (and nothing else).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from verifier.errors import PolicyViolation, SignatureInvalid

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

DIGSIG_TYPES = frozenset({3, 5})  # EVM_IMA_XATTR_DIGSIG, EVM_XATTR_PORTABLE_DIGSIG
_HEADER = struct.Struct(">BBBIH")

# enum hash_algo -> (IMA name, cryptography hash)
HASH_ALGOS: dict[int, tuple[str, hashes.HashAlgorithm]] = {
    2: ("sha1", hashes.SHA1()),  # noqa: S303 - what old signatures use; chosen by policy
    4: ("sha256", hashes.SHA256()),
    5: ("sha384", hashes.SHA384()),
    6: ("sha512", hashes.SHA512()),
    7: ("sha224", hashes.SHA224()),
}


@dataclass(frozen=True)
class SigningKey:
    """A key allowed to sign files; ``keyid`` is the 32-bit id signatures name it by."""

    name: str
    keyid: int
    public_key: PublicKey


@dataclass(frozen=True)
class SignatureV2:
    hash_alg: str
    keyid: int
    signature: bytes


def load_signing_key(name: str, data: bytes) -> SigningKey:
    """A key from an X.509 certificate or a public key, PEM or DER; ``PolicyViolation``
    when it is none of these or not RSA/ECDSA."""
    loaders = (
        _from_certificate_pem,
        _from_certificate_der,
        _from_public_pem,
        _from_public_der,
    )
    for loader in loaders:
        try:
            key, skid = loader(data)
        except ValueError:
            continue
        if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            raise PolicyViolation(f"signing key {name!r}: only RSA and ECDSA keys verify IMA")
        keyid = skid[-4:] if skid is not None and len(skid) >= 4 else key_id_of(key)
        return SigningKey(name, int.from_bytes(keyid, "big"), key)
    raise PolicyViolation(f"signing key {name!r} is not an X.509 certificate or public key")


def key_id_of(key: PublicKey) -> bytes:
    """The last 4 bytes of SHA-1 over the key (RFC 5280 method 1, as evmctl computes it)."""
    if isinstance(key, rsa.RSAPublicKey):
        raw = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    else:
        raw = key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    return hashlib.sha1(raw, usedforsecurity=False).digest()[-4:]


def parse_signature(sig: bytes) -> SignatureV2:
    """The v2 header and signature; ``SignatureInvalid`` when malformed or not v2."""
    if len(sig) < _HEADER.size:
        raise SignatureInvalid("IMA signature shorter than its header")
    kind, version, algo, keyid, size = _HEADER.unpack_from(sig)
    if kind not in DIGSIG_TYPES:
        raise SignatureInvalid(f"IMA signature of type {kind}, not a digital signature")
    if version != 2:
        raise SignatureInvalid(f"IMA signature version {version}; only version 2 is supported")
    if size != len(sig) - _HEADER.size:
        raise SignatureInvalid(
            f"IMA signature says {size} bytes, carries {len(sig) - _HEADER.size}"
        )
    named = HASH_ALGOS.get(algo)
    if named is None:
        raise SignatureInvalid(f"IMA signature hash algorithm {algo} is not supported")
    return SignatureV2(named[0], keyid, sig[_HEADER.size :])


def verify_signature(
    sig: bytes, digest_alg: str, digest: bytes, keys: Mapping[int, SigningKey]
) -> SigningKey:
    """The key whose v2 signature ``sig`` is over ``digest``; ``SignatureInvalid`` otherwise."""
    parsed = parse_signature(sig)
    if parsed.hash_alg != digest_alg:
        raise SignatureInvalid(
            f"IMA signature over {parsed.hash_alg}, the file digest is {digest_alg}"
        )
    key = keys.get(parsed.keyid)
    if key is None:
        raise SignatureInvalid(f"IMA signature by key id {parsed.keyid:08x}: not a configured key")
    algorithm = next(h for n, h in HASH_ALGOS.values() if n == parsed.hash_alg)
    try:
        if isinstance(key.public_key, rsa.RSAPublicKey):
            key.public_key.verify(
                parsed.signature, digest, padding.PKCS1v15(), Prehashed(algorithm)
            )
        else:
            key.public_key.verify(parsed.signature, digest, ec.ECDSA(Prehashed(algorithm)))
    except (InvalidSignature, ValueError) as exc:
        raise SignatureInvalid(
            f"IMA signature by key {key.name!r} ({parsed.keyid:08x}) does not verify"
        ) from exc
    return key


def sign_v2(
    private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    keyid: bytes,
    hash_alg: str,
    digest: bytes,
) -> bytes:
    """A v2 signature as evmctl writes it (for tests and the simulator)."""
    code, algorithm = next((c, h) for c, (n, h) in HASH_ALGOS.items() if n == hash_alg)
    if isinstance(private_key, rsa.RSAPrivateKey):
        raw = private_key.sign(digest, padding.PKCS1v15(), Prehashed(algorithm))
    else:
        raw = private_key.sign(digest, ec.ECDSA(Prehashed(algorithm)))
    return _HEADER.pack(3, 2, code, int.from_bytes(keyid, "big"), len(raw)) + raw


def _from_certificate_pem(data: bytes) -> tuple[object, bytes | None]:
    return _certificate(x509.load_pem_x509_certificate(data))


def _from_certificate_der(data: bytes) -> tuple[object, bytes | None]:
    return _certificate(x509.load_der_x509_certificate(data))


def _certificate(cert: x509.Certificate) -> tuple[object, bytes | None]:
    try:
        skid = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    except x509.ExtensionNotFound:
        return cert.public_key(), None
    return cert.public_key(), skid.value.digest


def _from_public_pem(data: bytes) -> tuple[object, bytes | None]:
    return serialization.load_pem_public_key(data), None


def _from_public_der(data: bytes) -> tuple[object, bytes | None]:
    return serialization.load_der_public_key(data), None
