"""C2SP signed notes (c2sp.org/signed-note) with Ed25519 keys: parse, sign, open.

A note is ``text`` (ending in a newline), a blank line, then one or more lines
``"\u2014 <key name> <base64(key ID || signature)>"``. The key ID of an Ed25519 key is the first
four bytes, big-endian, of ``SHA-256(name || 0x0A || 0x01 || public key)``.

Order of checks in ``open_note`` (each raises):

1. size limit, valid UTF-8, no control character other than newline (``AuditMalformed``);
2. split at the last blank line; every signature line strict: em dash, one space, a valid key
   name, one space, canonical base64 of at least 5 bytes; signature count limit;
3. every signature whose (name, key ID) is a trusted key must verify, else the whole note is
   refused; signatures of other keys are ignored, as the spec requires (rotation, cosigning);
4. at least one trusted key must have signed (``AuditSignatureInvalid`` naming what did sign).

Key strings: verifier ``<name>+<8 hex key ID>+<base64(0x01 || 32-byte public key)>`` and signer
``PRIVATE+KEY+<name>+<8 hex key ID>+<base64(0x01 || 32-byte seed)>`` (Go's sumdb/note format).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from verifier.audit.errors import AuditMalformed, AuditSignatureInvalid
from verifier.limits import DEFAULT_LIMITS, Limits

ALGORITHM_ED25519 = 0x01
ED25519_KEY_BYTES = 32
ED25519_SIGNATURE_BYTES = 64
SIGNATURE_PREFIX = "\u2014 "  # em dash, space
SIGNER_KEY_PREFIX = "PRIVATE+KEY+"
_HEX_KEY_ID = re.compile(r"[0-9a-f]{8}")
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")


def strict_b64decode(text: str, what: str) -> bytes:
    """Standard base64 (RFC 4648 section 4), padded and canonical; anything else raises."""
    try:
        decoded = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise AuditMalformed(f"{what} is not base64") from exc
    if base64.b64encode(decoded).decode("ascii") != text:
        raise AuditMalformed(f"{what} is not canonical base64")
    return decoded


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def check_key_name(name: str) -> None:
    """A key name is non-empty, with no Unicode space, no ``+`` and no control character."""
    if not name:
        raise AuditMalformed("a key name must not be empty")
    if "+" in name or any(c.isspace() for c in name) or _CONTROL.search(name):
        raise AuditMalformed(f"key name {name!r} contains a space, '+' or a control character")


def ed25519_key_id(name: str, public_key: bytes) -> int:
    """``SHA-256(name || 0x0A || 0x01 || public key)[:4]`` as a big-endian integer."""
    material = name.encode("utf-8") + b"\n" + bytes([ALGORITHM_ED25519]) + public_key
    return int.from_bytes(hashlib.sha256(material).digest()[:4], "big")


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: a key name, the 32-bit key ID and the signature bytes."""

    name: str
    key_id: int
    signature: bytes

    def __post_init__(self) -> None:
        check_key_name(self.name)
        if not 0 <= self.key_id < 2**32:
            raise AuditMalformed(f"key ID {self.key_id} is not a 32-bit value")
        if not self.signature:
            raise AuditMalformed("a signature must not be empty")

    def line(self) -> str:
        blob = self.key_id.to_bytes(4, "big") + self.signature
        return f"{SIGNATURE_PREFIX}{self.name} {b64encode(blob)}\n"


@dataclass(frozen=True)
class Note:
    """A parsed note: its text (with the final newline) and its signature lines, in order."""

    text: str
    signatures: tuple[NoteSignature, ...]

    def to_bytes(self) -> bytes:
        return (self.text + "\n" + "".join(s.line() for s in self.signatures)).encode("utf-8")


@dataclass(frozen=True)
class VerifierKey:
    """An Ed25519 note verifier key; its key ID is checked against the name and key."""

    name: str
    key_id: int
    public_key: bytes

    def __post_init__(self) -> None:
        check_key_name(self.name)
        if len(self.public_key) != ED25519_KEY_BYTES:
            raise AuditMalformed(f"an Ed25519 public key is {ED25519_KEY_BYTES} bytes")
        expected = ed25519_key_id(self.name, self.public_key)
        if self.key_id != expected:
            raise AuditMalformed(
                f"key ID {self.key_id:08x} does not match key {self.name} (expected {expected:08x})"
            )

    @classmethod
    def from_public_key(cls, name: str, public_key: bytes) -> VerifierKey:
        return cls(name, ed25519_key_id(name, public_key), public_key)

    @classmethod
    def parse(cls, vkey: str) -> VerifierKey:
        """Parse ``<name>+<hex key ID>+<base64(0x01 || public key)>``."""
        parts = vkey.split("+", 2)  # the base64 key may contain "+"
        if len(parts) != 3:
            raise AuditMalformed("a verifier key is <name>+<hex key ID>+<base64 key>")
        name, hex_id, encoded = parts
        key = _parse_typed_key(encoded, "the verifier key")
        return cls(name, _parse_key_id(hex_id), key)

    def encode(self) -> str:
        key = b64encode(bytes([ALGORITHM_ED25519]) + self.public_key)
        return f"{self.name}+{self.key_id:08x}+{key}"

    def verify(self, message: bytes, signature: bytes) -> None:
        """Raise ``AuditSignatureInvalid`` unless ``signature`` is this key's over ``message``."""
        if len(signature) != ED25519_SIGNATURE_BYTES:
            raise AuditSignatureInvalid(f"an Ed25519 signature by {self.name} must be 64 bytes")
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except InvalidSignature as exc:
            raise AuditSignatureInvalid(
                f"the signature of key {self.name}+{self.key_id:08x} does not verify"
            ) from exc


@dataclass(frozen=True)
class SignerKey:
    """An Ed25519 note signer key (the 32-byte seed never appears in ``repr``)."""

    name: str
    seed: bytes = field(repr=False)

    def __post_init__(self) -> None:
        check_key_name(self.name)
        if len(self.seed) != ED25519_KEY_BYTES:
            raise AuditMalformed(f"an Ed25519 private key seed is {ED25519_KEY_BYTES} bytes")

    @classmethod
    def generate(cls, name: str) -> SignerKey:
        private = Ed25519PrivateKey.generate()
        return cls(name, private.private_bytes_raw())

    @classmethod
    def parse(cls, skey: str) -> SignerKey:
        """Parse ``PRIVATE+KEY+<name>+<hex key ID>+<base64(0x01 || seed)>``; checks the ID."""
        if not skey.startswith(SIGNER_KEY_PREFIX):
            raise AuditMalformed("a signer key starts with PRIVATE+KEY+")
        parts = skey[len(SIGNER_KEY_PREFIX) :].split("+", 2)
        if len(parts) != 3:
            raise AuditMalformed("a signer key is PRIVATE+KEY+<name>+<hex key ID>+<base64 key>")
        name, hex_id, encoded = parts
        signer = cls(name, _parse_typed_key(encoded, "the signer key"))
        if _parse_key_id(hex_id) != signer.key_id:
            raise AuditMalformed(f"the key ID of signer key {name} does not match its key")
        return signer

    @property
    def public_key(self) -> bytes:
        public = Ed25519PrivateKey.from_private_bytes(self.seed).public_key()
        return public.public_bytes(Encoding.Raw, PublicFormat.Raw)

    @property
    def key_id(self) -> int:
        return ed25519_key_id(self.name, self.public_key)

    def encode(self) -> str:
        key = b64encode(bytes([ALGORITHM_ED25519]) + self.seed)
        return f"{SIGNER_KEY_PREFIX}{self.name}+{self.key_id:08x}+{key}"

    def verifier(self) -> VerifierKey:
        return VerifierKey.from_public_key(self.name, self.public_key)

    def sign(self, text: str) -> NoteSignature:
        signature = Ed25519PrivateKey.from_private_bytes(self.seed).sign(text.encode("utf-8"))
        return NoteSignature(self.name, self.key_id, signature)


def _parse_key_id(hex_id: str) -> int:
    if not _HEX_KEY_ID.fullmatch(hex_id):
        raise AuditMalformed("a key ID is 8 lowercase hex digits")
    return int(hex_id, 16)


def _parse_typed_key(encoded: str, what: str) -> bytes:
    blob = strict_b64decode(encoded, what)
    if len(blob) != 1 + ED25519_KEY_BYTES or blob[0] != ALGORITHM_ED25519:
        raise AuditMalformed(f"{what} is not an Ed25519 (type 0x01) key")
    return blob[1:]


def check_note_text(text: str) -> None:
    """Note text is non-empty, ends in a newline and has no control character but newline."""
    if not text.endswith("\n"):
        raise AuditMalformed("note text must end with a newline")
    if _CONTROL.search(text):
        raise AuditMalformed("note text contains a control character")


def sign_note(text: str, signers: Sequence[SignerKey]) -> bytes:
    """The signed note of ``text`` with one signature line per signer, in order."""
    check_note_text(text)
    if not signers:
        raise AuditMalformed("a note needs at least one signer")
    return Note(text, tuple(s.sign(text) for s in signers)).to_bytes()


def parse_note(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Note:
    """Parse a signed note strictly (steps 1 and 2 above); signatures are not verified."""
    if len(data) > limits.max_note_bytes:
        raise AuditMalformed(f"a note of {len(data)} bytes exceeds {limits.max_note_bytes}")
    try:
        decoded = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AuditMalformed("a note is not valid UTF-8") from exc
    if _CONTROL.search(decoded):
        raise AuditMalformed("a note contains a control character other than newline")
    split = decoded.rfind("\n\n")
    if split < 0:
        raise AuditMalformed("a note has no blank line before its signatures")
    text, block = decoded[: split + 1], decoded[split + 2 :]
    if not block.endswith("\n"):
        raise AuditMalformed("a note's signature block must end with a newline")
    lines = block[:-1].split("\n")
    if len(lines) > limits.max_note_signatures:
        raise AuditMalformed(f"a note has more than {limits.max_note_signatures} signatures")
    return Note(text, tuple(_parse_signature_line(line) for line in lines))


def _parse_signature_line(line: str) -> NoteSignature:
    if not line.startswith(SIGNATURE_PREFIX):
        raise AuditMalformed("a signature line must start with an em dash and a space")
    parts = line[len(SIGNATURE_PREFIX) :].split(" ")
    if len(parts) != 2:
        raise AuditMalformed("a signature line is '\u2014 <key name> <base64 signature>'")
    name, encoded = parts
    blob = strict_b64decode(encoded, "a note signature")
    if len(blob) < 5:
        raise AuditMalformed("a note signature holds a 4-byte key ID and a signature")
    return NoteSignature(name, int.from_bytes(blob[:4], "big"), blob[4:])


@dataclass(frozen=True)
class OpenedNote:
    """A note whose text at least one trusted key signed."""

    text: str
    verified_by: tuple[VerifierKey, ...]
    ignored: tuple[NoteSignature, ...]  # signatures of keys that are not trusted


def open_note(
    data: bytes, verifiers: Sequence[VerifierKey], limits: Limits = DEFAULT_LIMITS
) -> OpenedNote:
    """Parse and verify a signed note against trusted keys (steps 1 to 4 above)."""
    note = parse_note(data, limits)
    trusted = {(v.name, v.key_id): v for v in verifiers}
    message = note.text.encode("utf-8")
    verified: list[VerifierKey] = []
    ignored: list[NoteSignature] = []
    for signature in note.signatures:
        key = trusted.get((signature.name, signature.key_id))
        if key is None:
            ignored.append(signature)
            continue
        key.verify(message, signature.signature)
        if key not in verified:
            verified.append(key)
    if not verified:
        signed_by = ", ".join(f"{s.name}+{s.key_id:08x}" for s in note.signatures)
        wanted = ", ".join(f"{v.name}+{v.key_id:08x}" for v in verifiers) or "none"
        raise AuditSignatureInvalid(
            f"no trusted key signed this note (signed by {signed_by}; trusted: {wanted})"
        )
    return OpenedNote(note.text, tuple(verified), tuple(ignored))
