"""Headroom of the embedded store: the disk is never filled by the verifier itself.

Finding 6 of issue 18: on a 5 MB volume the WAL filled the disk by itself, and after space was
freed the verifier still answered UNAVAILABLE. This module holds what the SQLite backend needs
to prevent both:

- ``DiskReserve``: the free space of the database's file system, checked before every write.
  Below the reserve a write is refused with ``StoreUnavailable`` ("disk nearly full"), before
  SQLite starts a transaction that could fail half way; reads are not checked and keep working.
  When space returns the next write passes the check: nothing is latched.
- ``WAL_PRAGMAS``: a bounded write-ahead log. SQLite checkpoints by itself every
  ``WAL_AUTOCHECKPOINT_PAGES`` pages, and truncates the log file back to
  ``JOURNAL_SIZE_LIMIT_BYTES`` when it restarts it, so the file does not keep the size of its
  largest burst. Readers that never pause can still starve the automatic checkpoints: the
  serve loop runs ``checkpoint`` (PASSIVE often, TRUNCATE now and then), see
  ``verifier.store.maintenance``.
- ``is_disk_fault``: the SQLite result codes after which a connection is dropped and the next
  call opens a new one (SQLITE_FULL, SQLITE_IOERR and its extended codes, SQLITE_CANTOPEN):
  a connection that met a full disk may keep a failed transaction or a stale WAL index;
  a fresh one sees the file as it is now.

The reserve must be larger than what the WAL may grow to between checkpoints
(``WAL_AUTOCHECKPOINT_PAGES`` pages), so that refusing writes comes before SQLite meets a
full disk.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from pathlib import Path

from verifier.errors import StoreUnavailable

DEFAULT_RESERVE_BYTES = 64 * 1024 * 1024
WAL_AUTOCHECKPOINT_PAGES = 1000  # SQLite's default, stated: about 4 MiB with 4 KiB pages
JOURNAL_SIZE_LIMIT_BYTES = 4 * 1024 * 1024
WAL_PRAGMAS = (
    f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES:d}",
    f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT_BYTES:d}",
)

_SQLITE_IOERR = 10
_SQLITE_FULL = 13
_SQLITE_CANTOPEN = 14
_DISK_FAULTS = frozenset({_SQLITE_IOERR, _SQLITE_FULL, _SQLITE_CANTOPEN})

_SIZE = re.compile(r"(\d+)([KMGT]?)(i?B)?", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """``64M`` -> 67108864: a byte count with an optional K, M, G or T (powers of 1024).

    Raises ``ValueError`` on anything else (a negative size, a fraction, an unknown unit).
    """
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a size (examples: 0, 512K, 64M, 1G)")
    return int(match.group(1)) * _UNITS[match.group(2).upper()]


def is_disk_fault(exc: sqlite3.Error) -> bool:
    """True for a full disk or an I/O error: the connection must not be used again."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in _DISK_FAULTS


def _human(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    scaled = float(size)
    for unit in ("KiB", "MiB", "GiB"):
        scaled /= 1024
        if scaled < 1024 or unit == "GiB":
            break
    return f"{scaled:.1f} {unit}"


RECHECK_SECONDS = 0.5  # the longest a measured free space is relied on
RECHECK_MARGIN_BYTES = 256 * 1024 * 1024  # ... and only while this much above the reserve


class DiskReserve:
    """At least ``reserve_bytes`` must stay free on the file system holding ``directory``.

    ``reserve_bytes == 0`` turns the check off (SQLite then meets the full disk itself, and
    the connection is replaced after the failure).

    A ``statvfs`` per write costs more than some of the writes it guards, so a measurement
    is reused for up to ``RECHECK_SECONDS`` (monotonic) while it showed more than the reserve
    plus ``RECHECK_MARGIN_BYTES`` free: no burst of this store's writes in half a second comes
    near that margin. Nearer the reserve every write measures again, so refusing and resuming
    stay exact where they matter.
    """

    def __init__(self, directory: Path, reserve_bytes: int) -> None:
        self.directory = directory
        self.reserve_bytes = reserve_bytes
        self._trusted_until = 0.0  # monotonic time until which the last measurement holds

    def free_bytes(self) -> int:
        """Bytes an unprivileged writer may still use on the file system."""
        try:
            stat = os.statvfs(self.directory)
        except OSError as exc:
            msg = f"store: cannot check free space of {self.directory}: {exc}"
            raise StoreUnavailable(msg) from exc
        return stat.f_bavail * stat.f_frsize

    def check(self, op: str) -> None:
        """Raise ``StoreUnavailable`` when a write now would eat into the reserve."""
        if self.reserve_bytes <= 0:
            return
        now = time.monotonic()
        if now < self._trusted_until:
            return
        free = self.free_bytes()
        if free >= self.reserve_bytes + RECHECK_MARGIN_BYTES:
            self._trusted_until = now + RECHECK_SECONDS
        if free < self.reserve_bytes:
            raise StoreUnavailable(
                f"store: {op} refused: disk nearly full ({_human(free)} free on the file "
                f"system of {self.directory}, the reserve is {_human(self.reserve_bytes)}); "
                "free space and writes resume by themselves"
            )
