"""Verdict tokens against draft-ietf-rats-ear-03's own JSON example (section 3.2.1, figure 3).

The example is read here with plain ``json`` and the draft's claim names written out below, not
with anything from ``verifier.token``, so a name our encoder and our verifier agree on but the
draft does not use (``ear.status``, ``ear.verifier-id``, ...) fails these tests.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from verifier.token import (
    KeyRing,
    TokenClaimMismatch,
    TokenMalformed,
    build_claims,
    issue_token,
    verify_token,
)
from verifier.verdict import BootEpoch, Reason, Status, Verdict

EXAMPLE = Path(__file__).parent / "data" / "token" / "draft-ietf-rats-ear-03-figure-3.json"

# draft-ietf-rats-ear-03: the profile (section 3) and the JSON claim names (figures 1 and 2).
DRAFT_PROFILE = "tag:ietf.org,2026:rats/ear#03"
DRAFT_EAR_CLAIMS = {
    "eat_profile": str,
    "ear_status": str,
    "iat": int,
    "exp": int,
    "ear_verifier_id": dict,
    "ear_raw_evidence": str,
    "submods": dict,
    "eat_nonce": str,
}
DRAFT_APPRAISAL_CLAIMS = {
    "eat_profile": str,
    "ear_status": str,
    "ear_trustworthiness_vector": dict,
    "ear_appraisal_policy_ids": list,
    "eat_nonce": str,
}
DRAFT_VERIFIER_ID = {"developer": str, "build": str}
# draft-ietf-rats-ar4si trustworthiness claims and tiers, as the draft's ar4si.cddl spells them.
AR4SI_CLAIMS = {
    "instance-identity",
    "configuration",
    "executables",
    "file-system",
    "hardware",
    "runtime-opaque",
    "storage-opaque",
    "sourced-data",
}
AR4SI_TIERS = {"none", "affirming", "warning", "contraindicated"}
# Registered JWT claims (RFC 7519 section 4.1) a fleet-attest token adds, and its extension.
JWT_CLAIMS = {"iss": str, "sub": str, "aud": str, "nbf": int, "jti": str}
EXTENSION = "fleet-attest"

NOW = 1_800_000_000.0
ISSUER = "https://verifier.fleet.example"
DEVICE = "dev-aaaaaaaaaaaaaaaa"


def strict_load(data: bytes) -> dict[str, Any]:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        assert len(keys) == len(set(keys)), f"duplicate member in {keys}"
        return dict(pairs)

    value = json.loads(data, object_pairs_hook=no_duplicates)
    assert isinstance(value, dict)
    return value


def draft_example() -> dict[str, Any]:
    return strict_load(EXAMPLE.read_bytes())


def check_draft_appraisal(appraisal: dict[str, Any]) -> None:
    """An ``EAR-appraisal`` as draft-03 figure 2 defines it (the checks are the draft's)."""
    assert set(appraisal) <= set(DRAFT_APPRAISAL_CLAIMS)
    for name, value in appraisal.items():
        assert type(value) is DRAFT_APPRAISAL_CLAIMS[name], name
    assert appraisal["ear_status"] in AR4SI_TIERS  # mandatory
    vector = appraisal["ear_trustworthiness_vector"]
    assert vector and set(vector) <= AR4SI_CLAIMS
    assert all(type(v) is int and -128 <= v <= 127 for v in vector.values())
    ids = appraisal.get("ear_appraisal_policy_ids", ["-"])
    assert ids and all(type(i) is str for i in ids) and len(set(ids)) == len(ids)


def shape(value: Any) -> Any:
    """The key names and value types of a JSON value, at every nesting level."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [sorted({json.dumps(shape(v), sort_keys=True) for v in value})]
    return type(value).__name__


def make_verdict(status: Status = Status.AFFIRMING, reasons: tuple[Reason, ...] = ()) -> Verdict:
    return Verdict(
        device_id=DEVICE,
        status=status,
        reasons=reasons,
        profile="edge-gateway",
        release="2024.06",
        golden_digest="sha256:" + "ab" * 32,
        boot_epoch=BootEpoch(reset_count=7, restart_count=1),
        issued_at=NOW - 10,
        expires_at=NOW + 3600,
        verdict_id="verdict-0001",
        sequence=42,
    )


def our_claims() -> dict[str, Any]:
    reason = Reason("pcr_mismatch", "PCR 4 differs", Status.CONTRAINDICATED, pcr=4)
    verdict = make_verdict(Status.CONTRAINDICATED, (reason,))
    claims = build_claims(verdict, issuer=ISSUER, now=NOW, nonce=b"n" * 16, audience="rp")
    return strict_load(json.dumps(claims).encode())


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(key: ec.EllipticCurvePrivateKey, kid: str, claims: dict[str, Any]) -> str:
    """An ES256 compact JWS made here, not by ``verifier.token.jws``."""
    header = json.dumps({"alg": "ES256", "typ": "JWT", "kid": kid}).encode()
    signing_input = f"{b64url(header)}.{b64url(json.dumps(claims).encode())}"
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


@pytest.fixture
def ring(tmp_path: Path) -> KeyRing:
    return KeyRing.open(tmp_path / "keys", NOW)


def test_draft_example_is_an_ear_of_draft_03_by_its_own_names() -> None:
    example = draft_example()
    assert example["eat_profile"] == DRAFT_PROFILE
    assert set(example) <= set(DRAFT_EAR_CLAIMS)
    for name, value in example.items():
        assert type(value) is DRAFT_EAR_CLAIMS[name], name
    assert {k: type(v) for k, v in example["ear_verifier_id"].items()} == DRAFT_VERIFIER_ID
    evidence = example["ear_raw_evidence"]  # binary-data: base64url text
    assert base64.urlsafe_b64decode(evidence + "=" * (-len(evidence) % 4))
    assert len(example["submods"]) == 1
    for appraisal in example["submods"].values():
        check_draft_appraisal(appraisal)


def test_our_claims_use_the_draft_names_and_profile() -> None:
    ours = our_claims()
    assert ours["eat_profile"] == DRAFT_PROFILE
    for name, value in ours.items():
        if name == EXTENSION:
            assert isinstance(value, dict)  # section 4: an extension MUST be a map
            continue
        expected = DRAFT_EAR_CLAIMS.get(name) or JWT_CLAIMS.get(name)
        assert expected is not None, f"{name!r} is neither a draft-03 nor a JWT claim"
        assert type(value) is expected, name
    assert ours["ear_status"] in AR4SI_TIERS
    assert {k: type(v) for k, v in ours["ear_verifier_id"].items()} == DRAFT_VERIFIER_ID
    for appraisal in ours["submods"].values():
        check_draft_appraisal(appraisal)


def test_our_claims_have_the_structure_of_the_draft_example() -> None:
    example, ours = shape(draft_example()), shape(our_claims())
    for name in ("eat_profile", "iat", "ear_verifier_id"):
        assert ours[name] == example[name], name
    ((example_appraisal,),) = [list(example["submods"].values())]
    ((our_appraisal,),) = [list(ours["submods"].values())]
    assert set(our_appraisal) == set(example_appraisal)
    for name in ("ear_status", "ear_appraisal_policy_ids"):
        assert our_appraisal[name] == example_appraisal[name], name
    example_vector = example_appraisal["ear_trustworthiness_vector"]
    our_vector = our_appraisal["ear_trustworthiness_vector"]
    assert set(example_vector) <= set(our_vector) <= AR4SI_CLAIMS
    assert set(our_vector.values()) == set(example_vector.values()) == {"int"}


def test_veraison_2023_names_appear_nowhere_in_our_claims() -> None:
    def names(value: Any) -> set[str]:
        if isinstance(value, dict):
            return set(value).union(*(names(v) for v in value.values()))
        if isinstance(value, list):
            return set().union(*(names(v) for v in value))
        return set()

    found = {n for n in names(our_claims()) if n.startswith(("ear.", "ear-"))}
    assert not found


def test_verifier_accepts_a_token_of_the_draft_example_claims(ring: KeyRing) -> None:
    example = draft_example()
    fleet = our_claims()
    iat = example["iat"]
    claims = {
        **example,  # the draft's EAR claims as written: no top-level ear_status, submod "PSA"
        "iss": ISSUER,
        "sub": DEVICE,
        "nbf": iat,
        "exp": iat + 3600,
        "jti": "draft-example",
        EXTENSION: fleet[EXTENSION],
    }
    token = sign(ring.signing_key.private_key, ring.signing_key.kid, claims)
    verified = verify_token(
        token,
        ring.jwks(NOW),
        issuer=ISSUER,
        audience=None,
        subject=DEVICE,
        now=iat + 60,
        require_status=None,
    )
    psa = example["submods"]["PSA"]
    assert verified.submod == "PSA"
    assert verified.status is Status.CONTRAINDICATED
    assert verified.trust_vector == psa["ear_trustworthiness_vector"]
    assert verified.policy_ids == tuple(psa["ear_appraisal_policy_ids"])
    assert verified.raw_evidence == base64.urlsafe_b64decode(example["ear_raw_evidence"])
    with pytest.raises(TokenClaimMismatch, match="contraindicated"):
        verify_token(
            token, ring.jwks(NOW), issuer=ISSUER, audience=None, subject=DEVICE, now=iat + 60
        )


def test_token_declaring_veraisons_2023_profile_is_rejected(ring: KeyRing) -> None:
    claims = our_claims()
    claims.pop("aud")
    claims["eat_profile"] = "tag:github.com,2023:veraison/ear"
    token = sign(ring.signing_key.private_key, ring.signing_key.kid, claims)
    with pytest.raises(TokenClaimMismatch, match="Veraison's 2023 profile"):
        verify_token(
            token,
            ring.jwks(NOW),
            issuer=ISSUER,
            audience=None,
            subject=DEVICE,
            now=NOW,
            require_status=None,
        )


def test_veraison_claim_names_under_the_draft_profile_are_rejected(ring: KeyRing) -> None:
    claims = our_claims()
    claims.pop("aud")
    claims["ear.status"] = claims.pop("ear_status")
    for appraisal in claims["submods"].values():
        appraisal["ear.status"] = appraisal.pop("ear_status")
        appraisal["ear.trustworthiness-vector"] = appraisal.pop("ear_trustworthiness_vector")
    token = sign(ring.signing_key.private_key, ring.signing_key.kid, claims)
    with pytest.raises(TokenMalformed):
        verify_token(
            token,
            ring.jwks(NOW),
            issuer=ISSUER,
            audience=None,
            subject=DEVICE,
            now=NOW,
            require_status=None,
        )


@pytest.mark.parametrize("ids", [[], ["a", "a"], "policy", [1]])
def test_policy_ids_that_the_draft_forbids_are_rejected(ring: KeyRing, ids: object) -> None:
    claims = our_claims()
    claims.pop("aud")
    for appraisal in claims["submods"].values():
        appraisal["ear_appraisal_policy_ids"] = ids
    token = sign(ring.signing_key.private_key, ring.signing_key.kid, claims)
    with pytest.raises(TokenMalformed, match="ear_appraisal_policy_ids"):
        verify_token(
            token,
            ring.jwks(NOW),
            issuer=ISSUER,
            audience=None,
            subject=DEVICE,
            now=NOW,
            require_status=None,
        )


def test_issued_token_round_trips_its_policy_id(ring: KeyRing) -> None:
    token = issue_token(
        make_verdict(),
        ring.signing_key,
        issuer=ISSUER,
        now=NOW,
        release_not_after=None,
        ek_not_after=None,
    )
    verified = verify_token(
        token, ring.jwks(NOW), issuer=ISSUER, audience=None, subject=DEVICE, now=NOW
    )
    assert verified.policy_ids == ("fleet-attest/golden/edge-gateway/2024.06@sha256:" + "ab" * 32,)
    assert verified.raw_evidence is None
