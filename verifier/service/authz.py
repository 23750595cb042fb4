"""Authorization: one table, enforced in one place (a server interceptor), before any handler.

``POLICY`` maps every full RPC method name to the roles allowed to call it. The decisions:

- ``Agent.*``: anyone. Agents are anonymous at the TLS layer; the TPM authenticates them
  (credential activation at enrollment, the AK's signature on every quote).
- ``RelyingParty.GetJwks``: anyone. The token keys are public; what protects a relying party
  is that it fetches them over an authenticated channel (the client's job), not who asks.
- ``RelyingParty.GetVerdict``: relying parties and operators (an operator debugging a device).
- ``RelyingParty.CheckRollout`` and ``WatchVerdicts``: relying parties only. Rollout gating is
  the update servers' business, and streams hold a server thread each: they are reserved for
  the callers that need them (operators use ``ExplainDevice`` and ``ListDevices``).
- ``Operator.*``: operators only (certificate or the operator socket), the audit log's
  checkpoint and proof calls included.

Order of checks for each call: the method is in the table (else PERMISSION_DENIED: fail
closed, a new RPC is unreachable until someone decides who may call it); the caller is
resolved (the operator socket -> operator; a verified client certificate -> its SPIFFE role;
otherwise anonymous); an anonymous caller on a method that needs a role -> UNAUTHENTICATED; a
role not allowed -> PERMISSION_DENIED; rate limits for unauthenticated calls (``RATE_LIMITED``)
-> RESOURCE_EXHAUSTED with a retry hint; a stream slot for response streams ->
RESOURCE_EXHAUSTED. Only then does the handler run, and ``caller_of(context)`` tells it who
called. Every Operator call is logged with the caller's identity, and so is every refusal.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import grpc

from verifier.service.ratelimit import RateLimiter, StreamSlots, peer_key
from verifier.tls.identity import (
    ANONYMOUS,
    CallerIdentity,
    IdentityError,
    Role,
    identity_from_auth_context,
)

log = logging.getLogger(__name__)
audit = logging.getLogger("attest-verifier.audit")

PACKAGE = "fleetattest.v1"
ANYONE = frozenset(Role)
CALLERS = frozenset({Role.RELYING_PARTY, Role.OPERATOR})
RELYING_PARTIES = frozenset({Role.RELYING_PARTY})
OPERATORS = frozenset({Role.OPERATOR})


def _m(service: str, method: str) -> str:
    return f"/{PACKAGE}.{service}/{method}"


POLICY: Mapping[str, frozenset[Role]] = {
    _m("Agent", "StartEnrollment"): ANYONE,
    _m("Agent", "FinishEnrollment"): ANYONE,
    _m("Agent", "GetChallenge"): ANYONE,
    _m("Agent", "Attest"): ANYONE,
    _m("RelyingParty", "GetVerdict"): CALLERS,
    _m("RelyingParty", "CheckRollout"): RELYING_PARTIES,
    _m("RelyingParty", "WatchVerdicts"): RELYING_PARTIES,
    _m("RelyingParty", "GetJwks"): ANYONE,
    _m("Operator", "GetStatus"): OPERATORS,
    _m("Operator", "ListDevices"): OPERATORS,
    _m("Operator", "ApproveAk"): OPERATORS,
    _m("Operator", "ReloadGolden"): OPERATORS,
    _m("Operator", "ExplainDevice"): OPERATORS,
    _m("Operator", "DryRunGolden"): OPERATORS,
    _m("Operator", "ApproveDevice"): OPERATORS,
    _m("Operator", "SetDeviceProfile"): OPERATORS,
    _m("Operator", "DecommissionDevice"): OPERATORS,
    _m("Operator", "DenyEk"): OPERATORS,
    _m("Operator", "UndenyEk"): OPERATORS,
    _m("Operator", "RevokeAk"): OPERATORS,
    _m("Operator", "ListRevocations"): OPERATORS,
    # The audit log (issue 15): operators, like every Operator method.
    _m("Operator", "GetAuditCheckpoint"): OPERATORS,
    _m("Operator", "GetConsistencyProof"): OPERATORS,
    _m("Operator", "GetInclusionProof"): OPERATORS,
    # Clearing clock doubt (issue 18) re-enables tokens: operators only.
    _m("Operator", "AcknowledgeClock"): OPERATORS,
    # The standard health check (verifier.service.health): load balancers and `status` ask it
    # without credentials; it says SERVING or NOT_SERVING and nothing else. Watch (a stream)
    # is not offered.
    "/grpc.health.v1.Health/Check": ANYONE,
}


def _ek_key(request: object) -> str:
    return hashlib.sha256(bytes(getattr(request, "ek_public", b""))).hexdigest()


def _device_key(request: object) -> str:
    return str(getattr(request, "device_id", ""))


# The unauthenticated calls that create state (a challenge, a nonce): rate-limited per peer
# address and per device (for StartEnrollment the device is its EK: the id derives from it).
RATE_LIMITED: Mapping[str, Callable[[object], str]] = {
    _m("Agent", "StartEnrollment"): _ek_key,
    _m("Agent", "GetChallenge"): _device_key,
}

OPERATOR_SOCKET = CallerIdentity(Role.OPERATOR, "operator-socket", "unix-socket")


class Denied(Exception):
    """A call the interceptor refuses: its status code and message."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


_callers: weakref.WeakKeyDictionary[Any, CallerIdentity] = weakref.WeakKeyDictionary()
_callers_lock = threading.Lock()


def caller_of(context: grpc.ServicerContext) -> CallerIdentity:
    """Who called this RPC, as the interceptor resolved it (anonymous if it did not run)."""
    with _callers_lock:
        return _callers.get(context, ANONYMOUS)


def resolve_caller(
    auth: Mapping[str, Any], peer: str, trust_domain: str
) -> tuple[CallerIdentity, str | None]:
    """The caller and, for a certificate that names nobody, why it was not accepted."""
    security = list(auth.get("transport_security_type", ()))
    if security == [b"local"] and peer.startswith("unix:"):
        return OPERATOR_SOCKET, None
    try:
        identity = identity_from_auth_context(auth, trust_domain)
    except IdentityError as exc:
        return ANONYMOUS, str(exc)
    return (identity or ANONYMOUS), None


def authorize(
    policy: Mapping[str, frozenset[Role]],
    method: str,
    caller: CallerIdentity,
    certificate_problem: str | None = None,
) -> None:
    """Raise ``Denied`` unless ``policy`` lets ``caller`` call ``method``."""
    allowed = policy.get(method)
    if allowed is None:
        raise Denied(grpc.StatusCode.PERMISSION_DENIED, f"{method} is not in the access table")
    if caller.role in allowed:
        return
    short = method.rsplit("/", 1)[-1]
    roles = " or ".join(sorted(r.value for r in allowed))
    if caller.role is Role.AGENT:
        why = f" ({certificate_problem})" if certificate_problem else ""
        raise Denied(
            grpc.StatusCode.UNAUTHENTICATED,
            f"{short} needs a client certificate for role {roles}{why}: call the verifier's "
            "mutual-TLS port with --cert and --key",
        )
    raise Denied(
        grpc.StatusCode.PERMISSION_DENIED,
        f"{short} is for role {roles} only; {caller.role}/{caller.name} may not call it",
    )


class AuthorizationInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Enforces ``policy`` (and rate limits and stream slots) on every call of the server.

    ``trust_domain`` is the SPIFFE trust domain of client certificates (``ServerTls.
    trust_domain``, read from ``--client-ca``). Without ``rate_limiter`` the open calls are not
    metered; without ``streams`` response streams are not capped here.
    """

    def __init__(
        self,
        trust_domain: str,
        *,
        rate_limiter: RateLimiter | None = None,
        streams: StreamSlots | None = None,
        policy: Mapping[str, frozenset[Role]] = POLICY,
        rate_limited: Mapping[str, Callable[[object], str]] = RATE_LIMITED,
    ) -> None:
        self.trust_domain = trust_domain
        self.rate_limiter = rate_limiter
        self.streams = streams
        self.policy = policy
        self.rate_limited = rate_limited

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None  # UNIMPLEMENTED: nothing would run
        return self._wrap(handler, handler_call_details.method)

    def _wrap(
        self, handler: grpc.RpcMethodHandler[Any, Any], method: str
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """The same handler with the checks run first (and a slot held by response streams)."""
        admit = self._admit
        slot = self._stream_slot
        kinds = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            unary_unary = handler.unary_unary

            def uu(request: Any, context: grpc.ServicerContext) -> Any:
                admit(method, request, context)
                return unary_unary(request, context)

            return grpc.unary_unary_rpc_method_handler(uu, **kinds)
        if handler.stream_unary is not None:
            stream_unary = handler.stream_unary

            def su(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
                admit(method, None, context)
                return stream_unary(requests, context)

            return grpc.stream_unary_rpc_method_handler(su, **kinds)
        if handler.unary_stream is not None:
            unary_stream = handler.unary_stream

            def us(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                admit(method, request, context)
                release = slot(context)
                try:
                    yield from unary_stream(request, context)
                finally:
                    release()

            return grpc.unary_stream_rpc_method_handler(us, **kinds)
        stream_stream = handler.stream_stream
        if stream_stream is None:
            raise TypeError(f"{method}: a method handler without a behaviour")

        def ss(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
            admit(method, None, context)
            release = slot(context)
            try:
                yield from stream_stream(requests, context)
            finally:
                release()

        return grpc.stream_stream_rpc_method_handler(ss, **kinds)

    def _admit(self, method: str, request: object, context: grpc.ServicerContext) -> None:
        """Let the call through or abort it (``context.abort`` raises: the handler never runs)."""
        peer = context.peer()
        caller, problem = resolve_caller(context.auth_context(), peer, self.trust_domain)
        try:
            authorize(self.policy, method, caller, problem)
            if request is not None:
                self._rate_limit(method, request, peer, caller)
        except Denied as exc:
            log.warning("refused %s for %s at %s: %s", method, caller, peer, exc.message)
            context.abort(exc.code, exc.message)
        if method.startswith(f"/{PACKAGE}.Operator/"):
            audit.info("operator call %s by %s at %s", method, caller, peer)
        with _callers_lock:
            _callers[context] = caller

    def _rate_limit(self, method: str, request: object, peer: str, caller: CallerIdentity) -> None:
        key_of = self.rate_limited.get(method)
        if key_of is None or self.rate_limiter is None or caller.role is not Role.AGENT:
            return
        retry = self.rate_limiter.take(peer_key(peer), key_of(request))
        if retry is not None:
            raise Denied(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"rate limited: too many {method.rsplit('/', 1)[-1]} calls from this address "
                f"or for this device; retry after {retry:.1f} s",
            )

    def _stream_slot(self, context: grpc.ServicerContext) -> Callable[[], None]:
        if self.streams is None:
            return lambda: None
        caller = caller_of(context)
        key = None if caller.role is Role.AGENT else f"{caller.role}/{caller.name}"
        release = self.streams.acquire(key)
        if release is None:
            per, total = self.streams.per_identity, self.streams.total
            who = (
                "anonymous callers get no streams"
                if key is None
                else f"at most {per} per caller and {total} in all"
            )
            log.warning("refused a stream for %s: %s", caller, who)
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"stream limit reached: {who}")
        context.add_callback(release)  # released when the RPC ends, however it ends
        return release
