"""The standard gRPC health service (grpc.health.v1), driven by a periodic check.

Invariants:
- the overall service ``""`` and each of ``SERVICES`` are NOT_SERVING until a check has
  passed, NOT_SERVING while the check raises (the store unreachable, no valid golden set),
  and SERVING again after the next check that passes: no operator action flips it back;
- a check that raises anything is a failed check (fail closed), logged once per transition;
- ``stop`` (graceful shutdown) sets everything NOT_SERVING for good, so load balancers
  drain the process before it exits.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

log = logging.getLogger(__name__)

SERVICES = ("fleetattest.v1.Agent", "fleetattest.v1.RelyingParty", "fleetattest.v1.Operator")
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

Check = Callable[[], None]  # returns when healthy, raises (anything) when not


def all_of(*checks: Check) -> Check:
    """One check that passes when every one passes, in order (the first failure raises)."""

    def check() -> None:
        for one in checks:
            one()

    return check


class HealthMonitor:
    """Runs ``check`` every ``period`` seconds and publishes the result per service."""

    def __init__(self, check: Check, period: float, services: Iterable[str] = SERVICES) -> None:
        if period <= 0:
            raise ValueError("the health check period must be positive")
        self._check = check
        self._period = period
        self._services = ("", *services)
        self.servicer = health.HealthServicer()
        self._healthy: bool | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._publish(False)
        self._healthy = None  # not checked yet: the first result is logged either way

    def add_to_server(self, server: grpc.Server) -> None:
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, server)

    @property
    def healthy(self) -> bool:
        return bool(self._healthy)

    def check_now(self) -> bool:
        """Run the check once and publish the result; True when healthy."""
        if self._stop.is_set():
            return False
        try:
            self._check()
        except Exception as exc:  # any failure of the check means not serving
            if self._healthy is not False:
                log.warning("health check failed, NOT_SERVING: %s: %s", type(exc).__name__, exc)
            self._set(False)
            return False
        if self._healthy is not True:
            log.info("health check passed, SERVING")
        self._set(True)
        return True

    def start(self) -> None:
        """Check now, then every ``period`` seconds in a daemon thread."""
        if self._thread is not None:
            raise RuntimeError("the health monitor is already running")
        self.check_now()

        def loop() -> None:
            while not self._stop.wait(self._period):
                self.check_now()

        self._thread = threading.Thread(target=loop, name="health", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """NOT_SERVING from now on (graceful shutdown); ends the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.servicer.enter_graceful_shutdown()

    def _set(self, healthy: bool) -> None:
        if healthy != self._healthy:
            self._publish(healthy)

    def _publish(self, healthy: bool) -> None:
        self._healthy = healthy
        status = SERVING if healthy else NOT_SERVING
        for service in self._services:
            self.servicer.set(service, status)
