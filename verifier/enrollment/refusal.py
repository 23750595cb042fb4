"""The log line of a refused enrollment: what an operator needs to decide about the device.

``refusal_line(error, ek, ek_certificate)`` is one line of text (never a newline in it)::

    enrollment refused (UntrustedEndorsement): <error message>; EK fingerprint <fp>; <certificate>

- ``<fp>`` is ``ekchain.ek_fingerprint(ek)``: the 64 lowercase hex digits of SHA-256 over the
  EK's DER SubjectPublicKeyInfo, exactly a line ``Allowlist.parse`` accepts (and the device id
  without its ``dev-``); ``none (the EK public key did not parse)`` when there is no EK.
- ``<certificate>`` is ``EK certificate issuer '<RFC 4514 issuer>' serial <hex>``, the serial
  in upper-case hex, whole bytes, as ``openssl x509 -noout -serial`` prints it (``-`` before a
  negative serial, which real EK certificates carry); ``no EK certificate`` when the TPM sent
  none; ``EK certificate unreadable (<n> bytes)`` when it does not parse.

The issuer and the message come from what the device sent: every character that is not
printable (a newline, an escape sequence) is written as its Python escape, so a device cannot
forge or split log lines.
"""

from __future__ import annotations

from verifier.enrollment.ekchain import ek_fingerprint, parse_certificate
from verifier.enrollment.tpmpublic import TpmPublic
from verifier.errors import EnrollmentRefused, UntrustedEndorsement


def refusal_line(error: EnrollmentRefused, ek: TpmPublic | None, ek_certificate: bytes) -> str:
    fingerprint = ek_fingerprint(ek) if ek is not None else "none (the EK public key did not parse)"
    return _printable(
        f"enrollment refused ({type(error).__name__}): {error}; "
        f"EK fingerprint {fingerprint}; {certificate_summary(ek_certificate)}"
    )


def certificate_summary(ek_certificate: bytes) -> str:
    """``EK certificate issuer '<issuer>' serial <hex>``, or why there is none to show."""
    if not ek_certificate:
        return "no EK certificate"
    try:
        cert = parse_certificate(ek_certificate, "the EK certificate")
    except UntrustedEndorsement:
        return f"EK certificate unreadable ({len(ek_certificate)} bytes)"
    serial = cert.view.serial_number
    digits = f"{abs(serial):X}"
    digits = "0" * (len(digits) % 2) + digits  # whole bytes, as openssl prints them
    sign = "-" if serial < 0 else ""
    return f"EK certificate issuer {cert.issuer!r} serial {sign}{digits}"


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
