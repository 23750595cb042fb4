"""Decoders for the UEFI structures carried in event data (all little-endian, all untrusted).

Each decoder checks every length against the bytes it was given and raises ``EfiDecodeError``
(a ``ValueError``, caught by fact extraction and turned into a reason), never reads past the
end, and returns plain values:

- ``parse_variable``: UEFI_VARIABLE_DATA (VariableName GUID, UnicodeNameLength,
  VariableDataLength, UnicodeName, VariableData); the lengths must fit in the event data.
  Bytes after the structure (real firmware and old shim leave some) are reported in ``size``;
  whether the digest covers them is the caller's check.
- ``parse_signature_lists``: a sequence of EFI_SIGNATURE_LIST (db, dbx, KEK, PK content),
  each list's size, header size and signature size consistent with the bytes.
- ``image_path``: the last file-path node of an UEFI_IMAGE_LOAD_EVENT's device path, if any.
"""

from __future__ import annotations

import hashlib
import struct
import uuid
from dataclasses import dataclass, field
from functools import cached_property

# GUIDs as they appear on the wire (EFI_GUID, mixed endian: ``uuid.UUID.bytes_le``).
EFI_GLOBAL_VARIABLE = uuid.UUID("8be4df61-93ca-11d2-aa0d-00e098032b8c").bytes_le
EFI_IMAGE_SECURITY_DATABASE = uuid.UUID("d719b2cb-3d3a-4596-a3bc-dad00e67656f").bytes_le
SHIM_LOCK_GUID = uuid.UUID("605dab50-e046-4300-abb6-3dd810dd8b23").bytes_le
EFI_CERT_X509 = uuid.UUID("a5c059a1-94e4-4aa7-87b5-ab155c2bf072").bytes_le
EFI_CERT_SHA256 = uuid.UUID("c1c41626-504c-4092-aca9-41f936934328").bytes_le

_VAR_HEADER = struct.Struct("<16sQQ")
_SIG_LIST_HEADER = struct.Struct("<16sIII")
_LOAD_EVENT = struct.Struct("<QQQQ")  # ImageLocation, ImageLength, ImageLinkTime, DPLength
_DP_NODE = struct.Struct("<BBH")
_SHA256_ENTRY = 16 + 32  # owner GUID + hash


class EfiDecodeError(ValueError):
    """Event data that does not decode as the UEFI structure its event type implies."""


@dataclass(frozen=True)
class Variable:
    guid: bytes  # 16 bytes as on the wire
    name: str
    data: bytes
    size: int  # bytes of the structure; event data past it is not part of the variable


@dataclass(frozen=True)
class SignatureDb:
    """The content of PK, KEK, db or dbx: certificates by SHA-256 fingerprint, and hashes.

    The EFI_CERT_SHA256 entries (hundreds in a real dbx) stay in ``raw`` until asked for:
    ``hashes`` lists them; ``hash_set`` (built on first use, then kept with these facts, which
    the log memo keeps per distinct log) makes ``has_hash`` and ``entries`` lookups, so a
    rule that expects hundreds of hashes costs one set test, not a scan of ``raw`` per hash.
    """

    certificates: tuple[bytes, ...]  # SHA-256 of each X.509 certificate's DER
    other: int  # entries of other signature types (counted, not interpreted)
    raw: bytes = field(default=b"", repr=False)
    hash_lists: tuple[tuple[int, int], ...] = ()  # (first entry, end) of each SHA-256 list

    @property
    def hash_count(self) -> int:
        return sum((end - first) // _SHA256_ENTRY for first, end in self.hash_lists)

    @property
    def hashes(self) -> tuple[bytes, ...]:
        raw = self.raw
        return tuple(
            raw[p + 16 : p + _SHA256_ENTRY]
            for first, end in self.hash_lists
            for p in range(first, end, _SHA256_ENTRY)
        )

    @cached_property
    def hash_set(self) -> frozenset[bytes]:
        """Every EFI_CERT_SHA256 entry's 32-byte hash (never an owner GUID, never a partial)."""
        return frozenset(self.hashes)

    @cached_property
    def entries(self) -> frozenset[bytes]:
        """``hash_set`` and the certificates' SHA-256 fingerprints: every SHA-256 listed."""
        return self.hash_set | frozenset(self.certificates)

    def has_hash(self, digest: bytes) -> bool:
        """True when an EFI_CERT_SHA256 entry (not its owner GUID, not a partial) is ``digest``."""
        return len(digest) == 32 and digest in self.hash_set


def parse_variable(data: bytes) -> Variable:
    if len(data) < _VAR_HEADER.size:
        raise EfiDecodeError(f"UEFI_VARIABLE_DATA of {len(data)} bytes is too short")
    guid, name_chars, data_len = _VAR_HEADER.unpack_from(data)
    name_end = _VAR_HEADER.size + 2 * name_chars
    if name_chars > len(data) or name_end + data_len > len(data):
        raise EfiDecodeError(
            f"UEFI_VARIABLE_DATA lengths (name {name_chars} chars, data {data_len} bytes)"
            f" run past its {len(data)} bytes"
        )
    name = decode_utf16(data[_VAR_HEADER.size : name_end])
    end = name_end + data_len
    return Variable(guid, name, data[name_end:end], end)


def decode_utf16(raw: bytes) -> str:
    if len(raw) % 2:
        raise EfiDecodeError("UTF-16 string of odd length")
    try:
        return raw.decode("utf-16-le").rstrip("\x00")
    except UnicodeDecodeError as exc:
        raise EfiDecodeError(f"invalid UTF-16 string: {exc}") from exc


def parse_signature_lists(data: bytes) -> SignatureDb:
    certs: list[bytes] = []
    hash_lists: list[tuple[int, int]] = []
    other = 0
    offset = 0
    while offset < len(data):
        if len(data) - offset < _SIG_LIST_HEADER.size:
            raise EfiDecodeError(f"truncated EFI_SIGNATURE_LIST header at offset {offset}")
        sig_type, list_size, header_size, sig_size = _SIG_LIST_HEADER.unpack_from(data, offset)
        body = offset + _SIG_LIST_HEADER.size + header_size
        end = offset + list_size
        if list_size < _SIG_LIST_HEADER.size or end > len(data) or body > end:
            raise EfiDecodeError(f"EFI_SIGNATURE_LIST at offset {offset}: bad list size")
        if sig_size <= 16 or (end - body) % sig_size:
            raise EfiDecodeError(f"EFI_SIGNATURE_LIST at offset {offset}: bad signature size")
        starts = range(body + 16, end, sig_size)  # each entry after its owner GUID
        if sig_type == EFI_CERT_X509:
            certs.extend(hashlib.sha256(data[p : p + sig_size - 16]).digest() for p in starts)
        elif sig_type == EFI_CERT_SHA256:
            if sig_size != _SHA256_ENTRY:
                raise EfiDecodeError(f"EFI_CERT_SHA256 entries of {sig_size - 16} bytes")
            hash_lists.append((body, end))
        else:
            other += len(starts)
        offset = end
    return SignatureDb(tuple(certs), other, data, tuple(hash_lists))


def image_path(data: bytes) -> str:
    """The file path of an UEFI_IMAGE_LOAD_EVENT, or "" when it has none (or is malformed)."""
    if len(data) < _LOAD_EVENT.size:
        return ""
    dp_len = _LOAD_EVENT.unpack_from(data)[3]
    offset = _LOAD_EVENT.size
    end = min(len(data), offset + dp_len)
    path = ""
    while end - offset >= _DP_NODE.size:
        dp_type, dp_sub, length = _DP_NODE.unpack_from(data, offset)
        if length < _DP_NODE.size or offset + length > end or dp_type == 0x7F:
            break
        if dp_type == 0x04 and dp_sub == 0x04:
            try:
                path = decode_utf16(data[offset + 4 : offset + length])
            except EfiDecodeError:
                return ""
        offset += length
    return path
