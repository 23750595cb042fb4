"""Attestations per second end to end over gRPC, with several swtpm-backed agents.

    .venv/bin/python bench/bench_grpc.py [--devices 8] [--seconds 10]

The verifier runs as its own process (``attest-verifier serve``, SQLite), so its CPU time can
be read from /proc and divided by the attestations it served. Each device is a swtpm with a
measured boot (the simulator's good profile, a 50-event log) and an agent loop that asks for
a challenge, quotes, and sends the quote with its event log, over one kept-open TLS channel
(the verifier serves with the fleet's PKI, as in production).
Prints attestations per second and the verifier's CPU milliseconds per attestation. swtpm
(software RSA/ECC in libtpms) and the agents share the same cores, so on a 2-core machine the
figure is bounded by the simulated TPMs, not by the verifier: the CPU-per-attestation figure
says what the verifier itself costs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from agent.flows import channel, evidence_for
from fleetattest.v1 import fleetattest_pb2 as pb
from fleetattest.v1 import fleetattest_pb2_grpc as pb_grpc
from simulator.fleet import Fleet, SimDevice
from simulator.profiles import GOOD_A

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


# A benchmark floods GetChallenge from one address: lift the open calls' rate limits.
UNLIMITED = [
    f"--{flag}={1e9}"
    for flag in (
        "open-calls-per-peer",
        "open-calls-peer-burst",
        "open-calls-per-device",
        "open-calls-device-burst",
    )
]


def start_verifier(
    workdir: Path, trust_dir: Path, pki: Path
) -> tuple[subprocess.Popen[bytes], str]:
    port_file = workdir / "port"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "verifier.cli",
            "--log-level",
            "warning",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--db",
            str(workdir / "verifier.db"),
            "--ek-ca",
            str(trust_dir),
            "--golden",
            str(ROOT / "golden_measurements"),
            "--port-file",
            str(port_file),
            "--tls-cert",
            str(pki / "verifier.pem"),
            "--tls-key",
            str(pki / "verifier.key"),
            "--client-ca",
            str(pki / "ca.pem"),
            *UNLIMITED,
        ],
        env={**os.environ, "GRPC_VERBOSITY": "ERROR"},
    )
    deadline = time.monotonic() + 30
    while not port_file.exists():
        if time.monotonic() > deadline or process.poll() is not None:
            raise SystemExit("the verifier did not start")
        time.sleep(0.05)
    return process, f"127.0.0.1:{port_file.read_text().split()[0]}"  # the agent port (TLS)


def agent_loop(device: SimDevice, address: str, stop: threading.Event, counts: list[int]) -> None:
    config = device.config(address)
    with channel(address, device.verifier_ca) as ch:
        stub = pb_grpc.AgentStub(ch)
        while not stop.is_set():
            challenge = stub.GetChallenge(pb.GetChallengeRequest(device_id=device.device_id))
            verdict = stub.Attest(evidence_for(config, device.device_id, challenge)).verdict
            if verdict.status != pb.STATUS_AFFIRMING:
                raise SystemExit(f"unexpected verdict {verdict}")
            counts.append(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    ns = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Fleet(Path(tmp)) as fleet:
        process, address = start_verifier(Path(tmp), fleet.trust_dir, fleet.pki)
        try:
            devices = [fleet.add_device(f"bench-{i}", GOOD_A) for i in range(ns.devices)]
            log_size = len(devices[0].event_log.read_bytes())
            for device in devices:
                device.enroll(address)
            stop = threading.Event()
            counts: list[int] = []
            threads = [
                threading.Thread(target=agent_loop, args=(d, address, stop, counts))
                for d in devices
            ]
            cpu_before = cpu_seconds(process.pid)
            started = time.monotonic()
            for thread in threads:
                thread.start()
            time.sleep(ns.seconds)
            stop.set()
            for thread in threads:
                thread.join()
            elapsed = time.monotonic() - started
            cpu = cpu_seconds(process.pid) - cpu_before
        finally:
            process.terminate()
            process.wait(timeout=10)
    total = len(counts)
    print(
        f"{ns.devices} swtpm agents, {elapsed:.1f} s: {total} attestations, "
        f"{total / elapsed:.0f} per second end to end; verifier CPU "
        f"{cpu * 1000 / max(total, 1):.2f} ms per attestation "
        f"(GetChallenge + Attest with a {log_size}-byte event log)"
    )


if __name__ == "__main__":
    main()
