"""Parse a Linux IMA measurement list (binary or ASCII) into checked, plain values.

Input is untrusted bytes; ``parse_binary``, ``parse_ascii`` and ``parse_measurement_list``
raise ``ImaLogError`` (and nothing else) for anything that is not a well-formed list.
Order of checks:

1. Size: input over ``max_ima_log_bytes`` is refused (empty input is an empty list: an
   incremental attestation may have nothing new).
2. Per entry: the header fits in the bytes left; the PCR index is 0-23; the template name is
   1-15 bytes and one of ``ima``, ``ima-ng``, ``ima-sig``, ``ima-buf``, ``ima-modsig``; the
   template data is at most ``max_ima_template_data_bytes``, fits, and splits into exactly
   the template's fields (each a little-endian u32 length and its bytes), consumed exactly;
   the number of entries is at most ``max_ima_entries``.
3. Per field: ``d-ng`` is ``<alg>:\\0<digest>`` (a known algorithm's digest has its size);
   ``n-ng`` ends with its one NUL and is at most ``max_ima_path_bytes``; ``sig`` and
   ``modsig`` at most ``max_ima_signature_bytes``; ``buf`` at most ``max_ima_buf_bytes``.
   The legacy ``ima`` template has a bare 20-byte SHA-1 digest and a name of at most 255 bytes.
4. The template hash is recomputed as the kernel does (``template_input``) with the list's
   template hash algorithm (SHA-1 for ``binary_runtime_measurements``) and must equal the
   logged one, except for a violation (ToMToU / open-writer): an all-zero template hash, whose
   fields bind nothing and are never trusted (``ImaEntry.violation``).

The binary list is read little-endian (x86, arm64, and any kernel booted with
``ima_canonical_fmt``). Entries are ``NamedTuple`` values keeping their ``number`` (index) in
the whole list (``first_index``: the offset of the first entry given, for incremental use).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from verifier.errors import ImaLogError
from verifier.limits import DEFAULT_LIMITS, Limits

IMA_PCR = 10
MAX_PCR = 23
TEMPLATE_NAME_MAX = 15  # IMA_TEMPLATE_NAME_LEN_MAX
LEGACY_NAME_MAX = 255  # IMA_EVENT_NAME_LEN_MAX: the ``ima`` template's name field
LEGACY_DIGEST_SIZE = 20
BOOT_AGGREGATE = "boot_aggregate"

# Field layout of each template (security/integrity/ima/ima_template.c).
TEMPLATE_FIELDS: dict[str, tuple[str, ...]] = {
    "ima-ng": ("d-ng", "n-ng"),
    "ima-sig": ("d-ng", "n-ng", "sig"),
    "ima-buf": ("d-ng", "n-ng", "buf"),
    "ima-modsig": ("d-ng", "n-ng", "sig", "d-modsig", "modsig"),
}
TEMPLATES = frozenset({"ima", *TEMPLATE_FIELDS})
_TEMPLATE_BY_RAW = {name.encode("ascii"): name for name in TEMPLATES}

# Digest sizes of the algorithms IMA names in d-ng fields (crypto/hash_info.c names).
DIGEST_SIZES: dict[str, int] = {
    "md5": 16,
    "sha1": 20,
    "sha224": 28,
    "sha256": 32,
    "sha384": 48,
    "sha512": 64,
    "sm3": 32,
    "sm3_256": 32,
    "streebog256": 32,
    "streebog512": 64,
}

_HEAD = struct.Struct("<I")


class ImaEntry(NamedTuple):
    """One measurement. ``template_input`` is exactly what the kernel hashes for the template
    hash; ``path`` is decoded UTF-8 (undecodable bytes kept as surrogate escapes)."""

    number: int  # position in the whole list, from 0
    pcr: int
    template_hash: bytes
    template: str
    digest_alg: str  # "sha1" for the legacy template; empty only when d-ng is absent
    digest: bytes
    path: str
    signature: bytes  # ima-sig / ima-modsig ``sig`` field; b"" when absent
    buf: bytes  # ima-buf ``buf`` field
    modsig: bytes  # ima-modsig ``modsig`` field (PKCS#7, appended to the file)
    template_input: bytes

    @property
    def violation(self) -> bool:
        """A ToMToU / open-writer violation: its template hash is zero, its fields bind nothing."""
        return not any(self.template_hash)


@dataclass(frozen=True)
class ImaLog:
    """Entries in list order. ``template_hash_alg`` is the algorithm of their template hashes."""

    entries: tuple[ImaEntry, ...]
    template_hash_alg: str
    first_index: int = 0

    @property
    def end_index(self) -> int:
        """The index one past the last entry (the offset the next increment starts at)."""
        return self.first_index + len(self.entries)


def hash_function(alg: str) -> Callable[..., hashlib._Hash]:
    """The hashlib constructor for an IMA / TPM algorithm name; ``ImaLogError`` if unknown."""
    name = "sm3" if alg == "sm3_256" else alg
    if name not in hashlib.algorithms_available:
        raise ImaLogError(f"hash algorithm {alg!r} is not available")

    def construct(data: bytes = b"") -> hashlib._Hash:
        return hashlib.new(name, data)

    fast = getattr(hashlib, name, None)
    return fast if callable(fast) else construct


def parse_measurement_list(
    data: bytes,
    *,
    template_hash_alg: str = "sha1",
    first_index: int = 0,
    limits: Limits = DEFAULT_LIMITS,
) -> ImaLog:
    """Either format: ASCII when the list starts with a decimal PCR index and a space."""
    head = data[:3]
    if head[:1].isdigit() and b" " in head:
        return parse_ascii(
            data, template_hash_alg=template_hash_alg, first_index=first_index, limits=limits
        )
    return parse_binary(
        data, template_hash_alg=template_hash_alg, first_index=first_index, limits=limits
    )


def parse_binary(
    data: bytes,
    *,
    template_hash_alg: str = "sha1",
    first_index: int = 0,
    limits: Limits = DEFAULT_LIMITS,
) -> ImaLog:
    """``binary_runtime_measurements`` (or ``..._<alg>`` with ``template_hash_alg``)."""
    _check_size(len(data), limits)
    hfunc = hash_function(template_hash_alg)
    hsize = hfunc().digest_size
    violation = bytes(hsize)
    entries: list[ImaEntry] = []
    pos, end = 0, len(data)
    while pos < end:
        index = first_index + len(entries)
        if len(entries) >= limits.max_ima_entries:
            _check_count(len(entries), limits)
        if end - pos < 4 + hsize + 4:
            raise ImaLogError(f"IMA entry {index}: header truncated at byte {pos}")
        pcr = _HEAD.unpack_from(data, pos)[0]
        template_hash = data[pos + 4 : pos + 4 + hsize]
        pos += 4 + hsize
        name_len = _HEAD.unpack_from(data, pos)[0]
        pos += 4
        if not 0 < name_len <= TEMPLATE_NAME_MAX or name_len > end - pos:
            raise ImaLogError(f"IMA entry {index}: template name length {name_len} is invalid")
        raw_name = data[pos : pos + name_len]
        template = _TEMPLATE_BY_RAW.get(raw_name) or _template_name(raw_name, index)
        pos += name_len
        start = pos + 4
        if template == "ima":
            fields, pos = _legacy_fields(data, pos, index)
            raw = None
        else:
            fields, pos = _template_data(data, pos, index, len(TEMPLATE_FIELDS[template]), limits)
            raw = data[start:pos]  # the template data is exactly what the kernel hashed
        entry = _entry(index, pcr, template_hash, template, fields, limits, raw)
        if template_hash != violation:  # all zeros: ``ImaEntry.violation``
            _check_template_hash(entry, hfunc)
        entries.append(entry)
    return ImaLog(tuple(entries), template_hash_alg, first_index)


def parse_ascii(
    data: bytes,
    *,
    template_hash_alg: str = "sha1",
    first_index: int = 0,
    limits: Limits = DEFAULT_LIMITS,
) -> ImaLog:
    """``ascii_runtime_measurements``: ``PCR template-hash template fields...`` per line."""
    _check_size(len(data), limits)
    hfunc = hash_function(template_hash_alg)
    hsize = hfunc().digest_size
    try:
        text = data.decode("utf-8", "surrogateescape")
    except UnicodeDecodeError as exc:  # pragma: no cover - surrogateescape accepts any bytes
        raise ImaLogError("the ASCII IMA list is not text") from exc
    entries: list[ImaEntry] = []
    for line in text.split("\n"):
        if not line:
            continue
        index = first_index + len(entries)
        _check_count(len(entries), limits)
        parts = line.split(" ", 3)
        if len(parts) != 4 or not parts[0].isdigit():
            raise ImaLogError(f"IMA entry {index}: not 'PCR template-hash template fields'")
        template_hash = _unhex(parts[1], index, "template hash")
        if len(template_hash) != hsize:
            raise ImaLogError(
                f"IMA entry {index}: template hash of {len(template_hash)} bytes, "
                f"{template_hash_alg} has {hsize}"
            )
        template = _template_name(parts[2].encode("ascii", "replace"), index)
        fields = _ascii_fields(template, parts[3], index)
        entry = _entry(index, int(parts[0]), template_hash, template, fields, limits)
        _check_template_hash(entry, hfunc)
        entries.append(entry)
    return ImaLog(tuple(entries), template_hash_alg, first_index)


def template_input(template: str, fields: tuple[bytes, ...]) -> bytes:
    """What the kernel hashes: for ``ima`` the digest and the name zero-padded to 256 bytes;
    for every other template each field as a little-endian u32 length and its bytes."""
    if template == "ima":
        return fields[0] + fields[1].ljust(LEGACY_NAME_MAX + 1, b"\0")
    return b"".join(_HEAD.pack(len(field)) + field for field in fields)


def _check_size(size: int, limits: Limits) -> None:
    if size > limits.max_ima_log_bytes:
        raise ImaLogError(
            f"IMA log of {size} bytes exceeds the limit of {limits.max_ima_log_bytes}"
        )


def _check_count(count: int, limits: Limits) -> None:
    if count >= limits.max_ima_entries:
        raise ImaLogError(f"IMA log has more than {limits.max_ima_entries} entries")


def _template_name(raw: bytes, index: int) -> str:
    name = raw.decode("ascii", "replace")
    if name not in TEMPLATES:
        raise ImaLogError(f"IMA entry {index}: unsupported template {name!r}")
    return name


def _legacy_fields(data: bytes, pos: int, index: int) -> tuple[tuple[bytes, ...], int]:
    """The ``ima`` template: 20-byte digest, u32 name length, name without its NUL."""
    if len(data) - pos < LEGACY_DIGEST_SIZE + 4:
        raise ImaLogError(f"IMA entry {index}: ima template data truncated")
    digest = data[pos : pos + LEGACY_DIGEST_SIZE]
    pos += LEGACY_DIGEST_SIZE
    name_len = _HEAD.unpack_from(data, pos)[0]
    pos += 4
    if name_len > LEGACY_NAME_MAX or name_len > len(data) - pos:
        raise ImaLogError(f"IMA entry {index}: ima template name length {name_len} is invalid")
    return (digest, data[pos : pos + name_len]), pos + name_len


def _template_data(
    data: bytes, pos: int, index: int, count: int, limits: Limits
) -> tuple[tuple[bytes, ...], int]:
    if len(data) - pos < 4:
        raise ImaLogError(f"IMA entry {index}: template data length truncated")
    size = _HEAD.unpack_from(data, pos)[0]
    pos += 4
    if size > limits.max_ima_template_data_bytes:
        raise ImaLogError(
            f"IMA entry {index}: template data of {size} bytes exceeds the limit of "
            f"{limits.max_ima_template_data_bytes}"
        )
    if size > len(data) - pos:
        raise ImaLogError(f"IMA entry {index}: template data of {size} bytes is truncated")
    end = pos + size
    fields: list[bytes] = []
    for _ in range(count):
        if end - pos < 4:
            raise ImaLogError(f"IMA entry {index}: template field {len(fields)} truncated")
        length = _HEAD.unpack_from(data, pos)[0]
        pos += 4
        if length > end - pos:
            raise ImaLogError(f"IMA entry {index}: template field {len(fields)} overruns")
        fields.append(data[pos : pos + length])
        pos += length
    if pos != end:
        raise ImaLogError(f"IMA entry {index}: {end - pos} bytes after the template fields")
    return tuple(fields), end


def _ascii_fields(template: str, rest: str, index: int) -> tuple[bytes, ...]:
    """Rebuild the binary fields from the ASCII ones (paths may hold spaces; hex never does)."""
    if template == "ima":
        digest, _, path = rest.partition(" ")
        return _unhex(digest, index, "digest"), _path_bytes(path)
    head, _, tail = rest.partition(" ")
    dng = _ascii_dng(head, index)
    if template == "ima-ng":
        return dng, _path_bytes(tail) + b"\0"
    hex_fields = 1 if template in ("ima-sig", "ima-buf") else 3
    parts = tail.rsplit(" ", hex_fields)
    if len(parts) != hex_fields + 1:
        raise ImaLogError(f"IMA entry {index}: {template} needs {hex_fields + 2} fields")
    name_field = _path_bytes(parts[0]) + b"\0"
    if template == "ima-modsig":
        sig, dmod, modsig = parts[1:]
        dmod_field = _ascii_dng(dmod, index) if dmod else b""
        sig_field, modsig_field = _unhex(sig, index, "sig"), _unhex(modsig, index, "modsig")
        return dng, name_field, sig_field, dmod_field, modsig_field
    return dng, name_field, _unhex(parts[1], index, template[4:])


def _ascii_dng(text: str, index: int) -> bytes:
    alg, sep, hexdigest = text.partition(":")
    if not sep:
        raise ImaLogError(f"IMA entry {index}: digest {text[:80]!r} lacks '<alg>:'")
    return alg.encode("ascii", "replace") + b":\0" + _unhex(hexdigest, index, "digest")


def _path_bytes(path: str) -> bytes:
    return path.encode("utf-8", "surrogateescape")


def _unhex(text: str, index: int, what: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise ImaLogError(f"IMA entry {index}: {what} is not hex") from None


def _entry(
    index: int,
    pcr: int,
    template_hash: bytes,
    template: str,
    fields: tuple[bytes, ...],
    limits: Limits,
    raw: bytes | None = None,
) -> ImaEntry:
    if pcr > MAX_PCR:
        raise ImaLogError(f"IMA entry {index}: PCR index {pcr} is outside 0-23")
    if template == "ima":
        digest_alg, digest = "sha1", fields[0]
        name = fields[1]
    else:
        digest_alg, digest = _split_dng(fields[0], index)
        name = _nng(fields[1], index)
    if len(name) > limits.max_ima_path_bytes:
        raise ImaLogError(f"IMA entry {index}: path of {len(name)} bytes exceeds the limit")
    signature = fields[2] if template in ("ima-sig", "ima-modsig") else b""
    buf = fields[2] if template == "ima-buf" else b""
    modsig = b""
    if template == "ima-modsig":
        if fields[3]:
            _split_dng(fields[3], index)
        modsig = fields[4]
    if max(len(signature), len(modsig)) > limits.max_ima_signature_bytes:
        raise ImaLogError(f"IMA entry {index}: signature exceeds the limit")
    if len(buf) > limits.max_ima_buf_bytes:
        raise ImaLogError(f"IMA entry {index}: buffer of {len(buf)} bytes exceeds the limit")
    return ImaEntry(  # positional: in the order of ImaEntry's fields
        index,
        pcr,
        template_hash,
        template,
        digest_alg,
        digest,
        name.decode("utf-8", "surrogateescape"),
        signature,
        buf,
        modsig,
        template_input(template, fields) if raw is None else raw,
    )


def _split_dng(field: bytes, index: int) -> tuple[str, bytes]:
    """``<alg>:\\0<digest>``; a known algorithm's digest must have its size."""
    sep = field.find(b":\0")
    alg = field[:sep].decode("ascii", "replace") if sep > 0 else ""
    if sep <= 0 or (alg not in DIGEST_SIZES and not alg.replace("_", "").isalnum()):
        raise ImaLogError(f"IMA entry {index}: digest field lacks '<alg>:\\0'")
    digest = field[sep + 2 :]
    size = DIGEST_SIZES.get(alg)
    if size is not None and len(digest) != size:
        raise ImaLogError(f"IMA entry {index}: {alg} digest of {len(digest)} bytes")
    if not digest:
        raise ImaLogError(f"IMA entry {index}: empty {alg} digest")
    return alg, digest


def _nng(field: bytes, index: int) -> bytes:
    if not field.endswith(b"\0") or b"\0" in field[:-1]:
        raise ImaLogError(f"IMA entry {index}: name field is not one NUL-terminated string")
    return field[:-1]


def _check_template_hash(entry: ImaEntry, hfunc: Callable[..., hashlib._Hash]) -> None:
    if entry.violation:
        return
    if hfunc(entry.template_input).digest() != entry.template_hash:
        raise ImaLogError(
            f"IMA entry {entry.number} ({entry.template} {entry.path[:200]!r}): its data does "
            f"not hash to its template hash {entry.template_hash.hex()}"
        )
