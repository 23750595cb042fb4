"""The secured wire against the REAL verifier: its services, its store, its command line.

``tests/test_tls_wire.py`` checks the building blocks on a stand-in service; here every call
reaches ``verifier.app.Verifier`` through ``build_server``, as ``serve`` runs it, and each test
is named after what it tries. A refused call must leave the store as it was.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from agent.flows import AgentConfig, ChannelConfigError, attest_once, channel
from fleetattest.v1 import fleetattest_pb2 as pb
from fleetattest.v1 import fleetattest_pb2_grpc as pb_grpc
from simulator.fleet import DEVICE_LABELS, Fleet, RunningVerifier
from simulator.profiles import GOOD_A
from simulator.softquote import SoftAk
from verifier import cli
from verifier.limits import Limits
from verifier.records import DeviceRecord
from verifier.service.server import Listen, build_server
from verifier.tls import pki
from verifier.tls.credentials import TlsConfigError

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "golden_measurements"
ENV = {**os.environ, "GRPC_VERBOSITY": "ERROR"}
NOW = dt.datetime.now(dt.UTC)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: a Unix socket path ends at 107 bytes."""
    with tempfile.TemporaryDirectory(prefix="fa-", dir="/tmp") as d:
        yield Path(d)


@pytest.fixture
def live(tmp_path: Path, short_dir: Path) -> Iterator[RunningVerifier]:
    """The real verifier over TLS with an operator socket, and no swtpm."""
    with Fleet(tmp_path / "fleet") as fleet:
        fleet.verifier = RunningVerifier(
            tmp_path / "verifier",
            fleet.trust_dir,
            GOLDEN,
            pki=fleet.pki,
            operator_socket=short_dir / "op.sock",
        )
        yield fleet.verifier


def insert_device(verifier: RunningVerifier, device_id: str, pending: bytes = b"") -> None:
    ak = SoftAk.generate()
    verifier.store.insert_device(
        DeviceRecord(
            device_id=device_id,
            ek_public=b"",
            ek_certificate=b"",
            ek_not_after=None,
            ak_public=ak.tpm2b_public,
            ak_name=ak.name,
            labels=dict(DEVICE_LABELS),
            enrollment_count=1,
            enrolled_at=time.time(),
            pending_ak_public=pending,
            pending_ak_name=pending,
        )
    )


def rows(verifier: RunningVerifier, table: str) -> int:
    with sqlite3.connect(verifier.workdir / "verifier.db") as db:
        return int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


def code_of(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    assert isinstance(info.value, grpc.Call)
    return info.value.code()


# ------------------------------------------------------------------ who may call what


def test_anonymous_approve_ak_and_list_devices_are_unauthenticated(
    live: RunningVerifier,
) -> None:
    insert_device(live, "dev-pending", pending=b"\x00\x0bnew-ak")
    with live.agent_channel() as ch:
        stub = pb_grpc.OperatorStub(ch)
        approve = pb.ApproveAkRequest(device_id="dev-pending", ak_name="000b6e65772d616b")
        with pytest.raises(grpc.RpcError) as info:
            stub.ApproveAk(approve)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "client certificate" in str(info.value.details())
        assert code_of(lambda: stub.ListDevices(pb.ListDevicesRequest())) == (
            grpc.StatusCode.UNAUTHENTICATED
        )
    record = live.store.get_device("dev-pending")
    assert record is not None and record.pending_ak_name == b"\x00\x0bnew-ak"  # nothing done


def test_relying_party_certificate_on_operator_rpcs_is_denied(live: RunningVerifier) -> None:
    insert_device(live, "dev-1")
    calls = {
        "GetStatus": pb.GetStatusRequest(),
        "ListDevices": pb.ListDevicesRequest(),
        "ApproveAk": pb.ApproveAkRequest(device_id="dev-1", ak_name="00"),
        "ReloadGolden": pb.ReloadGoldenRequest(),
        "ExplainDevice": pb.ExplainDeviceRequest(device_id="dev-1"),
        "DryRunGolden": pb.DryRunGoldenRequest(),
    }
    with live.relying_party_channel() as ch:
        stub = pb_grpc.OperatorStub(ch)
        for name, request in calls.items():
            with pytest.raises(grpc.RpcError) as info:
                getattr(stub, name)(request)
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED, name
            assert "operator" in str(info.value.details())
        rollout = pb_grpc.RelyingPartyStub(ch).CheckRollout(  # its own methods answer
            pb.CheckRolloutRequest(device_id="dev-1", target_release="fw-1.1.0")
        )
    assert not rollout.allow


def test_operator_certificate_and_operator_socket_reach_the_operator_service(
    live: RunningVerifier,
) -> None:
    insert_device(live, "dev-1")
    with live.operator_channel() as ch:
        listed = pb_grpc.OperatorStub(ch).ListDevices(pb.ListDevicesRequest())
    assert [d.device_id for d in listed.devices] == ["dev-1"]
    assert live.operator_socket is not None
    assert live.operator_socket.stat().st_mode & 0o777 == 0o600
    with grpc.secure_channel(
        f"unix:{live.operator_socket}", grpc.local_channel_credentials(grpc.LocalConnectionType.UDS)
    ) as ch:
        status = pb_grpc.OperatorStub(ch).GetStatus(pb.GetStatusRequest())
    assert status.devices == 1


def test_operator_commands_over_the_socket_need_no_certificate(
    live: RunningVerifier, capsys: pytest.CaptureFixture[str]
) -> None:
    socket_flag = ["--verifier", f"unix:{live.operator_socket}"]
    assert cli.main(["status", *socket_flag]) == 0
    assert "golden set" in capsys.readouterr().out
    assert cli.main(["golden", "reload", *socket_flag]) == 0
    assert "serving sha256:" in capsys.readouterr().out


def test_operator_command_with_a_relying_party_certificate_is_refused(
    live: RunningVerifier, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["status", *live.client_flags("relying-party")]) == 2
    assert "PERMISSION_DENIED" in capsys.readouterr().err


def test_plaintext_client_to_the_real_verifier_is_refused(live: RunningVerifier) -> None:
    for address in (live.address, live.caller_address):
        with grpc.insecure_channel(address) as ch:
            call = lambda ch=ch: pb_grpc.AgentStub(ch).GetChallenge(  # noqa: E731
                pb.GetChallengeRequest(device_id="dev-1"), timeout=10
            )
            assert code_of(call) == grpc.StatusCode.UNAVAILABLE
    assert rows(live, "nonces") == 0


def test_operator_command_over_plaintext_is_refused_before_connecting(
    live: RunningVerifier, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["status", "--verifier", live.address]) == 2
    assert "plaintext" in capsys.readouterr().err


# ------------------------------------------------------------------ floods


def test_get_challenge_and_start_enrollment_flood_keeps_the_tables_bounded(
    tmp_path: Path,
) -> None:
    """Bound: rows made by one address <= its burst + rate x nonce TTL (here 20 + 0.06), and
    per device <= 3 + 0.06. A refused call stores nothing and says when to retry."""
    limits = Limits(
        open_calls_per_peer_per_second=0.001,
        open_calls_peer_burst=20,
        open_calls_per_device_per_second=0.001,
        open_calls_device_burst=3,
    )
    with Fleet(tmp_path / "fleet") as fleet:
        live = fleet.verifier = RunningVerifier(
            tmp_path / "v", fleet.trust_dir, GOLDEN, pki=fleet.pki, limits=limits
        )
        for i in range(30):
            insert_device(live, f"dev-{i:02d}")
        accepted = refused = 0
        with live.agent_channel() as ch:
            stub = pb_grpc.AgentStub(ch)
            enrollment = pb.StartEnrollmentRequest(ek_public=b"\x00\x01x", ak_public=b"\x00")
            for _ in range(10):  # one EK, again and again: garbage, but metered first
                with pytest.raises(grpc.RpcError) as info:
                    stub.StartEnrollment(enrollment)
                refused += info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert refused == 10 - 3
            for i in range(30):
                for _ in range(5):
                    try:
                        stub.GetChallenge(pb.GetChallengeRequest(device_id=f"dev-{i:02d}"))
                        accepted += 1
                    except grpc.RpcError as exc:
                        assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                        assert "retry after" in str(exc.details())
        nonces = rows(live, "nonces")
        assert accepted == nonces == 20 - 3  # the address's burst, less the enrollments
        with sqlite3.connect(live.workdir / "verifier.db") as db:
            per_device = db.execute(
                "SELECT MAX(n) FROM (SELECT COUNT(*) AS n FROM nonces GROUP BY device_id)"
            ).fetchone()[0]
        assert per_device == 3
        assert rows(live, "enrollment_challenges") == 0


# ------------------------------------------------------------------ relying parties


def _impostor(calls: list[str]) -> grpc.GenericRpcHandler[Any, Any]:
    """A plaintext impostor RelyingParty: it would answer anything; it records being asked."""

    def answer(name: str) -> grpc.RpcMethodHandler[Any, Any]:
        def behaviour(request: bytes, context: grpc.ServicerContext) -> bytes:
            calls.append(name)
            return b""

        return grpc.unary_unary_rpc_method_handler(behaviour)

    return grpc.method_handlers_generic_handler(
        "fleetattest.v1.RelyingParty", {n: answer(n) for n in ("GetVerdict", "GetJwks")}
    )


def test_verdict_check_with_no_pinned_keys_over_plaintext_is_refused(
    capsys: pytest.CaptureFixture[str], short_dir: Path
) -> None:
    calls: list[str] = []
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((_impostor(calls),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        base = ["verdict", "check", "dev-1", "--max-age", "10m"]
        assert cli.main([*base, "--verifier", f"127.0.0.1:{port}"]) == 2
        assert "unauthenticated" in capsys.readouterr().err
        # The operator socket authenticates the caller, not the verifier: keys need --jwks.
        assert cli.main([*base, "--verifier", f"unix:{short_dir / 'op.sock'}"]) == 2
        assert "--jwks" in capsys.readouterr().err
    finally:
        server.stop(None)
    assert calls == []  # nothing was fetched


# ------------------------------------------------------------------ listeners


def test_plaintext_on_a_network_address_is_refused_without_insecure(
    live: RunningVerifier, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(TlsConfigError, match="--insecure"):
        build_server(live.verifier, Listen(agent="0.0.0.0:0"))
    with caplog.at_level(logging.WARNING, logger="verifier.service.server"):
        server, ports = build_server(live.verifier, Listen(agent="0.0.0.0:0", insecure=True))
    server.stop(None)
    assert ports.caller is None
    assert any("INSECURE" in r.getMessage() for r in caplog.records)


def test_serve_refuses_plaintext_on_the_network_and_half_the_tls_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["serve", "--db", str(tmp_path / "v.db"), "--golden", str(GOLDEN)]
    assert cli.main([*base, "--listen", "0.0.0.0:0"]) == 2
    assert "refusing to serve 0.0.0.0:0 without TLS" in capsys.readouterr().err
    assert cli.main([*base, "--tls-cert", str(tmp_path / "x.pem")]) == 2
    assert "go together" in capsys.readouterr().err


def _served_certificate(port: int, ca: Path) -> bytes:
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as s,
        ctx.wrap_socket(s, server_hostname="localhost") as t,
    ):
        der = t.getpeercert(binary_form=True)
    assert der is not None
    return der


def _new_server_pair(pki_dir: Path, out: Path) -> bytes:
    pki.issue_server(
        pki_dir / "ca.pem", pki_dir / "ca.key", names=["localhost"], stem="next", out=out, now=NOW
    )
    cert = x509.load_pem_x509_certificate((out / "next.pem").read_bytes())
    return cert.public_bytes(Encoding.DER)


def test_serve_over_tls_writes_both_ports_and_rotates_its_certificate_on_sighup(
    tmp_path: Path, short_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "pki"
    pki.init_pki(d, verifier_names=["localhost"], now=NOW)
    port_file, sock = tmp_path / "ports", short_dir / "op.sock"
    process = subprocess.Popen(
        [
            sys.executable, "-m", "verifier.cli", "--log-level", "warning", "serve",
            "--listen", "127.0.0.1:0", "--db", str(tmp_path / "v.db"), "--golden", str(GOLDEN),
            "--tls-cert", str(d / "verifier.pem"), "--tls-key", str(d / "verifier.key"),
            "--client-ca", str(d / "ca.pem"), "--operator-socket", str(sock),
            "--port-file", str(port_file),
        ],
        env=ENV,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists():
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        agent_port, caller_port = (int(line) for line in port_file.read_text().split())
        flags = [
            "--verifier", f"127.0.0.1:{caller_port}", "--ca", str(d / "ca.pem"),
            "--cert", str(d / "operator.pem"), "--key", str(d / "operator.key"),
        ]  # fmt: skip
        assert cli.main(["status", *flags]) == 0
        assert cli.main(["status", "--verifier", f"unix:{sock}"]) == 0
        before = _served_certificate(agent_port, d / "ca.pem")
        new = _new_server_pair(d, tmp_path / "next")
        os.replace(tmp_path / "next" / "next.key", d / "verifier.key")
        os.replace(tmp_path / "next" / "next.pem", d / "verifier.pem")
        process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while _served_certificate(agent_port, d / "ca.pem") == before:
            assert time.monotonic() < deadline, "the new certificate was not served"
            time.sleep(0.1)
        assert _served_certificate(caller_port, d / "ca.pem") == new
        assert cli.main(["status", *flags]) == 0
        capsys.readouterr()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
    assert process.returncode == 0
    assert not sock.exists()  # removed on the way out


# ------------------------------------------------------------------ agents (swtpm)


@pytest.mark.swtpm
def test_agent_pinned_to_another_ca_refuses_the_verifier(fleet: Fleet, tmp_path: Path) -> None:
    other = tmp_path / "other-pki"
    pki.init_pki(other, verifier_names=[], now=NOW)
    device = fleet.add_device("pinned-elsewhere", GOOD_A)
    argv = [
        sys.executable, "-m", "agent.cli", "--log-level", "warning", "attest",
        "--verifier", fleet.live.address,
        "--ca", str(other / "ca.pem"), "--tcti", device.tpm.tcti,
        "--state-dir", str(device.workdir / "agent-state"),
        "--event-log", str(device.event_log), "--label", "model=sim-gateway",
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, env=ENV, timeout=60, check=False)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"attest-agent: cannot authenticate the verifier at {fleet.live.address}: its "
        "certificate does not chain to the pinned CA (--ca) or does not name this address"
    ]
    assert fleet.live.store.list_devices() == []  # it sent nothing


def test_agent_without_ca_or_insecure_refuses_to_connect(tmp_path: Path) -> None:
    config = AgentConfig(verifier="127.0.0.1:1", tcti="none", state_dir=tmp_path)
    with pytest.raises(ChannelConfigError, match="give --ca FILE"):
        attest_once(config, "dev-x", threading.Event())


@pytest.mark.swtpm
def test_agent_with_insecure_against_a_tls_verifier_fails_closed(fleet: Fleet) -> None:
    """--insecure never downgrades a TLS verifier: the handshake fails and nothing is sent."""
    with channel(fleet.live.address, None, insecure=True) as ch:
        stub = pb_grpc.AgentStub(ch)
        call = lambda: stub.GetChallenge(pb.GetChallengeRequest(device_id="x"), timeout=5)  # noqa: E731
        assert code_of(call) == grpc.StatusCode.UNAVAILABLE
    assert rows(fleet.live, "nonces") == 0


@pytest.mark.swtpm
def test_certificate_rotation_while_agents_attest_fails_no_attestation(
    fleet: Fleet, tmp_path: Path
) -> None:
    live = fleet.live
    devices = [fleet.add_device(f"rotating-{i}", GOOD_A) for i in range(2)]
    for device in devices:
        device.enroll(live.address)
    before = _served_certificate(live.port, live.ca)
    rotated = threading.Event()
    results: list[str] = []
    errors: list[BaseException] = []

    def agent(index: int) -> None:
        device = devices[index]
        try:
            with channel(live.address, device.verifier_ca) as kept:  # attest-agent run's way
                after = 0
                while after < 2:
                    reuse = kept if len(results) % 2 else None  # and a new channel each time
                    verdict = attest_once(
                        device.config(live.address), device.device_id, threading.Event(), reuse
                    )
                    results.append(pb.Status.Name(verdict.status))
                    after += rotated.is_set()
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=agent, args=(i,)) for i in range(2)]
    for worker in workers:
        worker.start()
    while len(results) < 2 and not errors:
        time.sleep(0.05)
    new = _new_server_pair(live.pki, tmp_path / "next")
    os.replace(tmp_path / "next" / "next.key", live.pki / "verifier.key")
    os.replace(tmp_path / "next" / "next.pem", live.pki / "verifier.pem")
    live.tls.reload()  # what SIGHUP does
    rotated.set()
    for worker in workers:
        worker.join(timeout=120)
    assert errors == []
    assert set(results) == {"STATUS_AFFIRMING"} and len(results) >= 6
    assert _served_certificate(live.port, live.ca) == new != before
