"""The pure appraisal core: evidence, enrollment record, policy and ``now`` in; a verdict out."""

from __future__ import annotations

from dataclasses import replace

import pytest

from simulator.softquote import QuoteFields, SoftAk
from verifier import errors
from verifier.appraisal import AppraisalContext, appraise
from verifier.currency import Revocations, currency, trusted
from verifier.evidence import Evidence
from verifier.golden.model import GoldenSet, Profile, Release
from verifier.limits import DEFAULT_LIMITS
from verifier.store.base import IssuedNonce
from verifier.verdict import BootEpoch, Status, Verdict

NOW = 1_800_000_000.0
NONCE = b"N" * 32
GOOD = {0: b"\x10" * 32, 7: b"\x17" * 32}
NEW = {0: b"\x20" * 32, 7: b"\x17" * 32}
PROFILE = Profile(
    name="gw",
    source="gw.yaml",
    match_labels={"model": "gw"},
    verdict_lifetime=3600,
    bank="sha256",
    pcrs=(0, 7),
    releases=(
        Release("fw-1", pcrs=dict(GOOD), upgrades_to=("fw-2",)),
        Release("fw-2", pcrs=dict(NEW)),
        Release("fw-0", pcrs={0: b"\x05" * 32, 7: b"\x17" * 32}, not_after=NOW - 86400),
    ),
)


@pytest.fixture(scope="module")
def ak() -> SoftAk:
    return SoftAk.generate()


def context(ak: SoftAk, **changes: object) -> AppraisalContext:
    issued = IssuedNonce(NONCE, "dev-1", "sha256", (0, 7), "gw", NOW + 60)
    ctx = AppraisalContext(
        ak_public_key=ak.key.public_key(),
        ak_hash="sha256",
        issued=issued,
        profile=PROFILE,
        golden_digest="sha256:abc",
        previous=None,
        ek_not_after=None,
    )
    return replace(ctx, **changes)  # type: ignore[arg-type]


def evidence(ak: SoftAk, pcrs: dict[int, bytes], **fields: object) -> Evidence:
    attest, sig = ak.quote(QuoteFields(NONCE, "sha256", pcrs, **fields))  # type: ignore[arg-type]
    return Evidence.build(
        device_id="dev-1",
        nonce=NONCE,
        quote=attest,
        signature=sig,
        pcr_values=tuple(pcrs.items()),
        event_log=b"",
        limits=DEFAULT_LIMITS,
    )


def test_golden_boot_is_affirming_with_lifetime_and_epoch(ak: SoftAk) -> None:
    verdict = appraise(evidence(ak, GOOD), context(ak), NOW)
    assert verdict.status is Status.AFFIRMING
    assert verdict.reasons == ()
    assert verdict.release == "fw-1"
    assert verdict.golden_digest == "sha256:abc"
    assert verdict.boot_epoch == BootEpoch(1, 0)
    assert verdict.expires_at == NOW + 3600


def test_second_release_of_a_rollout_is_also_affirming(ak: SoftAk) -> None:
    verdict = appraise(evidence(ak, NEW), context(ak), NOW)
    assert (verdict.status, verdict.release) == (Status.AFFIRMING, "fw-2")


def test_pcr_extended_away_from_golden_names_the_pcr_and_both_values(ak: SoftAk) -> None:
    bad = {0: GOOD[0], 7: b"\x66" * 32}
    verdict = appraise(evidence(ak, bad), context(ak), NOW)
    assert verdict.status is Status.CONTRAINDICATED
    assert verdict.release == ""
    mismatch = [r for r in verdict.reasons if r.code == "pcr_mismatch" and r.release == "fw-1"]
    assert [(r.pcr, r.expected, r.actual) for r in mismatch] == [(7, GOOD[7].hex(), bad[7].hex())]
    assert any(r.code == "no_release_matched" for r in verdict.reasons)


def test_rollback_to_a_retired_release_is_contraindicated(ak: SoftAk) -> None:
    old = {0: b"\x05" * 32, 7: b"\x17" * 32}
    verdict = appraise(evidence(ak, old), context(ak), NOW)
    assert verdict.status is Status.CONTRAINDICATED
    assert [r.code for r in verdict.reasons] == ["release_retired"]


def test_revoked_release_is_contraindicated(ak: SoftAk) -> None:
    releases = (replace(PROFILE.releases[0], revoked=True), *PROFILE.releases[1:])
    profile = replace(PROFILE, releases=releases)
    verdict = appraise(evidence(ak, GOOD), context(ak, profile=profile), NOW)
    assert [r.code for r in verdict.reasons] == ["release_revoked"]


def test_nonce_issued_to_another_device_is_rejected(ak: SoftAk) -> None:
    issued = IssuedNonce(NONCE, "dev-2", "sha256", (0, 7), "gw", NOW + 60)
    with pytest.raises(errors.NonceMismatch):
        appraise(evidence(ak, GOOD), context(ak, issued=issued), NOW)


def test_sha1_bank_is_refused_unless_the_profile_allows_it(ak: SoftAk) -> None:
    issued = IssuedNonce(NONCE, "dev-1", "sha1", (0, 7), "gw", NOW + 60)
    with pytest.raises(errors.PolicyViolation, match="SHA-1"):
        appraise(evidence(ak, GOOD), context(ak, issued=issued), NOW)


def previous(reset: int, restart: int, clock: int) -> Verdict:
    return Verdict(
        device_id="dev-1",
        status=Status.AFFIRMING,
        reasons=(),
        profile="gw",
        release="fw-1",
        golden_digest="sha256:abc",
        boot_epoch=BootEpoch(reset, restart),
        issued_at=NOW - 100,
        expires_at=NOW + 100,
        clock=clock,
    )


def test_reset_count_going_backwards_is_contraindicated(ak: SoftAk) -> None:
    ctx = context(ak, previous=previous(5, 0, 10))
    verdict = appraise(evidence(ak, GOOD, reset_count=4, clock=10**9), ctx, NOW)
    assert verdict.status is Status.CONTRAINDICATED
    assert [r.code for r in verdict.reasons] == ["boot_counter_rollback"]


def test_clock_going_backwards_within_one_boot_is_contraindicated(ak: SoftAk) -> None:
    ctx = context(ak, previous=previous(1, 0, 5_000_000))
    verdict = appraise(evidence(ak, GOOD, clock=4_000_000), ctx, NOW)
    assert [r.code for r in verdict.reasons] == ["clock_rollback"]


def test_power_cycle_gives_a_new_boot_epoch(ak: SoftAk) -> None:
    ctx = context(ak, previous=previous(1, 0, 5_000_000))
    verdict = appraise(evidence(ak, GOOD, reset_count=2, clock=10), ctx, NOW)
    assert verdict.status is Status.AFFIRMING
    assert verdict.boot_epoch == BootEpoch(2, 0)


def test_unclean_power_loss_is_a_warning_not_a_lockout(ak: SoftAk) -> None:
    verdict = appraise(evidence(ak, GOOD, safe=0), context(ak), NOW)
    assert verdict.status is Status.WARNING
    assert [r.code for r in verdict.reasons] == ["unclean_power_loss"]
    assert verdict.release == "fw-1"


def test_verdict_never_outlives_the_ek_certificate(ak: SoftAk) -> None:
    verdict = appraise(evidence(ak, GOOD), context(ak, ek_not_after=NOW + 60), NOW)
    assert verdict.expires_at == NOW + 60


def test_expired_verdict_is_not_trusted(ak: SoftAk) -> None:
    verdict = appraise(evidence(ak, GOOD), context(ak), NOW)
    golden = GoldenSet((context(ak).profile,), "sha256:00", ("p.yaml",))

    def at(now: float) -> bool:
        found = currency(verdict, now, golden=golden, revocations=Revocations(), latest_epoch=None)
        return trusted(verdict, found)

    assert at(NOW + 10)
    assert not at(NOW + 3600)
