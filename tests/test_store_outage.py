"""The PostgreSQL store across a server restart (issue 18): a call during the outage fails with
StoreUnavailable, the first call after it on a dead connection fails once, and no other
thread then fails on its own dead connection: they are replaced before use."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest
from pgcluster import PgServer, pg_server

from verifier.errors import StoreUnavailable
from verifier.store import open_store
from verifier.store.base import Store


@pytest.fixture
def postgres() -> Iterator[PgServer]:
    with pg_server(durable=True) as server:
        yield server


class Worker:
    """A long-lived thread with its own connection, running calls on request (an RPC thread)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.calls: list[tuple[Callable[[], object], list[object], threading.Event]] = []
        self.wake = threading.Condition()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            with self.wake:
                while not self.calls:
                    self.wake.wait()
                call, out, done = self.calls.pop(0)
            try:
                out.append(call())
            except StoreUnavailable as exc:
                out.append(exc)
            done.set()

    def run(self, call: Callable[[], object]) -> object:
        out: list[object] = []
        done = threading.Event()
        with self.wake:
            self.calls.append((call, out, done))
            self.wake.notify()
        assert done.wait(60)
        return out[0]


def test_after_a_restart_one_call_fails_and_other_threads_dead_connections_are_replaced(
    postgres: PgServer,
) -> None:
    store = open_store(postgres.url)
    try:
        workers = [Worker(store) for _ in range(3)]
        for worker in workers:
            assert worker.run(store.list_devices) == []  # each thread has its connection
        postgres.stop("fast")
        down = workers[0].run(store.list_devices)
        assert isinstance(down, StoreUnavailable)
        postgres.start()
        assert workers[1].run(store.list_devices) == []  # its old connection was dropped first
        assert workers[2].run(store.list_devices) == []
        assert workers[0].run(store.list_devices) == []
    finally:
        store.close()
