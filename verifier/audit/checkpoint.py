"""C2SP transparency-log checkpoints (c2sp.org/tlog-checkpoint): a signed note whose text is

    <origin>\\n<tree size, decimal>\\n<base64 root hash>\\n[<extension line>\\n ...]

Invariants of ``Checkpoint``: the origin is non-empty; the size is a decimal without leading
zeroes in ``[0, 2**63)``; the root is 32 bytes in canonical base64; extension lines are
non-empty. ``open_checkpoint`` verifies the note with the log's key first, then parses the text,
then requires the origin the caller expects (by default the key's name): a checkpoint of
another log signed with the same key is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from verifier.audit.errors import AuditMalformed
from verifier.audit.merkle import HASH_SIZE, MAX_TREE_SIZE
from verifier.audit.note import (
    SignerKey,
    VerifierKey,
    b64encode,
    check_note_text,
    open_note,
    sign_note,
    strict_b64decode,
)
from verifier.limits import DEFAULT_LIMITS, Limits

_DECIMAL = re.compile(r"0|[1-9][0-9]{0,18}")


@dataclass(frozen=True)
class Checkpoint:
    """A log's tree head: who (origin), how many entries (size), and their Merkle root."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for line in (self.origin, *self.extensions):
            if not line or "\n" in line:
                raise AuditMalformed("checkpoint origin and extension lines must be one line")
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise AuditMalformed(f"checkpoint tree size {self.size} is out of range")
        if len(self.root_hash) != HASH_SIZE:
            raise AuditMalformed(f"a checkpoint root hash is {HASH_SIZE} bytes")
        check_note_text(self.text())

    def text(self) -> str:
        """The note text that is signed."""
        lines = [self.origin, str(self.size), b64encode(self.root_hash), *self.extensions]
        return "".join(line + "\n" for line in lines)

    @classmethod
    def parse(cls, text: str, limits: Limits = DEFAULT_LIMITS) -> Checkpoint:
        if not text.endswith("\n"):
            raise AuditMalformed("checkpoint text must end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise AuditMalformed("a checkpoint has an origin, a size and a root hash line")
        origin, size, root, *extensions = lines
        if len(extensions) > limits.max_checkpoint_extensions:
            raise AuditMalformed(
                f"a checkpoint has more than {limits.max_checkpoint_extensions} extension lines"
            )
        if not _DECIMAL.fullmatch(size) or int(size) > MAX_TREE_SIZE:
            raise AuditMalformed("a checkpoint size is a decimal without leading zeroes")
        return cls(origin, int(size), strict_b64decode(root, "the root hash"), tuple(extensions))


def sign_checkpoint(checkpoint: Checkpoint, signer: SignerKey) -> bytes:
    """The signed note of ``checkpoint``; the log's key name should be its origin."""
    return sign_note(checkpoint.text(), [signer])


def open_checkpoint(
    data: bytes,
    verifier: VerifierKey,
    origin: str | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> Checkpoint:
    """Verify ``data`` with the log's key and return its checkpoint, of ``origin``.

    Raises ``AuditSignatureInvalid`` if the log's key did not sign it (including a note signed
    only by another key, even one of the same name), ``AuditMalformed`` otherwise.
    """
    opened = open_note(data, [verifier], limits)
    checkpoint = Checkpoint.parse(opened.text, limits)
    expected = verifier.name if origin is None else origin
    if checkpoint.origin != expected:
        raise AuditMalformed(f"checkpoint of log {checkpoint.origin!r}, expected {expected!r}")
    return checkpoint
