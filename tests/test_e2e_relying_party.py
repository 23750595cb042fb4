"""Update servers: signed tokens checked offline, rollout gating and the verdict stream.

Real agents and swtpm devices against the real verifier over gRPC; each test says what it
tries.
"""

from __future__ import annotations

import datetime as dt
import json
import queue
import threading
from pathlib import Path

import grpc
import pytest

from fleetattest.v1 import fleetattest_pb2 as pb
from fleetattest.v1 import fleetattest_pb2_grpc as pb_grpc
from simulator.fleet import Fleet, RunningVerifier, SimDevice
from simulator.profiles import GOOD_A, GOOD_B, INIT_SH
from verifier import cli
from verifier.tls import pki
from verifier.tls.identity import Role
from verifier.token import KeyRing, PinnedKeys, TokenClaimMismatch, verify_token

pytestmark = pytest.mark.swtpm
GOLDEN_DIR = Path(__file__).resolve().parent.parent / "golden_measurements"


def attested(fleet: Fleet, name: str, firmware: object = GOOD_A) -> SimDevice:
    device = fleet.add_device(name, firmware)  # type: ignore[arg-type]
    device.attest(fleet.live.address)
    return device


def export_jwks(fleet: Fleet, tmp_path: Path) -> Path:
    path = tmp_path / "jwks.json"
    keys = fleet.live.workdir / "keys"
    assert cli.main(["keys", "export-jwks", "--keys", str(keys), str(path)]) == 0
    return path


def check(fleet: Fleet, device: SimDevice, jwks: Path, max_age: str = "10m") -> int:
    return cli.main(
        [
            "verdict",
            "check",
            device.device_id,
            "--max-age",
            max_age,
            *fleet.live.client_flags("relying-party"),
            "--jwks",
            str(jwks),
        ]
    )


def test_verdict_check_passes_only_a_fresh_affirming_verdict(
    fleet: Fleet, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jwks = export_jwks(fleet, tmp_path)
    good = attested(fleet, "good")
    bad = attested(fleet, "bad", INIT_SH)
    assert check(fleet, good, jwks) == 0
    assert "TRUSTED" in capsys.readouterr().out
    assert check(fleet, bad, jwks) == 1
    out = capsys.readouterr().out
    assert "NOT TRUSTED" in out and "kernel_cmdline_mismatch" in out


def test_verdict_check_fetches_keys_only_over_an_authenticated_tls_channel(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    good = attested(fleet, "good")
    flags = fleet.live.client_flags("relying-party")
    argv = ["verdict", "check", good.device_id, "--max-age", "10m"]
    assert cli.main([*argv, *flags]) == 0  # no --jwks: fetched over mutual TLS
    assert "keys fetched over TLS" in capsys.readouterr().out
    without_ca = [f for f in flags if f != "--ca" and f != str(fleet.live.ca)]
    assert cli.main([*argv, *without_ca]) == 2  # unauthenticated: refused before connecting
    assert "unauthenticated" in capsys.readouterr().err


def test_token_signed_by_a_key_that_is_not_pinned_is_refused(
    fleet: Fleet, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    impostor = KeyRing.open(tmp_path / "impostor", 0)
    jwks = tmp_path / "impostor.json"
    impostor.export_jwks(jwks, 0)
    good = attested(fleet, "good")
    assert check(fleet, good, jwks) == 1
    assert "TokenKeyUnknown" in capsys.readouterr().out


def test_token_echoes_the_relying_party_nonce_and_names_the_device(
    fleet: Fleet, tmp_path: Path
) -> None:
    good = attested(fleet, "good")
    other = attested(fleet, "other")
    with fleet.live.relying_party_channel() as ch:
        stub = pb_grpc.RelyingPartyStub(ch)
        reply = stub.GetVerdict(pb.GetVerdictRequest(device_id=good.device_id, nonce=b"n" * 16))
        keys = PinnedKeys.from_jwks(json.loads(stub.GetJwks(pb.GetJwksRequest()).jwks_json))
    now = fleet.live.clock()
    claims = verify_token(
        reply.verdict.token,
        keys,
        issuer="fleet-attest",
        audience=None,
        subject=good.device_id,
        now=now,
        nonce=b"n" * 16,
    )
    assert claims.release == "fw-1.0.0"
    with pytest.raises(TokenClaimMismatch, match="not for"):
        verify_token(
            reply.verdict.token,
            keys,
            issuer="fleet-attest",
            audience=None,
            subject=other.device_id,  # device A's token presented for device B
            now=now,
        )


def rollout(fleet: Fleet, device: SimDevice, target: str, max_age: int = 600) -> set[str]:
    with fleet.live.relying_party_channel() as ch:
        reply = pb_grpc.RelyingPartyStub(ch).CheckRollout(
            pb.CheckRolloutRequest(
                device_id=device.device_id, target_release=target, max_age_seconds=max_age
            )
        )
    assert reply.allow == (not reply.reasons)
    return {r.code for r in reply.reasons}


def test_rollout_is_allowed_only_along_the_upgrade_path_for_clean_devices(fleet: Fleet) -> None:
    good = attested(fleet, "good")
    bad = attested(fleet, "bad", INIT_SH)
    upgraded = attested(fleet, "upgraded", GOOD_B)
    assert rollout(fleet, good, "fw-1.1.0") == set()
    assert "not_affirming" in rollout(fleet, bad, "fw-1.1.0")
    assert rollout(fleet, upgraded, "fw-1.0.0") == {"upgrade_not_allowed"}
    assert rollout(fleet, good, "fw-0.9.0") == {"target_retired"}


def test_rollout_after_a_reboot_uses_the_new_boot_verdict(fleet: Fleet) -> None:
    device = attested(fleet, "rebooted")
    device.reboot(INIT_SH)  # the previous boot's affirming verdict must not carry over
    device.attest(fleet.live.address)
    assert "not_affirming" in rollout(fleet, device, "fw-1.1.0")


def test_verdict_stream_reconnects_without_losing_a_change(fleet: Fleet) -> None:
    device = attested(fleet, "watched")
    address = fleet.live.address
    seen: queue.Queue[pb.Verdict] = queue.Queue()

    def watch(after: int, count: int) -> None:
        with fleet.live.relying_party_channel() as ch:
            stream = pb_grpc.RelyingPartyStub(ch).WatchVerdicts(
                pb.WatchVerdictsRequest(device_ids=[device.device_id], after_sequence=after)
            )
            for verdict in stream:
                seen.put(verdict)
                count -= 1
                if count == 0:
                    stream.cancel()  # type: ignore[no-untyped-call]
                    return

    first = threading.Thread(target=watch, args=(0, 1))
    first.start()
    first.join(timeout=30)
    cursor = seen.get(timeout=5).sequence
    # Disconnected: two verdicts happen meanwhile (a reboot and a compromised boot).
    device.reboot()
    device.attest(address)
    device.reboot(INIT_SH)
    device.attest(address)
    second = threading.Thread(target=watch, args=(cursor, 3))
    second.start()
    missed = [seen.get(timeout=10), seen.get(timeout=10)]
    assert [v.sequence > cursor for v in missed] == [True, True]
    assert missed[0].sequence < missed[1].sequence
    assert [v.status for v in missed] == [pb.STATUS_AFFIRMING, pb.STATUS_CONTRAINDICATED]
    device.reboot(GOOD_A)  # a live change arrives on the open stream too
    device.attest(address)
    live = seen.get(timeout=10)
    assert live.sequence > missed[1].sequence and live.status == pb.STATUS_AFFIRMING
    second.join(timeout=10)


def test_one_identity_opening_streams_is_refused_while_another_gets_one(
    fleet: Fleet, tmp_path: Path
) -> None:
    """4 RPC threads: at most 2 streams in all, 1 per caller; agents keep the other threads."""
    small = RunningVerifier(
        tmp_path / "small", fleet.trust_dir, GOLDEN_DIR, workers=4, pki=fleet.pki
    )
    names = ("update-a", "update-b", "update-c")
    for name in names:
        pki.issue_client(
            fleet.pki / "ca.pem",
            fleet.pki / "ca.key",
            role=Role.RELYING_PARTY,
            name=name,
            out=tmp_path / "callers",
            now=dt.datetime.now(dt.UTC),
        )
    a, b, c = (small.client_channel(name, tmp_path / "callers") for name in names)
    try:
        device = fleet.add_device("served", GOOD_A)
        device.attest(small.address)
        first = pb_grpc.RelyingPartyStub(a).WatchVerdicts(pb.WatchVerdictsRequest())
        verdicts = iter(first)
        assert next(verdicts).device_id == device.device_id  # the stream holds its thread
        with pytest.raises(grpc.RpcError) as info:  # the same identity again
            next(iter(pb_grpc.RelyingPartyStub(a).WatchVerdicts(pb.WatchVerdictsRequest())))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "per caller" in str(info.value.details())
        other = pb_grpc.RelyingPartyStub(b).WatchVerdicts(pb.WatchVerdictsRequest())
        assert next(iter(other)).device_id == device.device_id  # another identity gets one
        with pytest.raises(grpc.RpcError) as info:  # the global cap is full
            next(iter(pb_grpc.RelyingPartyStub(c).WatchVerdicts(pb.WatchVerdictsRequest())))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        device.reboot()  # agents are still served
        assert device.attest(small.address).status == pb.STATUS_AFFIRMING
        assert next(verdicts).boot_epoch.reset_count > 1  # and the stream sees it
        first.cancel()  # type: ignore[no-untyped-call]
        other.cancel()  # type: ignore[no-untyped-call]
    finally:
        for ch in (a, b, c):
            ch.close()
        small.close()


def test_anonymous_caller_gets_no_verdict_stream(fleet: Fleet) -> None:
    with fleet.live.agent_channel() as ch:
        stream = pb_grpc.RelyingPartyStub(ch).WatchVerdicts(pb.WatchVerdictsRequest())
        with pytest.raises(grpc.RpcError) as info:
            next(iter(stream))
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
