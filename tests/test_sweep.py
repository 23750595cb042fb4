"""The supersession sweep runs when something that can supersede changed, and only then.

A sweep reads every device's latest verdict: the fleet's size. ``Verifier.sweep`` skips it
while the supersession key (golden set, retired releases, CRLs, every replica's revocations and
device changes) is unchanged, and runs again a few times after a change, so that a verdict
admitted before a revocation and stored after it is still superseded. These tests try to slip
a verdict past the sweeper. In process, SQLite, software quotes; "another replica" is a
second store handle on the same database.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from simulator.firmware import boot
from simulator.fleet import DEVICE_LABELS
from simulator.profiles import GOOD_A
from simulator.softquote import QuoteFields, SoftAk
from verifier.app import SWEEPS_AFTER_CHANGE, Verifier, open_trust
from verifier.evidence import Evidence
from verifier.limits import DEFAULT_LIMITS
from verifier.livegolden import LiveGolden
from verifier.records import DeviceRecord, RevocationKind, RevocationRecord
from verifier.store import open_store
from verifier.store.base import Store
from verifier.token import KeyRing
from verifier.verdict import SUPERSEDED_AT, Freshness, Status

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Rig:
    verifier: Verifier
    replica: Store  # another verifier's handle on the same database
    ak: SoftAk
    log: bytes
    pcrs: dict[int, bytes]

    def attest(self, device_id: str) -> None:
        challenge = self.verifier.get_challenge(device_id)
        quoted = {i: self.pcrs.get(i, bytes(32)) for i in challenge.pcrs}
        attest, signature = self.ak.quote(QuoteFields(challenge.nonce, "sha256", quoted))
        evidence = Evidence.build(
            device_id=device_id,
            nonce=challenge.nonce,
            quote=attest,
            signature=signature,
            pcr_values=tuple(quoted.items()),
            event_log=self.log,
            limits=DEFAULT_LIMITS,
        )
        verdict, _ = self.verifier.attest(evidence, want_token=False)
        assert verdict.status is Status.AFFIRMING

    def revoke_elsewhere(self, device_id: str) -> None:
        self.replica.add_revocation(
            RevocationRecord(
                RevocationKind.DEVICE, device_id, "stolen", "operator", time.time(), device_id
            )
        )

    def settle(self) -> None:
        """Sweep until the pending sweeps after the last change are used up."""
        for _ in range(SWEEPS_AFTER_CHANGE + 1):
            self.verifier.sweep()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    store = open_store(tmp_path / "verifier.db")
    golden = LiveGolden.start(ROOT / "golden_measurements", store, time.time)
    trust, allowlist = open_trust(None, None)
    verifier = Verifier(store, trust, allowlist, golden, KeyRing.open(tmp_path / "keys", 0))
    ak = SoftAk.generate()
    for device_id in ("dev-a", "dev-b"):
        store.insert_device(
            DeviceRecord(
                device_id=device_id,
                ek_public=b"",
                ek_certificate=b"",
                ek_not_after=None,
                ak_public=ak.tpm2b_public,
                ak_name=ak.name,
                labels=dict(DEVICE_LABELS),
                enrollment_count=1,
                enrolled_at=time.time(),
                profile="sim-gateway",
            )
        )
    record = boot(GOOD_A, lambda pcr, digests: None)
    replica = open_store(tmp_path / "verifier.db")
    yield Rig(verifier, replica, ak, record.log, dict(record.expected_pcrs["sha256"]))
    replica.close()
    store.close()


def _count_reads(monkeypatch: pytest.MonkeyPatch, verifier: Verifier) -> list[int]:
    reads = [0]
    inner = verifier.store.latest_unsuperseded_verdicts

    def counted() -> object:
        reads[0] += 1
        return inner()

    monkeypatch.setattr(verifier.store, "latest_unsuperseded_verdicts", counted)
    return reads


def _state(rig: Rig, device_id: str) -> Freshness:
    return rig.verifier.latest_verdict(device_id)[1].state


def test_a_sweep_with_nothing_changed_reads_no_verdicts(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig.attest("dev-a")
    rig.settle()
    reads = _count_reads(monkeypatch, rig.verifier)
    rig.attest("dev-b")  # new verdicts alone supersede nothing
    for _ in range(5):
        assert rig.verifier.sweep() == 0
    assert reads == [0]
    assert rig.verifier.sweep(full=True) == 0  # forced: reads the fleet
    assert reads == [1]


def test_a_revocation_recorded_by_another_replica_is_swept_at_the_next_sweep(rig: Rig) -> None:
    rig.attest("dev-a")
    rig.settle()
    rig.revoke_elsewhere("dev-a")
    assert rig.verifier.sweep() == 1
    assert _state(rig, "dev-a") is Freshness.SUPERSEDED


def test_a_verdict_stored_just_after_a_revocation_is_still_superseded(rig: Rig) -> None:
    rig.attest("dev-a")
    rig.attest("dev-b")
    rig.settle()
    rig.revoke_elsewhere("dev-b")
    assert rig.verifier.sweep() == 1  # dev-b's verdict
    # A replica admitted dev-b before the revocation and stores its verdict only now.
    latest, _ = rig.verifier.latest_verdict("dev-b")
    extra = {k: v for k, v in latest.extra.items() if k != SUPERSEDED_AT}
    late = replace(latest, supersession="", verdict_id="", sequence=0, extra=extra)
    rig.replica.add_verdict(late)
    assert rig.verifier.sweep() == 1
    assert _state(rig, "dev-b") is Freshness.SUPERSEDED
    assert _state(rig, "dev-a") is Freshness.FRESH


def test_a_sweep_runs_at_least_every_full_sweep_interval(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig.attest("dev-a")
    rig.settle()
    reads = _count_reads(monkeypatch, rig.verifier)
    rig.verifier.sweep()
    assert reads == [0]
    clock = time.monotonic() + 301.0
    monkeypatch.setattr("verifier.app.time.monotonic", lambda: clock)
    rig.verifier.sweep()
    assert reads == [1]
