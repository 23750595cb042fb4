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

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from verifier.eventlog import BootFacts
from verifier.golden.evaluate import PolicyOutcome, evaluate_profile
from verifier.golden.logcheck import LogAppraisal, appraise_event_log
from verifier.golden.model import Profile
from verifier.golden.rules import rules_pcrs
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


NO_LOG = LogAppraisal(None, ())


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
    """The event log against the proven ``pcrs``, as the profile relies on it.

    No log and no rule that needs one: nothing to appraise (PCR values alone decide).
    """
    relied = relied_pcrs(profile)
    if not event_log and not relied:
        return NO_LOG
    return appraise_event_log(event_log, bank, pcrs, relied, profile.quirks, limits)


class LogAppraisalCache:
    """A bounded memo of ``appraise_profile_log``, keyed by everything its result depends on.

    Devices attest the same boot again and again (every period, and a fleet boots the same
    firmware), so the same log against the same proven PCRs is appraised many times. The key
    is the SHA-256 of the log, the bank, the proven PCR values, the relied PCRs, the quirks
    and the limits: a hit returns exactly what the pure function would (its results are
    frozen). The releases are always evaluated afresh (they depend on ``now``).
    """

    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[tuple[object, ...], LogAppraisal] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def appraise(
        self,
        profile: Profile,
        event_log: bytes,
        bank: str,
        pcrs: Mapping[int, bytes],
        limits: Limits = DEFAULT_LIMITS,
        log_digest: bytes | None = None,
    ) -> LogAppraisal:
        """``log_digest``: SHA-256 of ``event_log`` when the caller has it already."""
        relied = relied_pcrs(profile)
        if not event_log and not relied:
            return NO_LOG
        key = (
            log_digest if log_digest is not None else hashlib.sha256(event_log).digest(),
            bank,
            tuple(sorted(pcrs.items())),
            relied,
            profile.quirks,
            limits,
        )
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return found
        result = appraise_event_log(event_log, bank, pcrs, relied, profile.quirks, limits)
        with self._lock:
            self.misses += 1
            self._entries[key] = result
            if len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
        return result


def evaluate_boot(
    profile: Profile,
    event_log: bytes,
    bank: str,
    pcrs: Mapping[int, bytes],
    now: float,
    limits: Limits = DEFAULT_LIMITS,
    cache: LogAppraisalCache | None = None,
    log_digest: bytes | None = None,
) -> BootPolicyResult:
    """Steps 1-3 above: the log, then every release of ``profile`` (``log_digest``: the
    log's SHA-256 when the caller has it, for the memo)."""
    if cache is not None:
        log = cache.appraise(profile, event_log, bank, pcrs, limits, log_digest)
    else:
        log = appraise_profile_log(profile, event_log, bank, pcrs, limits)
    outcome = evaluate_profile(profile, pcrs, log.facts, now)
    return BootPolicyResult(log.facts, log.reasons, outcome)
