"""Verifier throughput over gRPC with software quotes: how many attestations per second the
verifier itself sustains, without swtpm in the way.

    .venv/bin/python bench/bench_load.py [--processes 2] [--clients 2] [--threads 8] [--seconds 10]
        [--wire plaintext,tls-reused,tls-new] [--repeats 3] [--server-cpu 0 --client-cpu 1]

Devices are enrolled straight into the store with software AKs (``simulator.softquote``), so
a client can answer a challenge with a real ECDSA quote in microseconds. The verifier runs as
``attest-verifier serve --processes N`` (SO_REUSEPORT); client processes each run threads that
loop GetChallenge -> quote -> Attest (with the simulator's 50-event log) over one channel.
Prints attestations per second and CPU milliseconds per attestation of the verifier
processes and of the clients. Clients and verifier share the machine's cores: the verifier's
CPU per attestation is the figure that carries over to a dedicated machine.

``--wire`` picks how clients reach the verifier, one run (of ``--repeats``) per kind:
``plaintext`` (the verifier without TLS, loopback), ``tls-reused`` (TLS to the agent port, one
channel per client thread for all its attestations: what ``attest-agent run`` does) and
``tls-new`` (a new channel, so a new TCP connection and TLS handshake, per attestation: what
``attest-agent attest`` does, and ``run`` once its idle connection was closed). The verifier
runs with the PKI of ``init_pki`` and its open-call rate limits lifted (one address floods).
``--server-cpu``/``--client-cpu`` pin the verifier and the clients to cores (taskset), so the
server's CPU per attestation is not disturbed by the load; with ``--repeats`` the figures are
the min, median and max over the runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
from cryptography.hazmat.primitives.asymmetric import ec

from fleetattest.v1 import fleetattest_pb2 as pb
from fleetattest.v1 import fleetattest_pb2_grpc as pb_grpc
from simulator.firmware import boot
from simulator.fleet import DEVICE_LABELS
from simulator.profiles import GOOD_A
from simulator.softquote import QuoteFields, SoftAk, ecc_public_area
from verifier.records import DeviceRecord
from verifier.store import open_store
from verifier.tls.pki import init_pki

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")
WIRES = ("plaintext", "tls-reused", "tls-new")
UNLIMITED = [
    f"--{flag}={1e9}"
    for flag in (
        "open-calls-per-peer",
        "open-calls-peer-burst",
        "open-calls-per-device",
        "open-calls-device-burst",
    )
]


def soft_ak(index: int) -> SoftAk:
    key = ec.derive_private_key(10_000 + index, ec.SECP256R1())
    return SoftAk(key, ecc_public_area(key.public_key()))


def enroll_directly(db: Path, devices: int) -> None:
    store = open_store(db)
    for i in range(devices):
        ak = soft_ak(i)
        store.insert_device(
            DeviceRecord(
                device_id=f"dev-load-{i}",
                ek_public=b"",
                ek_certificate=b"",
                ek_not_after=None,
                ak_public=ak.tpm2b_public,
                ak_name=ak.name,
                labels=dict(DEVICE_LABELS),
                enrollment_count=1,
                enrolled_at=time.time(),
            )
        )
    store.close()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def worker_pids(parent: int) -> list[int]:
    found = [parent]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                found.append(int(entry.name))
    return found


def open_client_channel(address: str, wire: str, ca: Path) -> grpc.Channel:
    if wire == "plaintext":
        return grpc.insecure_channel(address)
    creds = grpc.ssl_channel_credentials(root_certificates=ca.read_bytes())
    # tls-new: a connection of its own, never a subchannel shared with another channel
    options = [("grpc.use_local_subchannel_pool", 1)] if wire == "tls-new" else []
    return grpc.secure_channel(address, creds, options=options)


def client(
    first: int,
    threads: int,
    address: str,
    seconds: float,
    out: multiprocessing.Queue[tuple[int, float]],
    wire: str = "plaintext",
    ca: Path = Path(),
    cpu: int | None = None,
) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    record = boot(GOOD_A, lambda pcr, digests: None)
    pcrs = dict(record.expected_pcrs["sha256"])
    counts = [0] * threads
    start_cpu = time.process_time()
    deadline = time.monotonic() + seconds

    def loop(slot: int) -> None:
        index = first + slot
        ak = soft_ak(index)
        device_id = f"dev-load-{index}"
        kept = open_client_channel(address, wire, ca) if wire != "tls-new" else None
        while time.monotonic() < deadline:
            ch = kept or open_client_channel(address, wire, ca)
            try:
                stub = pb_grpc.AgentStub(ch)
                challenge = stub.GetChallenge(pb.GetChallengeRequest(device_id=device_id))
                quoted = {i: pcrs.get(i, bytes(32)) for i in challenge.selection.pcrs}
                attest, sig = ak.quote(QuoteFields(challenge.nonce, "sha256", quoted))
                verdict = stub.Attest(
                    pb.AttestRequest(
                        device_id=device_id,
                        nonce=challenge.nonce,
                        quote=attest,
                        signature=sig,
                        pcr_values=[pb.PcrValue(pcr=i, digest=d) for i, d in quoted.items()],
                        event_log=record.log,
                    )
                ).verdict
                if verdict.status != pb.STATUS_AFFIRMING:
                    raise SystemExit(f"unexpected verdict {verdict}")
                counts[slot] += 1
            finally:
                if kept is None:
                    ch.close()
        if kept is not None:
            kept.close()

    workers = [threading.Thread(target=loop, args=(k,)) for k in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    out.put((sum(counts), time.process_time() - start_cpu))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_once(ns: argparse.Namespace, wire: str) -> tuple[int, float, float, float]:
    """One run: attestations, seconds, verifier CPU seconds, client CPU seconds."""
    devices = ns.clients * ns.threads
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "verifier.db"
        enroll_directly(db, devices)
        pki = Path(tmp) / "pki"
        init_pki(pki, verifier_names=["localhost"], now=dt.datetime.now(dt.UTC))
        tls = [
            "--tls-cert", str(pki / "verifier.pem"), "--tls-key", str(pki / "verifier.key"),
            "--client-ca", str(pki / "ca.pem"), "--caller-listen", "127.0.0.1:0",
        ] if wire != "plaintext" else []  # fmt: skip
        pin = ["taskset", "-c", str(ns.server_cpu)] if ns.server_cpu is not None else []
        port = free_port()
        verifier = subprocess.Popen(
            [
                *pin, sys.executable, "-m", "verifier.cli", "--log-level", "error", "serve",
                "--listen", f"127.0.0.1:{port}", "--db", str(db),
                "--golden", str(ROOT / "golden_measurements"),
                "--processes", str(ns.processes), "--workers", str(ns.workers),
                "--port-file", str(Path(tmp) / "port"), *tls, *UNLIMITED,
            ],
            env={**os.environ, "GRPC_VERBOSITY": "ERROR"},
        )  # fmt: skip
        try:
            while not (Path(tmp) / "port").exists():
                if verifier.poll() is not None:
                    raise SystemExit("the verifier did not start")
                time.sleep(0.05)
            time.sleep(0.5)  # every worker bound
            pids = worker_pids(verifier.pid)
            before = sum(cpu_seconds(pid) for pid in pids)
            ctx = multiprocessing.get_context("spawn")  # no gRPC state crosses a fork
            queue: multiprocessing.Queue[tuple[int, float]] = ctx.Queue()
            procs = [
                ctx.Process(
                    target=client,
                    args=(
                        c * ns.threads,
                        ns.threads,
                        f"127.0.0.1:{port}",
                        ns.seconds,
                        queue,
                        wire,
                        pki / "ca.pem",
                        ns.client_cpu,
                    ),
                )
                for c in range(ns.clients)
            ]
            started = time.monotonic()
            for proc in procs:
                proc.start()
            results = [queue.get(timeout=ns.seconds + 60) for _ in procs]
            elapsed = time.monotonic() - started
            for proc in procs:
                proc.join()
            verifier_cpu = sum(cpu_seconds(pid) for pid in pids) - before
        finally:
            verifier.send_signal(signal.SIGTERM)
            verifier.wait(timeout=20)
    total = sum(count for count, _ in results)
    return total, elapsed, verifier_cpu, sum(cpu for _, cpu in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2, help="verifier processes")
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--threads", type=int, default=8, help="threads per client")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=4, help="RPC threads per verifier process")
    parser.add_argument(
        "--wire", default="plaintext", help=f"comma-separated, of {', '.join(WIRES)}"
    )
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--server-cpu", type=int, help="pin the verifier to this core")
    parser.add_argument("--client-cpu", type=int, help="pin the clients to this core")
    ns = parser.parse_args()
    wires = ns.wire.split(",")
    if not set(wires) <= set(WIRES):
        parser.error(f"--wire: one or more of {', '.join(WIRES)}")
    print(
        f"{ns.processes} verifier process(es) x {ns.workers} threads, {ns.clients}x{ns.threads} "
        f"client threads, {ns.seconds:.0f} s per run, {ns.repeats} run(s) per wire; "
        f"server core {ns.server_cpu}, client core {ns.client_cpu}"
    )
    for wire in wires:
        runs = [run_once(ns, wire) for _ in range(ns.repeats)]
        server = [cpu * 1000 / max(total, 1) for total, _, cpu, _ in runs]
        clients = [cpu * 1000 / max(total, 1) for total, _, _, cpu in runs]
        rates = [total / elapsed for total, elapsed, _, _ in runs]
        print(
            f"{wire:<11} verifier CPU per attestation min/median/max "
            f"{min(server):.3f}/{statistics.median(server):.3f}/{max(server):.3f} ms; "
            f"clients {statistics.median(clients):.3f} ms; "
            f"{statistics.median(rates):.0f} attestations/s (median)"
        )


if __name__ == "__main__":
    main()
