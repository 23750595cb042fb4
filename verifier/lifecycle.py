"""Operators own the fleet: approve devices, bind profiles, decommission, deny EKs, revoke AKs.

Each operation works on the store alone, so the command line (on the database) and the
Operator RPCs (on a running verifier) do exactly the same thing. Every one takes the acting
operator (``actor``) and a reason, records who, when and why, and -- when it takes something
out of the fleet or changes what a device is judged against -- writes at once a supersession
event for the device's latest verdict into the verdict sequence (``Store.add_supersession``),
so that every subscriber of ``WatchVerdicts`` on any replica sees it on its next poll.

Invariants:
- A reason is required (non-empty, at most ``limits.max_reason_bytes``).
- A subject revoked twice is recorded once (``RevocationExists`` the second time).
- An AK that was revoked is never approved again (``approve_ak`` refuses it).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from verifier import errors
from verifier.auditlog import local_caller, record_operator_action
from verifier.currency import Revocations
from verifier.enrollment.identity import PREFIX
from verifier.limits import DEFAULT_LIMITS, Limits
from verifier.records import DeviceChange, RevocationKind, RevocationRecord
from verifier.store.base import Store

log = logging.getLogger(__name__)

_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX = re.compile(r"(?:[0-9a-f]{2})+")


class RevocationExists(errors.AttestationError):
    """The subject is already revoked (the standing record is unchanged)."""


@dataclass(frozen=True)
class Revoked:
    record: RevocationRecord
    superseded: int  # supersession events written now


def local_actor() -> str:
    """Who runs a command on the store: the local user and host (as the audit log names it)."""
    return local_caller()


def check_reason(reason: str, limits: Limits = DEFAULT_LIMITS) -> str:
    text = reason.strip()
    if not text:
        raise errors.MalformedEvidence("a reason is required (--reason)")
    if len(text.encode()) > limits.max_reason_bytes:
        raise errors.LimitExceeded(f"the reason is longer than {limits.max_reason_bytes} bytes")
    return text


def check_fingerprint(fingerprint: str) -> str:
    value = fingerprint.strip().lower().removeprefix(PREFIX)
    if not _HEX64.fullmatch(value):
        raise errors.MalformedEvidence(
            f"{fingerprint[:80]!r} is not an EK fingerprint (64 hex digits, or a device id)"
        )
    return value


def supersede(store: Store, device_id: str, why: str) -> int:
    """Write the supersession event of the device's latest verdict (0 or 1 written)."""
    latest = store.latest_verdict(device_id)
    if latest is None:
        return 0
    return 1 if store.add_supersession(latest, why) is not None else 0


def _revoke(store: Store, record: RevocationRecord) -> Revoked:
    stored = store.add_revocation(record)
    if stored is None:
        raise RevocationExists(f"{record.kind.value} {record.subject} is already revoked")
    log.warning(
        "%s %s revoked by %s: %s", record.kind.value, record.subject, record.actor, record.reason
    )
    record_operator_action(
        store,
        record.actor,
        f"revoke {record.kind.value}",
        {"subject": record.subject, "device_id": record.device_id, "reason": record.reason},
        record.at,
    )
    superseded = 0
    if record.device_id and store.get_device(record.device_id) is not None:
        why = f"{_KIND_TEXT[record.kind]}: {record.describe()}"
        superseded = supersede(store, record.device_id, why)
    return Revoked(stored, superseded)


_KIND_TEXT = {  # as ``verifier.currency`` words it
    RevocationKind.DEVICE: "device decommissioned",
    RevocationKind.EK: "EK denied",
    RevocationKind.AK: "AK revoked",
    RevocationKind.EK_CERTIFICATE: "EK certificate revoked",
}


def decommission(store: Store, device_id: str, reason: str, actor: str, now: float) -> Revoked:
    if store.get_device(device_id) is None:
        raise errors.UnknownDevice(f"no enrolled device {device_id}")
    record = RevocationRecord(
        RevocationKind.DEVICE, device_id, check_reason(reason), actor, now, device_id=device_id
    )
    return _revoke(store, record)


def deny_ek(store: Store, fingerprint: str, reason: str, actor: str, now: float) -> Revoked:
    """Deny an EK, enrolled or not (a recalled TPM may never have enrolled)."""
    value = check_fingerprint(fingerprint)
    record = RevocationRecord(
        RevocationKind.EK, value, check_reason(reason), actor, now, device_id=PREFIX + value
    )
    return _revoke(store, record)


def undeny_ek(store: Store, fingerprint: str, reason: str, actor: str, now: float) -> bool:
    value = check_fingerprint(fingerprint)
    lifted = store.lift_revocation(RevocationKind.EK, value, actor, check_reason(reason), now)
    if lifted:
        log.warning("EK %s undenied by %s: %s", value, actor, reason)
        record_operator_action(
            store, actor, "undeny ek", {"subject": value, "reason": reason.strip()}, now
        )
    return lifted


def revoke_ak(
    store: Store, device_id: str, ak_name_hex: str, reason: str, actor: str, now: float
) -> Revoked:
    name = ak_name_hex.strip().lower()
    if not _HEX.fullmatch(name):
        raise errors.MalformedEvidence(f"{ak_name_hex[:80]!r} is not a hex AK name")
    device = store.get_device(device_id)
    if device is None:
        raise errors.UnknownDevice(f"no enrolled device {device_id}")
    if name not in (device.ak_name.hex(), device.pending_ak_name.hex()):
        raise errors.MalformedEvidence(
            f"AK {name} is neither the trusted nor the pending AK of device {device_id}"
        )
    record = RevocationRecord(
        RevocationKind.AK, name, check_reason(reason), actor, now, device_id=device_id
    )
    return _revoke(store, record)


def revoke_certificate(store: Store, device_id: str, why: str, now: float) -> Revoked | None:
    """Record that a CRL revokes the device's EK certificate (None: already recorded)."""
    record = RevocationRecord(
        RevocationKind.EK_CERTIFICATE, device_id, why, "crl", now, device_id=device_id
    )
    try:
        return _revoke(store, record)
    except RevocationExists:
        return None


def approve_ak(store: Store, device_id: str, ak_name: bytes, now: float) -> bool:
    """Trust the device's pending AK named ``ak_name``, unless that AK was revoked."""
    revocations = Revocations.from_records(store.revocations())
    if ak_name.hex() in revocations.aks:
        raise errors.Revoked(f"AK {ak_name.hex()} was revoked: {revocations.aks[ak_name.hex()]}")
    return store.approve_pending_ak(device_id, ak_name, now)


def approve_device(
    store: Store, device_id: str, profile: str, actor: str, now: float, reason: str = ""
) -> None:
    """Approve a device waiting under the ``approve`` policy, bound to ``profile``."""
    if not profile:
        raise errors.MalformedEvidence("a profile is required (--profile)")
    change = DeviceChange(device_id, "approved", "", profile, actor, now, reason.strip())
    if not store.approve_device(change):
        raise errors.EnrollmentRefused(f"device {device_id} is not waiting for approval")
    log.warning("device %s approved by %s with profile %s", device_id, actor, profile)
    record_operator_action(
        store, actor, "approve device", {"device_id": device_id, "profile": profile}, now
    )


def set_profile(
    store: Store, device_id: str, profile: str, actor: str, now: float, reason: str
) -> int:
    """Bind an enrolled device to ``profile`` (recorded); supersedes its latest verdict when
    that verdict was judged against another profile. Returns the events written."""
    if not profile:
        raise errors.MalformedEvidence("a profile is required")
    device = store.get_device(device_id)
    if device is None:
        raise errors.UnknownDevice(f"no enrolled device {device_id}")
    change = DeviceChange(
        device_id, "profile", device.profile, profile, actor, now, check_reason(reason)
    )
    store.set_device_profile(change)
    record_operator_action(
        store,
        actor,
        "set profile",
        {
            "device_id": device_id,
            "before": device.profile,
            "after": profile,
            "reason": change.reason,
        },
        now,
    )
    log.warning(
        "device %s bound to profile %s (was %s) by %s: %s",
        device_id,
        profile,
        device.profile or "-",
        actor,
        change.reason,
    )
    latest = store.latest_verdict(device_id)
    if latest is None or latest.profile == profile:
        return 0
    why = f"the device was bound to profile {profile!r} by {actor}: {change.reason}"
    return 1 if store.add_supersession(latest, why) is not None else 0
