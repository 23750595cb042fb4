"""The one place where verifier errors become gRPC status codes.

Client errors say what was wrong with the request; the message is the exception's text.
Anything unexpected becomes INTERNAL with a generic message (the details go to the log only).
``ImaLogRequired`` is FAILED_PRECONDITION, its text starting "ImaLogRequired: send the whole
IMA log" (``IMA_LOG_REQUIRED``): the agent then sends its whole list with the next challenge.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import grpc

from verifier import errors
from verifier.audit.errors import AuditRangeError
from verifier.token.errors import KeyRingError

log = logging.getLogger(__name__)

IMA_LOG_REQUIRED = "ImaLogRequired: send the whole IMA log"  # the agent matches this prefix

# Most specific first: the first isinstance match wins.
_CODES: tuple[tuple[type[errors.AttestationError], grpc.StatusCode], ...] = (
    (errors.LimitExceeded, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.MalformedEvidence, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.UnknownDevice, grpc.StatusCode.NOT_FOUND),
    (errors.AmbiguousDevice, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.Revoked, grpc.StatusCode.PERMISSION_DENIED),
    (errors.ApprovalRequired, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.EnrollmentRefused, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.ActivationFailed, grpc.StatusCode.PERMISSION_DENIED),
    (errors.SignatureInvalid, grpc.StatusCode.PERMISSION_DENIED),
    (errors.NonceMismatch, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.StaleEvidence, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.ImaLogRequired, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.ReplayMismatch, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.PolicyViolation, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.StoreUnavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.ClockInDoubt, grpc.StatusCode.UNAVAILABLE),
    (AuditRangeError, grpc.StatusCode.OUT_OF_RANGE),
    (KeyRingError, grpc.StatusCode.INTERNAL),
)


def status_for(exc: errors.AttestationError) -> grpc.StatusCode:
    for cls, code in _CODES:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.FAILED_PRECONDITION


def abort(
    context: grpc.ServicerContext,
    exc: BaseException,
    method: str,
    fields: Mapping[str, object] | None = None,
) -> None:
    """Terminate the RPC with the status that ``exc`` maps to (never returns).

    ``fields``: structured log fields of the call (``verifier.logjson.FIELDS``: rpc, caller,
    device, duration), put on the log record of the refusal."""
    extra = dict(fields or {})
    if isinstance(exc, errors.AttestationError):
        code = status_for(exc)
        log.info("%s refused: %s: %s", method, type(exc).__name__, exc, extra=extra)
        if isinstance(exc, errors.ImaLogRequired):
            context.abort(code, f"{IMA_LOG_REQUIRED}: {exc}")
        context.abort(code, f"{type(exc).__name__}: {exc}")
    log.exception("%s failed unexpectedly", method, extra=extra)
    context.abort(grpc.StatusCode.INTERNAL, "internal error (see the verifier's log)")
