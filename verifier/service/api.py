"""gRPC adapters: thin translations between messages and ``verifier.app.Verifier`` calls.

Each method: refuse unknown fields, convert, call the application, convert back. Errors are
mapped to status codes in ``verifier.service.errors`` only.

Every unary method runs inside ``rpc``: it is counted in flight and timed
(``fleetattest_rpcs_in_flight``, ``fleetattest_rpc_duration_seconds`` by method name), and an
exception is counted as a refusal by error type (``verifier.metrics.refusal_for``, which
mirrors the status mapping) and logged with the RPC, the caller, the device and the duration.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Protocol, TypeVar

import grpc

from fleetattest.v1 import fleetattest_pb2 as pb
from fleetattest.v1 import fleetattest_pb2_grpc as pb_grpc
from verifier import __version__, auditlog, errors
from verifier.app import Verifier
from verifier.audit import Checkpoint, parse_note
from verifier.enrollment.flow import EnrollmentOutcome
from verifier.golden.load import GoldenError, GoldenProblem
from verifier.lifecycle import Revoked
from verifier.metrics import EnrollmentResult, refusal_for
from verifier.records import RevocationRecord
from verifier.service.authz import caller_of
from verifier.service.convert import (
    STATUS_TO_PB,
    reason_to_pb,
    refuse_unknown_fields,
    runtime_to_pb,
    timestamp,
    verdict_to_pb,
)
from verifier.service.convert import evidence_from as _evidence_from
from verifier.service.errors import abort
from verifier.verdict import SUPERSEDED_AT

log = logging.getLogger(__name__)

WATCH_POLL_SECONDS = 1.0  # how often a stream looks for other replicas' verdicts


class _Service(Protocol):
    v: Verifier


Svc = TypeVar("Svc", bound=_Service)
Req = TypeVar("Req")
Resp = TypeVar("Resp")
Handler = Callable[[Svc, Req, grpc.ServicerContext], Resp]

_OUTCOME = {
    EnrollmentOutcome.ENROLLED: pb.ENROLLMENT_OUTCOME_ENROLLED,
    EnrollmentOutcome.REENROLLED: pb.ENROLLMENT_OUTCOME_REENROLLED,
}
_ENROLLMENT_RESULT = {
    EnrollmentOutcome.ENROLLED: EnrollmentResult.ENROLLED,
    EnrollmentOutcome.REENROLLED: EnrollmentResult.REENROLLED,
}


def rpc_fields(
    rpc_name: str, request: object, context: grpc.ServicerContext, started: float
) -> dict[str, object]:
    """The structured log fields of one RPC (``verifier.logjson.FIELDS``)."""
    fields: dict[str, object] = {
        "rpc": rpc_name,
        "caller": str(caller_of(context)),
        "duration_ms": round((time.perf_counter() - started) * 1000, 3),
    }
    device_id = getattr(request, "device_id", "")
    if isinstance(device_id, str) and device_id:
        fields["device_id"] = device_id
    return fields


def rpc(method: Handler[Svc, Req, Resp]) -> Handler[Svc, Req, Resp]:
    """Time, count and log the call; map every exception to a status code, in one place."""
    name = method.__name__

    @functools.wraps(method)
    def wrapper(self: Svc, request: Req, context: grpc.ServicerContext) -> Resp:
        metrics = self.v.metrics
        started = time.perf_counter()
        with metrics.rpc_in_flight(name):
            try:
                response = method(self, request, context)
            except Exception as exc:
                metrics.refusal(name, refusal_for(exc))
                abort(context, exc, name, rpc_fields(name, request, context, started))
                raise  # unreachable: abort raises
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s done", name, extra=rpc_fields(name, request, context, started))
        return response

    return wrapper


def _enrollment_refused(service: _Service, exc: Exception) -> None:
    outcome = (
        EnrollmentResult.APPROVAL_REQUIRED
        if isinstance(exc, errors.ApprovalRequired)
        else EnrollmentResult.REFUSED
    )
    service.v.metrics.enrollment(outcome)


def problem_to_pb(problem: GoldenProblem) -> pb.GoldenProblem:
    return pb.GoldenProblem(
        file=problem.file,
        line=problem.line,
        column=problem.column,
        message=problem.message,
        hint=problem.hint,
    )


class AgentService(pb_grpc.AgentServicer):
    def __init__(self, verifier: Verifier) -> None:
        self.v = verifier

    @rpc
    def StartEnrollment(
        self, request: pb.StartEnrollmentRequest, context: grpc.ServicerContext
    ) -> pb.StartEnrollmentResponse:
        refuse_unknown_fields(request)
        try:
            started = self.v.enrollment.start(
                ek_certificate=request.ek_certificate,
                ek_public=request.ek_public,
                ak_public=request.ak_public,
                labels=dict(request.labels),
                ek_intermediates=list(request.ek_intermediates),
            )
        except (errors.EnrollmentRefused, errors.ActivationFailed) as exc:
            _enrollment_refused(self, exc)
            raise
        return pb.StartEnrollmentResponse(
            device_id=started.device_id,
            challenge_id=started.challenge_id,
            credential_blob=started.credential_blob,
            encrypted_secret=started.encrypted_secret,
            expires_at=timestamp(started.expires_at),
        )

    @rpc
    def FinishEnrollment(
        self, request: pb.FinishEnrollmentRequest, context: grpc.ServicerContext
    ) -> pb.FinishEnrollmentResponse:
        refuse_unknown_fields(request)
        try:
            result = self.v.enrollment.finish(request.challenge_id, request.proof)
        except (errors.EnrollmentRefused, errors.ActivationFailed) as exc:
            _enrollment_refused(self, exc)
            raise
        self.v.metrics.enrollment(_ENROLLMENT_RESULT[result.outcome])
        return pb.FinishEnrollmentResponse(
            device_id=result.device_id,
            outcome=_OUTCOME[result.outcome],
            enrollment_count=result.enrollment_count,
        )

    @rpc
    def GetChallenge(
        self, request: pb.GetChallengeRequest, context: grpc.ServicerContext
    ) -> pb.Challenge:
        refuse_unknown_fields(request)
        issued = self.v.get_challenge(request.device_id)
        return pb.Challenge(
            device_id=issued.device_id,
            nonce=issued.nonce,
            selection=pb.PcrSelection(bank=issued.bank, pcrs=issued.pcrs),
            expires_at=timestamp(issued.expires_at),
            profile=issued.profile,
        )

    @rpc
    def Attest(self, request: pb.AttestRequest, context: grpc.ServicerContext) -> pb.AttestResponse:
        evidence = _evidence_from(request, self.v.settings.limits)
        attested = self.v.attest_evidence(evidence, want_token=request.want_token)
        verdict = attested.verdict
        return pb.AttestResponse(
            verdict=verdict_to_pb(verdict, attested.currency, attested.token),
            ima_entries=attested.ima_entries,
        )


class RelyingPartyService(pb_grpc.RelyingPartyServicer):
    """A verdict stream holds one server thread for its lifetime: the server's
    ``StreamSlots`` (``verifier.service.authz``) caps them per caller and in all, so streams
    never take every thread away from agents."""

    def __init__(self, verifier: Verifier) -> None:
        self.v = verifier

    @rpc
    def GetVerdict(
        self, request: pb.GetVerdictRequest, context: grpc.ServicerContext
    ) -> pb.GetVerdictResponse:
        refuse_unknown_fields(request)
        verdict, current = self.v.latest_verdict(request.device_id)
        token = self.v.token_for(verdict, nonce=request.nonce or None, current=current)
        return pb.GetVerdictResponse(verdict=verdict_to_pb(verdict, current, token))

    @rpc
    def GetJwks(
        self, request: pb.GetJwksRequest, context: grpc.ServicerContext
    ) -> pb.GetJwksResponse:
        refuse_unknown_fields(request)
        return pb.GetJwksResponse(jwks_json=json.dumps(self.v.jwks(), sort_keys=True))

    @rpc
    def CheckRollout(
        self, request: pb.CheckRolloutRequest, context: grpc.ServicerContext
    ) -> pb.CheckRolloutResponse:
        refuse_unknown_fields(request)
        if not request.target_release:
            raise errors.MalformedEvidence("target_release is required")
        decision, verdict = self.v.check_rollout(
            request.device_id, request.target_release, float(request.max_age_seconds)
        )
        response = pb.CheckRolloutResponse(
            allow=decision.allow, reasons=[reason_to_pb(r) for r in decision.reasons]
        )
        if verdict is not None:
            response.verdict.CopyFrom(verdict_to_pb(verdict, self.v.currency_of(verdict)))
        return response

    def WatchVerdicts(
        self, request: pb.WatchVerdictsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.Verdict]:
        """Every verdict after ``after_sequence``, then new ones as they are stored, and
        every supersession event (``supersession`` set: a verdict stopped being current).

        Resumable: a client that reconnects with the last ``sequence`` it saw misses nothing,
        whichever replica stored the verdicts or events (the store's sequence is the cursor).
        """
        metrics = self.v.metrics
        metrics.stream_opened()  # a slot was taken by the interceptor (StreamSlots)
        started = time.perf_counter()
        try:
            refuse_unknown_fields(request)
            cursor = request.after_sequence
            devices = list(request.device_ids)
            live = False  # the backlog first; after its end every verdict is a new event
            while context.is_active():
                batch = self.v.verdicts_after(cursor, devices, request.profile)
                for verdict in batch:
                    cursor = verdict.sequence
                    yield verdict_to_pb(verdict, self.v.currency_of(verdict))
                    superseded_at = verdict.extra.get(SUPERSEDED_AT)
                    if live and verdict.supersession and superseded_at:
                        metrics.revocation_propagation(self.v.clock() - float(superseded_at))
                if not batch:
                    live = True
                    self.v.wait_for_verdicts(WATCH_POLL_SECONDS)
        except Exception as exc:
            metrics.refusal("WatchVerdicts", refusal_for(exc))
            abort(
                context,
                exc,
                "WatchVerdicts",
                rpc_fields("WatchVerdicts", request, context, started),
            )
        finally:
            metrics.stream_closed()


class OperatorService(pb_grpc.OperatorServicer):
    def __init__(self, verifier: Verifier) -> None:
        self.v = verifier

    @rpc
    def GetStatus(
        self, request: pb.GetStatusRequest, context: grpc.ServicerContext
    ) -> pb.VerifierStatus:
        refuse_unknown_fields(request)
        live = self.v.golden.current()
        return pb.VerifierStatus(
            version=__version__,
            golden_digest=live.profile_set.digest,
            golden_loaded_at=timestamp(live.loaded_at),
            golden_problems=[problem_to_pb(p) for p in self.v.golden.problems],
            devices=len(self.v.devices()),
            enrollment_policy=self.v.settings.enrollment_policy.value,
            crl_problems=self.v.crls.problems(self.v.clock()),
            clock=self._clock_state(),
        )

    def _clock_state(self) -> pb.ClockState:
        state = pb.ClockState(wall_time=timestamp(self.v.clock()))
        doubt = self.v.clock_state()
        if doubt is not None:
            state.doubt = doubt.reason
            state.doubt_since.CopyFrom(timestamp(doubt.since))
        return state

    @rpc
    def AcknowledgeClock(
        self, request: pb.AcknowledgeClockRequest, context: grpc.ServicerContext
    ) -> pb.AcknowledgeClockResponse:
        refuse_unknown_fields(request)
        cleared, position = self.v.acknowledge_clock(str(caller_of(context)), request.reason)
        return pb.AcknowledgeClockResponse(
            cleared=cleared or "", clock=self._clock_state(), audit_position=position
        )

    @rpc
    def ListDevices(
        self, request: pb.ListDevicesRequest, context: grpc.ServicerContext
    ) -> pb.ListDevicesResponse:
        refuse_unknown_fields(request)
        out = []
        revocations = self.v.revocations()
        for device in self.v.devices():
            name = device.profile
            if not name:  # enrolled before profiles were bound: what the labels select
                found = self.v.golden.current().profile_set.profile_for(device.labels)
                name = found.name if found else ""
            if request.profile and request.profile != name:
                continue
            msg = pb.Device(
                device_id=device.device_id,
                labels=device.labels,
                profile=name,
                enrollment_count=device.enrollment_count,
                pending_ak_name=device.pending_ak_name.hex(),
                approved=device.approved,
                revoked=revocations.revoked_identity(device.device_id) or "",
            )
            latest = self.v.store.latest_verdict(device.device_id)
            if latest is not None:
                current = self.v.currency_of(latest, device, latest.boot_epoch)
                msg.latest_verdict.CopyFrom(verdict_to_pb(latest, current))
                msg.last_attested_at.CopyFrom(timestamp(latest.issued_at))
                msg.last_status = STATUS_TO_PB[latest.status]
            out.append(msg)
        return pb.ListDevicesResponse(devices=out)

    @rpc
    def ApproveAk(
        self, request: pb.ApproveAkRequest, context: grpc.ServicerContext
    ) -> pb.ApproveAkResponse:
        refuse_unknown_fields(request)
        self.v.enrollment.approve_ak(request.device_id, request.ak_name, str(caller_of(context)))
        return pb.ApproveAkResponse(device_id=request.device_id)

    # ------------------------------------------------------------ audit log (issue 15)

    def _checkpoint_size(self, requested: int) -> int:
        """``requested``, or the latest checkpoint's size (the log's head when none)."""
        if requested:
            return requested
        note = self.v.store.latest_checkpoint()
        if note is None:
            return self.v.store.audit_head()[0]
        return Checkpoint.parse(parse_note(note).text).size

    @rpc
    def GetAuditCheckpoint(
        self, request: pb.GetAuditCheckpointRequest, context: grpc.ServicerContext
    ) -> pb.AuditCheckpoint:
        refuse_unknown_fields(request)
        note = self.v.store.latest_checkpoint()
        if note is None:
            return pb.AuditCheckpoint()
        size = Checkpoint.parse(parse_note(note).text).size
        return pb.AuditCheckpoint(signed_note=note, tree_size=size)

    @rpc
    def GetInclusionProof(
        self, request: pb.GetInclusionProofRequest, context: grpc.ServicerContext
    ) -> pb.InclusionProof:
        refuse_unknown_fields(request)
        position = auditlog.position_of(self.v.store, request.verdict_id)
        size = self._checkpoint_size(request.tree_size)
        proof = auditlog.inclusion_proof(self.v.store, position, size)
        return pb.InclusionProof(
            position=proof.position,
            tree_size=proof.size,
            leaf_hash=proof.leaf_hash,
            hashes=list(proof.proof),
            entry=proof.entry,
            root_hash=proof.root,
        )

    @rpc
    def GetConsistencyProof(
        self, request: pb.GetConsistencyProofRequest, context: grpc.ServicerContext
    ) -> pb.ConsistencyProof:
        refuse_unknown_fields(request)
        new_size = self._checkpoint_size(request.new_size)
        proof = auditlog.consistency_proof(self.v.store, request.old_size, new_size)
        return pb.ConsistencyProof(
            old_size=proof.old_size,
            new_size=proof.new_size,
            hashes=list(proof.proof),
            old_root=proof.old_root,
            new_root=proof.new_root,
        )

    @rpc
    def ReloadGolden(
        self, request: pb.ReloadGoldenRequest, context: grpc.ServicerContext
    ) -> pb.ReloadGoldenResponse:
        refuse_unknown_fields(request)
        result = self.v.golden.reload()
        if result.applied:
            self.v.sweep(full=True)  # supersede at once what the new set no longer accepts
        return pb.ReloadGoldenResponse(
            applied=result.applied,
            golden_digest=result.digest,
            problems=[problem_to_pb(p) for p in result.problems],
        )

    @rpc
    def ExplainDevice(
        self, request: pb.ExplainDeviceRequest, context: grpc.ServicerContext
    ) -> pb.ExplainDeviceResponse:
        refuse_unknown_fields(request)
        ima_log = request.ima_log
        explanation = self.v.explain(request.device_id, ima_log if ima_log else None)
        outcome = explanation.outcome
        return pb.ExplainDeviceResponse(
            device_id=request.device_id,
            profile=outcome.profile,
            status=STATUS_TO_PB[outcome.status],
            release=outcome.release,
            outcomes=[
                pb.RuleOutcome(
                    release=rule.release,
                    rule=rule.rule,
                    passed=rule.passed,
                    expected=rule.expected,
                    actual=rule.actual,
                    text=rule.text,
                )
                for rule in explanation.rules
            ],
            runtime=runtime_to_pb(outcome.runtime) if outcome.runtime is not None else None,
        )

    @rpc
    def DryRunGolden(
        self, request: pb.DryRunGoldenRequest, context: grpc.ServicerContext
    ) -> pb.DryRunGoldenResponse:
        refuse_unknown_fields(request)
        try:
            report = self.v.dry_run(dict(request.files))
        except GoldenError as exc:
            return pb.DryRunGoldenResponse(problems=[problem_to_pb(p) for p in exc.problems])
        return pb.DryRunGoldenResponse(
            devices_evaluated=len(report.devices),
            changes=[
                pb.StatusChange(
                    device_id=change.device_id,
                    before=STATUS_TO_PB[change.before.status],
                    after=STATUS_TO_PB[change.after.status],
                    reasons=[reason_to_pb(r) for r in change.after.reasons],
                )
                for change in report.changes
            ],
            not_reevaluated=[
                pb.RuntimeNotEvaluated(
                    device_id=device.device_id, kind=unknown.kind, why=unknown.not_evaluated
                )
                for device in report.not_reevaluated
                if (unknown := device.runtime_unknown) is not None
            ],
            summary=report.summary(),
        )

    @rpc
    def ApproveDevice(
        self, request: pb.ApproveDeviceRequest, context: grpc.ServicerContext
    ) -> pb.DeviceChangeResponse:
        refuse_unknown_fields(request)
        self.v.approve_device(
            request.device_id, request.profile, str(caller_of(context)), request.reason
        )
        return pb.DeviceChangeResponse(device_id=request.device_id, profile=request.profile)

    @rpc
    def SetDeviceProfile(
        self, request: pb.SetDeviceProfileRequest, context: grpc.ServicerContext
    ) -> pb.DeviceChangeResponse:
        refuse_unknown_fields(request)
        self.v.set_device_profile(
            request.device_id, request.profile, str(caller_of(context)), request.reason
        )
        return pb.DeviceChangeResponse(device_id=request.device_id, profile=request.profile)

    @rpc
    def DecommissionDevice(
        self, request: pb.DecommissionDeviceRequest, context: grpc.ServicerContext
    ) -> pb.RevocationResponse:
        refuse_unknown_fields(request)
        done = self.v.decommission(request.device_id, str(caller_of(context)), request.reason)
        return _revoked_to_pb(done)

    @rpc
    def DenyEk(
        self, request: pb.DenyEkRequest, context: grpc.ServicerContext
    ) -> pb.RevocationResponse:
        refuse_unknown_fields(request)
        return _revoked_to_pb(
            self.v.deny_ek(request.ek_fingerprint, str(caller_of(context)), request.reason)
        )

    @rpc
    def UndenyEk(
        self, request: pb.UndenyEkRequest, context: grpc.ServicerContext
    ) -> pb.RevocationResponse:
        refuse_unknown_fields(request)
        if not self.v.undeny_ek(request.ek_fingerprint, str(caller_of(context)), request.reason):
            raise errors.UnknownDevice(f"EK {request.ek_fingerprint} is not denied")
        return pb.RevocationResponse()

    @rpc
    def RevokeAk(
        self, request: pb.RevokeAkRequest, context: grpc.ServicerContext
    ) -> pb.RevocationResponse:
        refuse_unknown_fields(request)
        done = self.v.revoke_ak(
            request.device_id, request.ak_name, str(caller_of(context)), request.reason
        )
        return _revoked_to_pb(done)

    @rpc
    def ListRevocations(
        self, request: pb.ListRevocationsRequest, context: grpc.ServicerContext
    ) -> pb.ListRevocationsResponse:
        refuse_unknown_fields(request)
        return pb.ListRevocationsResponse(
            revocations=[revocation_to_pb(r) for r in self.v.store.revocations()]
        )


def revocation_to_pb(record: RevocationRecord) -> pb.Revocation:
    return pb.Revocation(
        kind=record.kind.value,
        subject=record.subject,
        device_id=record.device_id,
        reason=record.reason,
        actor=record.actor,
        at=timestamp(record.at),
    )


def _revoked_to_pb(done: Revoked) -> pb.RevocationResponse:
    return pb.RevocationResponse(
        revocation=revocation_to_pb(done.record), superseded=done.superseded
    )
