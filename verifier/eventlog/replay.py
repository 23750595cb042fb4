"""Replay a parsed event log, one bank at a time, to the PCR values it implies.

Invariants (ARCHITECTURE.md, appraisal invariant 5):

- Every PCR starts at zero, except PCR 0: it starts at the startup locality in its last byte
  (a ``StartupLocality`` EV_NO_ACTION event, locality 3 on real machines) or at 4 when the log
  has an EV_EFI_HCRTM_EVENT in PCR 0 (an H-CRTM platform).
- EV_NO_ACTION events are never extended, whatever their digest.
- Events whose PCR index is outside 0-23 are not extended; each is reported in ``notes``.
- ``pcrs`` holds only the PCRs that at least one event extends: a PCR absent from it has no
  events, which the appraisal treats as a failure when the policy relies on it.
- The missing-ExitBootServices workaround (off unless asked for) appends the two
  ExitBootServices EV_EFI_ACTION digests to PCR 5 when the log has neither; its use is noted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from verifier.errors import EventLogError
from verifier.eventlog.parse import EV_EFI_HCRTM_EVENT, EV_NO_ACTION, MAX_PCR, EventLog

EBS_INVOCATION = b"Exit Boot Services Invocation"
EBS_SUCCESS = b"Exit Boot Services Returned with Success"
EBS_WORKAROUND_NOTE = "missing_exit_boot_services workaround applied to PCR 5"

HASHES: dict[str, Callable[[bytes], hashlib._Hash]] = {
    "sha1": hashlib.sha1,
    "sha256": hashlib.sha256,
    "sha384": hashlib.sha384,
    "sha512": hashlib.sha512,
    "sha3_256": hashlib.sha3_256,
    "sha3_384": hashlib.sha3_384,
    "sha3_512": hashlib.sha3_512,
}


@dataclass(frozen=True)
class ReplayResult:
    bank: str
    pcrs: dict[int, bytes]  # only PCRs with at least one extended event
    notes: tuple[str, ...]
    start_locality: int


def hash_function(bank: str) -> Callable[[bytes], hashlib._Hash]:
    func = HASHES.get(bank)
    if func is None:
        raise EventLogError(f"cannot replay bank {bank!r}: unknown hash algorithm")
    return func


def replay(log: EventLog, bank: str, *, missing_exit_boot_services: bool = False) -> ReplayResult:
    """The PCR values ``log`` replays to in ``bank``; ``EventLogError`` if it lacks the bank."""
    if bank not in log.banks:
        raise EventLogError(f"the event log has no {bank} digests (it has {', '.join(log.banks)})")
    hfunc = hash_function(bank)
    size = hfunc(b"").digest_size
    locality = start_locality(log)
    pcrs: dict[int, bytes] = {}
    notes: list[str] = []
    zero = bytes(size)
    start0 = _start(0, locality, zero)
    get = pcrs.get
    for number, pcr, etype, digests, _data, _offset in log.events:
        if etype == EV_NO_ACTION:
            continue
        if pcr > MAX_PCR:
            notes.append(f"event {number}: PCR index {pcr} is outside 0-23; not extended")
            continue
        pcrs[pcr] = hfunc(get(pcr, start0 if pcr == 0 else zero) + digests[bank]).digest()
    if missing_exit_boot_services and not _has_exit_boot_services(log, bank):
        current = pcrs.get(5, zero)
        for text in (EBS_INVOCATION, EBS_SUCCESS):
            current = hfunc(current + hfunc(text).digest()).digest()
        pcrs[5] = current
        notes.append(EBS_WORKAROUND_NOTE)
    return ReplayResult(bank=bank, pcrs=pcrs, notes=tuple(notes), start_locality=locality)


def start_locality(log: EventLog) -> int:
    """The locality PCR 0 starts at: 4 with an H-CRTM event, else the StartupLocality one."""
    for event in log.events:
        if event.pcr == 0 and event.type == EV_EFI_HCRTM_EVENT:
            return 4
    return log.startup_locality or 0


def _start(pcr: int, locality: int, zero: bytes) -> bytes:
    if pcr == 0 and locality:
        return zero[:-1] + bytes([locality])
    return zero


def _has_exit_boot_services(log: EventLog, bank: str) -> bool:
    hfunc = hash_function(bank)
    markers = {hfunc(EBS_INVOCATION).digest(), hfunc(EBS_SUCCESS).digest()}
    return any(e.pcr == 5 and e.digests[bank] in markers for e in log.events)
