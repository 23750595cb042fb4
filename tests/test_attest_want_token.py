"""AttestRequest.want_token (issue 17): Attest signs a token only when the caller asks.

A real in-process gRPC server and software quotes (``simulator.softquote``). The token, when
asked for, is the same verifiable EAR token GetVerdict serves; when not asked for, Attest
returns the verdict alone (the agent's case) and a relying party still gets its token from
GetVerdict.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
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
from verifier.livegolden import LiveGolden
from verifier.records import DeviceRecord
from verifier.service.server import Listen, build_server
from verifier.store import open_store
from verifier.token import KeyRing, PinnedKeys, verify_token

ROOT = Path(__file__).resolve().parent.parent
DEVICE = "dev-token"
OPERATOR_CHANNELS: list[grpc.Channel] = []  # the operator socket of the module's verifier


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[grpc.Channel, SoftAk]]:
    work = tmp_path_factory.mktemp("want-token")
    store = open_store(work / "verifier.db")
    golden = LiveGolden.start(ROOT / "golden_measurements", store, time.time)
    trust, allowlist = open_trust(None, None)
    verifier = Verifier(store, trust, allowlist, golden, KeyRing.open(work / "keys", time.time()))
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
            enrolled_at=time.time(),
            profile="sim-gateway",  # bound by an operator (the default enrollment policy)
        )
    )
    socket = work / "operator.sock"  # GetVerdict is for relying parties and operators
    server, ports = build_server(verifier, Listen("127.0.0.1:0", operator_socket=socket), workers=4)
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{ports.agent}") as ch:
            OPERATOR_CHANNELS.append(grpc.insecure_channel(f"unix:{socket}"))
            yield ch, ak
    finally:
        server.stop(None)
        store.close()


def attest(ch: grpc.Channel, ak: SoftAk, *, want_token: bool = False) -> pb.Verdict:
    record = boot(GOOD_A, lambda pcr, digests: None)
    pcrs = record.expected_pcrs["sha256"]
    stub = pb_grpc.AgentStub(ch)
    challenge = stub.GetChallenge(pb.GetChallengeRequest(device_id=DEVICE))
    quoted = {i: pcrs.get(i, bytes(32)) for i in challenge.selection.pcrs}
    quote, signature = ak.quote(QuoteFields(challenge.nonce, "sha256", quoted))
    request = pb.AttestRequest(
        device_id=DEVICE,
        nonce=challenge.nonce,
        quote=quote,
        signature=signature,
        pcr_values=[pb.PcrValue(pcr=i, digest=d) for i, d in quoted.items()],
        event_log=record.log,
        want_token=want_token,
    )
    verdict: pb.Verdict = stub.Attest(request).verdict
    assert verdict.status == pb.STATUS_AFFIRMING
    return verdict


def keys(ch: grpc.Channel) -> PinnedKeys:
    jwks = pb_grpc.RelyingPartyStub(ch).GetJwks(pb.GetJwksRequest()).jwks_json
    return PinnedKeys.from_jwks(json.loads(jwks))


def test_attest_without_asking_signs_no_token(served: tuple[grpc.Channel, SoftAk]) -> None:
    ch, ak = served
    assert attest(ch, ak).token == ""


def test_relying_party_still_gets_a_token_for_an_unasked_verdict(
    served: tuple[grpc.Channel, SoftAk],
) -> None:
    ch, ak = served
    verdict = attest(ch, ak)
    stub = pb_grpc.RelyingPartyStub(OPERATOR_CHANNELS[-1])
    reply = stub.GetVerdict(pb.GetVerdictRequest(device_id=DEVICE))
    assert reply.verdict.verdict_id == verdict.verdict_id
    claims = verify_token(
        reply.verdict.token,
        keys(ch),
        issuer="fleet-attest",
        audience=None,
        subject=DEVICE,
        now=time.time(),
    )
    assert claims.release == verdict.release


def test_asked_for_token_verifies_and_names_this_verdict(
    served: tuple[grpc.Channel, SoftAk],
) -> None:
    ch, ak = served
    verdict = attest(ch, ak, want_token=True)
    claims = verify_token(
        verdict.token,
        keys(ch),
        issuer="fleet-attest",
        audience=None,
        subject=DEVICE,
        now=time.time(),
    )
    assert claims.release == verdict.release == "fw-1.0.0"
    assert claims.expires_at <= verdict.expires_at.seconds + 1
