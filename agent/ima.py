"""The agent's IMA measurement list: what to send, and where it stands, per boot.

The kernel's ``binary_runtime_measurements`` only grows within a boot. The agent keeps a
cursor in its state directory (``ima.json``): the boot it belongs to, the number of entries
the verifier has accepted (``AttestResponse.ima_entries``) and the byte offset where the next
entry starts. Each attestation sends the bytes from that offset (``ima_offset`` = the count);
the verifier chains them from its stored state. The cursor is reset (the whole list is sent)
when the boot id differs, when the file is shorter than the offset (a new list), when the
state file is missing or damaged, and when the verifier answers ``ImaLogRequired``.

The frame reader checks only what it needs to find entry boundaries (the verifier parses and
checks everything): each entry is ``pcr u32, template hash (20 bytes: SHA-1 in the binary
list), name length u32, name`` then, for the legacy ``ima`` template, a 20-byte digest and a
length-prefixed name, else a length-prefixed template data. A frame that does not fit or
is larger than ``MAX_FRAME`` is an ``ImaListError``. The agent never imports the verifier.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

DEFAULT_IMA_LOG: Final = Path("/sys/kernel/security/ima/binary_runtime_measurements")
DEFAULT_BOOT_ID: Final = Path("/proc/sys/kernel/random/boot_id")
CURSOR_FILE: Final = "ima.json"
MAX_SEND: Final = 6 * 1024 * 1024 - 64 * 1024  # fits the verifier's message limit
MAX_FRAME: Final = 256 * 1024
TEMPLATE_HASH_SIZE: Final = 20
IMA_LOG_REQUIRED: Final = "ImaLogRequired"  # the verifier's FAILED_PRECONDITION text starts so
_U32 = struct.Struct("<I")


class ImaListError(Exception):
    """The measurement list cannot be read or split into entries."""


@dataclass(frozen=True)
class Cursor:
    boot_id: str
    entries: int  # accepted by the verifier in this boot
    offset: int  # byte offset of entry number ``entries``


@dataclass(frozen=True)
class Payload:
    data: bytes  # the entries from ``first`` on
    first: int  # their first entry number (the request's ima_offset)
    cursor: Cursor  # where ``data`` starts
    ends: tuple[int, ...]  # byte offset (in the file) after each entry sent


class _Truncated(Exception):
    pass


def frame_ends(data: bytes, base: int = 0) -> tuple[int, ...]:
    """The offsets (``base`` + position) just after each whole entry of ``data``; a last
    entry cut short (by ``MAX_SEND``) is left for the next attestation."""
    ends: list[int] = []
    pos = 0
    while pos < len(data):
        try:
            pos = _frame(data, pos, base)
        except _Truncated:
            break
        ends.append(base + pos)
    return tuple(ends)


def _frame(data: bytes, start: int, base: int) -> int:
    """The end of the entry at ``start``."""
    pos = _skip(data, start + 4 + TEMPLATE_HASH_SIZE + 4)  # pcr, template hash, name length
    size = _u32(data, pos - 4)
    if not 1 <= size <= 255:
        raise ImaListError(f"entry at byte {base + start}: bad template name length {size}")
    name = data[pos : _skip(data, pos + size)]
    pos += size
    pos = _skip(data, pos + (20 + 4 if name == b"ima" else 4))
    pos = _skip(data, pos + _u32(data, pos - 4))
    if pos - start > MAX_FRAME:
        raise ImaListError(f"entry at byte {base + start} is larger than {MAX_FRAME} bytes")
    return pos


def _skip(data: bytes, pos: int) -> int:
    if pos > len(data):
        raise _Truncated
    return pos


def _u32(data: bytes, pos: int) -> int:
    value: int = _U32.unpack_from(data, pos)[0]
    return value


def read_boot_id(path: Path) -> str:
    """The kernel's boot id (a new one every boot); empty when it cannot be read."""
    try:
        return path.read_text(encoding="ascii", errors="replace").strip()[:128]
    except OSError:
        return ""


def payload(ima_log: Path, boot_id: str, cursor: Cursor | None) -> Payload:
    """What to send now: from the cursor when it is of this boot and still fits, else all."""
    if cursor is None or cursor.boot_id != boot_id:
        cursor = Cursor(boot_id, 0, 0)
    try:
        with ima_log.open("rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if cursor.offset and size and cursor.offset > size:
                cursor = Cursor(boot_id, 0, 0)  # a shorter list: not the one we tracked
            fh.seek(cursor.offset)
            data = fh.read(MAX_SEND + 1)
    except OSError as exc:
        raise ImaListError(f"cannot read the IMA log {ima_log}: {exc.strerror or exc}") from exc
    data = data[:MAX_SEND]
    ends = frame_ends(data, cursor.offset)
    whole = ends[-1] - cursor.offset if ends else 0  # a partly written last entry waits
    return Payload(data[:whole], cursor.entries, cursor, ends)


def advanced(sent: Payload, accepted: int) -> Cursor:
    """The cursor after the verifier accepted ``accepted`` entries of this boot in total."""
    start = sent.cursor
    new = accepted - start.entries
    if new < 0 or new > len(sent.ends):
        return Cursor(start.boot_id, 0, 0)  # not what we sent: start over with the whole log
    offset = sent.ends[new - 1] if new else start.offset
    return Cursor(start.boot_id, accepted, offset)


def load_cursor(state_dir: Path) -> Cursor | None:
    """The saved cursor, or ``None`` (missing or damaged: the whole log is sent)."""
    try:
        data = json.loads((state_dir / CURSOR_FILE).read_bytes()[: 64 * 1024])
        cursor = Cursor(str(data["boot_id"]), int(data["entries"]), int(data["offset"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if cursor.entries < 0 or cursor.offset < 0:
        return None
    return cursor


def save_cursor(state_dir: Path, cursor: Cursor) -> None:
    """Written atomically (mode 0600), like the rest of the state directory."""
    raw = json.dumps(
        {"boot_id": cursor.boot_id, "entries": cursor.entries, "offset": cursor.offset}
    ).encode()
    fd, tmp = tempfile.mkstemp(prefix=f".{CURSOR_FILE}.", suffix=".tmp", dir=state_dir)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o600)
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, state_dir / CURSOR_FILE)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def forget_cursor(state_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (state_dir / CURSOR_FILE).unlink()
