"""The software EK of the boot-storm benchmark against the verifier's own enrollment checks:
an EK the verifier accepts, a credential only the right EK and AK name can activate."""

from __future__ import annotations

import pytest

from simulator.softek import SoftEk
from simulator.softquote import SoftAk
from verifier.enrollment.credential import make_credential, new_secret
from verifier.enrollment.ekchain import Allowlist, ek_fingerprint
from verifier.enrollment.tpmpublic import check_ek, parse_tpm2b_public


def test_soft_ek_passes_the_verifiers_ek_checks_and_allowlist() -> None:
    ek = SoftEk.derive(7)
    parsed = parse_tpm2b_public(ek.tpm2b_public)
    check_ek(parsed)
    assert ek_fingerprint(parsed) == ek.fingerprint
    assert Allowlist.parse(ek.fingerprint + "\n").contains(parsed)


def test_credential_activates_to_the_secret() -> None:
    ek, ak, secret = SoftEk.derive(8), SoftAk.generate(), new_secret()
    blob, encrypted = make_credential(parse_tpm2b_public(ek.tpm2b_public), ak.name, secret)
    assert ek.activate_credential(blob, encrypted, ak.name) == secret


def test_credential_for_another_ak_name_is_refused() -> None:
    ek, ak, other = SoftEk.derive(9), SoftAk.generate(), SoftAk.generate()
    blob, encrypted = make_credential(parse_tpm2b_public(ek.tpm2b_public), ak.name, new_secret())
    with pytest.raises(ValueError, match="HMAC"):
        ek.activate_credential(blob, encrypted, other.name)


def test_credential_for_another_ek_is_refused() -> None:
    ek, thief, ak = SoftEk.derive(10), SoftEk.derive(11), SoftAk.generate()
    blob, encrypted = make_credential(parse_tpm2b_public(ek.tpm2b_public), ak.name, new_secret())
    with pytest.raises(ValueError, match="HMAC"):
        thief.activate_credential(blob, encrypted, ak.name)
