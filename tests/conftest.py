"""Shared fixtures: the project's own EK CA and swtpm devices.

- ``local_ca`` (session): a ``LocalCa`` in the session's temporary directory; never the
  machine-wide swtpm-localca.
- ``swtpm_factory`` (function): creates swtpm instances under the test's ``tmp_path`` and stops
  every one of them on teardown, also when the test failed.
- ``swtpm`` (function): one running instance with an RSA EK certificate from ``local_ca``.
- ``fleet`` (function): ``simulator.fleet.Fleet`` with a verifier on the repository's
  golden measurements; ``fleet.live`` is the running verifier.

Tests marked ``swtpm`` are skipped, with the reason, only when the ``swtpm`` binary is missing.
At the end of the session no swtpm process started by the suite may still be alive: survivors
are killed and the session fails loudly.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulator import swtpm as swtpm_module
from simulator.ca import LocalCa
from simulator.fleet import Fleet
from simulator.swtpm import SwtpmFactory, SwtpmInstance, swtpm_available

GOLDEN = Path(__file__).resolve().parent.parent / "golden_measurements"
SKIP_REASON = "the swtpm binary is not installed (apt-get install swtpm swtpm-tools)"
_session_dirs: list[Path] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if swtpm_available():
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if "swtpm" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def local_ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCa:
    return LocalCa.create(tmp_path_factory.mktemp("local-ca"))


@pytest.fixture(scope="session", autouse=True)
def _swtpm_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's temporary directory: every swtpm of the suite keeps its state below it."""
    base = tmp_path_factory.getbasetemp().absolute()
    _session_dirs.append(base)
    return base


@pytest.fixture
def swtpm_factory(tmp_path: Path) -> Iterator[SwtpmFactory]:
    factory = SwtpmFactory(tmp_path / "swtpm")
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture
def swtpm(swtpm_factory: SwtpmFactory, local_ca: LocalCa) -> SwtpmInstance:
    device = swtpm_factory.create("device")
    device.provision_ek_certificate(local_ca, "rsa")
    return device


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    """A local CA, a verifier (the repository's golden measurements) and room for devices."""
    with Fleet(tmp_path) as fleet:
        fleet.start_verifier(GOLDEN)
        yield fleet


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    survivors = sorted(set(swtpm_module.live_processes()) | set(_swtpm_pids_under(_session_dirs)))
    if not survivors:
        return
    swtpm_module.kill_all()
    for pid in survivors:
        _kill(pid)
    message = f"swtpm processes outlived the test session and were killed: {survivors}"
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"ERROR: {message}", red=True, bold=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _swtpm_pids_under(dirs: list[Path]) -> list[int]:
    """swtpm processes whose command line names a directory below one of ``dirs``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not argv or os.path.basename(argv[0]) != b"swtpm":
            continue
        text = b" ".join(argv).decode(errors="replace")
        if any(str(d) in text for d in dirs):
            found.append(int(entry.name))
    return found


def _kill(pid: int) -> None:
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        return
