"""Finding 2 of the fault run: freshness followed the verifier's wall clock blindly. The guard
notices steps (against the monotonic clock and recorded times) and deadlines cannot be
stretched by a step. Readings are injected: no real clock, no sleeping."""

from __future__ import annotations

import pytest

from verifier.clock import ClockGuard, Deadline, Reading

BOOT = "boot-1"
T0 = 1_800_000_000.0
HOUR = 3600.0


class FakeClocks:
    """A wall clock that can be stepped and a monotonic clock that only moves forward."""

    def __init__(self) -> None:
        self.wall, self.mono, self.epoch = T0, 1000.0, BOOT

    def tick(self, seconds: float, drift: float = 0.0) -> Reading:
        self.wall += seconds + drift
        self.mono += seconds
        return self.now()

    def step(self, seconds: float) -> Reading:
        self.wall += seconds
        return self.now()

    def now(self) -> Reading:
        return Reading(self.wall, self.mono, self.epoch)


def guard_with_history(clocks: FakeClocks, readings: int = 5) -> ClockGuard:
    guard = ClockGuard(tolerance=2.0, settle_seconds=300.0, settle_readings=3)
    for _ in range(readings):
        guard.observe(clocks.tick(10))
    assert not guard.in_doubt
    return guard


def test_wall_clock_stepped_forward_two_hours_is_in_doubt() -> None:
    clocks = FakeClocks()
    guard = guard_with_history(clocks)
    guard.observe(clocks.step(2 * HOUR))
    assert guard.in_doubt
    assert guard.reason == "wall clock stepped forward 7200.0 s against the monotonic clock"


def test_wall_clock_stepped_back_two_hours_is_in_doubt() -> None:
    clocks = FakeClocks()
    guard = guard_with_history(clocks)
    guard.observe(clocks.step(-2 * HOUR))
    assert guard.reason == "wall clock stepped back 7200.0 s against the monotonic clock"


def test_slow_drift_within_slew_bound_is_followed_not_flagged() -> None:
    clocks = FakeClocks()
    guard = guard_with_history(clocks)
    # 500 ppm for a day, read every minute: 43 s of drift in total, never a step.
    for _ in range(24 * 60):
        guard.observe(clocks.tick(60, drift=60 * 499e-6))
    assert not guard.in_doubt
    assert clocks.wall - clocks.mono > T0 - 1000.0 + 43


def test_small_jitter_below_tolerance_is_not_a_step() -> None:
    clocks = FakeClocks()
    guard = guard_with_history(clocks)
    guard.observe(clocks.step(1.5))
    guard.observe(clocks.step(-1.5))
    assert not guard.in_doubt


def test_step_forward_clears_after_the_offset_is_stable_for_the_settle_period() -> None:
    clocks = FakeClocks()
    guard = guard_with_history(clocks)
    guard.observe(clocks.step(2 * HOUR))
    for _ in range(29):  # 290 s of stable readings: not yet settled
        guard.observe(clocks.tick(10))
        assert guard.in_doubt
    guard.observe(clocks.tick(10))
    assert not guard.in_doubt


def test_many_readings_in_a_short_time_do_not_clear_a_step() -> None:
    clocks = FakeClocks()
    guard = guard_with_history(clocks)
    guard.observe(clocks.step(2 * HOUR))
    for _ in range(1000):
        guard.observe(clocks.tick(0.1))
    assert guard.in_doubt


def test_a_second_step_restarts_the_settle_period() -> None:
    clocks = FakeClocks()
    guard = guard_with_history(clocks)
    guard.observe(clocks.step(2 * HOUR))
    for _ in range(20):
        guard.observe(clocks.tick(10))
    guard.observe(clocks.step(HOUR))
    for _ in range(20):
        guard.observe(clocks.tick(10))
    assert guard.reason == "wall clock stepped forward 3600.0 s against the monotonic clock"


def test_step_back_stays_in_doubt_until_the_wall_clock_passes_times_already_used() -> None:
    clocks = FakeClocks()
    guard = guard_with_history(clocks)
    latest = clocks.wall
    guard.observe(clocks.step(-HOUR))
    for _ in range(60):  # ten quiet minutes: the step has settled, the clock is still behind
        guard.observe(clocks.tick(10))
    reason = guard.reason
    assert reason is not None and reason.startswith("wall clock is 3")
    assert reason.endswith("s before a time this verifier already used")
    while clocks.wall < latest:
        guard.observe(clocks.tick(60))
    assert not guard.in_doubt


def test_wall_clock_before_the_latest_time_the_store_recorded_is_in_doubt() -> None:
    # A fresh process (no history) whose clock was stepped back while it was down.
    clocks = FakeClocks()
    guard = ClockGuard()
    guard.note_recorded(T0 + HOUR)
    guard.observe(clocks.now())
    assert guard.reason == "wall clock is 3600.0 s before the latest time the store recorded"


def test_verdict_issued_in_the_future_puts_the_clock_in_doubt() -> None:
    clocks = FakeClocks()
    guard = guard_with_history(clocks)
    guard.check_issued_at(clocks.wall + 2 * HOUR)
    reason = guard.reason
    assert reason is not None and reason.endswith("s before a verdict's issued_at")


def test_issued_at_within_tolerance_is_not_doubt() -> None:
    clocks = FakeClocks()
    guard = guard_with_history(clocks)
    guard.check_issued_at(clocks.wall + 1.0)
    assert not guard.in_doubt


def test_operator_acknowledgement_clears_every_doubt_and_rebaselines() -> None:
    clocks = FakeClocks()
    guard = guard_with_history(clocks)
    guard.check_issued_at(clocks.wall + HOUR)
    guard.observe(clocks.step(-2 * HOUR))
    assert guard.in_doubt
    guard.acknowledge(clocks.now())
    assert not guard.in_doubt
    guard.observe(clocks.tick(10))
    assert not guard.in_doubt
    guard.observe(clocks.step(10 * 60))  # a new step after the acknowledgement is seen again
    assert guard.in_doubt


def test_a_new_boot_epoch_is_not_compared_with_the_old_monotonic_clock() -> None:
    clocks = FakeClocks()
    guard = guard_with_history(clocks)
    clocks.epoch, clocks.mono = "boot-2", 5.0  # monotonic restarted, wall went on
    guard.observe(clocks.tick(10))
    assert not guard.in_doubt


def test_step_forward_cannot_stretch_and_only_shortens_a_deadline() -> None:
    clocks = FakeClocks()
    deadline = Deadline.after(clocks.now(), 300)
    clocks.step(2 * HOUR)
    assert deadline.passed(clocks.now())  # shorter: fail closed


def test_step_back_cannot_stretch_a_deadline_in_the_same_epoch() -> None:
    clocks = FakeClocks()
    deadline = Deadline.after(clocks.now(), 300)
    clocks.tick(299)
    clocks.step(-2 * HOUR)
    assert not deadline.passed(clocks.now())
    assert deadline.remaining(clocks.now()) == pytest.approx(1.0)
    clocks.tick(1)
    assert deadline.passed(clocks.now())


def test_deadline_from_another_epoch_falls_back_to_wall_time() -> None:
    clocks = FakeClocks()
    deadline = Deadline.after(clocks.now(), 300)
    other = Reading(clocks.wall + 100, 1.0, "boot-other")
    assert not deadline.passed(other) and deadline.remaining(other) == pytest.approx(200)
    assert deadline.passed(Reading(clocks.wall + 300, 1.0, "boot-other"))


def test_nonsense_bounds_are_refused() -> None:
    with pytest.raises(ValueError):
        ClockGuard(settle_readings=0)
