"""The live golden set: loaded once at start, swapped atomically on a valid reload.

Invariants:
- The verifier never runs without a valid set: ``LiveGolden.start`` raises ``GoldenError``
  when the directory is invalid, and a reload that finds problems keeps the last good set,
  records the problems (served by the operator status call) and logs them.
- A swap is one reference assignment: a request sees either the old or the new set, whole.
- ``on_reload`` (when set) is called with the result of every reload attempt, after it took
  effect, outside no lock a reader needs: metrics and health follow reloads without polling.
- Every set that goes live is recorded in the store's golden history (digest, time, files),
  so a verdict's golden digest always resolves to the files it was judged against; the
  digests files its runtime sections name are among those files.
- The watcher's fingerprint covers the profiles and every digests file the last load named
  (valid or not): a change to a digests file alone is noticed.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from verifier.errors import PolicyViolation
from verifier.golden.load import (
    SUFFIXES,
    GoldenError,
    GoldenProblem,
    golden_digest,
    load_golden_dir,
    read_golden_file,
)
from verifier.golden.model import GoldenSet
from verifier.store.base import GoldenSetRecord, Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedGolden:
    profile_set: GoldenSet
    loaded_at: float


@dataclass(frozen=True)
class ReloadResult:
    applied: bool
    digest: str  # the live digest after the attempt
    problems: tuple[GoldenProblem, ...]


class LiveGolden:
    def __init__(
        self, directory: Path, store: Store, clock: Callable[[], float], initial: LoadedGolden
    ) -> None:
        self.directory = directory
        self._store = store
        self._clock = clock
        self._current = initial
        self._problems: tuple[GoldenProblem, ...] = ()
        self._lock = threading.Lock()  # serialises reloads, not reads
        self._watched = _digests_files(initial.profile_set.files)
        self._fingerprint = _fingerprint(directory, self._watched)
        self.on_reload: Callable[[ReloadResult], None] | None = None

    @classmethod
    def start(cls, directory: Path, store: Store, clock: Callable[[], float]) -> LiveGolden:
        """Load the directory or refuse to start (raises ``GoldenError``)."""
        golden = load_golden_dir(directory)
        loaded = LoadedGolden(golden, clock())
        _record(store, golden, directory, loaded.loaded_at)
        log.info(
            "golden set %s live: %d profiles from %s",
            golden.digest,
            len(golden.profiles),
            directory,
        )
        return cls(directory, store, clock, loaded)

    def current(self) -> LoadedGolden:
        return self._current

    @property
    def problems(self) -> tuple[GoldenProblem, ...]:
        return self._problems

    def reload(self) -> ReloadResult:
        result = self._reload()
        if self.on_reload is not None:
            self.on_reload(result)
        return result

    def _reload(self) -> ReloadResult:
        with self._lock:
            fingerprint = _fingerprint(self.directory, self._watched)
            try:
                golden = load_golden_dir(self.directory)
            except GoldenError as exc:
                self._watch(fingerprint, exc.digests_files)
                self._problems = exc.problems
                for problem in exc.problems:
                    log.error("golden reload refused: %s", problem)
                return ReloadResult(False, self._current.profile_set.digest, exc.problems)
            self._watch(fingerprint, _digests_files(golden.files))
            self._problems = ()
            if golden.digest == self._current.profile_set.digest:
                return ReloadResult(False, golden.digest, ())
            now = self._clock()
            _record(self._store, golden, self.directory, now)
            self._current = LoadedGolden(golden, now)
            log.info("golden set %s live (%d profiles)", golden.digest, len(golden.profiles))
            return ReloadResult(True, golden.digest, ())

    def _watch(self, fingerprint: tuple[tuple[str, int, int], ...], names: tuple[str, ...]) -> None:
        """Keep the fingerprint taken before the load; when the load named other digests
        files, none (the next poll reloads once, a no-op if nothing changed)."""
        self._fingerprint = fingerprint if names == self._watched else ()
        self._watched = names

    def reload_if_changed(self) -> ReloadResult | None:
        """Reload when a profile or a watched digests file changed (polled by the watcher)."""
        if _fingerprint(self.directory, self._watched) == self._fingerprint:
            return None
        return self.reload()

    def watch(self, stop: threading.Event, interval: float = 2.0) -> threading.Thread:
        def loop() -> None:
            while not stop.wait(interval):
                try:
                    self.reload_if_changed()
                except Exception:  # the watcher must survive anything a file can do
                    log.exception("golden watcher failed; the live set is unchanged")

        thread = threading.Thread(target=loop, name="golden-watch", daemon=True)
        thread.start()
        return thread


def _digests_files(files: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(sorted(name for name in files if not name.endswith(SUFFIXES)))


def _fingerprint(
    directory: Path, digests_files: tuple[str, ...]
) -> tuple[tuple[str, int, int], ...]:
    try:
        entries = sorted(p.name for p in directory.iterdir() if p.suffix in {".yaml", ".yml"})
    except OSError:
        return ()
    return tuple(_stat(directory, name) for name in (*entries, *digests_files))


def _stat(directory: Path, name: str) -> tuple[str, int, int]:
    """(name, mtime, size) of the file a name leads to (-1s when it cannot be read)."""
    try:
        info = (directory / name).stat()
    except OSError:
        return (name, -1, -1)
    return (name, info.st_mtime_ns, info.st_size)


def _record(store: Store, golden: GoldenSet, directory: Path, now: float) -> None:
    """Record the set, its file contents (for ``audit replay``) and its audit log entry.

    A file read again here could differ from what was loaded (edited in between): it is kept
    only when the contents give the digest that went live, else the digests alone are kept.
    """
    files: dict[str, str] = {}
    contents: dict[str, bytes] = {}
    for name in golden.files:
        try:
            data = read_golden_file(directory, name)
        except (OSError, PolicyViolation):
            files[name] = ""
            continue
        files[name] = hashlib.sha256(data).hexdigest()
        contents[name] = data
    if len(contents) != len(golden.files) or golden_digest(contents) != golden.digest:
        contents = {}
    store.record_golden_set(GoldenSetRecord(golden.digest, now, files), contents)
