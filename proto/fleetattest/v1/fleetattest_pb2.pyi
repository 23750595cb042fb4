import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EnrollmentOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENROLLMENT_OUTCOME_UNSPECIFIED: _ClassVar[EnrollmentOutcome]
    ENROLLMENT_OUTCOME_ENROLLED: _ClassVar[EnrollmentOutcome]
    ENROLLMENT_OUTCOME_REENROLLED: _ClassVar[EnrollmentOutcome]

class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STATUS_UNSPECIFIED: _ClassVar[Status]
    STATUS_AFFIRMING: _ClassVar[Status]
    STATUS_WARNING: _ClassVar[Status]
    STATUS_CONTRAINDICATED: _ClassVar[Status]

class Freshness(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FRESHNESS_UNSPECIFIED: _ClassVar[Freshness]
    FRESHNESS_FRESH: _ClassVar[Freshness]
    FRESHNESS_EXPIRED: _ClassVar[Freshness]
    FRESHNESS_SUPERSEDED: _ClassVar[Freshness]
    FRESHNESS_UNKNOWN: _ClassVar[Freshness]
ENROLLMENT_OUTCOME_UNSPECIFIED: EnrollmentOutcome
ENROLLMENT_OUTCOME_ENROLLED: EnrollmentOutcome
ENROLLMENT_OUTCOME_REENROLLED: EnrollmentOutcome
STATUS_UNSPECIFIED: Status
STATUS_AFFIRMING: Status
STATUS_WARNING: Status
STATUS_CONTRAINDICATED: Status
FRESHNESS_UNSPECIFIED: Freshness
FRESHNESS_FRESH: Freshness
FRESHNESS_EXPIRED: Freshness
FRESHNESS_SUPERSEDED: Freshness
FRESHNESS_UNKNOWN: Freshness

class StartEnrollmentRequest(_message.Message):
    __slots__ = ("ek_certificate", "ek_public", "ak_public", "labels", "ek_intermediates")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    EK_CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    EK_PUBLIC_FIELD_NUMBER: _ClassVar[int]
    AK_PUBLIC_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    EK_INTERMEDIATES_FIELD_NUMBER: _ClassVar[int]
    ek_certificate: bytes
    ek_public: bytes
    ak_public: bytes
    labels: _containers.ScalarMap[str, str]
    ek_intermediates: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, ek_certificate: _Optional[bytes] = ..., ek_public: _Optional[bytes] = ..., ak_public: _Optional[bytes] = ..., labels: _Optional[_Mapping[str, str]] = ..., ek_intermediates: _Optional[_Iterable[bytes]] = ...) -> None: ...

class StartEnrollmentResponse(_message.Message):
    __slots__ = ("device_id", "challenge_id", "credential_blob", "encrypted_secret", "expires_at")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    CHALLENGE_ID_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_BLOB_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTED_SECRET_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    challenge_id: str
    credential_blob: bytes
    encrypted_secret: bytes
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, device_id: _Optional[str] = ..., challenge_id: _Optional[str] = ..., credential_blob: _Optional[bytes] = ..., encrypted_secret: _Optional[bytes] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class FinishEnrollmentRequest(_message.Message):
    __slots__ = ("challenge_id", "proof")
    CHALLENGE_ID_FIELD_NUMBER: _ClassVar[int]
    PROOF_FIELD_NUMBER: _ClassVar[int]
    challenge_id: str
    proof: bytes
    def __init__(self, challenge_id: _Optional[str] = ..., proof: _Optional[bytes] = ...) -> None: ...

class FinishEnrollmentResponse(_message.Message):
    __slots__ = ("device_id", "outcome", "enrollment_count")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    ENROLLMENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    outcome: EnrollmentOutcome
    enrollment_count: int
    def __init__(self, device_id: _Optional[str] = ..., outcome: _Optional[_Union[EnrollmentOutcome, str]] = ..., enrollment_count: _Optional[int] = ...) -> None: ...

class GetChallengeRequest(_message.Message):
    __slots__ = ("device_id",)
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    def __init__(self, device_id: _Optional[str] = ...) -> None: ...

class PcrSelection(_message.Message):
    __slots__ = ("bank", "pcrs")
    BANK_FIELD_NUMBER: _ClassVar[int]
    PCRS_FIELD_NUMBER: _ClassVar[int]
    bank: str
    pcrs: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, bank: _Optional[str] = ..., pcrs: _Optional[_Iterable[int]] = ...) -> None: ...

class Challenge(_message.Message):
    __slots__ = ("device_id", "nonce", "selection", "expires_at", "profile")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    SELECTION_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    nonce: bytes
    selection: PcrSelection
    expires_at: _timestamp_pb2.Timestamp
    profile: str
    def __init__(self, device_id: _Optional[str] = ..., nonce: _Optional[bytes] = ..., selection: _Optional[_Union[PcrSelection, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., profile: _Optional[str] = ...) -> None: ...

class PcrValue(_message.Message):
    __slots__ = ("pcr", "digest")
    PCR_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    pcr: int
    digest: bytes
    def __init__(self, pcr: _Optional[int] = ..., digest: _Optional[bytes] = ...) -> None: ...

class AttestRequest(_message.Message):
    __slots__ = ("device_id", "nonce", "quote", "signature", "pcr_values", "event_log", "ima_log", "want_token", "ima_offset")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    QUOTE_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    PCR_VALUES_FIELD_NUMBER: _ClassVar[int]
    EVENT_LOG_FIELD_NUMBER: _ClassVar[int]
    IMA_LOG_FIELD_NUMBER: _ClassVar[int]
    WANT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    IMA_OFFSET_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    nonce: bytes
    quote: bytes
    signature: bytes
    pcr_values: _containers.RepeatedCompositeFieldContainer[PcrValue]
    event_log: bytes
    ima_log: bytes
    want_token: bool
    ima_offset: int
    def __init__(self, device_id: _Optional[str] = ..., nonce: _Optional[bytes] = ..., quote: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., pcr_values: _Optional[_Iterable[_Union[PcrValue, _Mapping]]] = ..., event_log: _Optional[bytes] = ..., ima_log: _Optional[bytes] = ..., want_token: _Optional[bool] = ..., ima_offset: _Optional[int] = ...) -> None: ...

class AttestResponse(_message.Message):
    __slots__ = ("verdict", "ima_entries")
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    IMA_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    verdict: Verdict
    ima_entries: int
    def __init__(self, verdict: _Optional[_Union[Verdict, _Mapping]] = ..., ima_entries: _Optional[int] = ...) -> None: ...

class Reason(_message.Message):
    __slots__ = ("code", "text", "severity", "pcr", "expected", "actual", "release", "rule", "event_index")
    CODE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    PCR_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_FIELD_NUMBER: _ClassVar[int]
    ACTUAL_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    EVENT_INDEX_FIELD_NUMBER: _ClassVar[int]
    code: str
    text: str
    severity: Status
    pcr: int
    expected: str
    actual: str
    release: str
    rule: str
    event_index: int
    def __init__(self, code: _Optional[str] = ..., text: _Optional[str] = ..., severity: _Optional[_Union[Status, str]] = ..., pcr: _Optional[int] = ..., expected: _Optional[str] = ..., actual: _Optional[str] = ..., release: _Optional[str] = ..., rule: _Optional[str] = ..., event_index: _Optional[int] = ...) -> None: ...

class BootEpoch(_message.Message):
    __slots__ = ("reset_count", "restart_count")
    RESET_COUNT_FIELD_NUMBER: _ClassVar[int]
    RESTART_COUNT_FIELD_NUMBER: _ClassVar[int]
    reset_count: int
    restart_count: int
    def __init__(self, reset_count: _Optional[int] = ..., restart_count: _Optional[int] = ...) -> None: ...

class Verdict(_message.Message):
    __slots__ = ("verdict_id", "device_id", "status", "reasons", "profile", "release", "golden_digest", "boot_epoch", "issued_at", "expires_at", "freshness", "firmware_version", "token", "sequence", "currency_reason", "supersession")
    VERDICT_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    GOLDEN_DIGEST_FIELD_NUMBER: _ClassVar[int]
    BOOT_EPOCH_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    FRESHNESS_FIELD_NUMBER: _ClassVar[int]
    FIRMWARE_VERSION_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_REASON_FIELD_NUMBER: _ClassVar[int]
    SUPERSESSION_FIELD_NUMBER: _ClassVar[int]
    verdict_id: str
    device_id: str
    status: Status
    reasons: _containers.RepeatedCompositeFieldContainer[Reason]
    profile: str
    release: str
    golden_digest: str
    boot_epoch: BootEpoch
    issued_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    freshness: Freshness
    firmware_version: int
    token: str
    sequence: int
    currency_reason: str
    supersession: bool
    def __init__(self, verdict_id: _Optional[str] = ..., device_id: _Optional[str] = ..., status: _Optional[_Union[Status, str]] = ..., reasons: _Optional[_Iterable[_Union[Reason, _Mapping]]] = ..., profile: _Optional[str] = ..., release: _Optional[str] = ..., golden_digest: _Optional[str] = ..., boot_epoch: _Optional[_Union[BootEpoch, _Mapping]] = ..., issued_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., freshness: _Optional[_Union[Freshness, str]] = ..., firmware_version: _Optional[int] = ..., token: _Optional[str] = ..., sequence: _Optional[int] = ..., currency_reason: _Optional[str] = ..., supersession: _Optional[bool] = ...) -> None: ...

class GetVerdictRequest(_message.Message):
    __slots__ = ("device_id", "nonce")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    nonce: bytes
    def __init__(self, device_id: _Optional[str] = ..., nonce: _Optional[bytes] = ...) -> None: ...

class GetVerdictResponse(_message.Message):
    __slots__ = ("verdict",)
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    verdict: Verdict
    def __init__(self, verdict: _Optional[_Union[Verdict, _Mapping]] = ...) -> None: ...

class CheckRolloutRequest(_message.Message):
    __slots__ = ("device_id", "target_release", "max_age_seconds")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_RELEASE_FIELD_NUMBER: _ClassVar[int]
    MAX_AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    target_release: str
    max_age_seconds: int
    def __init__(self, device_id: _Optional[str] = ..., target_release: _Optional[str] = ..., max_age_seconds: _Optional[int] = ...) -> None: ...

class CheckRolloutResponse(_message.Message):
    __slots__ = ("allow", "reasons", "verdict")
    ALLOW_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    allow: bool
    reasons: _containers.RepeatedCompositeFieldContainer[Reason]
    verdict: Verdict
    def __init__(self, allow: _Optional[bool] = ..., reasons: _Optional[_Iterable[_Union[Reason, _Mapping]]] = ..., verdict: _Optional[_Union[Verdict, _Mapping]] = ...) -> None: ...

class WatchVerdictsRequest(_message.Message):
    __slots__ = ("device_ids", "profile", "after_sequence")
    DEVICE_IDS_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    device_ids: _containers.RepeatedScalarFieldContainer[str]
    profile: str
    after_sequence: int
    def __init__(self, device_ids: _Optional[_Iterable[str]] = ..., profile: _Optional[str] = ..., after_sequence: _Optional[int] = ...) -> None: ...

class GetJwksRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetJwksResponse(_message.Message):
    __slots__ = ("jwks_json",)
    JWKS_JSON_FIELD_NUMBER: _ClassVar[int]
    jwks_json: str
    def __init__(self, jwks_json: _Optional[str] = ...) -> None: ...

class GetAuditCheckpointRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AuditCheckpoint(_message.Message):
    __slots__ = ("signed_note", "tree_size")
    SIGNED_NOTE_FIELD_NUMBER: _ClassVar[int]
    TREE_SIZE_FIELD_NUMBER: _ClassVar[int]
    signed_note: bytes
    tree_size: int
    def __init__(self, signed_note: _Optional[bytes] = ..., tree_size: _Optional[int] = ...) -> None: ...

class GetInclusionProofRequest(_message.Message):
    __slots__ = ("verdict_id", "tree_size")
    VERDICT_ID_FIELD_NUMBER: _ClassVar[int]
    TREE_SIZE_FIELD_NUMBER: _ClassVar[int]
    verdict_id: str
    tree_size: int
    def __init__(self, verdict_id: _Optional[str] = ..., tree_size: _Optional[int] = ...) -> None: ...

class InclusionProof(_message.Message):
    __slots__ = ("position", "tree_size", "leaf_hash", "hashes", "entry", "root_hash")
    POSITION_FIELD_NUMBER: _ClassVar[int]
    TREE_SIZE_FIELD_NUMBER: _ClassVar[int]
    LEAF_HASH_FIELD_NUMBER: _ClassVar[int]
    HASHES_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    ROOT_HASH_FIELD_NUMBER: _ClassVar[int]
    position: int
    tree_size: int
    leaf_hash: bytes
    hashes: _containers.RepeatedScalarFieldContainer[bytes]
    entry: bytes
    root_hash: bytes
    def __init__(self, position: _Optional[int] = ..., tree_size: _Optional[int] = ..., leaf_hash: _Optional[bytes] = ..., hashes: _Optional[_Iterable[bytes]] = ..., entry: _Optional[bytes] = ..., root_hash: _Optional[bytes] = ...) -> None: ...

class GetConsistencyProofRequest(_message.Message):
    __slots__ = ("old_size", "new_size")
    OLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    NEW_SIZE_FIELD_NUMBER: _ClassVar[int]
    old_size: int
    new_size: int
    def __init__(self, old_size: _Optional[int] = ..., new_size: _Optional[int] = ...) -> None: ...

class ConsistencyProof(_message.Message):
    __slots__ = ("old_size", "new_size", "hashes", "old_root", "new_root")
    OLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    NEW_SIZE_FIELD_NUMBER: _ClassVar[int]
    HASHES_FIELD_NUMBER: _ClassVar[int]
    OLD_ROOT_FIELD_NUMBER: _ClassVar[int]
    NEW_ROOT_FIELD_NUMBER: _ClassVar[int]
    old_size: int
    new_size: int
    hashes: _containers.RepeatedScalarFieldContainer[bytes]
    old_root: bytes
    new_root: bytes
    def __init__(self, old_size: _Optional[int] = ..., new_size: _Optional[int] = ..., hashes: _Optional[_Iterable[bytes]] = ..., old_root: _Optional[bytes] = ..., new_root: _Optional[bytes] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GoldenProblem(_message.Message):
    __slots__ = ("file", "line", "column", "message", "hint")
    FILE_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    HINT_FIELD_NUMBER: _ClassVar[int]
    file: str
    line: int
    column: int
    message: str
    hint: str
    def __init__(self, file: _Optional[str] = ..., line: _Optional[int] = ..., column: _Optional[int] = ..., message: _Optional[str] = ..., hint: _Optional[str] = ...) -> None: ...

class VerifierStatus(_message.Message):
    __slots__ = ("version", "golden_digest", "golden_loaded_at", "golden_problems", "devices", "enrollment_policy", "crl_problems", "clock")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    GOLDEN_DIGEST_FIELD_NUMBER: _ClassVar[int]
    GOLDEN_LOADED_AT_FIELD_NUMBER: _ClassVar[int]
    GOLDEN_PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    ENROLLMENT_POLICY_FIELD_NUMBER: _ClassVar[int]
    CRL_PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    CLOCK_FIELD_NUMBER: _ClassVar[int]
    version: str
    golden_digest: str
    golden_loaded_at: _timestamp_pb2.Timestamp
    golden_problems: _containers.RepeatedCompositeFieldContainer[GoldenProblem]
    devices: int
    enrollment_policy: str
    crl_problems: _containers.RepeatedScalarFieldContainer[str]
    clock: ClockState
    def __init__(self, version: _Optional[str] = ..., golden_digest: _Optional[str] = ..., golden_loaded_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., golden_problems: _Optional[_Iterable[_Union[GoldenProblem, _Mapping]]] = ..., devices: _Optional[int] = ..., enrollment_policy: _Optional[str] = ..., crl_problems: _Optional[_Iterable[str]] = ..., clock: _Optional[_Union[ClockState, _Mapping]] = ...) -> None: ...

class ListDevicesRequest(_message.Message):
    __slots__ = ("profile",)
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    profile: str
    def __init__(self, profile: _Optional[str] = ...) -> None: ...

class Device(_message.Message):
    __slots__ = ("device_id", "labels", "profile", "enrollment_count", "latest_verdict", "pending_ak_name", "approved", "revoked", "last_attested_at", "last_status")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    ENROLLMENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    LATEST_VERDICT_FIELD_NUMBER: _ClassVar[int]
    PENDING_AK_NAME_FIELD_NUMBER: _ClassVar[int]
    APPROVED_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    LAST_ATTESTED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_STATUS_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    labels: _containers.ScalarMap[str, str]
    profile: str
    enrollment_count: int
    latest_verdict: Verdict
    pending_ak_name: str
    approved: bool
    revoked: str
    last_attested_at: _timestamp_pb2.Timestamp
    last_status: Status
    def __init__(self, device_id: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., profile: _Optional[str] = ..., enrollment_count: _Optional[int] = ..., latest_verdict: _Optional[_Union[Verdict, _Mapping]] = ..., pending_ak_name: _Optional[str] = ..., approved: _Optional[bool] = ..., revoked: _Optional[str] = ..., last_attested_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_status: _Optional[_Union[Status, str]] = ...) -> None: ...

class ListDevicesResponse(_message.Message):
    __slots__ = ("devices",)
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    devices: _containers.RepeatedCompositeFieldContainer[Device]
    def __init__(self, devices: _Optional[_Iterable[_Union[Device, _Mapping]]] = ...) -> None: ...

class ApproveAkRequest(_message.Message):
    __slots__ = ("device_id", "ak_name")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    AK_NAME_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    ak_name: str
    def __init__(self, device_id: _Optional[str] = ..., ak_name: _Optional[str] = ...) -> None: ...

class ApproveAkResponse(_message.Message):
    __slots__ = ("device_id",)
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    def __init__(self, device_id: _Optional[str] = ...) -> None: ...

class ReloadGoldenRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReloadGoldenResponse(_message.Message):
    __slots__ = ("applied", "golden_digest", "problems")
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    GOLDEN_DIGEST_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    applied: bool
    golden_digest: str
    problems: _containers.RepeatedCompositeFieldContainer[GoldenProblem]
    def __init__(self, applied: _Optional[bool] = ..., golden_digest: _Optional[str] = ..., problems: _Optional[_Iterable[_Union[GoldenProblem, _Mapping]]] = ...) -> None: ...

class ExplainDeviceRequest(_message.Message):
    __slots__ = ("device_id", "ima_log")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    IMA_LOG_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    ima_log: bytes
    def __init__(self, device_id: _Optional[str] = ..., ima_log: _Optional[bytes] = ...) -> None: ...

class RuleOutcome(_message.Message):
    __slots__ = ("release", "rule", "passed", "expected", "actual", "text")
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_FIELD_NUMBER: _ClassVar[int]
    ACTUAL_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    release: str
    rule: str
    passed: bool
    expected: str
    actual: str
    text: str
    def __init__(self, release: _Optional[str] = ..., rule: _Optional[str] = ..., passed: _Optional[bool] = ..., expected: _Optional[str] = ..., actual: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class RuntimeEntryFailure(_message.Message):
    __slots__ = ("entry", "path", "template", "code", "severity", "expected", "actual", "rule", "text")
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_FIELD_NUMBER: _ClassVar[int]
    ACTUAL_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    entry: int
    path: str
    template: str
    code: str
    severity: Status
    expected: str
    actual: str
    rule: str
    text: str
    def __init__(self, entry: _Optional[int] = ..., path: _Optional[str] = ..., template: _Optional[str] = ..., code: _Optional[str] = ..., severity: _Optional[_Union[Status, str]] = ..., expected: _Optional[str] = ..., actual: _Optional[str] = ..., rule: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class RuntimeExplanation(_message.Message):
    __slots__ = ("evaluated", "not_evaluated", "source", "note", "appraised", "allowed", "excluded", "signature_checked", "unknown", "violations", "rejected", "failures", "failing", "summary", "reasons")
    EVALUATED_FIELD_NUMBER: _ClassVar[int]
    NOT_EVALUATED_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    APPRAISED_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    EXCLUDED_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_CHECKED_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_FIELD_NUMBER: _ClassVar[int]
    VIOLATIONS_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    FAILING_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    evaluated: bool
    not_evaluated: str
    source: str
    note: str
    appraised: int
    allowed: int
    excluded: int
    signature_checked: int
    unknown: int
    violations: int
    rejected: int
    failures: _containers.RepeatedCompositeFieldContainer[RuntimeEntryFailure]
    failing: int
    summary: str
    reasons: _containers.RepeatedCompositeFieldContainer[Reason]
    def __init__(self, evaluated: _Optional[bool] = ..., not_evaluated: _Optional[str] = ..., source: _Optional[str] = ..., note: _Optional[str] = ..., appraised: _Optional[int] = ..., allowed: _Optional[int] = ..., excluded: _Optional[int] = ..., signature_checked: _Optional[int] = ..., unknown: _Optional[int] = ..., violations: _Optional[int] = ..., rejected: _Optional[int] = ..., failures: _Optional[_Iterable[_Union[RuntimeEntryFailure, _Mapping]]] = ..., failing: _Optional[int] = ..., summary: _Optional[str] = ..., reasons: _Optional[_Iterable[_Union[Reason, _Mapping]]] = ...) -> None: ...

class ExplainDeviceResponse(_message.Message):
    __slots__ = ("device_id", "profile", "outcomes", "status", "release", "runtime")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    profile: str
    outcomes: _containers.RepeatedCompositeFieldContainer[RuleOutcome]
    status: Status
    release: str
    runtime: RuntimeExplanation
    def __init__(self, device_id: _Optional[str] = ..., profile: _Optional[str] = ..., outcomes: _Optional[_Iterable[_Union[RuleOutcome, _Mapping]]] = ..., status: _Optional[_Union[Status, str]] = ..., release: _Optional[str] = ..., runtime: _Optional[_Union[RuntimeExplanation, _Mapping]] = ...) -> None: ...

class DryRunGoldenRequest(_message.Message):
    __slots__ = ("files",)
    class FilesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    FILES_FIELD_NUMBER: _ClassVar[int]
    files: _containers.ScalarMap[str, str]
    def __init__(self, files: _Optional[_Mapping[str, str]] = ...) -> None: ...

class StatusChange(_message.Message):
    __slots__ = ("device_id", "before", "after", "reasons")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    BEFORE_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    before: Status
    after: Status
    reasons: _containers.RepeatedCompositeFieldContainer[Reason]
    def __init__(self, device_id: _Optional[str] = ..., before: _Optional[_Union[Status, str]] = ..., after: _Optional[_Union[Status, str]] = ..., reasons: _Optional[_Iterable[_Union[Reason, _Mapping]]] = ...) -> None: ...

class RuntimeNotEvaluated(_message.Message):
    __slots__ = ("device_id", "kind", "why")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    WHY_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    kind: str
    why: str
    def __init__(self, device_id: _Optional[str] = ..., kind: _Optional[str] = ..., why: _Optional[str] = ...) -> None: ...

class DryRunGoldenResponse(_message.Message):
    __slots__ = ("changes", "devices_evaluated", "problems", "not_reevaluated", "summary")
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    DEVICES_EVALUATED_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    NOT_REEVALUATED_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    changes: _containers.RepeatedCompositeFieldContainer[StatusChange]
    devices_evaluated: int
    problems: _containers.RepeatedCompositeFieldContainer[GoldenProblem]
    not_reevaluated: _containers.RepeatedCompositeFieldContainer[RuntimeNotEvaluated]
    summary: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, changes: _Optional[_Iterable[_Union[StatusChange, _Mapping]]] = ..., devices_evaluated: _Optional[int] = ..., problems: _Optional[_Iterable[_Union[GoldenProblem, _Mapping]]] = ..., not_reevaluated: _Optional[_Iterable[_Union[RuntimeNotEvaluated, _Mapping]]] = ..., summary: _Optional[_Iterable[str]] = ...) -> None: ...

class ApproveDeviceRequest(_message.Message):
    __slots__ = ("device_id", "profile", "reason")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    profile: str
    reason: str
    def __init__(self, device_id: _Optional[str] = ..., profile: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class SetDeviceProfileRequest(_message.Message):
    __slots__ = ("device_id", "profile", "reason")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    profile: str
    reason: str
    def __init__(self, device_id: _Optional[str] = ..., profile: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class DeviceChangeResponse(_message.Message):
    __slots__ = ("device_id", "profile")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    profile: str
    def __init__(self, device_id: _Optional[str] = ..., profile: _Optional[str] = ...) -> None: ...

class DecommissionDeviceRequest(_message.Message):
    __slots__ = ("device_id", "reason")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    reason: str
    def __init__(self, device_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class DenyEkRequest(_message.Message):
    __slots__ = ("ek_fingerprint", "reason")
    EK_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ek_fingerprint: str
    reason: str
    def __init__(self, ek_fingerprint: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class UndenyEkRequest(_message.Message):
    __slots__ = ("ek_fingerprint", "reason")
    EK_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ek_fingerprint: str
    reason: str
    def __init__(self, ek_fingerprint: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RevokeAkRequest(_message.Message):
    __slots__ = ("device_id", "ak_name", "reason")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    AK_NAME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    ak_name: str
    reason: str
    def __init__(self, device_id: _Optional[str] = ..., ak_name: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class Revocation(_message.Message):
    __slots__ = ("kind", "subject", "device_id", "reason", "actor", "at")
    KIND_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    kind: str
    subject: str
    device_id: str
    reason: str
    actor: str
    at: _timestamp_pb2.Timestamp
    def __init__(self, kind: _Optional[str] = ..., subject: _Optional[str] = ..., device_id: _Optional[str] = ..., reason: _Optional[str] = ..., actor: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RevocationResponse(_message.Message):
    __slots__ = ("revocation", "superseded")
    REVOCATION_FIELD_NUMBER: _ClassVar[int]
    SUPERSEDED_FIELD_NUMBER: _ClassVar[int]
    revocation: Revocation
    superseded: int
    def __init__(self, revocation: _Optional[_Union[Revocation, _Mapping]] = ..., superseded: _Optional[int] = ...) -> None: ...

class ListRevocationsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListRevocationsResponse(_message.Message):
    __slots__ = ("revocations",)
    REVOCATIONS_FIELD_NUMBER: _ClassVar[int]
    revocations: _containers.RepeatedCompositeFieldContainer[Revocation]
    def __init__(self, revocations: _Optional[_Iterable[_Union[Revocation, _Mapping]]] = ...) -> None: ...

class ClockState(_message.Message):
    __slots__ = ("doubt", "doubt_since", "wall_time")
    DOUBT_FIELD_NUMBER: _ClassVar[int]
    DOUBT_SINCE_FIELD_NUMBER: _ClassVar[int]
    WALL_TIME_FIELD_NUMBER: _ClassVar[int]
    doubt: str
    doubt_since: _timestamp_pb2.Timestamp
    wall_time: _timestamp_pb2.Timestamp
    def __init__(self, doubt: _Optional[str] = ..., doubt_since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., wall_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class AcknowledgeClockRequest(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class AcknowledgeClockResponse(_message.Message):
    __slots__ = ("cleared", "clock", "audit_position")
    CLEARED_FIELD_NUMBER: _ClassVar[int]
    CLOCK_FIELD_NUMBER: _ClassVar[int]
    AUDIT_POSITION_FIELD_NUMBER: _ClassVar[int]
    cleared: str
    clock: ClockState
    audit_position: int
    def __init__(self, cleared: _Optional[str] = ..., clock: _Optional[_Union[ClockState, _Mapping]] = ..., audit_position: _Optional[int] = ...) -> None: ...
