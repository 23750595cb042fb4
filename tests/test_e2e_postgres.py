"""Past one machine: verifier replicas on one PostgreSQL database, real agents and swtpm.

Any replica finishes what another began: an enrollment started on one and finished on
another, a nonce issued by one and consumed (once) by another, a verdict stored by one and
served, with a token that verifies, by the other.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from pgcluster import fresh_schema_url, pg_cluster  # noqa: F401 (the fixture)

from agent.flows import evidence_for
from fleetattest.v1 import fleetattest_pb2 as pb
from fleetattest.v1 import fleetattest_pb2_grpc as pb_grpc
from simulator.fleet import Fleet, RunningVerifier
from simulator.profiles import GOOD_A

pytestmark = pytest.mark.swtpm
GOLDEN = Path(__file__).resolve().parent.parent / "golden_measurements"


def test_replicas_on_one_postgresql_database_share_enrollment_nonces_and_verdicts(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = fresh_schema_url(request.getfixturevalue("pg_cluster"))
    with Fleet(tmp_path / "fleet") as fleet:
        replicas = [
            RunningVerifier(
                tmp_path / name,
                fleet.trust_dir,
                GOLDEN,
                db=url,
                keys=tmp_path / "k",
                pki=fleet.pki,
            )
            for name in ("a", "b")
        ]
        try:
            a, b = (r.address for r in replicas)
            device = fleet.add_device("roaming", GOOD_A)
            device.enroll(a)
            assert replicas[1].store.get_device(device.device_id) is not None
            with replicas[0].agent_channel() as ch:
                challenge = pb_grpc.AgentStub(ch).GetChallenge(
                    pb.GetChallengeRequest(device_id=device.device_id)
                )
            request_b = evidence_for(device.config(b), device.device_id, challenge)
            with replicas[1].agent_channel() as ch:
                verdict = pb_grpc.AgentStub(ch).Attest(request_b).verdict
            assert verdict.status == pb.STATUS_AFFIRMING
            with replicas[0].agent_channel() as ch, pytest.raises(grpc.RpcError) as replay:
                pb_grpc.AgentStub(ch).Attest(request_b)  # the nonce is spent everywhere
            assert replay.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            with replicas[0].relying_party_channel() as ch:
                served = pb_grpc.RelyingPartyStub(ch).GetVerdict(
                    pb.GetVerdictRequest(device_id=device.device_id)
                )
            assert served.verdict.verdict_id == verdict.verdict_id and served.verdict.token
        finally:
            for replica in replicas:
                replica.close()
