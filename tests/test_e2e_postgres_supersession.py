"""Supersession reaches every replica: a revocation made on one verifier (or on the store by a
command) is streamed, in sequence with the verdicts, by another verifier on the same database."""

from __future__ import annotations

import queue
import threading
from pathlib import Path

import grpc
import pytest
from pgcluster import fresh_schema_url, pg_cluster  # noqa: F401 (the fixture)

from fleetattest.v1 import fleetattest_pb2 as pb
from fleetattest.v1 import fleetattest_pb2_grpc as pb_grpc
from simulator.fleet import Fleet, RunningVerifier
from simulator.profiles import GOOD_A
from verifier import cli

pytestmark = pytest.mark.swtpm
GOLDEN = Path(__file__).resolve().parent.parent / "golden_measurements"


def watch(replica: RunningVerifier, events: queue.Queue[pb.Verdict], stop: threading.Event) -> None:
    with replica.relying_party_channel() as ch:
        stream = pb_grpc.RelyingPartyStub(ch).WatchVerdicts(pb.WatchVerdictsRequest())

        def cancel_on_stop() -> None:
            stop.wait()
            stream.cancel()  # type: ignore[no-untyped-call]

        threading.Thread(target=cancel_on_stop, daemon=True).start()
        try:
            for message in stream:
                events.put(message)
        except grpc.RpcError:
            return


def supersessions(events: queue.Queue[pb.Verdict], count: int) -> dict[str, str]:
    """device id -> why, for the next ``count`` supersession events."""
    found: dict[str, str] = {}
    while len(found) < count:
        message = events.get(timeout=20)
        if message.supersession:
            found[message.device_id] = message.currency_reason
    return found


def test_subscriber_of_the_other_replica_sees_every_revocation_kind(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = fresh_schema_url(request.getfixturevalue("pg_cluster"))
    with Fleet(tmp_path / "fleet") as fleet:
        replicas = [
            RunningVerifier(
                tmp_path / name, fleet.trust_dir, GOLDEN, db=url, keys=tmp_path / "k", pki=fleet.pki
            )
            for name in ("a", "b")
        ]
        events: queue.Queue[pb.Verdict] = queue.Queue()
        stop = threading.Event()
        watcher = threading.Thread(target=watch, args=(replicas[1], events, stop))
        try:
            a = replicas[0].address
            watcher.start()
            devices = [fleet.add_device(name, GOOD_A) for name in ("scrapped", "stolen", "leaky")]
            for device in devices:
                assert device.attest(a).status == pb.STATUS_AFFIRMING
            scrapped, stolen, leaky = devices
            ak = replicas[0].store.get_device(leaky.device_id).ak_name.hex()  # type: ignore[union-attr]
            with replicas[0].operator_channel() as ch:
                op = pb_grpc.OperatorStub(ch)
                op.DecommissionDevice(
                    pb.DecommissionDeviceRequest(device_id=scrapped.device_id, reason="scrapped")
                )
                op.RevokeAk(
                    pb.RevokeAkRequest(device_id=leaky.device_id, ak_name=ak, reason="leaked")
                )
            assert (
                cli.main(["ek", "deny", stolen.device_id, "--reason", "stolen", "--db", url]) == 0
            )
            seen = supersessions(events, 3)
            assert seen[scrapped.device_id].startswith("device decommissioned: scrapped")
            assert seen[stolen.device_id].startswith("EK denied: stolen")
            assert seen[leaky.device_id].startswith("AK revoked: leaked")
            with replicas[1].relying_party_channel() as ch:
                stub = pb_grpc.RelyingPartyStub(ch)
                for device in devices:
                    served = stub.GetVerdict(pb.GetVerdictRequest(device_id=device.device_id))
                    assert served.verdict.freshness == pb.FRESHNESS_SUPERSEDED
                    assert served.verdict.token == ""
            with replicas[1].agent_channel() as ch, pytest.raises(grpc.RpcError) as info:
                pb_grpc.AgentStub(ch).GetChallenge(
                    pb.GetChallengeRequest(device_id=scrapped.device_id)
                )
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        finally:
            stop.set()
            watcher.join(timeout=10)
            for replica in replicas:
                replica.close()
