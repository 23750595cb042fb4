"""Signed verdict tokens: EAR claims in a compact ES256 JWS, keys, and offline verification.

- ``issue_token`` (``ear``): a ``Verdict`` -> signed token, for the verifier.
- ``KeyRing`` / ``SigningKey`` (``keys``): the signing keys on disk, rotation, the JWKS.
- ``verify_token`` / ``PinnedKeys`` (``verify``): offline verification, for relying parties.
- ``errors``: ``TokenError`` and ``KeyRingError`` trees (subclasses of ``AttestationError``).
"""

from __future__ import annotations

from verifier.token.ear import EAT_PROFILE, build_claims, issue_token, token_expiry, trust_vector
from verifier.token.errors import (
    KeyFileInsecure,
    KeyRingError,
    TokenAlgorithmRefused,
    TokenClaimMismatch,
    TokenError,
    TokenExpired,
    TokenKeyUnknown,
    TokenMalformed,
    TokenNotYetValid,
    TokenSignatureInvalid,
)
from verifier.token.keys import KeyRing, SigningKey, jwk_thumbprint, public_jwk
from verifier.token.verify import Claims, PinnedKeys, pinned_keys, verify_token

__all__ = [
    "EAT_PROFILE",
    "Claims",
    "KeyFileInsecure",
    "KeyRing",
    "KeyRingError",
    "PinnedKeys",
    "SigningKey",
    "TokenAlgorithmRefused",
    "TokenClaimMismatch",
    "TokenError",
    "TokenExpired",
    "TokenKeyUnknown",
    "TokenMalformed",
    "TokenNotYetValid",
    "TokenSignatureInvalid",
    "build_claims",
    "issue_token",
    "jwk_thumbprint",
    "pinned_keys",
    "public_jwk",
    "token_expiry",
    "trust_vector",
    "verify_token",
]
