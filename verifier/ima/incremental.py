"""Incremental IMA attestation: per device and boot, what was accepted and where PCR 10 was.

The agent sends the entries appended since its last accepted attestation with their starting
offset; ``advance`` chains them from the stored ``IncrementalState``, so an attestation costs
what is new. Decisions, in order:

1. Offset 0 (the whole log): it must replay to the quoted PCR 10 (else ``ReplayMismatch``:
   tampered). When a state of the same boot, bank and policy exists, the log must also pass
   through it: covering fewer entries than were accepted is a truncated history, a different
   running value at the accepted count a rewritten one (``ReplayMismatch``). A full log
   resets findings: the caller re-evaluates every covered entry.
2. Otherwise (offset > 0) ``ImaLogRequired`` when there is no state, the boot epoch, bank or
   policy digest differs, the offset is past the accepted count (a gap), or the offset is
   before it and not at a retained checkpoint or the overlap does not replay to the accepted
   value (an overlap that disagrees); and when the new entries do not chain from the
   accepted value to the quoted PCR 10. ``ImaLogRequired`` never accepts anything: the
   whole log that must follow decides.
3. The new state covers the shortest prefix that reaches the quoted value (the quote may
   lag the list); entries after it are ``pending`` and must be sent again.

The state is small (no entries are kept) and immutable. ``findings`` carries the reasons of
every entry accepted in this boot, so a contraindicated entry is never forgotten by a later
increment; ``policy_digest`` binds them to the policy that produced them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from verifier.errors import ImaLogRequired, ReplayMismatch
from verifier.ima.parse import ImaEntry, ImaLog
from verifier.ima.replay import ExtendMode, match_quote, replay
from verifier.verdict import Reason, Status

CHECKPOINTS = 4  # earlier (count, PCR 10) pairs kept, so a lost response can be retried


@dataclass(frozen=True)
class IncrementalState:
    """What a verifier keeps per device between attestations of one boot."""

    boot_id: str  # the boot epoch, e.g. "<resetCount>:<restartCount>" of the quote
    entry_count: int  # entries accepted (covered by an accepted quote), from entry 0
    bank: str
    pcr10: bytes  # running PCR 10 of ``bank`` after ``entry_count`` entries
    mode: ExtendMode
    policy_digest: str  # the runtime policy the findings were evaluated with
    findings: tuple[Reason, ...] = ()  # reasons of every accepted entry of this boot
    checkpoints: tuple[tuple[int, bytes], ...] = ()  # earlier (count, pcr10), newest first


@dataclass(frozen=True)
class Advance:
    state: IncrementalState  # findings are the stored ones (empty after a full log)
    accepted: tuple[ImaEntry, ...]  # newly accepted entries: evaluate exactly these
    pending: int  # entries sent that the quote does not cover yet
    full_log: bool


def advance(
    state: IncrementalState | None,
    log: ImaLog,
    *,
    boot_id: str,
    bank: str,
    quoted_pcr10: bytes,
    policy_digest: str,
    mode: ExtendMode | None = None,
) -> Advance:
    """The state after ``log`` (whose ``first_index`` is the agent's offset); see the module."""
    if log.first_index == 0:
        return _full(state, log, boot_id, bank, quoted_pcr10, policy_digest, mode)
    if state is None:
        raise ImaLogRequired("no IMA state is stored for this device: send the whole IMA log")
    _same_context(state, boot_id, bank, policy_digest)
    entries, start = _chain_point(state, log)
    try:
        match = match_quote(entries, bank, quoted_pcr10, start=start, mode=state.mode)
    except ReplayMismatch as exc:
        raise ImaLogRequired(
            f"the IMA entries from {log.first_index} do not chain from the {state.entry_count} "
            f"accepted to the quoted PCR 10: send the whole IMA log ({exc})"
        ) from exc
    accepted = tuple(entries[: match.count])
    checkpoints = state.checkpoints
    if match.count:
        checkpoints = ((state.entry_count, state.pcr10), *checkpoints)[:CHECKPOINTS]
    new = replace(
        state,
        entry_count=state.entry_count + match.count,
        pcr10=match.value,
        checkpoints=checkpoints,
    )
    return Advance(new, accepted, len(entries) - match.count, full_log=False)


def _full(
    state: IncrementalState | None,
    log: ImaLog,
    boot_id: str,
    bank: str,
    quoted: bytes,
    policy_digest: str,
    mode: ExtendMode | None,
) -> Advance:
    same_boot = state is not None and state.boot_id == boot_id and state.bank == bank
    if same_boot and state is not None and mode is None:
        mode = state.mode
    match = match_quote(log.entries, bank, quoted, mode=mode)
    if same_boot and state is not None:
        if match.count < state.entry_count:
            raise ReplayMismatch(
                f"truncated IMA history: the quote covers {match.count} entries, "
                f"{state.entry_count} were already accepted in this boot"
            )
        before = replay(log.entries[: state.entry_count], bank, match.mode)
        if before != state.pcr10:
            raise ReplayMismatch(
                f"rewritten IMA history: after the {state.entry_count} entries accepted in "
                f"this boot PCR 10 was {state.pcr10.hex()}, this log gives {before.hex()}"
            )
    new = IncrementalState(
        boot_id=boot_id,
        entry_count=match.count,
        bank=bank,
        pcr10=match.value,
        mode=match.mode,
        policy_digest=policy_digest,
    )
    accepted = log.entries[: match.count]
    return Advance(new, accepted, len(log.entries) - match.count, full_log=True)


def _same_context(state: IncrementalState, boot_id: str, bank: str, policy_digest: str) -> None:
    if state.boot_id != boot_id:
        raise ImaLogRequired(
            f"a new boot ({boot_id}, stored {state.boot_id}): send the whole IMA log"
        )
    if state.bank != bank:
        raise ImaLogRequired(f"the quoted bank is {bank}, the state {state.bank}: whole log")
    if state.policy_digest != policy_digest:
        raise ImaLogRequired("the runtime policy changed: send the whole IMA log")


def _chain_point(state: IncrementalState, log: ImaLog) -> tuple[tuple[ImaEntry, ...], bytes]:
    """The entries past the accepted count, after checking any overlap against a checkpoint."""
    offset, count = log.first_index, state.entry_count
    if offset > count:
        raise ImaLogRequired(
            f"gap in the IMA log: entries from {offset} sent, {count} accepted: whole log"
        )
    if offset == count:
        return log.entries, state.pcr10
    start = dict(state.checkpoints).get(offset)
    overlap = log.entries[: count - offset]
    if start is None or len(overlap) < count - offset:
        raise ImaLogRequired(
            f"IMA entries from {offset} overlap the {count} accepted and cannot be checked: "
            "send the whole IMA log"
        )
    if replay(overlap, state.bank, state.mode, start) != state.pcr10:
        raise ImaLogRequired(
            f"IMA entries {offset}-{count - 1} disagree with the accepted ones: whole log"
        )
    return log.entries[count - offset :], state.pcr10


def state_to_dict(state: IncrementalState) -> dict[str, Any]:
    """A JSON-ready form for the store (hex for bytes)."""
    return {
        "boot_id": state.boot_id,
        "entry_count": state.entry_count,
        "bank": state.bank,
        "pcr10": state.pcr10.hex(),
        "mode": state.mode.value,
        "policy_digest": state.policy_digest,
        "findings": [_reason_to_dict(r) for r in state.findings],
        "checkpoints": [[count, value.hex()] for count, value in state.checkpoints],
    }


def state_from_dict(data: dict[str, Any]) -> IncrementalState:
    """The inverse of ``state_to_dict``; ``KeyError``/``ValueError`` on a damaged record."""
    return IncrementalState(
        boot_id=str(data["boot_id"]),
        entry_count=int(data["entry_count"]),
        bank=str(data["bank"]),
        pcr10=bytes.fromhex(data["pcr10"]),
        mode=ExtendMode(data["mode"]),
        policy_digest=str(data["policy_digest"]),
        findings=tuple(_reason_from_dict(r) for r in data["findings"]),
        checkpoints=tuple((int(c), bytes.fromhex(v)) for c, v in data["checkpoints"]),
    )


def _reason_to_dict(reason: Reason) -> dict[str, Any]:
    return {
        "code": reason.code,
        "text": reason.text,
        "severity": reason.severity.value,
        "pcr": reason.pcr,
        "expected": reason.expected,
        "actual": reason.actual,
        "rule": reason.rule,
        "event_index": reason.event_index,
    }


def _reason_from_dict(data: dict[str, Any]) -> Reason:
    return Reason(
        code=str(data["code"]),
        text=str(data["text"]),
        severity=Status(data["severity"]),
        pcr=data["pcr"],
        expected=str(data["expected"]),
        actual=str(data["actual"]),
        rule=str(data["rule"]),
        event_index=data["event_index"],
    )
