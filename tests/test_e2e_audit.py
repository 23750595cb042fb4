"""The audit path through a real verifier and swtpm devices: every scenario's verdicts replay
to the same status and reasons byte for byte, and an auditor's commands answer from the store.

Replay re-runs the pure appraisal on the stored evidence, with the golden set of that time
(from the golden history's stored contents) and the same ``now``. A replay that did not read
what the verifier read (another golden set, another nonce selection, lost counters) changes
the reasons; so does a tampered body, which replay refuses before appraising.
"""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
from pgcluster import fresh_schema_url, pg_cluster  # noqa: F401 (the fixture)

from simulator.fleet import Fleet
from simulator.profiles import GOOD_A
from simulator.scenarios import SCENARIOS, Scenario
from verifier import auditlog
from verifier.audit import SignerKey
from verifier.cli import main
from verifier.store.base import Store

pytestmark = pytest.mark.swtpm
GOLDEN = Path(__file__).resolve().parent.parent / "golden_measurements"
KEY = SignerKey.generate("e2e.audit")


def _replay_all(store: Store) -> int:
    count = 0
    for attestation, verdict in store.attestations_after(0, 1000):
        result = auditlog.replay(store, attestation.verdict_id)
        assert result.reproduced, (attestation.verdict_id, result)
        assert verdict is not None and result.replayed.status is verdict.status
        assert result.replayed.reasons == verdict.reasons
        count += 1
    return count


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_replay_of_every_scenarios_verdicts_reproduces_them(
    scenario: Scenario, tmp_path: Path
) -> None:
    with Fleet(tmp_path) as fleet:
        verifier = fleet.start_verifier(GOLDEN)
        outcome = scenario.run(fleet, verifier.address)
        assert outcome.result == scenario.expected, outcome
        replayed = _replay_all(verifier.store)
        assert auditlog.write_checkpoint(verifier.store, KEY, verifier.clock()) is not None
        report = auditlog.verify_store(verifier.store, KEY.verifier())
    assert report.ok, report.problems
    if scenario.expected in ("refused",) and scenario.name == "unknown-ek-ca":
        assert replayed == 0  # nothing about an unenrolled device was recorded
    elif scenario.expected != "refused":
        assert replayed >= 1


def test_replay_on_postgresql_reproduces_the_verdicts(tmp_path: Path, pg_cluster: str) -> None:  # noqa: F811
    url = fresh_schema_url(pg_cluster)
    by_name = {s.name: s for s in SCENARIOS}
    with Fleet(tmp_path) as fleet:
        verifier = fleet.start_verifier(GOLDEN, db=url)  # type: ignore[arg-type]
        for name in ("firmware-upgrade", "tampered-bootloader", "unclean-power-loss"):
            assert by_name[name].run(fleet, verifier.address).result == by_name[name].expected
        assert _replay_all(verifier.store) == 5
        auditlog.write_checkpoint(verifier.store, KEY, verifier.clock())
        assert auditlog.verify_store(verifier.store, KEY.verifier()).ok


def test_auditor_commands_against_a_real_verifiers_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = tmp_path / "audit.key"
    assert main(["audit", "init-key", str(key_file), "--name", "e2e.audit"]) == 0
    assert key_file.stat().st_mode & 0o777 == 0o600
    vkey = capsys.readouterr().out.strip().splitlines()[-1]
    with Fleet(tmp_path / "fleet") as fleet:
        verifier = fleet.start_verifier(GOLDEN)
        device = fleet.add_device("auditee", GOOD_A)
        first = device.attest(verifier.address)
        device.lose_power()
        second = device.attest(verifier.address)
        db = str(verifier.workdir / "verifier.db")
        assert main(["audit", "checkpoint", "--db", db, "--audit-key", str(key_file)]) == 0
        capsys.readouterr()

        assert main(["audit", "verify", "--db", db, "--key", vkey]) == 0
        assert "OK" in capsys.readouterr().out

        at = f"{verifier.store.attestation(first.verdict_id).received_at + 0.0005:.6f}"  # type: ignore[union-attr]
        assert main(["audit", "show", device.device_id, "--at", at, "--db", db, "--json"]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert shown["attestation"]["verdict_id"] == first.verdict_id
        assert shown["verdict"]["status"] == "affirming"
        assert shown["golden_files"]

        assert main(["audit", "replay", second.verdict_id, "--db", db]) == 0
        assert "REPRODUCED" in capsys.readouterr().out

        assert main(["audit", "proof", "inclusion", second.verdict_id, "--db", db]) == 0
        proof = json.loads(capsys.readouterr().out)
        assert proof["tree_size"] >= 2

        export = tmp_path / "export.jsonl"
        assert main(["audit", "export", "--db", db]) == 0
        export.write_text(capsys.readouterr().out)
        assert main(["audit", "verify", "--export", str(export), "--key", vkey]) == 0
        capsys.readouterr()

        # an edited verdict row: verify fails with the position
        import sqlite3  # noqa: PLC0415

        with sqlite3.connect(db) as conn:
            conn.execute(
                "UPDATE verdicts SET status = 'affirming' WHERE verdict_id = ?",
                (second.verdict_id,),
            )
        conn.close()
        assert main(["audit", "verify", "--db", db, "--key", vkey]) == 1
        assert "record_changed" in capsys.readouterr().out


def test_proof_rpcs_prove_a_verdict_against_the_signed_checkpoint(tmp_path: Path) -> None:
    from fleetattest.v1 import fleetattest_pb2 as pb  # noqa: PLC0415
    from fleetattest.v1 import fleetattest_pb2_grpc as pb_grpc  # noqa: PLC0415
    from verifier.audit import open_checkpoint, verify_consistency, verify_inclusion  # noqa: PLC0415

    with Fleet(tmp_path) as fleet:
        verifier = fleet.start_verifier(GOLDEN)
        device = fleet.add_device("proved", GOOD_A)
        first = device.attest(verifier.address)
        with verifier.operator_channel() as ch:
            stub = pb_grpc.OperatorStub(ch)
            assert stub.GetAuditCheckpoint(pb.GetAuditCheckpointRequest()).signed_note == b""
            auditlog.write_checkpoint(verifier.store, KEY, verifier.clock())
            old = open_checkpoint(
                stub.GetAuditCheckpoint(pb.GetAuditCheckpointRequest()).signed_note,
                KEY.verifier(),
            )
            device.attest(verifier.address)
            auditlog.write_checkpoint(verifier.store, KEY, verifier.clock())
            reply = stub.GetAuditCheckpoint(pb.GetAuditCheckpointRequest())
            new = open_checkpoint(reply.signed_note, KEY.verifier())
            proof = stub.GetInclusionProof(pb.GetInclusionProofRequest(verdict_id=first.verdict_id))
            assert proof.tree_size == new.size
            verify_inclusion(
                proof.leaf_hash, proof.position, new.size, list(proof.hashes), new.root_hash
            )
            consistency = stub.GetConsistencyProof(pb.GetConsistencyProofRequest(old_size=old.size))
            verify_consistency(
                old.size, new.size, old.root_hash, new.root_hash, list(consistency.hashes)
            )
            with pytest.raises(grpc.RpcError) as refused:
                stub.GetConsistencyProof(
                    pb.GetConsistencyProofRequest(old_size=new.size + 1, new_size=new.size)
                )
            assert refused.value.code() is grpc.StatusCode.OUT_OF_RANGE
