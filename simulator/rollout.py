"""A staged firmware rollout driven by an update server that trusts only the verifier's API.

The update server moves a fleet from one release to another in waves:
1. before shipping to a device it asks ``CheckRollout(device, target, max_age)`` and skips the
   device on a deny, with the reasons;
2. it ships the firmware (here: the simulated device reboots into the new release and its
   agent re-attests, as it does on every boot);
3. it waits until every device of the wave has a verdict from the new boot epoch and reads it
   with ``GetVerdict``: all affirming against the target -> next wave; any contraindicated ->
   the rollout halts with a report, and later waves are never touched.

The update server talks to the verifier's caller port with its relying-party client
certificate (mutual TLS), as a real one does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from fleetattest.v1 import fleetattest_pb2 as pb
from fleetattest.v1 import fleetattest_pb2_grpc as pb_grpc
from simulator.firmware import FirmwareProfile
from simulator.fleet import RunningVerifier, SimDevice, status_name


@dataclass
class RolloutReport:
    target: str
    upgraded: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # device name, why
    halted_by: list[tuple[str, str]] = field(default_factory=list)  # device name, reasons
    waves_done: int = 0

    @property
    def halted(self) -> bool:
        return bool(self.halted_by)


Log = Callable[[str], None]


def run_rollout(
    verifier: RunningVerifier,
    waves: Sequence[Sequence[SimDevice]],
    target: str,
    firmware_for: Callable[[SimDevice], FirmwareProfile],
    *,
    max_age: int = 600,
    log: Log = print,
) -> RolloutReport:
    report = RolloutReport(target)
    with verifier.relying_party_channel() as ch:
        stub = pb_grpc.RelyingPartyStub(ch)
        for number, wave in enumerate(waves, 1):
            log(f"wave {number}: {', '.join(d.name for d in wave)}")
            shipped = [d for d in wave if _allowed(stub, d, target, max_age, report, log)]
            for device in shipped:
                before = _epoch(stub, device)
                device.reboot(firmware_for(device))  # the update; the device reboots
                device.attest(verifier.address)  # its agent attests on boot
                _judge(stub, device, target, before, report, log)
            report.waves_done = number
            if report.halted:
                log(f"rollout HALTED after wave {number}: {len(report.halted_by)} bad device(s)")
                return report
    log(f"rollout complete: {len(report.upgraded)} devices on {target}")
    return report


def _allowed(
    stub: pb_grpc.RelyingPartyStub,
    device: SimDevice,
    target: str,
    max_age: int,
    report: RolloutReport,
    log: Log,
) -> bool:
    decision = stub.CheckRollout(
        pb.CheckRolloutRequest(
            device_id=device.device_id, target_release=target, max_age_seconds=max_age
        )
    )
    if decision.allow:
        return True
    why = "; ".join(f"{r.code}: {r.text}" for r in decision.reasons)
    report.skipped.append((device.name, why))
    log(f"  {device.name}: not shipped ({why})")
    return False


def _epoch(stub: pb_grpc.RelyingPartyStub, device: SimDevice) -> int:
    verdict = stub.GetVerdict(pb.GetVerdictRequest(device_id=device.device_id)).verdict
    return verdict.boot_epoch.reset_count


def _judge(
    stub: pb_grpc.RelyingPartyStub,
    device: SimDevice,
    target: str,
    before: int,
    report: RolloutReport,
    log: Log,
) -> None:
    verdict = stub.GetVerdict(pb.GetVerdictRequest(device_id=device.device_id)).verdict
    new_boot = verdict.boot_epoch.reset_count > before
    if new_boot and verdict.status == pb.STATUS_AFFIRMING and verdict.release == target:
        report.upgraded.append(device.name)
        log(f"  {device.name}: back affirming on {target}")
        return
    reasons = ", ".join(sorted({r.code for r in verdict.reasons})) or "no new verdict"
    report.halted_by.append((device.name, reasons))
    log(f"  {device.name}: came back {status_name(verdict.status)} ({reasons})")
