"""A verifier and simulated devices in one process: the harness of the demo, the scenarios,
the end-to-end tests and the gRPC benchmark.

``RunningVerifier`` is the real verifier (``verifier.app.Verifier`` behind the real gRPC server
on free ports, SQLite in a directory) with a clock that can be moved forward, so that expiry
can be shown without waiting. It runs as in production, over TLS with a fleet PKI from
``verifier.tls.pki.init_pki`` (``Fleet.pki``): ``address`` is the agent port (TLS, agents pin
``ca.pem``), ``caller_address`` the mutual-TLS port for relying parties and operators
(``relying_party_channel``, ``operator_channel``, ``client_flags``), and optionally an
operator socket. ``SimDevice`` is a swtpm with an EK certificate from the simulator's local CA,
firmware that measures a boot into it and writes the matching event log, and the real agent
flows (``agent.flows``) talking gRPC to the verifier, pinned to the fleet's CA.

Everything started here is stopped by ``Fleet.close`` (also on Ctrl-C, through the context
manager); swtpm processes are additionally reaped at interpreter exit by ``simulator.swtpm``.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import grpc

from agent.flows import AgentConfig, attest_once, channel, enroll
from agent.tpm import Tpm
from fleetattest.v1 import fleetattest_pb2 as pb
from simulator.ca import LocalCa
from simulator.firmware import FirmwareProfile, UnreplayableLog, boot, replay_real_log
from simulator.ima import ImaKernel
from simulator.swtpm import STARTUP_LOCALITIES, SwtpmFactory, SwtpmInstance
from simulator.tcglog import parse_log, pcr0_start
from verifier.app import Verifier, VerifierSettings, open_trust
from verifier.enrollment.policy import EnrollmentPolicy
from verifier.limits import DEFAULT_LIMITS, Limits
from verifier.livecrl import LiveCrls
from verifier.livegolden import LiveGolden
from verifier.service.server import Listen, build_server
from verifier.store import open_store
from verifier.tls.credentials import ServerTls, TlsFiles, open_channel
from verifier.tls.pki import init_pki
from verifier.token import KeyRing

DEVICE_LABELS = {"model": "sim-gateway"}
CLIENT_ROLES = ("operator", "relying-party")  # the client certificates init_pki makes


def make_pki(directory: Path) -> Path:
    """A fleet PKI (``certs init``'s files) in ``directory``, made once: reused if there."""
    if not (directory / "ca.pem").exists():
        init_pki(directory, verifier_names=["localhost"], now=dt.datetime.now(dt.UTC))
    return directory


RUNTIME_LABELS = {"model": "sim-runtime"}  # golden_measurements/sim-runtime.yaml


class MovableClock:
    """Wall-clock time plus an offset that tests and scenarios move forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


class RunningVerifier:
    def __init__(
        self,
        workdir: Path,
        trust_dir: Path,
        golden_dir: Path,
        *,
        nonce_ttl: float = 60.0,
        workers: int = 8,
        allowlist: Path | None = None,
        port: int = 0,
        watch_interval: float = 0.5,
        db: str | None = None,
        keys: Path | None = None,
        pki: Path | None = None,
        operator_socket: Path | None = None,
        limits: Limits = DEFAULT_LIMITS,
        enrollment_policy: EnrollmentPolicy = EnrollmentPolicy.OPEN,
        token_ttl: float | None = None,
        crl_stale: str = "fail",
        sweep_interval: float = 0.5,
    ) -> None:
        """``db``: a postgresql:// URL (default: SQLite in ``workdir``); ``keys``: the signing
        key directory (default: in ``workdir``; replicas share one); ``pki``: the fleet PKI
        (default: a new one in ``workdir``); ``operator_socket``: also serve the Operator
        socket there (a short path: Unix socket paths end at 107 bytes). The simulator is a
        lab: its devices enroll under ``open`` unless ``enrollment_policy`` says otherwise."""
        self.workdir = workdir
        self.clock = MovableClock()
        workdir.mkdir(parents=True, exist_ok=True)
        self.pki = make_pki(pki or workdir / "pki")
        self.store = open_store(db or workdir / "verifier.db")
        self.golden = LiveGolden.start(golden_dir, self.store, self.clock)
        trust, allowed = open_trust(trust_dir, allowlist)
        settings = VerifierSettings(
            nonce_ttl=nonce_ttl,
            limits=limits,
            enrollment_policy=enrollment_policy,
            token_ttl=token_ttl,
            crl_stale=crl_stale,
        )
        keyring = KeyRing.open(keys or workdir / "keys", self.clock())
        self.crls = LiveCrls.start(trust_dir, trust)
        self.verifier = Verifier(
            self.store, trust, allowed, self.golden, keyring, settings, self.clock, self.crls
        )
        self.tls = ServerTls(
            TlsFiles(self.pki / "verifier.pem", self.pki / "verifier.key", self.pki / "ca.pem")
        )
        self.operator_socket = operator_socket
        listen = Listen(
            agent=f"127.0.0.1:{port}",
            tls=self.tls,
            caller="127.0.0.1:0",
            operator_socket=operator_socket,
        )
        self.server, ports = build_server(self.verifier, listen, workers=workers, clock=self.clock)
        self.server.start()
        self.port = ports.agent
        self.caller_port = ports.caller
        self.address = f"127.0.0.1:{self.port}"
        self.caller_address = f"127.0.0.1:{self.caller_port}"
        self._stop = threading.Event()
        self.golden.watch(self._stop, interval=watch_interval)
        self.verifier.watch(self._stop, interval=sweep_interval)

    @property
    def ca(self) -> Path:
        """The CA bundle agents and clients pin."""
        return self.pki / "ca.pem"

    def agent_channel(self) -> grpc.Channel:
        """An agent's channel: TLS to the agent port, pinned, no client certificate."""
        return channel(self.address, self.ca)

    def client_channel(self, stem: str, pki: Path | None = None) -> grpc.Channel:
        """Mutual TLS to the caller port with ``<stem>.pem``/``.key`` from ``pki``."""
        d = pki or self.pki
        return open_channel(
            self.caller_address, ca=self.ca, cert=d / f"{stem}.pem", key=d / f"{stem}.key"
        )

    def relying_party_channel(self) -> grpc.Channel:
        return self.client_channel("relying-party")

    def operator_channel(self) -> grpc.Channel:
        return self.client_channel("operator")

    def client_flags(self, role: str) -> list[str]:
        """``attest-verifier`` flags that reach this verifier as ``role`` (a CLIENT_ROLES)."""
        if role not in CLIENT_ROLES:
            raise ValueError(f"no client certificate for {role!r}")
        return [
            "--verifier",
            self.caller_address,
            "--ca",
            str(self.ca),
            "--cert",
            str(self.pki / f"{role}.pem"),
            "--key",
            str(self.pki / f"{role}.key"),
        ]

    def close(self) -> None:
        self._stop.set()
        self.server.stop(grace=1).wait()
        self.store.close()


@dataclass
class SimDevice:
    name: str
    tpm: SwtpmInstance
    firmware: FirmwareProfile
    workdir: Path
    labels: Mapping[str, str] = field(default_factory=lambda: dict(DEVICE_LABELS))
    device_id: str = ""
    verifier_ca: Path | None = None  # the TLS CA bundle the agent pins (the fleet's)
    ek_certificate: bytes = b""  # the DER the CA issued (RSA EK)
    ek_intermediates: tuple[bytes, ...] = ()  # what the agent sends with it
    runtime: bool = False  # runs files after boot: an IMA list and PCR 10 (simulator.ima)

    @property
    def event_log(self) -> Path:
        return self.workdir / "binary_bios_measurements"

    @property
    def ima(self) -> ImaKernel:
        return ImaKernel(
            self.tpm.tcti, self.workdir / "binary_runtime_measurements", self.workdir / "boot_id"
        )

    def power_on(self) -> None:
        """Measure a boot of ``firmware`` into the TPM and write its event log."""
        with Tpm.open(self.tpm.tcti) as tpm:
            record = boot(self.firmware, tpm.extend)
        self.event_log.write_bytes(record.log)
        if self.runtime:
            self.ima.boot()

    def boot_real_log(self, log: bytes, bank: str = "sha256") -> dict[int, bytes]:
        """Reboot and replay a real machine's event log into the TPM instead of a synthetic
        boot (a StartupLocality log starts the TPM from that locality); returns the PCRs the
        log should produce. ``UnreplayableLog`` for an H-CRTM log, which swtpm cannot start."""
        locality = pcr0_start(parse_log(log).events)
        if locality not in STARTUP_LOCALITIES:
            raise UnreplayableLog(f"PCR 0 starts at {locality}: swtpm cannot reproduce that")
        self.tpm.power_cycle(startup_locality=locality)
        with Tpm.open(self.tpm.tcti) as tpm:
            expected = replay_real_log(log, tpm.extend, bank, pcr0_locality=locality)
        self.event_log.write_bytes(log)
        return expected

    def reboot(self, firmware: FirmwareProfile | None = None) -> None:
        """An orderly power cycle (resetCount + 1), optionally into new firmware."""
        if firmware is not None:
            self.firmware = firmware
        self.tpm.power_cycle()
        self.power_on()

    def lose_power(self) -> None:
        """An unclean power loss, then a boot: the next quote shows safe = 0."""
        self.tpm.unclean_power_loss()
        self.power_on()

    def config(self, verifier: str) -> AgentConfig:
        return AgentConfig(
            verifier=verifier,
            tcti=self.tpm.tcti,
            state_dir=self.workdir / "agent-state",
            event_log=self.event_log,
            labels=dict(self.labels),
            timeout=20.0,
            ca=self.verifier_ca,
            ek_intermediates=self.ek_intermediates,
            ima_log=self.ima.list_path if self.runtime else None,
            boot_id=self.ima.boot_id_path,
        )

    def enroll(self, verifier: str) -> str:
        self.device_id = enroll(self.config(verifier), threading.Event())
        return self.device_id

    def attest(self, verifier: str) -> pb.Verdict:
        if not self.device_id:
            self.enroll(verifier)
        return attest_once(self.config(verifier), self.device_id, threading.Event())


class Fleet:
    """A local EK CA, a trust directory, the fleet's TLS PKI, swtpm devices and (optionally)
    a verifier serving with that PKI."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir.absolute()
        self.ca = LocalCa.create(self.workdir / "ca")
        self.pki = make_pki(self.workdir / "pki")
        self.trust_dir = self.ca.write_trust_dir(self.workdir / "ek-ca")
        self.factory = SwtpmFactory(self.workdir / "tpms")
        self.devices: list[SimDevice] = []
        self.verifier: RunningVerifier | None = None

    @property
    def live(self) -> RunningVerifier:
        """The verifier started by ``start_verifier``."""
        if self.verifier is None:
            raise RuntimeError("no verifier was started for this fleet")
        return self.verifier

    def start_verifier(self, golden_dir: Path, **options: float) -> RunningVerifier:
        self.verifier = RunningVerifier(
            self.workdir / "verifier",
            self.trust_dir,
            golden_dir,
            pki=self.pki,
            **options,  # type: ignore[arg-type]
        )
        return self.verifier

    def add_device(
        self,
        name: str,
        firmware: FirmwareProfile,
        *,
        ek_issuer: str = "intermediate",
        labels: Mapping[str, str] | None = None,
        runtime: bool = False,
    ) -> SimDevice:
        tpm = self.factory.create(name)
        certificate = tpm.provision_ek_certificate(self.ca, "rsa", issuer=ek_issuer)
        workdir = self.workdir / "devices" / name
        workdir.mkdir(parents=True, exist_ok=True)
        device = SimDevice(
            name,
            tpm,
            firmware,
            workdir,
            verifier_ca=self.pki / "ca.pem",
            ek_certificate=certificate,
            runtime=runtime,
        )
        if runtime:
            device.labels = dict(RUNTIME_LABELS)
        if labels is not None:
            device.labels = dict(labels)
        device.power_on()
        self.devices.append(device)
        return device

    def close(self) -> None:
        try:
            if self.verifier is not None:
                self.verifier.close()
        finally:
            self.factory.stop_all()

    def __enter__(self) -> Fleet:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def status_name(status: int) -> str:
    return pb.Status.Name(status).removeprefix("STATUS_").lower()


def rpc_error_text(exc: grpc.RpcError) -> str:
    return f"{exc.code().name}: {exc.details()}"
