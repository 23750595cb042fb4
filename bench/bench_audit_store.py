"""The audit store at scale: ``audit show`` latency, append cost, storage per attestation and
``audit verify`` time over a store of many attestations (SQLite).

    .venv/bin/python bench/bench_audit_store.py [--attestations 1000000] [--devices 10000]
        [--logs 5] [--db FILE]

Generation (the documented bulk path): devices are inserted with ``insert_device``; each
attestation goes through the store's own write path for a verdict, ``_add_verdict_in`` (the
same statements ``add_verdict`` runs: verdict row, event log once per content, AK once per
key, the log entry with its running root and the persisted tree state, the attestation row),
but 2,000 of them per transaction instead of one, so a million rows do not take a million
fsyncs. Evidence is the size of a real software quote: a 145-byte TPMS_ATTEST, a 72-byte
ECDSA signature, 8 PCR values, and one of ``--logs`` distinct 30 KB event logs (a fleet boots
the same few logs). Attestations are spread evenly over the devices, 60 s apart per device.

Figures printed:
- ``audit show``: median and worst latency of ``auditlog.show`` for random devices and times,
  and the wall time of the ``attest-verifier audit show`` command (a new process each run);
- append cost: CPU per attestation (one transaction each) of the server's write path
  (``add_verdict`` with the history row and the latest evidence), of the pre-audit write path
  (a bare verdict insert plus ``put_evidence``) and of the log append alone (entry, digests,
  tree state);
- storage: database bytes per attestation (page count x page size / attestations);
- ``audit verify``: wall time of ``auditlog.verify_store`` over the whole store.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from verifier import auditlog
from verifier.audit import SignerKey
from verifier.audit.history import (
    AttestationRecord,
    PreviousCounters,
    evidence_digest,
    verdict_entry,
)
from verifier.records import DeviceRecord, IssuedNonce, StoredEvidence
from verifier.store.sqlite import SqliteStore
from verifier.verdict import BootEpoch, Reason, Status, Verdict

T0 = 1_800_000_000.0
CHUNK = 2_000
PCRS = (0, 1, 2, 3, 4, 5, 6, 7)


def _device(index: int) -> DeviceRecord:
    return DeviceRecord(
        device_id=f"device-{index:06d}",
        ek_public=os.urandom(280),
        ek_certificate=b"",
        ek_not_after=None,
        ak_public=os.urandom(90),
        ak_name=b"\x00\x0b" + os.urandom(32),
        labels={"model": "m1"},
        enrollment_count=1,
        enrolled_at=T0,
    )


def _pair(device: DeviceRecord, at: float, log: bytes) -> tuple[Verdict, AttestationRecord]:
    affirming = random.random() < 0.95
    verdict = Verdict(
        device_id=device.device_id,
        status=Status.AFFIRMING if affirming else Status.CONTRAINDICATED,
        reasons=() if affirming else (Reason("pcr.mismatch", "PCR 4 differs", pcr=4),),
        profile="default",
        release="fw-1.0.0",
        golden_digest="sha256:" + "ab" * 32,
        boot_epoch=BootEpoch(3, 0),
        issued_at=at,
        expires_at=at + 3600,
        clock=int(at * 1000),
    )
    record = AttestationRecord(
        device_id=device.device_id,
        received_at=at,
        issued=IssuedNonce(os.urandom(32), device.device_id, "sha256", PCRS, "default", at + 60),
        quote=os.urandom(145),
        signature=os.urandom(72),
        pcr_values=tuple((i, os.urandom(32)) for i in PCRS),
        event_log=log,
        ak_public=device.ak_public,
        ek_not_after=None,
        previous=PreviousCounters(3, 0, int(at * 1000) - 60_000),
    )
    return verdict, record


def generate(store: SqliteStore, attestations: int, devices: int, logs: list[bytes]) -> float:
    records = [_device(i) for i in range(devices)]
    for device in records:
        store.insert_device(device)
    start = time.perf_counter()
    done = 0
    while done < attestations:
        batch = []
        for k in range(done, min(done + CHUNK, attestations)):
            device = records[k % devices]
            at = T0 + (k // devices) * 60.0 + (k % devices) * 60.0 / devices
            batch.append(_pair(device, at, logs[k % len(logs)]))

        def body(run: object, batch: list[tuple[Verdict, AttestationRecord]] = batch) -> None:
            for verdict, record in batch:
                store._add_verdict_in(run, verdict, record)  # type: ignore[arg-type]

        store._serialized("bulk", body)
        done += len(batch)
        if done % 100_000 == 0:
            print(f"  {done} attestations, {time.perf_counter() - start:.0f} s", flush=True)
    return time.perf_counter() - start


def append_cost(store: SqliteStore, devices: int, logs: list[bytes], n: int = 2_000) -> None:
    """CPU per attestation of three write paths, one transaction per attestation, 3 rounds:
    the server's (``add_verdict`` with the history row and the latest evidence), the
    pre-audit one (a bare verdict insert + ``put_evidence``), and the log append alone (a
    verdict insert with its log entry, minus a bare verdict insert)."""
    device = _device(devices + 1)
    store.insert_device(device)
    base = T0 + 1e7
    figures: dict[str, list[float]] = {"server": [], "pre_audit": [], "log_append": []}

    def cpu_per(
        pairs: list[tuple[Verdict, AttestationRecord]], write: Callable[..., object]
    ) -> float:
        cpu = time.process_time()
        for verdict, record in pairs:
            write(verdict, record)
        return (time.process_time() - cpu) / len(pairs)

    def server(verdict: Verdict, record: AttestationRecord) -> None:
        latest = StoredEvidence(
            device.device_id, record.received_at, "sha256", {}, record.event_log
        )
        store.add_verdict(verdict, record, latest)

    def pre_audit(verdict: Verdict, record: AttestationRecord) -> None:
        bare_insert(store, verdict)
        store.put_evidence(
            StoredEvidence(device.device_id, record.received_at, "sha256", {}, record.event_log)
        )

    def with_entry(verdict: Verdict, record: AttestationRecord) -> None:
        def body(run: object) -> None:
            stored = store._insert_verdict(run, verdict)  # type: ignore[arg-type]
            store._append_locked(run, verdict_entry(stored, evidence_digest(record)))  # type: ignore[arg-type]

        store._serialized("verdict with entry", body)

    def bare(verdict: Verdict, record: AttestationRecord) -> None:
        bare_insert(store, verdict)

    for _ in range(3):
        pairs = [_pair(device, base + i, logs[0]) for i in range(5 * n)]
        base += 5 * n
        chunks = [pairs[k * n : (k + 1) * n] for k in range(5)]
        figures["server"].append(cpu_per(chunks[0], server))
        figures["pre_audit"].append(cpu_per(chunks[1], pre_audit))
        figures["log_append"].append(cpu_per(chunks[2], with_entry) - cpu_per(chunks[3], bare))

    def span(values: list[float]) -> str:
        low, mid, high = sorted(values)
        return f"{low * 1e6:.0f}/{mid * 1e6:.0f}/{high * 1e6:.0f}"

    print(
        f"append (CPU per attestation, min/median/max of 3 x {n}): "
        f"server write path {span(figures['server'])} us; "
        f"pre-audit write path {span(figures['pre_audit'])} us; "
        f"the log append alone (entry, digests, tree state) {span(figures['log_append'])} us"
    )


def bare_insert(store: SqliteStore, verdict: Verdict) -> None:
    store._serialized("bare", lambda run: store._insert_verdict(run, verdict))


def show_command(path: Path, attestations: int, devices: int, runs: int = 5) -> None:
    """Wall time of the ``attest-verifier audit show`` command an auditor runs (a new
    process each time: interpreter start, imports, opening the store, the query)."""
    span = (attestations // devices) * 60.0
    walls = []
    for _ in range(runs):
        device_id = f"device-{random.randrange(devices):06d}"
        at = T0 + 60 + random.random() * (span - 60)
        start = time.perf_counter()
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "verifier.cli",
                "audit",
                "show",
                device_id,
                "--at",
                repr(at),
                "--db",
                str(path),
                "--json",
            ],
            capture_output=True,
            check=False,
        )
        walls.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise SystemExit(f"audit show failed: {done.stderr.decode(errors='replace')}")
    walls.sort()
    print(
        f"audit show command: min {walls[0]:.2f} s, median {statistics.median(walls):.2f} s, "
        f"max {walls[-1]:.2f} s over {runs} runs (process start included)"
    )


def show_latency(store: SqliteStore, attestations: int, devices: int, queries: int = 300) -> None:
    span = (attestations // devices) * 60.0
    latencies = []
    for _ in range(queries):
        device_id = f"device-{random.randrange(devices):06d}"
        at = T0 + random.random() * span
        start = time.perf_counter()
        decision = auditlog.show(store, device_id, at)
        latencies.append(time.perf_counter() - start)
        assert decision is not None or at < T0 + 60
    latencies.sort()
    print(
        f"audit show: median {statistics.median(latencies) * 1e3:.2f} ms, "
        f"p99 {latencies[int(len(latencies) * 0.99) - 1] * 1e3:.2f} ms, "
        f"worst {latencies[-1] * 1e3:.2f} ms over {queries} queries"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attestations", type=int, default=1_000_000)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--logs", type=int, default=5)
    parser.add_argument("--db", type=Path, help="keep the database here (default: temporary)")
    ns = parser.parse_args()
    random.seed(15)
    logs = [os.urandom(30_000) for _ in range(ns.logs)]
    with tempfile.TemporaryDirectory() as tmp:
        path = ns.db or Path(tmp) / "audit.db"
        store = SqliteStore(path)
        print(f"generating {ns.attestations} attestations of {ns.devices} devices ...")
        elapsed = generate(store, ns.attestations, ns.devices, logs)
        print(f"generated in {elapsed:.0f} s ({ns.attestations / elapsed:.0f} per second)")
        key = SignerKey.generate("bench.audit")
        auditlog.write_checkpoint(store, key, time.time())
        store._read("checkpoint", "PRAGMA wal_checkpoint(TRUNCATE)", ())
        size = path.stat().st_size
        print(
            f"storage: {size / 1e6:.0f} MB, {size / ns.attestations:.0f} bytes per attestation "
            f"({ns.logs} distinct 30 KB event logs stored once each)"
        )
        show_latency(store, ns.attestations, ns.devices)
        show_command(path, ns.attestations, ns.devices)
        start = time.perf_counter()
        report = auditlog.verify_store(
            store,
            key.verifier(),
            progress=lambda phase, done: print(
                f"  verify: {done} {phase}, {time.perf_counter() - start:.0f} s", flush=True
            ),
        )
        print(
            f"audit verify: {time.perf_counter() - start:.1f} s over {report.size} entries "
            f"({'ok' if report.ok else f'{len(report.problems)} problems'})"
        )
        append_cost(store, ns.devices, logs)
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
