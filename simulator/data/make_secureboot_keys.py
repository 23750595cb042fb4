"""Generate the simulator's test Secure Boot certificates (run once; the output is committed).

Writes PK.der, KEK.der, db.der and db-extra.der next to this script: a self-signed Platform
Key, a KEK signed by the PK, and two db certificates signed by the KEK (the first is the one
that "verified" shim in the simulated boots). The private keys exist only in memory while this
script runs and are never written: the simulator needs certificates only, because its firmware
measures the enrolled certificates and never signs or verifies anything. These are TEST keys:
they protect nothing and must never be enrolled on a real machine.

Usage: python simulator/data/make_secureboot_keys.py
"""

from __future__ import annotations

import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

HERE = Path(__file__).resolve().parent
NOT_BEFORE = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
NOT_AFTER = datetime.datetime(2049, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fleet-attest simulator (TEST ONLY)"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _certificate(
    subject: str,
    key: rsa.RSAPrivateKey,
    issuer: str,
    issuer_key: rsa.RSAPrivateKey,
    serial: int,
    ca: bool,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    return builder.sign(issuer_key, hashes.SHA256())


def main() -> None:
    keys = {n: rsa.generate_private_key(public_exponent=65537, key_size=2048) for n in range(4)}
    pk_name, kek_name = "Fleet Test Platform Key", "Fleet Test KEK CA"
    certs = {
        "PK.der": _certificate(pk_name, keys[0], pk_name, keys[0], 0x1001, True),
        "KEK.der": _certificate(kek_name, keys[1], pk_name, keys[0], 0x1002, True),
        "db.der": _certificate("Fleet Test UEFI CA", keys[2], kek_name, keys[1], 0x1003, True),
        "db-extra.der": _certificate(
            "Fleet Test Option ROM CA", keys[3], kek_name, keys[1], 0x1004, True
        ),
    }
    for file_name, cert in certs.items():
        (HERE / file_name).write_bytes(cert.public_bytes(serialization.Encoding.DER))
        print(f"wrote {HERE / file_name}")


if __name__ == "__main__":
    main()
