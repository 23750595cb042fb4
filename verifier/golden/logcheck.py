"""Appraise an event log against the quoted PCRs: the measured-boot half of the appraisal.

Order of checks (ARCHITECTURE.md, appraisal invariants 5, 6 and 8); it never raises, every finding
is a ``Reason``:

1. An empty log while the policy relies on PCRs: ``eventlog_missing``.
2. The log must parse: otherwise one ``eventlog_malformed`` reason, nothing else.
3. Replay of the quoted bank (the missing-ExitBootServices workaround only with that quirk,
   and then a WARNING ``eventlog_workaround`` reason). A log without that bank:
   ``eventlog_bank_missing``.
4. Each quoted PCR that has events must equal its replayed value:
   ``eventlog_replay_mismatch`` (expected = quoted hex, actual = replayed hex).
5. Each relied PCR must be quoted (``pcr_not_quoted``) and have events (``pcr_without_events``).
6. Facts come only from quoted PCRs whose replay matched (the quote is what makes their events
   trustworthy); extraction problems are added to the reasons.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from verifier.errors import EventLogError
from verifier.eventlog.facts import BootFacts, extract_facts
from verifier.eventlog.parse import parse_event_log
from verifier.eventlog.replay import replay
from verifier.limits import DEFAULT_LIMITS, Limits
from verifier.verdict import Reason, Status


@dataclass(frozen=True)
class LogAppraisal:
    facts: BootFacts | None
    reasons: tuple[Reason, ...]


def appraise_event_log(
    data: bytes,
    bank: str,
    quoted: Mapping[int, bytes],
    relied: frozenset[int],
    quirks: frozenset[str],
    limits: Limits = DEFAULT_LIMITS,
) -> LogAppraisal:
    if not data:
        if not relied:
            return LogAppraisal(None, ())
        return LogAppraisal(
            None,
            (
                _reason(
                    "eventlog_missing",
                    f"no event log was sent, but the policy relies on PCRs {_list(relied)}",
                ),
            ),
        )
    try:
        log = parse_event_log(data, limits)
    except EventLogError as exc:
        return LogAppraisal(None, (_reason("eventlog_malformed", f"event log rejected: {exc}"),))
    workaround = "missing_exit_boot_services" in quirks
    try:
        result = replay(log, bank, missing_exit_boot_services=workaround)
    except EventLogError as exc:
        return LogAppraisal(None, (_reason("eventlog_bank_missing", str(exc)),))
    reasons: list[Reason] = []
    if workaround and any("missing_exit_boot_services" in n for n in result.notes):
        reasons.append(
            _reason(
                "eventlog_workaround",
                "PCR 5 replayed with the missing ExitBootServices"
                " events added (quirk missing_exit_boot_services)",
                Status.WARNING,
                pcr=5,
            )
        )
    matched: set[int] = set()
    for pcr in sorted(quoted):
        replayed = result.pcrs.get(pcr)
        if replayed is None:
            continue
        if replayed == quoted[pcr]:
            matched.add(pcr)
        else:
            reasons.append(
                _reason(
                    "eventlog_replay_mismatch",
                    f"PCR {pcr}: the event log does not replay to the quoted value",
                    pcr=pcr,
                    expected=quoted[pcr].hex(),
                    actual=replayed.hex(),
                )
            )
    for pcr in sorted(relied):
        if pcr not in quoted:
            reasons.append(
                _reason("pcr_not_quoted", f"PCR {pcr} is relied on but not quoted", pcr=pcr)
            )
        elif pcr not in result.pcrs:
            reasons.append(
                _reason(
                    "pcr_without_events",
                    f"PCR {pcr} is relied on but the event log has no events for it",
                    pcr=pcr,
                )
            )
    facts = extract_facts(log, bank, quirks, frozenset(matched))
    reasons.extend(facts.problems)
    return LogAppraisal(facts, tuple(reasons))


def _reason(
    code: str,
    text: str,
    severity: Status = Status.CONTRAINDICATED,
    *,
    pcr: int | None = None,
    expected: str = "",
    actual: str = "",
) -> Reason:
    return Reason(
        code=code, text=text, severity=severity, pcr=pcr, expected=expected, actual=actual
    )


def _list(pcrs: frozenset[int]) -> str:
    return ",".join(str(p) for p in sorted(pcrs))
