"""Runtime integrity end to end: swtpm devices that run files after boot (IMA, PCR 10), the
real agent and the real verifier over gRPC, with ``golden_measurements/sim-runtime.yaml``.

Each test is named after what it tries.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import grpc
import pytest

from agent import ima as agent_ima
from agent.flows import attest_once, channel, evidence_for
from fleetattest.v1 import fleetattest_pb2 as pb
from fleetattest.v1 import fleetattest_pb2_grpc as pb_grpc
from simulator.fleet import Fleet, SimDevice
from simulator.goldengen import golden_yaml, runtime_yaml
from simulator.ima import OTHER_KEY, SIGNED_FILES, signature_for
from simulator.profiles import GOOD_A
from verifier.ima import write
from verifier.ima.parse import parse_binary

pytestmark = pytest.mark.swtpm
GOLDEN = Path(__file__).resolve().parent.parent / "golden_measurements"


CA: list[Path | None] = []  # the CA bundle of the fleet under test (agent channels pin it)


def runtime_device(fleet: Fleet, name: str) -> SimDevice:
    device = fleet.add_device(name, GOOD_A, runtime=True)
    device.enroll(fleet.live.address)
    return device


def codes(verdict: pb.Verdict) -> set[str]:
    return {r.code for r in verdict.reasons}


def request_for(device: SimDevice, address: str, ima_log: bytes, offset: int) -> pb.AttestRequest:
    CA.append(device.verifier_ca)  # the fleet's CA: every device here pins the same one
    with channel(address, device.verifier_ca) as ch:
        challenge = pb_grpc.AgentStub(ch).GetChallenge(
            pb.GetChallengeRequest(device_id=device.device_id)
        )
    request = evidence_for(device.config(address), device.device_id, challenge)
    request.ima_log, request.ima_offset = ima_log, offset
    return request


def send(address: str, request: pb.AttestRequest) -> pb.AttestResponse:
    with channel(address, CA[-1]) as ch:
        response: pb.AttestResponse = pb_grpc.AgentStub(ch).Attest(request)
        return response


def refused(address: str, request: pb.AttestRequest) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        send(address, request)
    assert isinstance(info.value, grpc.RpcError)
    return info.value


def stored_entries(fleet: Fleet, device: SimDevice) -> int:
    record = fleet.live.store.ima_state(device.device_id)
    return record.entry_count if record else -1


def test_committed_golden_files_are_what_the_generator_writes() -> None:
    assert (GOLDEN / "sim-gateway.yaml").read_text() == golden_yaml()
    assert (GOLDEN / "sim-runtime.yaml").read_text() == runtime_yaml()


def test_a_device_running_only_allowed_files_is_affirming(fleet: Fleet) -> None:
    device = runtime_device(fleet, "rt-good")
    device.ima.run_distribution()
    verdict = device.attest(fleet.live.address)
    assert verdict.status == pb.STATUS_AFFIRMING, verdict.reasons
    assert verdict.profile == "sim-runtime"
    assert stored_entries(fleet, device) == len(device.ima.entries())


def test_a_binary_not_in_the_policy_is_contraindicated_naming_it(fleet: Fleet) -> None:
    device = runtime_device(fleet, "rt-unknown")
    device.ima.run_distribution()
    device.ima.run("/usr/local/bin/miner", b"xmrig 6.21")
    verdict = device.attest(fleet.live.address)
    assert verdict.status == pb.STATUS_CONTRAINDICATED
    (reason,) = [r for r in verdict.reasons if r.code == "ima_unknown_entry"]
    assert "/usr/local/bin/miner" in reason.text
    assert reason.event_index == len(device.ima.entries()) - 1


def test_an_entry_removed_to_hide_a_binary_breaks_the_replay(fleet: Fleet) -> None:
    device = runtime_device(fleet, "rt-hidden")
    device.ima.run_distribution()
    device.ima.run("/usr/local/bin/miner", b"xmrig 6.21")
    device.ima.rewrite(device.ima.entries()[:-1])  # the TPM still has the extend
    verdict = device.attest(fleet.live.address)
    assert verdict.status == pb.STATUS_CONTRAINDICATED
    assert "ima_replay_mismatch" in codes(verdict)
    assert stored_entries(fleet, device) == -1  # nothing accepted


def test_a_path_changed_with_its_digest_kept_breaks_the_template_hash(fleet: Fleet) -> None:
    device = runtime_device(fleet, "rt-renamed")
    device.ima.run("/usr/local/bin/miner", b"xmrig 6.21")
    entries = device.ima.entries()
    (miner,) = parse_binary(entries[-1]).entries
    renamed = write.file_entry("/usr/bin/ls", miner.digest)  # a fresh entry ...
    (fresh,) = parse_binary(renamed).entries
    forged = renamed[:4] + miner.template_hash + renamed[24:]  # ... with the old template hash
    assert fresh.template_hash != miner.template_hash
    device.ima.rewrite([*entries[:-1], forged])
    verdict = device.attest(fleet.live.address)
    assert verdict.status == pb.STATUS_CONTRAINDICATED
    assert "ima_log_malformed" in codes(verdict)
    assert any("template hash" in r.text for r in verdict.reasons)


def test_a_bad_ima_sig_signature_is_contraindicated(fleet: Fleet) -> None:
    device = runtime_device(fleet, "rt-badsig")
    ((path, content),) = SIGNED_FILES.items()
    device.ima.run(path, content + b" patched", signature=signature_for(content))
    verdict = device.attest(fleet.live.address)
    assert verdict.status == pb.STATUS_CONTRAINDICATED
    assert "ima_signature_invalid" in codes(verdict), verdict.reasons


def test_a_signature_by_an_unlisted_key_does_not_satisfy_require(fleet: Fleet) -> None:
    device = runtime_device(fleet, "rt-otherkey")
    ((path, content),) = SIGNED_FILES.items()
    device.ima.run(path, content, signature=signature_for(content, OTHER_KEY))
    verdict = device.attest(fleet.live.address)
    assert verdict.status == pb.STATUS_CONTRAINDICATED
    assert "ima_signature_required" in codes(verdict), verdict.reasons


def test_a_violation_entry_is_contraindicated(fleet: Fleet) -> None:
    device = runtime_device(fleet, "rt-tomtou")
    device.ima.run_distribution()
    device.ima.violation("/usr/bin/bash")
    verdict = device.attest(fleet.live.address)
    assert verdict.status == pb.STATUS_CONTRAINDICATED
    assert "ima_violation" in codes(verdict)


def test_a_long_runtime_sends_only_new_entries_each_time(fleet: Fleet) -> None:
    device = runtime_device(fleet, "rt-long")
    device.ima.run_distribution()
    config = device.config(fleet.live.address)
    sent_offsets = []
    for round_number in range(8):
        for _ in range(5):
            device.ima.run("/usr/bin/ls", b"coreutils 9.1 ls")
        before = agent_ima.load_cursor(config.state_dir)
        sent_offsets.append(before.entries if before else 0)
        verdict = attest_once(config, device.device_id, threading.Event())
        assert verdict.status == pb.STATUS_AFFIRMING, (round_number, verdict.reasons)
        assert stored_entries(fleet, device) == len(device.ima.entries())
    assert sent_offsets[0] == 0 and sent_offsets == sorted(sent_offsets)
    assert sent_offsets[-1] == len(device.ima.entries()) - 5  # the last sent only 5 entries


def test_pcr10_quoted_but_no_ima_log_sent_is_contraindicated(fleet: Fleet) -> None:
    device = runtime_device(fleet, "rt-nolog")
    device.ima.run_distribution()
    response = send(fleet.live.address, request_for(device, fleet.live.address, b"", 0))
    assert response.verdict.status == pb.STATUS_CONTRAINDICATED
    assert "ima_log_missing" in codes(response.verdict)


def test_a_log_of_another_boot_is_contraindicated(fleet: Fleet) -> None:
    device = runtime_device(fleet, "rt-oldboot")
    device.ima.run_distribution()
    old_log = device.ima.list_path.read_bytes()
    assert device.attest(fleet.live.address).status == pb.STATUS_AFFIRMING
    device.reboot()
    device.ima.run("/usr/local/bin/miner", b"xmrig 6.21")  # what the old log would hide
    response = send(fleet.live.address, request_for(device, fleet.live.address, old_log, 0))
    assert response.verdict.status == pb.STATUS_CONTRAINDICATED
    assert "ima_replay_mismatch" in codes(response.verdict)


def test_the_agent_sends_the_whole_log_after_a_reboot(fleet: Fleet) -> None:
    device = runtime_device(fleet, "rt-reboot")
    device.ima.run_distribution()
    assert device.attest(fleet.live.address).status == pb.STATUS_AFFIRMING
    device.reboot()
    device.ima.run("/usr/bin/bash", b"GNU bash 5.2.15")
    assert device.attest(fleet.live.address).status == pb.STATUS_AFFIRMING
    assert stored_entries(fleet, device) == 2  # boot_aggregate and bash, of the new boot


def test_a_stale_agent_cursor_is_answered_with_ima_log_required_and_recovers(
    fleet: Fleet,
) -> None:
    device = runtime_device(fleet, "rt-stale")
    device.ima.run_distribution()
    assert device.attest(fleet.live.address).status == pb.STATUS_AFFIRMING
    state_dir = device.config(fleet.live.address).state_dir
    cursor = json.loads((state_dir / agent_ima.CURSOR_FILE).read_text())
    device.reboot()
    device.ima.run("/usr/bin/bash", b"GNU bash 5.2.15")
    device.ima.boot_id_path.write_text(cursor["boot_id"])  # the agent misses the reboot
    verdict = device.attest(fleet.live.address)  # ImaLogRequired, then the whole log
    assert verdict.status == pb.STATUS_AFFIRMING, verdict.reasons
    assert stored_entries(fleet, device) == 2


def test_incremental_entries_that_do_not_chain_ask_for_the_whole_log(fleet: Fleet) -> None:
    device = runtime_device(fleet, "rt-nochain")
    device.ima.run_distribution()
    assert device.attest(fleet.live.address).status == pb.STATUS_AFFIRMING
    accepted = stored_entries(fleet, device)
    verdicts = len(fleet.live.store.verdict_history(device.device_id))
    device.ima.run("/usr/local/bin/miner", b"xmrig 6.21")
    innocent = write.file_entry("/usr/bin/ls", bytes(32))  # not what the TPM was extended with
    error = refused(fleet.live.address, request_for(device, fleet.live.address, innocent, accepted))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert str(error.details()).startswith("ImaLogRequired: send the whole IMA log")
    assert len(fleet.live.store.verdict_history(device.device_id)) == verdicts
    assert stored_entries(fleet, device) == accepted


def test_an_oversized_ima_log_is_refused_and_nothing_recorded(fleet: Fleet) -> None:
    device = runtime_device(fleet, "rt-huge")
    huge = write.file_entry("/usr/bin/ls", bytes(32)) * 70_000  # ~7 MiB
    error = refused(fleet.live.address, request_for(device, fleet.live.address, huge, 0))
    assert error.code() in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INVALID_ARGUMENT)
    assert fleet.live.store.verdict_history(device.device_id) == []


def test_an_ima_log_for_a_profile_without_runtime_policy_is_refused(fleet: Fleet) -> None:
    device = fleet.add_device("gw", GOOD_A)
    device.enroll(fleet.live.address)
    log = write.file_entry("/usr/bin/ls", bytes(32))
    error = refused(fleet.live.address, request_for(device, fleet.live.address, log, 0))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "no runtime policy" in str(error.details())
