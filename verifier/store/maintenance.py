"""What the serve loop does for the store between requests: purge, checkpoint, survive outages.

``StoreMaintenance.tick`` is called about once a second by ``attest-verifier serve``. It

- purges expired nonces and challenges every ``purge_interval`` seconds;
- on SQLite, runs a PASSIVE WAL checkpoint every ``passive_interval`` seconds (it never waits:
  it copies what no reader still needs) and a TRUNCATE checkpoint every ``truncate_interval``
  seconds, and on every tick while the disk is below its reserve (it waits for readers, then
  empties the WAL file, giving its space back to the file system);
- never raises ``StoreUnavailable``: a store that is down (a full disk, PostgreSQL stopped)
  must not stop the verifier, which keeps answering UNAVAILABLE for what needs the store and
  recovers by itself when it is back. A failure is logged when it starts, then at most once
  per ``log_interval`` seconds with the count of failures not logged; the recovery is logged.

Times are passed in (``monotonic`` for schedules), so the schedule is testable without a clock.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from verifier.errors import StoreUnavailable
from verifier.store.base import Store
from verifier.store.sqlite import SqliteStore

log = logging.getLogger("attest-verifier.store")


@dataclass
class StoreMaintenance:
    store: Store
    purge_interval: float = 30.0
    passive_interval: float = 1.0
    truncate_interval: float = 60.0
    log_interval: float = 60.0
    _next: dict[str, float] = field(default_factory=dict)
    _failing_since: float | None = None
    _last_logged: float = 0.0
    _not_logged: int = 0

    def tick(self, monotonic: float, wall: float) -> None:
        """Run whatever is due; failures are logged (rate-bounded), never raised."""
        try:
            if self._due("purge", monotonic, self.purge_interval):
                self.store.purge_expired(wall)
            if isinstance(self.store, SqliteStore):
                self._checkpoint(self.store, monotonic)
        except StoreUnavailable as exc:
            self._failed(monotonic, exc)
            return
        if self._failing_since is not None:
            log.warning(
                "store maintenance works again after %.0f s", monotonic - self._failing_since
            )
            self._failing_since = None

    def _checkpoint(self, store: SqliteStore, monotonic: float) -> None:
        reserve = store.reserve
        short = reserve.reserve_bytes > 0 and reserve.free_bytes() < reserve.reserve_bytes
        if self._due("truncate", monotonic, self.truncate_interval) or short:
            store.checkpoint("TRUNCATE")
        elif self._due("passive", monotonic, self.passive_interval):
            store.checkpoint("PASSIVE")

    def _due(self, task: str, monotonic: float, interval: float) -> bool:
        """True once per ``interval``; the first call only schedules (nothing runs at start)."""
        due = self._next.setdefault(task, monotonic + interval)
        if monotonic < due:
            return False
        self._next[task] = monotonic + interval
        return True

    def _failed(self, monotonic: float, exc: StoreUnavailable) -> None:
        if self._failing_since is None:
            self._failing_since = monotonic
        elif monotonic - self._last_logged < self.log_interval:
            self._not_logged += 1
            return
        more = f" ({self._not_logged} more failures not logged)" if self._not_logged else ""
        log.error("store maintenance failed: %s%s", exc, more)
        self._last_logged = monotonic
        self._not_logged = 0
