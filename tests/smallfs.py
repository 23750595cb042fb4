"""A small file system of its own for the disk-full tests: a size-limited tmpfs.

``small_volume(size)`` mounts ``tmpfs -o size=...`` on a fresh temporary directory (root only;
the tests run as root in CI's container) and unmounts it afterwards. Where mounting is refused
(no root, no CAP_SYS_ADMIN) the tests that need it are skipped with that reason: without a
volume of its own a test cannot fill a disk without filling the machine's.

``fill(volume, leave)`` writes a filler file until at most ``leave`` bytes are free, and returns
it; deleting it gives the space back.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def free_bytes(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


@contextmanager
def small_volume(size: str = "5m") -> Iterator[Path]:
    if shutil.which("mount") is None:
        pytest.skip("no mount(8): cannot make a small volume to fill")
    root = Path(tempfile.mkdtemp(prefix="fleet-attest-smallfs-"))
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(root)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        root.rmdir()
        pytest.skip(f"cannot mount a {size} tmpfs to fill (needs root): {mounted.stderr.strip()}")
    try:
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def fill(volume: Path, leave: int = 0, name: str = "filler") -> Path:
    """Write ``volume/name`` until no more than ``leave`` bytes are free (0: the disk is full)."""
    filler = volume / name
    block = b"\xa5" * 65536
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while (room := free_bytes(volume) - leave) > 0:
            try:
                os.write(fd, block[: min(len(block), room)])
            except OSError:  # ENOSPC: full
                break
    finally:
        os.close(fd)
    return filler
