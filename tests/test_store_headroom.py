"""The SQLite store on a small disk (issue 18, finding 6): the WAL stays bounded, writes are
refused with a clear error before the disk is full, reads keep working, and the store comes
back by itself when space returns, without a restart. Everything runs on a real 5 MB tmpfs
(``smallfs``); nothing acknowledged is lost."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from smallfs import fill, free_bytes, small_volume

from verifier.errors import StoreUnavailable
from verifier.store import open_store
from verifier.store.base import DeviceRecord, IssuedNonce
from verifier.store.headroom import (
    JOURNAL_SIZE_LIMIT_BYTES,
    RECHECK_MARGIN_BYTES,
    RECHECK_SECONDS,
    DiskReserve,
    parse_size,
)
from verifier.store.maintenance import StoreMaintenance
from verifier.store.sqlite import SqliteStore
from verifier.verdict import BootEpoch, Status, Verdict

NOW = 1_800_000_000.0
MIB = 1 << 20


@pytest.fixture
def volume() -> Iterator[Path]:
    with small_volume("5m") as root:
        yield root


def device(device_id: str) -> DeviceRecord:
    return DeviceRecord(
        device_id=device_id,
        ek_public=b"ek",
        ek_certificate=b"",
        ek_not_after=None,
        ak_public=b"ak" * 40,
        ak_name=b"\x00\x0b" + b"n" * 32,
        labels={"site": "lab"},
        enrollment_count=1,
        enrolled_at=NOW,
    )


def verdict(device_id: str, n: int) -> Verdict:
    return Verdict(
        device_id=device_id,
        status=Status.AFFIRMING,
        reasons=(),
        profile="default",
        release="r1",
        golden_digest="g" * 64,
        boot_epoch=BootEpoch(1, 0),
        issued_at=NOW + n,
        expires_at=NOW + n + 3600,
        extra={"pad": "x" * 512},
    )


def nonce(device_id: str, n: int) -> IssuedNonce:
    return IssuedNonce(n.to_bytes(32, "big"), device_id, "sha256", (0, 7), "default", NOW + 60)


def stored_ids(db: Path) -> set[str]:
    conn = sqlite3.connect(db)
    try:
        return {row[0] for row in conn.execute("SELECT verdict_id FROM verdicts")}
    finally:
        conn.close()


def hold_snapshot(db: Path, pinned: threading.Event, release: threading.Event) -> None:
    """A reader inside one transaction: the WAL cannot be restarted behind it."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("BEGIN")
    conn.execute("SELECT count(*) FROM devices").fetchone()
    pinned.set()
    release.wait(30)
    conn.execute("COMMIT")
    conn.close()


def test_size_argument_is_parsed_in_powers_of_1024_and_nonsense_is_refused() -> None:
    assert parse_size("64M") == 64 * MIB and parse_size("512k") == 512 * 1024
    assert parse_size("0") == 0 and parse_size("1GiB") == 1 << 30
    for bad in ("-1M", "1.5M", "64X", "", "M"):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_writes_below_the_reserve_are_refused_with_a_clear_error_and_reads_keep_working(
    volume: Path,
) -> None:
    store = open_store(volume / "v.db", reserve_bytes=1 * MIB)
    try:
        store.insert_device(device("d1"))
        kept = store.add_verdict(verdict("d1", 0))
        filler = fill(volume, leave=512 * 1024)
        with pytest.raises(StoreUnavailable, match="disk nearly full") as refused:
            store.add_verdict(verdict("d1", 1))
        assert "free space and writes resume" in str(refused.value)
        with pytest.raises(StoreUnavailable, match="disk nearly full"):
            store.add_nonce(nonce("d1", 1))  # a challenge cannot be issued either
        latest = store.latest_verdict("d1")  # reads do not need room
        assert latest is not None and latest.verdict_id == kept.verdict_id
        filler.unlink()
        again = store.add_verdict(verdict("d1", 2))  # same store object: no restart
        assert again.sequence > kept.sequence
    finally:
        store.close()
    assert stored_ids(volume / "v.db") == {kept.verdict_id, again.verdict_id}


def test_a_disk_filled_under_sqlite_itself_recovers_when_space_returns(volume: Path) -> None:
    """Reserve off: SQLite meets ENOSPC. The failing connection is replaced, not kept."""
    store = open_store(volume / "v.db", reserve_bytes=0)
    acknowledged: list[str] = []
    try:
        store.insert_device(device("d1"))
        filler = fill(volume, leave=0)
        failures = 0
        for n in range(2000):  # until the WAL needs a page the disk does not have
            try:
                acknowledged.append(store.add_verdict(verdict("d1", n)).verdict_id)
            except StoreUnavailable as exc:
                assert "full" in str(exc) or "disk I/O" in str(exc), exc
                failures += 1
                if failures == 3:
                    break
        assert failures == 3, "the disk never filled"
        filler.unlink()
        recovered = store.add_verdict(verdict("d1", 5000))
        acknowledged.append(recovered.verdict_id)
        nonces = [nonce("d1", n) for n in range(20)]
        for issued in nonces:
            store.add_nonce(issued)
        assert store.consume_nonce("d1", nonces[0].nonce, NOW) is not None
        assert store.consume_nonce("d1", nonces[0].nonce, NOW) is None  # still single use
    finally:
        store.close()
    assert set(acknowledged) <= stored_ids(volume / "v.db")
    conn = sqlite3.connect(volume / "v.db")
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()


def test_the_wal_does_not_fill_a_small_disk_by_itself(volume: Path) -> None:
    """Many times the volume's size goes through the WAL (evidence rewritten in place, nonces
    issued and spent); a reader pinning old snapshots now and then starves the automatic
    checkpoint, which the serve loop's checkpoints make up for."""
    db = volume / "v.db"
    store = open_store(db, reserve_bytes=512 * 1024)
    assert isinstance(store, SqliteStore)
    maintenance = StoreMaintenance(store, passive_interval=1, truncate_interval=5)
    written = 0
    try:
        store.insert_device(device("d1"))
        for n in range(400):
            for k in range(40):
                store.add_nonce(nonce("d1", n * 100 + k))
                assert store.consume_nonce("d1", (n * 100 + k).to_bytes(32, "big"), NOW)
                written += 2 * 4096  # each commit appends at least a page to the WAL
            if n % 50 == 0:  # a slow reader holds a snapshot while writes go on
                pinned, release = threading.Event(), threading.Event()
                thread = threading.Thread(target=hold_snapshot, args=(db, pinned, release))
                thread.start()
                pinned.wait(30)
                for k in range(300):
                    store.add_nonce(nonce("d1", 10_000_000 + n * 1000 + k))
                release.set()
                thread.join()
                store.purge_expired(NOW + 120)
            maintenance.tick(float(n), NOW)
        wal = db.with_name(db.name + "-wal")
        assert written > 5 * 5 * MIB  # far more than the volume went through the WAL
        assert wal.stat().st_size <= JOURNAL_SIZE_LIMIT_BYTES + 1100 * 4096
        assert free_bytes(volume) > 512 * 1024
        busy, frames, _ = store.checkpoint("TRUNCATE")
        assert busy == 0 and frames == 0 and wal.stat().st_size == 0
    finally:
        store.close()


def test_maintenance_survives_a_store_that_is_down_and_logs_at_a_bounded_rate(
    volume: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = open_store(volume / "v.db", reserve_bytes=1 * MIB)
    maintenance = StoreMaintenance(store, purge_interval=1, log_interval=60)
    filler = fill(volume, leave=256 * 1024)
    try:
        with caplog.at_level("WARNING", logger="attest-verifier.store"):
            for second in range(1, 31):
                maintenance.tick(float(second), NOW)  # purges are refused: never raises
            errors = [r for r in caplog.records if r.levelname == "ERROR"]
            assert len(errors) == 1 and "disk nearly full" in errors[0].getMessage()
            filler.unlink()
            maintenance.tick(31.0, NOW)
            assert "works again" in caplog.records[-1].getMessage()
    finally:
        store.close()


class _Volume:
    """A file system whose free space the test sets, counting the measurements."""

    def __init__(self, free: int) -> None:
        self.free = free
        self.measured = 0

    def __call__(self) -> int:
        self.measured += 1
        return self.free


def test_a_disk_filling_near_the_reserve_is_measured_before_every_write(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    reserve = DiskReserve(tmp_path, 64 << 20)
    volume = _Volume((64 << 20) + RECHECK_MARGIN_BYTES - 1)  # within the margin
    monkeypatch.setattr(reserve, "free_bytes", volume)
    for _ in range(5):
        reserve.check("write")
    assert volume.measured == 5
    volume.free = (64 << 20) - 1
    with pytest.raises(StoreUnavailable, match="disk nearly full"):
        reserve.check("write")


def test_a_far_from_full_disk_is_measured_again_after_the_recheck_interval(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    clock = [1000.0]
    monkeypatch.setattr("verifier.store.headroom.time.monotonic", lambda: clock[0])
    reserve = DiskReserve(tmp_path, 64 << 20)
    volume = _Volume(64 << 30)
    monkeypatch.setattr(reserve, "free_bytes", volume)
    reserve.check("write")
    reserve.check("write")
    assert volume.measured == 1  # reused inside the interval
    volume.free = 1 << 20  # the disk filled up (by someone else) in the meantime
    clock[0] += RECHECK_SECONDS
    with pytest.raises(StoreUnavailable, match="disk nearly full"):
        reserve.check("write")
    with pytest.raises(StoreUnavailable):  # and stays measured on every write near it
        reserve.check("write")
    assert volume.measured == 3
