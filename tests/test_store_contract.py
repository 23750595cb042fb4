"""The store contract (``verifier.store.base``), run against every backend in ``BACKENDS``.

Adding a backend: add its name to ``BACKENDS`` and a branch to ``backend`` that returns an
opener; every test in the first part then runs against it. PostgreSQL runs on a throwaway
server (``pgcluster``) and is skipped where PostgreSQL or psycopg is not installed. Tests at
the end are specific to the SQLite file (damaged file, damaged rows, log purge).
"""

from __future__ import annotations

import itertools
import sqlite3
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from pgcluster import fresh_schema_url, pg_cluster  # noqa: F401 (the fixture)

from verifier.currency import Revocations
from verifier.errors import LimitExceeded, StoreUnavailable, UnknownDevice
from verifier.limits import DEFAULT_LIMITS, Limits
from verifier.records import RevocationKind, RevocationRecord
from verifier.store import open_store
from verifier.store.base import (
    DeviceRecord,
    EnrollmentChallenge,
    GoldenSetRecord,
    ImaStateRecord,
    IssuedNonce,
    LatestVerdictCounts,
    Store,
    StoredEvidence,
)
from verifier.store.schema import SCHEMA_VERSION
from verifier.verdict import BootEpoch, Reason, Status, Verdict

BACKENDS = ["sqlite", "postgresql"]
NOW = 1_800_000_000.0


@dataclass
class Backend:
    name: str
    open: Callable[[Limits], Store]
    set_schema_version: Callable[[int], None]  # as a newer verifier would have left it


def _sqlite_backend(path: Path) -> Backend:
    def set_version(version: int) -> None:
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE schema_version SET version = ? WHERE id = 1", (version,))
        conn.close()

    return Backend("sqlite", lambda limits: open_store(path, limits), set_version)


def _postgres_backend(url: str) -> Backend:
    import psycopg  # type: ignore[import-not-found, unused-ignore]  # noqa: PLC0415

    def set_version(version: int) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("UPDATE schema_version SET version = %s WHERE id = 1", (version,))

    return Backend("postgresql", lambda limits: open_store(url, limits), set_version)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return _sqlite_backend(tmp_path / "store.db")
    if request.param == "postgresql":
        return _postgres_backend(fresh_schema_url(request.getfixturevalue("pg_cluster")))
    raise AssertionError(f"unknown backend {request.param}")


@pytest.fixture
def store(backend: Backend) -> Iterator[Store]:
    opened = backend.open(DEFAULT_LIMITS)
    yield opened
    opened.close()


# ------------------------------------------------------------------ builders


def device(device_id: str = "dev-a", **changes: object) -> DeviceRecord:
    base = DeviceRecord(
        device_id=device_id,
        ek_public=b"\x00\x01ek-public-" + device_id.encode(),
        ek_certificate=b"0\x82cert",
        ek_not_after=NOW + 86400 * 365,
        ak_public=b"\x00\x01ak-public",
        ak_name=b"\x00\x0b" + b"\xaa" * 32,
        labels={"model": "m1", "hostname": device_id},
        enrollment_count=1,
        enrolled_at=NOW,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def challenge(challenge_id: str = "c1", expires_at: float = NOW + 120) -> EnrollmentChallenge:
    return EnrollmentChallenge(
        challenge_id=challenge_id,
        device_id="dev-a",
        ek_public=b"ek",
        ek_certificate=b"",
        ek_not_after=None,
        ak_public=b"ak",
        ak_name=b"\x00\x0b" + b"\x01" * 32,
        labels={"model": "m1"},
        secret=b"s" * 32,
        expires_at=expires_at,
    )


def nonce(value: bytes = b"n" * 32, device_id: str = "dev-a", ttl: float = 60) -> IssuedNonce:
    return IssuedNonce(value, device_id, "sha256", (0, 2, 4, 7), "profile-x", NOW + ttl)


def verdict(device_id: str = "dev-a", **changes: object) -> Verdict:
    base = Verdict(
        device_id=device_id,
        status=Status.WARNING,
        reasons=(
            Reason(
                "pcr.mismatch",
                "PCR 7 differs",
                Status.CONTRAINDICATED,
                7,
                "aa",
                "bb",
                "r1",
                "secureboot",
                12,
            ),
            Reason("release.expiring", "release r1 expires soon", Status.WARNING),
        ),
        profile="profile-x",
        release="r1",
        golden_digest="d" * 64,
        boot_epoch=BootEpoch(5, 1),
        issued_at=NOW,
        expires_at=NOW + 3600,
        firmware_version=0x0002_0003_0000_0004,
        clock=123_456_789,
        safe=True,
        extra={"agent": "1.0"},
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def evidence(
    device_id: str = "dev-a", received_at: float = NOW, log: bytes = b"L" * 100
) -> StoredEvidence:
    return StoredEvidence(
        device_id, received_at, "sha256", {0: b"\x11" * 32, 7: b"\x77" * 32}, log, {"m": "1"}
    )


# ------------------------------------------------------------------ devices and enrollment


def test_device_round_trips(store: Store) -> None:
    record = device(pending_ak_public=b"pending", pending_ak_name=b"\x00\x0bpn")
    store.insert_device(record)
    store.insert_device(device("dev-b", ek_not_after=None, ek_certificate=b""))
    assert store.get_device("dev-a") == record
    assert [d.device_id for d in store.list_devices()] == ["dev-a", "dev-b"]
    assert store.get_device("dev-b") == device("dev-b", ek_not_after=None, ek_certificate=b"")


def test_unknown_device_is_none(store: Store) -> None:
    assert store.get_device("nobody") is None
    assert store.list_devices() == []


def test_second_insert_of_same_device_is_refused_and_keeps_the_first(store: Store) -> None:
    store.insert_device(device())
    with pytest.raises(StoreUnavailable, match="insert device"):
        store.insert_device(device(ak_name=b"attacker-ak"))
    assert store.get_device("dev-a") == device()


def test_bump_enrollment_counts_and_updates_labels(store: Store) -> None:
    store.insert_device(device())
    assert store.bump_enrollment("dev-a", {"model": "m2"}) == 2
    assert store.bump_enrollment("dev-a", {"model": "m3"}) == 3
    stored = store.get_device("dev-a")
    assert stored is not None
    assert stored.enrollment_count == 3
    assert stored.labels == {"model": "m3"}
    assert stored.ak_name == device().ak_name


def test_bump_enrollment_of_unknown_device_is_refused(store: Store) -> None:
    with pytest.raises(UnknownDevice):
        store.bump_enrollment("nobody", {})


def test_pending_ak_is_approved_only_under_its_own_name(store: Store) -> None:
    store.insert_device(device())
    store.set_pending_ak("dev-a", b"new-ak-public", b"\x00\x0bnew-name")
    assert not store.approve_pending_ak("dev-a", b"\x00\x0bother-name", NOW)
    unchanged = store.get_device("dev-a")
    assert unchanged is not None
    assert unchanged.ak_name == device().ak_name
    assert unchanged.pending_ak_name == b"\x00\x0bnew-name"

    assert store.approve_pending_ak("dev-a", b"\x00\x0bnew-name", NOW + 60)
    approved = store.get_device("dev-a")
    assert approved is not None
    assert (approved.ak_public, approved.ak_name) == (b"new-ak-public", b"\x00\x0bnew-name")
    assert approved.enrolled_at == NOW + 60  # the new AK is trusted from its approval on
    assert (approved.pending_ak_public, approved.pending_ak_name) == (b"", b"")
    assert not store.approve_pending_ak("dev-a", b"\x00\x0bnew-name", NOW)  # used once


def test_approving_an_empty_name_without_pending_ak_does_not_blank_the_trusted_ak(
    store: Store,
) -> None:
    store.insert_device(device())
    assert not store.approve_pending_ak("dev-a", b"", NOW)
    assert store.get_device("dev-a") == device()
    assert not store.approve_pending_ak("nobody", b"\x00\x0bnew-name", NOW)


def test_pending_ak_for_unknown_device_is_refused(store: Store) -> None:
    with pytest.raises(UnknownDevice):
        store.set_pending_ak("nobody", b"ak", b"name")


def test_enrollment_challenge_is_taken_exactly_once(store: Store) -> None:
    store.put_enrollment_challenge(challenge())
    assert store.take_enrollment_challenge("c1", NOW) == challenge()
    assert store.take_enrollment_challenge("c1", NOW) is None
    assert store.take_enrollment_challenge("never-issued", NOW) is None


@pytest.mark.parametrize("now", [NOW + 120, NOW + 121])
def test_expired_enrollment_challenge_is_never_returned(store: Store, now: float) -> None:
    store.put_enrollment_challenge(challenge(expires_at=NOW + 120))
    assert store.take_enrollment_challenge("c1", now) is None
    assert store.take_enrollment_challenge("c1", now + 3600) is None


# ------------------------------------------------------------------ nonces


def test_nonce_is_consumed_exactly_once(store: Store) -> None:
    store.insert_device(device())
    store.add_nonce(nonce())
    assert store.consume_nonce("dev-a", b"n" * 32, NOW) == nonce()
    assert store.consume_nonce("dev-a", b"n" * 32, NOW) is None


def test_nonce_issued_to_another_device_is_not_consumable(store: Store) -> None:
    store.insert_device(device("dev-a"))
    store.insert_device(device("dev-b"))
    store.add_nonce(nonce(device_id="dev-a"))
    assert store.consume_nonce("dev-b", b"n" * 32, NOW) is None
    # the attempt did not burn it: its owner can still use it
    assert store.consume_nonce("dev-a", b"n" * 32, NOW) == nonce(device_id="dev-a")


@pytest.mark.parametrize("now", [NOW + 60, NOW + 61, NOW + 86400])
def test_expired_nonce_is_not_consumable(store: Store, now: float) -> None:
    store.insert_device(device())
    store.add_nonce(nonce(ttl=60))
    assert store.consume_nonce("dev-a", b"n" * 32, now) is None


def test_nonce_with_a_changed_byte_is_not_consumable(store: Store) -> None:
    store.insert_device(device())
    store.add_nonce(nonce(b"n" * 32))
    assert store.consume_nonce("dev-a", b"n" * 31 + b"m", NOW) is None
    assert store.consume_nonce("dev-a", b"n" * 31, NOW) is None
    assert store.consume_nonce("dev-a", b"", NOW) is None


def test_nonce_for_unknown_device_is_refused(store: Store) -> None:
    with pytest.raises(UnknownDevice):
        store.add_nonce(nonce(device_id="nobody"))


def test_nonce_with_empty_selection_round_trips(store: Store) -> None:
    store.insert_device(device())
    issued = replace(nonce(), pcrs=())
    store.add_nonce(issued)
    assert store.consume_nonce("dev-a", issued.nonce, NOW) == issued


def test_purge_removes_only_expired_nonces_and_challenges(store: Store) -> None:
    store.insert_device(device())
    store.add_nonce(nonce(b"old" * 11, ttl=10))
    store.add_nonce(nonce(b"new" * 11, ttl=100))
    store.put_enrollment_challenge(challenge("old", NOW + 10))
    store.put_enrollment_challenge(challenge("new", NOW + 100))
    assert store.purge_expired(NOW + 50) == 2
    assert store.purge_expired(NOW + 50) == 0
    assert store.consume_nonce("dev-a", b"new" * 11, NOW) is not None
    assert store.take_enrollment_challenge("new", NOW) is not None
    assert store.consume_nonce("dev-a", b"old" * 11, NOW) is None
    assert store.take_enrollment_challenge("old", NOW) is None


# ------------------------------------------------------------------ verdicts


def test_verdict_round_trips_every_field(store: Store) -> None:
    store.insert_device(device())
    original = verdict(firmware_version=(1 << 64) - 1, clock=1 << 63, safe=False)
    stored = store.add_verdict(original)
    assert stored.sequence > 0
    assert len(stored.verdict_id) >= 16
    assert replace(stored, verdict_id="", sequence=0) == original
    latest = store.latest_verdict("dev-a")
    assert latest == stored
    assert latest is not None
    assert latest.extra == {"agent": "1.0"}  # extra is not part of __eq__
    assert latest.reasons == original.reasons


def test_verdict_sequence_is_strictly_increasing(store: Store) -> None:
    store.insert_device(device("dev-a"))
    store.insert_device(device("dev-b"))
    stored = [store.add_verdict(verdict("dev-a" if i % 2 else "dev-b")) for i in range(20)]
    sequences = [v.sequence for v in stored]
    assert all(a < b for a, b in itertools.pairwise(sequences))
    assert len({v.verdict_id for v in stored}) == 20


def test_latest_verdict_is_the_highest_sequence_not_the_latest_issued_at(store: Store) -> None:
    store.insert_device(device())
    store.add_verdict(verdict(issued_at=NOW + 100, release="first"))
    second = store.add_verdict(verdict(issued_at=NOW, release="second"))
    assert store.latest_verdict("dev-a") == second
    assert store.latest_verdict("nobody") is None


def test_verdict_history_is_newest_first_and_limited(store: Store) -> None:
    store.insert_device(device("dev-a"))
    store.insert_device(device("dev-b"))
    mine = [store.add_verdict(verdict(release=f"r{i}")) for i in range(5)]
    store.add_verdict(verdict("dev-b"))
    assert list(store.verdict_history("dev-a")) == mine[::-1]
    assert list(store.verdict_history("dev-a", limit=2)) == mine[:2:-1][:2]
    assert list(store.verdict_history("dev-a", limit=0)) == []
    assert list(store.verdict_history("dev-a", limit=-1)) == []


def test_verdicts_after_follows_the_sequence_with_filters(store: Store) -> None:
    for name in ("dev-a", "dev-b", "dev-c"):
        store.insert_device(device(name))
    stored = [
        store.add_verdict(verdict(name, profile=profile))
        for name, profile in [
            ("dev-a", "p1"), ("dev-b", "p2"), ("dev-c", "p1"), ("dev-a", "p2"), ("dev-b", "p1"),
        ]
    ]  # fmt: skip
    assert list(store.verdicts_after(0)) == stored
    assert list(store.verdicts_after(stored[1].sequence)) == stored[2:]
    assert list(store.verdicts_after(0, limit=2)) == stored[:2]
    assert list(store.verdicts_after(0, limit=0)) == []
    assert list(store.verdicts_after(0, device_ids=["dev-a"])) == [stored[0], stored[3]]
    assert list(store.verdicts_after(0, device_ids=["dev-a", "dev-c"])) == [
        stored[0], stored[2], stored[3],
    ]  # fmt: skip
    assert list(store.verdicts_after(0, profile="p1")) == [stored[0], stored[2], stored[4]]
    assert list(store.verdicts_after(0, device_ids=["dev-b"], profile="p1")) == [stored[4]]
    assert list(store.verdicts_after(stored[-1].sequence)) == []
    assert list(store.verdicts_after(0, device_ids=["x' OR 1=1 --"])) == []


def test_verdict_for_unknown_device_is_refused_and_not_stored(store: Store) -> None:
    with pytest.raises(UnknownDevice):
        store.add_verdict(verdict("nobody"))
    assert list(store.verdicts_after(0)) == []


def test_verdict_with_counter_out_of_u64_range_is_refused(store: Store) -> None:
    store.insert_device(device())
    with pytest.raises(StoreUnavailable):
        store.add_verdict(verdict(firmware_version=1 << 64))
    with pytest.raises(StoreUnavailable):
        store.add_verdict(verdict(clock=-1))
    assert store.latest_verdict("dev-a") is None


# ------------------------------------------------------------------ evidence and golden sets


def test_evidence_keeps_only_the_latest_per_device(store: Store) -> None:
    store.insert_device(device("dev-a"))
    store.insert_device(device("dev-b"))
    store.put_evidence(evidence("dev-a", NOW, b"first"))
    store.put_evidence(evidence("dev-a", NOW + 10, b"second"))
    store.put_evidence(evidence("dev-b", NOW, b"other"))
    assert store.latest_evidence("dev-a") == evidence("dev-a", NOW + 10, b"second")
    assert store.latest_evidence("nobody") is None
    assert list(store.all_latest_evidence()) == [
        evidence("dev-a", NOW + 10, b"second"),
        evidence("dev-b", NOW, b"other"),
    ]


def test_late_arriving_older_evidence_does_not_replace_newer(store: Store) -> None:
    store.insert_device(device())
    store.put_evidence(evidence("dev-a", NOW + 10, b"newer"))
    store.put_evidence(evidence("dev-a", NOW, b"older"))
    assert store.latest_evidence("dev-a") == evidence("dev-a", NOW + 10, b"newer")


def test_evidence_with_shared_logs_survives_replacement_and_purge(store: Store) -> None:
    store.insert_device(device("dev-a"))
    store.insert_device(device("dev-b"))
    store.put_evidence(evidence("dev-a", NOW, b"same boot"))
    store.put_evidence(evidence("dev-b", NOW, b"same boot"))
    store.put_evidence(evidence("dev-a", NOW + 1, b"new boot"))
    store.purge_expired(NOW)
    assert store.latest_evidence("dev-a") == evidence("dev-a", NOW + 1, b"new boot")
    assert store.latest_evidence("dev-b") == evidence("dev-b", NOW, b"same boot")
    store.put_evidence(evidence("dev-b", NOW + 1, b"new boot"))
    store.purge_expired(NOW)
    assert list(store.all_latest_evidence()) == [
        evidence("dev-a", NOW + 1, b"new boot"),
        evidence("dev-b", NOW + 1, b"new boot"),
    ]


def test_a_verdict_and_the_latest_evidence_are_written_together(store: Store) -> None:
    store.insert_device(device("dev-a"))
    stored = store.add_verdict(verdict(), None, evidence("dev-a", NOW, b"with the verdict"))
    assert store.latest_verdict("dev-a") == stored
    assert store.latest_evidence("dev-a") == evidence("dev-a", NOW, b"with the verdict")


def test_a_verdict_with_oversized_latest_evidence_stores_neither(backend: Backend) -> None:
    small = backend.open(Limits(max_stored_evidence_bytes=1000))
    try:
        small.insert_device(device("dev-a"))
        with pytest.raises(LimitExceeded, match="1000"):
            small.add_verdict(verdict(), None, evidence("dev-a", NOW, b"x" * 1000))
        assert small.latest_verdict("dev-a") is None
        assert small.latest_evidence("dev-a") is None
    finally:
        small.close()


def test_evidence_over_the_size_limit_stores_nothing(backend: Backend) -> None:
    small = backend.open(Limits(max_stored_evidence_bytes=1000))
    try:
        small.insert_device(device("dev-a"))
        small.insert_device(device("dev-b"))
        small.put_evidence(evidence("dev-a", NOW, b"kept"))
        with pytest.raises(LimitExceeded, match="1000"):
            small.put_evidence(evidence("dev-a", NOW + 1, b"x" * 1000))
        with pytest.raises(LimitExceeded):
            small.put_evidence(evidence("dev-b", NOW + 1, b"x" * 5000))
        assert small.latest_evidence("dev-a") == evidence("dev-a", NOW, b"kept")
        assert small.latest_evidence("dev-b") is None
    finally:
        small.close()


def test_evidence_for_unknown_device_is_refused(store: Store) -> None:
    with pytest.raises(UnknownDevice):
        store.put_evidence(evidence("nobody"))


def test_golden_set_history_round_trips(store: Store) -> None:
    first = GoldenSetRecord("a" * 64, NOW, {"laptop.yaml": "1" * 64, "server.yaml": "2" * 64})
    store.record_golden_set(first)
    store.record_golden_set(GoldenSetRecord("b" * 64, NOW + 1, {"laptop.yaml": "3" * 64}))
    assert store.golden_set("a" * 64) == first
    assert store.golden_set("c" * 64) is None
    again = replace(first, loaded_at=NOW + 2)
    store.record_golden_set(again)  # the same set loaded again (a restart) is history too
    assert store.golden_set("a" * 64) == again


# ------------------------------------------------------------------ health and coverage


def _groups(counts: LatestVerdictCounts) -> set[tuple[str, str, bool, int]]:
    return {(g.status.value, g.release, g.live, g.devices) for g in counts.groups}


def test_coverage_counts_only_each_devices_latest_verdict(store: Store) -> None:
    for name in ("dev-a", "dev-b", "dev-c", "dev-never"):
        store.insert_device(device(name))
    # dev-a: contraindicated, then affirming (the latest counts); dev-b: affirming, then a
    # later contraindicated one; dev-c: an expired affirming verdict; dev-never: none.
    store.add_verdict(verdict("dev-a", status=Status.CONTRAINDICATED))
    store.add_verdict(verdict("dev-a", status=Status.AFFIRMING))
    store.add_verdict(verdict("dev-b", status=Status.AFFIRMING))
    store.add_verdict(verdict("dev-b", status=Status.CONTRAINDICATED, release="r2"))
    store.add_verdict(verdict("dev-c", status=Status.AFFIRMING, expires_at=NOW + 10))
    counts = store.latest_verdict_counts(NOW + 60)
    assert counts.enrolled == 4
    assert _groups(counts) == {
        ("affirming", "r1", True, 1),
        ("contraindicated", "r2", True, 1),
        ("affirming", "r1", False, 1),
    }
    assert {g.profile for g in counts.groups} == {"profile-x"}


def test_coverage_of_an_empty_store_is_zero(store: Store) -> None:
    counts = store.latest_verdict_counts(NOW)
    assert (counts.enrolled, counts.groups) == (0, ())


def test_verdict_expiring_exactly_now_is_not_live(store: Store) -> None:
    store.insert_device(device())
    store.add_verdict(verdict(status=Status.AFFIRMING, expires_at=NOW + 5))
    assert _groups(store.latest_verdict_counts(NOW + 5)) == {("affirming", "r1", False, 1)}


def test_ping_of_an_open_store_passes_and_of_a_closed_one_raises(backend: Backend) -> None:
    opened = backend.open(DEFAULT_LIMITS)
    opened.ping()
    opened.close()
    with pytest.raises(StoreUnavailable):
        opened.ping()


# ------------------------------------------------------------------ lifecycle


def test_reopen_preserves_everything(backend: Backend) -> None:
    first = backend.open(DEFAULT_LIMITS)
    first.insert_device(device())
    first.add_nonce(nonce())
    first.put_enrollment_challenge(challenge())
    stored = first.add_verdict(verdict())
    first.put_evidence(evidence())
    first.record_golden_set(GoldenSetRecord("a" * 64, NOW, {"f.yaml": "0" * 64}))
    first.close()

    second = backend.open(DEFAULT_LIMITS)
    try:
        assert second.get_device("dev-a") == device()
        assert second.consume_nonce("dev-a", nonce().nonce, NOW) == nonce()
        assert second.take_enrollment_challenge("c1", NOW) == challenge()
        assert second.latest_verdict("dev-a") == stored
        assert second.latest_evidence("dev-a") == evidence()
        assert second.golden_set("a" * 64) is not None
        assert second.add_verdict(verdict()).sequence > stored.sequence
    finally:
        second.close()


def test_closed_store_raises_store_unavailable(backend: Backend) -> None:
    closed = backend.open(DEFAULT_LIMITS)
    closed.close()
    with pytest.raises(StoreUnavailable):
        closed.get_device("dev-a")
    with pytest.raises(StoreUnavailable):
        closed.consume_nonce("dev-a", b"n" * 32, NOW)


def test_store_with_newer_schema_is_refused_untouched(backend: Backend) -> None:
    backend.open(DEFAULT_LIMITS).close()
    backend.set_schema_version(SCHEMA_VERSION + 1)
    with pytest.raises(StoreUnavailable, match="newer than this verifier"):
        backend.open(DEFAULT_LIMITS)
    backend.set_schema_version(SCHEMA_VERSION)  # untouched: the old version opens again
    backend.open(DEFAULT_LIMITS).close()


def test_postgresql_without_psycopg_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg now raises ImportError
    with pytest.raises(StoreUnavailable, match="psycopg"):
        open_store("postgresql://verifier@db.example/attest")


def test_postgresql_url_mangled_into_a_path_is_refused() -> None:
    with pytest.raises(StoreUnavailable, match="as a string"):
        open_store(Path("postgresql://verifier@db.example/attest"))


def test_unreachable_postgresql_is_unavailable(tmp_path: Path) -> None:
    pytest.importorskip("psycopg")
    url = f"postgresql://verifier:s3cret@/attest?host={tmp_path}&port=1&connect_timeout=2"
    with pytest.raises(StoreUnavailable, match="cannot open") as raised:
        open_store(url)
    assert "s3cret" not in str(raised.value)


# ------------------------------------------------------------------ IMA incremental state


def ima_record(**changes: object) -> ImaStateRecord:
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
    store.put_ima_state(ima_record())
    assert store.ima_state("dev-a") == ima_record()


def test_a_new_boot_replaces_the_state_of_the_old_one(store: Store) -> None:
    store.insert_device(device())
    store.put_ima_state(ima_record())
    store.put_ima_state(ima_record(boot_id="4:0", entry_count=1, updated_at=NOW + 10))
    assert store.ima_state("dev-a") == ima_record(boot_id="4:0", entry_count=1, updated_at=NOW + 10)


def test_an_older_write_arriving_late_does_not_roll_the_state_back(store: Store) -> None:
    store.insert_device(device())
    store.put_ima_state(ima_record(entry_count=50, updated_at=NOW + 10))
    store.put_ima_state(ima_record(entry_count=20, updated_at=NOW))
    found = store.ima_state("dev-a")
    assert found is not None and found.entry_count == 50


def test_state_for_an_unknown_device_is_refused(store: Store) -> None:
    with pytest.raises(UnknownDevice):
        store.put_ima_state(ima_record(device_id="nobody"))


def test_states_are_per_device(store: Store) -> None:
    store.insert_device(device())
    store.insert_device(device("dev-b"))
    store.put_ima_state(ima_record())
    assert store.ima_state("dev-b") is None


# ------------------------------------------------------------------ the SQLite file


def test_sqlite_store_uses_wal_and_records_its_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    open_store(path).close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    finally:
        conn.close()


@pytest.mark.parametrize(
    "content",
    [b"this is not a database, just text\n" * 200, b"SQLite format 3\x00" + b"\xff" * 4080],
    ids=["text", "damaged-header"],
)
def test_sqlite_store_on_a_damaged_file_is_unavailable(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "v.db"
    path.write_bytes(content)
    with pytest.raises(StoreUnavailable, match="cannot open"):
        open_store(path)


def test_sqlite_store_in_a_missing_directory_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable, match="cannot open"):
        open_store(tmp_path / "missing" / "v.db")


@pytest.mark.parametrize(
    "column,value",
    [
        ("reasons", "not json"),
        ("reasons", '[{"code": "x", "text": "t", "severity": "trusted-by-omission"}]'),
        ("reasons", '[{"code": "x", "text": "t", "severity": "warning", "evil": 1}]'),
        ("extra", '["not", "an", "object"]'),
    ],
)
def test_damaged_verdict_row_is_refused_not_guessed(
    tmp_path: Path, column: str, value: str
) -> None:
    path = tmp_path / "v.db"
    opened = open_store(path)
    opened.insert_device(device())
    opened.add_verdict(verdict())
    with sqlite3.connect(path) as conn:
        conn.execute(f"UPDATE verdicts SET {column} = ?", (value,))
    conn.close()
    with pytest.raises(StoreUnavailable, match="damaged"):
        opened.latest_verdict("dev-a")
    opened.close()


def test_damaged_device_labels_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    opened = open_store(path)
    opened.insert_device(device())
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE devices SET labels = ?", ('{"model": 7}',))
    conn.close()
    with pytest.raises(StoreUnavailable, match="damaged"):
        opened.get_device("dev-a")
    opened.close()


def test_sqlite_purge_drops_only_unreferenced_event_logs(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    opened = open_store(path)
    for name in ("dev-a", "dev-b"):
        opened.insert_device(device(name))
        opened.put_evidence(evidence(name, NOW, b"shared log"))
    opened.put_evidence(evidence("dev-a", NOW + 1, b"first boot"))
    opened.put_evidence(evidence("dev-a", NOW + 2, b"second boot"))
    opened.put_evidence(evidence("dev-b", NOW - 1, b"late and older"))  # not kept
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT count(*) FROM evidence_logs").fetchone()[0] == 4
        assert opened.purge_expired(NOW) == 0  # logs are not expired records
        logs = {row[0] for row in conn.execute("SELECT event_log FROM evidence_logs")}
        assert logs == {b"shared log", b"second boot"}
    finally:
        conn.close()
        opened.close()


def test_sqlite_failed_evidence_write_leaves_no_half_written_log(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    opened = open_store(path)
    with pytest.raises(UnknownDevice):
        opened.put_evidence(evidence("nobody", NOW, b"log of a device that is not enrolled"))
    opened.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT count(*) FROM evidence_logs").fetchone()[0] == 0
    finally:
        conn.close()


# ------------------------------------------------------------------ the PostgreSQL server


def test_postgresql_connection_killed_by_the_server_fails_once_then_reconnects(
    request: pytest.FixtureRequest,
) -> None:
    import psycopg  # type: ignore[import-not-found, unused-ignore]  # noqa: PLC0415

    url = fresh_schema_url(request.getfixturevalue("pg_cluster")) + "&application_name=victim"
    opened = open_store(url)
    try:
        opened.insert_device(device())
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = 'victim' AND pid <> pg_backend_pid()"
            )
        with pytest.raises(StoreUnavailable, match="get device"):
            opened.get_device("dev-a")
        assert opened.get_device("dev-a") == device()
    finally:
        opened.close()


# ------------------------------------------------------------------ revocations of one device


def _revoke(store: Store, kind: RevocationKind, subject: str, device_id: str = "") -> None:
    store.add_revocation(RevocationRecord(kind, subject, "test", "operator", NOW, device_id))


def test_a_devices_revocations_are_found_among_the_fleets(store: Store) -> None:
    """Every kind that can concern a device is in its own snapshot; another device's, a lifted
    one's and an unrelated AK's are not, so a per-device read cannot miss a revocation."""
    fp = "ab" * 32
    device_id = "dev-" + fp
    for n in range(50):  # the rest of the fleet
        _revoke(store, RevocationKind.DEVICE, f"dev-{n:064x}", f"dev-{n:064x}")
    _revoke(store, RevocationKind.EK, fp, device_id)
    _revoke(store, RevocationKind.EK_CERTIFICATE, device_id, device_id)
    _revoke(store, RevocationKind.AK, "aa11", device_id)  # an earlier AK of this device
    _revoke(store, RevocationKind.AK, "cc33")  # the current AK, revoked by name only
    _revoke(store, RevocationKind.AK, "dd44", "dev-" + "cd" * 32)
    _revoke(store, RevocationKind.DEVICE, device_id, device_id)
    store.lift_revocation(RevocationKind.DEVICE, device_id, "operator", "back", NOW + 1)
    found = {(r.kind, r.subject) for r in store.revocations_of(device_id, "cc33")}
    assert found == {
        (RevocationKind.EK, fp),
        (RevocationKind.EK_CERTIFICATE, device_id),
        (RevocationKind.AK, "aa11"),
        (RevocationKind.AK, "cc33"),
    }
    _revoke(store, RevocationKind.DEVICE, device_id, device_id)  # decommissioned again
    again = Revocations.from_records(store.revocations_of(device_id, "cc33"))
    assert again.refusal(device_id, "cc33") is not None
    assert device_id in again.devices
