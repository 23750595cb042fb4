"""Load golden measurement files (YAML, one profile per file) into a checked ``GoldenSet``.

The format is documented in ``golden_measurements/README.md`` and described for editors by
``golden_measurements/schema.json``. Loading either yields a whole, valid set or raises one
``GoldenError`` carrying every problem of every file, each with file, line and column: a
reload never half-applies and an operator sees all mistakes at once.

Order of checks:
1. The directory exists and holds at least one ``*.yaml``/``*.yml`` file (sorted by name).
2. Per file: size within ``Limits.max_golden_file_bytes``; UTF-8; YAML syntax; one document;
   no anchors, aliases or explicit tags (``golden.nodes``).
3. Per profile: known keys only, no duplicate keys, required keys present, every value of the
   right type (strings that YAML would read as numbers, booleans or dates must be quoted) and
   well formed: names, durations (positive, at most 30 days), bank, PCR indices 0-23,
   quirks, hex digests of the bank's length, dates, regular expressions (compiled here).
4. Per profile, consistency: the SHA-1 bank needs ``allow_sha1: true``; release PCR values
   and the PCRs each event rule reads (S-CRTM 0, boot chain 4, Secure Boot 7, kernel command
   line 8 or 12) are in the quoted selection; a release expects something; release names
   are unique; ``upgrades_to`` names other releases of the profile.
5. Across files: profile names are unique and no two profiles tie on match labels and
   priority. Only then is the set built and its digest computed.

A runtime section's ``digests_file`` is read (once per load, however many profiles name it)
by ``golden.sidefiles`` while its profile is parsed; its own problems are reported at its
name and line, and it becomes one of the set's files: in ``GoldenSet.files``, in the digest,
in the golden history (``livegolden``), and among the files a dry run or ``audit replay``
gives back by name (``load_golden_files``: names ending in ``.yaml``/``.yml`` are profiles,
any other name must be a digests file some profile names).

The digest is ``sha256:`` over a domain tag and the sorted file entries: each file name
length-prefixed, then for a profile its length-prefixed bytes, for a digests file (whose
name never ends in ``.yaml``/``.yml``, so the name says which) its 8-byte size and SHA-256.
Two different sets never share a digest, a set without digests files has the digest it
always had, and a digests file is hashed as it is streamed, never held whole.
"""

from __future__ import annotations

import hashlib
import stat
from collections.abc import Mapping as MappingABC
from dataclasses import dataclass
from pathlib import Path

from verifier.errors import PolicyViolation
from verifier.golden import nodes
from verifier.golden.fields import (
    CMDLINE_KEYS,
    FIRMWARE_KEYS,
    PROFILE_KEYS,
    RELEASE_KEYS,
    SECURE_BOOT_KEYS,
    FileContext,
)
from verifier.golden.model import GoldenSet
from verifier.golden.profile import ParsedProfile, parse_profile
from verifier.golden.sidefiles import PROFILE_SUFFIXES, DigestsFileReader, open_inside
from verifier.limits import DEFAULT_LIMITS, Limits

__all__ = [
    "CMDLINE_KEYS",
    "FIRMWARE_KEYS",
    "PROFILE_KEYS",
    "RELEASE_KEYS",
    "SECURE_BOOT_KEYS",
    "GoldenError",
    "GoldenProblem",
    "golden_digest",
    "load_golden_dir",
    "load_golden_files",
    "load_golden_texts",
    "read_golden_file",
]

SUFFIXES = PROFILE_SUFFIXES
_DIGEST_DOMAIN = b"fleet-attest golden set v1\x00"


@dataclass(frozen=True)
class GoldenProblem:
    """One problem in one file, at a 1-based line and column (0:0 when not in a file)."""

    file: str
    line: int
    column: int
    message: str
    hint: str = ""

    def __str__(self) -> str:
        text = f"{self.file}:{self.line}:{self.column}: {self.message}"
        return f"{text} (hint: {self.hint})" if self.hint else text


class GoldenError(PolicyViolation):
    """The golden files are invalid; ``problems`` lists every problem found, in order.
    ``digests_files`` names the digests files the profiles named (the reload watches them)."""

    def __init__(
        self, problems: tuple[GoldenProblem, ...], digests_files: tuple[str, ...] = ()
    ) -> None:
        if not problems:
            raise ValueError("GoldenError needs at least one problem")
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        super().__init__(f"{problems[0]}{more}")
        self.problems = problems
        self.digests_files = digests_files


@dataclass(frozen=True)
class _Source:
    name: str  # file name, part of the digest
    shown: str  # path shown in problems and Profile.source
    data: bytes | None  # None when it could not be read
    error: str = ""  # why it could not be read


def load_golden_dir(directory: Path, limits: Limits = DEFAULT_LIMITS) -> GoldenSet:
    """Load every ``*.yaml``/``*.yml`` file of ``directory`` (not recursive)."""
    try:
        paths = sorted(p for p in directory.iterdir() if p.name.endswith(SUFFIXES))
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise GoldenError(
            (GoldenProblem(str(directory), 0, 0, f"cannot read the golden directory: {reason}"),)
        ) from exc
    sources = [_read(path, limits) for path in paths]
    return _load(sources, str(directory), limits, DigestsFileReader(limits, directory))


def load_golden_texts(files: MappingABC[str, str], limits: Limits = DEFAULT_LIMITS) -> GoldenSet:
    """Load proposed files given as {file name: text} (dry runs); same checks and digest."""
    return load_golden_files(
        {name: text.encode("utf-8", errors="surrogatepass") for name, text in files.items()},
        limits,
    )  # surrogates are reported by the decode


def load_golden_files(files: MappingABC[str, bytes], limits: Limits = DEFAULT_LIMITS) -> GoldenSet:
    """Load a set given as {file name: bytes} (dry runs, ``audit replay``): profiles and the
    digests files they name; same checks and digest as from a directory."""
    sources = [_Source(n, n, data) for n, data in sorted(files.items()) if n.endswith(SUFFIXES)]
    side = {name: data for name, data in files.items() if not name.endswith(SUFFIXES)}
    reader = DigestsFileReader(limits, given=side)
    return _load(sources, "<proposed files>", limits, reader)


def read_golden_file(directory: Path, name: str, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """One file of a loaded set read again (the golden history, ``audit replay --golden``),
    with the loader's checks (a digests file stays inside, no FIFO); raises ``OSError`` or
    ``PolicyViolation``."""
    if name.endswith(SUFFIXES):
        source = _read(directory / name, limits)
        if source.data is None:
            raise OSError(f"{directory / name}: {source.error}")
        return source.data
    with open_inside(directory, name, limits.max_runtime_digests_file_bytes) as handle:
        return handle.read(limits.max_runtime_digests_file_bytes + 1)


def golden_digest(files: MappingABC[str, bytes]) -> str:
    """The content digest of a set of files: {file name: bytes}."""
    profiles = {name: data for name, data in files.items() if name.endswith(SUFFIXES)}
    side = {
        name: (len(data), hashlib.sha256(data).digest())
        for name, data in files.items()
        if not name.endswith(SUFFIXES)
    }
    return _set_digest(profiles, side)


def _set_digest(profiles: MappingABC[str, bytes], side: MappingABC[str, tuple[int, bytes]]) -> str:
    digest = hashlib.sha256(_DIGEST_DOMAIN)
    for name in sorted((*profiles, *side)):
        encoded = name.encode("utf-8", "surrogatepass")
        digest.update(len(encoded).to_bytes(8, "big"))
        digest.update(encoded)
        if name in profiles:
            data = profiles[name]
            digest.update(len(data).to_bytes(8, "big"))
            digest.update(data)
        else:
            size, sha256 = side[name]
            digest.update(size.to_bytes(8, "big"))
            digest.update(sha256)
    return "sha256:" + digest.hexdigest()


def _read(path: Path, limits: Limits) -> _Source:
    try:
        if not stat.S_ISREG(path.stat().st_mode):  # a FIFO would block the reload forever
            return _Source(path.name, str(path), None, "not a regular file")
        with path.open("rb") as handle:
            data = handle.read(limits.max_golden_file_bytes + 1)
    except OSError as exc:
        return _Source(path.name, str(path), None, exc.strerror or type(exc).__name__)
    return _Source(path.name, str(path), data)


def _load(
    sources: list[_Source], where: str, limits: Limits, reader: DigestsFileReader
) -> GoldenSet:
    if not sources:
        raise GoldenError(
            (
                GoldenProblem(
                    where, 0, 0, "no golden files", "add one *.yaml file per device profile"
                ),
            )
        )
    problems: list[GoldenProblem] = []
    parsed: list[ParsedProfile] = []
    for source in sources:
        ctx = FileContext(source.shown, limits, reader)
        profile = _parse_source(ctx, source)
        problems.extend(_problems(ctx))
        if profile is not None:
            parsed.append(profile)
    problems.extend(GoldenProblem(*problem) for problem in reader.problems)
    for name in sorted(set(reader.given or {}) - set(reader.named)):
        problems.append(
            GoldenProblem(
                name,
                0,
                0,
                "not a profile (*.yaml) and no profile's runtime.digests_file names it",
            )
        )
    problems.extend(_cross_file(parsed))
    if problems:
        raise GoldenError(tuple(problems), tuple(reader.named))
    data = {s.name: s.data or b"" for s in sources}
    return GoldenSet(
        profiles=tuple(p.profile for p in parsed),
        digest=_set_digest(data, reader.read),
        files=tuple(sorted((*data, *reader.read))),
    )


def _parse_source(ctx: FileContext, source: _Source) -> ParsedProfile | None:
    if source.data is None:
        ctx.problem_at(0, 0, f"cannot read the file: {source.error}")
        return None
    if len(source.data) > ctx.limits.max_golden_file_bytes:
        ctx.problem_at(
            1,
            1,
            f"file is larger than {ctx.limits.max_golden_file_bytes} bytes",
            "split it into one file per profile, move runtime digests to a digests_file, "
            "or raise max_golden_file_bytes",
        )
        return None
    try:
        text = source.data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = source.data[: exc.start]
        line = before.count(b"\n") + 1
        column = len(before) - (before.rfind(b"\n") + 1) + 1
        ctx.problem_at(line, column, f"not UTF-8 (byte 0x{source.data[exc.start]:02x})")
        return None
    root, issues = nodes.compose(text)
    for issue in issues:
        ctx.problem_at(issue.line, issue.column, issue.message, issue.hint)
    if root is None:
        if not issues:
            ctx.problem_at(1, 1, "file is empty", "a golden file holds one profile mapping")
        return None
    return parse_profile(ctx, root)


def _problems(ctx: FileContext) -> list[GoldenProblem]:
    ordered = sorted(ctx.problems, key=lambda p: (p[0], p[1]))
    return [GoldenProblem(ctx.file, line, column, msg, hint) for line, column, msg, hint in ordered]


def _cross_file(parsed: list[ParsedProfile]) -> list[GoldenProblem]:
    problems: list[GoldenProblem] = []
    seen_names: dict[str, ParsedProfile] = {}
    seen_match: dict[tuple[tuple[tuple[str, str], ...], int], ParsedProfile] = {}
    for item in parsed:
        profile = item.profile
        first = seen_names.setdefault(profile.name, item)
        if first is not item:
            problems.append(
                GoldenProblem(
                    profile.source,
                    item.name_line,
                    item.name_column,
                    f"duplicate profile name {profile.name!r}",
                    f"also defined at {_where(first)}",
                )
            )
            continue
        key = (tuple(sorted(profile.match_labels.items())), profile.priority)
        other = seen_match.setdefault(key, item)
        if other is not item:
            problems.append(
                GoldenProblem(
                    profile.source,
                    item.match_line,
                    item.match_column,
                    f"profile {profile.name!r} has the same match labels and priority as "
                    f"profile {other.profile.name!r}: a device would match both",
                    f"change the labels or the priority (the other is at {_where(other)})",
                )
            )
    return problems


def _where(item: ParsedProfile) -> str:
    return f"{item.profile.source}:{item.name_line}"
