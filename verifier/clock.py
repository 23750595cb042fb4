"""Clock discipline: notice when the wall clock cannot be trusted, and measure durations that
a wall-clock step cannot stretch.

Pure: readings are passed in (``Reading``), nothing here reads a clock. The caller takes a
reading from ``time.time()``, ``time.monotonic()`` and the boot id
(``/proc/sys/kernel/random/boot_id``), which names the monotonic clock's epoch.

What the guard notices (each puts the clock *in doubt*, with a one-line reason):

1. A step: the offset ``wall - monotonic`` moves between two readings by more than
   ``tolerance`` plus what NTP may slew in the elapsed monotonic time (``max_slew_ppm``).
   Slow drift and NTP slewing stay within that bound and are followed, not flagged.
2. The wall clock earlier than a time already recorded (``note_recorded``: the latest time
   the store wrote, the greatest wall time this guard has seen) by more than ``tolerance``.
   This also catches a step back that happened while the process was not running.
3. A verdict whose ``issued_at`` lies in the future (``check_issued_at``): the clock is
   behind the one that issued it; that is the same check as 2.

How doubt clears (decided here, documented for operators):

- A step clears by itself once the offset has stayed stable (no further step) for
  ``settle_seconds`` of monotonic time and at least ``settle_readings`` readings. NTP that
  steps the clock once and then holds it is accepted after that quiet period.
- A wall clock behind a recorded time clears by itself only when the wall clock passes that
  time again: until then a verdict or token would carry a time earlier than one already used.
- ``acknowledge`` (an operator asserting the current clock is right) clears every doubt, takes
  the current offset as the baseline and forgets recorded times later than now.

Durations the verifier controls (nonce TTL, verdict lifetime) are ``Deadline``s: a wall-clock
deadline plus, in the same monotonic epoch, a monotonic deadline. A deadline has passed when
*either* has passed, so a step forward can only shorten a duration (fail closed) and a step back
cannot lengthen it. Limits: the monotonic clock is per machine and per boot. Processes on one
host share it (the epoch is the boot id), so workers may compare each other's monotonic
deadlines when the store keeps them; another host or a later boot has only the wall deadline,
and there a step back is caught only by check 2 against the times the store recorded. Without
NTP (or any disciplined wall clock) nothing here can tell which of two clocks is right: the
verifier then refuses to vouch (no tokens, "unknown") rather than guess.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

DEFAULT_TOLERANCE = 2.0  # seconds of offset change between readings that is not a step
DEFAULT_MAX_SLEW_PPM = 500.0  # the most an NTP daemon slews (Linux adjtimex limit)
DEFAULT_SETTLE_SECONDS = 300.0  # quiet monotonic time after a step before doubt clears
DEFAULT_SETTLE_READINGS = 3


@dataclass(frozen=True)
class Reading:
    """One simultaneous reading of the wall clock (POSIX seconds) and the monotonic clock."""

    wall: float
    mono: float
    epoch: str  # names the monotonic clock: the boot id

    @property
    def offset(self) -> float:
        return self.wall - self.mono


@dataclass(frozen=True)
class Deadline:
    """The end of a duration: in wall time always, in monotonic time within ``epoch``."""

    wall: float
    mono: float | None = None
    epoch: str | None = None

    @classmethod
    def after(cls, start: Reading, seconds: float) -> Deadline:
        return cls(start.wall + seconds, start.mono + seconds, start.epoch)

    def passed(self, now: Reading) -> bool:
        """Passed when either clock says so: a step cannot stretch the duration."""
        return self.remaining(now) <= 0

    def remaining(self, now: Reading) -> float:
        left = self.wall - now.wall
        if self.mono is not None and self.epoch == now.epoch:
            left = min(left, self.mono - now.mono)
        return left


@dataclass(frozen=True)
class Doubt:
    reason: str
    since: float  # wall time of the reading that raised it


class ClockGuard:
    """Follows the wall clock against the monotonic clock and recorded times. Thread-safe."""

    def __init__(
        self,
        tolerance: float = DEFAULT_TOLERANCE,
        max_slew_ppm: float = DEFAULT_MAX_SLEW_PPM,
        settle_seconds: float = DEFAULT_SETTLE_SECONDS,
        settle_readings: int = DEFAULT_SETTLE_READINGS,
    ) -> None:
        if tolerance < 0 or max_slew_ppm < 0 or settle_seconds < 0 or settle_readings < 1:
            raise ValueError("clock guard bounds must be non-negative, settle_readings >= 1")
        self.tolerance = tolerance
        self.max_slew = max_slew_ppm * 1e-6
        self.settle_seconds = settle_seconds
        self.settle_readings = settle_readings
        self._lock = threading.Lock()
        self._last: Reading | None = None
        self._step: Doubt | None = None
        self._step_mono = 0.0  # monotonic time of the latest step
        self._quiet = 0  # readings since the latest step
        self._floor = float("-inf")  # the latest wall time recorded or seen
        self._floor_what = ""

    # ------------------------------------------------------------ inputs

    def observe(self, now: Reading) -> None:
        """Take a reading; raises the step doubt or counts towards clearing it.

        Threads take readings, then wait for this lock: a reading older (in monotonic time of
        the same epoch) than the last one observed arrives late and is ignored. Compared with
        the newer wall times already seen it would look like a clock behind them."""
        with self._lock:
            last = self._last
            if last is not None and last.epoch == now.epoch and now.mono < last.mono:
                return
            self._last = now
            if last is not None and last.epoch == now.epoch:
                self._compare(last, now)
            self._raise_floor(now.wall, "a time this verifier already used")

    def note_recorded(self, wall: float, what: str = "the latest time the store recorded") -> None:
        """A wall time already written down (by this verifier or another replica)."""
        with self._lock:
            self._raise_floor(wall, what)

    def check_issued_at(self, issued_at: float) -> None:
        """A stored verdict's ``issued_at``; one in the future puts the clock in doubt."""
        self.note_recorded(issued_at, "a verdict's issued_at")

    def acknowledge(self, now: Reading) -> None:
        """An operator asserts the clock is right now: clear every doubt, re-baseline."""
        with self._lock:
            self._last = now
            self._step = None
            self._floor, self._floor_what = now.wall, "a time this verifier already used"

    # ------------------------------------------------------------ state

    @property
    def doubt(self) -> Doubt | None:
        """Why the wall clock is not trusted now, or ``None``."""
        with self._lock:
            if self._step is not None:
                return self._step
            last = self._last
            if last is not None and last.wall < self._floor - self.tolerance:
                behind = self._floor - last.wall
                return Doubt(f"wall clock is {behind:.1f} s before {self._floor_what}", last.wall)
            return None

    @property
    def in_doubt(self) -> bool:
        return self.doubt is not None

    @property
    def reason(self) -> str | None:
        doubt = self.doubt
        return doubt.reason if doubt is not None else None

    # ------------------------------------------------------------ steps

    def _compare(self, last: Reading, now: Reading) -> None:
        elapsed = max(0.0, now.mono - last.mono)
        moved = now.offset - last.offset
        if abs(moved) > self.tolerance + self.max_slew * elapsed:
            direction = "forward" if moved > 0 else "back"
            self._step = Doubt(
                f"wall clock stepped {direction} {abs(moved):.1f} s against the monotonic clock",
                now.wall,
            )
            self._step_mono, self._quiet = now.mono, 0
            return
        if self._step is None:
            return
        self._quiet += 1
        settled = now.mono - self._step_mono >= self.settle_seconds
        if settled and self._quiet >= self.settle_readings:
            self._step = None

    def _raise_floor(self, wall: float, what: str) -> None:
        if wall > self._floor:
            self._floor, self._floor_what = wall, what
