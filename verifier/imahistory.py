"""The IMA entries the verifier holds for a device's current boot, read from the store.

``held_entries(store, device_id, template_hash_alg, limits)`` reads the device's running IMA
state and its attestations newest first (``Store.attestations_of``, a page at a time) and
hands them to the pure ``verifier.ima.held.rebuild``, the one place that decides what they
hold. It stops reading as soon as a whole list rebuilds the running state, and otherwise at
the first attestation of another boot than the newest one, at one whose body retention purged
or that was stored without its evidence, or after ``limits.max_whatif_ima_attestations``
(``BootHistory.cut`` then says which). ``golden explain``/``dry-run`` and the Operator
service's ``ExplainDevice``/``DryRunGolden`` all read through here. Read only.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from verifier import errors
from verifier.appraisal import boot_id
from verifier.audit.history import StoredAttestation
from verifier.golden.model import GoldenSet
from verifier.golden.whatif import runtime_template_hash
from verifier.ima.held import (
    NOT_KEPT,
    PURGED,
    TOO_LONG,
    UNREADABLE,
    BootHistory,
    HeldEntries,
    Increment,
    operator_list,
    rebuild,
)
from verifier.ima.incremental import IncrementalState, state_from_dict
from verifier.limits import DEFAULT_LIMITS, Limits
from verifier.quote import parse_attest
from verifier.records import StoredEvidence
from verifier.store import Store

log = logging.getLogger(__name__)
PAGE = 50  # attestations read per query


def held_entries(
    store: Store, device_id: str, template_hash_alg: str, limits: Limits = DEFAULT_LIMITS
) -> HeldEntries:
    """The entries of the device's current boot, or why they cannot be given (module)."""
    state = _state(store, device_id)
    increments: list[Increment] = []  # newest first while reading
    boot = ""
    before: int | None = None
    read = 0
    while True:
        page = store.attestations_of(device_id, before, PAGE)
        for attestation in page:
            read += 1
            cut = _cut(attestation, read, limits)
            increment = None if cut else _increment(attestation)
            if increment is None:
                cut = cut or (
                    f"attestation {attestation.verdict_id}'s quote cannot be read",
                    UNREADABLE,
                )
                return _rebuilt(state, boot, increments, template_hash_alg, limits, cut)
            boot = boot or increment.boot_id
            if increment.boot_id != boot:
                return _rebuilt(state, boot, increments, template_hash_alg, limits)
            increments.append(increment)
            if increment.offset == 0 and increment.log:
                held = _rebuilt(state, boot, increments, template_hash_alg, limits)
                if held.complete:
                    return held
        if len(page) < PAGE:
            return _rebuilt(state, boot, increments, template_hash_alg, limits)
        before = page[-1].sequence


def held_for_fleet(
    store: Store,
    evidences: Sequence[StoredEvidence],
    sets: Sequence[GoldenSet],
    limits: Limits = DEFAULT_LIMITS,
) -> dict[str, HeldEntries]:
    """``held_entries`` of every device whose profile in one of ``sets`` has a runtime
    section (read with that profile's template hash algorithm)."""
    held = {}
    for evidence in evidences:
        alg = runtime_template_hash(evidence, *sets)
        if alg is not None:
            held[evidence.device_id] = held_entries(store, evidence.device_id, alg, limits)
    return held


def _rebuilt(
    state: IncrementalState | None,
    boot: str,
    newest_first: list[Increment],
    template_hash_alg: str,
    limits: Limits,
    cut: tuple[str, str] = ("", ""),
) -> HeldEntries:
    history = BootHistory(state, boot, tuple(reversed(newest_first)), cut[0], cut[1])
    return rebuild(history, template_hash_alg, limits)


def _cut(attestation: StoredAttestation, read: int, limits: Limits) -> tuple[str, str] | None:
    """Why reading must stop at this attestation, or None."""
    limit = limits.max_whatif_ima_attestations
    if read > limit:
        return (
            f"more than {limit} attestations in this boot: not read back to its whole IMA list",
            TOO_LONG,
        )
    if attestation.record is not None:
        return None
    when = datetime.fromtimestamp(attestation.received_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if attestation.purged_at is not None:
        return (
            f"the evidence of attestation {attestation.verdict_id} ({when}) was purged by "
            "retention, and no whole IMA list after it rebuilds the running state",
            PURGED,
        )
    return (
        f"attestation {attestation.verdict_id} ({when}) was stored without its evidence "
        "(over the stored-evidence limit)",
        NOT_KEPT,
    )


def _increment(attestation: StoredAttestation) -> Increment | None:
    record = attestation.record
    assert record is not None
    try:
        clock = parse_attest(record.quote).clock_info
    except errors.AttestationError:
        return None
    return Increment(
        verdict_id=attestation.verdict_id,
        received_at=attestation.received_at,
        boot_id=boot_id(clock),
        bank=record.issued.bank,
        pcrs=dict(record.pcr_values),
        log=record.ima_log,
        offset=record.ima_offset,
        prior=_parsed_state(record.ima_state, attestation.verdict_id),
    )


def _state(store: Store, device_id: str) -> IncrementalState | None:
    record = store.ima_state(device_id)
    return None if record is None else _parsed_state(record.state, device_id)


def _parsed_state(text: str, what: str) -> IncrementalState | None:
    if not text:
        return None
    try:
        return state_from_dict(json.loads(text))
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("IMA state of %s is damaged and ignored: %s", what, exc)
        return None


def held_for_explain(
    store: Store,
    evidence: StoredEvidence,
    golden: GoldenSet,
    limits: Limits = DEFAULT_LIMITS,
    ima_log: bytes | None = None,
    source: str = "",
) -> HeldEntries | None:
    """The entries ``golden explain`` judges for the device: the operator's ``ima_log`` when
    given (``source`` names it), else those held for its current boot; None when its profile
    has no runtime section (an operator's list is then refused: nothing would judge it)."""
    alg = runtime_template_hash(evidence, golden)
    if alg is None:
        if ima_log is not None:
            raise errors.PolicyViolation(
                f"the device's profile in golden set {golden.digest} has no runtime section: "
                "nothing would judge the IMA list"
            )
        return None
    if ima_log is not None:
        return operator_list(ima_log, alg, source or "the IMA list given", limits)
    return held_entries(store, evidence.device_id, alg, limits)
