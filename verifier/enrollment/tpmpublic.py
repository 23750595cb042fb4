"""TPM2B_PUBLIC: a strict parse into plain values, and the EK and AK acceptance checks.

``parse_tpm2b_public`` reads, in order: the size limit, the TPM2B size, then TPMT_PUBLIC
(type, nameAlg, objectAttributes, authPolicy, the RSA or ECC parameters, the unique field),
and refuses trailing bytes at both levels. Structural damage raises ``MalformedEvidence``
(``LimitExceeded`` for an oversized input); an algorithm this verifier does not implement (an
object type, name or scheme hash, symmetric cipher, scheme, KDF or curve) raises
``UnacceptableKey``. The result is a frozen dataclass of plain values plus the
``cryptography`` public key, built once; the name is nameAlg || H_nameAlg(TPMT_PUBLIC).

``check_ak`` and ``check_ek`` accept a parsed key or raise ``UnacceptableKey`` naming the
first attribute or algorithm that is wrong. Order: object type and key size, name algorithm,
attributes, then scheme (AK) or symmetric definition (EK).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from verifier.errors import LimitExceeded, MalformedEvidence, UnacceptableKey
from verifier.limits import DEFAULT_LIMITS, Limits
from verifier.marshal import (
    ALG_AES,
    ALG_CFB,
    ALG_ECC,
    ALG_ECDSA,
    ALG_NULL,
    ALG_RSA,
    ALG_RSAPSS,
    ALG_RSASSA,
    HASH_ALGS,
    Reader,
    u16,
)

ECC_NIST_P256 = 0x0003
ECC_NIST_P384 = 0x0004
ECC_NIST_P521 = 0x0005
CURVES: dict[int, tuple[str, ec.EllipticCurve, int]] = {
    ECC_NIST_P256: ("P-256", ec.SECP256R1(), 32),
    ECC_NIST_P384: ("P-384", ec.SECP384R1(), 48),
    ECC_NIST_P521: ("P-521", ec.SECP521R1(), 66),
}

# TPMA_OBJECT bits.
FIXED_TPM = 1 << 1
FIXED_PARENT = 1 << 4
SENSITIVE_DATA_ORIGIN = 1 << 5
RESTRICTED = 1 << 16
DECRYPT = 1 << 17
SIGN = 1 << 18
ATTRIBUTE_NAMES = {
    FIXED_TPM: "fixedTPM",
    FIXED_PARENT: "fixedParent",
    SENSITIVE_DATA_ORIGIN: "sensitiveDataOrigin",
    RESTRICTED: "restricted",
    DECRYPT: "decrypt",
    SIGN: "sign",
}

# Selectors whose union member is one TPMI_ALG_HASH (TPMS_SCHEME_HASH and friends).
_RSA_SCHEMES_WITH_HASH = {ALG_RSASSA, ALG_RSAPSS, 0x0017}  # 0x0017 = OAEP
_RSA_SCHEMES_EMPTY = {0x0015}  # RSAES
_ECC_SCHEMES_WITH_HASH = {ALG_ECDSA, 0x0019, 0x001C, 0x001B, 0x001D}  # ECDH SCHNORR SM2 MQV
_ECC_SCHEME_ECDAA = 0x001A  # hashAlg + count
_KDF_SCHEMES = {0x0007, 0x0020, 0x0021, 0x0022}  # MGF1, KDF1_SP800_56A, KDF2, KDF1_SP800_108
_SYM_BLOCK_CIPHERS = {ALG_AES, 0x0013, 0x0026}  # AES, SM4, CAMELLIA
_MAX_DIGEST = 64

ACCEPTED_NAME_HASHES = {"sha256", "sha384", "sha512"}
ACCEPTED_RSA_AK_BITS = {2048, 3072, 4096}
ACCEPTED_AK_CURVES = {ECC_NIST_P256, ECC_NIST_P384}
ACCEPTED_EK_CURVES = {ECC_NIST_P256, ECC_NIST_P384}

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


@dataclass(frozen=True)
class SymDef:
    algorithm: int  # ALG_NULL when the key has no symmetric definition
    key_bits: int
    mode: int


@dataclass(frozen=True)
class TpmPublic:
    type: int  # ALG_RSA or ALG_ECC
    name_alg: int
    object_attributes: int
    auth_policy: bytes
    symmetric: SymDef
    scheme: int  # ALG_NULL, ALG_RSASSA, ALG_RSAPSS, ALG_ECDSA, ...
    scheme_hash: int  # ALG_NULL when the scheme has none
    key_bits: int  # RSA modulus bits, or the curve's size
    exponent: int  # RSA public exponent (0 on the wire means 65537); 0 for ECC
    curve: int  # TPM_ECC_CURVE; 0 for RSA
    kdf: int
    kdf_hash: int
    modulus: bytes  # RSA unique; empty for ECC
    x: bytes  # ECC unique; empty for RSA
    y: bytes
    public_area: bytes  # the TPMT_PUBLIC bytes, exactly as received
    name: bytes  # nameAlg (u16) || H_nameAlg(public_area)
    public_key: PublicKey = field(compare=False, repr=False)
    signing_hash: str | None  # hash of the signing scheme ("sha256"), None if no scheme

    def has(self, attribute: int) -> bool:
        return bool(self.object_attributes & attribute)


def parse_tpm2b_public(data: bytes, limits: Limits = DEFAULT_LIMITS) -> TpmPublic:
    if len(data) > limits.max_tpm_public_bytes:
        raise LimitExceeded(
            f"TPM2B_PUBLIC is {len(data)} bytes; the limit is {limits.max_tpm_public_bytes}"
        )
    outer = Reader(data, "TPM2B_PUBLIC")
    area = outer.tpm2b("publicArea")
    outer.finish()
    if not area:
        raise MalformedEvidence("TPM2B_PUBLIC: empty publicArea")
    return _parse_tpmt_public(area)


def _parse_tpmt_public(area: bytes) -> TpmPublic:
    r = Reader(area, "TPMT_PUBLIC")
    obj_type = r.u16("type")
    if obj_type not in (ALG_RSA, ALG_ECC):
        raise UnacceptableKey(f"object type {obj_type:#06x} is not supported (RSA or ECC only)")
    name_alg = r.u16("nameAlg")
    name_hash = _hash_name(name_alg, "nameAlg")
    attributes = r.u32("objectAttributes")
    auth_policy = r.tpm2b("authPolicy", _MAX_DIGEST)
    symmetric = _sym_def(r)
    scheme, scheme_hash = _scheme(r, obj_type)
    if obj_type == ALG_RSA:
        key_bits = r.u16("keyBits")
        exponent = r.u32("exponent") or 65537
        curve = kdf = kdf_hash = 0
        modulus = r.tpm2b("unique.rsa", 512)
        x = y = b""
        key: PublicKey = _rsa_key(key_bits, exponent, modulus)
    else:
        curve = r.u16("curveID")
        kdf, kdf_hash = _kdf(r)
        x = r.tpm2b("unique.ecc.x", 66)
        y = r.tpm2b("unique.ecc.y", 66)
        key_bits, key = _ecc_key(curve, x, y)
        exponent = 0
        modulus = b""
    r.finish()
    digest = hashlib.new(name_hash, area).digest()
    return TpmPublic(
        type=obj_type,
        name_alg=name_alg,
        object_attributes=attributes,
        auth_policy=auth_policy,
        symmetric=symmetric,
        scheme=scheme,
        scheme_hash=scheme_hash,
        key_bits=key_bits,
        exponent=exponent,
        curve=curve,
        kdf=kdf,
        kdf_hash=kdf_hash,
        modulus=modulus,
        x=x,
        y=y,
        public_area=area,
        name=u16(name_alg) + digest,
        public_key=key,
        signing_hash=HASH_ALGS.get(scheme_hash),
    )


def _hash_name(alg: int, what: str) -> str:
    name = HASH_ALGS.get(alg)
    if name is None:
        raise UnacceptableKey(f"{what} {alg:#06x} is not a supported hash algorithm")
    return name


def _sym_def(r: Reader) -> SymDef:
    algorithm = r.u16("symmetric.algorithm")
    if algorithm == ALG_NULL:
        return SymDef(ALG_NULL, 0, ALG_NULL)
    if algorithm not in _SYM_BLOCK_CIPHERS:
        raise UnacceptableKey(f"symmetric algorithm {algorithm:#06x} is not supported")
    return SymDef(algorithm, r.u16("symmetric.keyBits"), r.u16("symmetric.mode"))


def _scheme(r: Reader, obj_type: int) -> tuple[int, int]:
    scheme = r.u16("scheme")
    if scheme == ALG_NULL:
        return ALG_NULL, ALG_NULL
    if obj_type == ALG_RSA and scheme in _RSA_SCHEMES_EMPTY:
        return scheme, ALG_NULL
    if obj_type == ALG_RSA and scheme in _RSA_SCHEMES_WITH_HASH:
        return scheme, r.u16("scheme.hashAlg")
    if obj_type == ALG_ECC and scheme in _ECC_SCHEMES_WITH_HASH:
        return scheme, r.u16("scheme.hashAlg")
    if obj_type == ALG_ECC and scheme == _ECC_SCHEME_ECDAA:
        hash_alg = r.u16("scheme.hashAlg")
        r.u16("scheme.count")
        return scheme, hash_alg
    raise UnacceptableKey(f"key scheme {scheme:#06x} is not supported")


def _kdf(r: Reader) -> tuple[int, int]:
    kdf = r.u16("kdf.scheme")
    if kdf == ALG_NULL:
        return ALG_NULL, ALG_NULL
    if kdf not in _KDF_SCHEMES:
        raise UnacceptableKey(f"KDF scheme {kdf:#06x} is not supported")
    return kdf, r.u16("kdf.hashAlg")


def _rsa_key(key_bits: int, exponent: int, modulus: bytes) -> rsa.RSAPublicKey:
    if key_bits not in (1024, 2048, 3072, 4096):
        raise UnacceptableKey(f"RSA key size {key_bits} is not supported")
    if len(modulus) != key_bits // 8 or not modulus[0] & 0x80:
        raise MalformedEvidence(
            f"TPMT_PUBLIC: RSA modulus is {len(modulus)} bytes for a {key_bits}-bit key"
        )
    try:
        return rsa.RSAPublicNumbers(exponent, int.from_bytes(modulus, "big")).public_key()
    except ValueError as exc:
        raise MalformedEvidence(f"TPMT_PUBLIC: invalid RSA public key ({exc})") from exc


def _ecc_key(curve_id: int, x: bytes, y: bytes) -> tuple[int, ec.EllipticCurvePublicKey]:
    if curve_id not in CURVES:
        raise UnacceptableKey(f"ECC curve {curve_id:#06x} is not supported")
    _, curve, size = CURVES[curve_id]
    if not 0 < len(x) <= size or not 0 < len(y) <= size:
        raise MalformedEvidence(f"TPMT_PUBLIC: ECC point coordinates must be 1..{size} bytes")
    numbers = ec.EllipticCurvePublicNumbers(
        int.from_bytes(x, "big"), int.from_bytes(y, "big"), curve
    )
    try:
        return curve.key_size, numbers.public_key()
    except ValueError as exc:
        raise MalformedEvidence("TPMT_PUBLIC: the ECC point is not on the curve") from exc


# ------------------------------------------------------------------ acceptance checks


def _require(key: TpmPublic, role: str, required: int, forbidden: int) -> None:
    for bit, name in ATTRIBUTE_NAMES.items():
        if required & bit and not key.has(bit):
            raise UnacceptableKey(f"{role} must have the {name} attribute set")
        if forbidden & bit and key.has(bit):
            raise UnacceptableKey(f"{role} must not have the {name} attribute set")


def _require_name_alg(key: TpmPublic, role: str) -> None:
    if HASH_ALGS.get(key.name_alg) not in ACCEPTED_NAME_HASHES:
        raise UnacceptableKey(
            f"{role} name algorithm {HASH_ALGS.get(key.name_alg, hex(key.name_alg))} "
            f"is not accepted (sha256, sha384 or sha512)"
        )


def check_ak(ak: TpmPublic) -> None:
    """Raise ``UnacceptableKey`` unless ``ak`` is a restricted signing key bound to its TPM."""
    role = "the AK"
    if ak.type == ALG_RSA and ak.key_bits not in ACCEPTED_RSA_AK_BITS:
        raise UnacceptableKey(f"{role}: RSA-{ak.key_bits} is not accepted (2048, 3072, 4096)")
    if ak.type == ALG_ECC and ak.curve not in ACCEPTED_AK_CURVES:
        raise UnacceptableKey(f"{role}: curve {CURVES[ak.curve][0]} is not accepted")
    _require_name_alg(ak, role)
    _require(
        ak,
        role,
        required=RESTRICTED | SIGN | FIXED_TPM | FIXED_PARENT | SENSITIVE_DATA_ORIGIN,
        forbidden=DECRYPT,
    )
    allowed = {ALG_RSASSA, ALG_RSAPSS} if ak.type == ALG_RSA else {ALG_ECDSA}
    if ak.scheme not in allowed:
        expected = "RSASSA or RSAPSS" if ak.type == ALG_RSA else "ECDSA"
        raise UnacceptableKey(f"{role}: signing scheme {ak.scheme:#06x} is not {expected}")
    if ak.signing_hash not in ACCEPTED_NAME_HASHES:
        raise UnacceptableKey(
            f"{role}: scheme hash {ak.signing_hash or hex(ak.scheme_hash)} is not accepted "
            "(sha256, sha384 or sha512)"
        )


def check_ek(ek: TpmPublic) -> None:
    """Raise ``UnacceptableKey`` unless ``ek`` is a restricted storage (decrypt) key."""
    role = "the EK"
    if ek.type == ALG_RSA and ek.key_bits < 2048:
        raise UnacceptableKey(f"{role}: RSA-{ek.key_bits} is too small (2048 or more)")
    if ek.type == ALG_ECC and ek.curve not in ACCEPTED_EK_CURVES:
        raise UnacceptableKey(f"{role}: curve {CURVES[ek.curve][0]} is not accepted")
    _require_name_alg(ek, role)
    _require(
        ek,
        role,
        required=RESTRICTED | DECRYPT | FIXED_TPM | FIXED_PARENT,
        forbidden=SIGN,
    )
    sym = ek.symmetric
    if sym.algorithm != ALG_AES or sym.key_bits not in (128, 256) or sym.mode != ALG_CFB:
        raise UnacceptableKey(f"{role}: symmetric definition must be AES-128 or AES-256 in CFB")
