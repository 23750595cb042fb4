"""swtpm instances: one simulated TPM per device, owned by this process.

Invariants:

- Each instance has its own state directory (an absolute path: swtpm changes directory) and
  its own pair of TCP ports on 127.0.0.1: the TPM port P and the control port P+1 (the tss2
  swtpm TCTI expects the control channel there). swtpm runs in the foreground as a child
  process of ours (never ``--daemon``), in its own session so a terminal's Ctrl-C reaches us,
  not it; started from the main thread, it also gets SIGKILL if we die (PR_SET_PDEATHSIG,
  set by util-linux ``setpriv`` when installed).
- Every started process is in a registry; ``kill_all()`` runs at interpreter exit and in test
  teardown, so no swtpm outlives its owner. ``stop()`` is orderly (TPM2_Shutdown(CLEAR), then
  the control channel's CMD_SHUTDOWN, which makes swtpm save its state and exit) and falls back
  to SIGKILL; it always waits for the process.
- Only one TPM client may be connected at a time (swtpm serves one connection): callers close
  their ``Tpm`` before ``power_cycle()``, ``unclean_power_loss()`` or ``stop()``.

Power events, as observed with swtpm 0.7 / libtpms:

- ``start()`` after ``stop()`` (and ``power_cycle()``: Shutdown(CLEAR), CMD_INIT, Startup(CLEAR))
  is an orderly reboot: resetCount goes up, clockInfo.safe stays 1.
- ``unclean_power_loss()`` kills swtpm with SIGKILL (no TPM2_Shutdown; the volatile state is
  lost) and starts it again: resetCount goes up and the next quote shows clockInfo.safe = 0
  (the TPM cannot vouch that Clock did not go backwards; it can go back by up to the NV update
  interval). safe becomes 1 again only when Clock is next saved to NV.

EK certificates are written where real TPMs keep them (RSA 0x01c00002, ECC 0x01c0000a), defined
with platform authorisation and the attributes a manufacturer uses: PPWRITE, WRITEDEFINE,
PPREAD, OWNERREAD, AUTHREAD, NO_DA, PLATFORMCREATE.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from cryptography.hazmat.primitives.serialization import load_pem_public_key

from agent.tpm import EK_CERT_INDEX, Tpm
from simulator.ca import LocalCa, PublicKey

os.environ.setdefault("TSS2_LOG", "all+NONE")

from tpm2_pytss import ESAPI, TSS2_Exception
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPMA_NV
from tpm2_pytss.types import TPM2B_NV_PUBLIC, TPM2B_PUBLIC, TPMS_NV_PUBLIC

log = logging.getLogger(__name__)

HOST: Final = "127.0.0.1"
CMD_INIT: Final = 0x02
CMD_SHUTDOWN: Final = 0x03
CMD_SET_LOCALITY: Final = 0x05
TPM2_STARTUP_CLEAR: Final = bytes.fromhex("80010000000c000001440000")  # TPM2_Startup(CLEAR)
TPM2_SHUTDOWN_CLEAR: Final = bytes.fromhex("80010000000c000001450000")  # TPM2_Shutdown(CLEAR)
COMMAND_TIMEOUT: Final = 5.0  # seconds; a client still connected makes swtpm wait for it
STARTUP_LOCALITIES: Final = frozenset({0, 3})  # PCR 0 starts at 00..00 or 00..03
START_TIMEOUT: Final = 5.0  # seconds
STOP_TIMEOUT: Final = 5.0  # seconds
START_ATTEMPTS: Final = 5
NV_CHUNK: Final = 512  # bytes per NV_Write; below every TPM's MAX_NV_BUFFER_SIZE
EK_NV_ATTRIBUTES: Final = (
    TPMA_NV.PPWRITE
    | TPMA_NV.WRITEDEFINE
    | TPMA_NV.PPREAD
    | TPMA_NV.OWNERREAD
    | TPMA_NV.AUTHREAD
    | TPMA_NV.NO_DA
    | TPMA_NV.PLATFORMCREATE
)


class SwtpmError(Exception):
    """swtpm did not start, stop or answer as expected."""


_registry: dict[int, subprocess.Popen[bytes]] = {}
_registry_lock = threading.Lock()


def live_processes() -> list[int]:
    """PIDs of swtpm processes started by this module that are still running."""
    with _registry_lock:
        return [pid for pid, proc in _registry.items() if proc.poll() is None]


def kill_all() -> None:
    """SIGKILL and reap every swtpm process this module started (atexit, test teardown)."""
    with _registry_lock:
        procs = list(_registry.values())
        _registry.clear()
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(STOP_TIMEOUT)


atexit.register(kill_all)


class SwtpmInstance:
    """One swtpm process and its state directory; see the module docstring."""

    def __init__(self, state_dir: Path, binary: str = "swtpm") -> None:
        self.state_dir = Path(state_dir).absolute()
        self.binary = binary
        self.port = 0
        self.command_timeout = COMMAND_TIMEOUT
        self._process: subprocess.Popen[bytes] | None = None

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def ctrl_port(self) -> int:
        return self.port + 1

    @property
    def tcti(self) -> str:
        if not self.running:
            raise SwtpmError(f"swtpm for {self.state_dir} is not running")
        return f"swtpm:host={HOST},port={self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, startup_locality: int = 0) -> None:
        """Power on (TPM_Init, TPM2_Startup(CLEAR) from ``startup_locality``) on free ports."""
        _check_locality(startup_locality)
        if self.running:
            raise SwtpmError(f"swtpm for {self.state_dir} is already running")
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for _ in range(START_ATTEMPTS):
            self.port = _free_port_pair()
            process = self._spawn(auto_startup=startup_locality == 0)
            if _wait_ready(process, self.port):
                self._process = process
                if startup_locality:
                    self._startup_clear(startup_locality)
                return
            _reap(process)
        raise SwtpmError(f"swtpm did not start; see {self.state_dir / 'swtpm.log'}")

    def stop(self) -> None:
        """Orderly power off: TPM2_Shutdown(CLEAR), CMD_SHUTDOWN; SIGKILL if that fails."""
        process = self._process
        if process is None:
            return
        try:
            if process.poll() is None:
                self._tpm_shutdown()
                self._ctrl(CMD_SHUTDOWN)
                process.wait(STOP_TIMEOUT)
        except (OSError, SwtpmError, subprocess.TimeoutExpired) as exc:
            log.warning("swtpm %s did not stop cleanly (%s); killing it", process.pid, exc)
        finally:
            _reap(process)
            self._process = None

    def kill(self) -> None:
        """SIGKILL without any shutdown (the process is gone; its NV state stays on disk)."""
        if self._process is not None:
            _reap(self._process)
            self._process = None

    def power_cycle(self, startup_locality: int = 0) -> None:
        """Orderly reboot: Shutdown(CLEAR), CMD_INIT, Startup(CLEAR). resetCount goes up."""
        _check_locality(startup_locality)
        self._tpm_shutdown()
        self._init()
        self._startup_clear(startup_locality)

    def unclean_power_loss(self, startup_locality: int = 0) -> None:
        """Power cut: SIGKILL (no TPM2_Shutdown), then power on again."""
        self.kill()
        self.start(startup_locality)

    def __enter__(self) -> SwtpmInstance:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- EK certificates ---------------------------------------------------------------

    def ek_public_key(self, alg: str = "rsa") -> PublicKey:
        """The public key of the EK the agent will create (standard template)."""
        with Tpm.open(self.tcti) as tpm:
            return public_key_from_tpm2b(tpm.create_ek(alg).public)

    def provision_ek_certificate(self, ca: LocalCa, alg: str = "rsa", **options: Any) -> bytes:
        """Have ``ca`` certify this TPM's EK and store the DER in NV; returns the DER."""
        der = ca.issue_ek_certificate(self.ek_public_key(alg), **options)
        self.write_ek_certificate(der, alg)
        return der

    def write_ek_certificate(self, raw: bytes, alg: str = "rsa") -> None:
        """Replace the EK certificate NV index with ``raw`` bytes (any bytes: garbage tests)."""
        index = EK_CERT_INDEX[alg]
        with ESAPI(self.tcti) as esapi:
            _undefine(esapi, index)
            if raw:
                _define_and_write(esapi, index, raw)

    def remove_ek_certificate(self, alg: str = "rsa") -> None:
        self.write_ek_certificate(b"", alg)

    # -- helpers -----------------------------------------------------------------------

    def _spawn(self, auto_startup: bool) -> subprocess.Popen[bytes]:
        command = [
            *_die_with_parent(),
            self.binary,
            "socket",
            "--tpm2",
            "--tpmstate",
            f"dir={self.state_dir},mode=0600",
            "--server",
            f"type=tcp,port={self.port},bindaddr={HOST}",
            "--ctrl",
            f"type=tcp,port={self.ctrl_port},bindaddr={HOST}",
            "--flags",
            "not-need-init,startup-clear" if auto_startup else "not-need-init",
        ]
        with (self.state_dir / "swtpm.log").open("ab") as logfile:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                cwd=self.state_dir,
                start_new_session=True,
            )
        with _registry_lock:
            _registry[process.pid] = process
        return process

    def _tpm_shutdown(self) -> None:
        result = self._tpm_command(TPM2_SHUTDOWN_CLEAR)
        if result != 0:
            raise SwtpmError(f"TPM2_Shutdown(CLEAR) failed with TPM result 0x{result:x}")

    def _tpm_command(self, command: bytes) -> int:
        """Send one raw TPM command (no TCTI: it would reset the locality); its result code."""
        with socket.create_connection((HOST, self.port), timeout=self.command_timeout) as sock:
            sock.sendall(command)
            header = _recv_exactly(sock, 10)
            _recv_exactly(sock, int.from_bytes(header[2:6], "big") - 10)
        return int.from_bytes(header[6:10], "big")

    def _init(self) -> None:
        result = self._ctrl(CMD_INIT, struct.pack(">I", 0))
        if result != 0:
            raise SwtpmError(f"swtpm CMD_INIT failed with TPM result 0x{result:x}")

    def _startup_clear(self, locality: int) -> None:
        """TPM2_Startup(CLEAR) sent raw from ``locality`` (a TCTI would reset it to 0)."""
        self._set_locality(locality)
        try:
            result = self._tpm_command(TPM2_STARTUP_CLEAR)
        finally:
            self._set_locality(0)
        if result != 0:
            raise SwtpmError(f"TPM2_Startup(CLEAR) failed with TPM result 0x{result:x}")

    def _set_locality(self, locality: int) -> None:
        result = self._ctrl(CMD_SET_LOCALITY, bytes([locality]))
        if result != 0:
            raise SwtpmError(f"swtpm CMD_SET_LOCALITY failed with TPM result 0x{result:x}")

    def _ctrl(self, command: int, payload: bytes = b"") -> int:
        """One control-channel command; returns the 4-byte TPM result code."""
        with socket.create_connection((HOST, self.ctrl_port), timeout=STOP_TIMEOUT) as sock:
            sock.sendall(struct.pack(">I", command) + payload)
            response = _recv_exactly(sock, 4)
        return int(struct.unpack(">I", response)[0])


class SwtpmFactory:
    """Creates instances under one base directory and stops them all at the end."""

    def __init__(self, base_dir: Path, binary: str = "swtpm") -> None:
        self.base_dir = Path(base_dir).absolute()
        self.binary = binary
        self.instances: list[SwtpmInstance] = []

    def create(self, name: str | None = None, *, start: bool = True) -> SwtpmInstance:
        name = name or f"tpm{len(self.instances)}"
        instance = SwtpmInstance(self.base_dir / name, self.binary)
        self.instances.append(instance)
        if start:
            instance.start()
        return instance

    def stop_all(self) -> None:
        for instance in self.instances:
            try:
                instance.stop()
            finally:
                instance.kill()

    def __enter__(self) -> SwtpmFactory:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()


def swtpm_available(binary: str = "swtpm") -> bool:
    return shutil.which(binary) is not None


def public_key_from_tpm2b(public: bytes) -> PublicKey:
    """A ``cryptography`` public key from a marshalled TPM2B_PUBLIC (RSA or ECC)."""
    parsed, used = TPM2B_PUBLIC.unmarshal(public)
    if used != len(public):
        raise ValueError("trailing bytes after TPM2B_PUBLIC")
    key = load_pem_public_key(parsed.publicArea.to_pem())
    if not isinstance(key, PublicKey):
        raise ValueError("TPM2B_PUBLIC is neither an RSA nor an ECC key")
    return key


def _check_locality(locality: int) -> None:
    if locality not in STARTUP_LOCALITIES:
        raise SwtpmError(f"startup locality must be one of {sorted(STARTUP_LOCALITIES)}")


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise SwtpmError("swtpm closed the connection mid-response")
        data += chunk
    return data


def _undefine(esapi: ESAPI, index: int) -> None:
    try:
        handle = esapi.tr_from_tpmpublic(index)
    except TSS2_Exception:
        return  # not defined
    esapi.nv_undefine_space(handle, ESYS_TR.PLATFORM)


def _define_and_write(esapi: ESAPI, index: int, data: bytes) -> None:
    public = TPM2B_NV_PUBLIC(
        nvPublic=TPMS_NV_PUBLIC(
            nvIndex=index,
            nameAlg=TPM2_ALG.SHA256,
            attributes=EK_NV_ATTRIBUTES,
            dataSize=len(data),
        )
    )
    handle = esapi.nv_define_space(b"", public, ESYS_TR.PLATFORM)
    try:
        for offset in range(0, len(data), NV_CHUNK):
            esapi.nv_write(
                handle, data[offset : offset + NV_CHUNK], offset, auth_handle=ESYS_TR.PLATFORM
            )
    finally:
        esapi.tr_close(handle)


def _free_port_pair() -> int:
    """A port P such that P and P+1 are both free on HOST (checked by binding both)."""
    for _ in range(100):
        with socket.socket() as first:
            first.bind((HOST, 0))
            port = int(first.getsockname()[1])
            if port >= 65535:
                continue
            with socket.socket() as second:
                try:
                    second.bind((HOST, port + 1))
                except OSError:
                    continue
        return port
    raise SwtpmError("no pair of adjacent free TCP ports")


def _wait_ready(process: subprocess.Popen[bytes], port: int) -> bool:
    """True once both ports accept connections; False if swtpm exited or timed out."""
    deadline = time.monotonic() + START_TIMEOUT
    pending = [port + 1, port]
    while pending and time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            socket.create_connection((HOST, pending[0]), timeout=0.5).close()
            pending.pop(0)
        except OSError:
            time.sleep(0.005)
    return not pending and process.poll() is None


def _reap(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGKILL)
    process.wait()
    with _registry_lock:
        _registry.pop(process.pid, None)


def _die_with_parent() -> list[str]:
    """A command prefix giving the child SIGKILL when this thread dies (main thread only).

    PR_SET_PDEATHSIG fires when the *thread* that forked exits, so it is only used from the
    main thread, whose exit is the process's. ``setpriv`` (util-linux) sets it and execs
    swtpm, which avoids a preexec_fn (unsafe in a process with threads).
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None or threading.current_thread() is not threading.main_thread():
        return []
    return [setpriv, "--pdeathsig", "KILL"]
