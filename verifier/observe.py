"""Pure helpers behind the verifier's gauges: fleet coverage and token key rotation state.

``coverage_of`` turns the store's grouped counts of latest verdicts into the coverage gauges,
judging supersession exactly as ``Verifier.freshness`` does (a live verdict of a release that
is gone from its profile, revoked or past its ``not_after`` is superseded). ``key_rotation``
reads the signing key's age from its file's modification time (a rotation writes a new file)
and the time left until the last retired key leaves the JWKS. ``check_golden_usable`` is the
health check's golden half: a live set none of whose releases can affirm a device now (all
revoked or retired) is no valid policy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from verifier.golden.model import GoldenSet
from verifier.livegolden import LiveGolden
from verifier.metrics import Coverage
from verifier.store.base import LatestVerdictCounts, LatestVerdictGroup
from verifier.token import KeyRing
from verifier.verdict import Status


def _superseded(group: LatestVerdictGroup, golden: GoldenSet, now: float) -> bool:
    if not group.release:
        return False
    profile = golden.profile(group.profile)
    release = profile.release(group.release) if profile else None
    if release is None or release.revoked:
        return True
    return release.not_after is not None and now > release.not_after


def coverage_of(counts: LatestVerdictCounts, golden: GoldenSet, now: float) -> Coverage:
    """``current_affirming``: latest verdict affirming, not expired, not superseded;
    ``expired``: latest verdict (any status) expired or superseded; ``never_attested``: no
    verdict at all. Devices whose latest verdict is fresh but not affirming are in none."""
    affirming = expired = attested = 0
    for group in counts.groups:
        attested += group.devices
        if not group.live or _superseded(group, golden, now):
            expired += group.devices
        elif group.status is Status.AFFIRMING:
            affirming += group.devices
    return Coverage(
        enrolled=counts.enrolled,
        current_affirming=affirming,
        expired=expired,
        never_attested=max(0, counts.enrolled - attested),
    )


@dataclass(frozen=True)
class KeyRotation:
    age_seconds: float  # of the active signing key
    overlap_left_seconds: float  # until the last retired key leaves the JWKS (0: none)


def key_rotation(keyring: KeyRing, now: float) -> KeyRotation:
    """Raises ``OSError`` when the active key's file cannot be read."""
    path = keyring.directory / f"{keyring.signing_key.kid}.pem"
    age = now - os.stat(path).st_mtime
    left = max((r.retire_by - now for r in keyring.retired), default=0.0)
    return KeyRotation(max(0.0, age), max(0.0, left))


class GoldenUnusable(Exception):
    """The live golden set can affirm no device now (the health check fails with it)."""


def usable_releases(golden: GoldenSet, now: float) -> int:
    """Releases that can still affirm a device: not revoked and not past ``not_after``."""
    return sum(
        1
        for profile in golden.profiles
        for release in profile.releases
        if not release.revoked and (release.not_after is None or now <= release.not_after)
    )


def check_golden_usable(golden: LiveGolden, now: float) -> None:
    """Raise ``GoldenUnusable`` when the live set has no profile or no usable release."""
    live = golden.current().profile_set
    if not live.profiles:
        raise GoldenUnusable(f"golden set {live.digest} has no profile")
    if usable_releases(live, now) == 0:
        raise GoldenUnusable(
            f"golden set {live.digest}: every release is revoked or retired; no device can"
            " be affirmed"
        )
