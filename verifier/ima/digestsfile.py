"""A runtime policy's digests file (``runtime: digests_file:``): ``*sum`` lines to a digest map.

The format is what ``sha256sum`` (and every coreutils ``*sum``) prints, one file a line::

    1f3a...e9  /usr/bin/bash              # <hex digest>, two spaces, the absolute path
    sha256:77c0...01 */usr/lib/libc.so.6   # an optional "<alg>:" prefix; " *" (binary mode)
    \\9a1b...44  /opt/a\\nb\\\\c            # a leading backslash: the path has \\n and \\\\ escapes

Blank lines and lines whose first non-blank character is ``#`` are skipped. The path is
everything after the separator, spaces included (no trimming). Order of checks, per line:
its length (at most ``max_line_bytes``: an overlong line stops the parse, nothing after it is
trusted); UTF-8; no NUL; a digest, then ``"  "`` or ``" *"``; the digest is hex of a known
algorithm's size (or of the size of the algorithm its prefix names); the path is absolute,
non-empty, within ``max_ima_path_bytes``, its escapes valid, no carriage return (a CRLF file);
the path's digests within ``max_ima_digests_per_path`` and the file's within
``max_ima_policy_digests``. A digest repeated for a path is kept once.

Every problem is collected with its 1-based line, up to ``MAX_PROBLEMS``, then the parse
stops; ``DigestsFileError`` carries them. Nothing is returned unless the whole file is valid.
This module is pure: lines in (an iterable of ``bytes``, each with its newline), a
``DigestsFile`` out; reading, hashing and resolving the file are the golden loader's part.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from verifier.errors import PolicyViolation
from verifier.ima.parse import DIGEST_SIZES
from verifier.limits import DEFAULT_LIMITS, Limits

MAX_PROBLEMS = 50  # problems listed before the parse stops
_HEX = re.compile(r"[0-9a-fA-F]+")
_ALG = re.compile(r"[a-z0-9_]{1,32}")
_SIZES = frozenset(DIGEST_SIZES.values())
_ESCAPES = {"\\": "\\", "n": "\n", "r": "\r"}
# The common line, checked at once: "<alg>:" (optional), hex of a known size, the separator,
# an absolute path without NUL or CR. Any other line takes the checks one by one.
_COMMON = re.compile(
    rb"(?:(%s):)?((?:%s))(?:  | \*)(/[^\x00\r\n]*)\n?"
    % (
        b"|".join(re.escape(a.encode()) for a in sorted(DIGEST_SIZES, key=len, reverse=True)),
        b"|".join(b"[0-9a-fA-F]{%d}" % (2 * n) for n in sorted(_SIZES, reverse=True)),
    )
)
_SIZE_OF = {a.encode(): n for a, n in DIGEST_SIZES.items()}


@dataclass(frozen=True)
class LineProblem:
    line: int  # 1-based
    column: int  # 1-based; 1 when the whole line is at fault
    message: str

    def __str__(self) -> str:
        return f"{self.line}:{self.column}: {self.message}"


class DigestsFileError(PolicyViolation):
    """The file is invalid; ``problems`` lists each one (at most ``MAX_PROBLEMS``)."""

    def __init__(self, problems: Sequence[LineProblem], stopped: bool) -> None:
        self.problems = tuple(problems)
        self.stopped = stopped  # True when the parse stopped before the end of the file
        super().__init__("; ".join(str(p) for p in self.problems[:5]))


@dataclass(frozen=True, eq=False)
class DigestsFile:
    digests: Mapping[str, tuple[bytes, ...]]  # path -> allowed digests, as RuntimePolicy holds
    count: int  # digests in ``digests`` (after a repeat was kept once)


def max_line_bytes(limits: Limits) -> int:
    """The longest valid line: a prefixed 64-byte digest and a path escaped at every byte."""
    return 2 * limits.max_ima_path_bytes + 192


def parse_digest_lines(lines: Iterable[bytes], limits: Limits = DEFAULT_LIMITS) -> DigestsFile:
    """The digests the lines allow; ``DigestsFileError`` with every problem (see the module)."""
    parser = _Parser(limits)
    for number, raw in enumerate(lines, 1):
        if not parser.line(number, raw):
            break
    if parser.problems:
        raise DigestsFileError(parser.problems, parser.stopped)
    return DigestsFile(parser.digests, parser.count)


class _Parser:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.longest = max_line_bytes(limits)
        self.digests: dict[str, tuple[bytes, ...]] = {}
        self.count = 0
        self.problems: list[LineProblem] = []
        self.stopped = False
        self._interned: dict[bytes, bytes] = {}

    def fail(self, number: int, column: int, message: str) -> bool:
        """Record a problem; False (stop) once ``MAX_PROBLEMS`` are recorded."""
        self.problems.append(LineProblem(number, column, message))
        if len(self.problems) >= MAX_PROBLEMS:
            self.stopped = True
            self.problems.append(
                LineProblem(number, 1, f"stopped after {MAX_PROBLEMS} problems; fix these first")
            )
            return False
        return True

    def stop(self, number: int, message: str) -> bool:
        self.problems.append(LineProblem(number, 1, message))
        self.stopped = True
        return False

    def line(self, number: int, raw: bytes) -> bool:
        """Take one line; False when the parse must stop."""
        if len(raw) > self.longest:
            return self.stop(number, f"line longer than {self.longest} bytes; stopped here")
        common = _COMMON.fullmatch(raw)
        if common is not None:
            alg, hex_digest, path_bytes = common.groups()
            if (alg is None or len(hex_digest) == 2 * _SIZE_OF[alg]) and len(
                path_bytes
            ) <= self.limits.max_ima_path_bytes:
                try:
                    path = path_bytes.decode("utf-8")
                except UnicodeDecodeError:
                    pass  # the checks one by one say where
                else:
                    raw_digest = bytes.fromhex(hex_digest.decode("ascii"))
                    return self.add(number, path, self._interned.setdefault(raw_digest, raw_digest))
        body = raw[:-1] if raw.endswith(b"\n") else raw
        if not body.strip() or body.lstrip().startswith(b"#"):
            return True
        if b"\0" in body:
            return self.fail(number, body.index(b"\0") + 1, "a NUL byte")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            return self.fail(number, exc.start + 1, f"not UTF-8 (byte 0x{body[exc.start]:02x})")
        escaped = text.startswith("\\")
        if escaped:
            text = text[1:]
        space = text.find(" ")
        if space < 0:
            return self.fail(number, 1, "no separator: expected '<digest>  <absolute path>'")
        separator = text[space : space + 2]
        if separator not in ("  ", " *"):
            return self.fail(
                number,
                space + 1 + escaped,
                "the digest must be followed by two spaces or ' *', then the path",
            )
        digest = self.digest(number, text[:space])
        path_column = space + 3 + escaped
        path = self.path(number, path_column, text[space + 2 :], escaped)
        if digest is None or path is None:
            return not self.stopped
        return self.add(number, path, digest)

    def digest(self, number: int, text: str) -> bytes | None:
        alg, colon, hex_text = text.rpartition(":")
        if colon and not (_ALG.fullmatch(alg) and alg in DIGEST_SIZES):
            self.fail(number, 1, f"unknown digest algorithm {alg[:40]!r}")
            return None
        if not _HEX.fullmatch(hex_text) or len(hex_text) % 2:
            self.fail(number, 1, f"digest {hex_text[:80]!r} is not hex")
            return None
        raw = bytes.fromhex(hex_text)
        if (len(raw) != DIGEST_SIZES[alg]) if colon else (len(raw) not in _SIZES):
            self.fail(number, 1, f"{len(raw)}-byte digest is no {alg or 'known'} digest")
            return None
        return self._interned.setdefault(raw, raw)

    def path(self, number: int, column: int, text: str, escaped: bool) -> str | None:
        if escaped:
            unescaped = _unescape(text)
            if unescaped is None:
                self.fail(number, column, "invalid escape in the path (only \\\\, \\n and \\r)")
                return None
            text = unescaped
        elif text.endswith("\r"):
            self.fail(number, column, "the path ends with a carriage return (CRLF line ends?)")
            return None
        if not text:
            self.fail(number, column, "no path after the digest")
            return None
        if not text.startswith("/"):
            self.fail(number, column, f"path {text[:80]!r} is not absolute")
            return None
        if len(text.encode("utf-8")) > self.limits.max_ima_path_bytes:
            self.fail(number, column, f"path longer than {self.limits.max_ima_path_bytes} bytes")
            return None
        return text

    def add(self, number: int, path: str, digest: bytes) -> bool:
        existing = self.digests.get(path, ())
        if digest in existing:
            return True
        if len(existing) >= self.limits.max_ima_digests_per_path:
            return self.fail(
                number, 1, f"more than {self.limits.max_ima_digests_per_path} digests for a path"
            )
        if self.count >= self.limits.max_ima_policy_digests:
            return self.stop(number, f"more than {self.limits.max_ima_policy_digests} digests")
        self.digests[path] = (*existing, digest)
        self.count += 1
        return True


def _unescape(text: str) -> str | None:
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\":
            replacement = _ESCAPES.get(text[i + 1 : i + 2])
            if replacement is None:
                return None
            out.append(replacement)
            i += 2
            continue
        out.append(char)
        i += 1
    return "".join(out)


def writable(path: str, limits: Limits = DEFAULT_LIMITS) -> bool:
    """Whether a digests file can hold ``path`` (absolute, UTF-8, no NUL, not too long)."""
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return path.startswith("/") and "\0" not in path and len(encoded) <= limits.max_ima_path_bytes


def format_digest_lines(digests: Mapping[str, Sequence[str]]) -> Iterator[str]:
    """``*sum`` lines for ``{path: ["<alg>:<hex>" or "<hex>", ...]}``, paths sorted; a path
    with a backslash, newline or carriage return is written escaped (a leading ``\\``)."""
    for path in sorted(digests):
        if not writable(path):
            raise PolicyViolation(f"path {path[:80]!r} cannot be written to a digests file")
        if any(c in path for c in "\\\n\r"):
            shown = path.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
            lead = "\\"
        else:
            shown, lead = path, ""
        for digest in digests[path]:
            yield f"{lead}{digest}  {shown}\n"
