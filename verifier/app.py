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
from dataclasses import dataclass, replace
from pathlib import Path

from verifier import errors, lifecycle
from verifier.appraisal import AppraisalContext, Appraised, appraise_evidence
from verifier.auditlog import attestation_record, record_operator_action
from verifier.clock import ClockGuard, Doubt, Reading
from verifier.clockshare import SharedAcknowledgement
from verifier.currency import AK_NAME, Currency, Revocations, currency
from verifier.enrollment.crl import CertificateRevoked, CrlSet
from verifier.enrollment.ekchain import (
    Allowlist,
    Certificate,
    TrustStore,
    parse_certificate,
    verify_path,
)
from verifier.enrollment.flow import Enrollment
from verifier.enrollment.policy import EnrollmentPolicy
from verifier.enrollment.tpmpublic import TpmPublic, parse_tpm2b_public
from verifier.evidence import Evidence
from verifier.golden.evidence_policy import LogAppraisalCache
from verifier.golden.load import load_golden_texts
from verifier.golden.model import Profile
from verifier.golden.whatif import DryRunReport, Explanation, dry_run, explain
from verifier.ima.incremental import IncrementalState, state_from_dict, state_to_dict
from verifier.imahistory import held_for_explain, held_for_fleet
from verifier.limits import DEFAULT_LIMITS, Limits
from verifier.livecrl import LiveCrls
from verifier.livegolden import LiveGolden, ReloadResult
from verifier.metrics import Coverage, FreshnessFailure, VerifierMetrics
from verifier.observe import coverage_of
from verifier.rollout import RolloutDecision, check_rollout
from verifier.store.base import (
    DeviceRecord,
    ImaStateRecord,
    IssuedNonce,
    Store,
    StoredEvidence,
)
from verifier.store.instrumented import instrument
from verifier.token import KeyRing, TokenExpired, issue_token
from verifier.verdict import BootEpoch, Freshness, Verdict

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


FULL_SWEEP_EVERY = 300.0  # seconds: a full supersession sweep at least this often
SWEEPS_AFTER_CHANGE = 3  # sweeps after a change is seen (verdicts stored in the meantime)


@dataclass(frozen=True)
class Attested:
    verdict: Verdict  # as stored
    currency: Currency  # decided with the device and revocations the appraisal was admitted on
    token: str
    ima_entries: int  # IMA entries accepted in this boot: the agent's next ima_offset


@dataclass(frozen=True)
class VerifierSettings:
    nonce_ttl: float = 60.0
    enrollment_ttl: float = 120.0
    issuer: str = "fleet-attest"  # the tokens' ``iss``
    limits: Limits = DEFAULT_LIMITS
    enrollment_policy: EnrollmentPolicy = EnrollmentPolicy.APPROVE
    token_ttl: float | None = None  # seconds; a token lives at most this long (None: no bound)
    crl_stale: str = "fail"  # "fail" or "warn": a CRL past its nextUpdate


@dataclass(frozen=True)
class EnrolledAk:
    """The parsed AK of a device, cached: parsing a TPM2B_PUBLIC costs more than a quote check."""

    ak_public: bytes
    parsed: TpmPublic


class NoClockDiscipline(errors.AttestationError):
    """A clock acknowledgement for a verifier built without a clock guard (tests, tools)."""


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
        crls: LiveCrls | None = None,
        metrics: VerifierMetrics | None = None,
        clock_guard: ClockGuard | None = None,
        reading: Callable[[], Reading] | None = None,
        clock_peers: SharedAcknowledgement | None = None,
    ) -> None:
        """``metrics``: the process's one ``VerifierMetrics`` (a private one by default);
        every store call goes through ``verifier.store.instrumented`` and is timed on it.
        ``clock_guard`` and ``reading``: clock discipline (``verifier.clock``; ``serve`` gives
        both): while the guard is in doubt nothing is current, no token is signed, and no
        challenge or verdict is issued (``ClockInDoubt``). Without them the wall clock
        ``clock`` is trusted as it is (the simulator moves it on purpose). ``clock_peers``:
        the acknowledgement shared with the other workers of ``serve --processes N``."""
        self.clock_guard = clock_guard
        self._reading = reading
        self._clock_peers = clock_peers
        # An acknowledgement made before this worker started is not for its guard.
        self._peer_ack_seen = clock_peers.latest().generation if clock_peers is not None else 0
        self.metrics = metrics if metrics is not None else VerifierMetrics()
        store = instrument(store, self.metrics)
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
        self._swept_key: tuple[object, ...] | None = None
        self._sweeps_pending = 0
        self._next_full_sweep = 0.0
        self.crls = crls or LiveCrls(None, trust, CrlSet.empty())
        self._paths: dict[tuple[str, bytes], tuple[Certificate, ...]] = {}
        self.enrollment = Enrollment(
            store,
            trust,
            allowlist,
            clock,
            settings.enrollment_ttl,
            settings.limits,
            policy=settings.enrollment_policy,
            crls=self.crls.current,
            crl_stale=settings.crl_stale,
            open_profile=self._open_profile,
        )
        live = golden.current()
        self.metrics.golden_reload(True, live.profile_set.digest, live.loaded_at)
        golden.on_reload = self._golden_reloaded

    def _golden_reloaded(self, result: ReloadResult) -> None:
        ok = not result.problems
        self.metrics.golden_reload(ok, result.digest, self.golden.current().loaded_at)

    # ------------------------------------------------------------ attestation

    def clock_doubt(self) -> str | None:
        """Take a clock reading; why the wall clock is not trusted now, or None."""
        if self.clock_guard is None or self._reading is None:
            return None
        was = self.clock_guard.reason
        reading = self._reading()
        self._take_peer_acknowledgement(reading.epoch)
        self.clock_guard.observe(reading)
        now = self.clock_guard.reason
        if now is not None and was is None:
            log.error("the wall clock is in doubt (%s): vouching for nothing until it settles", now)
            self.metrics.clock_doubt(True)
        elif now is None and was is not None:
            log.warning("the wall clock is trusted again (it was: %s)", was)
            self.metrics.clock_doubt(False)
        return now

    def _take_peer_acknowledgement(self, epoch: str) -> None:
        """Another worker's operator acknowledged the clock: the same baseline here."""
        if self._clock_peers is None or self.clock_guard is None:
            return
        published = self._clock_peers.latest()
        if published.generation == self._peer_ack_seen:
            return
        self._peer_ack_seen = published.generation
        self.clock_guard.acknowledge(Reading(published.wall, published.mono, epoch))
        log.warning("the wall clock was acknowledged by an operator through another worker")

    def clock_state(self) -> Doubt | None:
        """After a fresh reading: why this process doubts its wall clock, or None."""
        self.clock_doubt()
        return self.clock_guard.doubt if self.clock_guard is not None else None

    def acknowledge_clock(self, actor: str, reason: str) -> tuple[str | None, int]:
        """An operator asserts the wall clock is right now: the doubt of this process is
        cleared (``ClockGuard.acknowledge``) once the action is in the audit log (a failed
        append clears nothing). Returns the doubt cleared (None: there was none) and the
        entry's audit position."""
        if self.clock_guard is None or self._reading is None:
            raise NoClockDiscipline("this verifier runs without clock discipline")
        why = lifecycle.check_reason(reason, self.settings.limits)
        cleared = self.clock_doubt()
        reading = self._reading()
        position = record_operator_action(
            self.store,
            actor,
            "acknowledge clock",
            {"reason": why, "cleared": cleared or "", "wall_time": int(reading.wall)},
            reading.wall,
        )
        self.clock_guard.acknowledge(reading)
        if self._clock_peers is not None:
            self._peer_ack_seen = self._clock_peers.publish(reading)
        self.metrics.clock_acknowledged()
        self.metrics.clock_doubt(False)
        log.warning("%s acknowledged the wall clock (%s); doubt cleared: %s", actor, why, cleared)
        return cleared, position

    def _refuse_in_doubt(self) -> None:
        doubt = self.clock_doubt()
        if doubt is not None:
            raise errors.ClockInDoubt(
                f"the verifier's clock is in doubt ({doubt}); retry later (operators: check NTP)"
            )

    def get_challenge(self, device_id: str) -> ChallengeIssued:
        self._refuse_in_doubt()
        device = self._device(device_id)
        self._check_may_attest(device)
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

    def attest(self, evidence: Evidence, *, want_token: bool = True) -> tuple[Verdict, str]:
        """Appraise and store: the stored verdict and, when ``want_token``, its token."""
        attested = self.attest_evidence(evidence, want_token=want_token)
        return attested.verdict, attested.token

    def attest_evidence(self, evidence: Evidence, *, want_token: bool = True) -> Attested:
        """Appraise, store (the verdict with its attestation and audit entry, then the device's
        new IMA state) and, when ``want_token``, sign.

        The IMA state is written after the verdict: a crash in between loses the state, and
        the device's next increment is answered with ``ImaLogRequired`` (fail safe)."""
        self._refuse_in_doubt()
        device = self._device(evidence.device_id)
        revocations = self._check_may_attest(device)
        now = self.clock()
        issued = self.store.consume_nonce(evidence.device_id, evidence.nonce, now)
        if issued is None:
            # The store cannot tell expired from reused from never issued: one kind.
            self.metrics.freshness_failure(FreshnessFailure.NONCE_REJECTED)
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
        previous = self._previous(device)
        ctx = AppraisalContext(
            ak_public_key=ak.public_key,
            ak_hash=ak.signing_hash,
            issued=issued,
            profile=profile,
            golden_digest=golden.profile_set.digest,
            previous=previous,
            ek_not_after=device.ek_not_after,
            limits=self.settings.limits,
            log_cache=self._log_cache,
            ima_state=self._ima_state(device.device_id) if profile.runtime else None,
        )
        started = time.perf_counter()
        try:
            appraised = appraise_evidence(evidence, ctx, now)
        except errors.StaleEvidence:
            self.metrics.freshness_failure(FreshnessFailure.STALE_EVIDENCE)
            raise
        finally:
            self.metrics.appraisal_seconds(time.perf_counter() - started)
        verdict = appraised.verdict
        verdict = replace(verdict, extra={**verdict.extra, AK_NAME: device.ak_name.hex()})
        prior = "" if ctx.ima_state is None else json.dumps(state_to_dict(ctx.ima_state))
        stored = self._store_verdict(verdict, evidence, device, issued, previous, now, prior)
        self.metrics.attestation(stored.status, [r.code for r in stored.reasons])
        ima_entries = self._keep_ima_state(device.device_id, appraised, now)
        with self._verdict_added:
            self._verdict_added.notify_all()
        log.info(
            "device %s: %s (profile %s, release %s, %d reasons)",
            device.device_id,
            stored.status.value,
            stored.profile,
            stored.release or "-",
            len(stored.reasons),
            extra={
                "device_id": device.device_id,
                "verdict_id": stored.verdict_id,
                "status": stored.status.value,
                "reasons": [r.code for r in stored.reasons],
            },
        )
        current = self.currency_of(stored, device, stored.boot_epoch, revocations)
        token = self.token_for(stored, device=device, current=current) if want_token else ""
        return Attested(stored, current, token, ima_entries)

    def _store_verdict(
        self,
        verdict: Verdict,
        evidence: Evidence,
        device: DeviceRecord,
        issued: IssuedNonce,
        previous: Verdict | None,
        now: float,
        ima_state: str = "",
    ) -> Verdict:
        """The verdict with its attestation, audit entry and the device's latest evidence (for
        golden dry runs) in one store transaction (``ima_state``: the IMA state, JSON, the
        appraisal started from: kept for replay). Evidence over the stored-size limit is not
        kept (logged); the verdict and its entry still are."""
        record = attestation_record(evidence, device, issued, previous, now, ima_state)
        latest = StoredEvidence(
            device_id=device.device_id,
            received_at=now,
            bank=issued.bank,
            pcrs=dict(evidence.pcr_values),
            event_log=evidence.event_log,
            labels=device.labels,
        )
        try:
            return self.store.add_verdict(verdict, record, latest)
        except errors.LimitExceeded as exc:  # still audited: the entry, without the body
            log.warning("evidence of %s not kept: %s", device.device_id, exc)
            return self.store.add_verdict(verdict)

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

    # ------------------------------------------------------------ queries

    def latest_verdict(self, device_id: str) -> tuple[Verdict, Currency]:
        device = self._device(device_id)
        verdict = self.store.latest_verdict(device_id)
        if verdict is None:
            raise errors.UnknownDevice(f"device {device_id} has no verdict yet")
        return verdict, self.currency_of(verdict, device, verdict.boot_epoch)

    def revocations(self, device: DeviceRecord | None = None) -> Revocations:
        """The store's standing revocations; for ``device``, only those that can concern it
        (``Store.revocations_of``: as good as all of them for every question about it) and
        whether its EK certificate can be checked now (a stale CRL under ``--crl-stale
        fail``: undecidable)."""
        if device is None:
            return Revocations.from_records(self.store.revocations())
        undecidable = {}
        problem = self._certificate_problem(device)
        if problem:
            undecidable[device.device_id] = problem
        records = self.store.revocations_of(device.device_id, device.ak_name.hex())
        return Revocations.from_records(records, undecidable)

    def currency_of(
        self,
        verdict: Verdict,
        device: DeviceRecord | None = None,
        latest_epoch: BootEpoch | None = None,
        revocations: Revocations | None = None,
    ) -> Currency:
        """The one decision (``verifier.currency``) with what this verifier knows: the live
        golden set, the revocations, the device's bound profile and latest boot epoch."""
        if verdict.supersession:
            return Currency(Freshness.SUPERSEDED, verdict.supersession)
        if self.clock_guard is not None:
            self.clock_guard.check_issued_at(verdict.issued_at)  # one in our future: doubt
        if device is None:
            device = self.store.get_device(verdict.device_id)
        if latest_epoch is None:
            latest = self.store.latest_verdict(verdict.device_id)
            latest_epoch = latest.boot_epoch if latest else None
        return currency(
            verdict,
            self.clock(),
            golden=self.golden.current().profile_set,
            revocations=revocations or self.revocations(device),
            latest_epoch=latest_epoch,
            profile=device.profile or None if device else None,
            clock_doubt=self.clock_doubt(),
        )

    def token_for(
        self,
        verdict: Verdict,
        nonce: bytes | None = None,
        device: DeviceRecord | None = None,
        current: Currency | None = None,
    ) -> str:
        """The verdict as a freshly signed EAR token (``nonce`` echoed as ``eat_nonce``).

        ``exp`` is the earliest of the verdict's expiry, the release's ``not_after``, the
        EK certificate's notAfter and now + ``token_ttl``. Empty unless the verdict is current
        (``currency``): there is nothing to vouch for.
        """
        if device is None:
            device = self.store.get_device(verdict.device_id)
        if current is None:
            current = self.currency_of(verdict, device)
        if not current.current:
            return ""
        profile = self.golden.current().profile_set.profile(verdict.profile)
        release = profile.release(verdict.release) if profile and verdict.release else None
        now = self.clock()
        ttl = self.settings.token_ttl
        try:
            return issue_token(
                verdict,
                self.keyring.signing_key,
                issuer=self.settings.issuer,
                now=now,
                release_not_after=release.not_after if release else None,
                ek_not_after=device.ek_not_after if device else None,
                nonce=nonce,
                not_after=now + ttl if ttl else None,
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
        device = self._device(device_id)
        verdict = self.store.latest_verdict(device_id)
        if verdict is None:
            decision = check_rollout(None, None, None, target, max_age, self.clock())
        else:
            profile = self.golden.current().profile_set.profile(verdict.profile)
            current = self.currency_of(verdict, device, verdict.boot_epoch)
            decision = check_rollout(verdict, current, profile, target, max_age, self.clock())
        self.metrics.rollout_decision(decision.allow, [r.code for r in decision.reasons])
        return decision, verdict

    def verdicts_after(
        self, sequence: int, device_ids: Sequence[str] = (), profile: str = ""
    ) -> Sequence[Verdict]:
        return self.store.verdicts_after(sequence, device_ids, profile)

    def notify_watchers(self) -> None:
        with self._verdict_added:
            self._verdict_added.notify_all()

    def wait_for_verdicts(self, timeout: float) -> None:
        """Block until this process stores a verdict or ``timeout`` passes (other replicas'
        verdicts are found by the caller's next poll)."""
        with self._verdict_added:
            self._verdict_added.wait(timeout)

    def explain(self, device_id: str, ima_log: bytes | None = None) -> Explanation:
        """Every rule of every release against the device's latest evidence, and the runtime
        entries held for its current boot (or the operator's ``ima_log``) (operators)."""
        self._device(device_id)
        evidence = self.store.latest_evidence(device_id)
        if evidence is None:
            raise errors.UnknownDevice(f"device {device_id} has no stored evidence yet")
        golden = self.golden.current().profile_set
        limits = self.settings.limits
        held = held_for_explain(self.store, evidence, golden, limits, ima_log)
        return explain(evidence, golden, self.clock(), limits, held)

    def dry_run(self, files: Mapping[str, str]) -> DryRunReport:
        """A proposed golden set against every device's latest evidence and held runtime
        entries; changes nothing.

        Raises ``GoldenError`` (with every problem) when the proposed set is invalid.
        """
        limits = self.settings.limits
        proposed = load_golden_texts(files, limits)
        current = self.golden.current().profile_set
        evidences = self.store.all_latest_evidence()
        held = held_for_fleet(self.store, evidences, (current, proposed), limits)
        return dry_run(evidences, current, proposed, self.clock(), limits, held)

    def devices(self) -> Sequence[DeviceRecord]:
        return self.store.list_devices()

    # ------------------------------------------------------------ operators own the fleet

    def approve_device(self, device_id: str, profile: str, actor: str, reason: str = "") -> None:
        self._device(device_id)
        self._known_profile(profile)
        lifecycle.approve_device(self.store, device_id, profile, actor, self.clock(), reason)

    def set_device_profile(self, device_id: str, profile: str, actor: str, reason: str) -> int:
        self._device(device_id)
        self._known_profile(profile)
        return self._notified(
            lifecycle.set_profile(self.store, device_id, profile, actor, self.clock(), reason)
        )

    def decommission(self, device_id: str, actor: str, reason: str) -> lifecycle.Revoked:
        self._device(device_id)
        done = lifecycle.decommission(self.store, device_id, reason, actor, self.clock())
        self._notified(done.superseded)
        return done

    def deny_ek(self, fingerprint: str, actor: str, reason: str) -> lifecycle.Revoked:
        done = lifecycle.deny_ek(self.store, fingerprint, reason, actor, self.clock())
        self._notified(done.superseded)
        return done

    def undeny_ek(self, fingerprint: str, actor: str, reason: str) -> bool:
        return lifecycle.undeny_ek(self.store, fingerprint, reason, actor, self.clock())

    def revoke_ak(self, device_id: str, ak_name: str, actor: str, reason: str) -> lifecycle.Revoked:
        self._device(device_id)
        done = lifecycle.revoke_ak(self.store, device_id, ak_name, reason, actor, self.clock())
        self._notified(done.superseded)
        return done

    def _known_profile(self, profile: str) -> None:
        if not profile or self.golden.current().profile_set.profile(profile) is None:
            raise errors.PolicyViolation(f"profile {profile!r} is not in the golden set")

    def _notified(self, written: int) -> int:
        if written:
            self.notify_watchers()
        return written

    def sweep(self, *, full: bool = False) -> int:
        """Write a supersession event for every device whose latest verdict stopped being
        current (a golden reload, a release past ``not_after``, a revocation recorded by
        another replica or a CRL); at most one per verdict across replicas. Returns the
        events this call wrote.

        Reading every device's latest verdict is the fleet's size, so a sweep runs only when
        something that can supersede changed (``_supersession_key``: the live golden set,
        the releases past ``not_after``, the CRLs, the store's revocations and device
        changes of every replica), then again on the next ``SWEEPS_AFTER_CHANGE`` calls (a
        verdict admitted just before a revocation and stored just after it), and in any case
        every ``FULL_SWEEP_EVERY`` seconds; ``full`` forces one."""
        self.crls.reload_if_changed()
        key = self._supersession_key()
        tick = time.monotonic()
        if key != self._swept_key:
            self._swept_key = key
            self._sweeps_pending = SWEEPS_AFTER_CHANGE
        if not (full or self._sweeps_pending or tick >= self._next_full_sweep):
            return 0
        self._sweeps_pending = max(0, self._sweeps_pending - 1)
        self._next_full_sweep = tick + FULL_SWEEP_EVERY
        devices = {device.device_id: device for device in self.store.list_devices()}
        written = 0
        for verdict in self.store.latest_unsuperseded_verdicts():
            device = devices.get(verdict.device_id)
            if device is None:
                continue
            state = self.currency_of(verdict, device, verdict.boot_epoch)
            if state.state is not Freshness.SUPERSEDED:
                continue
            if self.store.add_supersession(verdict, state.why) is not None:
                log.warning("verdict of %s superseded: %s", device.device_id, state.why)
                written += 1
        return self._notified(written)

    def _supersession_key(self) -> tuple[object, ...]:
        """What a supersession can follow from, cheaply: equal keys, nothing new to find."""
        golden = self.golden.current().profile_set
        now = self.clock()
        retired = sum(
            1
            for profile in golden.profiles
            for release in profile.releases
            if release.not_after is not None and release.not_after <= now
        )
        return (golden.digest, retired, id(self.crls.current()), self.store.supersession_marker())

    def watch(self, stop: threading.Event, interval: float = 2.0) -> threading.Thread:
        """Sweep every ``interval`` seconds until ``stop`` is set."""

        def loop() -> None:
            while not stop.wait(interval):
                try:
                    self.sweep()
                except errors.StoreUnavailable as exc:  # an outage: one line, no traceback
                    log.warning("supersession sweep skipped (retrying): %s", exc)
                except Exception:  # the sweeper must survive anything; this is a bug
                    log.exception("supersession sweep failed; retrying")

        thread = threading.Thread(target=loop, name="supersession-sweep", daemon=True)
        thread.start()
        return thread

    def coverage(self) -> Coverage:
        """Fleet coverage now: the store's counts, supersession judged by the live golden set."""
        now = self.clock()
        counts = self.store.latest_verdict_counts(now)
        return coverage_of(counts, self.golden.current().profile_set, now)

    # ------------------------------------------------------------ helpers

    def _device(self, device_id: str) -> DeviceRecord:
        if not device_id or len(device_id) > self.settings.limits.max_device_id_bytes:
            raise errors.MalformedEvidence("device_id is empty or too long")
        device = self.store.get_device(device_id)
        if device is None:
            raise errors.UnknownDevice(f"no enrolled device {device_id}; enroll first")
        return device

    def _open_profile(self, labels: Mapping[str, str]) -> str:
        """Under ``open``: the profile the device's labels select at its first enrollment."""
        profile = self.golden.current().profile_set.profile_for(dict(labels))
        return profile.name if profile else ""

    def _profile_for(self, device: DeviceRecord) -> Profile:
        """The profile operators bound the device to (its labels choose nothing)."""
        golden = self.golden.current().profile_set
        if device.profile:
            profile = golden.profile(device.profile)
            if profile is None:
                raise errors.PolicyViolation(
                    f"device {device.device_id} is bound to profile {device.profile!r}, which "
                    "is not in the golden set"
                )
            return profile
        if self.settings.enrollment_policy is EnrollmentPolicy.OPEN:
            found = golden.profile_for(device.labels)
            if found is None:
                raise errors.PolicyViolation(
                    f"no golden profile matches device {device.device_id} labels {device.labels}"
                )
            return found
        raise errors.PolicyViolation(
            f"device {device.device_id} is bound to no profile; an operator must run "
            f"'attest-verifier device set-profile {device.device_id} PROFILE --reason ...'"
        )

    def _check_may_attest(self, device: DeviceRecord) -> Revocations:
        """Refuse a waiting, decommissioned or denied device, a revoked AK, a revoked EK
        certificate (the stored one, against the CRLs now) and an uncheckable one; the
        revocations concerning the device that admitted it (for the verdict's currency)."""
        if not device.approved:
            raise errors.ApprovalRequired(
                f"device {device.device_id} waits for an operator: 'attest-verifier "
                f"approve-device {device.device_id} --profile PROFILE'"
            )
        problem = self._certificate_problem(device)
        ak_name = device.ak_name.hex()
        records = self.store.revocations_of(device.device_id, ak_name)
        revocations = Revocations.from_records(records)
        why = revocations.refusal(device.device_id, ak_name)
        if why is not None:
            raise errors.Revoked(f"device {device.device_id}: {why}")
        if problem:
            raise errors.UntrustedEndorsement(f"device {device.device_id}: {problem}")
        return revocations

    def _certificate_problem(self, device: DeviceRecord) -> str:
        """Check the stored EK certificate's path against the live CRLs. A revoked one is
        recorded (and supersedes the device); returns why it cannot be checked ("" when it
        can: not revoked, or revoked and recorded)."""
        if not device.ek_certificate:
            return ""
        crls = self.crls.current()
        if not crls.by_issuer:
            return ""
        now = self.clock()
        try:
            path = self._path(device, now)
            for warning in crls.check(path, now, self.settings.crl_stale):
                log.warning("device %s: %s (--crl-stale warn)", device.device_id, warning)
        except CertificateRevoked as exc:
            if lifecycle.revoke_certificate(self.store, device.device_id, str(exc), now):
                self.notify_watchers()
        except errors.UntrustedEndorsement as exc:  # a stale CRL, or no path any more
            return str(exc)
        return ""

    def _path(self, device: DeviceRecord, now: float) -> tuple[Certificate, ...]:
        """The stored EK certificate's path (cached per device and certificate)."""
        key = (device.device_id, device.ek_certificate)
        cached = self._paths.get(key)
        if cached is None:
            leaf = parse_certificate(device.ek_certificate, "the stored EK certificate")
            extra = [
                parse_certificate(raw, f"stored intermediate {i}")
                for i, raw in enumerate(device.ek_intermediates)
            ]
            cached = verify_path(leaf, self.trust, now, extra)
            self._paths[key] = cached
        return cached

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
