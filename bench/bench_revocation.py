"""Revocation propagation: from the revoke call to the subscriber's event and the first refusal.

    PYTHONPATH=proto .venv/bin/python bench/bench_revocation.py [--devices 5]

For each device (a swtpm, attested affirming once): a WatchVerdicts subscriber is open, the
device is decommissioned with the Operator RPC, and two times are taken from the moment the
call is made: until the subscriber receives the supersession event, and until GetVerdict
first answers without a token (superseded). Measured on one verifier (SQLite), then across two
replicas on one PostgreSQL database (revoked on replica A, subscriber and GetVerdict on
replica B; B learns of it by polling the store, ``WATCH_POLL_SECONDS``). The PostgreSQL part
needs the server binaries and psycopg (a throwaway cluster is started, as the tests do).
Prints min / median / max in milliseconds; the issue's target is < 5 minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import queue
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc

from fleetattest.v1 import fleetattest_pb2 as pb
from fleetattest.v1 import fleetattest_pb2_grpc as pb_grpc
from simulator.fleet import Fleet, RunningVerifier
from simulator.profiles import GOOD_A

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "golden_measurements"


class Subscriber:
    def __init__(self, verifier: RunningVerifier) -> None:
        self.arrived: queue.Queue[tuple[str, float]] = queue.Queue()
        self._channel = verifier.relying_party_channel()
        self._stream = pb_grpc.RelyingPartyStub(self._channel).WatchVerdicts(
            pb.WatchVerdictsRequest()
        )
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        with contextlib.suppress(grpc.RpcError):
            for message in self._stream:
                if message.supersession:
                    self.arrived.put((message.device_id, time.monotonic()))

    def wait(self, device_id: str) -> float:
        while True:
            found, when = self.arrived.get(timeout=600)
            if found == device_id:
                return when

    def close(self) -> None:
        self._stream.cancel()  # type: ignore[no-untyped-call]
        self._channel.close()


def trial(
    fleet: Fleet,
    name: str,
    revoke_on: RunningVerifier,
    observe_on: RunningVerifier,
    sub: Subscriber,
) -> tuple[float, float]:
    device = fleet.add_device(name, GOOD_A)
    device.attest(revoke_on.address)
    with observe_on.relying_party_channel() as ch:
        relying = pb_grpc.RelyingPartyStub(ch)
        assert relying.GetVerdict(pb.GetVerdictRequest(device_id=device.device_id)).verdict.token
        with revoke_on.operator_channel() as op_ch:
            start = time.monotonic()
            pb_grpc.OperatorStub(op_ch).DecommissionDevice(
                pb.DecommissionDeviceRequest(device_id=device.device_id, reason="bench")
            )
        while relying.GetVerdict(pb.GetVerdictRequest(device_id=device.device_id)).verdict.token:
            time.sleep(0.005)
        refused = time.monotonic()
    event = sub.wait(device.device_id)
    return event - start, refused - start


def run(
    fleet: Fleet, revoke_on: RunningVerifier, observe_on: RunningVerifier, devices: int, label: str
) -> None:
    sub = Subscriber(observe_on)
    time.sleep(0.3)  # the stream is open before the first revocation
    events, refusals = [], []
    try:
        for i in range(devices):
            event, refused = trial(fleet, f"{label}-{i}", revoke_on, observe_on, sub)
            events.append(event * 1000)
            refusals.append(refused * 1000)
    finally:
        sub.close()
    for what, values in (("stream event", events), ("refused GetVerdict", refusals)):
        print(
            f"{label:<22} revoke -> {what:<18} min {min(values):7.1f} ms  median "
            f"{statistics.median(values):7.1f} ms  max {max(values):7.1f} ms  (n={len(values)})"
        )


@contextlib.contextmanager
def postgres() -> Iterator[str | None]:
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        import pgcluster  # noqa: PLC0415
    except ImportError:
        yield None
        return
    try:
        cluster = pgcluster.pg_cluster.__wrapped__  # type: ignore[attr-defined]  # the generator
        with contextlib.contextmanager(cluster)() as base:
            yield pgcluster.fresh_schema_url(base)
    except BaseException as exc:  # pytest.skip outside pytest: no server here
        if type(exc).__name__ in {"Skipped", "Failed"}:
            print(f"PostgreSQL part skipped: {exc}")
            return
        raise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=5)
    ns = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-revocation-") as tmp:
        work = Path(tmp)
        with Fleet(work / "one") as fleet:
            single = fleet.start_verifier(GOLDEN)
            run(fleet, single, single, ns.devices, "one verifier (SQLite)")
        with postgres() as url, Fleet(work / "two") as fleet:
            if url is None:
                return
            replicas = [
                RunningVerifier(
                    work / name, fleet.trust_dir, GOLDEN, db=url, keys=work / "k", pki=fleet.pki
                )
                for name in ("a", "b")
            ]
            try:
                run(fleet, replicas[0], replicas[1], ns.devices, "two replicas (PG)")
            finally:
                for replica in replicas:
                    replica.close()


if __name__ == "__main__":
    main()
