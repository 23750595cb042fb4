"""Finding 3 of the fault run: the agent gave up on a locked-out TPM.

The AK is now created noDA: it quotes while the TPM is in dictionary-attack lockout, and it
still passes every AK check of the verifier. ``attest-agent run`` reports an absent or
locked-out TPM (a log line and ``status.json``) and retries with backoff instead of exiting.

Lockout is reached the way a real TPM reaches it: failed authorizations of a DA-protected
object (an NV index with a password), until the TPM refuses with TPM_RC_LOCKOUT."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from tpm2_pytss import ESAPI, TSS2_Exception
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_RC, TPMA_NV, TPMA_OBJECT
from tpm2_pytss.types import TPM2B_AUTH, TPM2B_NV_PUBLIC, TPM2B_PUBLIC, TPMS_NV_PUBLIC

import agent.tpm as agent_tpm
from agent.state import AgentState
from agent.tpm import AK_ATTRIBUTES, Tpm, TpmError, tpm_condition
from simulator import swtpm as swtpm_module
from simulator.fleet import Fleet, SimDevice
from simulator.profiles import GOOD_A
from simulator.swtpm import SwtpmInstance
from verifier.enrollment.tpmpublic import check_ak, parse_tpm2b_public

pytestmark = pytest.mark.swtpm
NONCE = bytes(range(32))
NV_INDEX = 0x01500018
WAIT = 120.0  # seconds: generous bound of a poll; only a hang reaches it
ENV = {**os.environ, "GRPC_VERBOSITY": "ERROR"}


def agent_argv(device: SimDevice, address: str, command: str) -> list[str]:
    return [
        *(sys.executable, "-m", "agent.cli", command, "--verifier", address),
        *("--ca", str(device.verifier_ca)),
        *("--tcti", device.tpm.tcti, "--state-dir", str(device.workdir / "agent-state")),
        *("--event-log", str(device.event_log), "--label", "model=sim-gateway"),
    ]


def lock_out(tcti: str) -> int:
    """Fail NV authorizations until the TPM is in DA lockout; return the failures it took."""
    with Tpm.open(tcti) as tpm:
        esapi: ESAPI = tpm.esapi
        public = TPM2B_NV_PUBLIC(
            nvPublic=TPMS_NV_PUBLIC(
                nvIndex=NV_INDEX,
                nameAlg=TPM2_ALG.SHA256,
                attributes=TPMA_NV.AUTHREAD | TPMA_NV.AUTHWRITE | TPMA_NV.OWNERWRITE,
                dataSize=8,
            )
        )
        nv = esapi.nv_define_space(TPM2B_AUTH(b"right"), public)
        try:
            esapi.tr_set_auth(nv, TPM2B_AUTH(b"wrong"))
            for failures in range(1, 100):
                try:
                    esapi.nv_write(nv, b"12345678", auth_handle=nv)
                except TSS2_Exception as exc:
                    if exc.rc == TPM2_RC.LOCKOUT:
                        return failures - 1
                    if exc.error != TPM2_RC.AUTH_FAIL:
                        raise
            raise AssertionError("the TPM never locked out")
        finally:
            esapi.nv_undefine_space(nv, session1=ESYS_TR.PASSWORD)


def quote_with_new_ak(tcti: str, state_dir: Path) -> None:
    with Tpm.open(tcti) as tpm:
        ak = tpm.load_or_create_ak(AgentState(state_dir), "ecc")
        tpm.quote(ak, NONCE, "sha256", [0, 7])


def test_ak_is_created_noda_and_passes_the_verifiers_ak_checks(
    swtpm: SwtpmInstance, tmp_path: Path
) -> None:
    state = AgentState(tmp_path / "state")
    with Tpm.open(swtpm.tcti) as tpm:
        ak = tpm.load_or_create_ak(state, "ecc")
    public, _ = TPM2B_PUBLIC.unmarshal(ak.public)
    assert public.publicArea.objectAttributes & TPMA_OBJECT.NODA
    check_ak(parse_tpm2b_public(ak.public))  # raises if the verifier refused it


def test_noda_ak_still_quotes_while_the_tpm_is_in_da_lockout(
    swtpm: SwtpmInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert lock_out(swtpm.tcti) >= 1
    quote_with_new_ak(swtpm.tcti, tmp_path / "noda")  # would raise TpmError if refused
    # The control: an AK with dictionary-attack protection is refused in the same lockout.
    monkeypatch.setattr(agent_tpm, "AK_CREATE_ATTRIBUTES", AK_ATTRIBUTES)
    with pytest.raises(TpmError) as info:
        quote_with_new_ak(swtpm.tcti, tmp_path / "da")
    assert tpm_condition(info.value) == "locked out"


def test_a_saved_ak_without_noda_still_loads(
    swtpm: SwtpmInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as patch:
        patch.setattr(agent_tpm, "AK_CREATE_ATTRIBUTES", AK_ATTRIBUTES)
        quote_with_new_ak(swtpm.tcti, tmp_path / "old")
    quote_with_new_ak(swtpm.tcti, tmp_path / "old")  # the old AK, loaded from the state


def test_absent_tpm_is_classified_as_absent(swtpm: SwtpmInstance) -> None:
    tcti = swtpm.tcti
    swtpm.kill()
    with pytest.raises(TpmError) as info:
        Tpm.open(tcti)
    assert tpm_condition(info.value) == "absent"


def test_tpm_killed_mid_session_is_classified_as_absent(
    swtpm: SwtpmInstance, tmp_path: Path
) -> None:
    with Tpm.open(swtpm.tcti) as tpm:
        ak = tpm.load_or_create_ak(AgentState(tmp_path / "state"), "ecc")
        swtpm.kill()
        with pytest.raises(TpmError) as info:
            tpm.quote(ak, NONCE, "sha256", [0])
    assert tpm_condition(info.value) == "absent"


# ------------------------------------------------------------------ attest-agent run


def restart_on_the_same_port(instance: SwtpmInstance, port: int) -> None:
    """Power the killed swtpm on again where the agent's TCTI points (its state is kept)."""
    instance.port = port
    process = instance._spawn(auto_startup=True)
    assert swtpm_module._wait_ready(process, port), "swtpm did not come back"
    instance._process = process


def wait_for(condition: Callable[[], bool], process: subprocess.Popen[str], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert process.poll() is None, process.communicate()
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.1)


def tpm_status(state_dir: Path) -> str | None:
    try:
        return str(json.loads((state_dir / "status.json").read_text())["tpm"])
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    return err


def test_run_survives_a_tpm_that_is_absent_and_comes_back(fleet: Fleet) -> None:
    device = fleet.add_device("flaky", GOOD_A)
    state_dir = device.workdir / "agent-state"
    argv = [*agent_argv(device, fleet.live.address, "run"), "--no-event-log"]
    port = device.tpm.port
    device.tpm.kill()
    process = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        wait_for(lambda: tpm_status(state_dir) == "absent", process, "the absent TPM reported")
        restart_on_the_same_port(device.tpm, port)
        store = fleet.live.store
        wait_for(
            lambda: (
                bool(store.list_devices())
                and store.latest_verdict(store.list_devices()[0].device_id) is not None
            ),
            process,
            "a verdict once the TPM is back",
        )
        wait_for(lambda: tpm_status(state_dir) == "ok", process, "the TPM reported usable")
        err = stop(process)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert "the TPM is absent (cannot open the TPM at" in err
    assert "the TPM is usable again (it was absent)" in err


def test_run_attests_with_a_tpm_in_da_lockout(fleet: Fleet) -> None:
    device = fleet.add_device("locked", GOOD_A)
    assert lock_out(device.tpm.tcti) >= 1
    process = subprocess.Popen(
        agent_argv(device, fleet.live.address, "run"), stderr=subprocess.PIPE, text=True, env=ENV
    )
    try:
        store = fleet.live.store
        wait_for(
            lambda: (
                bool(store.list_devices())
                and store.latest_verdict(store.list_devices()[0].device_id) is not None
            ),
            process,
            "a verdict from the locked-out TPM",
        )
        err = stop(process)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert tpm_status(device.workdir / "agent-state") == "ok"
    assert "locked out" not in err
