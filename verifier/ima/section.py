"""The golden YAML ``runtime:`` section, from plain data (dict/list/str) to a ``RuntimePolicy``.

Shape (every key optional except that the section must allow something)::

    runtime:
      template_hash: sha1            # template hash algorithm of the list agents send
      unknown: contraindicated       # or "warning": the learning mode
      violations: contraindicated    # or "warning": ToMToU / open-writer entries
      digests:                       # path -> allowed file digests (several for a rollout)
        /usr/bin/bash:
          - sha256:1f3a...           # "<alg>:<hex>" or bare hex
      digests_file: gateway.sums     # more of them, in sha256sum format (``ima.digestsfile``)
      exclude:                       # paths never appraised; each matches the whole path
        - glob: /tmp/**              # * within a segment, ** across, ? one character
        - regex: /var/log/.*\\.log   # RE2 syntax (linear time)
      signatures:
        keys:                        # ima-sig v2 keys: X.509 certificate or public key, PEM
          - name: distro-ima
            keyid: 1a2b3c4d          # optional: else the SKID's / key's SHA-1 last 4 bytes
            pem: |
              -----BEGIN CERTIFICATE-----
              ...
        require:                     # paths that must carry a valid signature
          - glob: /usr/bin/*
      buf:                           # ima-buf entries by name
        kexec-cmdline:
          digests: [sha256:...]      # digests of the buffer
          values: ["root=/dev/vda1 ro"]  # or the buffer itself, as text
        .builtin_trusted_keys:
          ignore: true

Order of checks: the section is a mapping with known keys only; each value has its type and
form (severities, algorithm, hex digests of a known algorithm's size, patterns that compile in
RE2, keys that load); a ``digests_file`` is read through the caller's resolver (the golden
loader: it finds the file, checks and parses it, and reports its lines' problems itself);
its digests and the inline ones are merged per path; counts are within ``Limits``
(``max_ima_policy_digests`` and ``max_ima_digests_per_path`` over the merged digests,
``max_ima_patterns``, ``max_ima_pattern_bytes``). Every problem
is collected and raised at once as ``RuntimeSectionError`` with where each one is (a key path
such as ``runtime.digests['/usr/bin/bash'][0]``, for the golden loader to map to a line).
Warnings (an exclusion matching every path) are returned, not raised.

The policy's digest (``RuntimePolicy.digest``, which binds a device's incremental IMA state
to the policy that judged it) covers the section and, for a digests file, its name, size and
SHA-256: a changed file is a changed policy.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from verifier.errors import ImaLogError, PolicyViolation
from verifier.ima.keys import SigningKey, load_signing_key
from verifier.ima.parse import DIGEST_SIZES, hash_function
from verifier.ima.policy import BufRule, PathMatcher, PathPattern, RuntimePolicy
from verifier.limits import DEFAULT_LIMITS, Limits
from verifier.verdict import Status

SECTION_KEYS = frozenset(
    {
        "template_hash",
        "unknown",
        "violations",
        "digests",
        "digests_file",
        "exclude",
        "signatures",
        "buf",
    }
)
SIGNATURE_KEYS = frozenset({"keys", "require"})
KEY_KEYS = frozenset({"name", "pem", "keyid"})
BUF_KEYS = frozenset({"digests", "values", "ignore"})
SEVERITIES = {"contraindicated": Status.CONTRAINDICATED, "warning": Status.WARNING}
_DIGEST_DOMAIN = "fleet-attest runtime policy v1"


@dataclass(frozen=True)
class SectionProblem:
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class RuntimeSectionError(PolicyViolation):
    def __init__(self, problems: list[SectionProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(str(p) for p in problems[:20]))


@dataclass(frozen=True)
class ParsedRuntime:
    policy: RuntimePolicy
    warnings: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class SideDigests:
    """A digests file as the resolver read it: shared by every profile that names it."""

    name: str  # as the section names it (relative to the golden directory)
    digests: Mapping[str, tuple[bytes, ...]]
    count: int  # digests in ``digests``
    size: int  # bytes of the file
    sha256: str  # hex, of the file's bytes


class DigestsFileRefused(PolicyViolation):
    """The named digests file cannot be used; the message says why (one line)."""


# name -> the file's digests, or ``DigestsFileRefused``
DigestsFiles = Callable[[str], SideDigests]


def parse_runtime_section(
    data: object,
    *,
    where: str = "runtime",
    limits: Limits = DEFAULT_LIMITS,
    digests_files: DigestsFiles | None = None,
) -> ParsedRuntime:
    """The policy the section describes; ``RuntimeSectionError`` listing every problem.
    ``digests_files`` resolves ``digests_file``; without it that key is a problem."""
    parser = _Parser(limits, digests_files)
    policy = parser.section(data, where)
    if parser.problems or policy is None:
        raise RuntimeSectionError(parser.problems or [SectionProblem(where, "invalid")])
    warnings = [
        f"{where}.exclude {p}: matches every path; it disables the runtime policy"
        for p in policy.exclude.matching_everything()
    ]
    return ParsedRuntime(policy, tuple(warnings))


def section_digest(data: object) -> str:
    """``sha256:`` over a domain tag and the section's canonical JSON."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    raw = (_DIGEST_DOMAIN + "\0" + text).encode("utf-8", "surrogatepass")
    return "sha256:" + hashlib.sha256(raw).hexdigest()


class _Parser:
    def __init__(self, limits: Limits, digests_files: DigestsFiles | None) -> None:
        self.limits = limits
        self.digests_files = digests_files
        self.problems: list[SectionProblem] = []
        self.total_digests = 0
        self.patterns = 0
        self._interned: dict[bytes, bytes] = {}

    def fail(self, where: str, message: str) -> None:
        self.problems.append(SectionProblem(where, message))

    def section(self, data: object, where: str) -> RuntimePolicy | None:
        if not isinstance(data, Mapping):
            self.fail(where, "must be a mapping")
            return None
        self.known(data, SECTION_KEYS, where)
        template_hash = data.get("template_hash", "sha1")
        if not isinstance(template_hash, str) or template_hash not in DIGEST_SIZES:
            self.fail(f"{where}.template_hash", f"unknown algorithm {template_hash!r}")
        else:
            try:
                hash_function(template_hash)
            except ImaLogError as exc:
                self.fail(f"{where}.template_hash", str(exc))
        digests: Mapping[str, tuple[bytes, ...]]
        digests = self.digests(data.get("digests", {}), f"{where}.digests")
        side = None
        if "digests_file" in data:
            side = self.side_file(data["digests_file"], f"{where}.digests_file")
            if side is not None:
                digests = self.merged(digests, side, f"{where}.digests_file")
        exclude = self.matcher(data.get("exclude", []), f"{where}.exclude")
        keys, require = self.signatures(data.get("signatures", {}), f"{where}.signatures")
        buf = self.buf(data.get("buf", {}), f"{where}.buf")
        unknown = self.severity(data.get("unknown", "contraindicated"), f"{where}.unknown")
        violations = self.severity(data.get("violations", "contraindicated"), f"{where}.violations")
        refused_file = "digests_file" in data and side is None  # already a problem
        if not (digests or keys or buf or refused_file):
            self.fail(where, "allows nothing: give digests, signature keys or buf rules")
        return RuntimePolicy(
            digests=digests,
            exclude=exclude,
            require_signature=require,
            keys=keys,
            buf=buf,
            unknown=unknown,
            violations=violations,
            template_hash_alg=str(template_hash),
            digest=section_digest(_identity(data, side)),
        )

    def side_file(self, name: object, where: str) -> SideDigests | None:
        if not isinstance(name, str) or not name:
            self.fail(where, "must be a file name relative to the golden directory")
            return None
        if self.digests_files is None:
            self.fail(where, "a digests file can only be read by the golden loader")
            return None
        try:
            return self.digests_files(name)
        except DigestsFileRefused as exc:
            self.fail(where, str(exc))
            return None

    def merged(
        self, inline: dict[str, tuple[bytes, ...]], side: SideDigests, where: str
    ) -> Mapping[str, tuple[bytes, ...]]:
        """The file's digests with the inline ones added per path (the file's own mapping,
        shared, when there are none inline)."""
        total = self.total_digests + side.count
        merged: dict[str, tuple[bytes, ...]] = {}
        for path, values in inline.items():
            listed = side.digests.get(path, ())
            both = (*listed, *(d for d in values if d not in listed))
            total -= len(listed) + len(values) - len(both)
            if len(both) > self.limits.max_ima_digests_per_path:
                self.fail(
                    f"{where} {path!r}",
                    f"more than {self.limits.max_ima_digests_per_path} digests for the path "
                    "in the file and the section together",
                )
            merged[path] = both
        self.total_digests = total  # the buf rules' digests count on top
        if total > self.limits.max_ima_policy_digests:
            self.fail(
                where,
                f"more than {self.limits.max_ima_policy_digests} digests in the file and the "
                "section together",
            )
        if not merged:
            return side.digests
        return {**side.digests, **merged}

    def known(self, data: Mapping[object, object], keys: frozenset[str], where: str) -> None:
        for key in data:
            if key not in keys:
                self.fail(f"{where}.{key}", f"unknown key (known: {', '.join(sorted(keys))})")

    def severity(self, value: object, where: str) -> Status:
        status = SEVERITIES.get(value) if isinstance(value, str) else None
        if status is None:
            self.fail(where, f"must be one of {', '.join(SEVERITIES)}, not {value!r}")
            return Status.CONTRAINDICATED
        return status

    def digests(self, data: object, where: str) -> dict[str, tuple[bytes, ...]]:
        if not isinstance(data, Mapping):
            self.fail(where, "must map paths to lists of digests")
            return {}
        result: dict[str, tuple[bytes, ...]] = {}
        for path, values in data.items():
            here = f"{where}[{path!r}]"
            if not isinstance(path, str) or not path:
                self.fail(here, "a path must be a non-empty string")
                continue
            parsed = self.digest_list(values, here)
            if parsed:
                result[path] = parsed
        return result

    def digest_list(self, values: object, where: str) -> tuple[bytes, ...]:
        if isinstance(values, str):
            values = [values]
        if not isinstance(values, list) or not values:
            self.fail(where, "must be a non-empty list of digests")
            return ()
        if len(values) > self.limits.max_ima_digests_per_path:
            self.fail(where, f"more than {self.limits.max_ima_digests_per_path} digests")
            return ()
        self.total_digests += len(values)
        if self.total_digests > self.limits.max_ima_policy_digests:
            if self.total_digests - len(values) <= self.limits.max_ima_policy_digests:
                self.fail(where, f"more than {self.limits.max_ima_policy_digests} digests")
            return ()
        out: list[bytes] = []
        for number, value in enumerate(values):
            digest = self.digest(value, f"{where}[{number}]")
            if digest is not None and digest not in out:
                out.append(digest)
        return tuple(out)

    def digest(self, value: object, where: str) -> bytes | None:
        if not isinstance(value, str):
            self.fail(where, "a digest must be a string '<alg>:<hex>' or hex")
            return None
        alg, sep, text = value.partition(":")
        if not sep:
            alg, text = "", value
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            self.fail(where, f"{value[:80]!r} is not hex")
            return None
        sizes = {DIGEST_SIZES[alg]} if alg in DIGEST_SIZES else set(DIGEST_SIZES.values())
        if alg and alg not in DIGEST_SIZES:
            self.fail(where, f"unknown digest algorithm {alg!r}")
            return None
        if len(raw) not in sizes:
            self.fail(where, f"{len(raw)}-byte digest is no {alg or 'known'} digest")
            return None
        return self._interned.setdefault(raw, raw)

    def matcher(self, data: object, where: str) -> PathMatcher:
        if not isinstance(data, list):
            self.fail(where, "must be a list of {glob: ...} or {regex: ...}")
            return PathMatcher(())
        patterns: list[PathPattern] = []
        for number, item in enumerate(data):
            pattern = self.pattern(item, f"{where}[{number}]")
            if pattern is not None:
                patterns.append(pattern)
        self.patterns += len(patterns)
        if self.patterns > self.limits.max_ima_patterns:
            self.fail(where, f"more than {self.limits.max_ima_patterns} path patterns")
            return PathMatcher(())
        try:
            return PathMatcher(patterns)
        except PolicyViolation as exc:
            self.fail(where, str(exc))
            return PathMatcher(())

    def pattern(self, item: object, where: str) -> PathPattern | None:
        if not isinstance(item, Mapping) or len(item) != 1:
            self.fail(where, "must be {glob: <text>} or {regex: <text>}")
            return None
        ((kind, text),) = item.items()
        if kind not in ("glob", "regex") or not isinstance(text, str) or not text:
            self.fail(where, "must be {glob: <text>} or {regex: <text>}")
            return None
        if len(text.encode("utf-8", "surrogatepass")) > self.limits.max_ima_pattern_bytes:
            self.fail(where, f"pattern longer than {self.limits.max_ima_pattern_bytes} bytes")
            return None
        pattern = PathPattern(str(kind), text)
        try:
            PathMatcher([pattern])
        except PolicyViolation as exc:
            self.fail(where, str(exc))
            return None
        return pattern

    def signatures(self, data: object, where: str) -> tuple[dict[int, SigningKey], PathMatcher]:
        if not isinstance(data, Mapping):
            self.fail(where, "must be a mapping with keys and require")
            return {}, PathMatcher(())
        self.known(data, SIGNATURE_KEYS, where)
        keys: dict[int, SigningKey] = {}
        items = data.get("keys", [])
        if not isinstance(items, list):
            self.fail(f"{where}.keys", "must be a list of {name, pem}")
            items = []
        for number, item in enumerate(items):
            key = self.key(item, f"{where}.keys[{number}]")
            if key is None:
                continue
            if key.keyid in keys:
                self.fail(f"{where}.keys[{number}]", f"key id {key.keyid:08x} is given twice")
            keys[key.keyid] = key
        require = self.matcher(data.get("require", []), f"{where}.require")
        if require.patterns and not keys:
            self.fail(f"{where}.require", "signatures are required but no key is configured")
        return keys, require

    def key(self, item: object, where: str) -> SigningKey | None:
        if not isinstance(item, Mapping):
            self.fail(where, "must be {name: ..., pem: ...}")
            return None
        self.known(item, KEY_KEYS, where)
        name, pem = item.get("name"), item.get("pem")
        if not isinstance(name, str) or not name or not isinstance(pem, str):
            self.fail(where, "needs a name and a pem text")
            return None
        keyid = item.get("keyid")
        if keyid is not None and not (
            isinstance(keyid, str) and len(keyid) == 8 and _is_hex(keyid)
        ):
            self.fail(f"{where}.keyid", "must be 8 hex digits (the signatures' key id)")
            return None
        try:
            key = load_signing_key(name, pem.encode("ascii", "replace"))
        except PolicyViolation as exc:
            self.fail(where, str(exc))
            return None
        return replace(key, keyid=int(keyid, 16)) if keyid is not None else key

    def buf(self, data: object, where: str) -> dict[str, BufRule]:
        if not isinstance(data, Mapping):
            self.fail(where, "must map ima-buf names to rules")
            return {}
        rules: dict[str, BufRule] = {}
        for name, item in data.items():
            here = f"{where}[{name!r}]"
            if not isinstance(name, str) or not isinstance(item, Mapping):
                self.fail(here, "must be a name mapped to {digests, values, ignore}")
                continue
            self.known(item, BUF_KEYS, here)
            ignore = item.get("ignore", False)
            if not isinstance(ignore, bool):
                self.fail(f"{here}.ignore", "must be true or false")
                continue
            digests = (
                self.digest_list(item["digests"], f"{here}.digests") if "digests" in item else ()
            )
            values = item.get("values", [])
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                self.fail(f"{here}.values", "must be a list of strings")
                continue
            if not (ignore or digests or values):
                self.fail(here, "allows nothing: give digests, values or ignore: true")
            encoded = tuple(v.encode("utf-8", "surrogateescape") for v in values)
            rules[name] = BufRule(digests=digests, values=encoded, ignore=ignore)
        return rules


def _identity(data: Mapping[object, object], side: SideDigests | None) -> object:
    """What the policy digest covers: the section, with a digests file's name, size and hash."""
    if side is None:
        return data
    return {
        **data,
        "digests_file": {"name": side.name, "size": side.size, "sha256": side.sha256},
    }


def _is_hex(text: str) -> bool:
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True
