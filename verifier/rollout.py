"""Rollout gating: may an update server ship ``target`` to a device now?

Pure: the device's latest verdict (with its currency, ``verifier.currency``: the one decision),
its golden profile and ``now`` in; allow or deny with every reason out. Deny, fail-closed, when:
- there is no verdict;
- the verdict is not current: expired, superseded (a later boot epoch, a revoked or retired
  release, a revoked device, EK or AK) or unknown;
- it is older than ``max_age`` seconds (0: no extra bound);
- it is not affirming;
- the target release is unknown, revoked or retired;
- the device's current release may not be upgraded to the target (``upgrades_to``).
A device already on the target release is allowed (re-sending the same firmware).
"""

from __future__ import annotations

from dataclasses import dataclass

from verifier.currency import Currency
from verifier.golden.evaluate import retirement
from verifier.golden.model import Profile
from verifier.verdict import Freshness, Reason, Status, Verdict


@dataclass(frozen=True)
class RolloutDecision:
    allow: bool
    reasons: tuple[Reason, ...]


def _deny(code: str, text: str, expected: str = "", actual: str = "", release: str = "") -> Reason:
    return Reason(
        code=code, text=text, rule="rollout", expected=expected, actual=actual, release=release
    )


def check_rollout(
    verdict: Verdict | None,
    current: Currency | None,
    profile: Profile | None,
    target: str,
    max_age: float,
    now: float,
) -> RolloutDecision:
    if verdict is None or current is None:
        return RolloutDecision(False, (_deny("no_verdict", "the device has no verdict"),))
    reasons = list(_verdict_reasons(verdict, current, max_age, now))
    reasons.extend(_release_reasons(verdict, profile, target, now))
    return RolloutDecision(not reasons, tuple(reasons))


def _verdict_reasons(
    verdict: Verdict, current: Currency, max_age: float, now: float
) -> list[Reason]:
    reasons = []
    if current.state is Freshness.EXPIRED:
        reasons.append(_deny("verdict_expired", "the latest verdict has expired (unknown)"))
    elif current.state is Freshness.SUPERSEDED:
        reasons.append(
            _deny("verdict_superseded", f"the latest verdict was superseded: {current.why}")
        )
    elif current.state is Freshness.UNKNOWN:
        reasons.append(
            _deny("verdict_unknown", f"whether the latest verdict is current: {current.why}")
        )
    age = now - verdict.issued_at
    if max_age > 0 and age > max_age:
        reasons.append(
            _deny(
                "verdict_too_old",
                f"the latest verdict is {age:.0f}s old; at most {max_age:.0f}s accepted",
                expected=f"<= {max_age:.0f}s",
                actual=f"{age:.0f}s",
            )
        )
    if verdict.status is not Status.AFFIRMING:
        reasons.append(
            _deny(
                "not_affirming",
                f"the latest verdict is {verdict.status.value}",
                expected="affirming",
                actual=verdict.status.value,
            )
        )
    return reasons


def _release_reasons(
    verdict: Verdict, profile: Profile | None, target: str, now: float
) -> list[Reason]:
    if profile is None:
        return [_deny("unknown_profile", f"profile {verdict.profile!r} is no longer loaded")]
    wanted = profile.release(target)
    if wanted is None:
        return [_deny("unknown_release", f"profile {profile.name} has no release {target!r}")]
    retired = retirement(wanted, now)
    if retired is not None:
        return [_deny("target_retired", f"target release {target}: {retired.text}")]
    if verdict.release == target:
        return []
    current = profile.release(verdict.release)
    if current is None or target not in current.upgrades_to:
        return [
            _deny(
                "upgrade_not_allowed",
                f"release {verdict.release or '(none)'} may not be upgraded to {target}",
                expected=f"upgrades_to contains {target}",
                actual=", ".join(current.upgrades_to) if current else "(no release)",
                release=verdict.release,
            )
        ]
    return []
