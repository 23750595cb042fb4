"""The policy half of an appraisal on PCR values already proven: event log, then releases.

Shared by the live appraisal (``verifier.appraisal``) and the operator tools that replay a
golden set against stored evidence (``golden.whatif``, ``golden.learn``), so both judge a boot
the same way. Pure: PCR values, the log and ``now`` in; reasons out.

Order:
1. The PCRs the profile's event rules rely on (``rules_pcrs`` over every release).
2. The event log appraised against the proven PCRs with those relied PCRs and the profile's
   quirks (``appraise_event_log``): facts only from PCRs the log reproduces.
3. The profile's releases (``evaluate_profile``) against the PCRs and those facts.
The reasons are the log's, then the releases'; the status is the worst of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from verifier.eventlog import BootFacts, LogAppraisal, appraise_event_log, rules_pcrs
from verifier.golden.evaluate import PolicyOutcome, evaluate_profile
from verifier.golden.model import Profile
from verifier.limits import DEFAULT_LIMITS, Limits
from verifier.verdict import Reason, Status, worst


@dataclass(frozen=True)
class BootPolicyResult:
    facts: BootFacts | None
    log_reasons: tuple[Reason, ...]
    outcome: PolicyOutcome

    @property
    def reasons(self) -> tuple[Reason, ...]:
        return self.log_reasons + self.outcome.reasons

    @property
    def status(self) -> Status:
        return worst(self.reasons)


def relied_pcrs(profile: Profile) -> frozenset[int]:
    """Every PCR some release's event rules rely on (each must be quoted and have events)."""
    relied: frozenset[int] = frozenset()
    for release in profile.releases:
        relied |= rules_pcrs(release.events)
    return relied


def appraise_profile_log(
    profile: Profile,
    event_log: bytes,
    bank: str,
    pcrs: Mapping[int, bytes],
    limits: Limits = DEFAULT_LIMITS,
) -> LogAppraisal:
    """The event log against the proven ``pcrs``, as the profile relies on it."""
    return appraise_event_log(event_log, bank, pcrs, relied_pcrs(profile), profile.quirks, limits)


def evaluate_boot(
    profile: Profile,
    event_log: bytes,
    bank: str,
    pcrs: Mapping[int, bytes],
    now: float,
    limits: Limits = DEFAULT_LIMITS,
) -> BootPolicyResult:
    """Steps 1-3 above: the log, then every release of ``profile``."""
    log = appraise_profile_log(profile, event_log, bank, pcrs, limits)
    outcome = evaluate_profile(profile, pcrs, log.facts, now)
    return BootPolicyResult(log.facts, log.reasons, outcome)
