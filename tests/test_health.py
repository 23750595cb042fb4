"""The gRPC health service: NOT_SERVING while the verifier cannot judge, back by itself."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from verifier import errors
from verifier.service.health import SERVICES, HealthMonitor, all_of

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Fleet:
    """The two things health depends on, switchable by the test."""

    def __init__(self) -> None:
        self.store_up = True
        self.golden_valid = True

    def store(self) -> None:
        if not self.store_up:
            raise errors.StoreUnavailable("connection refused")

    def golden(self) -> None:
        if not self.golden_valid:
            raise RuntimeError("no valid golden set loaded")


@pytest.fixture
def fleet() -> Fleet:
    return Fleet()


@pytest.fixture
def served(fleet: Fleet) -> Iterator[tuple[HealthMonitor, health_pb2_grpc.HealthStub]]:
    monitor = HealthMonitor(all_of(fleet.store, fleet.golden), period=3600.0)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    monitor.add_to_server(server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield monitor, health_pb2_grpc.HealthStub(channel)
    finally:
        channel.close()
        monitor.stop()
        server.stop(grace=None).wait()


def status(stub: health_pb2_grpc.HealthStub, service: str) -> int:
    request = health_pb2.HealthCheckRequest(service=service)
    return int(stub.Check(request, timeout=30).status)


def test_nothing_is_serving_before_the_first_check(
    served: tuple[HealthMonitor, health_pb2_grpc.HealthStub],
) -> None:
    _, stub = served
    for service in ("", *SERVICES):
        assert status(stub, service) == NOT_SERVING


def test_every_service_serves_when_store_and_golden_are_fine(
    served: tuple[HealthMonitor, health_pb2_grpc.HealthStub],
) -> None:
    monitor, stub = served
    assert monitor.check_now()
    for service in ("", *SERVICES):
        assert status(stub, service) == SERVING


def test_unreachable_store_is_not_serving_and_recovers_by_itself(
    fleet: Fleet, served: tuple[HealthMonitor, health_pb2_grpc.HealthStub]
) -> None:
    monitor, stub = served
    monitor.check_now()
    fleet.store_up = False
    assert not monitor.check_now()
    assert status(stub, "") == NOT_SERVING
    assert status(stub, "fleetattest.v1.Agent") == NOT_SERVING
    fleet.store_up = True
    assert monitor.check_now()
    assert status(stub, "fleetattest.v1.Agent") == SERVING


def test_no_valid_golden_set_is_not_serving(
    fleet: Fleet, served: tuple[HealthMonitor, health_pb2_grpc.HealthStub]
) -> None:
    monitor, stub = served
    fleet.golden_valid = False
    monitor.check_now()
    assert status(stub, "fleetattest.v1.RelyingParty") == NOT_SERVING


def test_an_unknown_service_is_not_found(
    served: tuple[HealthMonitor, health_pb2_grpc.HealthStub],
) -> None:
    _, stub = served
    with pytest.raises(grpc.RpcError) as info:
        status(stub, "fleetattest.v1.Nope")
    assert info.value.code() is grpc.StatusCode.NOT_FOUND


def test_the_periodic_thread_flips_status_both_ways(fleet: Fleet) -> None:
    flipped = threading.Event()
    calls = 0

    def check() -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            fleet.store_up = False
        if calls == 5:
            fleet.store_up = True
            flipped.set()
        fleet.store()

    monitor = HealthMonitor(check, period=0.01)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    monitor.add_to_server(server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        watch = stub.Watch(health_pb2.HealthCheckRequest(service="fleetattest.v1.Agent"))
        seen = [next(watch).status]  # the watcher is registered: NOT_SERVING, unchecked
        monitor.start()
        for response in watch:  # Watch sends every change: no sleeping, no timing
            seen.append(response.status)
            if len(seen) == 4:
                break
        watch.cancel()
        assert flipped.wait(30)
        assert seen == [NOT_SERVING, SERVING, NOT_SERVING, SERVING]
    finally:
        channel.close()
        monitor.stop()
        server.stop(grace=None).wait()


def test_shutdown_is_not_serving_even_when_healthy(
    served: tuple[HealthMonitor, health_pb2_grpc.HealthStub],
) -> None:
    monitor, stub = served
    monitor.check_now()
    monitor.stop()
    assert not monitor.check_now()
    assert status(stub, "") == NOT_SERVING


def test_a_check_that_raises_anything_fails_closed() -> None:
    def broken() -> None:
        raise KeyError("surprise")

    monitor = HealthMonitor(broken, period=1.0)
    assert not monitor.check_now()
    assert not monitor.healthy
