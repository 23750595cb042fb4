"""Verdict tokens: a ``Verdict`` as EAR claims, signed as an ES256 JWS.

The claims follow one published revision, draft-ietf-rats-ear-03 (15 March 2026): its EAT
profile (section 3, "It MUST be the following tag URI") and its JSON claim names (the CDDL of
figures 1 and 2 and the IANA section; the prose of section 3 still heads the top-level status
``ear.status``, but the CDDL's ``status-label`` and the registered JWT name are ``ear_status``).
``tests/data/token/draft-ietf-rats-ear-03-figure-3.json`` is that revision's JSON example and
the tests check these claims against it. Trustworthiness values are those of
draft-ietf-rats-ar4si. Veraison's own profile, ``tag:github.com,2023:veraison/ear``, names its
claims ``ear.status``, ``ear.verifier-id``, ...: it is not declared, and not accepted.

Claims::

    eat_profile      "tag:ietf.org,2026:rats/ear#03"
    iat nbf exp      signing time, the appraisal time, the earliest of the bounds below
    jti              random, unique per token (the verdict id is in the extension)
    iss sub aud      the verifier's issuer string, the device id, the relying party (optional)
    eat_nonce        the relying party's nonce, base64url (only when one was given)
    ear_verifier_id  {"developer": "fleet-attest", "build": "fleet-attest <version>"}
    ear_status       the worst status of the token (equals the submodule's)
    submods          {PROFILE or "boot": {ear_status, ear_trustworthiness_vector,
                                          ear_appraisal_policy_ids: [policy id]}}
    fleet-attest     {boot_epoch {reset_count, restart_count}, reasons [...], verdict_id,
                      sequence, profile, release, golden_digest, appraised_at}

``iss sub aud nbf jti`` are the registered JWT claims (the draft's extensibility follows JWT's
rules); ``fleet-attest`` is an unregistered extension, a map as the draft requires. The one
appraisal policy is the golden release the boot was judged against, identified as
``fleet-attest/golden/<profile>/<release>@<golden digest>`` (``-`` for an empty part), so the
list is never empty and its identifiers are unique.

``exp`` is the earliest of the verdict's ``expires_at`` (appraisal time + the profile's verdict
lifetime), the release's ``not_after``, the EK certificate's notAfter and, when the verifier
runs with ``--token-ttl``, signing time + that lifetime; no token is issued
once that moment has passed (``TokenExpired``).

Trustworthiness vector: every reason whose severity is not affirming lowers the claims its code
prefix names; each claim takes its worst value; a claim no reason touches keeps its affirming
value. An unrecognised code lowers ``configuration``, so a non-affirming reason is never lost::

    reason code prefix                  claim              affirming  warning     contraindicated
    ----------------------------------  -----------------  ---------  ----------  ---------------
    quote_ signature ak_ ek_ nonce      instance-identity  2          2 (a)       96 or 99 (b)
                                        hardware           2          32          96 or 99 (b)
    eventlog_ boot_chain pcr_ release_  executables        3 (c)      33 or 32    96
      no_release firmware                                             (d)
    secure_boot kernel_cmdline config   configuration      2          32          96
      sha1 bank, and any other code

(a) the draft defines no warning value for instance-identity: a warning about the quote lowers
``hardware`` (32, "genuine but known bugs or vulnerabilities") only.
(b) 99 "cryptographic validation failed" when the code contains ``signature``; otherwise 96
("recognized but not trustworthy" / "genuine but contraindicated").
(c) 3 "recognized and approved boot-time": the verifier appraises the boot chain only.
(d) 32 "recognized but known bugs or vulnerabilities" for ``release_`` codes (a retired but
still accepted release), otherwise 33 "unrecognized run-time".

The submodule's ``ear_status`` is the worst of the verdict's status, its reasons' severities and
the vector's tiers (AR4SI tiers: 2-31 affirming, 32-95 warning, 96-127 contraindicated), so a
token never claims more than its parts.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Iterable

from verifier import __version__
from verifier.errors import MalformedEvidence
from verifier.token.errors import TokenExpired
from verifier.token.jws import b64url_encode, json_bytes, sign_es256
from verifier.token.keys import SigningKey
from verifier.verdict import Reason, Status, Verdict, worst

# draft-ietf-rats-ear-03, section 3; the profile a token declares and the verifier requires.
EAT_PROFILE = "tag:ietf.org,2026:rats/ear#03"
# Veraison's 2023 profile (claims ``ear.status``, ...): named only to refuse it clearly.
VERAISON_2023_PROFILE = "tag:github.com,2023:veraison/ear"
EXTENSION = "fleet-attest"
DEVELOPER = "fleet-attest"
DEFAULT_SUBMOD = "boot"
MIN_NONCE_BYTES = 8  # EAT nonce bounds
MAX_NONCE_BYTES = 64
MAX_REASONS = 64  # more are counted in "reasons_omitted", keeping tokens small

INSTANCE_IDENTITY = "instance-identity"
HARDWARE = "hardware"
EXECUTABLES = "executables"
CONFIGURATION = "configuration"

AFFIRMING_VECTOR: dict[str, int] = {
    INSTANCE_IDENTITY: 2,  # recognized and not compromised
    HARDWARE: 2,  # genuine
    EXECUTABLES: 3,  # recognized and approved boot-time
    CONFIGURATION: 2,  # all recognized and approved
}
CRYPTO_VALIDATION_FAILED = 99

_IDENTITY_PREFIXES = ("quote_", "signature", "ak_", "ek_", "nonce")
_EXECUTABLE_PREFIXES = ("eventlog_", "boot_chain", "pcr_", "release_", "no_release", "firmware")


def tier(value: int) -> Status | None:
    """The AR4SI tier of a trustworthiness claim value; ``None`` for "no claim" (-1..1)."""
    magnitude = abs(value)
    if magnitude <= 1:
        return None
    if magnitude <= 31:
        return Status.AFFIRMING
    if magnitude <= 95:
        return Status.WARNING
    return Status.CONTRAINDICATED


def _claim_values(reason: Reason) -> dict[str, int]:
    """The claims one non-affirming reason lowers, and to what (the module's table)."""
    code = reason.code
    bad = reason.severity is Status.CONTRAINDICATED
    if code.startswith(_IDENTITY_PREFIXES):
        if not bad:
            return {HARDWARE: 32}
        value = CRYPTO_VALIDATION_FAILED if "signature" in code else 96
        return {INSTANCE_IDENTITY: value, HARDWARE: value}
    if code.startswith(_EXECUTABLE_PREFIXES):
        if bad:
            return {EXECUTABLES: 96}
        return {EXECUTABLES: 32 if code.startswith("release_") else 33}
    return {CONFIGURATION: 96 if bad else 32}


def _badness(value: int) -> tuple[int, int]:
    level = tier(value)
    return (-1 if level is None else level.rank, value)


def trust_vector(reasons: Iterable[Reason]) -> dict[str, int]:
    """The trustworthiness vector a set of reasons leads to (worst value per claim)."""
    vector = dict(AFFIRMING_VECTOR)
    for reason in reasons:
        if reason.severity is Status.AFFIRMING:
            continue
        for claim, value in _claim_values(reason).items():
            if _badness(value) > _badness(vector[claim]):
                vector[claim] = value
    return vector


def token_status(verdict: Verdict, vector: dict[str, int]) -> Status:
    """The worst of the verdict's status, its reasons and the vector's tiers."""
    status = worst((Reason("", "", verdict.status), *verdict.reasons))
    for value in vector.values():
        level = tier(value)
        if level is not None and level.rank > status.rank:
            status = level
    return status


def token_expiry(
    verdict: Verdict,
    release_not_after: float | None,
    ek_not_after: float | None,
    not_after: float | None = None,
) -> int:
    """``exp``: the earliest of the verdict's expiry, the release's and the EK's not-after
    and the verifier's own bound on token lifetime (``not_after``: now + ``--token-ttl``)."""
    bounds = [verdict.expires_at]
    bounds += [b for b in (release_not_after, ek_not_after, not_after) if b is not None]
    return math.floor(min(bounds))


def policy_id(verdict: Verdict) -> str:
    """The identifier of the golden release ``verdict`` was judged against (never empty)."""
    profile, release, digest = (
        p or "-" for p in (verdict.profile, verdict.release, verdict.golden_digest)
    )
    return f"{EXTENSION}/golden/{profile}/{release}@{digest}"


def _reason_claim(reason: Reason) -> dict[str, object]:
    claim: dict[str, object] = {
        "code": reason.code,
        "text": reason.text,
        "severity": reason.severity.value,
        "expected": reason.expected,
        "actual": reason.actual,
        "release": reason.release,
        "rule": reason.rule,
    }
    if reason.pcr is not None:
        claim["pcr"] = reason.pcr
    if reason.event_index is not None:
        claim["event_index"] = reason.event_index
    return claim


def _extension(verdict: Verdict) -> dict[str, object]:
    ext: dict[str, object] = {
        "boot_epoch": {
            "reset_count": verdict.boot_epoch.reset_count,
            "restart_count": verdict.boot_epoch.restart_count,
        },
        "reasons": [_reason_claim(r) for r in verdict.reasons[:MAX_REASONS]],
        "verdict_id": verdict.verdict_id,
        "sequence": verdict.sequence,
        "profile": verdict.profile,
        "release": verdict.release,
        "golden_digest": verdict.golden_digest,
        "appraised_at": verdict.issued_at,
    }
    if len(verdict.reasons) > MAX_REASONS:
        ext["reasons_omitted"] = len(verdict.reasons) - MAX_REASONS
    return ext


def _check_nonce(nonce: bytes) -> None:
    if not MIN_NONCE_BYTES <= len(nonce) <= MAX_NONCE_BYTES:
        raise MalformedEvidence(
            f"relying-party nonce must be {MIN_NONCE_BYTES}-{MAX_NONCE_BYTES} bytes, "
            f"got {len(nonce)}"
        )


def build_claims(
    verdict: Verdict,
    *,
    issuer: str,
    now: float,
    release_not_after: float | None = None,
    ek_not_after: float | None = None,
    nonce: bytes | None = None,
    audience: str | None = None,
    jti: str | None = None,
    not_after: float | None = None,
) -> dict[str, object]:
    """The EAR claims set of ``verdict`` as signed at ``now`` (see the module docstring)."""
    if not verdict.device_id or not issuer:
        raise MalformedEvidence("a verdict token needs a device id and an issuer")
    iat = math.floor(now)
    exp = token_expiry(verdict, release_not_after, ek_not_after, not_after)
    if exp <= now:
        raise TokenExpired(
            f"verdict for {verdict.device_id} is no longer valid (bound {exp} <= now {iat}): "
            "no token is issued for it"
        )
    vector = trust_vector(verdict.reasons)
    status = token_status(verdict, vector).value
    claims: dict[str, object] = {
        "eat_profile": EAT_PROFILE,
        "iat": iat,
        "nbf": min(math.floor(verdict.issued_at), iat),
        "exp": exp,
        "jti": jti if jti is not None else b64url_encode(secrets.token_bytes(16)),
        "iss": issuer,
        "sub": verdict.device_id,
        "ear_verifier_id": {"developer": DEVELOPER, "build": f"fleet-attest {__version__}"},
        "ear_status": status,
        "submods": {
            verdict.profile or DEFAULT_SUBMOD: {
                "ear_status": status,
                "ear_trustworthiness_vector": vector,
                "ear_appraisal_policy_ids": [policy_id(verdict)],
            }
        },
        EXTENSION: _extension(verdict),
    }
    if audience is not None:
        claims["aud"] = audience
    if nonce is not None:
        _check_nonce(nonce)
        claims["eat_nonce"] = b64url_encode(nonce)
    return claims


def issue_token(
    verdict: Verdict,
    key: SigningKey,
    *,
    issuer: str,
    now: float,
    release_not_after: float | None,
    ek_not_after: float | None,
    nonce: bytes | None = None,
    audience: str | None = None,
    not_after: float | None = None,
) -> str:
    """Sign ``verdict`` as a compact ES256 JWS of its EAR claims, with ``key``'s ``kid``;
    ``not_after`` bounds ``exp`` further (the verifier's ``--token-ttl``)."""
    claims = build_claims(
        verdict,
        issuer=issuer,
        now=now,
        release_not_after=release_not_after,
        ek_not_after=ek_not_after,
        nonce=nonce,
        audience=audience,
        not_after=not_after,
    )
    return sign_es256(key.private_key, key.kid, json_bytes(claims))
