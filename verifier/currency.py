"""Is a verdict current? The one decision every path takes (API, tokens, rollout, stream, CLI).

``currency(verdict, now, golden=..., revocations=..., latest_epoch=..., profile=...)`` is pure:
the verdict, the live golden set, a frozen snapshot of the revocations and what the caller
knows of the device in; a ``Currency`` (state and why) out. In order:

1. ``unknown`` when the caller does not know the live golden set or the revocations (a bare
   store read): a verdict nobody can check is never reported current (fail closed);
2. ``superseded`` when the device was decommissioned, its EK denied, its EK certificate (or a
   CA above it) revoked by a CRL, or the AK that signed the quote revoked;
3. ``unknown`` when the device's EK certificate cannot be checked (a CRL past its nextUpdate
   under ``--crl-stale fail``);
4. ``superseded`` when a later boot epoch of the device is known, when the device is now bound
   to another profile, when the verdict's profile or release is no longer in the golden set,
   or the release is revoked or past its ``not_after``;
5. ``expired`` at or after ``expires_at``;
6. otherwise ``fresh``.

``Currency.current`` is true only for ``fresh``; a verdict is *trusted* only when it is current
and affirming (``trusted``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from verifier.enrollment.identity import PREFIX as DEVICE_PREFIX
from verifier.golden.model import GoldenSet
from verifier.records import RevocationKind, RevocationRecord
from verifier.verdict import BootEpoch, Freshness, Status, Verdict

AK_NAME = "ak_name"  # the verdict ``extra`` key naming (hex) the AK that signed the quote


def _frozen(items: Mapping[str, str] | None = None) -> Mapping[str, str]:
    return MappingProxyType(dict(items or {}))


@dataclass(frozen=True)
class Revocations:
    """What operators (and CRLs) took out of the fleet, as one frozen snapshot.

    Each map goes from the revoked subject to the sentence that says why (who, when, reason).
    ``devices``: decommissioned device ids; ``eks``: denied EK fingerprints (64 hex digits,
    the device id without ``dev-``); ``aks``: revoked AK names (hex); ``ak_devices``: devices
    with a revoked AK (for verdicts that do not name their AK: fail closed); ``certificates``:
    devices whose stored EK certificate path is revoked by a CRL; ``undecidable``: devices
    whose EK certificate cannot be checked now (a stale CRL under ``fail``).
    """

    devices: Mapping[str, str] = field(default_factory=_frozen)
    eks: Mapping[str, str] = field(default_factory=_frozen)
    aks: Mapping[str, str] = field(default_factory=_frozen)
    ak_devices: Mapping[str, str] = field(default_factory=_frozen)
    certificates: Mapping[str, str] = field(default_factory=_frozen)
    undecidable: Mapping[str, str] = field(default_factory=_frozen)

    @classmethod
    def from_records(
        cls, records: Iterable[RevocationRecord], undecidable: Mapping[str, str] | None = None
    ) -> Revocations:
        """The snapshot of the store's standing revocation records (lifted ones excluded)."""
        maps: dict[RevocationKind, dict[str, str]] = {kind: {} for kind in RevocationKind}
        ak_devices: dict[str, str] = {}
        for record in records:
            if record.lifted:
                continue
            maps[record.kind][record.subject] = record.describe()
            if record.kind is RevocationKind.AK and record.device_id:
                ak_devices[record.device_id] = record.describe()
        return cls(
            devices=_frozen(maps[RevocationKind.DEVICE]),
            eks=_frozen(maps[RevocationKind.EK]),
            aks=_frozen(maps[RevocationKind.AK]),
            ak_devices=_frozen(ak_devices),
            certificates=_frozen(maps[RevocationKind.EK_CERTIFICATE]),
            undecidable=_frozen(undecidable),
        )

    def revoked_identity(self, device_id: str) -> str | None:
        """Why the device itself may no longer attest or enroll (None: it may)."""
        if device_id in self.devices:
            return f"device decommissioned: {self.devices[device_id]}"
        fingerprint = device_id.removeprefix(DEVICE_PREFIX)
        if fingerprint in self.eks:
            return f"EK denied: {self.eks[fingerprint]}"
        if device_id in self.certificates:
            return f"EK certificate revoked: {self.certificates[device_id]}"
        return None

    def refusal(self, device_id: str, ak_name: str) -> str | None:
        """Why the device may not enroll or attest with the AK named ``ak_name`` (hex), or
        None: the device itself, then the AK. The one check enrollment and attestation run."""
        why = self.revoked_identity(device_id)
        if why is None and ak_name in self.aks:
            why = f"AK revoked ({ak_name}): {self.aks[ak_name]}"
        return why


@dataclass(frozen=True)
class Currency:
    state: Freshness
    why: str

    @property
    def current(self) -> bool:
        return self.state is Freshness.FRESH


def trusted(verdict: Verdict, currency_: Currency) -> bool:
    """Trusted means current and affirming; nothing else."""
    return currency_.current and verdict.status is Status.AFFIRMING


def currency(
    verdict: Verdict,
    now: float,
    *,
    golden: GoldenSet | None,
    revocations: Revocations | None,
    latest_epoch: BootEpoch | None,
    profile: str | None = None,
    clock_doubt: str | None = None,
) -> Currency:
    """See the module docstring. ``profile``: the device's bound profile, when known;
    ``clock_doubt``: why the verifier's own wall clock is in doubt (``verifier.clock``), when
    it is: then nothing is current ("unknown"), whatever ``now`` says."""
    if clock_doubt is not None:
        return Currency(Freshness.UNKNOWN, f"the verifier's clock is in doubt: {clock_doubt}")
    if golden is None:
        return Currency(Freshness.UNKNOWN, "the live golden set is not known here")
    if revocations is None:
        return Currency(Freshness.UNKNOWN, "the revocations are not known here")
    revoked = _revoked(verdict, revocations)
    if revoked is not None:
        return Currency(Freshness.SUPERSEDED, revoked)
    if verdict.device_id in revocations.undecidable:
        return Currency(Freshness.UNKNOWN, revocations.undecidable[verdict.device_id])
    if latest_epoch is not None and latest_epoch != verdict.boot_epoch:
        return Currency(
            Freshness.SUPERSEDED,
            f"a later boot (reset {latest_epoch.reset_count}, restart "
            f"{latest_epoch.restart_count}) was seen since",
        )
    policy = _policy(verdict, golden, profile, now)
    if policy is not None:
        return Currency(Freshness.SUPERSEDED, policy)
    if now >= verdict.expires_at:
        return Currency(Freshness.EXPIRED, "past expires_at: unknown, never trusted")
    return Currency(Freshness.FRESH, "")


def _revoked(verdict: Verdict, revocations: Revocations) -> str | None:
    identity = revocations.revoked_identity(verdict.device_id)
    if identity is not None:
        return identity
    ak = verdict.extra.get(AK_NAME, "")
    if ak and ak in revocations.aks:
        return f"AK revoked: {revocations.aks[ak]}"
    if not ak and verdict.device_id in revocations.ak_devices:
        return (
            "an AK of the device was revoked and the verdict does not name its AK: "
            + (revocations.ak_devices[verdict.device_id])
        )
    return None


def _policy(verdict: Verdict, golden: GoldenSet, profile: str | None, now: float) -> str | None:
    if profile is not None and profile != verdict.profile:
        return f"the device is now bound to profile {profile!r}, not {verdict.profile!r}"
    found = golden.profile(verdict.profile)
    if found is None:
        return f"profile {verdict.profile!r} is no longer in the golden set"
    if not verdict.release:
        return None
    release = found.release(verdict.release)
    if release is None:
        return f"release {verdict.release} is no longer in profile {verdict.profile}"
    if release.revoked:
        return f"release {verdict.release} was revoked"
    if release.not_after is not None and now > release.not_after:
        return f"release {verdict.release} was retired (past its not_after)"
    return None
