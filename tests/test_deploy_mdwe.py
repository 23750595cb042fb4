"""The units' ``MemoryDenyWriteExecute=yes`` holds for the code the services run.

systemd enforces it with a seccomp filter that refuses writable-and-executable mappings and
making memory executable later. Linux 6.3 and later offer the same rule to any process as
``prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN)``, inherited by children and across exec. A
subprocess turns it on, shows that a W+X mapping is now refused (so the rule is really in
force), then enrolls and attests an swtpm device against an in-process verifier: CPython,
grpcio, cryptography, tpm2-pytss (cffi) and swtpm all under the rule. Skipped where the
kernel has no PR_SET_MDWE, and (marker ``swtpm``) where swtpm is missing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NO_MDWE = 77  # the child's exit status when the kernel refuses PR_SET_MDWE

CHILD = f"""
import ctypes, mmap, sys
from pathlib import Path
libc = ctypes.CDLL(None, use_errno=True)
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
    sys.exit({NO_MDWE})
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
except PermissionError:
    print("W+X refused")
else:
    sys.exit("a W+X mapping was allowed: the rule is not in force")
from simulator.fleet import Fleet
from simulator.profiles import GOOD_A
from fleetattest.v1 import fleetattest_pb2 as pb
with Fleet(Path(sys.argv[1])) as fleet:
    fleet.start_verifier(Path(sys.argv[2]))
    device = fleet.add_device("mdwe", GOOD_A)
    device.enroll(fleet.live.address)
    print(pb.Status.Name(device.attest(fleet.live.address).status))
"""


@pytest.mark.swtpm
def test_enroll_and_attest_run_with_memory_deny_write_execute(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "proto")])}
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path), str(REPO / "golden_measurements")],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=240,
        check=False,
    )
    if result.returncode == NO_MDWE:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux < 6.3)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["W+X", "refused", "STATUS_AFFIRMING"]
