"""The long part of the fault suite (issue 18), run on purpose, printing figures.

    PYTHONPATH=$PWD/proto:$PWD .venv/bin/python bench/bench_faults.py storm [--devices 5000]
    PYTHONPATH=$PWD/proto:$PWD .venv/bin/python bench/bench_faults.py restart [--agents 4]

(``$PWD`` on the path: run from a git worktree, the clients otherwise import the checkout the
venv was installed from, while the verifier runs from the worktree.)

``storm``: a boot storm. ``--devices`` software devices (``simulator.softfleet``: enrolled
straight into the store, real ECDSA quotes) all attest at once against
``serve --processes N``. A device retries only after RESOURCE_EXHAUSTED (the verifier shedding
load), with jittered exponential backoff; any other status is a failure. Prints the time until
every device has a verdict, the status codes seen, the verifier's peak memory (VmHWM of each
process) and checks that the store holds a verdict of every device and that every verdict a
client got back is in the store. Exits 1 when a device got no verdict or a code other than
OK and RESOURCE_EXHAUSTED was seen.

``restart``: recovery after a verifier restart for real agents (``attest-agent run`` on
swtpm). The agents attest, then the verifier is SIGKILLed; the agents are restarted too (a
device booting during the outage: an agent with a fresh verdict would not call the verifier
until that verdict is two thirds through its life), the outage lasts ``--outage`` seconds, the
verifier starts again on the same database, and the time until each agent's next verdict is
in the store is printed (the agents' backoff decides it).
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import grpc

from fleetattest.v1 import fleetattest_pb2 as pb
from fleetattest.v1 import fleetattest_pb2_grpc as pb_grpc
from simulator.softfleet import CHANNEL_OPTIONS, attest_request, device_id, enroll, soft_ak
from verifier.store import open_store

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "golden_measurements"
ENV = {**os.environ, "GRPC_VERBOSITY": "ERROR"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                found.append(int(entry.name))
    return found


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def serve(tmp: Path, db: Path, port: int, *extra: str) -> subprocess.Popen[bytes]:
    port_file = tmp / "port"
    port_file.unlink(missing_ok=True)
    process = subprocess.Popen(
        [
            sys.executable, "-m", "verifier.cli", "--log-level", "warning", "serve",
            "--listen", f"127.0.0.1:{port}", "--db", str(db), "--golden", str(GOLDEN),
            "--port-file", str(port_file),
            # a lab on loopback: devices choose their profile by label, and one address floods
            # the open calls, whose per-peer and per-device limits are lifted
            "--enrollment-policy", "open",
            "--open-calls-per-peer", "1e9", "--open-calls-peer-burst", "1e9",
            "--open-calls-per-device", "1e9", "--open-calls-device-burst", "1e9",
            *extra,
        ],
        env=ENV, cwd=ROOT, start_new_session=True,
    )  # fmt: skip
    while not port_file.exists():
        if process.poll() is not None:
            raise SystemExit("the verifier did not start")
        time.sleep(0.05)
    time.sleep(0.5)  # every worker bound
    return process


def stop_verifier(verifier: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the supervisor (it forwards it); after 60 s, SIGKILL to the whole group."""
    verifier.send_signal(signal.SIGTERM)
    try:
        verifier.wait(timeout=60)
    except subprocess.TimeoutExpired:
        print("  the verifier did not stop within 60 s of SIGTERM: killed", file=sys.stderr)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(verifier.pid, signal.SIGKILL)  # a worker left behind, if any
    verifier.wait()


# ------------------------------------------------------------------ storm


def storm_client(
    indices: list[int],
    threads: int,
    address: str,
    out: multiprocessing.Queue[tuple[Counter[str], dict[str, str], list[str], int]],
) -> None:
    codes: Counter[str] = Counter()
    acknowledged: dict[str, str] = {}  # verdict_id -> device id
    failures: list[str] = []
    lock = threading.Lock()
    pending = list(indices)

    def loop() -> None:
        rng = random.Random()
        with grpc.insecure_channel(address, options=CHANNEL_OPTIONS) as ch:
            stub = pb_grpc.AgentStub(ch)
            while True:
                with lock:
                    if not pending:
                        return
                    index = pending.pop()
                ak = soft_ak(index)
                for attempt in range(60):
                    try:
                        challenge = stub.GetChallenge(
                            pb.GetChallengeRequest(device_id=device_id(index)), timeout=60
                        )
                        verdict = stub.Attest(
                            attest_request(index, ak, challenge), timeout=60
                        ).verdict
                    except grpc.RpcError as error:
                        with lock:
                            codes[error.code().name] += 1
                        if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                            with lock:
                                failures.append(
                                    f"{device_id(index)}: {error.code().name}: {error.details()}"
                                )
                            break
                        time.sleep(rng.uniform(0, min(5.0, 0.05 * 2**attempt)))
                        continue
                    with lock:
                        codes["OK"] += 1
                        acknowledged[verdict.verdict_id] = verdict.device_id
                    break
                else:
                    with lock:
                        failures.append(f"{device_id(index)}: gave up after 60 attempts")

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    out.put((codes, acknowledged, failures, peak_rss_kib(os.getpid())))


def storm(ns: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        db = tmp / "v.db"
        store = open_store(db)
        enroll(store, range(ns.devices), time.time())
        store.close()
        port = free_port()
        verifier = serve(
            tmp, db, port, "--processes", str(ns.processes), "--workers", str(ns.workers)
        )
        try:
            ctx = multiprocessing.get_context("spawn")
            queue: multiprocessing.Queue[tuple[Counter[str], dict[str, str], list[str], int]]
            queue = ctx.Queue()
            shares = [list(range(c, ns.devices, ns.clients)) for c in range(ns.clients)]
            procs = [
                ctx.Process(
                    target=storm_client, args=(share, ns.threads, f"127.0.0.1:{port}", queue)
                )
                for share in shares
            ]
            started = time.monotonic()
            for proc in procs:
                proc.start()
            results = [queue.get(timeout=3600) for _ in procs]
            elapsed = time.monotonic() - started
            for proc in procs:
                proc.join()
            pids = [verifier.pid, *children(verifier.pid)]
            verifier_peaks = [peak_rss_kib(pid) for pid in pids]
        finally:
            stop_verifier(verifier)
        codes: Counter[str] = Counter()
        acknowledged: dict[str, str] = {}
        failures: list[str] = []
        for got, acked, failed, _ in results:
            codes.update(got)
            acknowledged.update(acked)
            failures += failed
        conn = sqlite3.connect(db)
        stored = {
            row[0]: row[1] for row in conn.execute("SELECT verdict_id, device_id FROM verdicts")
        }
        with_verdict = len(set(stored.values()))
        conn.close()
    lost = set(acknowledged) - set(stored)
    print(
        f"boot storm: {ns.devices} devices, {ns.processes} verifier processes x {ns.workers} "
        f"threads, {ns.clients}x{ns.threads} client threads: every device had a verdict after "
        f"{elapsed:.1f} s" if with_verdict == ns.devices and not failures else
        f"boot storm: only {with_verdict} of {ns.devices} devices have a verdict after "
        f"{elapsed:.1f} s"
    )  # fmt: skip
    print(f"  status codes: {dict(codes)}")
    print(
        f"  verifier peak RSS (VmHWM): supervisor {verifier_peaks[0] / 1024:.0f} MiB, workers "
        + ", ".join(f"{kib / 1024:.0f} MiB" for kib in verifier_peaks[1:])
        + f"; client processes {', '.join(f'{r[3] / 1024:.0f} MiB' for r in results)}"
    )
    print(f"  acknowledged verdicts: {len(acknowledged)}, missing from the store: {len(lost)}")
    for failure in failures[:10]:
        print(f"  failure: {failure}")
    bad = set(codes) - {"OK", "RESOURCE_EXHAUSTED"}
    return 1 if failures or lost or bad or with_verdict != ns.devices else 0


# ------------------------------------------------------------------ restart


def restart(ns: argparse.Namespace) -> int:
    from simulator.fleet import Fleet  # noqa: PLC0415 (needs swtpm only here)
    from simulator.profiles import GOOD_A  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as tmp_name, Fleet(Path(tmp_name) / "fleet") as fleet:
        tmp = Path(tmp_name)
        db = tmp / "v.db"
        port = free_port()
        address = f"127.0.0.1:{port}"
        ek_ca = ("--ek-ca", str(fleet.trust_dir))
        verifier = serve(tmp, db, port, *ek_ca)
        devices = [fleet.add_device(f"agent-{k}", GOOD_A) for k in range(ns.agents)]

        def agent(k: int) -> subprocess.Popen[bytes]:
            device = devices[k]
            return subprocess.Popen(
                [
                    sys.executable, "-m", "agent.cli", "run", "--verifier", address, "--insecure",
                    "--tcti", device.tpm.tcti, "--state-dir", str(device.workdir / "agent-state"),
                    "--event-log", str(device.event_log), "--label", "model=sim-gateway",
                ],
                env=ENV, cwd=ROOT, stderr=subprocess.DEVNULL,
            )  # fmt: skip

        def verdicts_after(sequence: int) -> dict[str, float]:
            conn = sqlite3.connect(db)
            try:
                rows = conn.execute(
                    "SELECT device_id, min(sequence) FROM verdicts WHERE sequence > ?"
                    " GROUP BY device_id",
                    (sequence,),
                ).fetchall()
            finally:
                conn.close()
            return {row[0]: row[1] for row in rows}

        agents = [agent(k) for k in range(ns.agents)]
        try:
            deadline = time.monotonic() + 300
            while len(verdicts_after(0)) < ns.agents:
                if time.monotonic() > deadline:
                    raise SystemExit("the agents did not attest before the restart")
                time.sleep(0.2)
            conn = sqlite3.connect(db)
            last = int(conn.execute("SELECT max(sequence) FROM verdicts").fetchone()[0])
            conn.close()
            os.killpg(verifier.pid, signal.SIGKILL)
            verifier.wait()
            for process in agents:  # the devices reboot while the verifier is down
                process.kill()
                process.wait()
            agents = [agent(k) for k in range(ns.agents)]
            time.sleep(ns.outage)
            verifier = serve(tmp, db, port, *ek_ca)
            back = time.monotonic()
            recovered: dict[str, float] = {}
            while len(recovered) < ns.agents and time.monotonic() < back + 600:
                for device in verdicts_after(last):
                    recovered.setdefault(device, time.monotonic() - back)
                time.sleep(0.1)
        finally:
            for process in agents:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=30)
            stop_verifier(verifier)
    times = sorted(recovered.values())
    print(
        f"restart: {ns.agents} agents (attest-agent run, swtpm), verifier down {ns.outage:.0f} s: "
        f"{len(times)} of {ns.agents} had a new verdict; after the verifier was back: "
        + (f"first {times[0]:.1f} s, median {times[len(times) // 2]:.1f} s, last {times[-1]:.1f} s"
           if times else "none")
    )  # fmt: skip
    return 0 if len(times) == ns.agents else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="bench", required=True)
    p = sub.add_parser("storm", help="a boot storm of software devices")
    p.add_argument("--devices", type=int, default=5000)
    p.add_argument("--processes", type=int, default=2, help="verifier processes")
    p.add_argument("--workers", type=int, default=8, help="RPC threads per verifier process")
    p.add_argument("--clients", type=int, default=2, help="client processes")
    p.add_argument("--threads", type=int, default=32, help="threads per client process")
    p.set_defaults(func=storm)
    p = sub.add_parser("restart", help="agents' recovery after a verifier restart")
    p.add_argument("--agents", type=int, default=4)
    p.add_argument("--outage", type=float, default=10.0, help="seconds the verifier is down")
    p.set_defaults(func=restart)
    ns = parser.parse_args()
    return int(ns.func(ns))


if __name__ == "__main__":
    sys.exit(main())
