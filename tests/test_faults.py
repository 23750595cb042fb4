"""The fault suite, fast part (issue 18): the real ``attest-verifier serve`` under load from
software devices, while its process is SIGKILLed, its disk fills up, its PostgreSQL server
stops or fails over, or a worker dies.

Every test checks the same things at the end, against the clients' ledger
(``simulator.softfleet``): every verdict a client got back is in the store; no nonce was
issued twice; every acknowledged request replayed is refused (a nonce is consumed once); a
request whose answer was lost is accepted at most once more; clients saw no status but OK and
UNAVAILABLE (nothing INTERNAL, never an affirming verdict the store does not hold); and the
verifier recovered by itself (no restart) except where the test killed it.

The other faults of the issue have their own tests: a killed worker without load and a port
held by another verifier (test_serve_processes.py), swtpm killed mid-quote and a locked-out TPM
(test_agent_tpm_faults.py), a catastrophic pattern (test_golden_pattern.py), raw-bytes fuzz of
every RPC (test_service_decode.py), clock steps (test_clock.py), the store on a small disk
(test_store_headroom.py). The long ones (a 5,000-device boot storm, agents' recovery time
after a restart) are in bench/bench_faults.py.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from pgcluster import PgServer, pg_server
from smallfs import fill, small_volume

from fleetattest.v1 import fleetattest_pb2 as pb
from fleetattest.v1 import fleetattest_pb2_grpc as pb_grpc
from simulator.softfleet import CHANNEL_OPTIONS, Ledger, Load, enroll, wait_until
from verifier.store import open_store

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "golden_measurements"
ENV = {**os.environ, "GRPC_VERBOSITY": "ERROR"}
THREADS = 4
WAIT = 90.0  # seconds any one step may take on a loaded CI machine before the test gives up


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# One address floods the open calls: lift their per-peer and per-device limits.
UNLIMITED = (
    "--open-calls-per-peer", "1e6", "--open-calls-peer-burst", "1e6",
    "--open-calls-per-device", "1e6", "--open-calls-device-burst", "1e6",
)  # fmt: skip


class Serve:
    """``attest-verifier serve`` in a subprocess (its own process group), restartable."""

    def __init__(self, workdir: Path, db: str, *extra: str) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        # a short path: Unix socket paths end at 107 bytes
        self.socket = Path(tempfile.mkdtemp(prefix="fa-")) / "op.sock"
        self.argv = [
            sys.executable, "-m", "verifier.cli", "serve", "--listen", self.address,
            "--db", db, "--golden", str(GOLDEN), "--keys", str(workdir / "keys"),
            "--port-file", str(workdir / "port"), "--operator-socket", str(self.socket),
            *UNLIMITED, *extra,
        ]  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        (self.workdir / "port").unlink(missing_ok=True)
        self.starts += 1
        log = (self.workdir / f"serve-{self.starts}.log").open("wb")
        self.process = subprocess.Popen(
            self.argv, stdout=log, stderr=log, env=ENV, cwd=ROOT, start_new_session=True
        )
        log.close()
        wait_until(self._serving, WAIT, "the verifier to serve")

    def _serving(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"serve exited {self.process.returncode}: {self.log()}")
        return (self.workdir / "port").exists()

    def log(self) -> str:
        return (self.workdir / f"serve-{self.starts}.log").read_text(errors="replace")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def serving(tmp_path: Path) -> Iterator[list[Serve]]:
    """Serves a test started; each is stopped at the end, also when the test failed."""
    started: list[Serve] = []
    yield started
    for serve in started:
        serve.stop()


def enroll_into(db: str, devices: int) -> None:
    store = open_store(db, reserve_bytes=0)  # a small test volume is below the default reserve
    try:
        enroll(store, range(devices), time.time())
    finally:
        store.close()


def more_acknowledged(ledger: Ledger, extra: int) -> None:
    """Wait until clients got ``extra`` more verdicts than now."""
    target = ledger.acknowledged_count() + extra
    wait_until(lambda: ledger.acknowledged_count() >= target, WAIT, f"{extra} more verdicts")


def more_unavailable(ledger: Ledger, extra: int) -> None:
    target = ledger.count("UNAVAILABLE") + extra
    wait_until(lambda: ledger.count("UNAVAILABLE") >= target, WAIT, "clients to see UNAVAILABLE")


def assert_nothing_acknowledged_lost(db: str, address: str, ledger: Ledger) -> None:
    """The ledger against the store and against a replay at the verifier."""
    assert set(ledger.codes) <= {"OK", "UNAVAILABLE"}, ledger.details
    assert ledger.acknowledged, "no verdict was acknowledged at all"
    assert all(v.status == pb.STATUS_AFFIRMING for v in ledger.acknowledged.values())
    assert len(set(ledger.nonces)) == len(ledger.nonces), "a nonce was issued twice"
    store = open_store(db, read_only=True)
    try:
        stored: dict[str, int] = {}
        after = 0
        while batch := store.verdicts_after(after, limit=1000):
            stored.update((v.verdict_id, v.sequence) for v in batch)
            after = batch[-1].sequence
    finally:
        store.close()
    missing = set(ledger.acknowledged) - set(stored)
    assert not missing, f"{len(missing)} acknowledged verdicts are not in the store"
    for verdict_id, verdict in ledger.acknowledged.items():
        assert stored[verdict_id] == verdict.sequence
    with grpc.insecure_channel(address, options=CHANNEL_OPTIONS) as ch:
        stub = pb_grpc.AgentStub(ch)
        for request in ledger.answered:  # each nonce was consumed: a replay is refused
            with pytest.raises(grpc.RpcError) as replay:
                stub.Attest(request, timeout=WAIT)
            assert replay.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        for request in ledger.unanswered:  # at most once more, never twice
            outcomes = []
            for _ in range(2):
                try:
                    stub.Attest(request, timeout=WAIT)
                    outcomes.append("OK")
                except grpc.RpcError as error:
                    outcomes.append(error.code().name)
            assert outcomes[1] == "FAILED_PRECONDITION", outcomes


def integrity_ok(db: Path) -> bool:
    conn = sqlite3.connect(db)
    try:
        return bool(conn.execute("PRAGMA integrity_check").fetchone() == ("ok",))
    finally:
        conn.close()


# ------------------------------------------------------------------ SQLite


def test_sigkill_mid_load_then_restart_on_the_same_store_loses_nothing_acknowledged(
    tmp_path: Path, serving: list[Serve]
) -> None:
    db = tmp_path / "v.db"
    enroll_into(str(db), THREADS)
    serve = Serve(tmp_path, str(db))
    serving.append(serve)
    serve.start()
    with Load(serve.address, 0, THREADS) as load:
        for _ in range(2):  # killed twice, mid-load
            more_acknowledged(load.ledger, 40)
            serve.kill()
            more_unavailable(load.ledger, THREADS)
            serve.start()
        more_acknowledged(load.ledger, 40)
    assert integrity_ok(db)
    assert_nothing_acknowledged_lost(str(db), serve.address, load.ledger)


def test_disk_filled_under_a_running_verifier_refuses_writes_then_recovers_without_restart(
    serving: list[Serve],
) -> None:
    with small_volume("8m") as volume:
        db = volume / "v.db"
        enroll_into(str(db), THREADS)
        serve = Serve(volume, str(db), "--store-reserve", "1M")
        serving.append(serve)
        serve.start()
        with Load(serve.address, 0, THREADS) as load:
            more_acknowledged(load.ledger, 20)
            filler = fill(volume, leave=512 * 1024)
            more_unavailable(load.ledger, 10)
            assert any("disk nearly full" in d for d in load.ledger.details), load.ledger.details
            acknowledged = next(iter(load.ledger.acknowledged.values()))
            with grpc.insecure_channel(f"unix:{serve.socket}") as ch:  # reads still answer
                status = pb_grpc.OperatorStub(ch).GetStatus(pb.GetStatusRequest(), timeout=WAIT)
                served = pb_grpc.RelyingPartyStub(ch).GetVerdict(
                    pb.GetVerdictRequest(device_id=acknowledged.device_id), timeout=WAIT
                )
            assert status is not None and served.verdict.device_id == acknowledged.device_id
            filler.unlink()
            more_acknowledged(load.ledger, 20)
        assert serve.alive() and serve.starts == 1
        assert "Traceback" not in serve.log()
        serve.stop()
        assert integrity_ok(db)
        serve.start()  # the replay check needs a verifier; the volume is still mounted
        assert_nothing_acknowledged_lost(str(db), serve.address, load.ledger)
        serve.stop()


def test_worker_killed_under_load_loses_nothing_acknowledged(
    tmp_path: Path, serving: list[Serve]
) -> None:
    db = tmp_path / "v.db"
    enroll_into(str(db), THREADS)
    serve = Serve(tmp_path, str(db), "--processes", "2")
    serving.append(serve)
    serve.start()
    assert serve.process is not None
    parent = serve.process.pid
    with Load(serve.address, 0, THREADS) as load:
        more_acknowledged(load.ledger, 40)
        wait_until(lambda: len(children_of(parent)) == 2, WAIT, "two workers")
        victim = min(children_of(parent))
        os.kill(victim, signal.SIGKILL)
        wait_until(
            lambda: len(children_of(parent) - {victim}) == 2, WAIT, "the worker to be replaced"
        )
        more_acknowledged(load.ledger, 40)
    assert serve.alive()
    assert_nothing_acknowledged_lost(str(db), serve.address, load.ledger)


def children_of(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


# ------------------------------------------------------------------ PostgreSQL


@pytest.fixture
def postgres() -> Iterator[PgServer]:
    with pg_server(durable=True) as server:
        yield server


def test_postgresql_stopped_restarted_and_failed_over_under_a_running_verifier(
    tmp_path: Path, serving: list[Serve], postgres: PgServer
) -> None:
    enroll_into(postgres.url, THREADS)
    serve = Serve(tmp_path, postgres.url)
    serving.append(serve)
    serve.start()
    with Load(serve.address, 0, THREADS) as load:
        more_acknowledged(load.ledger, 30)
        postgres.stop("fast")
        more_unavailable(load.ledger, 10)
        postgres.start()
        more_acknowledged(load.ledger, 30)
        postgres.stop("immediate")  # a crash
        more_unavailable(load.ledger, 10)
        postgres.start()
        more_acknowledged(load.ledger, 30)
        postgres.failover()  # another server, same socket path
        more_acknowledged(load.ledger, 30)
    assert serve.alive() and serve.starts == 1
    assert "Traceback" not in serve.log()
    assert_nothing_acknowledged_lost(postgres.url, serve.address, load.ledger)
