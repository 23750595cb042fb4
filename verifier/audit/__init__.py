"""The tamper-evident audit log: pure core (no store, no clock, no I/O).

- ``merkle``: RFC 6962/9162 hashing, ``CompactRange`` (append, root), ``MerkleTree`` (proofs),
  ``verify_inclusion``, ``verify_consistency``.
- ``note``: C2SP signed notes, Ed25519 ``SignerKey`` / ``VerifierKey`` and their key strings.
- ``checkpoint``: C2SP tlog checkpoints: ``Checkpoint``, ``sign_checkpoint``, ``open_checkpoint``.
- ``entry``: ``LogEntry`` (kind, time, fields), its canonical bytes and leaf hash.
- ``verify``: ``verify_log`` over stored entries and signed checkpoints -> ``AuditReport``.
- ``errors``: ``AuditError`` and its subclasses (under ``AttestationError``).
"""

from __future__ import annotations

from verifier.audit.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from verifier.audit.entry import REQUIRED_FIELDS, EntryKind, LogEntry
from verifier.audit.errors import (
    AuditError,
    AuditMalformed,
    AuditRangeError,
    AuditSignatureInvalid,
    ForkDetected,
    ProofInvalid,
)
from verifier.audit.merkle import (
    EMPTY_ROOT,
    CompactRange,
    MerkleTree,
    leaf_hash,
    node_hash,
    verify_consistency,
    verify_inclusion,
)
from verifier.audit.note import SignerKey, VerifierKey, open_note, parse_note, sign_note
from verifier.audit.verify import AuditReport, Problem, ProblemKind, StoredEntry, verify_log

__all__ = [
    "EMPTY_ROOT",
    "REQUIRED_FIELDS",
    "AuditError",
    "AuditMalformed",
    "AuditRangeError",
    "AuditReport",
    "AuditSignatureInvalid",
    "Checkpoint",
    "CompactRange",
    "EntryKind",
    "ForkDetected",
    "LogEntry",
    "MerkleTree",
    "Problem",
    "ProblemKind",
    "ProofInvalid",
    "SignerKey",
    "StoredEntry",
    "VerifierKey",
    "leaf_hash",
    "node_hash",
    "open_checkpoint",
    "open_note",
    "parse_note",
    "sign_checkpoint",
    "sign_note",
    "verify_consistency",
    "verify_inclusion",
    "verify_log",
]
