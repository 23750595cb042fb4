"""The simulator's swtpm manager (simulator.swtpm) and its EK CA (simulator.ca)."""

from __future__ import annotations

import datetime as dt
import os
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from tpm2_pytss import ESAPI
from tpm2_pytss.constants import ESYS_TR

from agent.state import AgentState
from agent.tpm import Tpm
from simulator import swtpm as swtpm_module
from simulator.ca import TCG_KP_EK_CERTIFICATE, LocalCa
from simulator.swtpm import SwtpmError, SwtpmFactory, SwtpmInstance, public_key_from_tpm2b

NONCE = b"clock-info-nonce"


@dataclass(frozen=True)
class ClockInfo:
    clock: int
    reset_count: int
    restart_count: int
    safe: int


def parse_clock_info(attest: bytes) -> ClockInfo:
    """clockInfo of a TPMS_ATTEST: after magic, type, qualifiedSigner and extraData."""
    magic, kind = struct.unpack_from(">IH", attest, 0)
    assert (magic, kind) == (0xFF544347, 0x8018)
    offset = 6
    for _ in range(2):  # qualifiedSigner, extraData (TPM2B)
        (size,) = struct.unpack_from(">H", attest, offset)
        offset += 2 + size
    return ClockInfo(*struct.unpack_from(">QIIB", attest, offset))


def quote_clock(device: SwtpmInstance, state_dir: Path) -> ClockInfo:
    with Tpm.open(device.tcti) as tpm:
        ak = tpm.load_or_create_ak(AgentState(state_dir), "ecc")
        return parse_clock_info(tpm.quote(ak, NONCE, "sha256", [0]).attest)


def is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too: swtpm processes are reaped by the manager, so check the state.
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "State:\tZ" not in status.read_text()


# -- power events ---------------------------------------------------------------------------


@pytest.mark.swtpm
def test_power_cycle_increments_reset_count(swtpm: SwtpmInstance, tmp_path: Path) -> None:
    before = quote_clock(swtpm, tmp_path)
    swtpm.power_cycle()
    after = quote_clock(swtpm, tmp_path)
    assert after.reset_count == before.reset_count + 1
    assert after.restart_count == 0
    assert after.safe == 1


@pytest.mark.swtpm
def test_stop_and_start_is_a_reboot_that_keeps_nv(swtpm: SwtpmInstance, tmp_path: Path) -> None:
    with Tpm.open(swtpm.tcti) as tpm:
        cert = tpm.read_ek_certificate("rsa")
    before = quote_clock(swtpm, tmp_path)
    swtpm.stop()
    assert not swtpm.running
    swtpm.start()
    after = quote_clock(swtpm, tmp_path)
    assert after.reset_count == before.reset_count + 1
    assert after.safe == 1
    with Tpm.open(swtpm.tcti) as tpm:
        assert tpm.read_ek_certificate("rsa") == cert


@pytest.mark.swtpm
def test_unclean_power_loss_clears_clock_safe(swtpm: SwtpmInstance, tmp_path: Path) -> None:
    before = quote_clock(swtpm, tmp_path)
    assert before.safe == 1
    old_pid = swtpm.pid
    swtpm.unclean_power_loss()
    assert old_pid is not None and not is_alive(old_pid)
    after = quote_clock(swtpm, tmp_path)
    assert after.safe == 0
    assert after.reset_count == before.reset_count + 1
    # An orderly reboot does not vouch for Clock again (TPM2_Shutdown leaves safe alone) ...
    swtpm.power_cycle()
    assert quote_clock(swtpm, tmp_path).safe == 0
    # ... only writing Clock to NV does: here TPM2_ClockSet (else the hourly NV update).
    with ESAPI(swtpm.tcti) as esapi:
        esapi.clock_set(after.clock + 3_600_000, ESYS_TR.OWNER)
    assert quote_clock(swtpm, tmp_path).safe == 1


@pytest.mark.swtpm
def test_pcrs_are_reset_by_a_power_cycle(swtpm: SwtpmInstance) -> None:
    with Tpm.open(swtpm.tcti) as tpm:
        tpm.extend(7, {"sha256": bytes(range(32))})
        assert tpm.read_pcrs("sha256", [7])[7] != bytes(32)
    swtpm.power_cycle()
    with Tpm.open(swtpm.tcti) as tpm:
        assert tpm.read_pcrs("sha256", [7])[7] == bytes(32)


@pytest.mark.swtpm
def test_startup_locality_sets_pcr0_start_value(swtpm_factory: SwtpmFactory) -> None:
    device = swtpm_factory.create(start=False)
    device.start(startup_locality=3)
    with Tpm.open(device.tcti) as tpm:
        assert tpm.read_pcrs("sha256", [0])[0] == bytes(31) + b"\x03"
        assert tpm.read_pcrs("sha1", [0])[0] == bytes(19) + b"\x03"
        assert tpm.read_pcrs("sha256", [1])[1] == bytes(32)
    device.power_cycle()
    with Tpm.open(device.tcti) as tpm:
        assert tpm.read_pcrs("sha256", [0])[0] == bytes(32)
    device.unclean_power_loss(startup_locality=3)
    with Tpm.open(device.tcti) as tpm:
        assert tpm.read_pcrs("sha256", [0])[0] == bytes(31) + b"\x03"
    with pytest.raises(SwtpmError, match="locality"):
        device.power_cycle(startup_locality=2)


# -- processes ------------------------------------------------------------------------------


@pytest.mark.swtpm
def test_stop_leaves_no_process(swtpm_factory: SwtpmFactory) -> None:
    device = swtpm_factory.create()
    pid = device.pid
    assert pid is not None and is_alive(pid)
    assert pid in swtpm_module.live_processes()
    device.stop()
    assert not is_alive(pid)
    assert pid not in swtpm_module.live_processes()
    device.stop()  # idempotent


@pytest.mark.swtpm
def test_stop_does_not_hang_on_a_client_that_stays_connected(
    swtpm_factory: SwtpmFactory,
) -> None:
    device = swtpm_factory.create()
    device.command_timeout = 0.5
    pid = device.pid
    tpm = Tpm.open(device.tcti)  # a crashed agent that never closed its connection
    try:
        tpm.create_ek("ecc")
        started = time.monotonic()
        device.stop()
        assert time.monotonic() - started < 3
    finally:
        tpm.esapi.close()
    assert pid is not None and not is_alive(pid)


CRASHING_OWNER = """
import sys, time
from pathlib import Path
from simulator.swtpm import SwtpmInstance
device = SwtpmInstance(Path(sys.argv[1]))
device.start()
print(device.pid, flush=True)
time.sleep(60)
"""


@pytest.mark.swtpm
def test_swtpm_dies_with_an_owner_killed_by_sigkill(tmp_path: Path) -> None:
    """No atexit runs after SIGKILL: the parent-death signal must take swtpm down."""
    root = Path(__file__).resolve().parent.parent
    owner = subprocess.Popen(
        [sys.executable, "-c", CRASHING_OWNER, str(tmp_path / "orphan")],
        stdout=subprocess.PIPE,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    try:
        assert owner.stdout is not None
        pid = int(owner.stdout.readline())
        assert is_alive(pid)
    finally:
        owner.kill()
        owner.wait()
    deadline = time.monotonic() + 3
    while is_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not is_alive(pid)


@pytest.mark.swtpm
def test_kill_all_reaps_every_started_process(swtpm_factory: SwtpmFactory) -> None:
    devices = [swtpm_factory.create(f"d{i}") for i in range(3)]
    pids = [d.pid for d in devices]
    assert len({d.port for d in devices}) == 3
    assert len({d.state_dir for d in devices}) == 3
    swtpm_module.kill_all()
    assert not any(is_alive(pid) for pid in pids if pid is not None)
    assert swtpm_module.live_processes() == []
    swtpm_factory.stop_all()  # already dead: stopping again is harmless


@pytest.mark.swtpm
def test_state_dir_is_absolute_even_from_a_relative_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with SwtpmInstance(Path("relative-tpm")) as device:
        assert device.state_dir == tmp_path / "relative-tpm"
        with Tpm.open(device.tcti) as tpm:
            tpm.create_ek("ecc")
    assert not device.running
    assert any((tmp_path / "relative-tpm").glob("tpm2-00.permall"))


@pytest.mark.swtpm
def test_each_device_has_its_own_endorsement_key(swtpm_factory: SwtpmFactory) -> None:
    keys = set()
    for device in (swtpm_factory.create("x"), swtpm_factory.create("y")):
        with Tpm.open(device.tcti) as tpm:
            keys.add(tpm.create_ek("rsa").public)
    assert len(keys) == 2


# -- the local CA ---------------------------------------------------------------------------


@pytest.mark.swtpm
@pytest.mark.parametrize("alg", ["rsa", "ecc"])
def test_provisioned_ek_certificate_chains_to_the_local_root(
    swtpm: SwtpmInstance, local_ca: LocalCa, alg: str
) -> None:
    der = swtpm.provision_ek_certificate(local_ca, alg)
    cert = x509.load_der_x509_certificate(der)
    with Tpm.open(swtpm.tcti) as tpm:
        assert cert.public_key() == public_key_from_tpm2b(tpm.create_ek(alg).public)
    cert.verify_directly_issued_by(local_ca.intermediate.cert)
    local_ca.intermediate.cert.verify_directly_issued_by(local_ca.root.cert)
    assert cert.version == x509.Version.v3
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_encipherment is (alg == "rsa")
    assert usage.key_agreement is (alg == "ecc")
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [TCG_KP_EK_CERTIFICATE]


@pytest.mark.swtpm
def test_ek_certificate_options_produce_the_attack_cases(
    swtpm: SwtpmInstance, local_ca: LocalCa
) -> None:
    ek_key = swtpm.ek_public_key("rsa")
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    wrong_key = x509.load_der_x509_certificate(
        local_ca.issue_ek_certificate(ek_key, key_override=other)
    )
    assert wrong_key.public_key() == other
    past = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    expired = x509.load_der_x509_certificate(
        local_ca.issue_ek_certificate(
            ek_key, not_before=past, not_after=past + dt.timedelta(days=1)
        )
    )
    assert expired.not_valid_after_utc < dt.datetime.now(dt.UTC)
    unknown = x509.load_der_x509_certificate(
        local_ca.issue_ek_certificate(ek_key, issuer="unknown")
    )
    with pytest.raises(ValueError):
        unknown.verify_directly_issued_by(local_ca.intermediate.cert)
    unknown.verify_directly_issued_by(local_ca.unknown.cert)
    direct = x509.load_der_x509_certificate(local_ca.issue_ek_certificate(ek_key, issuer="root"))
    direct.verify_directly_issued_by(local_ca.root.cert)


def test_trust_dir_with_and_without_intermediate(local_ca: LocalCa, tmp_path: Path) -> None:
    assert sorted(p.name for p in local_ca.trust_dir.iterdir()) == ["intermediate.pem", "root.pem"]
    missing = local_ca.write_trust_dir(tmp_path / "trust", include_intermediate=False)
    assert sorted(p.name for p in missing.iterdir()) == ["root.pem"]
    root = x509.load_pem_x509_certificate((missing / "root.pem").read_bytes())
    assert root == local_ca.root.cert


def test_local_ca_reloads_the_same_authorities(local_ca: LocalCa) -> None:
    again = LocalCa.create(local_ca.directory)
    assert again.root.cert == local_ca.root.cert
    assert again.intermediate.cert == local_ca.intermediate.cert
    assert again.unknown.cert == local_ca.unknown.cert
    assert (local_ca.directory / "root.key").stat().st_mode & 0o077 == 0
