"""Worker processes for ``serve --processes N``: keep N alive, and own the port alone.

``supervise(worker, n)`` forks ``n`` processes that each run ``worker()`` (its return value is
the process's exit code). The supervisor itself runs no gRPC and no threads (fork it before
any are started):

- A worker that exits while the supervisor is not stopping is a death: it is logged (pid, exit
  code or signal) and replaced after a backoff that doubles with each death in the window
  (``RestartPolicy``), so a capacity loss never goes silent and a crash loop does not spin.
- ``max_deaths`` deaths within ``window`` seconds: the workers keep dying, and restarting
  will not help. The supervisor stops the rest (SIGTERM) and returns 1.
- SIGTERM and SIGINT are forwarded to every worker and stop the supervisor once all have
  exited; its exit code is the worst of theirs. SIGHUP is forwarded only (golden reload).

``check_port_exclusive(listen)`` runs before the workers start. Workers share the port with
SO_REUSEPORT, and Linux admits any socket of the same user into that group, so a stale
verifier left on the port would silently take part of the traffic. The probe binds the
address *without* SO_REUSEPORT (with SO_REUSEADDR, so connections in TIME_WAIT from a previous
run do not count): that fails with EADDRINUSE while any other socket, with or without
SO_REUSEPORT, is bound or listening there. Limit: this is a check, then a bind; a process that
binds with SO_REUSEPORT between the two is not seen. Restarted workers join their siblings'
group, so the check runs once, before the first fork.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

log = logging.getLogger(__name__)

POLL_SECONDS = 0.05  # how often the supervisor looks for exited workers
_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@dataclass(frozen=True)
class RestartPolicy:
    max_deaths: int = 5  # deaths within ``window`` that make the supervisor give up
    window: float = 60.0  # seconds
    backoff: float = 0.5  # seconds before the first restart; doubles per death in the window
    max_backoff: float = 30.0

    def delay(self, recent_deaths: int) -> float:
        return float(min(self.max_backoff, self.backoff * 2 ** max(0, recent_deaths - 1)))


def supervise(
    worker: Callable[[int], int],
    processes: int,
    policy: RestartPolicy | None = None,
    on_exit: Callable[[int], None] | None = None,
) -> int:
    """Run ``processes`` copies of ``worker`` until told to stop; see the module docstring.

    ``worker(slot)`` gets its slot, 0 to ``processes - 1``; a replacement takes the slot of the
    worker it replaces (so whatever slot 0 owns, an operator socket say, comes back with it).

    ``on_exit(pid)`` runs in the supervisor for every worker that ended (for example to drop a
    dead worker's live metrics).
    """
    if processes < 1:
        raise ValueError("processes must be at least 1")
    return _Supervisor(worker, processes, policy or RestartPolicy(), on_exit).run()


class _Supervisor:
    def __init__(
        self,
        worker: Callable[[int], int],
        processes: int,
        policy: RestartPolicy,
        on_exit: Callable[[int], None] | None = None,
    ) -> None:
        self.on_exit = on_exit
        self.worker = worker
        self.processes = processes
        self.policy = policy
        self.children: dict[int, int] = {}  # pid -> slot
        self.deaths: deque[float] = deque()
        self.restart_at: list[tuple[float, int]] = []  # (monotonic time, slot) of replacements
        self.stopping = False
        self.worst = 0

    def run(self) -> int:
        previous = {sig: signal.signal(sig, self._forward) for sig in _FORWARDED}
        try:
            for slot in range(self.processes):
                self._start(slot)
            log.info("%d verifier processes started: %s", len(self.children), sorted(self.children))
            return self._loop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _loop(self) -> int:
        while self.children or (self.restart_at and not self.stopping):
            self._reap()
            if self.stopping:
                self.restart_at.clear()
            elif len(self.deaths) >= self.policy.max_deaths:
                return self._give_up()
            now = time.monotonic()
            due = [entry for entry in self.restart_at if entry[0] <= now]
            for entry in due:
                self.restart_at.remove(entry)
                pid = self._start(entry[1])
                log.warning("started worker %d to replace a dead one", pid)
            time.sleep(POLL_SECONDS)
        return self.worst

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            if pid not in self.children:
                continue
            slot = self.children.pop(pid)
            if self.on_exit is not None:
                self.on_exit(pid)
            code = os.waitstatus_to_exitcode(status)
            if self.stopping:  # the exit code of a stop is the worst of the workers' own
                self.worst = max(self.worst, (code & 0xFF) if code >= 0 else 128 - code)
            else:
                self._death(pid, code, slot)

    def _death(self, pid: int, code: int, slot: int) -> None:
        now = time.monotonic()
        self.deaths.append(now)
        while self.deaths and now - self.deaths[0] > self.policy.window:
            self.deaths.popleft()
        how = f"exit code {code}" if code >= 0 else f"signal {signal.Signals(-code).name}"
        if len(self.deaths) >= self.policy.max_deaths:
            log.error(
                "worker %d died (%s): %d deaths in %.0f s",
                pid,
                how,
                len(self.deaths),
                self.policy.window,
            )
            return
        delay = self.policy.delay(len(self.deaths))
        log.warning("worker %d died (%s); restarting it in %.1f s", pid, how, delay)
        self.restart_at.append((now + delay, slot))

    def _give_up(self) -> int:
        log.error("workers keep dying: stopping the verifier")
        self.stopping = True
        self._signal_all(signal.SIGTERM)
        while self.children:
            self._reap()
            time.sleep(POLL_SECONDS)
        return 1

    def _start(self, slot: int) -> int:
        pid = os.fork()
        if pid == 0:  # the worker: default signal handling until it installs its own
            code = 1
            try:
                for sig in _FORWARDED:
                    signal.signal(sig, signal.SIG_DFL)
                code = self.worker(slot)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except BaseException:
                log.exception("worker %d failed", os.getpid())
            finally:
                os._exit(code)
        self.children[pid] = slot
        return pid

    def _forward(self, signum: int, frame: FrameType | None) -> None:
        if signum != signal.SIGHUP:
            self.stopping = True
        self._signal_all(signum)

    def _signal_all(self, signum: int) -> None:
        for child in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)


# ------------------------------------------------------------------ the port


def check_port_exclusive(listen: str) -> str | None:
    """``None`` when no other socket holds ``listen`` ("host:port"), else a one-line error."""
    host_text, _, port_text = listen.rpartition(":")
    host = host_text.strip("[]") or None
    try:
        port = int(port_text)
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (ValueError, OSError) as exc:
        return f"cannot resolve --listen {listen}: {exc}"
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return (
                        f"port {port} on {address[0]} is already in use by another process"
                        " (a verifier left running?): refusing to share it"
                    )
                continue  # e.g. no IPv6 here: the server will report what it cannot bind
    return None
