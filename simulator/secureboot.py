"""Secure Boot state of a simulated device: enrolled certificates, dbx, and their variables.

The certificates are the committed TEST certificates in ``simulator/data`` (see its README and
``make_secureboot_keys.py``); they are read once and cached. ``SecureBootConfig`` is a frozen
value; ``variables`` turns it into the (name, vendor GUID, value) triples the firmware measures
into PCR 7, in the order EDK2 measures them: SecureBoot, PK, KEK, db, dbx.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from simulator import efi

DATA_DIR = Path(__file__).resolve().parent / "data"


@cache
def certificate(file_name: str) -> bytes:
    """A committed test certificate (DER) from ``simulator/data``."""
    return (DATA_DIR / file_name).read_bytes()


def fingerprint(der: bytes) -> bytes:
    """SHA-256 of a DER certificate: what golden ``db_contains`` rules name."""
    return hashlib.sha256(der).digest()


def pk_certificate() -> bytes:
    return certificate("PK.der")


def kek_certificate() -> bytes:
    return certificate("KEK.der")


def db_certificates() -> tuple[bytes, ...]:
    """db: the CA that verifies shim first, then an unrelated CA."""
    return (certificate("db.der"), certificate("db-extra.der"))


# Two revoked image hashes: fixed, made-up values (SHA-256 of a label).
DEFAULT_DBX = (
    hashlib.sha256(b"fleet-attest test dbx: revoked bootloader 1").digest(),
    hashlib.sha256(b"fleet-attest test dbx: revoked bootloader 2").digest(),
)


@dataclass(frozen=True)
class SecureBootConfig:
    """Secure Boot state and databases. ``authority`` indexes the db entry that verified shim."""

    enabled: bool
    pk: tuple[bytes, ...]
    kek: tuple[bytes, ...]
    db: tuple[bytes, ...]
    dbx: tuple[bytes, ...]
    owner: bytes = efi.FLEET_OWNER_GUID
    authority: int = 0

    def __post_init__(self) -> None:
        if self.enabled and not 0 <= self.authority < len(self.db):
            raise ValueError(f"authority index {self.authority} is outside db")

    def variables(self) -> tuple[tuple[str, bytes, bytes], ...]:
        """(name, vendor GUID, value) of SecureBoot, PK, KEK, db, dbx, in measurement order."""
        g, s = efi.EFI_GLOBAL_VARIABLE, efi.EFI_IMAGE_SECURITY_DATABASE_GUID
        return (
            ("SecureBoot", g, b"\x01" if self.enabled else b"\x00"),
            ("PK", g, efi.x509_signature_lists(self.owner, self.pk)),
            ("KEK", g, efi.x509_signature_lists(self.owner, self.kek)),
            ("db", s, efi.x509_signature_lists(self.owner, self.db)),
            ("dbx", s, efi.sha256_signature_list(self.owner, self.dbx)),
        )

    def authority_data(self) -> bytes:
        """EV_EFI_VARIABLE_AUTHORITY data: db's EFI_SIGNATURE_DATA that verified shim."""
        entry = efi.signature_data(self.owner, self.db[self.authority])
        return efi.variable_data(efi.EFI_IMAGE_SECURITY_DATABASE_GUID, "db", entry)


def default_secure_boot(enabled: bool = True) -> SecureBootConfig:
    """The test PK/KEK/db from ``simulator/data`` and the default dbx."""
    return SecureBootConfig(
        enabled=enabled,
        pk=(pk_certificate(),),
        kek=(kek_certificate(),),
        db=db_certificates(),
        dbx=DEFAULT_DBX,
    )
