"""Protobuf <-> domain conversion, at the boundary, once.

Requests become frozen domain values here (bytes fields are read exactly once: a protobuf
bytes field is copied on every read). Unknown fields are refused: a request this version does
not fully understand is not half-processed.
"""

from __future__ import annotations

from google.protobuf import unknown_fields
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from fleetattest.v1 import fleetattest_pb2 as pb
from verifier import errors
from verifier.currency import Currency
from verifier.evidence import Evidence
from verifier.ima.policy import EntryOutcome
from verifier.ima.reappraise import RuntimeOutcome
from verifier.limits import Limits
from verifier.verdict import Freshness, Reason, Status, Verdict

STATUS_TO_PB = {
    Status.AFFIRMING: pb.STATUS_AFFIRMING,
    Status.WARNING: pb.STATUS_WARNING,
    Status.CONTRAINDICATED: pb.STATUS_CONTRAINDICATED,
}
STATUS_FROM_PB = {v: k for k, v in STATUS_TO_PB.items()}
FRESHNESS_TO_PB = {
    Freshness.FRESH: pb.FRESHNESS_FRESH,
    Freshness.EXPIRED: pb.FRESHNESS_EXPIRED,
    Freshness.SUPERSEDED: pb.FRESHNESS_SUPERSEDED,
    Freshness.UNKNOWN: pb.FRESHNESS_UNKNOWN,
}


def refuse_unknown_fields(message: Message) -> None:
    """Raise MalformedEvidence if ``message`` or any nested message has unknown fields."""
    if len(unknown_fields.UnknownFieldSet(message)):
        raise errors.MalformedEvidence(
            f"{message.DESCRIPTOR.name} has fields this verifier does not know"
        )
    for field, value in message.ListFields():
        if field.type != field.TYPE_MESSAGE or field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            continue
        items = value if field.is_repeated else [value]
        for item in items:
            refuse_unknown_fields(item)


def timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    whole = int(seconds)
    ts.seconds = whole
    ts.nanos = int((seconds - whole) * 1e9)
    return ts


def from_timestamp(ts: Timestamp) -> float:
    return ts.seconds + ts.nanos / 1e9


def evidence_from(request: pb.AttestRequest, limits: Limits) -> Evidence:
    refuse_unknown_fields(request)
    if len(request.pcr_values) > 24:
        raise errors.LimitExceeded(f"{len(request.pcr_values)} PCR values; at most 24")
    return Evidence.build(
        device_id=request.device_id,
        nonce=request.nonce,
        quote=request.quote,
        signature=request.signature,
        pcr_values=tuple((v.pcr, v.digest) for v in request.pcr_values),
        event_log=request.event_log,
        limits=limits,
        ima_log=request.ima_log,
        ima_offset=request.ima_offset,
    )


def reason_to_pb(reason: Reason) -> pb.Reason:
    msg = pb.Reason(
        code=reason.code,
        text=reason.text,
        severity=STATUS_TO_PB[reason.severity],
        expected=reason.expected,
        actual=reason.actual,
        release=reason.release,
        rule=reason.rule,
    )
    if reason.pcr is not None:
        msg.pcr = reason.pcr
    if reason.event_index is not None:
        msg.event_index = reason.event_index
    return msg


def reason_from_pb(msg: pb.Reason) -> Reason:
    return Reason(
        code=msg.code,
        text=msg.text,
        severity=STATUS_FROM_PB.get(msg.severity, Status.CONTRAINDICATED),
        pcr=msg.pcr if msg.HasField("pcr") else None,
        expected=msg.expected,
        actual=msg.actual,
        release=msg.release,
        rule=msg.rule,
        event_index=msg.event_index if msg.HasField("event_index") else None,
    )


def verdict_to_pb(verdict: Verdict, current: Currency, token: str = "") -> pb.Verdict:
    """The verdict as served, with its currency (``verifier.currency``); a stream event of
    supersession is marked ``supersession``."""
    return pb.Verdict(
        verdict_id=verdict.verdict_id,
        device_id=verdict.device_id,
        status=STATUS_TO_PB[verdict.status],
        reasons=[reason_to_pb(r) for r in verdict.reasons],
        profile=verdict.profile,
        release=verdict.release,
        golden_digest=verdict.golden_digest,
        boot_epoch=pb.BootEpoch(
            reset_count=verdict.boot_epoch.reset_count,
            restart_count=verdict.boot_epoch.restart_count,
        ),
        issued_at=timestamp(verdict.issued_at),
        expires_at=timestamp(verdict.expires_at),
        freshness=FRESHNESS_TO_PB[current.state],
        firmware_version=verdict.firmware_version,
        token=token,
        sequence=verdict.sequence,
        currency_reason=current.why,
        supersession=bool(verdict.supersession),
    )


def runtime_to_pb(runtime: RuntimeOutcome) -> pb.RuntimeExplanation:
    """A runtime outcome of explain, every field of it."""
    counts = runtime.counts
    return pb.RuntimeExplanation(
        evaluated=runtime.evaluated,
        not_evaluated=runtime.not_evaluated,
        source=runtime.source,
        note=runtime.note,
        appraised=runtime.appraised,
        allowed=counts.get(EntryOutcome.ALLOWED, 0),
        excluded=counts.get(EntryOutcome.EXCLUDED, 0),
        signature_checked=counts.get(EntryOutcome.SIGNED, 0),
        unknown=counts.get(EntryOutcome.UNKNOWN, 0),
        violations=counts.get(EntryOutcome.VIOLATION, 0),
        rejected=counts.get(EntryOutcome.REJECTED, 0),
        failures=[
            pb.RuntimeEntryFailure(
                entry=f.number,
                path=f.path,
                template=f.template,
                code=f.code,
                severity=STATUS_TO_PB[f.severity],
                expected=f.expected,
                actual=f.actual,
                rule=f.rule,
                text=f.text,
            )
            for f in runtime.failures
        ],
        failing=runtime.failing,
        summary=runtime.summary(),
        reasons=[reason_to_pb(r) for r in runtime.reasons],
    )
