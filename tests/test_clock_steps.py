"""Freshness must not follow a stepped wall clock (issue 18, finding 2).

Reproduced against the real verifier (in-process gRPC, software quotes): with its wall clock
stepped 2 h forward or back after a verdict, the verdict was served fresh, with a token, and the
rollout gate said go. With clock discipline (``verifier.clock``, as ``serve`` wires it) the
verifier vouches for nothing while its clock is in doubt: GetVerdict answers "unknown" with no
token, the rollout gate says no, and no challenge is issued (UNAVAILABLE, agents back off).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from fleetattest.v1 import fleetattest_pb2 as pb
from fleetattest.v1 import fleetattest_pb2_grpc as pb_grpc
from simulator.firmware import boot
from simulator.fleet import DEVICE_LABELS
from simulator.profiles import GOOD_A
from simulator.softquote import QuoteFields, SoftAk
from verifier.app import Verifier, open_trust
from verifier.clock import ClockGuard, Reading
from verifier.livegolden import LiveGolden
from verifier.records import DeviceRecord
from verifier.service.server import Listen, build_server
from verifier.store import open_store
from verifier.token import KeyRing

ROOT = Path(__file__).resolve().parent.parent
DEVICE = "dev-clock"
TWO_HOURS = 7200.0


class SteppableClock:
    """The machine's clocks, with a wall clock an administrator (or a bad NTP) can step."""

    def __init__(self) -> None:
        self.offset = 0.0

    def wall(self) -> float:
        return time.time() + self.offset

    def reading(self) -> Reading:
        return Reading(self.wall(), time.monotonic(), "this-boot")


@dataclass
class Served:
    verifier: Verifier
    agent: grpc.Channel
    operator: grpc.Channel
    clock: SteppableClock
    ak: SoftAk


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    clock = SteppableClock()
    store = open_store(tmp_path / "verifier.db")
    golden = LiveGolden.start(ROOT / "golden_measurements", store, clock.wall)
    trust, allowlist = open_trust(None, None)
    verifier = Verifier(
        store,
        trust,
        allowlist,
        golden,
        KeyRing.open(tmp_path / "keys", clock.wall()),
        clock=clock.wall,
        clock_guard=ClockGuard(settle_seconds=3600),
        reading=clock.reading,
    )
    ak = SoftAk.generate()
    store.insert_device(
        DeviceRecord(
            device_id=DEVICE,
            ek_public=b"",
            ek_certificate=b"",
            ek_not_after=None,
            ak_public=ak.tpm2b_public,
            ak_name=ak.name,
            labels=dict(DEVICE_LABELS),
            enrollment_count=1,
            enrolled_at=clock.wall(),
            profile="sim-gateway",
        )
    )
    socket = tmp_path / "op.sock"
    server, ports = build_server(verifier, Listen("127.0.0.1:0", operator_socket=socket), workers=4)
    server.start()
    agent = grpc.insecure_channel(f"127.0.0.1:{ports.agent}")
    operator = grpc.insecure_channel(f"unix:{socket}")
    try:
        yield Served(verifier, agent, operator, clock, ak)
    finally:
        agent.close()
        operator.close()
        server.stop(None)
        store.close()


def attest(served: Served) -> pb.Verdict:
    record = boot(GOOD_A, lambda pcr, digests: None)
    pcrs = record.expected_pcrs["sha256"]
    stub = pb_grpc.AgentStub(served.agent)
    challenge = stub.GetChallenge(pb.GetChallengeRequest(device_id=DEVICE))
    quoted = {i: pcrs.get(i, bytes(32)) for i in challenge.selection.pcrs}
    quote, signature = served.ak.quote(QuoteFields(challenge.nonce, "sha256", quoted))
    request = pb.AttestRequest(
        device_id=DEVICE,
        nonce=challenge.nonce,
        quote=quote,
        signature=signature,
        pcr_values=[pb.PcrValue(pcr=i, digest=d) for i, d in quoted.items()],
        event_log=record.log,
    )
    verdict: pb.Verdict = stub.Attest(request).verdict
    return verdict


def served_verdict(served: Served) -> pb.Verdict:
    stub = pb_grpc.RelyingPartyStub(served.operator)
    verdict: pb.Verdict = stub.GetVerdict(pb.GetVerdictRequest(device_id=DEVICE)).verdict
    return verdict


def assert_vouches_for_nothing(served: Served) -> None:
    verdict = served_verdict(served)
    assert verdict.freshness == pb.FRESHNESS_UNKNOWN
    assert verdict.token == ""
    assert "clock is in doubt" in verdict.currency_reason
    decision, _ = served.verifier.check_rollout(DEVICE, "fw-1.0.0", 3600)
    assert not decision.allow
    with pytest.raises(grpc.RpcError) as refused:
        pb_grpc.AgentStub(served.agent).GetChallenge(pb.GetChallengeRequest(device_id=DEVICE))
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "clock is in doubt" in str(refused.value.details())


def test_verdict_is_not_served_fresh_after_the_clock_steps_forward(served: Served) -> None:
    attest(served)
    before = served_verdict(served)
    assert before.freshness == pb.FRESHNESS_FRESH and before.token
    served.clock.offset = TWO_HOURS
    assert_vouches_for_nothing(served)


def test_expired_verdict_is_not_revived_by_a_clock_stepped_back(served: Served) -> None:
    attest(served)
    served.clock.offset = -TWO_HOURS  # its expiry would lie an hour ahead again
    assert_vouches_for_nothing(served)


def test_trust_returns_only_when_an_operator_acknowledges_the_clock(served: Served) -> None:
    attest(served)
    served.clock.offset = TWO_HOURS
    assert_vouches_for_nothing(served)
    assert served.verifier.clock_guard is not None
    served.verifier.clock_guard.acknowledge(served.clock.reading())
    again = attest(served)  # a new verdict, issued on the acknowledged clock
    assert again.status == pb.STATUS_AFFIRMING
    assert served_verdict(served).freshness == pb.FRESHNESS_FRESH
