"""Who decides a device's profile: the enrollment policy the operator chose, and its inventory.

- ``inventory``: operators list devices ahead of time, by EK fingerprint or by EK certificate
  issuer and serial, with the profile they assign (``InventoryEntry``); an unlisted EK is
  refused (``NotInInventory``, its fingerprint in the message). The device's labels are kept
  for information only.
- ``approve``: a new device is stored but waits, like a new AK, until an operator approves it
  with a profile (``attest-verifier approve-device``).
- ``open``: trust on first use, for labs and the demo: the labels the device sends select its
  profile, once, at its first enrollment.

In every policy the profile is bound on the device record at enrollment (or approval) and only
an operator command changes it afterwards (recorded in the device's history).

Inventory keys (``InventoryEntry.key``): ``ek:<64 hex digits>`` (``ekchain.ek_fingerprint``) or
``cert:<SERIAL>@<issuer>`` (the EK certificate's serial as ``refusal.certificate_summary``
prints it, upper-case hex, and its RFC 4514 issuer).

Inventory files (``parse_inventory_csv``, for ``attest-verifier inventory import``): CSV with
a header row naming the columns ``ek_fingerprint``, ``ek_issuer``, ``ek_serial``, ``profile``
and ``labels`` (``key=value`` pairs separated by ``;``). Each row gives either the fingerprint
or the issuer and serial, and a profile. A malformed row raises ``InventoryError`` naming it.
"""

from __future__ import annotations

import csv
import enum
import io
import re
from collections.abc import Iterable

from verifier.enrollment.ekchain import ek_fingerprint, parse_certificate
from verifier.enrollment.tpmpublic import TpmPublic
from verifier.errors import MalformedEvidence, UntrustedEndorsement

_HEX64 = re.compile(r"[0-9a-f]{64}")
_SERIAL = re.compile(r"-?[0-9A-F]+")
CSV_COLUMNS = ("ek_fingerprint", "ek_issuer", "ek_serial", "profile", "labels")


class EnrollmentPolicy(enum.Enum):
    INVENTORY = "inventory"
    APPROVE = "approve"
    OPEN = "open"


class InventoryError(MalformedEvidence):
    """An inventory entry or file that cannot be used (names the row)."""


def fingerprint_key(fingerprint: str) -> str:
    value = fingerprint.strip().lower()
    if not _HEX64.fullmatch(value):
        raise InventoryError(
            f"EK fingerprint {fingerprint[:80]!r}: expected 64 hex digits (SHA-256 of the EK's "
            "DER SubjectPublicKeyInfo, the device id without 'dev-')"
        )
    return f"ek:{value}"


def certificate_key(issuer: str, serial: str) -> str:
    digits = serial.strip().upper().removeprefix("0X")
    if not issuer.strip() or not _SERIAL.fullmatch(digits):
        raise InventoryError(
            f"EK certificate issuer {issuer[:80]!r} serial {serial[:80]!r}: expected an RFC 4514 "
            "issuer and a hex serial"
        )
    sign = "-" if digits.startswith("-") else ""
    digits = digits.removeprefix("-").lstrip("0") or "0"
    digits = "0" * (len(digits) % 2) + digits  # whole bytes, as openssl prints them
    return f"cert:{sign}{digits}@{issuer.strip()}"


def keys_for(ek: TpmPublic, ek_certificate: bytes) -> list[str]:
    """The inventory keys an enrolling EK may be listed under (fingerprint first)."""
    keys = [f"ek:{ek_fingerprint(ek)}"]
    if ek_certificate:
        try:
            cert = parse_certificate(ek_certificate, "the EK certificate")
        except UntrustedEndorsement:
            return keys
        serial = cert.view.serial_number
        keys.append(certificate_key(cert.issuer, ("-" if serial < 0 else "") + f"{abs(serial):X}"))
    return keys


def parse_labels(pairs: Iterable[str], source: str = "labels") -> dict[str, str]:
    labels = {}
    for raw in pairs:
        pair = raw.strip()
        if not pair:
            continue
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InventoryError(f"{source}: label {pair[:80]!r} is not key=value")
        labels[key.strip()] = value.strip()
    return labels


def parse_inventory_csv(text: str, source: str) -> list[tuple[str, str, dict[str, str]]]:
    """(key, profile, labels) for each row of an inventory CSV file."""
    reader = csv.DictReader(io.StringIO(text))
    missing = {"profile"} - set(reader.fieldnames or ())
    unknown = set(reader.fieldnames or ()) - set(CSV_COLUMNS)
    if missing or unknown:
        raise InventoryError(
            f"{source}: the header must name columns among {', '.join(CSV_COLUMNS)} "
            f"(profile required); missing {sorted(missing)}, unknown {sorted(unknown)}"
        )
    rows = []
    for number, row in enumerate(reader, start=2):
        where = f"{source}:{number}"
        if None in row:
            raise InventoryError(f"{where}: more fields than the header names")
        fingerprint = (row.get("ek_fingerprint") or "").strip()
        issuer = (row.get("ek_issuer") or "").strip()
        serial = (row.get("ek_serial") or "").strip()
        profile = (row.get("profile") or "").strip()
        if not profile:
            raise InventoryError(f"{where}: no profile")
        if bool(fingerprint) == bool(issuer or serial):
            raise InventoryError(f"{where}: give either ek_fingerprint or ek_issuer and ek_serial")
        try:
            key = fingerprint_key(fingerprint) if fingerprint else certificate_key(issuer, serial)
        except InventoryError as exc:
            raise InventoryError(f"{where}: {exc}") from exc
        labels = parse_labels((row.get("labels") or "").split(";"), where)
        rows.append((key, profile, labels))
    return rows
