"""The one decision of currency: every way a verdict stops being current, and fail closed."""

from __future__ import annotations

from dataclasses import replace

from verifier.currency import AK_NAME, Revocations, currency, trusted
from verifier.golden.model import GoldenSet, Profile, Release
from verifier.records import RevocationKind, RevocationRecord
from verifier.verdict import BootEpoch, Freshness, Status, Verdict

NOW = 1_800_000_000.0
FP = "ab" * 32
DEVICE = "dev-" + FP
PROFILE = Profile(
    name="gw",
    source="gw.yaml",
    match_labels={},
    verdict_lifetime=3600,
    bank="sha256",
    pcrs=(0,),
    releases=(Release("A", pcrs={0: b"\x01" * 32}),),
)
GOLDEN = GoldenSet((PROFILE,), "sha256:00", ("gw.yaml",))
VERDICT = Verdict(
    device_id=DEVICE,
    status=Status.AFFIRMING,
    reasons=(),
    profile="gw",
    release="A",
    golden_digest="sha256:00",
    boot_epoch=BootEpoch(3, 0),
    issued_at=NOW - 60,
    expires_at=NOW + 3000,
    extra={AK_NAME: "000b" + "cd" * 32},
)


def judge(
    verdict: Verdict = VERDICT,
    *,
    golden: GoldenSet | None = GOLDEN,
    revocations: Revocations | None = None,
    epoch: BootEpoch | None = None,
    profile: str | None = None,
    now: float = NOW,
) -> tuple[Freshness, str]:
    found = currency(
        verdict,
        now,
        golden=golden,
        revocations=Revocations() if revocations is None else revocations,
        latest_epoch=epoch,
        profile=profile,
    )
    return found.state, found.why


def revoked(kind: RevocationKind, subject: str, device_id: str = DEVICE) -> Revocations:
    record = RevocationRecord(kind, subject, "stolen", "local:ops", NOW - 5, device_id=device_id)
    return Revocations.from_records([record])


def test_a_clean_verdict_is_fresh_and_trusted() -> None:
    found = currency(
        VERDICT, NOW, golden=GOLDEN, revocations=Revocations(), latest_epoch=BootEpoch(3, 0)
    )
    assert found.state is Freshness.FRESH and trusted(VERDICT, found)


def test_a_bare_store_read_without_the_golden_set_is_unknown_never_trusted() -> None:
    found = currency(VERDICT, NOW, golden=None, revocations=Revocations(), latest_epoch=None)
    assert found.state is Freshness.UNKNOWN and not trusted(VERDICT, found)


def test_a_read_without_the_revocations_is_unknown() -> None:
    found = currency(VERDICT, NOW, golden=GOLDEN, revocations=None, latest_epoch=None)
    assert found.state is Freshness.UNKNOWN


def test_verdict_of_a_revoked_release_is_superseded() -> None:
    release = replace(PROFILE.releases[0], revoked=True)
    golden = GoldenSet((replace(PROFILE, releases=(release,)),), "sha256:01", ("gw.yaml",))
    assert judge(golden=golden) == (Freshness.SUPERSEDED, "release A was revoked")


def test_verdict_of_a_release_past_not_after_is_superseded() -> None:
    release = replace(PROFILE.releases[0], not_after=NOW - 1)
    golden = GoldenSet((replace(PROFILE, releases=(release,)),), "sha256:01", ("gw.yaml",))
    assert judge(golden=golden)[0] is Freshness.SUPERSEDED


def test_verdict_of_a_removed_profile_is_superseded() -> None:
    assert judge(golden=GoldenSet((), "sha256:02", ()))[0] is Freshness.SUPERSEDED


def test_verdict_of_a_decommissioned_device_is_superseded_even_when_expired() -> None:
    state, why = judge(revocations=revoked(RevocationKind.DEVICE, DEVICE), now=NOW + 9999)
    assert state is Freshness.SUPERSEDED and "decommissioned" in why and "local:ops" in why


def test_verdict_of_a_denied_ek_is_superseded() -> None:
    state, why = judge(revocations=revoked(RevocationKind.EK, FP))
    assert state is Freshness.SUPERSEDED and "EK denied" in why


def test_a_lifted_ek_denial_no_longer_supersedes() -> None:
    record = RevocationRecord(RevocationKind.EK, FP, "stolen", "ops", NOW - 5, lifted_at=NOW - 1)
    assert judge(revocations=Revocations.from_records([record]))[0] is Freshness.FRESH


def test_verdict_signed_by_a_revoked_ak_is_superseded_but_not_another_aks() -> None:
    revocations = revoked(RevocationKind.AK, VERDICT.extra[AK_NAME])
    assert judge(revocations=revocations)[0] is Freshness.SUPERSEDED
    other = replace(VERDICT, extra={AK_NAME: "000b" + "ef" * 32})
    assert judge(other, revocations=revocations)[0] is Freshness.FRESH


def test_verdict_that_does_not_name_its_ak_fails_closed_on_an_ak_revocation() -> None:
    legacy = replace(VERDICT, extra={})
    revocations = revoked(RevocationKind.AK, "000b" + "ef" * 32)
    assert judge(legacy, revocations=revocations)[0] is Freshness.SUPERSEDED


def test_verdict_of_an_ek_certificate_on_a_crl_is_superseded() -> None:
    revocations = revoked(RevocationKind.EK_CERTIFICATE, DEVICE)
    assert judge(revocations=revocations)[0] is Freshness.SUPERSEDED


def test_a_device_whose_crl_is_stale_is_unknown() -> None:
    revocations = Revocations(undecidable={DEVICE: "the CRL of X is past its nextUpdate"})
    assert judge(revocations=revocations) == (
        Freshness.UNKNOWN,
        "the CRL of X is past its nextUpdate",
    )


def test_a_later_boot_epoch_supersedes() -> None:
    assert judge(epoch=BootEpoch(4, 0))[0] is Freshness.SUPERSEDED


def test_a_device_rebound_to_another_profile_supersedes_its_verdict() -> None:
    state, why = judge(profile="strict")
    assert state is Freshness.SUPERSEDED and "strict" in why


def test_an_expired_verdict_is_expired_not_trusted() -> None:
    found = currency(
        VERDICT, NOW + 3000, golden=GOLDEN, revocations=Revocations(), latest_epoch=None
    )
    assert found.state is Freshness.EXPIRED and not trusted(VERDICT, found)


def test_a_contraindicated_current_verdict_is_not_trusted() -> None:
    bad = replace(VERDICT, status=Status.CONTRAINDICATED, release="")
    found = currency(bad, NOW, golden=GOLDEN, revocations=Revocations(), latest_epoch=None)
    assert found.current and not trusted(bad, found)
