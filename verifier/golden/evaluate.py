"""Evaluate a golden profile against what a quote (and its verified event log) proves.

Pure: PCR values and boot facts in, a ``PolicyOutcome`` out; no I/O and the clock passed in.
Every release of the profile is evaluated and every failed rule becomes a ``Reason`` naming
the release, the rule, expected and actual, so a verdict explains itself.

Outcome, in order:
1. A release whose rules all pass and that is live (not revoked, not past ``not_after``)
   matches: no reasons.
2. Otherwise a release whose rules all pass but that is retired or revoked "matches" with a
   contraindicating reason (a rollback to old firmware is not an acceptable boot).
3. Otherwise nothing matched: the reasons of the closest release (the fewest failed rules;
   every release tied for closest) plus ``no_release_matched``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from verifier.eventlog import BootFacts
from verifier.golden.model import Profile, Release
from verifier.golden.rules import evaluate_event_rules
from verifier.verdict import Reason


@dataclass(frozen=True)
class PolicyOutcome:
    release: str  # the matched release, "" when none matched
    reasons: tuple[Reason, ...]


def release_reasons(
    release: Release, pcrs: Mapping[int, bytes], facts: BootFacts | None
) -> list[Reason]:
    """Every rule of ``release`` that the evidence does not satisfy."""
    reasons = [
        _pcr_reason(release, index, expected, pcrs.get(index))
        for index, expected in sorted(release.pcrs.items())
        if pcrs.get(index) != expected
    ]
    if not release.events.is_empty():
        if facts is None:
            reasons.append(
                Reason(
                    code="eventlog_missing",
                    text=f"release {release.name} has event-level rules but no verified "
                    "event log facts are available",
                    release=release.name,
                    rule="events",
                )
            )
        else:
            reasons.extend(evaluate_event_rules(facts, release.events, release.name))
    return reasons


def _pcr_reason(release: Release, index: int, expected: bytes, actual: bytes | None) -> Reason:
    shown = actual.hex() if actual is not None else "(not quoted)"
    return Reason(
        code="pcr_mismatch",
        text=f"PCR {index} is {shown}; release {release.name} expects {expected.hex()}",
        pcr=index,
        expected=expected.hex(),
        actual=shown,
        release=release.name,
        rule=f"pcrs.{index}",
    )


def retirement(release: Release, now: float) -> Reason | None:
    """Why ``release`` may no longer be accepted at ``now``, or None while it is live."""
    if release.revoked:
        return Reason(
            code="release_revoked",
            text=f"the boot matches release {release.name}, which operators revoked",
            release=release.name,
            rule="revoked",
        )
    if release.not_after is not None and now > release.not_after:
        return Reason(
            code="release_retired",
            text=f"the boot matches release {release.name}, retired after its not_after date",
            release=release.name,
            rule="not_after",
            expected=f"before {release.not_after:.0f}",
            actual=f"{now:.0f}",
        )
    return None


def evaluate_profile(
    profile: Profile, pcrs: Mapping[int, bytes], facts: BootFacts | None, now: float
) -> PolicyOutcome:
    results = [(release, release_reasons(release, pcrs, facts)) for release in profile.releases]
    passing = [release for release, reasons in results if not reasons]
    for release in passing:
        if retirement(release, now) is None:
            return PolicyOutcome(release.name, ())
    if passing:
        retired = retirement(passing[0], now)
        assert retired is not None
        return PolicyOutcome(passing[0].name, (retired,))
    fewest = min((len(found) for _, found in results), default=0)
    reasons = [reason for _, found in results if len(found) == fewest for reason in found]
    reasons.append(
        Reason(
            code="no_release_matched",
            text=f"the boot matches none of the {len(profile.releases)} releases "
            f"of profile {profile.name}",
            rule="releases",
        )
    )
    return PolicyOutcome("", tuple(reasons))
