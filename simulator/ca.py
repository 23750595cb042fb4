"""The simulator's own EK certificate authority (stands in for a TPM manufacturer).

Separate from the machine-wide swtpm-localca: every test session or demo creates (or reloads)
its own in a directory it owns. The hierarchy is

    root (RSA-2048, self-signed)  ->  intermediate (ECDSA P-256)  ->  EK certificates

plus an "unknown" self-signed CA that no verifier trusts, for the unknown-CA scenario. Mixing
RSA and ECDSA on the chain makes a verifier exercise both signature algorithms.

EK certificates follow the TCG EK Credential Profile where it matters to a verifier: X.509 v3,
an empty subject with a critical subjectAltName directoryName holding the TPM manufacturer,
model and version attributes, basicConstraints CA:false (critical), keyUsage keyEncipherment
(RSA EK) or keyAgreement (ECC EK) (critical), extendedKeyUsage tcg-kp-EKCertificate, and the
issuer's authorityKeyIdentifier.

``trust_dir`` holds root and intermediate as PEM files, the way the verifier loads its
``--ek-ca`` directory; ``write_trust_dir(path, include_intermediate=False)`` writes one without
the intermediate (the "missing intermediate" case).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID, ObjectIdentifier

TCG_AT_TPM_MANUFACTURER: Final = ObjectIdentifier("2.23.133.2.1")
TCG_AT_TPM_MODEL: Final = ObjectIdentifier("2.23.133.2.2")
TCG_AT_TPM_VERSION: Final = ObjectIdentifier("2.23.133.2.3")
TCG_KP_EK_CERTIFICATE: Final = ObjectIdentifier("2.23.133.8.1")

CaKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
Issuer = Literal["intermediate", "root", "unknown"]

_NAMES: Final = ("root", "intermediate", "unknown")
_ONE_DAY: Final = dt.timedelta(days=1)


@dataclass(frozen=True)
class _Authority:
    key: CaKey
    cert: x509.Certificate


@dataclass(frozen=True)
class LocalCa:
    directory: Path
    root: _Authority
    intermediate: _Authority
    unknown: _Authority

    @classmethod
    def create(cls, directory: Path) -> LocalCa:
        """Load the CA from ``directory``, creating it (mode 0700) the first time."""
        directory = Path(directory).absolute()
        if all((directory / f"{name}.pem").exists() for name in _NAMES):
            return cls._load(directory)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        now = dt.datetime.now(dt.UTC)
        root = _self_signed(
            rsa.generate_private_key(65537, 2048), "Fleet-Attest Test TPM Root CA", now
        )
        intermediate = _intermediate(root, now)
        unknown = _self_signed(
            ec.generate_private_key(ec.SECP256R1()), "Unknown TPM Vendor CA", now
        )
        for name, authority in zip(_NAMES, (root, intermediate, unknown), strict=True):
            _write(directory / f"{name}.key", _key_pem(authority.key), 0o600)
            _write(directory / f"{name}.pem", _cert_pem(authority.cert), 0o644)
        ca = cls(directory, root, intermediate, unknown)
        ca.write_trust_dir(directory / "trust")
        return ca

    @classmethod
    def _load(cls, directory: Path) -> LocalCa:
        loaded = []
        for name in _NAMES:
            key = serialization.load_pem_private_key((directory / f"{name}.key").read_bytes(), None)
            if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
                raise ValueError(f"{directory / name}.key: unsupported key type")
            cert = x509.load_pem_x509_certificate((directory / f"{name}.pem").read_bytes())
            loaded.append(_Authority(key, cert))
        return cls(directory, *loaded)

    @property
    def trust_dir(self) -> Path:
        """Root and intermediate PEM files, as the verifier's ``--ek-ca`` directory."""
        return self.directory / "trust"

    def write_trust_dir(self, path: Path, *, include_intermediate: bool = True) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        _write(path / "root.pem", _cert_pem(self.root.cert), 0o644)
        if include_intermediate:
            _write(path / "intermediate.pem", _cert_pem(self.intermediate.cert), 0o644)
        return path

    def issue_ek_certificate(
        self,
        ek_public_key: PublicKey,
        *,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        key_override: PublicKey | None = None,
        issuer: Issuer = "intermediate",
        manufacturer: str = "id:464C5441",  # "FLTA"
        model: str = "fleet-attest swtpm",
        version: str = "id:00020000",
    ) -> bytes:
        """A DER EK certificate for ``ek_public_key`` (or ``key_override``: the wrong-key case)."""
        authority = {"intermediate": self.intermediate, "root": self.root, "unknown": self.unknown}[
            issuer
        ]
        now = dt.datetime.now(dt.UTC)
        not_before = not_before or now - _ONE_DAY
        not_after = not_after or now + dt.timedelta(days=3650)
        subject_key = key_override or ek_public_key
        usage_encipher = isinstance(ek_public_key, rsa.RSAPublicKey)
        tpm_attributes = x509.Name(
            [
                x509.RelativeDistinguishedName(
                    [
                        x509.NameAttribute(TCG_AT_TPM_MANUFACTURER, manufacturer),
                        x509.NameAttribute(TCG_AT_TPM_MODEL, model),
                        x509.NameAttribute(TCG_AT_TPM_VERSION, version),
                    ]
                )
            ]
        )
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(authority.cert.subject)
            .public_key(subject_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName([x509.DirectoryName(tpm_attributes)]), True)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
            .add_extension(_key_usage(encipher=usage_encipher, agree=not usage_encipher), True)
            .add_extension(x509.ExtendedKeyUsage([TCG_KP_EK_CERTIFICATE]), False)
            .add_extension(_aki(authority.cert), False)
        )
        return builder.sign(authority.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)

    def issue_crl(
        self,
        revoked: list[int],
        *,
        issuer: Literal["intermediate", "root"] = "intermediate",
        next_update: dt.datetime | None = None,
        this_update: dt.datetime | None = None,
        pem: bool = True,
    ) -> bytes:
        """A CRL of ``issuer`` listing the serial numbers ``revoked`` (PEM or DER)."""
        authority = self.intermediate if issuer == "intermediate" else self.root
        now = dt.datetime.now(dt.UTC)
        this_update = this_update or now - dt.timedelta(minutes=5)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(authority.cert.subject)
            .last_update(this_update)
            .next_update(next_update or now + dt.timedelta(days=7))
        )
        for serial in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(this_update)
                .build()
            )
        crl = builder.sign(authority.key, hashes.SHA256())
        encoding = serialization.Encoding.PEM if pem else serialization.Encoding.DER
        return crl.public_bytes(encoding)


def _self_signed(key: CaKey, common_name: str, now: dt.datetime) -> _Authority:
    name = _name(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _ONE_DAY)
        .not_valid_after(now + dt.timedelta(days=20 * 365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .add_extension(_key_usage(cert_sign=True), True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return _Authority(key, cert)


def _intermediate(root: _Authority, now: dt.datetime) -> _Authority:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("Fleet-Attest Test TPM EK Intermediate CA"))
        .issuer_name(root.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _ONE_DAY)
        .not_valid_after(now + dt.timedelta(days=15 * 365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
        .add_extension(_key_usage(cert_sign=True), True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(_aki(root.cert), False)
        .sign(root.key, hashes.SHA256())
    )
    return _Authority(key, cert)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fleet-attest test manufacturer"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_usage(
    *, cert_sign: bool = False, encipher: bool = False, agree: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=encipher,
        data_encipherment=False,
        key_agreement=agree,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _aki(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _key_pem(key: CaKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)
