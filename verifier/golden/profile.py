"""One golden profile (one YAML file) from nodes to a checked ``model.Profile``.

Order of checks: the profile's own keys and values first (name, match labels, priority,
lifetime, bank and SHA-1 opt-in, PCR selection, quirks), then each release against the
bank and selection (digest lengths, PCRs covered by the quote, one rule at least), then the
releases together (unique names, ``upgrades_to`` targets). When the bank or selection is
itself invalid, the checks that depend on it are skipped rather than cascading. A profile is
built only when its file recorded no problem. A ``runtime:`` section (``golden.runtime``)
adds PCRs 0-10 to the quoted selection (``boot_aggregate`` and the IMA log's PCR 10), and
then no release may expect a PCR 10 value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from verifier.golden import fields as fl
from verifier.golden.model import BANKS, QUIRKS, CmdlineRule, EventRules, Profile, Release
from verifier.golden.nodes import Mapping, Node, Scalar, Sequence
from verifier.golden.pattern import PatternRefused, compile_linear
from verifier.golden.runtime import RUNTIME_PCRS, ParsedSection, parse_runtime
from verifier.ima.parse import IMA_PCR

T = TypeVar("T")

# The PCRs whose events each event rule reads: the quote must cover at least one of them.
RULE_PCRS: dict[str, tuple[int, ...]] = {
    "firmware": (0,),
    "boot_chain": (4,),
    "secure_boot": (7,),
    "kernel_cmdline": (8, 12),
}
_RULE_PCR_TEXT = {
    "firmware": "PCR 0 (S-CRTM version)",
    "boot_chain": "PCR 4 (boot applications)",
    "secure_boot": "PCR 7 (Secure Boot state and db/dbx)",
    "kernel_cmdline": "PCR 8 (GRUB) or PCR 12 (systemd-boot)",
}
PRIORITY_RANGE = (-1_000_000, 1_000_000)
_SecureBoot = tuple[bool | None, tuple[bytes, ...], tuple[bytes, ...]]
# Typed defaults for absent keys (so that ``_opt`` infers the value type, not ``tuple[()]``).
_NO_QUIRKS: frozenset[str] = frozenset()
_NO_STRINGS: tuple[str, ...] = ()
_NO_DIGESTS: tuple[bytes, ...] = ()
_NO_UPGRADES: tuple[tuple[Node, str], ...] = ()
_NO_SECURE_BOOT: _SecureBoot = (None, (), ())


@dataclass(frozen=True)
class ParsedProfile:
    profile: Profile
    name_line: int
    name_column: int
    match_line: int
    match_column: int


@dataclass(frozen=True)
class _Scope:
    """What releases are checked against (``None`` when the profile's own value is invalid)."""

    bank: str | None
    selection: frozenset[int] | None


@dataclass(frozen=True)
class _ParsedRelease:
    release: Release
    name_node: Node
    upgrades: tuple[tuple[Node, str], ...]


def parse_profile(ctx: fl.FileContext, root: Node) -> ParsedProfile | None:
    start = len(ctx.problems)
    f = fl.fields(ctx, root, "the profile", fl.PROFILE_KEYS, fl.PROFILE_REQUIRED)
    if f is None:
        return None
    name = _opt(f, "profile", None, lambda n: fl.name(ctx, n, "profile name"))
    labels = _opt(f, "match", None, lambda n: _labels(ctx, n))
    priority = _opt(f, "priority", 0, lambda n: fl.integer(ctx, n, "priority", *PRIORITY_RANGE))
    lifetime = _opt(f, "verdict_lifetime", None, lambda n: fl.duration(ctx, n, "verdict_lifetime"))
    allow_sha1 = _opt(f, "allow_sha1", False, lambda n: fl.boolean(ctx, n, "allow_sha1"))
    bank = _opt(f, "bank", "sha256", lambda n: _bank(ctx, n, allow_sha1 is True))
    selection = _opt(f, "pcrs", None, lambda n: _selection(ctx, n))
    quirks: frozenset[str] | None = _opt(f, "quirks", _NO_QUIRKS, lambda n: _quirks(ctx, n))
    scope = _Scope(bank, frozenset(selection) if selection is not None else None)
    releases = _opt(f, "releases", None, lambda n: _releases(ctx, n, scope))
    runtime: ParsedSection | None = _opt(f, "runtime", None, lambda n: parse_runtime(ctx, n))
    if runtime is not None and releases is not None:
        _no_pcr10_values(ctx, f["releases"][1], releases)
    if len(ctx.problems) > start:
        return None
    if name is None or labels is None or lifetime is None or bank is None:
        return None
    if selection is None or releases is None or priority is None or quirks is None:
        return None
    profile = Profile(
        name=name,
        source=ctx.file,
        match_labels=labels,
        verdict_lifetime=lifetime,
        bank=bank,
        pcrs=tuple(sorted(selection | RUNTIME_PCRS if runtime else selection)),
        releases=releases,
        allow_sha1=allow_sha1 is True,
        quirks=quirks,
        priority=priority,
        runtime=runtime.policy if runtime else None,
        runtime_warnings=runtime.warnings if runtime else (),
    )
    name_key, match_key = f["profile"][0], f["match"][0]
    return ParsedProfile(profile, name_key.line, name_key.column, match_key.line, match_key.column)


def _opt(
    f: dict[str, tuple[Scalar, Node]], key: str, default: T, read: Callable[[Node], T | None]
) -> T | None:
    """Read ``key`` when present; ``default`` when absent; ``None`` when invalid."""
    if key not in f:
        return default
    return read(f[key][1])


def _no_pcr10_values(ctx: fl.FileContext, node: Node, releases: tuple[Release, ...]) -> None:
    """PCR 10 changes with every measurement: with a runtime section the IMA log judges it."""
    for release in releases:
        if IMA_PCR in release.pcrs:
            ctx.problem(
                node,
                f"release {release.name!r} expects a PCR 10 value, but the profile has a runtime "
                "section: PCR 10 is appraised by replaying the IMA log",
                "remove PCR 10 from the release's pcrs",
            )


def _labels(ctx: fl.FileContext, node: Node) -> dict[str, str] | None:
    if not isinstance(node, Mapping):
        ctx.problem(node, f"match must be a mapping of label: value, not {fl.describe(node)}")
        return None
    if len(node.pairs) > ctx.limits.max_labels:
        ctx.problem(node, f"match has more than {ctx.limits.max_labels} labels")
        return None
    out: dict[str, str] = {}
    lines: dict[str, int] = {}
    for key_node, value_node in node.pairs:
        key = fl.string(ctx, key_node, "a match label name")
        shown = key_node.value if isinstance(key_node, Scalar) else "?"
        value = fl.string(ctx, value_node, f"match label {shown!r}")
        for text, at in ((key, key_node), (value, value_node)):
            if text is not None and len(text.encode("utf-8")) > ctx.limits.max_label_bytes:
                ctx.problem(at, f"longer than {ctx.limits.max_label_bytes} bytes")
        if key is None or value is None:
            continue
        if key in out:
            ctx.problem(
                key_node, f"duplicate match label {key!r}", f"first set at line {lines[key]}"
            )
            continue
        out[key], lines[key] = value, key_node.line
    return out


def _bank(ctx: fl.FileContext, node: Node, allow_sha1: bool) -> str | None:
    bank = fl.string(ctx, node, "bank")
    if bank is None:
        return None
    if bank not in BANKS:
        ctx.problem(node, f"unknown bank {bank!r}", "one of " + ", ".join(BANKS))
        return None
    if bank == "sha1" and not allow_sha1:
        ctx.problem(
            node,
            "the sha1 bank is refused unless the profile sets allow_sha1: true",
            "SHA-1 PCRs can be forged by collision; quote sha256 if the TPM has that bank",
        )
        return None
    return bank


def _selection(ctx: fl.FileContext, node: Node) -> set[int] | None:
    items = fl.sequence(ctx, node, "pcrs")
    if items is None:
        return None
    out: set[int] = set()
    for item in items:
        index = fl.pcr_index(ctx, item, "pcrs entry")
        if index is not None and index in out:
            ctx.problem(item, f"PCR {index} is listed twice in pcrs")
        elif index is not None:
            out.add(index)
    return out


def _quirks(ctx: fl.FileContext, node: Node) -> frozenset[str] | None:
    if not isinstance(node, Sequence):
        ctx.problem(node, f"quirks must be a list, not {fl.describe(node)}")
        return None
    out: set[str] = set()
    for item in node.items:
        quirk = fl.string(ctx, item, "a quirk")
        if quirk is None:
            continue
        if quirk not in QUIRKS:
            ctx.problem(
                item, f"unknown quirk {quirk!r}", "known quirks: " + ", ".join(sorted(QUIRKS))
            )
        elif quirk in out:
            ctx.problem(item, f"quirk {quirk!r} is listed twice")
        out.add(quirk)
    return frozenset(out)


# ---------------------------------------------------------------- releases


def _releases(ctx: fl.FileContext, node: Node, scope: _Scope) -> tuple[Release, ...] | None:
    items = fl.sequence(ctx, node, "releases")
    if items is None:
        return None
    parsed = [_release(ctx, item, scope) for item in items]
    good = [p for p in parsed if p is not None]
    first: dict[str, _ParsedRelease] = {}
    for item in good:
        seen = first.setdefault(item.release.name, item)
        if seen is not item:
            ctx.problem(
                item.name_node,
                f"duplicate release name {item.release.name!r}",
                f"first defined at line {seen.name_node.line}",
            )
    for item in good:
        _check_upgrades(ctx, item, first)
    if len(good) != len(parsed):
        return None
    return tuple(p.release for p in good)


def _check_upgrades(
    ctx: fl.FileContext, item: _ParsedRelease, known: dict[str, _ParsedRelease]
) -> None:
    for node, target in item.upgrades:
        if target == item.release.name:
            ctx.problem(node, f"release {target!r} lists itself in upgrades_to")
        elif target not in known:
            ctx.problem(
                node,
                f"upgrades_to names unknown release {target!r}",
                "releases of this profile: " + ", ".join(known),
            )


def _release(ctx: fl.FileContext, node: Node, scope: _Scope) -> _ParsedRelease | None:
    start = len(ctx.problems)
    f = fl.fields(ctx, node, "a release", fl.RELEASE_KEYS, fl.RELEASE_REQUIRED)
    if f is None:
        return None
    name = _opt(f, "name", None, lambda n: fl.name(ctx, n, "release name"))
    not_after = _opt(f, "not_after", None, lambda n: fl.timestamp(ctx, n, "not_after"))
    revoked = _opt(f, "revoked", False, lambda n: fl.boolean(ctx, n, "revoked"))
    upgrades: tuple[tuple[Node, str], ...] | None = _opt(
        f, "upgrades_to", _NO_UPGRADES, lambda n: _upgrades(ctx, n)
    )
    pcrs: dict[int, bytes] | None = _opt(
        f, "pcrs", dict[int, bytes](), lambda n: _pcr_values(ctx, n, scope)
    )
    events = _event_rules(ctx, f, scope)
    if "pcrs" not in f and not any(key in f for key in RULE_PCRS):
        ctx.problem(
            node,
            f"release {name or ''!r} expects neither PCR values nor events: it would accept "
            "any device",
            "add pcrs: and/or firmware, secure_boot, boot_chain, kernel_cmdline rules",
        )
    if len(ctx.problems) > start or name is None or pcrs is None or upgrades is None:
        return None
    release = Release(
        name=name,
        pcrs=pcrs,
        events=events,
        not_after=not_after,
        revoked=revoked is True,
        upgrades_to=tuple(target for _, target in upgrades),
        line=node.line,
    )
    return _ParsedRelease(release, f["name"][1], upgrades)


def _upgrades(ctx: fl.FileContext, node: Node) -> tuple[tuple[Node, str], ...] | None:
    if not isinstance(node, Sequence):
        ctx.problem(node, f"upgrades_to must be a list of release names, not {fl.describe(node)}")
        return None
    out: list[tuple[Node, str]] = []
    for item in node.items:
        target = fl.name(ctx, item, "upgrades_to entry")
        if target is not None:
            out.append((item, target))
    return tuple(out)


def _pcr_values(ctx: fl.FileContext, node: Node, scope: _Scope) -> dict[int, bytes] | None:
    if not isinstance(node, Mapping):
        ctx.problem(node, f"pcrs must be a mapping of PCR index: hex, not {fl.describe(node)}")
        return None
    if not node.pairs:
        ctx.problem(node, "pcrs is empty", "list PCR values, or remove the key")
        return None
    out: dict[int, bytes] = {}
    lines: dict[int, int] = {}
    for key, value in node.pairs:
        index = fl.pcr_index(ctx, key, "PCR", quoted_ok=True)
        what = f"PCR {index} value" if index is not None else "PCR value"
        digest = fl.digest(ctx, value, what, scope.bank)
        if index is None:
            continue
        if index in lines:
            ctx.problem(key, f"PCR {index} is set twice", f"first set at line {lines[index]}")
            continue
        lines[index] = key.line
        if scope.selection is not None and index not in scope.selection:
            ctx.problem(
                key,
                f"PCR {index} has a value but is not in the profile's pcrs "
                f"{sorted(scope.selection)}",
                f"add {index} to the profile's pcrs (the quote would not cover it) or remove it",
            )
        if digest is not None:
            out[index] = digest
    return out


# ---------------------------------------------------------------- event rules


def _event_rules(
    ctx: fl.FileContext, f: dict[str, tuple[Scalar, Node]], scope: _Scope
) -> EventRules:
    for key, pcrs in RULE_PCRS.items():
        if key in f and scope.selection is not None and not scope.selection & set(pcrs):
            ctx.problem(
                f[key][0],
                f"{key} rules read the events of {_RULE_PCR_TEXT[key]}, which is not in the "
                f"profile's pcrs {sorted(scope.selection)}",
                f"add {pcrs[0]} to the profile's pcrs: the quote would not cover these events",
            )
    scrtm: tuple[str, ...] | None = _opt(f, "firmware", _NO_STRINGS, lambda n: _firmware(ctx, n))
    secure_boot: _SecureBoot | None = _opt(
        f, "secure_boot", _NO_SECURE_BOOT, lambda n: _secure_boot(ctx, n)
    )
    chain = _opt(f, "boot_chain", None, lambda n: _boot_chain(ctx, n, scope.bank))
    cmdline = _opt(f, "kernel_cmdline", None, lambda n: _cmdline(ctx, n))
    enabled, db, dbx = secure_boot or (None, (), ())
    return EventRules(
        scrtm_versions=scrtm or (),
        secure_boot=enabled,
        db_contains=db,
        dbx_contains=dbx,
        boot_chain=chain,
        kernel_cmdline=cmdline,
    )


def _firmware(ctx: fl.FileContext, node: Node) -> tuple[str, ...] | None:
    f = fl.fields(ctx, node, "firmware", fl.FIRMWARE_KEYS, frozenset(fl.FIRMWARE_KEYS))
    if f is None or "scrtm_versions" not in f:
        return None
    items = fl.sequence(ctx, f["scrtm_versions"][1], "scrtm_versions")
    if items is None:
        return None
    values = [(item, fl.string(ctx, item, "an S-CRTM version")) for item in items]
    return _unique(ctx, values, "S-CRTM version")


def _secure_boot(ctx: fl.FileContext, node: Node) -> _SecureBoot | None:
    f = fl.fields(ctx, node, "secure_boot", fl.SECURE_BOOT_KEYS, frozenset())
    if f is None:
        return None
    if not f:
        ctx.problem(node, "secure_boot sets no rule", "set enabled, db_contains or dbx_contains")
        return None
    enabled = _opt(f, "enabled", None, lambda n: fl.boolean(ctx, n, "enabled"))
    db: tuple[bytes, ...] | None = _opt(
        f, "db_contains", _NO_DIGESTS, lambda n: _digests(ctx, n, "db_contains", "sha256")
    )
    dbx: tuple[bytes, ...] | None = _opt(
        f, "dbx_contains", _NO_DIGESTS, lambda n: _digests(ctx, n, "dbx_contains", "sha256")
    )
    if db is None or dbx is None:
        return None
    return enabled, db, dbx


def _boot_chain(ctx: fl.FileContext, node: Node, bank: str | None) -> tuple[bytes, ...] | None:
    items = fl.sequence(ctx, node, "boot_chain")
    if items is None:
        return None
    out = [fl.digest(ctx, item, f"boot_chain entry {i + 1}", bank) for i, item in enumerate(items)]
    return tuple(d for d in out if d is not None)


def _digests(ctx: fl.FileContext, node: Node, what: str, bank: str) -> tuple[bytes, ...] | None:
    items = fl.sequence(ctx, node, what)
    if items is None:
        return None
    values = [(item, fl.digest(ctx, item, f"{what} entry", bank)) for item in items]
    return _unique(ctx, values, f"{what} entry")


def _unique(ctx: fl.FileContext, values: list[tuple[Node, T | None]], what: str) -> tuple[T, ...]:
    out: list[T] = []
    for node, value in values:
        if value is None:
            continue
        if value in out:
            ctx.problem(node, f"{what} is listed twice")
            continue
        out.append(value)
    return tuple(out)


def _cmdline(ctx: fl.FileContext, node: Node) -> CmdlineRule | None:
    f = fl.fields(ctx, node, "kernel_cmdline", fl.CMDLINE_KEYS, frozenset())
    if f is None:
        return None
    if len(f) != 1:
        ctx.problem(
            node,
            "kernel_cmdline needs exactly one of exact or pattern",
            'exact: "root=/dev/sda1 ro" or pattern: "root=UUID=[0-9a-f-]+ ro( quiet)?"',
        )
        return None
    if "exact" in f:
        exact = fl.string(ctx, f["exact"][1], "kernel_cmdline exact")
        return CmdlineRule(exact=exact) if exact is not None else None
    pattern_node = f["pattern"][1]
    text = fl.string(ctx, pattern_node, "kernel_cmdline pattern")
    if text is None:
        return None
    try:
        return CmdlineRule(pattern=compile_linear(text))
    except PatternRefused as exc:
        ctx.problem(
            pattern_node,
            f"kernel_cmdline pattern is refused: {exc.reason}",
            "an RE2 regular expression (no backreferences or lookarounds), matched against"
            " the whole command line in linear time",
        )
        return None
