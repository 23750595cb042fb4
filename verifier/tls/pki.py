"""A small PKI for a fleet or a test: ``attest-verifier certs init DIR``.

``init_pki`` makes, with ``cryptography``, ECDSA P-256 keys and SHA-256 signatures:

- ``ca.pem`` / ``ca.key``: the fleet CA (path length 0: it signs leaves only). Its URI SAN
  ``spiffe://<trust-domain>`` names the trust domain callers' SPIFFE IDs must be in
  (``verifier.tls.identity``).
- ``verifier.pem`` / ``verifier.key``: the verifier's server certificate (serverAuth), SANs:
  the names given plus ``localhost``, ``127.0.0.1`` and ``::1``.
- ``operator.pem`` / ``operator.key`` and ``relying-party.pem`` / ``relying-party.key``:
  client certificates (clientAuth) whose SPIFFE ID carries the role.

Invariants: nothing is ever overwritten (every target is checked before anything is written,
then each file is created with ``O_EXCL``); private keys are written 0600, certificates 0644;
the directory is created 0700 when absent. ``issue_client`` and ``issue_server`` sign more
leaves with an existing CA, under the same rules.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from verifier.errors import AttestationError
from verifier.tls.identity import Role, check_name, check_trust_domain, spiffe_id, trust_domain_of

DEFAULT_TRUST_DOMAIN = "fleet-attest.local"
CA_DAYS = 3650
LEAF_DAYS = 397  # the longest leaf validity browsers accept; rotate with issue_* well before
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


class PkiError(AttestationError):
    """The PKI cannot be created or used: an existing file, an unusable CA, a bad name."""


@dataclass(frozen=True)
class PkiFile:
    path: Path
    purpose: str  # one line for ``certs init`` to print


@dataclass(frozen=True)
class _Leaf:
    stem: str
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fleet-attest"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public: ec.EllipticCurvePublicKey,
    now: dt.datetime,
    days: int,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))  # tolerate small clock skew
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )


def _make_ca(
    trust_domain: str, now: dt.datetime
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _new_key()
    name = _name(f"fleet-attest CA ({trust_domain})")
    cert = (
        _builder(name, name, key.public_key(), now, CA_DAYS)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(f"spiffe://{trust_domain}")]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _sign_leaf(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    common_name: str,
    sans: list[x509.GeneralName],
    usage: x509.ObjectIdentifier,
    now: dt.datetime,
    days: int,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _new_key()
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        _builder(_name(common_name), ca_cert.subject, key.public_key(), now, days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_leaf_usage(), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _general_name(text: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(text))
    except ValueError:
        pass
    if not text or any(c.isspace() or c in "/:@" for c in text):
        raise PkiError(f"not a DNS name or IP address: {text!r}")
    return x509.DNSName(text)


def _server_sans(names: Sequence[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for text in [*names, *LOOPBACK_NAMES]:
        name = _general_name(text)
        if name not in out:
            out.append(name)
    return out


def _client_leaf(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    trust_domain: str,
    role: Role,
    name: str,
    now: dt.datetime,
    days: int,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    uri = spiffe_id(trust_domain, role, name)
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri)]
    return _sign_leaf(
        ca_key, ca_cert, f"{role} {name}", sans, ExtendedKeyUsageOID.CLIENT_AUTH, now, days
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _refuse_existing(paths: Sequence[Path]) -> None:
    existing = [str(p) for p in paths if p.exists() or p.is_symlink()]
    if existing:
        raise PkiError(f"refusing to overwrite existing files: {', '.join(existing)}")


def _write(path: Path, data: bytes, mode: int) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, mode)
    except FileExistsError:
        raise PkiError(f"refusing to overwrite existing file {path}") from None
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), mode)  # the umask may have narrowed or widened nothing else
        f.write(data)


def _write_leaves(out: Path, leaves: Sequence[_Leaf], purposes: dict[str, str]) -> list[PkiFile]:
    _refuse_existing([out / f"{leaf.stem}{ext}" for leaf in leaves for ext in (".pem", ".key")])
    files: list[PkiFile] = []
    for leaf in leaves:
        cert_path, key_path = out / f"{leaf.stem}.pem", out / f"{leaf.stem}.key"
        _write(key_path, _key_pem(leaf.key), 0o600)
        _write(cert_path, _cert_pem(leaf.cert), 0o644)
        files.append(PkiFile(cert_path, purposes[leaf.stem + ".pem"]))
        files.append(PkiFile(key_path, purposes[leaf.stem + ".key"]))
    return files


def _ensure_dir(directory: Path) -> None:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not directory.is_dir():
        raise PkiError(f"{directory} is not a directory")


def init_pki(
    directory: Path,
    *,
    verifier_names: Sequence[str],
    now: dt.datetime,
    trust_domain: str = DEFAULT_TRUST_DOMAIN,
    operator_name: str = "operator",
    relying_party_name: str = "relying-party",
    leaf_days: int = LEAF_DAYS,
) -> list[PkiFile]:
    """Create the CA, the verifier's certificate and one client certificate per role."""
    check_trust_domain(trust_domain)
    check_name(operator_name)
    check_name(relying_party_name)
    sans = _server_sans(verifier_names)
    _ensure_dir(directory)
    _refuse_existing([directory / n for n in _INIT_PURPOSES])
    ca_key, ca_cert = _make_ca(trust_domain, now)
    server = _sign_leaf(
        ca_key,
        ca_cert,
        "fleet-attest verifier",
        sans,
        ExtendedKeyUsageOID.SERVER_AUTH,
        now,
        leaf_days,
    )
    operator = _client_leaf(
        ca_key, ca_cert, trust_domain, Role.OPERATOR, operator_name, now, leaf_days
    )
    relying = _client_leaf(
        ca_key, ca_cert, trust_domain, Role.RELYING_PARTY, relying_party_name, now, leaf_days
    )
    _write(directory / "ca.key", _key_pem(ca_key), 0o600)
    _write(directory / "ca.pem", _cert_pem(ca_cert), 0o644)
    files = [
        PkiFile(directory / "ca.pem", _INIT_PURPOSES["ca.pem"]),
        PkiFile(directory / "ca.key", _INIT_PURPOSES["ca.key"]),
    ]
    leaves = [
        _Leaf("verifier", *server),
        _Leaf("operator", *operator),
        _Leaf("relying-party", *relying),
    ]
    return files + _write_leaves(directory, leaves, _INIT_PURPOSES)


_INIT_PURPOSES = {
    "ca.pem": "fleet CA certificate: agents and clients pin it (--ca); the verifier trusts "
    "client certificates it signed (--client-ca)",
    "ca.key": "fleet CA private key: signs more certificates (keep it off the verifier host)",
    "verifier.pem": "verifier server certificate (serve --tls-cert)",
    "verifier.key": "verifier server private key (serve --tls-key)",
    "operator.pem": "operator client certificate (--cert, with --key operator.key)",
    "operator.key": "operator client private key (--key)",
    "relying-party.pem": "relying-party client certificate for update servers (--cert)",
    "relying-party.key": "relying-party client private key (--key)",
}


def load_ca(
    ca_cert: Path, ca_key: Path
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate, str]:
    """The CA's key, certificate and trust domain; ``PkiError`` if they do not belong together."""
    try:
        cert = x509.load_pem_x509_certificate(ca_cert.read_bytes())
        key = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise PkiError(f"cannot read the CA: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        raise PkiError(f"{ca_key} is not the private key of {ca_cert}")
    return key, cert, trust_domain_of(ca_cert.read_bytes())


def issue_client(
    ca_cert: Path,
    ca_key: Path,
    *,
    role: Role,
    name: str,
    out: Path,
    now: dt.datetime,
    days: int = LEAF_DAYS,
) -> list[PkiFile]:
    """Sign a client certificate for ``role``/``name``: ``out/<name>.pem`` and ``.key``."""
    key, cert, trust_domain = load_ca(ca_cert, ca_key)
    leaf = _client_leaf(key, cert, trust_domain, role, check_name(name), now, days)
    _ensure_dir(out)
    purposes = {
        f"{name}.pem": f"{role} client certificate for {name} (--cert)",
        f"{name}.key": f"{role} client private key for {name} (--key)",
    }
    return _write_leaves(out, [_Leaf(name, *leaf)], purposes)


def issue_server(
    ca_cert: Path,
    ca_key: Path,
    *,
    names: Sequence[str],
    stem: str,
    out: Path,
    now: dt.datetime,
    days: int = LEAF_DAYS,
) -> list[PkiFile]:
    """Sign a new verifier certificate (for rotation): ``out/<stem>.pem`` and ``.key``."""
    key, cert, _ = load_ca(ca_cert, ca_key)
    leaf = _sign_leaf(
        key,
        cert,
        "fleet-attest verifier",
        _server_sans(names),
        ExtendedKeyUsageOID.SERVER_AUTH,
        now,
        days,
    )
    purposes = {
        f"{stem}.pem": "verifier server certificate (serve --tls-cert)",
        f"{stem}.key": "verifier server private key (serve --tls-key)",
    }
    _ensure_dir(out)
    return _write_leaves(out, [_Leaf(check_name(stem), *leaf)], purposes)
