"""The operator's clock acknowledgement, shared by the workers of one ``serve --processes N``.

Workers on one host share one wall clock, so an operator who acknowledged it through one worker
(``Operator.AcknowledgeClock`` reaches whichever worker accepted the call) has vouched for it on
all of them. ``SharedAcknowledgement`` is a cell in shared memory, made by the supervisor before
it forks (replacement workers inherit it too): the acknowledging worker publishes its clock
reading under a new generation number; every other worker, at its next clock reading, sees the
new generation and acknowledges with that same reading (``ClockGuard.acknowledge``), so a step
after the acknowledgement is still a step against its baseline. Other replicas (other hosts)
have their own clocks and are not affected.
"""

from __future__ import annotations

import multiprocessing
from dataclasses import dataclass

from verifier.clock import Reading


@dataclass(frozen=True)
class Published:
    generation: int  # 0: nothing acknowledged since the supervisor started
    wall: float
    mono: float


class SharedAcknowledgement:
    def __init__(self) -> None:
        # generation, wall, monotonic; a lock shared across the fork guards the three together.
        self._cell = multiprocessing.get_context("fork").Array("d", 3)

    def publish(self, reading: Reading) -> int:
        """This worker's operator acknowledged the clock at ``reading``: the new generation."""
        with self._cell.get_lock():
            generation = int(self._cell[0]) + 1
            self._cell[0], self._cell[1], self._cell[2] = generation, reading.wall, reading.mono
        return generation

    def latest(self) -> Published:
        with self._cell.get_lock():
            return Published(int(self._cell[0]), self._cell[1], self._cell[2])
