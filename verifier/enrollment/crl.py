"""EK certificate revocation lists: loaded from the trust directory, checked along a whole path.

``CrlSet.load(directory, trust)`` reads every ``*.crl`` file (PEM, one or more ``X509 CRL``
blocks, or one DER CRL). Each CRL must be signed by a CA certificate of the trust directory
whose subject is the CRL's issuer (RFC 5280 6.3.3 (f)); a CRL that does not parse, names an
issuer the directory does not hold, or whose signature does not verify is refused with
``TrustConfigError`` (the verifier does not start, or keeps the previous set on a reload). Of
several CRLs of one issuer, the one with the latest thisUpdate is used.

``CrlSet.check(path, now, stale)`` goes over every certificate of a validated path (EK
certificate first; the trust anchor is not checked: there is nothing above it): when the CRL of
its issuer lists its serial, ``CertificateRevoked``; when that CRL is past its nextUpdate (or
has none), it is *stale*: with ``stale = "fail"`` the path cannot be checked
(``CrlStale``), with ``"warn"`` the stale list is still used and the problem reported. A
certificate whose issuer has no CRL in the directory is not checked (operators place the CRLs
of the vendors they have). The problems of the set (stale lists) are ``problems(now)``, served
by the operator status call.

Pure apart from ``load`` (which reads files): ``now`` is passed in.
"""

from __future__ import annotations

import base64
import datetime
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from verifier.enrollment.ekchain import Certificate, TrustConfigError, TrustStore
from verifier.errors import UntrustedEndorsement

CRL_SUFFIX = ".crl"
STALE_POLICIES = ("fail", "warn")
_PEM = re.compile(rb"-----BEGIN X509 CRL-----(.*?)-----END X509 CRL-----", re.DOTALL)


class CertificateRevoked(UntrustedEndorsement):
    """A certificate on the EK certificate's path is on its issuer's CRL."""


class CrlStale(UntrustedEndorsement):
    """The CRL that would decide is past its nextUpdate and stale CRLs fail closed."""


@dataclass(frozen=True)
class Crl:
    source: str
    issuer: str  # RFC 4514
    issuer_der: bytes
    this_update: float
    next_update: float | None
    revoked: frozenset[int]  # serial numbers

    def stale(self, now: float) -> bool:
        return self.next_update is None or now > self.next_update


@dataclass(frozen=True)
class CrlSet:
    by_issuer: dict[bytes, Crl]  # DER issuer name -> the newest CRL of that issuer

    @classmethod
    def empty(cls) -> CrlSet:
        return cls({})

    @classmethod
    def load(cls, directory: Path, trust: TrustStore) -> CrlSet:
        if not directory.is_dir():
            return cls.empty()
        crls: list[Crl] = []
        for path in sorted(directory.iterdir()):
            if path.suffix.lower() != CRL_SUFFIX or not path.is_file():
                continue
            crls.extend(parse_crls(path.read_bytes(), str(path), trust))
        return cls.from_crls(crls)

    @classmethod
    def from_crls(cls, crls: Sequence[Crl]) -> CrlSet:
        by_issuer: dict[bytes, Crl] = {}
        for crl in crls:
            known = by_issuer.get(crl.issuer_der)
            if known is None or crl.this_update > known.this_update:
                by_issuer[crl.issuer_der] = crl
        return cls(by_issuer)

    def problems(self, now: float) -> list[str]:
        return [
            f"{crl.source}: the CRL of '{crl.issuer}' is past its nextUpdate "
            f"({_iso(crl.next_update) if crl.next_update else 'none given'}; now {_iso(now)})"
            for crl in self.by_issuer.values()
            if crl.stale(now)
        ]

    def check(self, path: Sequence[Certificate], now: float, stale: str) -> list[str]:
        """Raise ``CertificateRevoked`` or ``CrlStale``; return the warnings (stale lists
        used under ``warn``)."""
        if stale not in STALE_POLICIES:
            raise ValueError(f"stale CRL policy {stale!r}")
        warnings = []
        for cert in path[:-1]:  # the anchor has nothing above it
            crl = self.by_issuer.get(cert.parts.issuer)
            if crl is None:
                continue
            if cert.view.serial_number in crl.revoked:
                raise CertificateRevoked(
                    f"'{cert.label}' (serial {_serial(cert)}) is revoked by the CRL of "
                    f"'{crl.issuer}' ({crl.source})"
                )
            if crl.stale(now):
                text = (
                    f"the CRL of '{crl.issuer}' ({crl.source}) is past its nextUpdate: "
                    f"'{cert.label}' cannot be checked"
                )
                if stale == "fail":
                    raise CrlStale(text + " (--crl-stale fail)")
                warnings.append(text)
        return warnings


def parse_crls(data: bytes, source: str, trust: TrustStore) -> list[Crl]:
    """PEM (one or more CRLs) or one DER CRL, each verified against its issuer in ``trust``."""
    blocks = _PEM.findall(data)
    raws: list[bytes] = []
    if blocks:
        for i, block in enumerate(blocks):
            try:
                raws.append(base64.b64decode(b"".join(block.split()), validate=True))
            except ValueError as exc:
                raise TrustConfigError(f"{source}: bad PEM block {i}") from exc
    elif b"-----BEGIN" in data:
        raise TrustConfigError(f"{source}: PEM without an X509 CRL block")
    else:
        raws.append(data)
    return [_parse_one(raw, source, trust) for raw in raws]


def _parse_one(raw: bytes, source: str, trust: TrustStore) -> Crl:
    try:
        crl = x509.load_der_x509_crl(raw)
    except ValueError as exc:
        raise TrustConfigError(f"{source}: cannot parse the CRL ({exc})") from exc
    issuer_der = crl.issuer.public_bytes()
    issuers = [
        cert
        for cert in trust.anchors + trust.intermediates
        if cert.parts.subject == issuer_der or cert.view.subject == crl.issuer
    ]
    if not issuers:
        raise TrustConfigError(
            f"{source}: the CRL's issuer '{crl.issuer.rfc4514_string()}' is not a CA of the "
            "trust directory"
        )
    if not any(_signed_by(crl, cert) for cert in issuers):
        raise TrustConfigError(
            f"{source}: the CRL's signature does not verify with the key of "
            f"'{crl.issuer.rfc4514_string()}'"
        )
    next_update = crl.next_update_utc
    return Crl(
        source=source,
        issuer=crl.issuer.rfc4514_string(),
        issuer_der=issuers[0].parts.subject,
        this_update=crl.last_update_utc.timestamp(),
        next_update=next_update.timestamp() if next_update else None,
        revoked=frozenset(entry.serial_number for entry in crl),
    )


def _signed_by(crl: x509.CertificateRevocationList, cert: Certificate) -> bool:
    try:
        key = cert.public_key()
    except UntrustedEndorsement:
        return False
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        return False
    return crl.is_signature_valid(key)


def _serial(cert: Certificate) -> str:
    serial = cert.view.serial_number
    return ("-" if serial < 0 else "") + f"{abs(serial):X}"


def _iso(when: float) -> str:
    return datetime.datetime.fromtimestamp(when, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
