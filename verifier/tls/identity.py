"""Who is calling: a caller's role and name, read from its verified client certificate.

The scheme (one, no mapping file): a client certificate names its holder with exactly one
URI subject alternative name of the form

    spiffe://<trust-domain>/fleet-attest/<role>/<name>

- ``<trust-domain>`` is the fleet's SPIFFE trust domain. The CA made by ``certs init`` carries
  it as its own URI SAN ``spiffe://<trust-domain>``, so the verifier learns the domain it
  accepts from the ``--client-ca`` file (``trust_domain_of``) and needs no extra flag.
- ``<role>`` is ``operator`` or ``relying-party`` (agents have no certificate: the TPM proves
  who they are, so an anonymous caller is an agent).
- ``<name>`` is the caller's name for the logs: 1 to 64 of ``A-Z a-z 0-9 . _ -``, starting
  with a letter or digit.

Order of checks in ``identity_from_certificate`` (the first that fails raises
``IdentityError``): the bytes parse as one X.509 certificate (PEM or DER); its extended key
usage includes clientAuth (a server certificate from the same CA is never a caller); exactly
one URI SAN starts with ``spiffe://``; that URI has this trust domain, the ``fleet-attest``
path prefix, a known role and a valid name, and nothing else (no query, fragment, port or
user info).

This module is pure: the caller must already have verified the certificate chain (gRPC's TLS
layer does, against ``--client-ca``, before any RPC runs). It only reads names.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from verifier.errors import AttestationError

SPIFFE_SCHEME = "spiffe"
PATH_PREFIX = "fleet-attest"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_TRUST_DOMAIN = re.compile(r"[a-z0-9][a-z0-9._-]{0,254}")


class IdentityError(AttestationError):
    """A certificate was presented but names no fleet-attest caller."""


class Role(StrEnum):
    AGENT = "agent"  # anonymous: nothing proves more than "someone who can reach the port"
    RELYING_PARTY = "relying-party"
    OPERATOR = "operator"


CERTIFICATE_ROLES = frozenset({Role.RELYING_PARTY, Role.OPERATOR})


@dataclass(frozen=True)
class CallerIdentity:
    """An authenticated caller. ``fingerprint`` is the SHA-256 of its certificate's DER
    (hex), or a fixed label for callers authenticated otherwise (the operator socket)."""

    role: Role
    name: str
    fingerprint: str

    def __str__(self) -> str:
        return f"{self.role}/{self.name} ({self.fingerprint[:16]})"


ANONYMOUS = CallerIdentity(Role.AGENT, "anonymous", "none")


def check_trust_domain(trust_domain: str) -> str:
    if not _TRUST_DOMAIN.fullmatch(trust_domain):
        raise IdentityError(
            f"invalid SPIFFE trust domain {trust_domain!r}: lower-case letters, digits, . _ -"
        )
    return trust_domain


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise IdentityError(
            f"invalid caller name {name!r}: 1 to 64 of A-Z a-z 0-9 . _ -, "
            "starting with a letter or digit"
        )
    return name


def spiffe_id(trust_domain: str, role: Role, name: str) -> str:
    """The URI SAN that makes a certificate name ``role``/``name`` in ``trust_domain``."""
    if role not in CERTIFICATE_ROLES:
        raise IdentityError(f"role {role!r} is not carried by certificates")
    return f"{SPIFFE_SCHEME}://{check_trust_domain(trust_domain)}/{PATH_PREFIX}/{role}/{check_name(name)}"


def load_certificate(data: bytes) -> x509.Certificate:
    """One certificate, PEM or DER (gRPC's auth context gives PEM)."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise IdentityError(f"the client certificate does not parse: {exc}") from exc


def fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


def _uri_sans(cert: x509.Certificate) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return list(ext.value.get_values_for_type(x509.UniformResourceIdentifier))


def trust_domain_of(ca_pem: bytes) -> str:
    """The trust domain a CA made by ``certs init`` names in its ``spiffe://`` URI SAN."""
    cert = load_certificate(ca_pem)
    domains = [u for u in _uri_sans(cert) if u.startswith(f"{SPIFFE_SCHEME}://")]
    if len(domains) != 1:
        raise IdentityError(
            "the client CA names no single SPIFFE trust domain (URI SAN spiffe://DOMAIN)"
        )
    parts = urlsplit(domains[0])
    if parts.path not in ("", "/") or parts.query or parts.fragment or not parts.hostname:
        raise IdentityError(f"the client CA's URI SAN {domains[0]!r} is not spiffe://DOMAIN")
    return check_trust_domain(parts.netloc)


def _require_client_auth_usage(cert: x509.Certificate) -> None:
    try:
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        raise IdentityError("the client certificate has no extended key usage") from None
    if ExtendedKeyUsageOID.CLIENT_AUTH not in usage:
        raise IdentityError("the certificate is not for client authentication")


def identity_from_certificate(data: bytes, trust_domain: str) -> CallerIdentity:
    """The caller a (chain-verified) client certificate names; ``IdentityError`` if none."""
    cert = load_certificate(data)
    _require_client_auth_usage(cert)
    uris = [u for u in _uri_sans(cert) if u.lower().startswith(f"{SPIFFE_SCHEME}://")]
    if len(uris) != 1:
        raise IdentityError(
            f"the client certificate must carry exactly one spiffe:// URI SAN, has {len(uris)}"
        )
    parts = urlsplit(uris[0])
    if parts.query or parts.fragment or parts.netloc != trust_domain:
        raise IdentityError(
            f"the client certificate's SPIFFE ID {uris[0]!r} is not in trust domain "
            f"{trust_domain!r}"
        )
    segments = parts.path.split("/")
    if len(segments) != 4 or segments[0] != "" or segments[1] != PATH_PREFIX:
        raise IdentityError(
            f"the SPIFFE ID {uris[0]!r} is not spiffe://{trust_domain}/{PATH_PREFIX}/ROLE/NAME"
        )
    role_text, name = segments[2], segments[3]
    if role_text not in {r.value for r in CERTIFICATE_ROLES}:
        raise IdentityError(f"the SPIFFE ID {uris[0]!r} names an unknown role {role_text!r}")
    return CallerIdentity(Role(role_text), check_name(name), fingerprint(cert))


def identity_from_auth_context(
    auth: Mapping[str, Iterable[bytes]], trust_domain: str
) -> CallerIdentity | None:
    """The caller of an mTLS connection, from gRPC's ``context.auth_context()``.

    gRPC fills ``transport_security_type`` (``b"ssl"`` for TLS) and, when the peer presented a
    certificate that verified, ``x509_pem_cert`` (with ``x509_subject_alternative_name``,
    ``x509_common_name``, ...). None: no certificate (an anonymous caller); ``IdentityError``:
    a certificate that names no caller.
    """
    if list(auth.get("transport_security_type", ())) != [b"ssl"]:
        return None
    pems = list(auth.get("x509_pem_cert", ()))
    if not pems:
        return None
    if len(pems) != 1:
        raise IdentityError("more than one peer certificate in the auth context")
    return identity_from_certificate(pems[0], trust_domain)
