"""The runtime policy model and its evaluation against accepted IMA entries.

A ``RuntimePolicy`` is built once per golden set (``verifier.ima.section``) and shared by every
device: ``digests`` maps a path to its allowed file digests (a dict: one lookup per entry),
exclusions and signature requirements are one RE2 set each (one linear-time match per entry),
keys are a dict by 32-bit key id. Nothing is copied per device or per attestation.

Evaluation collects ``Reason`` values (it does not raise). Per entry, in order:

1. A violation (zero template hash: its fields are bound by nothing, so not even its path is
   trusted, nor any exclusion) gives ``ima_violation`` with the ``violations`` severity.
2. ``boot_aggregate`` at entry 0 is skipped: ``replay.check_boot_aggregate`` checks it.
3. An excluded path is skipped.
4. ``ima-buf``: the digest must be the hash of the buffer (``ima_buf_digest_mismatch``); a
   name ruled ``ignore`` is skipped; a name with rules must carry an allowed digest or value
   (``ima_buf_not_allowed``); an unknown name is an unknown entry.
5. A ``sig`` field, when keys are configured: by a configured key it must verify
   (``ima_signature_invalid``, always contraindicated) and then the entry is accepted; by an
   unknown key it counts for nothing. A path matching ``require_signature`` without a valid
   signature gives ``ima_signature_required``. ``modsig`` (PKCS#7) never counts as a signature.
6. A path in ``digests`` must carry one of its digests (``ima_digest_not_allowed``, always
   contraindicated); any other path is an unknown entry (``ima_unknown_entry``, with the
   ``unknown`` severity: contraindicated by default, ``warning`` is the learning mode).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import re2  # type: ignore[import-untyped]

from verifier.errors import ImaLogError, PolicyViolation, SignatureInvalid
from verifier.ima.keys import SigningKey, verify_signature
from verifier.ima.parse import BOOT_AGGREGATE, IMA_PCR, ImaEntry, hash_function
from verifier.verdict import Reason, Status

# Paths no honest exclusion matches all of: one that does is reported as matching everything.
PROBE_PATHS = (
    "/",
    "/usr/bin/bash",
    "/usr/lib/x86_64-linux-gnu/libc.so.6",
    "/etc/ld.so.cache",
    "/root/.ssh/authorized_keys",
    "/srv/a b\tc",
    "/opt/\u00e9t\u00e9/x",
    "/var/lib/x/" + "y" * 300,
)
_EXPECTED_SHOWN = 4  # digests listed in a reason's ``expected``


def _options() -> object:
    options = re2.Options()
    options.log_errors = False
    options.dot_nl = True
    return options


@dataclass(frozen=True)
class PathPattern:
    """A glob (``*`` within a path segment, ``**`` across them, ``?`` one character) or a
    regular expression in RE2 syntax; both must match the whole path."""

    kind: str  # "glob" or "regex"
    text: str

    @property
    def regex(self) -> str:
        return self.text if self.kind == "regex" else glob_to_regex(self.text)

    def __str__(self) -> str:
        return f"{self.kind}:{self.text}"


def glob_to_regex(glob: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(glob):
        char = glob[i]
        if glob.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char.isalnum() or ord(char) > 127:
            out.append(char)
        else:
            out.append(
                "\\" + char if char.isprintable() and char != " " else f"\\x{{{ord(char):x}}}"
            )
        i += 1
    return "".join(out)


class PathMatcher:
    """Patterns compiled into one RE2 full-match set: linear time in the path, once."""

    def __init__(self, patterns: Iterable[PathPattern]) -> None:
        self.patterns: tuple[PathPattern, ...] = tuple(patterns)
        self._set: object | None = None
        if not self.patterns:
            return
        options = _options()
        compiled = re2.Set.FullMatchSet(options)
        for pattern in self.patterns:
            try:
                re2.compile(pattern.regex, options)
            except re2.error as exc:
                raise PolicyViolation(f"path pattern {pattern}: not valid RE2: {exc}") from None
            compiled.Add(pattern.regex)
        compiled.Compile()
        self._set = compiled

    def first(self, path: str) -> PathPattern | None:
        """The first pattern matching ``path``, or None."""
        if self._set is None:
            return None
        hits = self._set.Match(path)  # type: ignore[attr-defined]
        return self.patterns[min(hits)] if hits else None

    def matching_everything(self) -> tuple[PathPattern, ...]:
        """Patterns that match every probe path: they disable the policy for all files."""
        return tuple(
            p for p in self.patterns if all(PathMatcher([p]).first(x) for x in PROBE_PATHS)
        )


class EntryOutcome(enum.Enum):
    """The step of the evaluation order (module docstring) that decided an entry."""

    BOOT_AGGREGATE = "boot_aggregate"  # entry 0: checked against the quoted PCRs instead
    ALLOWED = "allowed"  # an allowed digest (or ima-buf digest or value)
    EXCLUDED = "excluded"  # an excluded path, or an ima-buf name ruled ``ignore``
    SIGNED = "signed"  # a valid signature by a configured key
    UNKNOWN = "unknown"  # not in the policy: the ``unknown`` severity
    VIOLATION = "violation"  # ToMToU / open-writer: the ``violations`` severity
    REJECTED = "rejected"  # a digest, buffer or signature the policy refuses


_BOOT_AGGREGATE = (EntryOutcome.BOOT_AGGREGATE, None)
_ALLOWED = (EntryOutcome.ALLOWED, None)
_EXCLUDED = (EntryOutcome.EXCLUDED, None)


@dataclass(frozen=True)
class BufRule:
    """What an ``ima-buf`` entry of one name may carry (``ignore``: anything)."""

    digests: tuple[bytes, ...] = ()
    values: tuple[bytes, ...] = ()
    ignore: bool = False


@dataclass(frozen=True, eq=False)
class RuntimePolicy:
    digests: Mapping[str, tuple[bytes, ...]]
    exclude: PathMatcher = field(default_factory=lambda: PathMatcher(()))
    require_signature: PathMatcher = field(default_factory=lambda: PathMatcher(()))
    keys: Mapping[int, SigningKey] = field(default_factory=dict)
    buf: Mapping[str, BufRule] = field(default_factory=dict)
    unknown: Status = Status.CONTRAINDICATED
    violations: Status = Status.CONTRAINDICATED
    template_hash_alg: str = "sha1"  # of the measurement list the agents send
    digest: str = ""  # content digest of the section it was built from

    def evaluate(self, entries: Iterable[ImaEntry]) -> tuple[Reason, ...]:
        """Every reason the entries give, in entry order (see the module for the order)."""
        reasons: list[Reason] = []
        fast_pass, judge = self._fast_pass, self.judge
        for entry in entries:
            if fast_pass(entry):  # judge's own first pass, without building its answer
                continue
            reason = judge(entry)[1]
            if reason is not None:
                reasons.append(reason)
        return tuple(reasons)

    def evaluate_entry(self, entry: ImaEntry) -> Reason | None:
        return self.judge(entry)[1]

    def judge(self, entry: ImaEntry) -> tuple[EntryOutcome, Reason | None]:
        """How the policy judged ``entry`` (the step that decided it) and its reason, if any:
        the one decision, used by the appraisal and by explain and dry run alike."""
        if entry.violation:
            return EntryOutcome.VIOLATION, _reason(
                entry,
                "ima_violation",
                self.violations,
                "a ToMToU or open-writer violation (file measured while open for write)",
                rule="runtime.violations",
            )
        if entry.number == 0 and entry.path == BOOT_AGGREGATE:
            return _BOOT_AGGREGATE
        if self._fast_pass(entry):
            return _ALLOWED
        if self.exclude.first(entry.path) is not None:
            return _EXCLUDED
        if entry.template == "ima-buf":
            return self._buf(entry)
        if entry.signature and self.keys:
            try:
                verify_signature(entry.signature, entry.digest_alg, entry.digest, self.keys)
                return EntryOutcome.SIGNED, None
            except SignatureInvalid as exc:
                if "not a configured key" not in str(exc):
                    return EntryOutcome.REJECTED, _reason(
                        entry,
                        "ima_signature_invalid",
                        Status.CONTRAINDICATED,
                        str(exc),
                        rule="runtime.signatures",
                    )
        required = self.require_signature.first(entry.path)
        if required is not None:
            return EntryOutcome.REJECTED, _reason(
                entry,
                "ima_signature_required",
                Status.CONTRAINDICATED,
                "a valid signature by a configured key is required",
                expected="signature",
                rule=f"runtime.signatures.require {required}",
            )
        return self._digest(entry)

    def _fast_pass(self, entry: ImaEntry) -> bool:
        """An unsigned file with an allowed digest and no signature rule passes whatever the
        exclusions say (an excluded entry passes too), so they need not be matched. Never a
        violation: its fields are bound by nothing (``evaluate`` asks this before ``judge``)."""
        if (
            entry.signature
            or entry.template == "ima-buf"
            or self.require_signature.patterns
            or not any(entry.template_hash)
        ):
            return False
        allowed = self.digests.get(entry.path)
        return allowed is not None and entry.digest in allowed

    def _digest(self, entry: ImaEntry) -> tuple[EntryOutcome, Reason | None]:
        allowed = self.digests.get(entry.path)
        if allowed is None:
            return EntryOutcome.UNKNOWN, _reason(
                entry,
                "ima_unknown_entry",
                self.unknown,
                "not in the runtime policy",
                rule="runtime.unknown",
            )
        if entry.digest in allowed:
            return EntryOutcome.ALLOWED, None
        return EntryOutcome.REJECTED, _reason(
            entry,
            "ima_digest_not_allowed",
            Status.CONTRAINDICATED,
            "digest not allowed for this path",
            expected=_shown(allowed),
            rule=f"runtime.digests[{entry.path}]",
        )

    def _buf(self, entry: ImaEntry) -> tuple[EntryOutcome, Reason | None]:
        try:
            actual = hash_function(entry.digest_alg)(entry.buf).digest()
        except ImaLogError:
            actual = None
        if actual != entry.digest:
            return EntryOutcome.REJECTED, _reason(
                entry,
                "ima_buf_digest_mismatch",
                Status.CONTRAINDICATED,
                "the buffer does not hash to the entry's digest",
                expected=f"{entry.digest_alg}:{actual.hex() if actual else '?'}",
            )
        rule = self.buf.get(entry.path)
        if rule is None:
            return EntryOutcome.UNKNOWN, _reason(
                entry,
                "ima_unknown_entry",
                self.unknown,
                "ima-buf name not in the policy",
                rule="runtime.unknown",
            )
        if rule.ignore:
            return EntryOutcome.EXCLUDED, None
        if entry.digest in rule.digests or entry.buf in rule.values:
            return EntryOutcome.ALLOWED, None
        return EntryOutcome.REJECTED, _reason(
            entry,
            "ima_buf_not_allowed",
            Status.CONTRAINDICATED,
            "buffer not allowed for this name",
            expected=_shown(rule.digests) + (" or listed values" if rule.values else ""),
            rule=f"runtime.buf[{entry.path}]",
        )


def _shown(digests: tuple[bytes, ...]) -> str:
    text = ", ".join(d.hex() for d in digests[:_EXPECTED_SHOWN])
    more = len(digests) - _EXPECTED_SHOWN
    return f"{text} (+{more} more)" if more > 0 else text


def _reason(
    entry: ImaEntry,
    code: str,
    severity: Status,
    what: str,
    *,
    expected: str = "",
    rule: str = "",
) -> Reason:
    return Reason(
        code=code,
        text=f"IMA entry {entry.number} ({entry.template}) {entry.path[:300]!r}: {what}",
        severity=severity,
        pcr=IMA_PCR,
        expected=expected,
        actual=f"{entry.digest_alg}:{entry.digest.hex()}",
        rule=rule,
        event_index=entry.number,
    )
