"""Digests files named by runtime sections (``runtime: digests_file: NAME``), for the loader.

A name is a relative POSIX path inside the golden directory. Order of checks:
1. The name itself: non-empty, relative, no ``.``/``..``/empty component, no NUL, not a
   ``*.yaml``/``*.yml`` name (the loader reads those as profiles), at most ``MAX_NAME`` chars.
2. From a directory: the path resolved (symlinks followed) stays inside the resolved golden
   directory; it is opened without following a symlink swapped in since, without blocking
   (a FIFO); it is a regular file of at most ``Limits.max_runtime_digests_file_bytes``.
   From given files (dry runs, ``audit replay``): the name is one of them, of that size.
3. Its bytes are read once, line by line, each line hashed (SHA-256, for the golden digest)
   and parsed (``verifier.ima.digestsfile``) as it comes: the text is never held whole.
   A file that grows past the limit while being read is refused.

Each name is read once per load, however many profiles name it, and its digest map is shared
by them. A problem with the reference is a ``DigestsFileRefused`` (the section reports it at
its ``digests_file`` line); the file's own problems are kept as ``GoldenProblem``s at the
file's name and line (``problems``), and the reference is then refused too ("has N problems").
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from verifier.ima.digestsfile import DigestsFileError, max_line_bytes, parse_digest_lines
from verifier.ima.section import DigestsFileRefused, SideDigests
from verifier.limits import Limits

PROFILE_SUFFIXES = (".yaml", ".yml")
MAX_NAME = 1024


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a digests file, or None."""
    if "\0" in name:
        return "a digests file name may not hold a NUL byte"
    if len(name) > MAX_NAME:
        return f"a digests file name is longer than {MAX_NAME} characters"
    if name.startswith("/"):
        return f"{name[:80]!r} is absolute: name a file relative to the golden directory"
    parts = name.split("/")
    if ".." in parts:
        return f"{name[:80]!r} leaves the golden directory ('..')"
    if any(part in ("", ".") for part in parts):
        return f"{name[:80]!r}: give a plain relative path (no '.', '//' or trailing '/')"
    if name.endswith(PROFILE_SUFFIXES):
        return f"{name[:80]!r}: a digests file may not end in .yaml/.yml (read as a profile)"
    return None


def open_inside(directory: Path, name: str, limit: int) -> BinaryIO:
    """``directory/name`` opened for reading, checked as the module says (step 2)."""
    problem = name_problem(name)
    if problem is not None:
        raise DigestsFileRefused(problem)
    try:
        root = directory.resolve(strict=True)
        target = (root / name).resolve(strict=True)
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "symlink loop"
        raise DigestsFileRefused(f"cannot read {name[:80]!r}: {reason}") from None
    if not target.is_relative_to(root):
        raise DigestsFileRefused(
            f"{name[:80]!r} resolves outside the golden directory (a symlink?): refused"
        )
    try:
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise DigestsFileRefused(f"cannot read {name[:80]!r}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise DigestsFileRefused(f"{name[:80]!r} is not a regular file")
        if info.st_size > limit:
            raise DigestsFileRefused(_too_large(name, limit))
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def _too_large(name: str, limit: int) -> str:
    return (
        f"{name[:80]!r} is larger than {limit} bytes (max_runtime_digests_file_bytes): "
        "split it or raise the limit"
    )


@dataclass
class DigestsFileReader:
    """The resolver of one load: reads each named file once (``ima.section.DigestsFiles``).

    ``directory`` reads from the golden directory; ``given`` from files given by name (then
    the directory is not consulted). ``problems`` are the files' own line problems;
    ``read`` every file read whole and valid (name -> size, SHA-256), for the digest;
    ``named`` every name asked for (for the hot reload's watch), valid or not.
    """

    limits: Limits
    directory: Path | None = None
    given: Mapping[str, bytes] | None = None
    problems: list[tuple[str, int, int, str]] = field(default_factory=list)  # file, line, col
    read: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    named: list[str] = field(default_factory=list)
    _done: dict[str, SideDigests | DigestsFileRefused] = field(default_factory=dict)

    def __call__(self, name: str) -> SideDigests:
        found = self._done.get(name)
        if found is None:
            self.named.append(name)
            found = self._resolve(name)
            self._done[name] = found
        if isinstance(found, DigestsFileRefused):
            raise found
        return found

    def _resolve(self, name: str) -> SideDigests | DigestsFileRefused:
        try:
            with self._open(name) as handle:
                return self._parse(name, handle)
        except DigestsFileRefused as exc:
            return exc

    def _open(self, name: str) -> BinaryIO:
        limit = self.limits.max_runtime_digests_file_bytes
        if self.directory is not None:
            return open_inside(self.directory, name, limit)
        problem = name_problem(name)
        if problem is not None:
            raise DigestsFileRefused(problem)
        data = (self.given or {}).get(name)
        if data is None:
            raise DigestsFileRefused(f"{name[:80]!r} is not among the given files")
        if len(data) > limit:
            raise DigestsFileRefused(_too_large(name, limit))
        return io.BytesIO(data)

    def _parse(self, name: str, handle: BinaryIO) -> SideDigests:
        stream = _HashedLines(handle, max_line_bytes(self.limits) + 1)
        limit = self.limits.max_runtime_digests_file_bytes
        try:
            parsed = parse_digest_lines(stream.lines(limit), self.limits)
        except DigestsFileError as exc:
            if stream.too_large:
                raise DigestsFileRefused(_too_large(name, limit)) from None
            shown = str(self.directory / name) if self.directory is not None else name
            self.problems.extend((shown, p.line, p.column, p.message) for p in exc.problems)
            count = len(exc.problems)
            raise DigestsFileRefused(
                f"{name[:80]!r} has {count} problem{'s' if count != 1 else ''} (listed at {shown})"
            ) from None
        except OSError as exc:
            raise DigestsFileRefused(f"cannot read {name[:80]!r}: {exc.strerror}") from None
        if stream.too_large:
            raise DigestsFileRefused(_too_large(name, limit))
        sha256 = stream.hash.digest()
        self.read[name] = (stream.size, sha256)
        return SideDigests(name, parsed.digests, parsed.count, stream.size, sha256.hex())


class _HashedLines:
    """Lines of a binary handle (each at most ``chunk`` bytes), hashed and counted as read."""

    def __init__(self, handle: BinaryIO, chunk: int) -> None:
        self.handle = handle
        self.chunk = chunk
        self.hash = hashlib.sha256()
        self.size = 0
        self.too_large = False

    def lines(self, limit: int) -> Iterator[bytes]:
        while True:
            line = self.handle.readline(self.chunk)
            if not line:
                return
            self.size += len(line)
            if self.size > limit:  # grew while being read
                self.too_large = True
                return
            self.hash.update(line)
            yield line
