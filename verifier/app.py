"""The verifier's application layer: the flows (ARCHITECTURE.md), between the core and the edges.

``Verifier`` owns the store, the EK trust anchors, the live golden set and the clock, and runs
each flow as a short sequence of steps; every check itself lives in a pure module
(``enrollment``, ``quote``, ``appraisal``, ``golden``). Nothing here speaks gRPC: the service
adapters translate messages to these calls and exceptions to status codes.

Enrollment (``verifier.enrollment.flow``, composed here as ``Verifier.enrollment``): start
(EK chain or allowlist, EK and AK checks, MakeCredential, challenge stored) -> finish
(challenge taken once, proof compared in constant time, device stored or counted, a new AK
for a known EK parked for operator approval).
Attestation: challenge (nonce bound to the device, the profile's selection) -> attest (nonce
consumed once, appraisal, verdict stored with history, latest evidence kept).
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from verifier import errors
from verifier.appraisal import AppraisalContext, Appraised, appraise_evidence
from verifier.enrollment.ekchain import Allowlist, TrustStore
from verifier.enrollment.flow import Enrollment
from verifier.enrollment.tpmpublic import TpmPublic, parse_tpm2b_public
from verifier.evidence import Evidence
from verifier.golden.evidence_policy import LogAppraisalCache
from verifier.golden.load import load_golden_texts
from verifier.golden.model import Profile
from verifier.golden.whatif import DryRunReport, Explanation, dry_run, explain
from verifier.ima.incremental import IncrementalState, state_from_dict, state_to_dict
from verifier.limits import DEFAULT_LIMITS, Limits
from verifier.livegolden import LiveGolden
from verifier.rollout import RolloutDecision, check_rollout
from verifier.store.base import (
    DeviceRecord,
    ImaStateRecord,
    IssuedNonce,
    Store,
    StoredEvidence,
)
from verifier.token import KeyRing, TokenExpired, issue_token
from verifier.verdict import Freshness, Verdict

log = logging.getLogger(__name__)

Clock = Callable[[], float]


@dataclass(frozen=True)
class ChallengeIssued:
    device_id: str
    nonce: bytes
    bank: str
    pcrs: tuple[int, ...]
    profile: str
    expires_at: float


@dataclass(frozen=True)
class Attested:
    verdict: Verdict  # as stored
    token: str
    ima_entries: int  # IMA entries accepted in this boot: the agent's next ima_offset


@dataclass(frozen=True)
class VerifierSettings:
    nonce_ttl: float = 60.0
    enrollment_ttl: float = 120.0
    issuer: str = "fleet-attest"  # the tokens' ``iss``
    limits: Limits = DEFAULT_LIMITS


@dataclass(frozen=True)
class EnrolledAk:
    """The parsed AK of a device, cached: parsing a TPM2B_PUBLIC costs more than a quote check."""

    ak_public: bytes
    parsed: TpmPublic


class Verifier:
    def __init__(
        self,
        store: Store,
        trust: TrustStore,
        allowlist: Allowlist,
        golden: LiveGolden,
        keyring: KeyRing,
        settings: VerifierSettings = VerifierSettings(),
        clock: Clock = time.time,
    ) -> None:
        self.store = store
        self.keyring = keyring
        self.trust = trust
        self.allowlist = allowlist
        self.golden = golden
        self.settings = settings
        self.clock = clock
        self._ak_cache: dict[str, EnrolledAk] = {}
        self._ak_lock = threading.Lock()
        self._verdict_added = threading.Condition()
        self._log_cache = LogAppraisalCache()
        self.enrollment = Enrollment(
            store, trust, allowlist, clock, settings.enrollment_ttl, settings.limits
        )

    # ------------------------------------------------------------ attestation

    def get_challenge(self, device_id: str) -> ChallengeIssued:
        device = self._device(device_id)
        profile = self._profile_for(device)
        now = self.clock()
        issued = IssuedNonce(
            nonce=secrets.token_bytes(32),
            device_id=device_id,
            bank=profile.bank,
            pcrs=profile.pcrs,
            profile=profile.name,
            expires_at=now + self.settings.nonce_ttl,
        )
        self.store.add_nonce(issued)
        return ChallengeIssued(
            device_id, issued.nonce, issued.bank, issued.pcrs, issued.profile, issued.expires_at
        )

    def attest(self, evidence: Evidence) -> tuple[Verdict, str]:
        """Appraise, store and sign: the stored verdict and its token."""
        attested = self.attest_evidence(evidence)
        return attested.verdict, attested.token

    def attest_evidence(self, evidence: Evidence) -> Attested:
        """Appraise, store (the verdict, then the device's new IMA state) and sign.

        The IMA state is written after the verdict: a crash in between loses the state, and
        the device's next increment is answered with ``ImaLogRequired`` (fail safe)."""
        device = self._device(evidence.device_id)
        now = self.clock()
        issued = self.store.consume_nonce(evidence.device_id, evidence.nonce, now)
        if issued is None:
            raise errors.NonceMismatch(
                "the nonce was not issued to this device, has expired, or was already used"
            )
        golden = self.golden.current()
        profile = golden.profile_set.profile(issued.profile)
        if profile is None:
            raise errors.PolicyViolation(
                f"profile {issued.profile!r} was removed since the challenge; ask again"
            )
        ak = self._ak(device).parsed
        ctx = AppraisalContext(
            ak_public_key=ak.public_key,
            ak_hash=ak.signing_hash,
            issued=issued,
            profile=profile,
            golden_digest=golden.profile_set.digest,
            previous=self._previous(device),
            ek_not_after=device.ek_not_after,
            limits=self.settings.limits,
            log_cache=self._log_cache,
            ima_state=self._ima_state(device.device_id) if profile.runtime else None,
        )
        appraised = appraise_evidence(evidence, ctx, now)
        stored = self.store.add_verdict(appraised.verdict)
        ima_entries = self._keep_ima_state(device.device_id, appraised, now)
        self._keep_evidence(evidence, device, issued, now)
        with self._verdict_added:
            self._verdict_added.notify_all()
        log.info(
            "device %s: %s (profile %s, release %s, %d reasons)",
            device.device_id,
            stored.status.value,
            stored.profile,
            stored.release or "-",
            len(stored.reasons),
        )
        return Attested(stored, self.token_for(stored, device=device), ima_entries)

    def _ima_state(self, device_id: str) -> IncrementalState | None:
        record = self.store.ima_state(device_id)
        if record is None:
            return None
        try:
            return state_from_dict(json.loads(record.state))
        except (ValueError, KeyError, TypeError) as exc:
            # Lost state is safe: the device is asked for its whole IMA log.
            log.warning("IMA state of %s is damaged and ignored: %s", device_id, exc)
            return None

    def _keep_ima_state(self, device_id: str, appraised: Appraised, now: float) -> int:
        if appraised.ima is None:
            return 0
        state = appraised.ima.state
        record = ImaStateRecord(
            device_id=device_id,
            boot_id=state.boot_id,
            entry_count=state.entry_count,
            state=json.dumps(state_to_dict(state), separators=(",", ":")),
            updated_at=now,
        )
        self.store.put_ima_state(record)
        return state.entry_count

    def _keep_evidence(
        self, evidence: Evidence, device: DeviceRecord, issued: IssuedNonce, now: float
    ) -> None:
        record = StoredEvidence(
            device_id=device.device_id,
            received_at=now,
            bank=issued.bank,
            pcrs=dict(evidence.pcr_values),
            event_log=evidence.event_log,
            labels=device.labels,
        )
        try:
            self.store.put_evidence(record)
        except errors.LimitExceeded as exc:
            log.warning("evidence of %s not kept for dry runs: %s", device.device_id, exc)

    # ------------------------------------------------------------ queries

    def latest_verdict(self, device_id: str) -> tuple[Verdict, Freshness]:
        self._device(device_id)
        verdict = self.store.latest_verdict(device_id)
        if verdict is None:
            raise errors.UnknownDevice(f"device {device_id} has no verdict yet")
        return verdict, self.freshness(verdict)

    def freshness(self, verdict: Verdict) -> Freshness:
        """Expired past ``expires_at``; superseded by a revoked or retired release."""
        now = self.clock()
        state = verdict.freshness(now)
        if state is not Freshness.FRESH or not verdict.release:
            return state
        profile = self.golden.current().profile_set.profile(verdict.profile)
        release = profile.release(verdict.release) if profile else None
        if release is None or release.revoked:
            return Freshness.SUPERSEDED
        if release.not_after is not None and now > release.not_after:
            return Freshness.SUPERSEDED
        return state

    def token_for(
        self, verdict: Verdict, nonce: bytes | None = None, device: DeviceRecord | None = None
    ) -> str:
        """The verdict as a freshly signed EAR token (``nonce`` echoed as ``eat_nonce``).

        ``exp`` is the earliest of the verdict's expiry, the release's ``not_after`` and the
        EK certificate's notAfter. Empty when that time has already passed (an expired
        verdict, a retired release, an expired EK certificate): there is nothing to vouch for.
        """
        profile = self.golden.current().profile_set.profile(verdict.profile)
        release = profile.release(verdict.release) if profile and verdict.release else None
        if self.freshness(verdict) is not Freshness.FRESH:
            return ""  # expired or superseded (a revoked or retired release): nothing to vouch for
        if device is None:
            device = self.store.get_device(verdict.device_id)
        try:
            return issue_token(
                verdict,
                self.keyring.signing_key,
                issuer=self.settings.issuer,
                now=self.clock(),
                release_not_after=release.not_after if release else None,
                ek_not_after=device.ek_not_after if device else None,
                nonce=nonce,
            )
        except TokenExpired:
            # No token for a verdict that can no longer be valid: absence proves nothing.
            return ""

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return self.keyring.jwks(self.clock())

    def check_rollout(
        self, device_id: str, target: str, max_age: float
    ) -> tuple[RolloutDecision, Verdict | None]:
        """May ``target`` be shipped to the device now (see ``verifier.rollout``)?"""
        self._device(device_id)
        verdict = self.store.latest_verdict(device_id)
        if verdict is None:
            return check_rollout(None, None, None, target, max_age, self.clock()), None
        profile = self.golden.current().profile_set.profile(verdict.profile)
        decision = check_rollout(
            verdict, self.freshness(verdict), profile, target, max_age, self.clock()
        )
        return decision, verdict

    def verdicts_after(
        self, sequence: int, device_ids: Sequence[str] = (), profile: str = ""
    ) -> Sequence[Verdict]:
        return self.store.verdicts_after(sequence, device_ids, profile)

    def wait_for_verdicts(self, timeout: float) -> None:
        """Block until this process stores a verdict or ``timeout`` passes (other replicas'
        verdicts are found by the caller's next poll)."""
        with self._verdict_added:
            self._verdict_added.wait(timeout)

    def explain(self, device_id: str) -> Explanation:
        """Every rule of every release against the device's latest evidence (operators)."""
        self._device(device_id)
        evidence = self.store.latest_evidence(device_id)
        if evidence is None:
            raise errors.UnknownDevice(f"device {device_id} has no stored evidence yet")
        golden = self.golden.current().profile_set
        return explain(evidence, golden, self.clock(), self.settings.limits)

    def dry_run(self, files: Mapping[str, str]) -> DryRunReport:
        """A proposed golden set against every device's latest evidence; changes nothing.

        Raises ``GoldenError`` (with every problem) when the proposed set is invalid.
        """
        proposed = load_golden_texts(files, self.settings.limits)
        current = self.golden.current().profile_set
        evidences = self.store.all_latest_evidence()
        return dry_run(evidences, current, proposed, self.clock(), self.settings.limits)

    def devices(self) -> Sequence[DeviceRecord]:
        return self.store.list_devices()

    # ------------------------------------------------------------ helpers

    def _device(self, device_id: str) -> DeviceRecord:
        if not device_id or len(device_id) > self.settings.limits.max_device_id_bytes:
            raise errors.MalformedEvidence("device_id is empty or too long")
        device = self.store.get_device(device_id)
        if device is None:
            raise errors.UnknownDevice(f"no enrolled device {device_id}; enroll first")
        return device

    def _profile_for(self, device: DeviceRecord) -> Profile:
        profile = self.golden.current().profile_set.profile_for(device.labels)
        if profile is None:
            raise errors.PolicyViolation(
                f"no golden profile matches device {device.device_id} labels {device.labels}"
            )
        return profile

    def _previous(self, device: DeviceRecord) -> Verdict | None:
        """The verdict counters are compared with: the latest one since the current AK became
        trusted. A TPM2_Clear resets the counters and destroys the AK; after the operator
        approves the new AK, the old boots are no baseline for the new ones."""
        previous = self.store.latest_verdict(device.device_id)
        if previous is None or previous.issued_at < device.enrolled_at:
            return None
        return previous

    def _ak(self, device: DeviceRecord) -> EnrolledAk:
        with self._ak_lock:
            cached = self._ak_cache.get(device.device_id)
        if cached is not None and cached.ak_public == device.ak_public:
            return cached
        entry = EnrolledAk(device.ak_public, parse_tpm2b_public(device.ak_public))
        with self._ak_lock:
            self._ak_cache[device.device_id] = entry
        return entry


def open_trust(ek_ca: Path | None, allowlist: Path | None) -> tuple[TrustStore, Allowlist]:
    trust = TrustStore.load(ek_ca) if ek_ca else TrustStore.empty()
    allow = Allowlist.load(allowlist) if allowlist else Allowlist.empty()
    return trust, allow
