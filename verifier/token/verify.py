"""Offline verification of verdict tokens, for relying parties (update servers, the CLI).

``verify_token`` trusts nothing in the token until the signature verifies with a key the caller
pinned (a JWKS exported by the verifier, or public keys by ``kid``); no key is ever taken from
the token (``jwk``, ``jku``, ``x5u``, ``x5c`` headers are refused outright).

Order of checks (each raises a ``TokenError`` subclass; the first failure wins):
1. structure and header (``jws.parse_compact``): size, three canonical base64url parts, strict
   JSON header, ``alg`` exactly ES256, no header member but ``alg typ kid``, 64-byte signature;
2. ``kid`` names a pinned key (``TokenKeyUnknown``), and the signature verifies with it;
3. the payload is a strict JSON object (no duplicate members) whose ``eat_profile`` is the one
   of draft-ietf-rats-ear-03 (``ear.EAT_PROFILE``); any other, Veraison's 2023 tag included,
   is refused before a claim is read, since the profile says what the claim names mean;
4. every required claim is typed (the draft's optional ``ear_raw_evidence`` and
   ``ear_appraisal_policy_ids`` too, when present), and ``iss`` is the expected issuer;
5. ``aud``: when the caller names an audience, the token must be for it; a token that names an
   audience is refused by a caller that names none (RFC 7519 section 4.1.3);
6. ``sub`` is the expected device, when the caller names one;
7. time, with ``leeway`` seconds of skew: ``now < exp + leeway`` else ``TokenExpired``;
   ``nbf`` and ``iat`` not after ``now + leeway`` else ``TokenNotYetValid``;
8. ``eat_nonce`` equals the caller's nonce (constant-time), when the caller sent one;
9. status: the worst of the top-level ``ear_status`` (optional in the draft), the submodule's
   (mandatory), and every trustworthiness claim's tier must be no worse than
   ``require_status`` (``None``: any).

Claims the draft does not define and fleet-attest does not use are ignored, as the draft
requires of a receiver ("A receiver MUST ignore any unknown claim", section 4).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from verifier.token.ear import EAT_PROFILE, EXTENSION, VERAISON_2023_PROFILE, tier
from verifier.token.errors import (
    KeyRingError,
    TokenClaimMismatch,
    TokenExpired,
    TokenKeyUnknown,
    TokenMalformed,
    TokenNotYetValid,
)
from verifier.token.jws import (
    JsonObject,
    b64url_decode,
    parse_compact,
    strict_json_object,
    verify_es256,
)
from verifier.token.keys import jwk_thumbprint, public_key_from_jwk
from verifier.verdict import BootEpoch, Reason, Status

DEFAULT_LEEWAY = 30.0
_MAX_JWKS_KEYS = 32


class PinnedKeys:
    """Public keys a relying party trusts, by ``kid``. Parse once, verify many tokens."""

    def __init__(self, keys: Mapping[str, ec.EllipticCurvePublicKey]):
        for kid, key in keys.items():
            if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(
                key.curve, ec.SECP256R1
            ):
                raise KeyRingError(f"pinned key {kid!r} is not a P-256 public key")
        self._keys = dict(keys)

    @classmethod
    def from_jwks(cls, jwks: Mapping[str, object]) -> PinnedKeys:
        entries = jwks.get("keys")
        if not isinstance(entries, list) or not entries or len(entries) > _MAX_JWKS_KEYS:
            raise KeyRingError(f"a JWKS needs 1-{_MAX_JWKS_KEYS} entries under 'keys'")
        keys: dict[str, ec.EllipticCurvePublicKey] = {}
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str):
                raise KeyRingError("every JWKS entry must be an object with a kid")
            kid = str(entry["kid"])
            if kid in keys:
                raise KeyRingError(f"duplicate kid {kid!r} in JWKS")
            keys[kid] = public_key_from_jwk(entry)
        return cls(keys)

    @classmethod
    def from_public_keys(cls, keys: Sequence[ec.EllipticCurvePublicKey]) -> PinnedKeys:
        """Pin keys by their RFC 7638 thumbprint, the ``kid`` the verifier uses."""
        return cls({jwk_thumbprint(key): key for key in keys})

    @classmethod
    def load(cls, path: Path | str) -> PinnedKeys:
        """Read a JWKS file exported by ``KeyRing.export_jwks``."""
        try:
            data = Path(path).read_bytes()
            jwks = strict_json_object(data, str(path))
        except (OSError, TokenMalformed) as exc:
            raise KeyRingError(f"cannot load JWKS {path}: {exc}") from exc
        return cls.from_jwks(jwks)

    def get(self, kid: str) -> ec.EllipticCurvePublicKey | None:
        return self._keys.get(kid)

    def kids(self) -> tuple[str, ...]:
        return tuple(self._keys)


KeySource = PinnedKeys | Mapping[str, object] | Sequence[ec.EllipticCurvePublicKey]


def pinned_keys(source: KeySource) -> PinnedKeys:
    """Accept a ``PinnedKeys``, a JWKS dict, a ``kid -> key`` mapping or a list of keys."""
    if isinstance(source, PinnedKeys):
        return source
    if isinstance(source, Mapping):
        if "keys" in source:
            return PinnedKeys.from_jwks(source)
        keys: dict[str, ec.EllipticCurvePublicKey] = {}
        for kid, key in source.items():
            if not isinstance(key, ec.EllipticCurvePublicKey):
                raise KeyRingError(f"pinned key {kid!r} is not an EC public key")
            keys[str(kid)] = key
        return PinnedKeys(keys)
    return PinnedKeys.from_public_keys(list(source))


@dataclass(frozen=True)
class Claims:
    """The verified claims of a verdict token, typed."""

    issuer: str
    subject: str
    audience: tuple[str, ...]
    issued_at: int
    not_before: int
    expires_at: int
    jti: str
    kid: str
    status: Status
    submod: str
    trust_vector: dict[str, int]
    policy_ids: tuple[str, ...]
    profile: str
    release: str
    golden_digest: str
    boot_epoch: BootEpoch
    verdict_id: str
    sequence: int
    appraised_at: float
    reasons: tuple[Reason, ...]
    nonce: bytes | None
    raw_evidence: bytes | None
    raw: JsonObject = field(repr=False, compare=False)


def verify_token(
    token: str,
    jwks: KeySource,
    *,
    issuer: str,
    audience: str | None,
    subject: str | None,
    now: float,
    leeway: float = DEFAULT_LEEWAY,
    require_status: str | None = "affirming",
    nonce: bytes | None = None,
) -> Claims:
    """Verify ``token`` offline and return its claims; raise a ``TokenError`` otherwise."""
    if leeway < 0:
        raise ValueError("leeway must not be negative")
    required = None if require_status is None else _status(require_status, "require_status")
    parsed = parse_compact(token)
    key = pinned_keys(jwks).get(parsed.kid)
    if key is None:
        raise TokenKeyUnknown(f"no pinned key has kid {parsed.kid!r} (unknown or retired)")
    verify_es256(key, parsed)
    raw = strict_json_object(parsed.payload, "claims")
    _check_profile(raw)
    claims = _typed_claims(raw, parsed.kid)
    _check_identity(claims, issuer=issuer, audience=audience, subject=subject)
    _check_time(claims, now=now, leeway=leeway)
    _check_nonce(claims, nonce)
    if required is not None and claims.status.rank > required.rank:
        raise TokenClaimMismatch(
            f"verdict for {claims.subject} is {claims.status.value}, {required.value} is required"
        )
    return claims


def _check_profile(raw: JsonObject) -> None:
    profile = raw.get("eat_profile")
    if profile == VERAISON_2023_PROFILE:
        raise TokenClaimMismatch(
            f"eat_profile {profile!r} is Veraison's 2023 profile (claims named ear.status, ...); "
            f"only {EAT_PROFILE!r} (draft-ietf-rats-ear-03) is accepted: fetch a new token"
        )
    if profile != EAT_PROFILE:
        raise TokenClaimMismatch(f"eat_profile is not {EAT_PROFILE!r}")


def _check_identity(
    claims: Claims,
    *,
    issuer: str,
    audience: str | None,
    subject: str | None,
) -> None:
    if claims.issuer != issuer:
        raise TokenClaimMismatch(f"issuer {claims.issuer!r} is not the expected {issuer!r}")
    if audience is None and claims.audience:
        raise TokenClaimMismatch("token is for a named audience, and none was expected")
    if audience is not None and audience not in claims.audience:
        raise TokenClaimMismatch(f"token is not for audience {audience!r}")
    if subject is not None and claims.subject != subject:
        raise TokenClaimMismatch(f"token is for device {claims.subject!r}, not for {subject!r}")


def _check_time(claims: Claims, *, now: float, leeway: float) -> None:
    if now >= claims.expires_at + leeway:
        raise TokenExpired(f"token expired at {claims.expires_at} (now {now:.0f})")
    if claims.not_before > now + leeway:
        raise TokenNotYetValid(f"token not valid before {claims.not_before} (now {now:.0f})")
    if claims.issued_at > now + leeway:
        raise TokenNotYetValid(f"token issued in the future at {claims.issued_at}")


def _check_nonce(claims: Claims, nonce: bytes | None) -> None:
    if nonce is None:
        return
    if claims.nonce is None or not hmac.compare_digest(claims.nonce, nonce):
        raise TokenClaimMismatch("eat_nonce does not echo the relying party's nonce")


# ---- typed access to the claims set ---------------------------------------------------------


def _str(obj: Mapping[str, object], name: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str):
        raise TokenMalformed(f"claim {name!r} must be a string")
    return value


def _int(obj: Mapping[str, object], name: str) -> int:
    value = obj.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TokenMalformed(f"claim {name!r} must be an integer")
    return value


def _num(obj: Mapping[str, object], name: str) -> float:
    value = obj.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenMalformed(f"claim {name!r} must be a number")
    return float(value)


def _obj(obj: Mapping[str, object], name: str) -> JsonObject:
    value = obj.get(name)
    if not isinstance(value, dict):
        raise TokenMalformed(f"claim {name!r} must be an object")
    return value


def _status(value: object, name: str) -> Status:
    try:
        return Status(value)
    except ValueError as exc:
        raise TokenMalformed(f"{name} {value!r} is not an EAR status") from exc


def _audience(raw: JsonObject) -> tuple[str, ...]:
    aud = raw.get("aud")
    if aud is None:
        return ()
    if isinstance(aud, str):
        return (aud,)
    if isinstance(aud, list) and all(isinstance(a, str) for a in aud):
        return tuple(str(a) for a in aud)
    raise TokenMalformed("claim 'aud' must be a string or a list of strings")


def _nonce(raw: JsonObject) -> bytes | None:
    if "eat_nonce" not in raw:
        return None
    return b64url_decode(_str(raw, "eat_nonce"))


def _raw_evidence(raw: JsonObject) -> bytes | None:
    if "ear_raw_evidence" not in raw:
        return None
    return b64url_decode(_str(raw, "ear_raw_evidence"))


def _policy_ids(submod: JsonObject) -> tuple[str, ...]:
    """``ear_appraisal_policy_ids``: when present, a non-empty list of unique strings."""
    if "ear_appraisal_policy_ids" not in submod:
        return ()
    ids = submod["ear_appraisal_policy_ids"]
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise TokenMalformed("claim 'ear_appraisal_policy_ids' must be a non-empty string list")
    if len(set(ids)) != len(ids):
        raise TokenMalformed("claim 'ear_appraisal_policy_ids' repeats an identifier")
    return tuple(str(i) for i in ids)


def _vector(submod: JsonObject) -> dict[str, int]:
    vector = _obj(submod, "ear_trustworthiness_vector")
    values = {name: _int(vector, name) for name in vector}
    if any(not -128 <= v <= 127 for v in values.values()):
        raise TokenMalformed("trustworthiness claims are between -128 and 127")
    return values


def _worst_status(raw: JsonObject) -> tuple[Status, str, JsonObject, dict[str, int]]:
    """Worst of the top-level status (when present), the submodule's and each claim's tier."""
    levels = [] if "ear_status" not in raw else [_status(raw["ear_status"], "ear_status")]
    submods = _obj(raw, "submods")
    if len(submods) != 1:
        raise TokenMalformed("a verdict token has exactly one submodule")
    ((name, value),) = submods.items()
    if not isinstance(value, dict):
        raise TokenMalformed(f"submodule {name!r} must be an object")
    vector = _vector(value)
    levels.append(_status(value.get("ear_status"), "submodule ear_status"))
    levels += [t for t in map(tier, vector.values()) if t is not None]
    return max(levels, key=lambda s: s.rank), name, value, vector


def _reason(entry: object) -> Reason:
    if not isinstance(entry, dict):
        raise TokenMalformed("a reason must be an object")
    pcr, event_index = entry.get("pcr"), entry.get("event_index")
    return Reason(
        code=_str(entry, "code"),
        text=_str(entry, "text"),
        severity=_status(entry.get("severity"), "reason severity"),
        pcr=None if pcr is None else _int(entry, "pcr"),
        expected=_str(entry, "expected"),
        actual=_str(entry, "actual"),
        release=_str(entry, "release"),
        rule=_str(entry, "rule"),
        event_index=None if event_index is None else _int(entry, "event_index"),
    )


def _typed_claims(raw: JsonObject, kid: str) -> Claims:
    ext = _obj(raw, EXTENSION)
    epoch = _obj(ext, "boot_epoch")
    reasons = ext.get("reasons")
    if not isinstance(reasons, list):
        raise TokenMalformed("claim 'reasons' must be a list")
    status, submod, appraisal, vector = _worst_status(raw)
    return Claims(
        issuer=_str(raw, "iss"),
        subject=_str(raw, "sub"),
        audience=_audience(raw),
        issued_at=_int(raw, "iat"),
        not_before=_int(raw, "nbf"),
        expires_at=_int(raw, "exp"),
        jti=_str(raw, "jti"),
        kid=kid,
        status=status,
        submod=submod,
        trust_vector=vector,
        policy_ids=_policy_ids(appraisal),
        profile=_str(ext, "profile"),
        release=_str(ext, "release"),
        golden_digest=_str(ext, "golden_digest"),
        boot_epoch=BootEpoch(_int(epoch, "reset_count"), _int(epoch, "restart_count")),
        verdict_id=_str(ext, "verdict_id"),
        sequence=_int(ext, "sequence"),
        appraised_at=_num(ext, "appraised_at"),
        reasons=tuple(_reason(r) for r in reasons),
        nonce=_nonce(raw),
        raw_evidence=_raw_evidence(raw),
        raw=raw,
    )


def claims_json(claims: Claims) -> str:
    """The raw claims, pretty-printed (for the CLI)."""
    return json.dumps(claims.raw, indent=2, sort_keys=True)
