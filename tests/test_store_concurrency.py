"""Single use under concurrency: nonces raced by threads and by separate verifier processes.

Two verifier processes may share one SQLite file, and any number of replicas one PostgreSQL
database (DESIGN: a nonce is consumed exactly once, also across replicas). Each test starts its
racers behind a barrier so they really overlap, then checks the invariant on the union of what
they got: every nonce taken exactly once. The races run against every backend (``target``);
PostgreSQL is skipped where it is not installed.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from pgcluster import fresh_schema_url, pg_cluster  # noqa: F401 (the fixture)

from verifier.store import open_store
from verifier.store.base import DeviceRecord, IssuedNonce, Store
from verifier.verdict import BootEpoch, Status, Verdict

ROOT = Path(__file__).resolve().parent.parent
NOW = 1_800_000_000.0
NONCES = 200

# A racer process: open the store, wait for the start file, try every nonce in order, print
# the ones it got (hex, JSON). Any exception fails the process and so the test.
CONSUMER = """
import json, sys, time
from pathlib import Path
from verifier.store import open_store

db, go, device, now = sys.argv[1], Path(sys.argv[2]), sys.argv[3], float(sys.argv[4])
nonces = [bytes.fromhex(h) for h in json.loads(sys.stdin.read())]
store = open_store(db)
print("ready", flush=True)
while not go.exists():  # spin: both racers must leave the line within microseconds
    pass
taken = [n.hex() for n in nonces if store.consume_nonce(device, n, now) is not None]
store.close()
print(json.dumps(taken), flush=True)
"""

# A writer process: open the store, wait for the start file, add verdicts, print sequences.
WRITER = """
import json, sys, time
from pathlib import Path
from verifier.store import open_store
from verifier.verdict import BootEpoch, Status, Verdict

db, go, device, count = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
store = open_store(db)
print("ready", flush=True)
while not go.exists():
    time.sleep(0.001)
v = Verdict(device, Status.AFFIRMING, (), "p", "r", "g", BootEpoch(1, 0), 0.0, 1.0)
sequences = [store.add_verdict(v).sequence for _ in range(count)]
store.close()
print(json.dumps(sequences), flush=True)
"""


def _device(device_id: str) -> DeviceRecord:
    return DeviceRecord(device_id, b"ek", b"", None, b"ak", b"name", {}, 1, NOW)


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where the racers meet: a SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return str(tmp_path / "shared.db")
    return fresh_schema_url(request.getfixturevalue("pg_cluster"))


def _seeded_store(
    where: Path | str, devices: tuple[str, ...] = ("dev-a",)
) -> tuple[Store, list[bytes]]:
    store = open_store(where)
    for device_id in devices:
        store.insert_device(_device(device_id))
    nonces = [secrets.token_bytes(32) for _ in range(NONCES)]
    for value in nonces:
        store.add_nonce(IssuedNonce(value, "dev-a", "sha256", (0, 7), "p", NOW + 60))
    return store, nonces


def _race(script: str, args_per_process: list[list[str]], stdin: str, go: Path) -> list[str]:
    """Start one process per argument list, release them together, return their last lines."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env,
        )
        for args in args_per_process
    ]
    for proc in procs:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        proc.stdin.write(stdin)
        proc.stdin.close()
        line = proc.stdout.readline().strip()
        assert line == "ready", proc.stderr.read()
    go.touch()
    results = []
    for proc in procs:
        assert proc.stdout is not None and proc.stderr is not None
        out = proc.stdout.read()
        returncode = proc.wait(timeout=60)
        assert returncode == 0, proc.stderr.read()
        proc.stdout.close()
        proc.stderr.close()
        results.append(out.strip().splitlines()[-1])
    return results


def test_two_processes_racing_take_each_nonce_exactly_once(tmp_path: Path, target: str) -> None:
    store, nonces = _seeded_store(target)
    store.close()
    go = tmp_path / "go"
    hexes = json.dumps([n.hex() for n in nonces])
    args = [target, str(go), "dev-a", str(NOW)]
    outputs = _race(CONSUMER, [args, args], hexes, go)
    first, second = (set(json.loads(out)) for out in outputs)
    assert first.isdisjoint(second)
    assert first | second == {n.hex() for n in nonces}


def test_process_racing_as_another_device_takes_nothing(tmp_path: Path, target: str) -> None:
    store, nonces = _seeded_store(target, ("dev-a", "dev-b"))
    store.close()
    go = tmp_path / "go"
    hexes = json.dumps([n.hex() for n in nonces])
    owner = [target, str(go), "dev-a", str(NOW)]
    thief = [target, str(go), "dev-b", str(NOW)]
    taken_by_owner, taken_by_thief = (
        set(json.loads(o)) for o in _race(CONSUMER, [owner, thief], hexes, go)
    )
    assert taken_by_thief == set()
    assert taken_by_owner == {n.hex() for n in nonces}


def test_threads_racing_take_each_nonce_exactly_once(target: str) -> None:
    store, nonces = _seeded_store(target)
    threads_count = 8
    barrier = threading.Barrier(threads_count)
    taken: list[list[bytes]] = [[] for _ in range(threads_count)]
    failures: list[BaseException] = []

    def racer(slot: int) -> None:
        try:
            barrier.wait()
            order = nonces if slot % 2 else nonces[::-1]
            for value in order:
                if store.consume_nonce("dev-a", value, NOW) is not None:
                    taken[slot].append(value)
        except BaseException as exc:  # reported below, in the test's thread
            failures.append(exc)

    workers = [threading.Thread(target=racer, args=(i,)) for i in range(threads_count)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    store.close()
    assert failures == []
    everything = [value for got in taken for value in got]
    assert len(everything) == NONCES
    assert set(everything) == set(nonces)


def test_two_processes_writing_verdicts_get_distinct_increasing_sequences(
    tmp_path: Path, target: str
) -> None:
    store = open_store(target)
    store.insert_device(_device("dev-a"))
    go = tmp_path / "go"
    args = [target, str(go), "dev-a", "100"]
    outputs = _race(WRITER, [args, args], "", go)
    per_process = [json.loads(out) for out in outputs]
    for sequences in per_process:
        assert sequences == sorted(sequences)
        assert len(set(sequences)) == 100
    everything = per_process[0] + per_process[1]
    assert len(set(everything)) == 200
    stream = [v.sequence for v in store.verdicts_after(0, limit=1000)]
    assert stream == sorted(everything)
    latest = store.latest_verdict("dev-a")
    assert latest is not None
    assert latest.sequence == max(everything)
    store.close()


def test_two_processes_opening_a_new_file_at_once_both_work(tmp_path: Path) -> None:
    db = tmp_path / "fresh.db"
    go = tmp_path / "go"
    opener = """
import sys, time
from pathlib import Path
print("ready", flush=True)
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.001)
from verifier.store import open_store
store = open_store(Path(sys.argv[1]))
assert store.list_devices() == []  # opened and migrated
store.close()
print("ok", flush=True)
"""
    assert _race(opener, [[str(db), str(go)]] * 2, "", go) == ["ok", "ok"]
    store = open_store(db)
    assert store.list_devices() == []
    store.close()


def test_child_forked_during_a_write_uses_its_own_connection_and_lock(tmp_path: Path) -> None:
    store, nonces = _seeded_store(tmp_path / "fork.db")
    # Another thread is mid-write when the process forks: the child inherits that lock held
    # and the parent's connection mid-use; it must start afresh instead of deadlocking.
    with store._write_lock:  # type: ignore[attr-defined]
        pid = os.fork()
        if pid == 0:  # the child: consume the first nonce through its own connection
            code = 2
            try:
                code = 0 if store.consume_nonce("dev-a", nonces[0], NOW) is not None else 1
            finally:
                os._exit(code)  # never return into pytest in the child
        deadline = time.monotonic() + 10
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        if not done:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    assert done, "the forked child hung on the lock it inherited"
    assert os.waitstatus_to_exitcode(status) == 0
    assert store.consume_nonce("dev-a", nonces[0], NOW) is None  # the child took it
    assert store.consume_nonce("dev-a", nonces[1], NOW) is not None
    verdict = Verdict("dev-a", Status.AFFIRMING, (), "p", "r", "g", BootEpoch(1, 0), 0.0, 1.0)
    assert store.add_verdict(verdict).sequence == 1
    store.close()
