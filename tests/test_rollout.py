"""Rollout gating: every way a device must be held back, and the one way it goes ahead."""

from __future__ import annotations

from dataclasses import replace

from verifier.currency import Currency
from verifier.golden.model import Profile, Release
from verifier.rollout import check_rollout
from verifier.verdict import BootEpoch, Freshness, Reason, Status, Verdict

NOW = 1_800_000_000.0
PROFILE = Profile(
    name="gw",
    source="gw.yaml",
    match_labels={"model": "gw"},
    verdict_lifetime=3600,
    bank="sha256",
    pcrs=(0,),
    releases=(
        Release("A", pcrs={0: b"\x01" * 32}, upgrades_to=("B",)),
        Release("B", pcrs={0: b"\x02" * 32}),
        Release("C", pcrs={0: b"\x03" * 32}, revoked=True),
    ),
)
GOOD = Verdict(
    device_id="dev-1",
    status=Status.AFFIRMING,
    reasons=(),
    profile="gw",
    release="A",
    golden_digest="sha256:00",
    boot_epoch=BootEpoch(3, 0),
    issued_at=NOW - 60,
    expires_at=NOW + 3000,
)


def codes(
    verdict: Verdict | None, fresh: Freshness | None, target: str, max_age: float
) -> set[str]:
    current = Currency(fresh, "" if fresh is Freshness.FRESH else "test") if fresh else None
    decision = check_rollout(verdict, current, PROFILE, target, max_age, NOW)
    assert decision.allow == (not decision.reasons)
    return {r.code for r in decision.reasons}


def test_fresh_affirming_device_may_upgrade_along_upgrades_to() -> None:
    assert codes(GOOD, Freshness.FRESH, "B", 600) == set()


def test_device_without_verdict_is_denied() -> None:
    assert codes(None, None, "B", 600) == {"no_verdict"}


def test_expired_verdict_is_denied() -> None:
    assert "verdict_expired" in codes(GOOD, Freshness.EXPIRED, "B", 600)


def test_verdict_from_a_previous_boot_is_denied() -> None:
    assert "verdict_superseded" in codes(GOOD, Freshness.SUPERSEDED, "B", 600)


def test_verdict_older_than_max_age_is_denied() -> None:
    assert codes(GOOD, Freshness.FRESH, "B", 30) == {"verdict_too_old"}


def test_contraindicated_device_is_denied() -> None:
    bad = replace(GOOD, status=Status.CONTRAINDICATED, reasons=(Reason("pcr_mismatch", "x"),))
    assert codes(bad, Freshness.FRESH, "B", 600) == {"not_affirming"}


def test_upgrade_path_not_in_upgrades_to_is_denied() -> None:
    on_b = replace(GOOD, release="B")
    assert codes(on_b, Freshness.FRESH, "A", 600) == {"upgrade_not_allowed"}


def test_revoked_or_unknown_target_is_denied() -> None:
    assert codes(GOOD, Freshness.FRESH, "C", 600) == {"target_retired"}
    assert codes(GOOD, Freshness.FRESH, "Z", 600) == {"unknown_release"}
