"""Learn a candidate release from one verified boot: YAML text for an operator to review.

Pure: an event log, the PCR values a quote proved, the bank, the selection and quirks in;
the text of one ``releases:`` list item out (the format of ``golden_measurements/README.md``),
with a comment naming each component. Nothing is applied: the operator pastes it into a
profile, reviews it and lints it.

Order of checks (each raises ``PolicyViolation``):
1. Every selected PCR has a value, of the bank's length; the selection is not empty.
2. The log, appraised against the selected PCRs (``appraise_event_log``), gives no
   contraindicating reason: it parses, replays to every selected PCR that has events, and
   every fact is bound to its digest. A boot that does not verify is never learned.
Then the rules are written from the verified FACTS only: S-CRTM version (PCR 0), Secure Boot
state, db certificates and dbx hashes (PCR 7), the boot chain (PCR 4), the kernel command line
(PCR 8 or 12); each only when its PCR is selected and the fact was established. Every other
selected PCR is pinned to its value (for example PCR 9: the files GRUB read).
3. Self-check: the text is loaded as a release of a profile with the same bank, selection and
   quirks and evaluated against the same boot; it must be affirming.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from verifier.errors import EventLogError, PolicyViolation
from verifier.eventlog import BootFacts, parse_event_log
from verifier.eventlog.facts import SecureBootDb
from verifier.golden.load import GoldenError, load_golden_texts
from verifier.golden.logcheck import appraise_event_log
from verifier.golden.model import BANKS
from verifier.golden.whatif import evaluate_evidence
from verifier.limits import DEFAULT_LIMITS, Limits
from verifier.records import StoredEvidence
from verifier.verdict import Reason, Status

ITEM = "  "  # indentation of the list item under ``releases:``
KEY = ITEM + "  "
CMDLINE_PCRS = (8, 12)


def learn_release(
    event_log: bytes,
    pcrs: Mapping[int, bytes],
    bank: str,
    name: str,
    selection: Sequence[int],
    quirks: frozenset[str] = frozenset(),
    limits: Limits = DEFAULT_LIMITS,
) -> str:
    """The YAML of a release that accepts exactly this verified boot (see the module doc)."""
    chosen = _selected(pcrs, bank, selection)
    facts = _verified_facts(event_log, bank, chosen, quirks, limits)
    covered: set[int] = set()  # PCRs an event rule covers; the others are pinned
    rules = (
        _firmware(facts, chosen, covered)
        + _secure_boot(facts, chosen, covered)
        + _boot_chain(facts, chosen, covered)
        + _cmdline(facts, chosen, covered)
    )
    lines = [
        *_header(bank, chosen, quirks),
        f"{ITEM}- name: {json.dumps(name)}",
        *_pinned(event_log, chosen, covered, limits),
        *rules,
    ]
    text = "\n".join(lines) + "\n"
    _self_check(text, event_log, bank, chosen, quirks, limits)
    return text


def _selected(pcrs: Mapping[int, bytes], bank: str, selection: Sequence[int]) -> dict[int, bytes]:
    if bank not in BANKS:
        raise PolicyViolation(f"unknown bank {bank!r}; known: {', '.join(sorted(BANKS))}")
    if not selection:
        raise PolicyViolation("the PCR selection is empty")
    chosen: dict[int, bytes] = {}
    for index in sorted(set(selection)):
        value = pcrs.get(index)
        if value is None:
            raise PolicyViolation(f"PCR {index} is selected but no value for it was given")
        if len(value) != BANKS[bank]:
            raise PolicyViolation(
                f"PCR {index} has {len(value)} bytes; a {bank} value has {BANKS[bank]}"
            )
        chosen[index] = value
    return chosen


def _verified_facts(
    event_log: bytes,
    bank: str,
    pcrs: dict[int, bytes],
    quirks: frozenset[str],
    limits: Limits,
) -> BootFacts:
    if not event_log:
        raise PolicyViolation("no event log: a release is learned from a verified event log")
    result = appraise_event_log(event_log, bank, pcrs, frozenset(), quirks, limits)
    bad = [r for r in result.reasons if r.severity is Status.CONTRAINDICATED]
    if bad or result.facts is None:
        raise PolicyViolation("the boot does not verify, nothing learned: " + _reasons(bad))
    return result.facts


def _reasons(reasons: list[Reason]) -> str:
    return "; ".join(f"{r.code}: {r.text}" for r in reasons) or "no facts"


def _header(bank: str, pcrs: dict[int, bytes], quirks: frozenset[str]) -> list[str]:
    selection = ", ".join(str(i) for i in pcrs)
    needs = f"bank: {bank}, pcrs: [{selection}]"
    if quirks:
        needs += f", quirks: [{', '.join(sorted(quirks))}]"
    return [
        f"{ITEM}# Candidate release learned from a verified event log.",
        f"{ITEM}# Review every line; nothing was applied. The profile needs {needs}.",
    ]


def _firmware(facts: BootFacts, pcrs: dict[int, bytes], covered: set[int]) -> list[str]:
    if 0 not in pcrs or facts.scrtm_version is None:
        return []
    covered.add(0)
    lines = [
        f"{KEY}firmware:",
        f"{KEY}  # firmware version (EV_S_CRTM_VERSION, event {facts.scrtm_event})",
    ]
    lines += [
        f"{KEY}  # firmware volume {b.description or '(unnamed)'} at {b.base:#x}, "
        f"{b.length} bytes: {b.digest.hex()} (not checked by this rule)"
        for b in facts.firmware_blobs
    ]
    return [*lines, f"{KEY}  scrtm_versions: [{json.dumps(facts.scrtm_version)}]"]


def _secure_boot(facts: BootFacts, pcrs: dict[int, bytes], covered: set[int]) -> list[str]:
    if 7 not in pcrs or facts.secure_boot is None:
        return []
    covered.add(7)
    state = "on" if facts.secure_boot else "off"
    lines = [
        f"{KEY}secure_boot:",
        f"{KEY}  enabled: {str(facts.secure_boot).lower()}  # Secure Boot {state} "
        f"(SecureBoot variable, event {facts.secure_boot_event})",
    ]
    db = facts.database("db")
    if db is not None and db.content.certificates:
        lines.append(
            f"{KEY}  db_contains:  # SHA-256 of each db certificate (event {db.event_index})"
        )
        lines += _digests(tuple(dict.fromkeys(db.content.certificates)), "db certificate")
    dbx = facts.database("dbx")
    if dbx is not None and _dbx_entries(dbx):
        lines.append(
            f"{KEY}  dbx_contains:  # revocations dbx holds (event {dbx.event_index}): "
            f"{dbx.content.hash_count} hashes, {len(dbx.content.certificates)} certificates"
        )
        lines += _digests(_dbx_entries(dbx), "dbx entry")
    return lines


def _dbx_entries(dbx: SecureBootDb) -> tuple[bytes, ...]:
    # Real dbx variables repeat entries across signature lists; a rule lists each once.
    return tuple(dict.fromkeys(dbx.content.hashes + dbx.content.certificates))


def _digests(values: tuple[bytes, ...], what: str) -> list[str]:
    total = len(values)
    return [
        f'{KEY}    - "{value.hex()}"  # {what} {n} of {total}'
        for n, value in enumerate(values, start=1)
    ]


def _boot_chain(facts: BootFacts, pcrs: dict[int, bytes], covered: set[int]) -> list[str]:
    if 4 not in pcrs or not facts.boot_apps:
        return []
    covered.add(4)
    lines = [f"{KEY}boot_chain:  # boot applications in PCR 4, in load order"]
    lines += [
        f'{KEY}  - "{app.digest.hex()}"  # boot application {n}: '
        f"{_printable(app.path) or '(no device path)'} (event {app.event_index})"
        for n, app in enumerate(facts.boot_apps, start=1)
    ]
    return lines


def _cmdline(facts: BootFacts, pcrs: dict[int, bytes], covered: set[int]) -> list[str]:
    cmdline = facts.kernel_cmdline
    if cmdline is None or not any(p in pcrs for p in CMDLINE_PCRS):
        return []
    covered.update(p for p in CMDLINE_PCRS if p in pcrs)
    return [
        f"{KEY}# kernel command line as measured (event {facts.kernel_cmdline_event})",
        f"{KEY}kernel_cmdline: {{exact: {json.dumps(cmdline)}}}",
    ]


def _pinned(
    event_log: bytes, pcrs: dict[int, bytes], covered: set[int], limits: Limits
) -> list[str]:
    pinned = [i for i in pcrs if i not in covered]
    if not pinned:
        return []
    contents = _pcr_contents(event_log, limits)
    lines = [f"{KEY}pcrs:  # selected PCRs that no event rule covers: exact values"]
    lines += [
        f'{KEY}  {i}: "{pcrs[i].hex()}"  # PCR {i}: {contents.get(i, "no events in the log")}'
        for i in pinned
    ]
    return lines


def _pcr_contents(event_log: bytes, limits: Limits) -> dict[int, str]:
    """Per PCR: the event count and, for EV_IPL events, the measured names (GRUB files)."""
    try:
        log = parse_event_log(event_log, limits)
    except EventLogError:  # already appraised; cannot happen, but comments are optional
        return {}
    counts: dict[int, int] = {}
    names: dict[int, list[str]] = {}
    for event in log.events:
        if event.type_name == "EV_NO_ACTION":
            continue
        counts[event.pcr] = counts.get(event.pcr, 0) + 1
        if event.type_name == "EV_IPL":
            name = _printable(event.data.rstrip(b"\x00").decode("utf-8", "replace"))
            if name:
                names.setdefault(event.pcr, []).append(name)
    shown: dict[int, str] = {}
    for pcr, count in counts.items():
        listed = names.get(pcr, [])
        detail = f": {', '.join(listed[:4])}{', ...' if len(listed) > 4 else ''}" if listed else ""
        shown[pcr] = f"{count} event{'s' if count != 1 else ''}{detail}"
    return shown


def _printable(text: str) -> str:
    """A comment-safe form: no line breaks or control characters, at most 80 characters."""
    cleaned = "".join(c if c.isprintable() else "?" for c in text)
    return cleaned if len(cleaned) <= 80 else cleaned[:77] + "..."


def _self_check(
    text: str,
    event_log: bytes,
    bank: str,
    pcrs: dict[int, bytes],
    quirks: frozenset[str],
    limits: Limits,
) -> None:
    profile = "\n".join(
        [
            "profile: learned-check",
            "match: {}",
            "verdict_lifetime: 1h",
            f"bank: {bank}",
            f"allow_sha1: {'true' if bank == 'sha1' else 'false'}",
            f"pcrs: [{', '.join(str(i) for i in pcrs)}]",
            f"quirks: [{', '.join(sorted(quirks))}]",
            "releases:",
        ]
    )
    try:
        golden = load_golden_texts({"learned.yaml": profile + "\n" + text}, limits)
    except GoldenError as exc:
        raise PolicyViolation(f"the learned release does not load: {exc}") from exc
    evidence = StoredEvidence("learned", 0.0, bank, dict(pcrs), event_log)
    outcome = evaluate_evidence(evidence, golden, 0.0, limits)
    if outcome.status is not Status.AFFIRMING:
        raise PolicyViolation(
            "the learned release does not accept the boot it was learned from: "
            + _reasons(list(outcome.reasons))
        )
