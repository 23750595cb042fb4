"""A verifier and simulated devices in one process: the harness of the demo, the scenarios,
the end-to-end tests and the gRPC benchmark.

``RunningVerifier`` is the real verifier (``verifier.app.Verifier`` behind the real gRPC server
on a free port, SQLite in a directory) with a clock that can be moved forward, so that expiry
can be shown without waiting. ``SimDevice`` is a swtpm with an EK certificate from the
simulator's local CA, firmware that measures a boot into it and writes the matching event log,
and the real agent flows (``agent.flows``) talking gRPC to the verifier.

Everything started here is stopped by ``Fleet.close`` (also on Ctrl-C, through the context
manager); swtpm processes are additionally reaped at interpreter exit by ``simulator.swtpm``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import grpc

from agent.flows import AgentConfig, attest_once, enroll
from agent.tpm import Tpm
from fleetattest.v1 import fleetattest_pb2 as pb
from simulator.ca import LocalCa
from simulator.firmware import FirmwareProfile, UnreplayableLog, boot, replay_real_log
from simulator.ima import ImaKernel
from simulator.swtpm import STARTUP_LOCALITIES, SwtpmFactory, SwtpmInstance
from simulator.tcglog import parse_log, pcr0_start
from verifier.app import Verifier, VerifierSettings, open_trust
from verifier.livegolden import LiveGolden
from verifier.service.server import build_server
from verifier.store import open_store
from verifier.token import KeyRing

DEVICE_LABELS = {"model": "sim-gateway"}
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
    ) -> None:
        """``db``: a postgresql:// URL (default: SQLite in ``workdir``); ``keys``: the signing
        key directory (default: in ``workdir``; replicas share one)."""
        self.workdir = workdir
        self.clock = MovableClock()
        workdir.mkdir(parents=True, exist_ok=True)
        self.store = open_store(db or workdir / "verifier.db")
        self.golden = LiveGolden.start(golden_dir, self.store, self.clock)
        trust, allowed = open_trust(trust_dir, allowlist)
        settings = VerifierSettings(nonce_ttl=nonce_ttl)
        keyring = KeyRing.open(keys or workdir / "keys", self.clock())
        self.verifier = Verifier(
            self.store, trust, allowed, self.golden, keyring, settings, self.clock
        )
        self.server, self.port = build_server(self.verifier, f"127.0.0.1:{port}", workers=workers)
        self.server.start()
        self.address = f"127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self.golden.watch(self._stop, interval=watch_interval)

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
    """A local CA, a trust directory, swtpm devices and (optionally) a verifier."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir.absolute()
        self.ca = LocalCa.create(self.workdir / "ca")
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
        tpm.provision_ek_certificate(self.ca, "rsa", issuer=ek_issuer)
        workdir = self.workdir / "devices" / name
        workdir.mkdir(parents=True, exist_ok=True)
        device = SimDevice(name, tpm, firmware, workdir, runtime=runtime)
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
