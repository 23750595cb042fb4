"""Errors of the audit log: one small tree under ``AttestationError``.

``AuditError`` is the one type a caller catches. Its subclasses say which check failed:
a malformed note, checkpoint, key or entry (``AuditMalformed``); a signature that does not
verify, or a note no trusted key signed (``AuditSignatureInvalid``); a Merkle proof that does not
prove what it claims (``ProofInvalid``); two checkpoints that cannot both describe one
append-only history (``ForkDetected``).
"""

from __future__ import annotations

from verifier.errors import AttestationError


class AuditError(AttestationError):
    """A log entry, checkpoint, note, key or proof that must not be trusted."""


class AuditMalformed(AuditError):
    """Not the strict encoding it claims to be (or over the limit for it)."""


class AuditSignatureInvalid(AuditError):
    """A note signature fails, or no signature from a trusted key is present."""


class ProofInvalid(AuditError):
    """An inclusion or consistency proof that does not verify against the given roots."""


class ForkDetected(ProofInvalid):
    """Two signed checkpoints that are not consistent: the log showed two histories."""


class AuditRangeError(AuditError):
    """A position or tree size outside the log (a proof or entry that cannot exist yet)."""
