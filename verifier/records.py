"""The records the core and the store share: plain frozen values, no I/O.

The store (``verifier.store``) persists these; the pure core (appraisal, golden evaluation,
enrollment checks) reads them. They live here, below both, so that the core never imports the
store.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ImaStateRecord:
    """A device's IMA incremental state (``verifier.ima.incremental``) for its current boot."""

    device_id: str
    boot_id: str  # the boot epoch the state belongs to (a new boot replaces it)
    entry_count: int  # IMA entries accepted in that boot
    state: str  # JSON of ``incremental.state_to_dict``
    updated_at: float


@dataclass(frozen=True)
class DeviceRecord:
    device_id: str
    ek_public: bytes  # TPM2B_PUBLIC
    ek_certificate: bytes  # DER, empty when allowlisted without a certificate
    ek_not_after: float | None  # the EK certificate's notAfter (POSIX seconds)
    ak_public: bytes  # TPM2B_PUBLIC of the trusted AK
    ak_name: bytes
    labels: dict[str, str]
    enrollment_count: int
    enrolled_at: float  # when the current AK became trusted (enrollment or approval)
    pending_ak_public: bytes = b""  # a new AK waiting for operator approval
    pending_ak_name: bytes = b""


@dataclass(frozen=True)
class EnrollmentChallenge:
    challenge_id: str
    device_id: str
    ek_public: bytes
    ek_certificate: bytes
    ek_not_after: float | None
    ak_public: bytes
    ak_name: bytes
    labels: dict[str, str]
    secret: bytes
    expires_at: float


@dataclass(frozen=True)
class IssuedNonce:
    nonce: bytes
    device_id: str
    bank: str
    pcrs: tuple[int, ...]
    profile: str
    expires_at: float


@dataclass(frozen=True)
class StoredEvidence:
    """The latest evidence of a device, kept for golden explain / dry run / learn."""

    device_id: str
    received_at: float
    bank: str
    pcrs: dict[int, bytes]
    event_log: bytes
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class GoldenSetRecord:
    digest: str
    loaded_at: float
    files: dict[str, str]  # file name -> sha256 hex of its content
