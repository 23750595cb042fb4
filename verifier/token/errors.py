"""Errors of verdict tokens and of the signing key ring: a small tree under ``AttestationError``.

``TokenError`` and its subclasses are raised by ``verify_token`` (and by ``issue_token`` when a
verdict cannot be vouched for). ``KeyRingError`` is raised when the signing keys on disk are
missing, insecure or inconsistent; the verifier must not start with such a ring.
"""

from __future__ import annotations

from verifier.errors import AttestationError


class TokenError(AttestationError):
    """A verdict token that cannot be issued, or that a relying party must not trust."""


class TokenMalformed(TokenError):
    """Not a compact JWS of canonical base64url parts and strict JSON objects, or claims missing."""


class TokenAlgorithmRefused(TokenError):
    """A header that asks for anything but ES256 (``none``, HS256, RS256, ...)."""


class TokenSignatureInvalid(TokenError):
    """The signature does not verify with the pinned key named by ``kid``."""


class TokenKeyUnknown(TokenSignatureInvalid):
    """The ``kid`` names no pinned key (unknown, or retired past its overlap)."""


class TokenExpired(TokenError):
    """``exp`` (plus the allowed skew) is not after now; or the verdict itself has expired."""


class TokenNotYetValid(TokenError):
    """``nbf`` or ``iat`` lies in the future by more than the allowed skew."""


class TokenClaimMismatch(TokenError):
    """Issuer, audience, subject, nonce or status differ from what the relying party requires."""


class KeyRingError(AttestationError):
    """The signing key ring on disk is missing, corrupt or inconsistent."""


class KeyFileInsecure(KeyRingError):
    """A key file or key directory readable or writable by group/other, or not owned by us."""
