"""Verifier throughput per core over gRPC, with software quotes: attestations/s, server CPU per
attestation, latency and memory, for the simulator's log and Keylime's 99-event log.

    PYTHONPATH=$PWD/proto:$PWD .venv/bin/python bench/bench_throughput.py \
        [--logs sim,keylime] [--repeats 3] [--seconds 5] [--threads 8] [--processes 1] \
        [--tree NAME=DIR ...] [--tls] [--storm N]

Each run starts a fresh verifier (``attest-verifier serve``, a fresh SQLite database, devices
enrolled straight into the store with software AKs) pinned with ``taskset`` to ``--server-cores``
(default core 0), and one load-generator process pinned to ``--client-cores`` (default core 1)
whose threads loop GetChallenge -> software quote -> Attest over one reused channel each
(closed loop: as fast as the verifier answers). After a warm-up, for ``--seconds`` it counts
attestations and their latency (challenge + attest, as a device sees it) and reads, from /proc,
utime+stime of every verifier process (each process's stat covers all its threads) and VmRSS.

``--tree NAME=DIR`` (repeatable) runs the server from another checkout (e.g. a ``git worktree``
of the baseline commit) so that before/after figures come from interleaved runs on the same
machine: the order is repeat -> tree -> log. ``--tls`` serves with ``--tls-cert/--tls-key``
(certificates from ``verifier.tls.pki.init_pki``) and the clients use TLS channels; a server
without those flags is refused with a message, not run in plaintext.

``--storm N`` instead runs the boot-storm mode: N devices, each with a software EK
(``simulator.softek``, allowlisted) and AK, all enroll (StartEnrollment, software
ActivateCredential, FinishEnrollment) and attest at once; it reports the time until every
device has a verdict, RESOURCE_EXHAUSTED answers (shed load: the agent backs off and retries)
and other errors.

Figures depend on what else runs on the machine: say so when quoting them.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import multiprocessing
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
from cryptography.hazmat.primitives.asymmetric import ec

from fleetattest.v1 import fleetattest_pb2 as pb
from fleetattest.v1 import fleetattest_pb2_grpc as pb_grpc
from simulator.firmware import boot
from simulator.fleet import DEVICE_LABELS
from simulator.profiles import GOOD_A
from simulator.softek import SoftEk
from simulator.softquote import QuoteFields, SoftAk, ecc_public_area
from verifier.eventlog import parse_event_log
from verifier.eventlog.replay import replay
from verifier.golden.learn import learn_release
from verifier.records import DeviceRecord
from verifier.store import open_store
from verifier.tls.pki import init_pki

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")
KEYLIME_LOG = ROOT / "tests/data/eventlogs/keylime/binary_bios_measurements-secureboot"
KEYLIME_LABELS = {"model": "keylime-bench"}
WARMUP = 1.0


# ------------------------------------------------------------------ workloads


@dataclasses.dataclass(frozen=True)
class Workload:
    """What a device sends: its labels, its event log and the PCR values that log replays to."""

    name: str
    labels: dict[str, str]
    log: bytes
    pcrs: dict[int, bytes]


def workload(name: str) -> Workload:
    if name == "sim":
        record = boot(GOOD_A, lambda pcr, digests: None)
        return Workload(name, dict(DEVICE_LABELS), record.log, dict(record.expected_pcrs["sha256"]))
    if name == "keylime":
        data = KEYLIME_LOG.read_bytes()
        pcrs = replay(parse_event_log(data), "sha256").pcrs
        return Workload(name, dict(KEYLIME_LABELS), data, dict(pcrs))
    raise SystemExit(f"unknown log {name!r}: sim or keylime")


def keylime_profile() -> str:
    """A profile whose one release ``golden learn`` wrote from Keylime's log (371 dbx hashes)."""
    work = workload("keylime")
    selection = [p for p in sorted(work.pcrs) if p <= 9]
    release = learn_release(work.log, work.pcrs, "sha256", "keylime-edk2", selection)
    return (
        "profile: keylime-bench\n"
        "match: {model: keylime-bench}\n"
        "verdict_lifetime: 1h\n"
        "bank: sha256\n"
        f"pcrs: [{', '.join(map(str, selection))}]\n"
        "releases:\n" + release
    )


def golden_dir(where: Path) -> Path:
    where.mkdir()
    shutil.copy(ROOT / "golden_measurements" / "sim-gateway.yaml", where)
    (where / "keylime-bench.yaml").write_text(keylime_profile())
    return where


def soft_ak(index: int) -> SoftAk:
    key = ec.derive_private_key(10_000 + index, ec.SECP256R1())
    return SoftAk(key, ecc_public_area(key.public_key()))


def enroll_directly(db: Path, devices: int, labels: dict[str, str]) -> None:
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
                labels=dict(labels),
                enrollment_count=1,
                enrolled_at=time.time(),
            )
        )
    store.close()


# ------------------------------------------------------------------ /proc


def process_tree(root: int) -> list[int]:
    """``root`` and its descendants (``serve --processes N`` forks N workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def cpu_seconds(pids: Sequence[int]) -> float:
    """utime + stime of each process (a process's stat sums all of its threads)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / TICKS


def rss_mb(pids: Sequence[int]) -> float:
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


# ------------------------------------------------------------------ the server


@dataclasses.dataclass(frozen=True)
class Tls:
    ca: Path
    cert: Path
    key: Path


def make_tls(where: Path) -> Tls:
    init_pki(where, verifier_names=["localhost"], now=dt.datetime.now(dt.UTC))
    return Tls(where / "ca.pem", where / "verifier.pem", where / "verifier.key")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tree_env(tree: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": f"{tree / 'proto'}{os.pathsep}{tree}",
        "GRPC_VERBOSITY": "ERROR",
    }


def check_tls_flags(tree: Path) -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "verifier.cli", "serve", "--help"],
        cwd=tree, env=tree_env(tree), capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    if "--tls-cert" not in shown:
        raise SystemExit(f"{tree}: this verifier has no serve --tls-cert yet; run without --tls")


OPEN_CALLS_UNLIMITED = [
    f"--{flag}={1e9}"
    for flag in (
        "open-calls-per-peer",
        "open-calls-peer-burst",
        "open-calls-per-device",
        "open-calls-device-burst",
    )
]


@dataclasses.dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    pids: list[int]


def start_server(
    tree: Path, tmp: Path, db: str, golden: Path, ns: argparse.Namespace, tls: Tls | None,
    extra: Sequence[str] = (),
) -> Server:  # fmt: skip
    port = free_port()
    port_file = tmp / "port"
    command = [
        "taskset", "-c", ns.server_cores, sys.executable, "-m", "verifier.cli",
        "--log-level", "warning", "serve", "--listen", f"127.0.0.1:{port}", "--db", db,
        "--golden", str(golden), "--processes", str(ns.processes),
        "--workers", str(ns.workers), "--port-file", str(port_file), *extra,
        # a lab: the load's devices choose their profile by label, and one address floods
        # the open calls, so their per-peer and per-device limits are lifted
        "--enrollment-policy", "open", *OPEN_CALLS_UNLIMITED,
    ]  # fmt: skip
    if tls is not None:
        command += [
            "--tls-cert", str(tls.cert), "--tls-key", str(tls.key), "--client-ca", str(tls.ca)
        ]  # fmt: skip
    proc = subprocess.Popen(command, cwd=tree, env=tree_env(tree))
    while not port_file.exists():
        if proc.poll() is not None:
            raise SystemExit(f"the verifier from {tree} did not start")
        time.sleep(0.05)
    time.sleep(0.3 + 0.2 * ns.processes)  # every worker bound
    return Server(proc, port, process_tree(proc.pid))


def stop_server(server: Server) -> None:
    server.proc.send_signal(signal.SIGTERM)
    try:
        server.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()


def channel(address: str, ca: Path | None) -> grpc.Channel:
    if ca is None:
        return grpc.insecure_channel(address)
    creds = grpc.ssl_channel_credentials(root_certificates=ca.read_bytes())
    return grpc.secure_channel(address, creds, [("grpc.ssl_target_name_override", "localhost")])


# ------------------------------------------------------------------ the load generator


def pin(cores: str) -> None:
    """``taskset -c cores`` for this process (the same sched_setaffinity call)."""
    chosen: set[int] = set()
    for part in cores.split(","):
        first, _, last = part.partition("-")
        chosen.update(range(int(first), int(last or first) + 1))
    os.sched_setaffinity(0, chosen)


def attest_once(
    stub: pb_grpc.AgentStub, device_id: str, ak: SoftAk, work: Workload
) -> pb.AttestResponse:
    challenge = stub.GetChallenge(pb.GetChallengeRequest(device_id=device_id))
    quoted = {i: work.pcrs.get(i, bytes(32)) for i in challenge.selection.pcrs}
    attest, sig = ak.quote(QuoteFields(challenge.nonce, "sha256", quoted))
    response: pb.AttestResponse = stub.Attest(
        pb.AttestRequest(
            device_id=device_id,
            nonce=challenge.nonce,
            quote=attest,
            signature=sig,
            pcr_values=[pb.PcrValue(pcr=i, digest=d) for i, d in quoted.items()],
            event_log=work.log,
        )
    )
    return response


def load_client(
    cores: str,
    threads: int,
    address: str,
    ca: Path | None,
    log_name: str,
    window: tuple[float, float],
    out: Any,
) -> None:
    """Loop until the window closes; report (count, latencies, CPU seconds in the window)."""
    pin(cores)
    work = workload(log_name)
    start, end = window
    latencies: list[list[float]] = [[] for _ in range(threads)]
    failures: list[str] = []

    def loop(slot: int) -> None:
        ak = soft_ak(slot)
        with channel(address, ca) as ch:
            stub = pb_grpc.AgentStub(ch)
            while (now := time.monotonic()) < end:
                try:
                    response = attest_once(stub, f"dev-load-{slot}", ak, work)
                except grpc.RpcError as exc:
                    failures.append(f"{exc.code()}: {exc.details()}")
                    return
                if response.verdict.status != pb.STATUS_AFFIRMING:
                    failures.append(f"unexpected verdict {response.verdict.reasons}")
                    return
                done = time.monotonic()
                if now >= start and done <= end:
                    latencies[slot].append(done - now)

    workers = [threading.Thread(target=loop, args=(k,)) for k in range(threads)]
    for worker in workers:
        worker.start()
    time.sleep(max(0.0, start - time.monotonic()))
    cpu_start = time.process_time()
    time.sleep(max(0.0, end - time.monotonic()))
    cpu = time.process_time() - cpu_start
    for worker in workers:
        worker.join()
    out.put(([x for slot in latencies for x in slot], cpu, failures))


@dataclasses.dataclass(frozen=True)
class RunResult:
    tree: str
    log: str
    rate: float
    server_ms: float
    client_ms: float
    p50_ms: float
    p99_ms: float
    rss_start: float
    rss_end: float
    count: int


def profile(server: Server, ns: argparse.Namespace, label: str) -> subprocess.Popen[bytes] | None:
    """``--py-spy PREFIX``: sample the GIL holder of the last server process for the window."""
    if not ns.py_spy:
        return None
    out = f"{ns.py_spy}-{label}.txt"
    return subprocess.Popen(
        [
            "taskset", "-c", ns.client_cores, str(Path(sys.executable).parent / "py-spy"),
            "record", "--pid", str(server.pids[-1]),
            "--duration", str(int(ns.seconds)), "--rate", "250", "--format", "raw",
            "--output", out, "--nonblocking", "--gil", *(["--native"] if ns.native else []),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def run_once(tree_name: str, tree: Path, log_name: str, ns: argparse.Namespace) -> RunResult:
    work = workload(log_name)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        db = tmp / "verifier.db"
        enroll_directly(db, ns.threads, work.labels)
        tls = make_tls(tmp / "pki") if ns.tls else None
        server = start_server(tree, tmp, str(db), golden_dir(tmp / "golden"), ns, tls)
        try:
            rss_start = rss_mb(server.pids)
            ctx = multiprocessing.get_context("spawn")  # no gRPC state crosses a fork
            queue = ctx.Queue()
            begin = time.monotonic() + 1.5 + WARMUP  # spawn and import, then warm up
            window = (begin, begin + ns.seconds)
            proc = ctx.Process(
                target=load_client,
                args=(
                    ns.client_cores, ns.threads, f"127.0.0.1:{server.port}",
                    tls.ca if tls else None, log_name, window, queue,
                ),
            )  # fmt: skip
            proc.start()
            time.sleep(max(0.0, window[0] - time.monotonic()))
            spy = profile(server, ns, f"{tree_name}-{log_name}")
            cpu_start = cpu_seconds(server.pids)
            time.sleep(max(0.0, window[1] - time.monotonic()))
            cpu = cpu_seconds(server.pids) - cpu_start
            if spy is not None:
                spy.wait()
            latencies, client_cpu, failures = queue.get(timeout=ns.seconds + 120)
            proc.join()
            rss_end = rss_mb(server.pids)
        finally:
            stop_server(server)
    if failures:
        raise SystemExit(f"{tree_name}/{log_name}: {len(failures)} failures, e.g. {failures[0]}")
    latencies.sort()
    count = len(latencies)
    return RunResult(
        tree=tree_name,
        log=log_name,
        rate=count / ns.seconds,
        server_ms=cpu * 1000 / max(count, 1),
        client_ms=client_cpu * 1000 / max(count, 1),
        p50_ms=latencies[count // 2] * 1000 if count else 0.0,
        p99_ms=latencies[int(count * 0.99)] * 1000 if count else 0.0,
        rss_start=rss_start,
        rss_end=rss_end,
        count=count,
    )


# ------------------------------------------------------------------ boot storm


def storm(tree: Path, ns: argparse.Namespace) -> None:
    work = workload(ns.logs.split(",")[0])
    devices = ns.storm
    eks = [SoftEk.derive(20_000 + i) for i in range(devices)]
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        allow = tmp / "allowlist"
        allow.write_text("".join(f"{ek.fingerprint}\n" for ek in eks))
        tls = make_tls(tmp / "pki") if ns.tls else None
        server = start_server(
            tree, tmp, str(tmp / "verifier.db"), golden_dir(tmp / "golden"), ns, tls,
            ["--allowlist", str(allow)],
        )  # fmt: skip
        try:
            rss_start = rss_mb(server.pids)
            cpu_start = cpu_seconds(server.pids)
            ctx = multiprocessing.get_context("spawn")
            queue = ctx.Queue()
            go = time.monotonic() + 2.0
            procs = [
                ctx.Process(
                    target=storm_client,
                    args=(
                        ns.client_cores, ns.storm_threads, range(c, devices, ns.storm_clients),
                        f"127.0.0.1:{server.port}", tls.ca if tls else None, work.name,
                        go, ns.storm_deadline, queue,
                    ),
                )
                for c in range(ns.storm_clients)
            ]  # fmt: skip
            for proc in procs:
                proc.start()
            results = [queue.get(timeout=ns.storm_deadline + 120) for _ in procs]
            for proc in procs:
                proc.join()
            cpu = cpu_seconds(server.pids) - cpu_start
            rss_end = rss_mb(server.pids)
        finally:
            stop_server(server)
    done = sum(r[0] for r in results)
    last = max((r[1] for r in results), default=0.0)
    shed = sum(r[2] for r in results)
    errors = [e for r in results for e in r[3]]
    print(
        f"boot storm, {devices} devices ({work.name} log), {ns.processes} server process(es) "
        f"on cores {ns.server_cores}, {ns.storm_clients} clients x {ns.storm_threads} threads "
        f"on cores {ns.client_cores}: {done}/{devices} devices with a verdict; the last after "
        f"{last:.2f} s; shed (RESOURCE_EXHAUSTED, retried) {shed}; errors {len(errors)}"
        f"{' e.g. ' + errors[0] if errors else ''}; server CPU {cpu:.2f} s; "
        f"RSS {rss_start:.1f} -> {rss_end:.1f} MB"
    )


def storm_client(
    cores: str,
    threads_per_client: int,
    indices: Sequence[int],
    address: str,
    ca: Path | None,
    log_name: str,
    go: float,
    deadline: float,
    out: Any,
) -> None:
    """Enroll then attest each device once, retrying shed requests with jittered backoff."""
    pin(cores)
    work = workload(log_name)
    todo = list(indices)
    lock = threading.Lock()
    finished: list[float] = []
    shed = [0]
    errors: list[str] = []
    chan = channel(address, ca)
    stub = pb_grpc.AgentStub(chan)
    time.sleep(max(0.0, go - time.monotonic()))

    def retrying(call: Callable[[], Any]) -> Any:
        delay = 0.05
        while time.monotonic() < go + deadline:
            try:
                return call()
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise
                with lock:
                    shed[0] += 1
                time.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, 2.0)
        raise TimeoutError("deadline passed while shed")

    def device(index: int) -> None:
        ek = SoftEk.derive(20_000 + index)
        ak = SoftAk.generate()
        started = retrying(
            lambda: stub.StartEnrollment(
                pb.StartEnrollmentRequest(
                    ek_public=ek.tpm2b_public, ak_public=ak.tpm2b_public, labels=work.labels
                )
            )
        )
        secret = ek.activate_credential(started.credential_blob, started.encrypted_secret, ak.name)
        retrying(
            lambda: stub.FinishEnrollment(
                pb.FinishEnrollmentRequest(challenge_id=started.challenge_id, proof=secret)
            )
        )
        response = retrying(lambda: attest_once(stub, started.device_id, ak, work))
        if response.verdict.status != pb.STATUS_AFFIRMING:
            raise RuntimeError(f"verdict {response.verdict.status}")

    def loop() -> None:
        while True:
            with lock:
                if not todo:
                    return
                index = todo.pop()
            try:
                device(index)
                with lock:
                    finished.append(time.monotonic() - go)
            except (grpc.RpcError, TimeoutError, RuntimeError) as exc:
                with lock:
                    errors.append(str(exc).splitlines()[0][:200])

    threads = [threading.Thread(target=loop) for _ in range(threads_per_client)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    chan.close()
    out.put((len(finished), max(finished, default=0.0), shed[0], errors))


# ------------------------------------------------------------------ main


def spread(values: Sequence[float], fmt: str) -> str:
    return "/".join(format(v, fmt) for v in (min(values), statistics.median(values), max(values)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logs", default="sim,keylime", help="comma-separated: sim, keylime")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured window per run")
    parser.add_argument("--threads", type=int, default=8, help="load-generator threads")
    parser.add_argument("--processes", type=int, default=1, help="verifier processes")
    parser.add_argument("--workers", type=int, default=4, help="RPC threads per process")
    parser.add_argument("--server-cores", default="0", help="taskset list (default 0)")
    parser.add_argument("--client-cores", default="1", help="taskset list (default 1)")
    parser.add_argument(
        "--tree", action="append", default=[], metavar="NAME=DIR",
        help="run the server from DIR (repeat to compare checkouts; default: this one)",
    )  # fmt: skip
    parser.add_argument("--tls", action="store_true", help="serve and attest over TLS")
    parser.add_argument("--py-spy", metavar="PREFIX", help="profile the server with py-spy")
    parser.add_argument("--native", action="store_true", help="with --py-spy: C frames too")
    parser.add_argument("--storm", type=int, default=0, metavar="N", help="boot-storm mode")
    parser.add_argument("--storm-clients", type=int, default=1, help="load processes (storm)")
    parser.add_argument("--storm-threads", type=int, default=32, help="threads each (storm)")
    parser.add_argument("--storm-deadline", type=float, default=120.0, help="seconds (storm)")
    ns = parser.parse_args()
    trees = [(t.partition("=")[0], Path(t.partition("=")[2]).resolve()) for t in ns.tree] or [
        ("this", ROOT)
    ]
    if ns.tls:
        for _, tree in trees:
            check_tls_flags(tree)
    if ns.storm:
        for _, tree in trees:
            storm(tree, ns)
        return
    logs = ns.logs.split(",")
    results: list[RunResult] = []
    for repeat in range(ns.repeats):
        for name, tree in trees:
            for log_name in logs:
                r = run_once(name, tree, log_name, ns)
                results.append(r)
                print(
                    f"run {repeat + 1} {name:>8} {log_name:>7}: {r.rate:6.0f}/s, server "
                    f"{r.server_ms:.3f} ms/att, client {r.client_ms:.3f} ms/att, p50 "
                    f"{r.p50_ms:.1f} ms, p99 {r.p99_ms:.1f} ms, RSS {r.rss_start:.1f} -> "
                    f"{r.rss_end:.1f} MB ({r.count} attestations)",
                    flush=True,
                )
    print(
        f"\n{ns.processes} server process(es) x {ns.workers} workers on cores "
        f"{ns.server_cores}, {ns.threads} client threads on cores {ns.client_cores}, "
        f"{'TLS' if ns.tls else 'plaintext'}, {ns.seconds:g} s windows; min/median/max of "
        f"{ns.repeats}\n"
    )
    print("| tree | log | attestations/s | server CPU ms/att | client CPU ms/att | p50 ms | p99 ms "
          "| RSS start MB | RSS end MB |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for name, _ in trees:
        for log_name in logs:
            rs = [r for r in results if r.tree == name and r.log == log_name]
            print(
                f"| {name} | {log_name} | {spread([r.rate for r in rs], '.0f')} "
                f"| {spread([r.server_ms for r in rs], '.3f')} "
                f"| {spread([r.client_ms for r in rs], '.3f')} "
                f"| {spread([r.p50_ms for r in rs], '.1f')} "
                f"| {spread([r.p99_ms for r in rs], '.1f')} "
                f"| {spread([r.rss_start for r in rs], '.1f')} "
                f"| {spread([r.rss_end for r in rs], '.1f')} |"
            )


if __name__ == "__main__":
    main()
