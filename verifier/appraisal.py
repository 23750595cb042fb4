"""The appraisal core: evidence, the enrollment record, the policy and ``now`` in; a verdict out.

Pure: no gRPC, no store, no clock (``now`` is an argument). The caller has already consumed
the nonce in the store (single use) and passes what was issued with it.

Order:
1. The evidence is for the device the nonce was issued to, and the bank is allowed (a SHA-1
   bank only where the profile says ``allow_sha1``): else raise.
2. ``quote.check_quote``: signature by the enrolled AK, TPM_GENERATED, ATTEST_QUOTE, extraData
   is the nonce, signed selection is the requested one, PCR values hash to pcrDigest: else
   raise. Nothing is recorded for evidence that cannot be attributed to the device.
3. From here on findings are collected, not raised:
   - boot counters and clock against the previous verdict (a resetCount or restartCount that
     goes backwards, a clock that goes backwards within one boot: contraindicated;
     ``safe = 0`` after an unclean power loss: a warning);
   - the event log, replayed against the quoted PCRs (facts only from PCRs the quote covers
     and the log reproduces), then the golden profile's releases: ``evidence_policy``, the
     same code the operators' explain, dry run and learn use;
   - with a runtime policy (``profile.runtime``), the IMA log: ``verifier.ima.appraise``
     chains the sent entries from the stored ``IncrementalState`` (passed in, the new one
     returned: the caller stores it) to the quoted PCR 10 and evaluates the new entries.
     PCR 10 not quoted or no log sent: contraindicated; a log that does not parse or
     replay: contraindicated (the state is not advanced). ``ImaLogRequired`` (the verifier
     cannot chain what was sent) is raised: no verdict, the agent sends the whole log.
     An IMA log sent for a profile without a runtime policy is refused before anything.
4. The status is the worst reason's; the verdict expires at the earliest of now + the
   profile's lifetime, the matched release's ``not_after`` and the EK certificate's notAfter.
"""

from __future__ import annotations

from dataclasses import dataclass

from verifier import errors
from verifier.evidence import Evidence
from verifier.golden.evidence_policy import LogAppraisalCache, evaluate_boot
from verifier.golden.model import Profile
from verifier.ima.appraise import ImaAppraisal, appraise_ima
from verifier.ima.incremental import IncrementalState
from verifier.ima.parse import IMA_PCR
from verifier.limits import DEFAULT_LIMITS, Limits
from verifier.quote import CheckedQuote, ClockInfo, check_quote
from verifier.records import IssuedNonce
from verifier.verdict import BootEpoch, Reason, Status, Verdict, worst


@dataclass(frozen=True)
class AppraisalContext:
    ak_public_key: object  # cryptography public key of the enrolled AK
    ak_hash: str | None  # the AK scheme's hash ("sha256"), None when the key has none
    issued: IssuedNonce
    profile: Profile
    golden_digest: str
    previous: Verdict | None  # the device's latest verdict, for counter checks
    ek_not_after: float | None
    limits: Limits = DEFAULT_LIMITS
    log_cache: LogAppraisalCache | None = None  # memo of the pure log appraisal
    ima_state: IncrementalState | None = None  # the device's stored IMA state, if any


@dataclass(frozen=True)
class Appraised:
    verdict: Verdict
    ima: ImaAppraisal | None  # set when the IMA log was appraised: store ``ima.state``


def appraise(evidence: Evidence, ctx: AppraisalContext, now: float) -> Verdict:
    return appraise_evidence(evidence, ctx, now).verdict


def appraise_evidence(evidence: Evidence, ctx: AppraisalContext, now: float) -> Appraised:
    """The verdict, and the IMA appraisal whose state the caller stores (see the module)."""
    _check_request(evidence, ctx)
    quote = check_quote(
        attest_bytes=evidence.quote,
        signature_bytes=evidence.signature,
        pcr_values=evidence.pcr_values,
        ak_public_key=ctx.ak_public_key,
        ak_hash=ctx.ak_hash,
        nonce=ctx.issued.nonce,
        bank=ctx.issued.bank,
        pcrs=ctx.issued.pcrs,
    )
    reasons = list(counter_reasons(quote.clock_info, ctx.previous))
    boot_pcrs = quote.pcrs
    if ctx.profile.runtime is not None:  # PCR 10 is the IMA log's; the releases never read it
        boot_pcrs = {i: v for i, v in quote.pcrs.items() if i != IMA_PCR}
    policy = evaluate_boot(
        ctx.profile,
        evidence.event_log,
        quote.bank,
        boot_pcrs,
        now,
        ctx.limits,
        ctx.log_cache,
        evidence.log_digest,
    )
    reasons.extend(policy.reasons)
    ima = None
    if ctx.profile.runtime is not None:
        ima_reasons, ima = _runtime(evidence, quote, ctx)
        reasons.extend(ima_reasons)
    outcome = policy.outcome
    verdict = Verdict(
        device_id=evidence.device_id,
        status=worst(reasons),
        reasons=tuple(reasons),
        profile=ctx.profile.name,
        release=outcome.release,
        golden_digest=ctx.golden_digest,
        boot_epoch=BootEpoch(quote.clock_info.reset_count, quote.clock_info.restart_count),
        issued_at=now,
        expires_at=_expiry(ctx, outcome.release, now),
        firmware_version=quote.firmware_version,
        clock=quote.clock_info.clock,
        safe=quote.clock_info.safe,
    )
    return Appraised(verdict, ima)


def boot_id(clock: ClockInfo) -> str:
    """The IMA boot epoch: a TPM reset or restart starts a new measurement list."""
    return f"{clock.reset_count}:{clock.restart_count}"


def _runtime(
    evidence: Evidence, quote: CheckedQuote, ctx: AppraisalContext
) -> tuple[tuple[Reason, ...], ImaAppraisal | None]:
    policy = ctx.profile.runtime
    assert policy is not None
    if IMA_PCR not in quote.pcrs:
        return (_ima_reason("ima_pcr_not_quoted", "the quote does not cover PCR 10"),), None
    if not evidence.ima_log and evidence.ima_offset == 0:
        text = (
            f"profile {ctx.profile.name} has a runtime policy and PCR 10 was quoted, but no "
            "IMA log was sent: what ran after boot cannot be appraised"
        )
        return (_ima_reason("ima_log_missing", text),), None
    try:
        result = appraise_ima(
            evidence.ima_log,
            evidence.ima_offset,
            state=ctx.ima_state,
            boot_id=boot_id(quote.clock_info),
            bank=quote.bank,
            quoted={quote.bank: quote.pcrs},
            policy=policy,
            limits=ctx.limits,
        )
    except errors.ImaLogError as exc:
        return (_ima_reason("ima_log_malformed", f"IMA log rejected: {exc}"),), None
    except errors.ReplayMismatch as exc:
        return (_ima_reason("ima_replay_mismatch", str(exc), quote.pcrs[IMA_PCR].hex()),), None
    return result.reasons, result


def _ima_reason(code: str, text: str, expected: str = "") -> Reason:
    return Reason(code=code, text=text, pcr=IMA_PCR, expected=expected, rule="runtime")


def _check_request(evidence: Evidence, ctx: AppraisalContext) -> None:
    if evidence.device_id != ctx.issued.device_id:
        raise errors.NonceMismatch("the nonce was issued to another device")
    if ctx.profile.runtime is None and (evidence.ima_log or evidence.ima_offset):
        raise errors.MalformedEvidence(
            f"an IMA log was sent, but profile {ctx.profile.name} has no runtime policy and "
            "would not appraise it: stop sending it (attest-agent --no-ima-log) or add a "
            "runtime: section to the profile"
        )
    if ctx.issued.bank == "sha1" and not ctx.profile.allow_sha1:
        raise errors.PolicyViolation(
            f"profile {ctx.profile.name} does not allow the SHA-1 bank (set allow_sha1)"
        )


def counter_reasons(clock: ClockInfo, previous: Verdict | None) -> list[Reason]:
    """Boot counters and clock against the previous verdict; ``safe = 0`` as a warning."""
    reasons = []
    if not clock.safe:
        reasons.append(
            Reason(
                code="unclean_power_loss",
                text="clockInfo.safe is 0: the TPM lost power without an orderly shutdown, "
                "so its clock may have gone back; attest again after a clean boot",
                severity=Status.WARNING,
                rule="clock.safe",
            )
        )
    if previous is None:
        return reasons
    before = (previous.boot_epoch.reset_count, previous.boot_epoch.restart_count)
    now = (clock.reset_count, clock.restart_count)
    if now < before:
        reasons.append(
            Reason(
                code="boot_counter_rollback",
                text="resetCount/restartCount went backwards since the previous quote "
                "(replayed state or a different TPM)",
                expected=f">= reset {before[0]} restart {before[1]}",
                actual=f"reset {now[0]} restart {now[1]}",
                rule="clock.counters",
            )
        )
    elif now == before and clock.clock < previous.clock:
        reasons.append(
            Reason(
                code="clock_rollback",
                text="the TPM clock went backwards within one boot",
                expected=f">= {previous.clock}",
                actual=str(clock.clock),
                rule="clock.clock",
            )
        )
    return reasons


def _expiry(ctx: AppraisalContext, release_name: str, now: float) -> float:
    bounds = [now + ctx.profile.verdict_lifetime]
    release = ctx.profile.release(release_name) if release_name else None
    if release is not None and release.not_after is not None:
        bounds.append(release.not_after)
    if ctx.ek_not_after is not None:
        bounds.append(ctx.ek_not_after)
    return max(now, min(bounds))
