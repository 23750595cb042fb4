"""The built wheel, installed into a fresh virtual environment without the source tree.

``pip install fleet-attest`` gives the verifier and the offline token checker, with no
tpm2-pytss; the generated API imports as ``fleetattest.v1`` and lives beside proto-plus (whose
import name is ``proto``); a program whose extra is missing says which extra, in one line.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _run(argv: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A venv with the wheel (and proto-plus) installed; yields its bin directory."""
    work = tmp_path_factory.mktemp("wheel")
    dist = work / "dist"
    built = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(dist), str(ROOT)],
        work,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = dist.glob("fleet_attest-*.whl")
    venv = work / "venv"
    made = _run([sys.executable, "-m", "venv", str(venv)], work)
    assert made.returncode == 0, made.stderr
    pip = [
        str(venv / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
    ]
    done = _run([*pip, str(wheel), "proto-plus"], work)
    assert done.returncode == 0, done.stderr[-2000:]
    yield venv / "bin"
    shutil.rmtree(work, ignore_errors=True)


def test_wheel_installs_without_tpm2_pytss(installed: Path, tmp_path: Path) -> None:
    probe = _run(
        [
            str(installed / "python"),
            "-c",
            "import importlib.util as u; print(u.find_spec('tpm2_pytss'))",
        ],
        tmp_path,
    )
    assert probe.stdout.strip() == "None"


def test_generated_api_lives_beside_proto_plus(installed: Path, tmp_path: Path) -> None:
    probe = _run(
        [
            str(installed / "python"),
            "-c",
            "import proto, fleetattest.v1.fleetattest_pb2 as pb; "
            "print(proto.Message.__module__, pb.DESCRIPTOR.package)",
        ],
        tmp_path,
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split() == ["proto.message", "fleetattest.v1"]


def test_wheel_ships_no_source_tree_paths(installed: Path, tmp_path: Path) -> None:
    probe = _run(
        [str(installed / "python"), "-c", "import verifier; print(verifier.__file__)"], tmp_path
    )
    assert str(ROOT) not in probe.stdout and "site-packages" in probe.stdout


def test_verdict_check_help_runs_from_the_wheel(installed: Path, tmp_path: Path) -> None:
    helped = _run([str(installed / "attest-verifier"), "verdict", "check", "--help"], tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert "--max-age" in helped.stdout


def test_agent_without_its_extra_names_the_extra(installed: Path, tmp_path: Path) -> None:
    for program, extra in (
        ("attest-agent", "fleet-attest[agent]"),
        ("attest-sim", "fleet-attest[sim]"),
    ):
        ran = _run([str(installed / program), "run"], tmp_path)
        assert ran.returncode == 2
        assert extra in ran.stderr and ran.stderr.count("\n") == 1, ran.stderr


def test_serve_starts_from_the_wheel(installed: Path, tmp_path: Path) -> None:
    golden = tmp_path / "golden"
    shutil.copytree(ROOT / "golden_measurements", golden)
    port_file = tmp_path / "port"
    serve = subprocess.Popen(
        [
            str(installed / "attest-verifier"),
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--db",
            str(tmp_path / "v.db"),
            "--golden",
            str(golden),
            "--port-file",
            str(port_file),
            "--operator-socket",
            str(tmp_path / "operator.sock"),
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not port_file.exists() and serve.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if not port_file.exists():
            serve.kill()
            _, err = serve.communicate(timeout=30)
            pytest.fail(f"serve did not start from the wheel: {err[-2000:]}")
        status = _run(
            [
                str(installed / "attest-verifier"),
                "status",
                "--verifier",
                f"unix:{tmp_path / 'operator.sock'}",
            ],
            tmp_path,
            timeout=60,
        )
        assert "golden set" in status.stdout, status.stderr
    finally:
        serve.terminate()
        serve.wait(timeout=30)
