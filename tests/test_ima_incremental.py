"""Incremental IMA attestation: chaining, and every way a history can be cut or rewritten."""

from __future__ import annotations

import pytest
from imadevice import Device, file_digest

from verifier.errors import ImaLogRequired, ReplayMismatch
from verifier.ima.appraise import ImaAppraisal, appraise_ima
from verifier.ima.incremental import IncrementalState, state_from_dict, state_to_dict
from verifier.ima.policy import RuntimePolicy
from verifier.ima.replay import ExtendMode
from verifier.ima.section import parse_runtime_section
from verifier.verdict import Status, worst

BOOT = "7:0"


def _policy(paths: list[str]) -> RuntimePolicy:
    section = {"digests": {p: [f"sha256:{file_digest(p).hex()}"] for p in paths}}
    return parse_runtime_section(section).policy


POLICY = _policy([f"/usr/bin/tool{n}" for n in range(50)])


def _appraise(
    device: Device,
    offset: int,
    state: IncrementalState | None,
    boot: str = BOOT,
    policy: RuntimePolicy = POLICY,
) -> ImaAppraisal:
    return appraise_ima(
        device.since(offset),
        offset,
        state=state,
        boot_id=boot,
        bank=device.bank,
        quoted=device.quoted(),
        policy=policy,
    )


def _booted(runs: int = 5) -> tuple[Device, ImaAppraisal]:
    device = Device()
    for n in range(runs):
        device.run(f"/usr/bin/tool{n}")
    return device, _appraise(device, 0, None)


def test_full_log_then_increments_chain() -> None:
    device, first = _booted()
    assert first.full_log and first.boot_aggregate is not None and first.reasons == ()
    state = first.state
    for n in range(5, 25):
        device.run(f"/usr/bin/tool{n}")
        result = _appraise(device, state.entry_count, state)
        assert not result.full_log and result.new_entries == 1 and result.reasons == ()
        state = result.state
    assert state.entry_count == len(device.raw) and state.pcr10 == device.pcrs[10]


def test_quote_with_nothing_new_is_accepted_from_the_state() -> None:
    device, first = _booted()
    again = _appraise(device, first.state.entry_count, first.state)
    assert again.new_entries == 0 and again.state.entry_count == first.state.entry_count


def test_no_state_needs_the_full_log() -> None:
    device, first = _booted()
    with pytest.raises(ImaLogRequired, match="no IMA state"):
        _appraise(device, first.state.entry_count, None)


def test_log_for_another_boot_needs_the_full_log() -> None:
    device, first = _booted()
    device.run("/usr/bin/tool9")
    with pytest.raises(ImaLogRequired, match="a new boot"):
        _appraise(device, first.state.entry_count, first.state, boot="8:0")


def test_gap_needs_the_full_log() -> None:
    device, first = _booted()
    device.run("/usr/bin/tool9")
    device.run("/usr/bin/tool8")
    with pytest.raises(ImaLogRequired, match="gap"):
        _appraise(device, first.state.entry_count + 1, first.state)


def test_increment_that_does_not_chain_from_the_state_needs_the_full_log() -> None:
    _device, first = _booted()
    other = Device()  # the same offsets, another history
    for n in range(5):
        other.run(f"/usr/bin/other{n}")
    other.run("/usr/bin/tool9")
    with pytest.raises(ImaLogRequired, match="do not chain"):
        _appraise(other, first.state.entry_count, first.state)


def test_overlap_from_a_checkpoint_is_checked_and_accepted() -> None:
    device, first = _booted()
    device.run("/usr/bin/tool9")
    second = _appraise(device, first.state.entry_count, first.state)
    device.run("/usr/bin/tool8")  # the agent missed the second response: it resends from 6
    third = _appraise(device, first.state.entry_count, second.state)
    assert third.new_entries == 1 and third.state.entry_count == len(device.raw)


def test_overlap_that_disagrees_needs_the_full_log() -> None:
    device, first = _booted()
    device.run("/usr/bin/tool9")
    second = _appraise(device, first.state.entry_count, first.state)
    liar = Device()
    for n in range(5):
        liar.run(f"/usr/bin/tool{n}")
    liar.run("/usr/bin/tool7")  # entry 6 differs from the accepted one
    liar.run("/usr/bin/tool8")
    with pytest.raises(ImaLogRequired, match="disagree"):
        appraise_ima(
            liar.since(first.state.entry_count),
            first.state.entry_count,
            state=second.state,
            boot_id=BOOT,
            bank="sha256",
            quoted=device.quoted(),
            policy=POLICY,
        )


def test_full_log_that_does_not_replay_is_tampered() -> None:
    device, _first = _booted()
    device.run("/tmp/rootkit")
    device.raw.pop(-1)  # hidden from the log, still in PCR 10
    with pytest.raises(ReplayMismatch):
        _appraise(device, 0, None)


def test_truncated_history_cannot_pass_even_with_a_matching_quote() -> None:
    _device, first = _booted()
    stale = first.state
    short = Device()  # a second device-state that replays to its own quote with fewer entries
    with pytest.raises(ReplayMismatch, match="truncated"):
        _appraise(short, 0, stale)


def test_rewritten_history_cannot_pass() -> None:
    _device, first = _booted()
    rewritten = Device()
    for n in range(5):
        rewritten.run(f"/usr/bin/tool{4 - n}")
    with pytest.raises(ReplayMismatch, match="rewritten"):
        _appraise(rewritten, 0, first.state)


def test_contraindicated_entry_is_not_forgotten_by_later_increments() -> None:
    device, first = _booted()
    device.run("/usr/bin/not-in-policy")
    bad = _appraise(device, first.state.entry_count, first.state)
    assert worst(bad.reasons) is Status.CONTRAINDICATED
    device.run("/usr/bin/tool7")
    later = _appraise(device, bad.state.entry_count, bad.state)
    assert later.new_entries == 1
    assert [r.code for r in later.reasons] == ["ima_unknown_entry"]
    assert later.reasons[0].event_index == 6


def test_policy_change_needs_the_full_log() -> None:
    device, first = _booted()
    device.run("/usr/bin/tool9")
    with pytest.raises(ImaLogRequired, match="policy changed"):
        _appraise(device, first.state.entry_count, first.state, policy=_policy(["/x"]))


def test_quote_that_does_not_cover_boot_aggregate_is_refused() -> None:
    device = Device()
    quoted = {"sha256": {**device.pcrs, 10: bytes(32)}}
    with pytest.raises(ReplayMismatch, match="covers no IMA entry"):
        appraise_ima(
            device.log, 0, state=None, boot_id=BOOT, bank="sha256", quoted=quoted, policy=POLICY
        )


def test_pcr10_missing_from_the_quote_is_refused() -> None:
    device = Device()
    with pytest.raises(ReplayMismatch, match="does not include sha256 PCR 10"):
        appraise_ima(
            device.log,
            0,
            state=None,
            boot_id=BOOT,
            bank="sha256",
            quoted={"sha256": {0: bytes(32)}},
            policy=POLICY,
        )


def test_padded_kernel_mode_is_kept_in_the_state() -> None:
    device = Device(mode=ExtendMode.SHA1_PADDED)
    device.run("/usr/bin/tool1")
    first = _appraise(device, 0, None)
    assert first.state.mode is ExtendMode.SHA1_PADDED


def test_state_round_trips_through_its_dict_form() -> None:
    device, first = _booted()
    device.run("/usr/bin/nope")
    second = _appraise(device, first.state.entry_count, first.state)
    assert state_from_dict(state_to_dict(second.state)) == second.state
