"""One attestation's IMA appraisal: parse, chain, check boot_aggregate, evaluate the policy.

Order: the log bytes parse (``ImaLogError``) with their entries numbered from ``offset``;
``incremental.advance`` chains them to the quoted PCR 10 (``ReplayMismatch`` for a tampered
whole log, ``ImaLogRequired`` when the whole log is needed); a whole log must cover at least
its ``boot_aggregate``, which must match the quoted PCRs 0-7 or 0-9 (``ReplayMismatch``);
then the runtime policy evaluates exactly the newly accepted entries, and their reasons are
added to the boot's stored findings. The returned reasons are all the findings of the boot,
so a later increment never hides an earlier contraindicated entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from verifier.errors import ReplayMismatch
from verifier.ima.incremental import Advance, IncrementalState, advance
from verifier.ima.parse import IMA_PCR, parse_measurement_list
from verifier.ima.policy import RuntimePolicy
from verifier.ima.replay import BootAggregateMatch, ExtendMode, check_boot_aggregate
from verifier.limits import DEFAULT_LIMITS, Limits
from verifier.verdict import Reason

MAX_FINDINGS = 256  # stored reasons per boot; more are summarised in one reason


@dataclass(frozen=True)
class ImaAppraisal:
    state: IncrementalState  # store it for the device (replacing the previous one)
    reasons: tuple[Reason, ...]  # every finding of this boot so far
    new_entries: int  # entries accepted by this attestation
    pending: int  # entries sent that the quote does not cover yet: send them again
    full_log: bool
    boot_aggregate: BootAggregateMatch | None  # set when the whole log was sent


@dataclass(frozen=True)
class Accepted:
    """What one attestation's IMA list adds to the boot, before any policy is applied."""

    step: Advance  # the new state (stored findings kept) and the newly accepted entries
    boot_aggregate: BootAggregateMatch | None  # set when the whole log was sent


def accept_ima(
    log: bytes,
    offset: int,
    *,
    state: IncrementalState | None,
    boot_id: str,
    bank: str,
    quoted: Mapping[str, Mapping[int, bytes]],
    template_hash_alg: str,
    policy_digest: str,
    mode: ExtendMode | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> Accepted:
    """Parse, chain to the quoted PCR 10 and (a whole log) check boot_aggregate: the first
    three steps of the module's order, raising as it says. The appraisal and the rebuild of
    a boot's entries from the attestation history (``verifier.ima.held``) both use it."""
    pcr10 = quoted.get(bank, {}).get(IMA_PCR)
    if pcr10 is None:
        raise ReplayMismatch(f"the quote does not include {bank} PCR 10")
    parsed = parse_measurement_list(
        log, template_hash_alg=template_hash_alg, first_index=offset, limits=limits
    )
    step = advance(
        state,
        parsed,
        boot_id=boot_id,
        bank=bank,
        quoted_pcr10=pcr10,
        policy_digest=policy_digest,
        mode=mode,
    )
    aggregate = None
    if step.full_log:
        if not step.accepted:
            raise ReplayMismatch("the quoted PCR 10 covers no IMA entry, not even boot_aggregate")
        aggregate = check_boot_aggregate(step.accepted[0], quoted)
    return Accepted(step, aggregate)


def appraise_ima(
    log: bytes,
    offset: int,
    *,
    state: IncrementalState | None,
    boot_id: str,
    bank: str,
    quoted: Mapping[str, Mapping[int, bytes]],
    policy: RuntimePolicy,
    mode: ExtendMode | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> ImaAppraisal:
    """See the module. ``quoted`` maps bank -> PCR -> value and must hold ``bank`` PCR 10."""
    accepted = accept_ima(
        log,
        offset,
        state=state,
        boot_id=boot_id,
        bank=bank,
        quoted=quoted,
        template_hash_alg=policy.template_hash_alg,
        policy_digest=policy.digest,
        mode=mode,
        limits=limits,
    )
    step = accepted.step
    found = policy.evaluate(step.accepted)
    findings = merge_findings(step.state.findings, found)
    new_state = replace(step.state, findings=findings)
    return ImaAppraisal(
        state=new_state,
        reasons=findings,
        new_entries=len(step.accepted),
        pending=step.pending,
        full_log=step.full_log,
        boot_aggregate=accepted.boot_aggregate,
    )


def merge_findings(stored: tuple[Reason, ...], found: tuple[Reason, ...]) -> tuple[Reason, ...]:
    """``stored`` then ``found``, at most ``MAX_FINDINGS`` listed; the rest counted in one
    ``ima_findings_truncated`` reason of the worst severity among them."""
    if not found:
        return stored
    merged = [r for r in stored if r.code != "ima_findings_truncated"]
    dropped = sum(_dropped(r) for r in stored)
    room = MAX_FINDINGS - len(merged)
    merged.extend(found[:room])
    dropped += max(0, len(found) - room)
    if dropped:
        worst = max((r.severity for r in (*stored, *found)), key=lambda s: s.rank)
        merged.append(
            Reason(
                code="ima_findings_truncated",
                text=f"{dropped} further IMA findings in this boot are not listed",
                severity=worst,
                pcr=IMA_PCR,
                actual=str(dropped),
            )
        )
    return tuple(merged)


def _dropped(reason: Reason) -> int:
    return int(reason.actual) if reason.code == "ima_findings_truncated" else 0
