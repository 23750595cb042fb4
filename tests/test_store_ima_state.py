"""The store's IMA incremental state (``put_ima_state`` / ``ima_state``) on every backend."""

from __future__ import annotations

import pytest
from pgcluster import pg_cluster  # noqa: F401 (the fixture)
from test_store_contract import NOW, backend, device, store  # noqa: F401 (fixtures)

from verifier.errors import UnknownDevice
from verifier.records import ImaStateRecord
from verifier.store.base import Store


def record(**changes: object) -> ImaStateRecord:
    values: dict[str, object] = {
        "device_id": "dev-a",
        "boot_id": "3:0",
        "entry_count": 12,
        "state": '{"entry_count": 12}',
        "updated_at": NOW,
    }
    values.update(changes)
    return ImaStateRecord(**values)  # type: ignore[arg-type]


def test_a_device_without_state_has_none(store: Store) -> None:
    store.insert_device(device())
    assert store.ima_state("dev-a") is None


def test_the_state_is_kept_and_read_back(store: Store) -> None:
    store.insert_device(device())
    store.put_ima_state(record())
    assert store.ima_state("dev-a") == record()


def test_a_new_boot_replaces_the_state_of_the_old_one(store: Store) -> None:
    store.insert_device(device())
    store.put_ima_state(record())
    store.put_ima_state(record(boot_id="4:0", entry_count=1, updated_at=NOW + 10))
    assert store.ima_state("dev-a") == record(boot_id="4:0", entry_count=1, updated_at=NOW + 10)


def test_an_older_write_arriving_late_does_not_roll_the_state_back(store: Store) -> None:
    store.insert_device(device())
    store.put_ima_state(record(entry_count=50, updated_at=NOW + 10))
    store.put_ima_state(record(entry_count=20, updated_at=NOW))
    found = store.ima_state("dev-a")
    assert found is not None and found.entry_count == 50


def test_state_for_an_unknown_device_is_refused(store: Store) -> None:
    with pytest.raises(UnknownDevice):
        store.put_ima_state(record(device_id="nobody"))


def test_states_are_per_device(store: Store) -> None:
    store.insert_device(device())
    store.insert_device(device("dev-b"))
    store.put_ima_state(record())
    assert store.ima_state("dev-b") is None
