"""EK certificate path validation against the operators' manufacturer CAs, and the EK allowlist.

``validate_ek_certificate(cert_der, ek, trust, now)`` raises ``UntrustedEndorsement`` or returns
an ``EkChainResult``. Checks, in order:

1. the certificate parses (DER read by ``verifier.enrollment.der``; real EK certificates that
   strict parsers refuse, e.g. unsorted multi-valued RDNs, are read; anything else is
   "cannot parse ...");
2. its subjectPublicKeyInfo holds exactly the EK public key the agent sent;
3. it is within its validity period at ``now`` and has no critical extension we do not handle
   (a certificate that is itself in the trust store is then a path of one);
4. a path is built upwards, issuer by issuer, from certificates whose subject equals the
   issuer name (the trust store's, then any ``intermediates`` the caller passes). For every
   issuer: the signature over the child's original tbsCertificate verifies (RSA PKCS#1 v1.5,
   RSA-PSS, ECDSA); basicConstraints cA is true; keyUsage, when present, has keyCertSign; its
   pathLenConstraint allows the CAs below it; it is valid at ``now``; it has no unhandled
   critical extension. The path ends at a trust anchor, within ``MAX_PATH_CERTS`` certificates
   and ``MAX_SIGNATURE_CHECKS`` signature checks, never visiting a certificate twice.

Trust anchors (``TrustStore.load``): every certificate in the directory (``*.pem``, ``*.crt``,
``*.cer``, ``*.der``; PEM files may hold several) is either a self-signed root, or an
intermediate whose issuer is also in the directory, or -- when its issuer is not there, like
Infineon's "IFX TPM EK Root CA" whose VeriSign parent is retired -- an anchor itself: the
operator placed it there as the highest certificate they trust (RFC 5280 6.1.1 (d) does not
require anchors to be self-signed). Anchors get the same CA and validity checks as any issuer.
Certificates the agent sends are only ever intermediates. SHA-1 signatures are accepted:
manufacturer CAs (Infineon's) still sign with it, and EK certificates are not attacker-chosen.

``EkChainResult.not_after`` is the earliest notAfter on the path: the endorsement is no longer
valid after it.

Allowlist file format (``Allowlist.load``): one EK fingerprint per line, the 64 hex digits of
SHA-256 over the DER SubjectPublicKeyInfo of the EK public key (``ek_fingerprint``; the part of
a device id after "dev-"); ``#`` starts a comment, blank lines are ignored. For an EK public key
in PEM, ``openssl pkey -pubin -in ek.pem -outform DER | sha256sum`` prints it. A malformed
file raises ``TrustConfigError`` naming the line.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.utils import CryptographyDeprecationWarning

from verifier.enrollment import der
from verifier.enrollment.tpmpublic import TpmPublic
from verifier.errors import UntrustedEndorsement

MAX_PATH_CERTS = 5  # leaf, intermediates and anchor
MAX_SIGNATURE_CHECKS = 32
CERT_SUFFIXES = {".pem", ".crt", ".cer", ".der"}  # CRLs are ``*.crl`` (verifier.enrollment.crl)
HANDLED_EXTENSIONS = {
    "2.5.29.19",  # basicConstraints: checked on issuers
    "2.5.29.15",  # keyUsage: keyCertSign checked on issuers
    "2.5.29.17",  # subjectAltName: the TPM's identity; names are not matched
    "2.5.29.9",  # subjectDirectoryAttributes: TPM specification attributes
    "2.5.29.32",  # certificatePolicies: any policy is acceptable
    "2.5.29.37",  # extendedKeyUsage
    "2.5.29.35",  # authorityKeyIdentifier
    "2.5.29.14",  # subjectKeyIdentifier
    "2.5.29.31",  # cRLDistributionPoints
    "1.3.6.1.5.5.7.1.1",  # authorityInfoAccess
}
_RSA_SPKI_OIDS = {"1.2.840.113549.1.1.1", "1.2.840.113549.1.1.7"}  # rsaEncryption, RSAES-OAEP
_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", re.DOTALL)
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


class TrustConfigError(ValueError):
    """The operator's trust directory or allowlist cannot be used (names the file and line)."""


@dataclass(frozen=True)
class Certificate:
    raw: bytes  # DER, as received
    parts: der.CertParts
    subject: str  # RFC 4514 text, for messages
    issuer: str
    label: str  # the subject, or what the certificate is when its subject is empty
    not_before: float
    not_after: float
    is_ca: bool
    path_len: int | None
    key_cert_sign: bool  # true when keyUsage is absent
    view: x509.Certificate  # cryptography's view (of the canonical copy): dates, algorithms
    fingerprint: bytes  # SHA-256 of the DER

    def public_key(self) -> PublicKeyTypes:
        try:
            return serialization.load_der_public_key(self.parts.spki)
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise UntrustedEndorsement(
                f"cannot read the public key of '{self.label}' ({exc})"
            ) from exc


def parse_certificate(data: bytes, what: str) -> Certificate:
    """Parse ``data`` (DER); raise ``UntrustedEndorsement("cannot parse ...")`` otherwise."""
    try:
        parts = der.split_certificate(data)
        with warnings.catch_warnings():
            # Real EK certificates carry negative serials; they are read on purpose.
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            view = x509.load_der_x509_certificate(der.canonical(data))
        extensions = {ext.oid: ext for ext in parts.extensions}
        is_ca, path_len = False, None
        if der.OID_BASIC_CONSTRAINTS in extensions:
            is_ca, path_len = der.basic_constraints(extensions[der.OID_BASIC_CONSTRAINTS].value)
        key_cert_sign = True
        if der.OID_KEY_USAGE in extensions:
            key_cert_sign = der.key_usage_has(
                extensions[der.OID_KEY_USAGE].value, der.KEY_USAGE_KEY_CERT_SIGN
            )
        return Certificate(
            raw=data,
            parts=parts,
            subject=view.subject.rfc4514_string(),
            issuer=view.issuer.rfc4514_string(),
            label=view.subject.rfc4514_string() or what,
            not_before=view.not_valid_before_utc.timestamp(),
            not_after=view.not_valid_after_utc.timestamp(),
            is_ca=is_ca,
            path_len=path_len,
            key_cert_sign=key_cert_sign,
            view=view,
            fingerprint=hashlib.sha256(data).digest(),
        )
    except (ValueError, x509.InvalidVersion, UnsupportedAlgorithm) as exc:  # DerError too
        raise UntrustedEndorsement(f"cannot parse {what}: {exc}") from exc


def read_certificates(data: bytes, what: str) -> list[Certificate]:
    """PEM (one or more certificates) or a single DER certificate."""
    blocks = _PEM.findall(data)
    if not blocks and b"-----BEGIN" in data:
        raise UntrustedEndorsement(f"cannot parse {what}: PEM without a CERTIFICATE block")
    if not blocks:
        return [parse_certificate(data, what)]
    out = []
    for i, block in enumerate(blocks):
        try:
            raw = base64.b64decode(b"".join(block.split()), validate=True)
        except ValueError as exc:
            raise UntrustedEndorsement(f"cannot parse {what}: bad PEM block {i}") from exc
        out.append(parse_certificate(raw, f"{what} (certificate {i})"))
    return out


def verify_issued_by(child: Certificate, issuer: Certificate) -> None:
    """The child's signature over its original tbsCertificate verifies with issuer's key."""
    key = issuer.public_key()
    view = child.view
    try:
        params = view.signature_algorithm_parameters
        hash_alg = view.signature_hash_algorithm
        if isinstance(key, rsa.RSAPublicKey) and isinstance(params, padding.PSS | padding.PKCS1v15):
            if hash_alg is None:
                raise ValueError("no hash algorithm")
            key.verify(child.parts.signature, child.parts.tbs, params, hash_alg)
        elif isinstance(key, ec.EllipticCurvePublicKey) and isinstance(params, ec.ECDSA):
            key.verify(child.parts.signature, child.parts.tbs, params)
        else:
            raise ValueError("the signature algorithm does not match the issuer's key type")
    except (InvalidSignature, UnsupportedAlgorithm, ValueError) as exc:
        reason = f" ({exc})" if str(exc) else ""
        raise UntrustedEndorsement(
            f"the signature on '{child.label}' does not verify with the key of "
            f"'{issuer.label}'{reason}"
        ) from exc


def _is_self_signed(cert: Certificate) -> bool:
    if cert.parts.subject != cert.parts.issuer:
        return False
    try:
        verify_issued_by(cert, cert)
    except UntrustedEndorsement:
        return False
    return True


@dataclass(frozen=True)
class TrustStore:
    anchors: tuple[Certificate, ...]
    intermediates: tuple[Certificate, ...]

    @classmethod
    def empty(cls) -> TrustStore:
        return cls((), ())

    @classmethod
    def load(cls, directory: Path) -> TrustStore:
        if not directory.is_dir():
            raise TrustConfigError(f"{directory}: not a directory of EK CA certificates")
        certs: list[Certificate] = []
        for path in sorted(directory.iterdir()):
            if path.suffix.lower() not in CERT_SUFFIXES or not path.is_file():
                continue
            try:
                certs.extend(read_certificates(path.read_bytes(), str(path)))
            except UntrustedEndorsement as exc:
                raise TrustConfigError(str(exc)) from exc
        return cls.from_certificates(certs)

    @classmethod
    def from_certificates(cls, certs: Iterable[Certificate]) -> TrustStore:
        unique = {cert.fingerprint: cert for cert in certs}.values()
        subjects = {cert.parts.subject for cert in unique}
        anchors, intermediates = [], []
        for cert in unique:
            if _is_self_signed(cert) or cert.parts.issuer not in subjects:
                anchors.append(cert)
            else:
                intermediates.append(cert)
        return cls(tuple(anchors), tuple(intermediates))

    def is_anchor(self, cert: Certificate) -> bool:
        return any(cert.fingerprint == anchor.fingerprint for anchor in self.anchors)

    def issuers_of(self, cert: Certificate) -> list[Certificate]:
        return [
            c for c in self.anchors + self.intermediates if c.parts.subject == cert.parts.issuer
        ]


@dataclass(frozen=True)
class EkChainResult:
    not_after: float  # POSIX seconds: the earliest notAfter on the path
    subjects: tuple[str, ...]  # EK certificate first, trust anchor last
    path: tuple[Certificate, ...] = ()  # the certificates themselves, in the same order


def validate_ek_certificate(
    cert_der: bytes,
    ek: TpmPublic,
    trust: TrustStore,
    now: float,
    intermediates: Sequence[bytes] = (),
) -> EkChainResult:
    leaf = parse_certificate(cert_der, "the EK certificate")
    _check_same_key(leaf, ek)
    extra = [parse_certificate(raw, f"intermediate {i}") for i, raw in enumerate(intermediates)]
    path = verify_path(leaf, trust, now, extra)
    return EkChainResult(
        not_after=min(cert.not_after for cert in path),
        subjects=tuple(cert.subject for cert in path),
        path=path,
    )


def verify_path(
    cert: Certificate, trust: TrustStore, now: float, extra: Sequence[Certificate] = ()
) -> tuple[Certificate, ...]:
    """The path from ``cert`` (first) to a trust anchor (last): steps 3 and 4 above.

    ``cert`` itself is only checked for validity and critical extensions (it need not be a
    CA); a ``cert`` that is itself a trust anchor is a path of one.
    """
    _check_validity(cert, now)
    _check_critical_extensions(cert)
    if trust.is_anchor(cert):
        return (cert,)
    return tuple(_PathBuilder(trust, list(extra), now).build(cert))


def _check_same_key(leaf: Certificate, ek: TpmPublic) -> None:
    ek_spki = ek.public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        cert_spki = leaf.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    except UntrustedEndorsement:
        cert_spki = _rsa_oaep_spki_as_plain(leaf.parts.spki, ek)
    if cert_spki != ek_spki:
        raise UntrustedEndorsement(
            "the EK certificate's public key is not the EK public key the TPM presented"
        )


def _rsa_oaep_spki_as_plain(spki: bytes, ek: TpmPublic) -> bytes:
    """EK certificates may label the RSA key id-RSAES-OAEP; compare the RSAPublicKey itself."""
    try:
        algid, bits = der.children(spki, der.top(spki))
        oid_element = der.children(spki, algid)[0]
        oid = der.decode_oid(spki[oid_element.body : oid_element.end])
        if oid not in _RSA_SPKI_OIDS or not isinstance(ek.public_key, rsa.RSAPublicKey):
            raise der.DerError(f"public key algorithm {oid}")
        key = serialization.load_der_public_key(_rsa_spki(spki[bits.body + 1 : bits.end]))
    except (ValueError, UnsupportedAlgorithm, IndexError) as exc:
        raise UntrustedEndorsement(f"cannot read the EK certificate's public key ({exc})") from exc
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _rsa_spki(rsa_public_key: bytes) -> bytes:
    algid = bytes.fromhex("300d06092a864886f70d0101010500")
    bit_string = b"\x03" + _der_length(len(rsa_public_key) + 1) + b"\x00" + rsa_public_key
    body = algid + bit_string
    return b"\x30" + _der_length(len(body)) + body


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _check_validity(cert: Certificate, now: float) -> None:
    if now < cert.not_before:
        raise UntrustedEndorsement(
            f"'{cert.label}' is not valid before {_iso(cert.not_before)} (now {_iso(now)})"
        )
    if now > cert.not_after:
        raise UntrustedEndorsement(
            f"'{cert.label}' expired at {_iso(cert.not_after)} (now {_iso(now)})"
        )


def _check_critical_extensions(cert: Certificate) -> None:
    for ext in cert.parts.extensions:
        if ext.critical and ext.oid not in HANDLED_EXTENSIONS:
            raise UntrustedEndorsement(
                f"'{cert.label}' has a critical extension {ext.oid} this verifier does not process"
            )


def _check_issuer(issuer: Certificate, cas_below: int, now: float) -> None:
    if not issuer.is_ca:
        raise UntrustedEndorsement(
            f"'{issuer.label}' is not a CA (basicConstraints cA is not true) but issued a "
            "certificate on the path"
        )
    if not issuer.key_cert_sign:
        raise UntrustedEndorsement(f"'{issuer.label}' keyUsage does not allow keyCertSign")
    if issuer.path_len is not None and cas_below > issuer.path_len:
        raise UntrustedEndorsement(
            f"'{issuer.label}' allows {issuer.path_len} CAs below it; the path has {cas_below}"
        )
    _check_validity(issuer, now)
    _check_critical_extensions(issuer)


class _PathBuilder:
    """Depth-first search from the leaf to a trust anchor, bounded in depth and work."""

    def __init__(self, trust: TrustStore, extra: list[Certificate], now: float) -> None:
        self.trust = trust
        self.extra = extra
        self.now = now
        self.signature_checks = 0

    def build(self, leaf: Certificate) -> list[Certificate]:
        return [leaf, *self._up(leaf, 0, frozenset({leaf.fingerprint}))]

    def _candidates(self, cert: Certificate) -> list[Certificate]:
        found = self.trust.issuers_of(cert)
        found += [c for c in self.extra if c.parts.subject == cert.parts.issuer]
        return found

    def _up(self, cert: Certificate, cas_below: int, seen: frozenset[bytes]) -> list[Certificate]:
        candidates = [c for c in self._candidates(cert) if c.fingerprint not in seen]
        if not candidates:
            raise UntrustedEndorsement(
                f"no trusted issuer '{cert.issuer}' for '{cert.label}': an unknown CA or a "
                "missing intermediate certificate"
            )
        if len(seen) >= MAX_PATH_CERTS:
            raise UntrustedEndorsement(
                f"no trust anchor within {MAX_PATH_CERTS} certificates of the EK certificate"
            )
        failures: list[UntrustedEndorsement] = []
        for issuer in candidates:
            try:
                return self._through(cert, issuer, cas_below, seen)
            except UntrustedEndorsement as exc:
                failures.append(exc)
        if len(failures) == 1:
            raise failures[0]
        raise UntrustedEndorsement("; ".join(str(exc) for exc in failures))

    def _through(
        self, cert: Certificate, issuer: Certificate, cas_below: int, seen: frozenset[bytes]
    ) -> list[Certificate]:
        self.signature_checks += 1
        if self.signature_checks > MAX_SIGNATURE_CHECKS:
            raise UntrustedEndorsement("EK certificate path search gave up (too many candidates)")
        verify_issued_by(cert, issuer)
        _check_issuer(issuer, cas_below, self.now)
        if self.trust.is_anchor(issuer):
            return [issuer]
        return [issuer, *self._up(issuer, cas_below + 1, seen | {issuer.fingerprint})]


def _iso(when: float) -> str:
    return datetime.datetime.fromtimestamp(when, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ------------------------------------------------------------------ allowlist


def ek_fingerprint(ek: TpmPublic) -> str:
    """Hex SHA-256 of the DER SubjectPublicKeyInfo of the EK public key."""
    spki = ek.public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


@dataclass(frozen=True)
class Allowlist:
    fingerprints: frozenset[str]

    @classmethod
    def empty(cls) -> Allowlist:
        return cls(frozenset())

    @classmethod
    def load(cls, path: Path) -> Allowlist:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise TrustConfigError(f"{path}: cannot read the EK allowlist ({exc})") from exc
        return cls.parse(text, str(path))

    @classmethod
    def parse(cls, text: str, source: str = "allowlist") -> Allowlist:
        found = set()
        for lineno, line in enumerate(text.splitlines(), 1):
            entry = line.split("#", 1)[0].strip()
            if not entry:
                continue
            if not _HEX64.fullmatch(entry):
                raise TrustConfigError(
                    f"{source}:{lineno}: expected 64 hex digits (SHA-256 of the EK's DER "
                    f"SubjectPublicKeyInfo), found {entry[:80]!r}"
                )
            found.add(entry.lower())
        return cls(frozenset(found))

    def contains(self, ek: TpmPublic) -> bool:
        return ek_fingerprint(ek) in self.fingerprints
