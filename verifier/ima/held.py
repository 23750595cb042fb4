"""The IMA entries the verifier accepted in a device's boot, rebuilt from its history (pure).

The live verifier keeps per device only a running state (``incremental.IncrementalState``:
count and PCR 10), never the entries. The attestation history keeps, per attestation, the IMA
entries sent (an increment from ``offset``), the quote's PCR values and the state the
appraisal started from. ``rebuild`` replays that history forward with ``appraise.accept_ima``,
the acceptance step of the live appraisal (parse, chain to the quoted PCR 10, boot_aggregate),
so it accepts exactly what the verifier accepted, and trusts the result only when it
reproduces the verifier's running state.

``BootHistory.increments`` are one boot's attestations, oldest first, as far back as the
caller read (``cut`` says why it stopped before the boot's first one, if it did). Order:

1. No running state, or one of another boot than the newest attestation's: nothing of the
   current boot is held (``NO_LIST``). No increments: the running state alone (``STATE_ONLY``,
   or the ``cut`` that hid them).
2. Each whole list (offset 0) is a candidate start, newest first. From it, every later
   increment goes through ``accept_ima`` from the state so far: one that raises is skipped
   (the live verifier did not advance on it either); the whole list itself must be accepted.
   Each later increment's recorded prior state must equal the state the replay reached
   (count and PCR 10), else the history lacks an attestation.
3. The first candidate whose replay ends at the running state's count and PCR 10 gives the
   entries. None does: the ``cut`` when there is one (``PURGED``, ``NOT_KEPT``, ``TOO_LONG``),
   else ``MISMATCH`` (or ``UNREADABLE`` when the lists do not parse with the given template
   hash algorithm).

Nothing is evaluated against a policy here: ``verifier.ima.reappraise`` does that.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from verifier.errors import AttestationError, ImaLogError
from verifier.ima.appraise import accept_ima
from verifier.ima.incremental import IncrementalState
from verifier.ima.parse import ImaEntry, parse_measurement_list
from verifier.limits import DEFAULT_LIMITS, Limits

# Short forms of why entries are not held, for grouping devices in a dry run.
NO_LIST = "no IMA list accepted in the current boot"
STATE_ONLY = "the verifier only has the running state"
PURGED = "history purged by retention"
NOT_KEPT = "attestation evidence not kept"
TOO_LONG = "more attestations in this boot than are read"
MISMATCH = "the history does not reproduce the running state"
UNREADABLE = "the held IMA lists do not parse"
_REBUILD = "(rebuild)"  # the policy digest the replay chains under: one for the whole replay


@dataclass(frozen=True)
class Increment:
    """One stored attestation's IMA evidence, as received."""

    verdict_id: str
    received_at: float
    boot_id: str  # of its quote ("<resetCount>:<restartCount>")
    bank: str
    pcrs: Mapping[int, bytes]  # every PCR value the quote proved
    log: bytes  # the IMA entries sent, from ``offset``
    offset: int
    prior: IncrementalState | None  # the device's state the appraisal started from


@dataclass(frozen=True)
class BootHistory:
    """What the store holds of a device's current boot (see the module)."""

    state: IncrementalState | None  # the verifier's running state of the device
    boot_id: str  # the boot of the device's newest attestation ("" when none is held)
    increments: tuple[Increment, ...]  # that boot's attestations, oldest first
    cut: str = ""  # why older attestations of the boot were not read ("" when none were left)
    cut_kind: str = ""  # its short form (PURGED, NOT_KEPT, TOO_LONG)


@dataclass(frozen=True)
class HeldEntries:
    """The entries of a boot (or an operator's list), or why they cannot be given."""

    entries: tuple[ImaEntry, ...]
    template_hash_alg: str  # the algorithm they were parsed (and their hashes checked) with
    source: str  # where they come from, for the operator
    missing: str = ""  # why the verifier's entries cannot be given ("" when they are)
    kind: str = ""  # the short form of ``missing``
    note: str = ""  # something the operator should know (an increment not accepted)

    @property
    def complete(self) -> bool:
        return not self.missing


def not_held(why: str, kind: str, template_hash_alg: str = "") -> HeldEntries:
    return HeldEntries((), template_hash_alg, "", why, kind)


def rebuild(
    history: BootHistory, template_hash_alg: str, limits: Limits = DEFAULT_LIMITS
) -> HeldEntries:
    """The boot's accepted entries (see the module for the order)."""
    state = history.state
    if state is None:
        return not_held("the verifier holds no IMA state for this device", NO_LIST)
    if history.boot_id and state.boot_id != history.boot_id:
        return not_held(
            f"the verifier accepted no IMA list in the device's current boot {history.boot_id} "
            f"(its IMA state is of boot {state.boot_id})",
            NO_LIST,
        )
    if not history.increments:
        if history.cut:
            return not_held(history.cut, history.cut_kind)
        return not_held(
            f"the verifier has the running state of boot {state.boot_id} ({state.entry_count} "
            "entries) but no attestation of that boot in its history",
            STATE_ONLY,
        )
    failures: list[str] = []
    starts = [i for i, inc in enumerate(history.increments) if inc.offset == 0 and inc.log]
    for start in reversed(starts):
        held = _replay_from(history, start, template_hash_alg, limits)
        if isinstance(held, HeldEntries):
            return held
        failures.append(held)
    if history.cut:
        return not_held(history.cut, history.cut_kind)
    if not starts:
        return not_held(
            f"no whole IMA list of boot {state.boot_id} is in the history "
            f"({len(history.increments)} increments read)",
            STATE_ONLY,
        )
    unreadable = all(f.startswith("unreadable:") for f in failures)
    return not_held(
        f"the history does not reproduce the running state ({state.entry_count} entries): "
        f"{failures[0].removeprefix('unreadable: ')}",
        UNREADABLE if unreadable else MISMATCH,
    )


def _replay_from(
    history: BootHistory, start: int, template_hash_alg: str, limits: Limits
) -> HeldEntries | str:
    """The entries when the replay from ``start`` reproduces the running state, else why not."""
    assert history.state is not None
    first = history.increments[start]
    state = first.prior
    entries: list[ImaEntry] = []
    skipped: list[str] = []
    for number, inc in enumerate(history.increments[start:]):
        if number and (state is None or not _same_point(inc.prior, state)):
            return (
                f"attestation {inc.verdict_id} started from another IMA state than the one "
                "the history replays to: an attestation of the boot is missing"
            )
        try:
            accepted = accept_ima(
                inc.log,
                inc.offset,
                state=state,
                boot_id=inc.boot_id,
                bank=inc.bank,
                quoted={inc.bank: inc.pcrs},
                template_hash_alg=template_hash_alg,
                policy_digest=state.policy_digest if number and state is not None else _REBUILD,
                limits=limits,
            )
        except ImaLogError as exc:
            if not number:
                return f"unreadable: the whole list of attestation {inc.verdict_id}: {exc}"
            skipped.append(f"{inc.verdict_id} ({exc})")
            continue
        except AttestationError as exc:  # ReplayMismatch, ImaLogRequired: not accepted live
            if not number:
                return f"the whole list of attestation {inc.verdict_id} was not accepted: {exc}"
            skipped.append(f"{inc.verdict_id} ({exc})")
            continue
        step = accepted.step
        if step.full_log:
            entries = []
        entries.extend(step.accepted)
        state = step.state
    final = history.state
    if state is None or not _same_point(final, state):
        count = state.entry_count if state is not None else 0
        return (
            f"replaying from attestation {first.verdict_id} gives {count} entries, the "
            f"running state has {final.entry_count}"
        )
    after = len(history.increments) - start - 1
    source = (
        f"the whole list of attestation {first.verdict_id} and {after} increments after it "
        f"(boot {final.boot_id})"
    )
    note = ""
    if skipped:
        note = f"{len(skipped)} increments were not accepted and are not held: {skipped[-1]}"
    return HeldEntries(tuple(entries), template_hash_alg, source, note=note)


def _same_point(a: IncrementalState | None, b: IncrementalState) -> bool:
    return (
        a is not None
        and a.boot_id == b.boot_id
        and a.entry_count == b.entry_count
        and a.pcr10 == b.pcr10
    )


def operator_list(
    raw: bytes, template_hash_alg: str, source: str, limits: Limits = DEFAULT_LIMITS
) -> HeldEntries:
    """An IMA list an operator gives (binary or ASCII), parsed and checked as the verifier
    parses one (``ImaLogError`` when it does not parse); not replayed: no quote vouches for
    it, so its outcome says what the policy makes of these entries, not of a device."""
    parsed = parse_measurement_list(raw, template_hash_alg=template_hash_alg, limits=limits)
    return HeldEntries(parsed.entries, template_hash_alg, source)
