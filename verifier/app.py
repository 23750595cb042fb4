"""The verifier's application layer: the flows of DESIGN.md, between the pure core and the edges.

``Verifier`` owns the store, the EK trust anchors, the live golden set and the clock, and runs
each flow as a short sequence of steps; every check itself lives in a pure module
(``enrollment``, ``quote``, ``appraisal``, ``golden``). Nothing here speaks gRPC: the service
adapters translate messages to these calls and exceptions to status codes.

Enrollment: start (EK chain or allowlist, EK and AK checks, MakeCredential, challenge stored)
-> finish (challenge taken once, proof compared in constant time, device stored or counted,
a new AK for a known EK parked for operator approval).
Attestation: challenge (nonce bound to the device, the profile's selection) -> attest (nonce
consumed once, appraisal, verdict stored with history, latest evidence kept).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from verifier import errors
from verifier.appraisal import AppraisalContext, appraise
from verifier.enrollment.credential import check_proof, make_credential, new_secret
from verifier.enrollment.ekchain import Allowlist, TrustStore, validate_ek_certificate
from verifier.enrollment.identity import device_id_for
from verifier.enrollment.tpmpublic import TpmPublic, check_ak, check_ek, parse_tpm2b_public
from verifier.evidence import Evidence
from verifier.golden.evidence_policy import LogAppraisalCache
from verifier.golden.live import LiveGolden
from verifier.golden.load import load_golden_texts
from verifier.golden.model import Profile
from verifier.golden.whatif import DryRunReport, Explanation, dry_run, explain
from verifier.limits import DEFAULT_LIMITS, Limits
from verifier.rollout import RolloutDecision, check_rollout
from verifier.store.base import (
    DeviceRecord,
    EnrollmentChallenge,
    IssuedNonce,
    Store,
    StoredEvidence,
)
from verifier.token import KeyRing, TokenExpired, issue_token
from verifier.verdict import Freshness, Verdict

log = logging.getLogger(__name__)

Clock = Callable[[], float]


class EnrollmentOutcome(Enum):
    ENROLLED = "enrolled"
    REENROLLED = "reenrolled"


@dataclass(frozen=True)
class EnrollmentStart:
    device_id: str
    challenge_id: str
    credential_blob: bytes
    encrypted_secret: bytes
    expires_at: float


@dataclass(frozen=True)
class EnrollmentResult:
    device_id: str
    outcome: EnrollmentOutcome
    enrollment_count: int


@dataclass(frozen=True)
class ChallengeIssued:
    device_id: str
    nonce: bytes
    bank: str
    pcrs: tuple[int, ...]
    profile: str
    expires_at: float


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

    # ------------------------------------------------------------ enrollment

    def start_enrollment(
        self,
        ek_certificate: bytes,
        ek_public: bytes,
        ak_public: bytes,
        labels: Mapping[str, str],
    ) -> EnrollmentStart:
        limits = self.settings.limits
        _check_size("EK certificate", ek_certificate, limits.max_ek_certificate_bytes)
        _check_labels(labels, limits)
        now = self.clock()
        ek = parse_tpm2b_public(ek_public, limits)
        check_ek(ek)
        ak = parse_tpm2b_public(ak_public, limits)
        check_ak(ak)
        not_after = self._endorse(ek_certificate, ek, now)
        device_id = device_id_for(ek)
        secret = new_secret()
        blob, encrypted = make_credential(ek, ak.name, secret)
        challenge = EnrollmentChallenge(
            challenge_id=secrets.token_hex(16),
            device_id=device_id,
            ek_public=ek_public,
            ek_certificate=ek_certificate,
            ek_not_after=not_after,
            ak_public=ak_public,
            ak_name=ak.name,
            labels=dict(labels),
            secret=secret,
            expires_at=now + self.settings.enrollment_ttl,
        )
        self.store.put_enrollment_challenge(challenge)
        log.info("enrollment started for %s (AK %s)", device_id, ak.name.hex())
        return EnrollmentStart(
            device_id, challenge.challenge_id, blob, encrypted, challenge.expires_at
        )

    def _endorse(self, ek_certificate: bytes, ek: TpmPublic, now: float) -> float | None:
        """The EK's trust: a certificate chain to a configured root, or the allowlist."""
        if ek_certificate:
            return validate_ek_certificate(ek_certificate, ek, self.trust, now).not_after
        if self.allowlist.contains(ek):
            return None
        raise errors.UntrustedEndorsement(
            "the TPM sent no EK certificate and its EK is not on the operators' allowlist"
        )

    def finish_enrollment(self, challenge_id: str, proof: bytes) -> EnrollmentResult:
        now = self.clock()
        challenge = self.store.take_enrollment_challenge(challenge_id, now)
        if challenge is None:
            raise errors.ActivationFailed(
                "unknown, expired or already used enrollment challenge; start enrollment again"
            )
        check_proof(challenge.secret, proof)
        device = self.store.get_device(challenge.device_id)
        if device is None:
            self.store.insert_device(_device_from(challenge, now))
            log.info("device %s enrolled", challenge.device_id)
            return EnrollmentResult(challenge.device_id, EnrollmentOutcome.ENROLLED, 1)
        if device.ak_name == challenge.ak_name:
            if challenge.labels != device.labels:
                # Labels select the golden profile: a device may not pick another one by
                # re-enrolling. The labels of the first enrollment stay.
                log.warning(
                    "device %s re-enrolled with labels %s; keeping its enrolled labels %s",
                    challenge.device_id,
                    challenge.labels,
                    device.labels,
                )
            count = self.store.bump_enrollment(challenge.device_id, device.labels)
            log.info("device %s re-enrolled (%d times)", challenge.device_id, count)
            return EnrollmentResult(challenge.device_id, EnrollmentOutcome.REENROLLED, count)
        self.store.set_pending_ak(challenge.device_id, challenge.ak_public, challenge.ak_name)
        log.warning(
            "device %s presented a new AK %s: waiting for operator approval",
            challenge.device_id,
            challenge.ak_name.hex(),
        )
        raise errors.ApprovalRequired(
            f"device {challenge.device_id} is enrolled with another AK; an operator must run "
            f"'attest-verifier approve-ak {challenge.device_id} {challenge.ak_name.hex()}'"
        )

    def approve_ak(self, device_id: str, ak_name_hex: str) -> None:
        try:
            ak_name = bytes.fromhex(ak_name_hex)
        except ValueError as exc:
            raise errors.MalformedEvidence("AK name must be hex") from exc
        if self.store.get_device(device_id) is None:
            raise errors.UnknownDevice(f"no enrolled device {device_id}")
        if not self.store.approve_pending_ak(device_id, ak_name):
            raise errors.EnrollmentRefused(
                f"device {device_id} has no pending AK named {ak_name_hex}"
            )
        with self._ak_lock:
            self._ak_cache.pop(device_id, None)
        log.warning("operator approved AK %s for device %s", ak_name_hex, device_id)

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
            previous=self.store.latest_verdict(device.device_id),
            ek_not_after=device.ek_not_after,
            limits=self.settings.limits,
            log_cache=self._log_cache,
        )
        verdict = appraise(evidence, ctx, now)
        stored = self.store.add_verdict(verdict)
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
        return stored, self.token_for(stored, device=device)

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

    def _ak(self, device: DeviceRecord) -> EnrolledAk:
        with self._ak_lock:
            cached = self._ak_cache.get(device.device_id)
        if cached is not None and cached.ak_public == device.ak_public:
            return cached
        entry = EnrolledAk(device.ak_public, parse_tpm2b_public(device.ak_public))
        with self._ak_lock:
            self._ak_cache[device.device_id] = entry
        return entry


def _device_from(challenge: EnrollmentChallenge, now: float) -> DeviceRecord:
    return DeviceRecord(
        device_id=challenge.device_id,
        ek_public=challenge.ek_public,
        ek_certificate=challenge.ek_certificate,
        ek_not_after=challenge.ek_not_after,
        ak_public=challenge.ak_public,
        ak_name=challenge.ak_name,
        labels=challenge.labels,
        enrollment_count=1,
        enrolled_at=now,
    )


def _check_size(what: str, data: bytes, limit: int) -> None:
    if len(data) > limit:
        raise errors.LimitExceeded(f"{what} is {len(data)} bytes; the limit is {limit}")


def _check_labels(labels: Mapping[str, str], limits: Limits) -> None:
    if len(labels) > limits.max_labels:
        raise errors.LimitExceeded(f"{len(labels)} labels; the limit is {limits.max_labels}")
    for key, value in labels.items():
        if not key or len(key) > limits.max_label_bytes or len(value) > limits.max_label_bytes:
            raise errors.MalformedEvidence(
                f"label {key[:32]!r} is empty or longer than {limits.max_label_bytes} bytes"
            )


def open_trust(ek_ca: Path | None, allowlist: Path | None) -> tuple[TrustStore, Allowlist]:
    trust = TrustStore.load(ek_ca) if ek_ca else TrustStore.empty()
    allow = Allowlist.load(allowlist) if allowlist else Allowlist.empty()
    return trust, allow
