"""Verifier throughput over gRPC with software quotes: how many attestations per second the
verifier itself sustains, without swtpm in the way.

    .venv/bin/python bench/bench_load.py [--processes 2] [--clients 2] [--threads 8] [--seconds 10]

Devices are enrolled straight into the store with software AKs (``simulator.softquote``), so
a client can answer a challenge with a real ECDSA quote in microseconds. The verifier runs as
``attest-verifier serve --processes N`` (SO_REUSEPORT); client processes each run threads that
loop GetChallenge -> quote -> Attest (with the simulator's 50-event log) over one channel.
Prints attestations per second and CPU milliseconds per attestation of the verifier
processes and of the clients. Clients and verifier share the machine's cores: the verifier's
CPU per attestation is the figure that carries over to a dedicated machine.

The cost of metrics: ``--metrics`` serves /metrics (``--metrics-listen``) and scrapes it once
a second during the run (the scrapes are in the verifier's CPU). ``--server-cpus 0
--client-cpus 1`` pins the verifier and the clients to separate cores (taskset). To compare
with a verifier without instrumentation, run this script with ``PYTHONPATH`` pointing at an
export of the commit before it (the script itself imports nothing new).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import grpc
from cryptography.hazmat.primitives.asymmetric import ec

from fleetattest.v1 import fleetattest_pb2 as pb
from fleetattest.v1 import fleetattest_pb2_grpc as pb_grpc
from simulator.firmware import boot
from simulator.fleet import DEVICE_LABELS
from simulator.profiles import GOOD_A
from simulator.softquote import QuoteFields, SoftAk, ecc_public_area
from verifier.store import open_store
from verifier.store.base import DeviceRecord

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


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


def client(
    first: int,
    threads: int,
    address: str,
    seconds: float,
    out: multiprocessing.Queue[tuple[int, float]],
    cpus: frozenset[int] = frozenset(),
) -> None:
    if cpus:
        os.sched_setaffinity(0, cpus)
    record = boot(GOOD_A, lambda pcr, digests: None)
    pcrs = dict(record.expected_pcrs["sha256"])
    counts = [0] * threads
    start_cpu = time.process_time()
    deadline = time.monotonic() + seconds

    def loop(slot: int) -> None:
        index = first + slot
        ak = soft_ak(index)
        device_id = f"dev-load-{index}"
        with grpc.insecure_channel(address) as ch:
            stub = pb_grpc.AgentStub(ch)
            while time.monotonic() < deadline:
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


def scrape_every_second(port: int, seconds: float) -> list[int]:
    """Scrape /metrics once a second for ``seconds``; the sizes of the answers."""
    sizes = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            sizes.append(len(reply.read()))
        time.sleep(1.0)
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2, help="verifier processes")
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--threads", type=int, default=8, help="threads per client")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=4, help="RPC threads per verifier process")
    parser.add_argument("--metrics", action="store_true", help="serve and scrape /metrics")
    parser.add_argument("--server-cpus", default="", help="taskset CPU list of the verifier")
    parser.add_argument("--client-cpus", default="", help="CPU list of the client processes")
    ns = parser.parse_args()
    client_cpus = frozenset(int(c) for c in ns.client_cpus.split(",") if c)
    taskset = ["taskset", "-c", ns.server_cpus] if ns.server_cpus else []
    metrics_port = free_port()
    metrics = ["--metrics-listen", f"127.0.0.1:{metrics_port}"] if ns.metrics else []
    devices = ns.clients * ns.threads
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "verifier.db"
        enroll_directly(db, devices)
        port = free_port()
        verifier = subprocess.Popen(
            [
                *taskset, sys.executable, "-m", "verifier.cli", "--log-level", "warning", "serve",
                "--listen", f"127.0.0.1:{port}", "--db", str(db),
                "--golden", str(ROOT / "golden_measurements"),
                "--processes", str(ns.processes), "--workers", str(ns.workers),
                "--port-file", str(Path(tmp) / "port"), *metrics,
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
                        client_cpus,
                    ),
                )
                for c in range(ns.clients)
            ]
            started = time.monotonic()
            for proc in procs:
                proc.start()
            scrapes = scrape_every_second(metrics_port, ns.seconds) if ns.metrics else []
            results = [queue.get(timeout=ns.seconds + 60) for _ in procs]
            elapsed = time.monotonic() - started
            for proc in procs:
                proc.join()
            verifier_cpu = sum(cpu_seconds(pid) for pid in pids) - before
        finally:
            verifier.send_signal(signal.SIGTERM)
            verifier.wait(timeout=20)
    total = sum(count for count, _ in results)
    client_cpu = sum(cpu for _, cpu in results)
    if ns.metrics and not scrapes:
        raise SystemExit("metrics were asked for but no scrape succeeded")
    print(
        f"metrics {'on' if ns.metrics else 'off'} ({len(scrapes)} scrapes), "
        f"{ns.processes} verifier processes, {ns.clients}x{ns.threads} client threads, "
        f"{elapsed:.1f} s: {total} attestations, {total / elapsed:.0f} per second; CPU per "
        f"attestation: verifier {verifier_cpu * 1000 / max(total, 1):.2f} ms, "
        f"clients {client_cpu * 1000 / max(total, 1):.2f} ms"
    )


if __name__ == "__main__":
    main()
