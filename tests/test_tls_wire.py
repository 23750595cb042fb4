"""The secured wire, against a real gRPC server over TLS on 127.0.0.1.

The server serves a small generic service whose methods carry the verifier's real method names
(so the real access table applies) and records every call its handlers run: a refused call
must not appear there. It listens like the verifier: an agent port (TLS, no client
certificate), a caller port (mutual TLS) and an operator socket, all behind
``AuthorizationInterceptor``.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import ssl
import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from verifier.limits import Limits
from verifier.service.authz import AuthorizationInterceptor, caller_of
from verifier.service.ratelimit import RateLimiter, StreamSlots
from verifier.tls import pki
from verifier.tls.credentials import (
    ServerTls,
    TlsConfigError,
    TlsFiles,
    add_operator_socket,
    agent_channel_credentials,
    caller_channel_credentials,
    explain_connect_error,
    open_channel,
    operator_socket_channel,
)
from verifier.tls.identity import Role, fingerprint

NOW = dt.datetime.now(dt.UTC)
TIMEOUT = 10.0


@dataclass
class Request:
    device_id: str = ""
    ek_public: bytes = b""


def _request(data: bytes) -> Request:
    return Request(device_id=data.decode(), ek_public=data)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Recorder:
    """What the handlers ran, and a gate that holds verdict streams open."""

    calls: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    release_streams: threading.Event = field(default_factory=threading.Event)

    def ran(self, method: str, context: grpc.ServicerContext) -> bytes:
        caller = caller_of(context)
        with self.lock:
            self.calls.append((method, f"{caller.role}/{caller.name}"))
        return f"{caller.role}/{caller.name}".encode()

    def methods(self) -> list[str]:
        with self.lock:
            return [m for m, _ in self.calls]


UNARY = {
    "Agent": ["StartEnrollment", "GetChallenge", "Attest"],
    "RelyingParty": ["GetVerdict", "CheckRollout", "GetJwks"],
    "Operator": ["ListDevices", "ApproveAk", "NotInTheTable"],
}


def _handlers(rec: Recorder) -> list[grpc.GenericRpcHandler[Any, Any]]:
    out: list[grpc.GenericRpcHandler[Any, Any]] = []
    for service, methods in UNARY.items():
        table: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        for name in methods:

            def behaviour(
                request: Request, context: grpc.ServicerContext, name: str = name
            ) -> bytes:
                return rec.ran(name, context)

            table[name] = grpc.unary_unary_rpc_method_handler(
                behaviour, request_deserializer=_request
            )
        if service == "RelyingParty":

            def watch(request: Request, context: grpc.ServicerContext) -> Iterator[bytes]:
                yield rec.ran("WatchVerdicts", context)
                while context.is_active() and not rec.release_streams.wait(0.05):
                    pass
                yield b"after"

            table["WatchVerdicts"] = grpc.unary_stream_rpc_method_handler(
                watch, request_deserializer=_request
            )
        out.append(grpc.method_handlers_generic_handler(f"fleetattest.v1.{service}", table))
    return out


@dataclass
class Verifier:
    pki_dir: Path
    tls: ServerTls
    clock: FakeClock
    limiter: RateLimiter
    slots: StreamSlots
    rec: Recorder
    agent_port: int
    caller_port: int
    socket_path: Path

    def agent(self, ca: Path | None = None) -> grpc.Channel:
        creds = agent_channel_credentials(ca or self.pki_dir / "ca.pem")
        return grpc.secure_channel(f"localhost:{self.agent_port}", creds)

    def caller(self, stem: str, directory: Path | None = None) -> grpc.Channel:
        d = directory or self.pki_dir
        creds = caller_channel_credentials(
            self.pki_dir / "ca.pem", d / f"{stem}.pem", d / f"{stem}.key"
        )
        return grpc.secure_channel(f"localhost:{self.caller_port}", creds)


@pytest.fixture
def verifier(tmp_path: Path) -> Iterator[Verifier]:
    pki_dir = tmp_path / "pki"
    pki.init_pki(pki_dir, verifier_names=["verifier.test"], now=NOW)
    files = TlsFiles(pki_dir / "verifier.pem", pki_dir / "verifier.key", pki_dir / "ca.pem")
    clock = FakeClock()
    tls = ServerTls(files, clock=clock)
    limits = Limits(open_calls_peer_burst=1000.0, rate_limit_max_keys=50)
    limiter = RateLimiter(clock, limits)
    slots = StreamSlots(per_identity=1, total=2)
    rec = Recorder()
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=8),
        interceptors=[
            AuthorizationInterceptor(tls.trust_domain, rate_limiter=limiter, streams=slots)
        ],
    )
    server.add_generic_rpc_handlers(_handlers(rec))
    agent_port = server.add_secure_port("127.0.0.1:0", tls.agent_credentials())
    caller_port = server.add_secure_port("127.0.0.1:0", tls.caller_credentials())
    socket_path = tmp_path / "operator.sock"
    add_operator_socket(server, socket_path)
    server.start()
    try:
        yield Verifier(
            pki_dir, tls, clock, limiter, slots, rec, agent_port, caller_port, socket_path
        )
    finally:
        rec.release_streams.set()
        server.stop(grace=None).wait()


def call(channel: grpc.Channel, service: str, method: str, payload: bytes = b"dev-1") -> str:
    stub = channel.unary_unary(f"/fleetattest.v1.{service}/{method}", None, None)
    return bytes(stub(payload, timeout=TIMEOUT)).decode()


def refused(
    channel: grpc.Channel, service: str, method: str, payload: bytes = b"d"
) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(channel, service, method, payload)
    return info.value


def _other_pki(tmp_path: Path) -> Path:
    other = tmp_path / "other-pki"
    pki.init_pki(other, verifier_names=[], now=NOW)
    return other


# ------------------------------------------------------------------ transport


def test_plaintext_client_to_tls_listener_is_refused(verifier: Verifier) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{verifier.agent_port}") as ch:
        err = refused(ch, "Agent", "GetChallenge")
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert verifier.rec.methods() == []


def test_client_certificate_from_another_ca_is_refused(verifier: Verifier, tmp_path: Path) -> None:
    other = _other_pki(tmp_path)
    with verifier.caller("operator", directory=other) as ch:
        err = refused(ch, "Operator", "ListDevices")
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert verifier.rec.methods() == []


def test_expired_client_certificate_is_refused(verifier: Verifier, tmp_path: Path) -> None:
    out = tmp_path / "expired"
    pki.issue_client(
        verifier.pki_dir / "ca.pem",
        verifier.pki_dir / "ca.key",
        role=Role.OPERATOR,
        name="old-op",
        out=out,
        now=NOW - dt.timedelta(days=30),
        days=1,
    )
    with verifier.caller("old-op", directory=out) as ch:
        err = refused(ch, "Operator", "ListDevices")
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert verifier.rec.methods() == []


def test_caller_port_without_client_certificate_is_refused(verifier: Verifier) -> None:
    creds = agent_channel_credentials(verifier.pki_dir / "ca.pem")
    with grpc.secure_channel(f"localhost:{verifier.caller_port}", creds) as ch:
        err = refused(ch, "Agent", "GetChallenge")
    assert err.code() == grpc.StatusCode.UNAVAILABLE


def test_agent_pinned_to_another_ca_refuses_the_verifier(
    verifier: Verifier, tmp_path: Path
) -> None:
    other = _other_pki(tmp_path)
    address = f"localhost:{verifier.agent_port}"
    with open_channel(address, ca=other / "ca.pem") as ch:
        err = refused(ch, "Agent", "GetChallenge")
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert explain_connect_error(address, str(err.details())) == (
        f"cannot authenticate the verifier at {address}: its certificate does not chain to "
        "the pinned CA (--ca)"
    )
    assert verifier.rec.methods() == []


def test_client_without_a_pinned_ca_refuses_to_connect(verifier: Verifier) -> None:
    with pytest.raises(TlsConfigError, match="plaintext"):
        open_channel(f"localhost:{verifier.agent_port}", ca=None)


def test_open_channel_with_certificate_is_the_callers_identity(verifier: Verifier) -> None:
    d = verifier.pki_dir
    address = f"localhost:{verifier.caller_port}"
    with open_channel(
        address, ca=d / "ca.pem", cert=d / "operator.pem", key=d / "operator.key"
    ) as ch:
        assert call(ch, "Operator", "ListDevices") == "operator/operator"
    with open_channel(f"unix:{verifier.socket_path}", ca=None) as ch:
        assert call(ch, "Operator", "ListDevices") == "operator/operator-socket"


def test_tls_1_1_client_is_refused_and_1_2_accepted(verifier: Verifier) -> None:
    def handshake(version: ssl.TLSVersion) -> str:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(verifier.pki_dir / "ca.pem")
        ctx.minimum_version = ctx.maximum_version = version
        ctx.set_ciphers("ALL:@SECLEVEL=0")
        ctx.set_alpn_protocols(["h2"])
        with (
            socket.create_connection(("127.0.0.1", verifier.agent_port), timeout=TIMEOUT) as s,
            ctx.wrap_socket(s, server_hostname="localhost") as t,
        ):
            return str(t.version())

    with pytest.raises(ssl.SSLError):
        handshake(ssl.TLSVersion.TLSv1_1)
    assert handshake(ssl.TLSVersion.TLSv1_2) == "TLSv1.2"


# ------------------------------------------------------------------ authorization


def test_anonymous_agent_calls_pass_as_agent(verifier: Verifier) -> None:
    with verifier.agent() as ch:
        assert call(ch, "Agent", "GetChallenge") == "agent/anonymous"
        assert call(ch, "RelyingParty", "GetJwks") == "agent/anonymous"


def test_anonymous_approve_ak_is_unauthenticated(verifier: Verifier) -> None:
    with verifier.agent() as ch:
        err = refused(ch, "Operator", "ApproveAk")
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "client certificate" in str(err.details())
    assert "ApproveAk" not in verifier.rec.methods()


def test_relying_party_certificate_on_operator_method_is_denied(verifier: Verifier) -> None:
    with verifier.caller("relying-party") as ch:
        err = refused(ch, "Operator", "ListDevices")
        assert call(ch, "RelyingParty", "CheckRollout") == "relying-party/relying-party"
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "operator" in str(err.details())
    assert verifier.rec.methods() == ["CheckRollout"]


def test_operator_certificate_on_relying_party_only_method_is_denied(verifier: Verifier) -> None:
    with verifier.caller("operator") as ch:
        err = refused(ch, "RelyingParty", "CheckRollout")
        assert call(ch, "RelyingParty", "GetVerdict") == "operator/operator"
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert verifier.rec.methods() == ["GetVerdict"]


def test_operator_call_is_logged_with_the_callers_identity(
    verifier: Verifier, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.INFO, logger="attest-verifier.audit"),
        verifier.caller("operator") as ch,
    ):
        assert call(ch, "Operator", "ListDevices") == "operator/operator"
    fp = fingerprint(
        x509.load_pem_x509_certificate((verifier.pki_dir / "operator.pem").read_bytes())
    )
    audit = [r.getMessage() for r in caplog.records if r.name == "attest-verifier.audit"]
    assert any("ListDevices" in m and "operator/operator" in m and fp[:16] in m for m in audit)


def test_method_missing_from_the_table_is_denied(verifier: Verifier) -> None:
    with verifier.caller("operator") as ch:
        err = refused(ch, "Operator", "NotInTheTable")
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert verifier.rec.methods() == []


def test_certificate_for_another_trust_domain_is_unauthenticated(
    verifier: Verifier, tmp_path: Path
) -> None:
    # Signed by the trusted CA (the TLS layer accepts it) but naming another trust domain.
    ca_key, ca_cert, _ = pki.load_ca(verifier.pki_dir / "ca.pem", verifier.pki_dir / "ca.key")
    key, cert = pki._client_leaf(ca_key, ca_cert, "evil.example", Role.OPERATOR, "mallory", NOW, 1)
    out = tmp_path / "foreign"
    out.mkdir()
    (out / "mallory.pem").write_bytes(pki._cert_pem(cert))
    (out / "mallory.key").write_bytes(pki._key_pem(key))
    with verifier.caller("mallory", directory=out) as ch:
        err = refused(ch, "Operator", "ListDevices")
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "trust domain" in str(err.details())
    assert verifier.rec.methods() == []


def test_operator_socket_caller_is_operator(verifier: Verifier) -> None:
    assert (verifier.socket_path.stat().st_mode & 0o777) == 0o600
    with operator_socket_channel(verifier.socket_path) as ch:
        assert call(ch, "Operator", "ApproveAk") == "operator/operator-socket"


def test_operator_socket_refuses_to_replace_a_regular_file(tmp_path: Path) -> None:
    victim = tmp_path / "not-a-socket"
    victim.write_text("keep me")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    with pytest.raises(TlsConfigError):
        add_operator_socket(server, victim)
    assert victim.read_text() == "keep me"


# ------------------------------------------------------------------ streams and rate limits


def _open_stream(ch: grpc.Channel) -> Iterator[bytes]:
    watch = ch.unary_stream("/fleetattest.v1.RelyingParty/WatchVerdicts", None, None)
    return iter(watch(b"", timeout=TIMEOUT))


def test_one_identity_cannot_take_every_stream(verifier: Verifier, tmp_path: Path) -> None:
    for name in ("alpha", "beta", "gamma"):
        pki.issue_client(
            verifier.pki_dir / "ca.pem",
            verifier.pki_dir / "ca.key",
            role=Role.RELYING_PARTY,
            name=name,
            out=tmp_path / name,
            now=NOW,
        )
    alpha = verifier.caller("alpha", tmp_path / "alpha")
    beta = verifier.caller("beta", tmp_path / "beta")
    gamma = verifier.caller("gamma", tmp_path / "gamma")
    first = _open_stream(alpha)
    assert next(first) == b"relying-party/alpha"
    second = _open_stream(alpha)
    with pytest.raises(grpc.RpcError) as info:
        next(second)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "per caller" in str(info.value.details())
    other = _open_stream(beta)
    assert next(other) == b"relying-party/beta"
    third = _open_stream(gamma)  # the global cap (2) is full now
    with pytest.raises(grpc.RpcError) as info:
        next(third)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    verifier.rec.release_streams.set()
    assert list(first) == [b"after"]
    assert list(other) == [b"after"]
    for ch in (alpha, beta, gamma):
        ch.close()


def test_get_challenge_flood_is_rate_limited_with_a_retry_hint(verifier: Verifier) -> None:
    burst = int(Limits().open_calls_device_burst)
    with verifier.agent() as ch:
        for _ in range(burst):
            call(ch, "Agent", "GetChallenge", b"flooded-device")
        err = refused(ch, "Agent", "GetChallenge", b"flooded-device")
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "retry after 1.0 s" in str(err.details())
        assert call(ch, "Agent", "GetChallenge", b"another-device") == "agent/anonymous"
        verifier.clock.now += 1.0  # one token back
        call(ch, "Agent", "GetChallenge", b"flooded-device")
    assert verifier.rec.methods().count("GetChallenge") == burst + 2


def test_flood_of_fresh_devices_keeps_the_tables_bounded(verifier: Verifier) -> None:
    max_keys = 50  # the fixture's Limits
    with verifier.agent() as ch:
        for i in range(3 * max_keys):
            call(ch, "Agent", "GetChallenge", f"device-{i}".encode())
            call(ch, "Agent", "StartEnrollment", f"ek-{i}".encode())
    assert len(verifier.limiter.devices) <= max_keys
    assert len(verifier.limiter.peers) == 1
    assert verifier.limiter.devices.evicted > 0


# ------------------------------------------------------------------ rotation


def _served_certificate(port: int, ca: Path) -> bytes:
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s,
        ctx.wrap_socket(s, server_hostname="localhost") as t,
    ):
        der = t.getpeercert(binary_form=True)
    assert der is not None
    return der


def _rotate(verifier: Verifier, tmp_path: Path, *, key_of_another: bool = False) -> bytes:
    new = tmp_path / "rotated"
    pki.issue_server(
        verifier.pki_dir / "ca.pem",
        verifier.pki_dir / "ca.key",
        names=["verifier.test"],
        stem="verifier2",
        out=new,
        now=NOW,
    )
    if key_of_another:
        pki.issue_server(
            verifier.pki_dir / "ca.pem",
            verifier.pki_dir / "ca.key",
            names=["x"],
            stem="unrelated",
            out=new,
            now=NOW,
        )
        os.replace(new / "unrelated.key", verifier.pki_dir / "verifier.key")
    else:
        os.replace(new / "verifier2.key", verifier.pki_dir / "verifier.key")
    os.replace(new / "verifier2.pem", verifier.pki_dir / "verifier.pem")
    cert = x509.load_pem_x509_certificate((verifier.pki_dir / "verifier.pem").read_bytes())
    return cert.public_bytes(Encoding.DER)


def test_certificate_rotation_on_reload_keeps_existing_connections(
    verifier: Verifier, tmp_path: Path
) -> None:
    ca = verifier.pki_dir / "ca.pem"
    before = _served_certificate(verifier.agent_port, ca)
    rp = verifier.caller("relying-party")
    stream = _open_stream(rp)
    assert next(stream) == b"relying-party/relying-party"
    agent = verifier.agent()
    assert call(agent, "Agent", "Attest") == "agent/anonymous"

    new = _rotate(verifier, tmp_path)
    verifier.tls.reload()  # SIGHUP
    assert _served_certificate(verifier.agent_port, ca) == new != before
    assert call(agent, "Agent", "Attest") == "agent/anonymous"  # the old channel still works
    with verifier.agent() as fresh:
        assert call(fresh, "Agent", "Attest") == "agent/anonymous"
    verifier.rec.release_streams.set()
    assert list(stream) == [b"after"]  # the stream opened before the rotation was not dropped
    rp.close()
    agent.close()


def test_changed_files_are_picked_up_without_a_signal(verifier: Verifier, tmp_path: Path) -> None:
    ca = verifier.pki_dir / "ca.pem"
    before = _served_certificate(verifier.agent_port, ca)
    new = _rotate(verifier, tmp_path)
    assert _served_certificate(verifier.agent_port, ca) == before  # not checked yet
    verifier.clock.now += 2.0  # past the check interval: the next handshake stats the files
    assert _served_certificate(verifier.agent_port, ca) == new


def test_rotation_to_a_mismatched_key_keeps_the_old_certificate(
    verifier: Verifier, tmp_path: Path
) -> None:
    ca = verifier.pki_dir / "ca.pem"
    before = _served_certificate(verifier.agent_port, ca)
    _rotate(verifier, tmp_path, key_of_another=True)
    verifier.tls.reload()
    assert _served_certificate(verifier.agent_port, ca) == before
    with verifier.agent() as ch:
        assert call(ch, "Agent", "Attest") == "agent/anonymous"
