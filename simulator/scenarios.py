"""Fleet scenarios: the good boot and each attack the verifier must catch, with the outcome
each must have. ``attest-sim scenarios`` runs them against a real verifier and swtpm devices.

An outcome is a verdict status (``affirming``, ``warning``, ``contraindicated``), ``expired``
(the relying-party view of a verdict past its lifetime), or ``refused`` (the verifier rejected
the request: nothing about the device can be trusted, and nothing was recorded for it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import grpc

from agent.flows import evidence_for
from fleetattest.v1 import fleetattest_pb2 as pb
from fleetattest.v1 import fleetattest_pb2_grpc as pb_grpc
from simulator.fleet import Fleet, SimDevice, rpc_error_text, status_name
from simulator.ima import SIGNED_FILES, signature_for
from simulator.profiles import (
    GOOD_A,
    GOOD_B,
    INIT_SH,
    RETIRED,
    SECUREBOOT_OFF,
    TAMPERED_BOOTLOADER,
)
from verifier.ima import write
from verifier.ima.parse import parse_binary


@dataclass(frozen=True)
class Outcome:
    result: str  # a status, "expired" or "refused"
    detail: str  # reason codes, or the error
    texts: tuple[str, ...] = ()  # the reasons, for people


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    expected: str
    run: Callable[[Fleet, str], Outcome]


def verdict_outcome(verdict: pb.Verdict) -> Outcome:
    codes = ", ".join(sorted({r.code for r in verdict.reasons})) or "-"
    texts = tuple(_reason_text(r) for r in verdict.reasons)
    return Outcome(status_name(verdict.status), codes, texts)


def _reason_text(reason: pb.Reason) -> str:
    text = f"{reason.code}: {reason.text}"
    if reason.release:
        text += f" (release {reason.release})"
    if reason.expected or reason.actual:
        text += f"\n      expected {reason.expected or '-'}\n      actual   {reason.actual or '-'}"
    return text


def attest(device: SimDevice, address: str) -> Outcome:
    try:
        return verdict_outcome(device.attest(address))
    except grpc.RpcError as exc:
        return Outcome("refused", rpc_error_text(exc))


def _boot(firmware_name: str) -> Callable[[Fleet, str], Outcome]:
    firmware = {
        "good": GOOD_A,
        "retired": RETIRED,
        "tampered": TAMPERED_BOOTLOADER,
        "sb-off": SECUREBOOT_OFF,
        "init-sh": INIT_SH,
    }[firmware_name]

    def run(fleet: Fleet, address: str) -> Outcome:
        return attest(fleet.add_device(f"sc-{firmware_name}", firmware), address)

    return run


def firmware_upgrade(fleet: Fleet, address: str) -> Outcome:
    device = fleet.add_device("sc-upgrade", GOOD_A)
    first = attest(device, address)
    if first.result != "affirming":
        return Outcome("refused", f"before the upgrade: {first.result} {first.detail}")
    device.reboot(GOOD_B)
    return attest(device, address)


def unknown_ek_ca(fleet: Fleet, address: str) -> Outcome:
    device = fleet.add_device("sc-unknown-ca", GOOD_A, ek_issuer="unknown")
    try:
        device.enroll(address)
    except grpc.RpcError as exc:
        return Outcome("refused", rpc_error_text(exc))
    return Outcome("enrolled", "an EK from an unknown CA was accepted")


def replayed_quote(fleet: Fleet, address: str) -> Outcome:
    device = fleet.add_device("sc-replay", GOOD_A)
    device.enroll(address)
    config = device.config(address)
    with fleet.live.agent_channel() as ch:
        stub = pb_grpc.AgentStub(ch)
        challenge = stub.GetChallenge(pb.GetChallengeRequest(device_id=device.device_id))
        request = evidence_for(config, device.device_id, challenge)
        stub.Attest(request)
        try:
            return verdict_outcome(stub.Attest(request).verdict)
        except grpc.RpcError as exc:
            return Outcome("refused", rpc_error_text(exc))


def stops_attesting(fleet: Fleet, address: str) -> Outcome:
    device = fleet.add_device("sc-silent", GOOD_A)
    first = attest(device, address)
    if first.result != "affirming":
        return first
    assert fleet.verifier is not None
    fleet.verifier.clock.advance(2 * 3600)  # the profile's lifetime is 1 h
    try:
        with fleet.verifier.relying_party_channel() as ch:  # an update server asks
            stub = pb_grpc.RelyingPartyStub(ch)
            reply = stub.GetVerdict(pb.GetVerdictRequest(device_id=device.device_id))
    finally:
        fleet.verifier.clock.advance(-2 * 3600)
    freshness = pb.Freshness.Name(reply.verdict.freshness).removeprefix("FRESHNESS_").lower()
    return Outcome("expired" if freshness == "expired" else freshness, "verdict_expired")


def unclean_power_loss(fleet: Fleet, address: str) -> Outcome:
    device = fleet.add_device("sc-power", GOOD_A)
    first = attest(device, address)
    if first.result != "affirming":
        return first
    device.lose_power()
    return attest(device, address)


def _runtime(name: str, act: Callable[[SimDevice], None]) -> Callable[[Fleet, str], Outcome]:
    """A runtime device (simulator.ima) that runs its distribution, then ``act``."""

    def run(fleet: Fleet, address: str) -> Outcome:
        device = fleet.add_device(f"sc-{name}", GOOD_A, runtime=True)
        device.ima.run_distribution()
        act(device)
        return attest(device, address)

    return run


def _nothing_else(device: SimDevice) -> None:
    return None


def _unknown_binary(device: SimDevice) -> None:
    device.ima.run("/usr/local/bin/miner", b"xmrig 6.21")


def _hidden_binary(device: SimDevice) -> None:
    device.ima.run("/usr/local/bin/miner", b"xmrig 6.21")
    device.ima.rewrite(device.ima.entries()[:-1])  # PCR 10 keeps the extend


def _renamed_binary(device: SimDevice) -> None:
    device.ima.run("/usr/local/bin/miner", b"xmrig 6.21")
    entries = device.ima.entries()
    (miner,) = parse_binary(entries[-1]).entries
    renamed = write.file_entry("/usr/bin/ls", miner.digest)
    device.ima.rewrite([*entries[:-1], renamed[:4] + miner.template_hash + renamed[24:]])


def _bad_signature(device: SimDevice) -> None:
    ((path, content),) = SIGNED_FILES.items()
    device.ima.run(path, content + b" patched", signature=signature_for(content))


def _violation(device: SimDevice) -> None:
    device.ima.violation("/usr/bin/bash")


def long_runtime(fleet: Fleet, address: str) -> Outcome:
    """Twenty incremental attestations of ten new entries each: all must affirm."""
    device = fleet.add_device("sc-long-runtime", GOOD_A, runtime=True)
    device.ima.run_distribution()
    outcome = attest(device, address)
    for _ in range(20):
        if outcome.result != "affirming":
            return outcome
        for _ in range(10):
            device.ima.run("/usr/bin/ls", b"coreutils 9.1 ls")
        outcome = attest(device, address)
    return outcome


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("good-device", "firmware fw-1.0.0, Secure Boot on", "affirming", _boot("good")),
    Scenario(
        "firmware-upgrade", "fw-1.0.0, then reboot into fw-1.1.0", "affirming", firmware_upgrade
    ),
    Scenario("rollback-retired", "boots retired fw-0.9.0", "contraindicated", _boot("retired")),
    Scenario("tampered-bootloader", "GRUB binary modified", "contraindicated", _boot("tampered")),
    Scenario("secureboot-off", "Secure Boot disabled", "contraindicated", _boot("sb-off")),
    Scenario(
        "init-sh-cmdline", "kernel command line init=/bin/sh", "contraindicated", _boot("init-sh")
    ),
    Scenario("unknown-ek-ca", "EK certificate from an unknown CA", "refused", unknown_ek_ca),
    Scenario("replayed-quote", "the same quote sent twice", "refused", replayed_quote),
    Scenario(
        "stops-attesting", "no attestation for 2 h (lifetime 1 h)", "expired", stops_attesting
    ),
    Scenario("unclean-power-loss", "power cut, reboot, attest", "warning", unclean_power_loss),
    Scenario(
        "runtime-good", "runs only allowed files (IMA)", "affirming", _runtime("rt", _nothing_else)
    ),
    Scenario(
        "runtime-unknown-binary",
        "runs a binary the runtime policy does not list",
        "contraindicated",
        _runtime("rt-unknown", _unknown_binary),
    ),
    Scenario(
        "runtime-hidden-entry",
        "removes its IMA entry to hide a binary",
        "contraindicated",
        _runtime("rt-hidden", _hidden_binary),
    ),
    Scenario(
        "runtime-renamed-entry",
        "changes an entry's path, keeps its digest",
        "contraindicated",
        _runtime("rt-renamed", _renamed_binary),
    ),
    Scenario(
        "runtime-bad-signature",
        "a signed file modified (ima-sig no longer verifies)",
        "contraindicated",
        _runtime("rt-badsig", _bad_signature),
    ),
    Scenario(
        "runtime-violation",
        "a file measured while open for write (ToMToU)",
        "contraindicated",
        _runtime("rt-tomtou", _violation),
    ),
    Scenario("runtime-long", "21 incremental attestations", "affirming", long_runtime),
)
