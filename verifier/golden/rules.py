"""Event-level golden rules: compare ``BootFacts`` with a release's ``EventRules``.

Evaluation collects reasons (it never raises): one per failed rule, or per missing db
certificate / dbx hash, each naming the rule, the event index the fact came from (when there
is one), expected and actual. A fact that could not be established (``None``) fails every rule
that needs it: absence of evidence is never a pass. An empty list means every rule passed.

``rules_pcrs`` says which PCRs must be quoted and carry events for the rules to be decidable;
``rules_quote_pcrs`` adds the PCRs that may carry the facts (a kernel command line is in PCR 8
with GRUB, 12 with systemd-boot; ExitBootServices is in PCR 5), to request in the quote.
"""

from __future__ import annotations

from verifier.eventlog.facts import BootFacts
from verifier.golden.model import CmdlineRule, EventRules
from verifier.verdict import Reason, Status

SCRTM_PCRS = frozenset({0})
SECURE_BOOT_PCRS = frozenset({7})
BOOT_CHAIN_PCRS = frozenset({4})
CMDLINE_PCRS = frozenset({8, 12})


def rules_pcrs(rules: EventRules) -> frozenset[int]:
    """The PCRs whose events the rules rely on; each must be quoted and have events."""
    pcrs: set[int] = set()
    if rules.scrtm_versions:
        pcrs |= SCRTM_PCRS
    if rules.secure_boot is not None or rules.db_contains or rules.dbx_contains:
        pcrs |= SECURE_BOOT_PCRS
    if rules.boot_chain is not None:
        pcrs |= BOOT_CHAIN_PCRS
    return frozenset(pcrs)


def rules_quote_pcrs(rules: EventRules) -> frozenset[int]:
    """``rules_pcrs`` plus the PCRs that may hold the facts the rules need."""
    pcrs = set(rules_pcrs(rules))
    if rules.boot_chain is not None:
        pcrs.add(5)
    if rules.kernel_cmdline is not None:
        pcrs |= CMDLINE_PCRS
    return frozenset(pcrs)


def evaluate_event_rules(facts: BootFacts, rules: EventRules, release: str) -> list[Reason]:
    reasons: list[Reason] = []
    if rules.scrtm_versions:
        _scrtm(facts, rules.scrtm_versions, release, reasons)
    if rules.secure_boot is not None:
        _secure_boot(facts, rules.secure_boot, release, reasons)
    if rules.db_contains:
        _db_contains(facts, rules.db_contains, release, reasons)
    if rules.dbx_contains:
        _dbx_contains(facts, rules.dbx_contains, release, reasons)
    if rules.boot_chain is not None:
        _boot_chain(facts, rules.boot_chain, release, reasons)
    if rules.kernel_cmdline is not None:
        _kernel_cmdline(facts, rules.kernel_cmdline, release, reasons)
    return reasons


def _reason(
    code: str,
    rule: str,
    release: str,
    text: str,
    expected: str,
    actual: str,
    event_index: int | None,
    pcr: int | None,
) -> Reason:
    return Reason(
        code=code,
        text=text,
        severity=Status.CONTRAINDICATED,
        pcr=pcr,
        expected=expected,
        actual=actual,
        release=release,
        rule=rule,
        event_index=event_index,
    )


def _scrtm(facts: BootFacts, accepted: tuple[str, ...], release: str, out: list[Reason]) -> None:
    if facts.scrtm_version in accepted:
        return
    actual = facts.scrtm_version if facts.scrtm_version is not None else "(no verified version)"
    out.append(
        _reason(
            "scrtm_version_mismatch",
            "scrtm_versions",
            release,
            f"S-CRTM version {actual!r} is not one the release accepts",
            " | ".join(accepted),
            actual,
            facts.scrtm_event,
            0,
        )
    )


def _secure_boot(facts: BootFacts, required: bool, release: str, out: list[Reason]) -> None:
    if facts.secure_boot is required:
        return
    actual = "unknown" if facts.secure_boot is None else str(facts.secure_boot).lower()
    out.append(
        _reason(
            "secure_boot_mismatch",
            "secure_boot",
            release,
            f"Secure Boot is {actual}; the release requires {str(required).lower()}",
            str(required).lower(),
            actual,
            facts.secure_boot_event,
            7,
        )
    )


def _db_contains(
    facts: BootFacts, wanted: tuple[bytes, ...], release: str, out: list[Reason]
) -> None:
    db = facts.database("db")
    have = set(db.content.certificates) if db else set()
    for fingerprint in wanted:
        if fingerprint not in have:
            out.append(
                _reason(
                    "db_missing_certificate",
                    "db_contains",
                    release,
                    "db does not hold a certificate the release requires"
                    + ("" if db else " (no verified db measurement)"),
                    fingerprint.hex(),
                    f"{len(have)} certificates",
                    db.event_index if db else None,
                    7,
                )
            )


def _dbx_contains(
    facts: BootFacts, wanted: tuple[bytes, ...], release: str, out: list[Reason]
) -> None:
    """One set test when dbx holds every expected entry (the usual case: hundreds of them);
    otherwise one reason per missing entry, in the release's order."""
    dbx = facts.database("dbx")
    present = dbx.content.entries if dbx is not None else frozenset()
    if dbx is not None and present.issuperset(wanted):
        return
    for digest in wanted:
        if digest in present:
            continue
        out.append(
            _reason(
                "dbx_missing_hash",
                "dbx_contains",
                release,
                "dbx lacks a revocation the release requires"
                + ("" if dbx else " (no verified dbx measurement)"),
                digest.hex(),
                f"{dbx.content.hash_count} hashes" if dbx else "(none)",
                dbx.event_index if dbx else None,
                7,
            )
        )


def _boot_chain(
    facts: BootFacts, chain: tuple[bytes, ...], release: str, out: list[Reason]
) -> None:
    actual = tuple(app.digest for app in facts.boot_apps)
    if actual == chain:
        return
    position = next(
        (i for i, (a, b) in enumerate(zip(actual, chain, strict=False)) if a != b),
        min(len(actual), len(chain)),
    )
    event = facts.boot_apps[position].event_index if position < len(actual) else None
    out.append(
        _reason(
            "boot_chain_mismatch",
            "boot_chain",
            release,
            f"boot application {position} differs from the release's boot chain"
            f" ({len(actual)} applications measured, {len(chain)} expected)",
            ",".join(d.hex() for d in chain),
            ",".join(d.hex() for d in actual),
            event,
            4,
        )
    )


def _kernel_cmdline(facts: BootFacts, rule: CmdlineRule, release: str, out: list[Reason]) -> None:
    actual = facts.kernel_cmdline
    if actual is not None:
        if rule.exact is not None and actual == rule.exact:
            return
        if rule.pattern is not None and rule.pattern.fullmatch(actual):
            return
    expected = (
        rule.exact
        if rule.exact is not None
        else (rule.pattern.pattern if rule.pattern is not None else "")
    )
    out.append(
        _reason(
            "kernel_cmdline_mismatch",
            "kernel_cmdline",
            release,
            "kernel command line differs from the release"
            if actual is not None
            else "no verified kernel command line in the quoted PCRs",
            expected,
            actual if actual is not None else "(none)",
            facts.kernel_cmdline_event,
            None,
        )
    )
