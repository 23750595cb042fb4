"""The records the core and the store share: plain frozen values, no I/O.

The store (``verifier.store``) persists these; the pure core (appraisal, golden evaluation,
enrollment checks) reads them. They live here, below both, so that the core never imports the
store.
"""

from __future__ import annotations

import datetime
import enum
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
    profile: str = ""  # the golden profile operators bound it to ("" only for older records)
    approved: bool = True  # False: enrolled under ``approve``, waiting for an operator
    ek_intermediates: tuple[bytes, ...] = ()  # CA certificates (DER) the agent sent


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
    ek_intermediates: tuple[bytes, ...] = ()


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


class RevocationKind(enum.Enum):
    DEVICE = "device"  # subject: a device id (decommissioned)
    EK = "ek"  # subject: an EK fingerprint (denied: can never enroll again until undenied)
    AK = "ak"  # subject: an AK name, hex
    EK_CERTIFICATE = "ek_certificate"  # subject: a device id whose EK certificate a CRL revokes


@dataclass(frozen=True)
class RevocationRecord:
    """One revocation: what, why, who and when; ``lifted_at`` set once it is lifted."""

    kind: RevocationKind
    subject: str
    reason: str
    actor: str
    at: float
    device_id: str = ""  # the device concerned, when known (an AK's, an EK's)
    revocation_id: int = 0
    lifted_at: float | None = None
    lifted_by: str = ""
    lifted_reason: str = ""

    @property
    def lifted(self) -> bool:
        return self.lifted_at is not None

    def describe(self) -> str:
        when = datetime.datetime.fromtimestamp(self.at, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return f"{self.reason} (by {self.actor} at {when})"


@dataclass(frozen=True)
class InventoryEntry:
    """A device operators listed ahead of time: its EK and the profile they assign.

    ``key`` is ``ek:<64 hex digits>`` (the EK fingerprint) or ``cert:<serial hex>@<issuer>``
    (the EK certificate's serial, upper-case hex as ``refusal.certificate_summary`` prints it,
    and its RFC 4514 issuer). ``labels`` are informational only.
    """

    key: str
    profile: str
    labels: dict[str, str]
    added_by: str
    added_at: float


@dataclass(frozen=True)
class DeviceChange:
    """A recorded operator change of a device (approval, profile), for the history."""

    device_id: str
    what: str  # "approved", "profile"
    before: str
    after: str
    actor: str
    at: float
    reason: str = ""
