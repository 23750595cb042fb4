"""The enrollment flow: EK endorsement, AK checks, credential activation, operator approval.

Order (``start``): sizes and labels within limits; the EK and AK TPM2B_PUBLIC parse; the EK
is a storage key and the AK a restricted signing key (``tpmpublic.check_ek/check_ak``); the
EK is endorsed by a certificate chain to a configured manufacturer root or by the operators'
allowlist; the device id is derived from the EK public key; MakeCredential to the EK with the
AK's name; the challenge is stored, single use, with a TTL. ``finish``: the challenge is taken
once (expired or used: ``ActivationFailed``), the proof compared in constant time, then the
device is stored (first time), counted (same EK and AK: idempotent, labels unchanged), or its
new AK parked until an operator approves it (``approve_ak``). Nothing is stored for a refused
request.

Every refusal (``EnrollmentRefused``: an untrusted endorsement, an unacceptable EK or AK, a new
AK that needs approval) logs one WARNING line (``refusal.refusal_line``) with the EK
fingerprint as the allowlist file takes it and the EK certificate's issuer and serial.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import Enum

from verifier import errors
from verifier.auditlog import record_enrollment, record_operator_action
from verifier.currency import Revocations
from verifier.enrollment.credential import check_proof, make_credential, new_secret
from verifier.enrollment.crl import CrlSet
from verifier.enrollment.ekchain import Allowlist, TrustStore, validate_ek_certificate
from verifier.enrollment.identity import device_id_for
from verifier.enrollment.policy import EnrollmentPolicy, keys_for
from verifier.enrollment.refusal import refusal_line
from verifier.enrollment.tpmpublic import TpmPublic, check_ak, check_ek, parse_tpm2b_public
from verifier.limits import DEFAULT_LIMITS, Limits
from verifier.records import InventoryEntry
from verifier.store.base import DeviceRecord, EnrollmentChallenge, Store

log = logging.getLogger(__name__)


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


class Enrollment:
    def __init__(
        self,
        store: Store,
        trust: TrustStore,
        allowlist: Allowlist,
        clock: Callable[[], float],
        ttl: float = 120.0,
        limits: Limits = DEFAULT_LIMITS,
        *,
        policy: EnrollmentPolicy = EnrollmentPolicy.APPROVE,
        crls: Callable[[], CrlSet] = CrlSet.empty,
        crl_stale: str = "fail",
        open_profile: Callable[[Mapping[str, str]], str] = lambda labels: "",
    ) -> None:
        """``crls``: the live CRL set; ``open_profile``: the profile name the labels select
        (used under ``open`` only)."""
        self.store = store
        self.trust = trust
        self.allowlist = allowlist
        self.clock = clock
        self.ttl = ttl
        self.limits = limits
        self.policy = policy
        self.crls = crls
        self.crl_stale = crl_stale
        self.open_profile = open_profile

    def start(
        self,
        ek_certificate: bytes,
        ek_public: bytes,
        ak_public: bytes,
        labels: Mapping[str, str],
        ek_intermediates: Sequence[bytes] = (),
    ) -> EnrollmentStart:
        limits = self.limits
        _check_size("EK certificate", ek_certificate, limits.max_ek_certificate_bytes)
        if len(ek_intermediates) > limits.max_ek_intermediates:
            raise errors.LimitExceeded(
                f"{len(ek_intermediates)} EK intermediates; the limit is "
                f"{limits.max_ek_intermediates}"
            )
        for cert in ek_intermediates:
            _check_size("an EK intermediate", cert, limits.max_ek_certificate_bytes)
        _check_labels(labels, limits)
        now = self.clock()
        ek: TpmPublic | None = None
        try:
            ek = parse_tpm2b_public(ek_public, limits)
            check_ek(ek)
            ak = parse_tpm2b_public(ak_public, limits)
            check_ak(ak)
            not_after = self._endorse(ek_certificate, ek, now, ek_intermediates)
            device_id = device_id_for(ek)
            self._check_not_revoked(device_id, ak.name)
            self._check_listed(device_id, ek, ek_certificate)
        except errors.EnrollmentRefused as exc:
            log.warning("%s", refusal_line(exc, ek, ek_certificate))
            raise
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
            expires_at=now + self.ttl,
            ek_intermediates=tuple(ek_intermediates),
        )
        self.store.put_enrollment_challenge(challenge)
        log.info("enrollment started for %s (AK %s)", device_id, ak.name.hex())
        return EnrollmentStart(
            device_id, challenge.challenge_id, blob, encrypted, challenge.expires_at
        )

    def _endorse(
        self, ek_certificate: bytes, ek: TpmPublic, now: float, intermediates: Sequence[bytes]
    ) -> float | None:
        """The EK's trust: a certificate chain to a configured root (none of its certificates
        on a CRL), or the allowlist."""
        if ek_certificate:
            chain = validate_ek_certificate(ek_certificate, ek, self.trust, now, intermediates)
            for warning in self.crls().check(chain.path, now, self.crl_stale):
                log.warning("enrollment of an EK: %s (--crl-stale warn)", warning)
            return chain.not_after
        if self.allowlist.contains(ek):
            return None
        raise errors.UntrustedEndorsement(
            "the TPM sent no EK certificate and its EK is not on the operators' allowlist"
        )

    def _check_not_revoked(self, device_id: str, ak_name: bytes) -> None:
        records = self.store.revocations_of(device_id, ak_name.hex())
        why = Revocations.from_records(records).refusal(device_id, ak_name.hex())
        if why is not None:
            raise errors.Revoked(f"device {device_id}: {why}")

    def _inventory_entry(self, ek: TpmPublic, ek_certificate: bytes) -> InventoryEntry | None:
        for key in keys_for(ek, ek_certificate):
            entry = self.store.inventory_entry(key)
            if entry is not None:
                return entry
        return None

    def _check_listed(self, device_id: str, ek: TpmPublic, ek_certificate: bytes) -> None:
        if self.policy is not EnrollmentPolicy.INVENTORY:
            return
        if self.store.get_device(device_id) is not None:
            return  # already the operators': re-enrollment keeps its bound profile
        if self._inventory_entry(ek, ek_certificate) is None:
            raise errors.NotInInventory(
                f"EK fingerprint {device_id.removeprefix('dev-')} is not in the inventory; an "
                "operator lists it with 'attest-verifier inventory add --ek "
                f"{device_id.removeprefix('dev-')} --profile PROFILE'"
            )

    def _new_device(self, challenge: EnrollmentChallenge, now: float) -> DeviceRecord:
        """The record of a first enrollment, bound to the profile the policy gives."""
        device = _device_from(challenge, now)
        if self.policy is EnrollmentPolicy.OPEN:
            return replace(device, profile=self.open_profile(challenge.labels))
        if self.policy is EnrollmentPolicy.APPROVE:
            return replace(device, approved=False)
        ek = self._stored_ek(challenge)
        entry = self._inventory_entry(ek, challenge.ek_certificate) if ek else None
        if entry is None:
            raise errors.NotInInventory(
                f"EK fingerprint {challenge.device_id.removeprefix('dev-')} was removed from "
                "the inventory during its enrollment"
            )
        return replace(device, profile=entry.profile)

    def _waiting(self, device_id: str) -> errors.ApprovalRequired:
        return errors.ApprovalRequired(
            f"device {device_id} waits for an operator: 'attest-verifier approve-device "
            f"{device_id} --profile PROFILE'"
        )

    def finish(self, challenge_id: str, proof: bytes) -> EnrollmentResult:
        now = self.clock()
        challenge = self.store.take_enrollment_challenge(challenge_id, now)
        if challenge is None:
            raise errors.ActivationFailed(
                "unknown, expired or already used enrollment challenge; start enrollment again"
            )
        check_proof(challenge.secret, proof)
        self._check_not_revoked(challenge.device_id, challenge.ak_name)
        device = self.store.get_device(challenge.device_id)
        if device is None:
            record = self._new_device(challenge, now)
            self.store.insert_device(record)
            record_enrollment(self.store, record.device_id, "enrolled", now, _ak(challenge))
            if not record.approved:
                log.warning(
                    "device %s enrolled and waits for approval (labels %s)",
                    record.device_id,
                    record.labels,
                )
                raise self._waiting(record.device_id)
            log.info("device %s enrolled (profile %s)", record.device_id, record.profile or "-")
            return EnrollmentResult(challenge.device_id, EnrollmentOutcome.ENROLLED, 1)
        if device.ak_name == challenge.ak_name:
            if challenge.labels != device.labels:
                # Labels are the device's word only: they may not change what the operators
                # recorded. The labels of the first enrollment stay.
                log.warning(
                    "device %s re-enrolled with labels %s; keeping its enrolled labels %s",
                    challenge.device_id,
                    challenge.labels,
                    device.labels,
                )
            count = self.store.bump_enrollment(challenge.device_id, device.labels)
            log.info("device %s re-enrolled (%d times)", challenge.device_id, count)
            record_enrollment(self.store, challenge.device_id, "reenrolled", now, _ak(challenge))
            if not device.approved:
                raise self._waiting(device.device_id)
            return EnrollmentResult(challenge.device_id, EnrollmentOutcome.REENROLLED, count)
        self.store.set_pending_ak(challenge.device_id, challenge.ak_public, challenge.ak_name)
        record_enrollment(self.store, challenge.device_id, "approval_required", now, _ak(challenge))
        refusal = errors.ApprovalRequired(
            f"device {challenge.device_id} is enrolled with another AK; an operator must run "
            f"'attest-verifier approve-ak {challenge.device_id} {challenge.ak_name.hex()}'"
        )
        log.warning(
            "%s", refusal_line(refusal, self._stored_ek(challenge), challenge.ek_certificate)
        )
        raise refusal

    def _stored_ek(self, challenge: EnrollmentChallenge) -> TpmPublic | None:
        """The challenge's EK, parsed again for a log line (it parsed at ``start``)."""
        try:
            return parse_tpm2b_public(challenge.ek_public, self.limits)
        except errors.AttestationError:
            return None

    def approve_ak(self, device_id: str, ak_name_hex: str, caller: str = "operator") -> None:
        try:
            ak_name = bytes.fromhex(ak_name_hex)
        except ValueError as exc:
            raise errors.MalformedEvidence("AK name must be hex") from exc
        if self.store.get_device(device_id) is None:
            raise errors.UnknownDevice(f"no enrolled device {device_id}")
        if not self.store.approve_pending_ak(device_id, ak_name, self.clock()):
            raise errors.EnrollmentRefused(
                f"device {device_id} has no pending AK named {ak_name_hex}"
            )
        log.warning("operator approved AK %s for device %s", ak_name_hex, device_id)
        record_operator_action(
            self.store,
            caller,
            "approve_ak",
            {"device_id": device_id, "ak_name": ak_name_hex},
            self.clock(),
        )


def _ak(challenge: EnrollmentChallenge) -> dict[str, str]:
    return {"ak_name": challenge.ak_name.hex()}


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
        ek_intermediates=challenge.ek_intermediates,
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
