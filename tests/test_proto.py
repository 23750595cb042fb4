"""The committed generated modules match the .proto (regenerate: scripts/genproto.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fleetattest.v1 import fleetattest_pb2 as pb

ROOT = Path(__file__).resolve().parent.parent
GENERATED = (
    "fleetattest_pb2.py",
    "fleetattest_pb2.pyi",
    "fleetattest_pb2_grpc.py",
    "fleetattest_pb2_grpc.pyi",
)


def test_committed_generated_code_is_not_stale(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "genproto.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    for name in GENERATED:
        fresh = (tmp_path / "fleetattest" / "v1" / name).read_bytes()
        committed = (ROOT / "proto" / "fleetattest" / "v1" / name).read_bytes()
        assert fresh == committed, f"{name} is stale: run scripts/genproto.py"


def test_api_declares_the_three_services() -> None:
    services = set(pb.DESCRIPTOR.services_by_name)
    assert services == {"Agent", "RelyingParty", "Operator"}
    agent = pb.DESCRIPTOR.services_by_name["Agent"]
    assert set(agent.methods_by_name) == {
        "StartEnrollment",
        "FinishEnrollment",
        "GetChallenge",
        "Attest",
    }
