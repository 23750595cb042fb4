"""gRPC adapters: thin translations between messages and ``verifier.app.Verifier`` calls.

Each method: refuse unknown fields, convert, call the application, convert back. Errors are
mapped to status codes in ``verifier.service.errors`` only.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

import grpc

from fleetattest.v1 import fleetattest_pb2 as pb
from fleetattest.v1 import fleetattest_pb2_grpc as pb_grpc
from verifier import __version__, errors
from verifier.app import Verifier
from verifier.enrollment.flow import EnrollmentOutcome
from verifier.golden.load import GoldenError, GoldenProblem
from verifier.service.convert import (
    STATUS_TO_PB,
    reason_to_pb,
    refuse_unknown_fields,
    timestamp,
    verdict_to_pb,
)
from verifier.service.convert import evidence_from as _evidence_from
from verifier.service.errors import abort

WATCH_POLL_SECONDS = 1.0  # how often a stream looks for other replicas' verdicts

Svc = TypeVar("Svc")
Req = TypeVar("Req")
Resp = TypeVar("Resp")
Handler = Callable[[Svc, Req, grpc.ServicerContext], Resp]

_OUTCOME = {
    EnrollmentOutcome.ENROLLED: pb.ENROLLMENT_OUTCOME_ENROLLED,
    EnrollmentOutcome.REENROLLED: pb.ENROLLMENT_OUTCOME_REENROLLED,
}


def rpc(method: Handler[Svc, Req, Resp]) -> Handler[Svc, Req, Resp]:
    """Map every exception to a status code, in one place."""

    @functools.wraps(method)
    def wrapper(self: Svc, request: Req, context: grpc.ServicerContext) -> Resp:
        try:
            return method(self, request, context)
        except Exception as exc:
            abort(context, exc, method.__name__)
            raise  # unreachable: abort raises

    return wrapper


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
        started = self.v.enrollment.start(
            ek_certificate=request.ek_certificate,
            ek_public=request.ek_public,
            ak_public=request.ak_public,
            labels=dict(request.labels),
        )
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
        result = self.v.enrollment.finish(request.challenge_id, request.proof)
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
        attested = self.v.attest_evidence(evidence)
        verdict = attested.verdict
        return pb.AttestResponse(
            verdict=verdict_to_pb(verdict, self.v.freshness(verdict), attested.token),
            ima_entries=attested.ima_entries,
        )


class RelyingPartyService(pb_grpc.RelyingPartyServicer):
    def __init__(self, verifier: Verifier, max_watchers: int = 2) -> None:
        self.v = verifier
        # A stream holds one server thread for its lifetime: cap them so that streams can
        # never take every thread away from agents (the rest get RESOURCE_EXHAUSTED).
        self._watchers = threading.BoundedSemaphore(max_watchers)

    @rpc
    def GetVerdict(
        self, request: pb.GetVerdictRequest, context: grpc.ServicerContext
    ) -> pb.GetVerdictResponse:
        refuse_unknown_fields(request)
        verdict, freshness = self.v.latest_verdict(request.device_id)
        token = self.v.token_for(verdict, nonce=request.nonce or None)
        return pb.GetVerdictResponse(verdict=verdict_to_pb(verdict, freshness, token))

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
            response.verdict.CopyFrom(verdict_to_pb(verdict, self.v.freshness(verdict)))
        return response

    def WatchVerdicts(
        self, request: pb.WatchVerdictsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.Verdict]:
        """Every verdict after ``after_sequence``, then new ones as they are stored.

        Resumable: a client that reconnects with the last ``sequence`` it saw misses nothing,
        whichever replica stored the verdicts (the store's sequence is the cursor).
        """
        if not self._watchers.acquire(blocking=False):
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "too many verdict streams on this verifier; retry later or on another replica",
            )
        try:
            refuse_unknown_fields(request)
            cursor = request.after_sequence
            devices = list(request.device_ids)
            while context.is_active():
                batch = self.v.verdicts_after(cursor, devices, request.profile)
                for verdict in batch:
                    cursor = verdict.sequence
                    yield verdict_to_pb(verdict, self.v.freshness(verdict))
                if not batch:
                    self.v.wait_for_verdicts(WATCH_POLL_SECONDS)
        except Exception as exc:
            abort(context, exc, "WatchVerdicts")
        finally:
            self._watchers.release()


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
        )

    @rpc
    def ListDevices(
        self, request: pb.ListDevicesRequest, context: grpc.ServicerContext
    ) -> pb.ListDevicesResponse:
        refuse_unknown_fields(request)
        out = []
        for device in self.v.devices():
            profile = self.v.golden.current().profile_set.profile_for(device.labels)
            name = profile.name if profile else ""
            if request.profile and request.profile != name:
                continue
            msg = pb.Device(
                device_id=device.device_id,
                labels=device.labels,
                profile=name,
                enrollment_count=device.enrollment_count,
                pending_ak_name=device.pending_ak_name.hex(),
            )
            latest = self.v.store.latest_verdict(device.device_id)
            if latest is not None:
                msg.latest_verdict.CopyFrom(verdict_to_pb(latest, self.v.freshness(latest)))
            out.append(msg)
        return pb.ListDevicesResponse(devices=out)

    @rpc
    def ApproveAk(
        self, request: pb.ApproveAkRequest, context: grpc.ServicerContext
    ) -> pb.ApproveAkResponse:
        refuse_unknown_fields(request)
        self.v.enrollment.approve_ak(request.device_id, request.ak_name)
        return pb.ApproveAkResponse(device_id=request.device_id)

    @rpc
    def ReloadGolden(
        self, request: pb.ReloadGoldenRequest, context: grpc.ServicerContext
    ) -> pb.ReloadGoldenResponse:
        refuse_unknown_fields(request)
        result = self.v.golden.reload()
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
        explanation = self.v.explain(request.device_id)
        return pb.ExplainDeviceResponse(
            device_id=request.device_id,
            profile=explanation.outcome.profile,
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
        )
