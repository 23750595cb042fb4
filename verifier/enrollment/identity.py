"""The device id: a function of the EK public key and nothing else.

``device_id_for(ek)`` is ``"dev-"`` followed by the 64 lowercase hex digits of SHA-256 over the
DER SubjectPublicKeyInfo of the EK public key (the same digest the EK allowlist uses, see
``verifier.enrollment.ekchain.ek_fingerprint``). Labels, certificates and anything else the
agent sends play no part, so claiming another device's id means presenting its EK, and a
credential encrypted to that EK can only be activated by its TPM.
"""

from __future__ import annotations

from verifier.enrollment.ekchain import ek_fingerprint
from verifier.enrollment.tpmpublic import TpmPublic

PREFIX = "dev-"


def device_id_for(ek: TpmPublic) -> str:
    return PREFIX + ek_fingerprint(ek)
