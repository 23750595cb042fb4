"""The agent's state directory: the AK blobs, the enrollment record and the TPM's status.

Invariants:

- The directory is created mode 0700 (and tightened to 0700 if it exists); every file in it is
  mode 0600 and is written atomically (a temporary file in the same directory, fsync, rename,
  fsync of the directory), so a power cut leaves the old file or the new one, never half of one.
- The AK blobs (TPM2B_PUBLIC and TPM2B_PRIVATE as the TPM returned them, the key algorithm,
  the parent's template name and the digest of the parent's public area) are written once, when
  the AK is created; a restart or a reboot reloads the same AK from them.
- ``status.json`` says whether the TPM is usable now (``TpmStatus``): written by ``run`` when
  the condition changes, for people and monitoring to read; it is not an identity, so a status
  file that does not parse is reported like the others but never stops a run (``run`` rewrites
  it).
- A state file that exists but does not parse raises ``StateError`` naming the file. The agent
  never answers a corrupt file by creating a new identity: an operator decides (by removing the
  state directory, which means a new AK that the verifier will not accept without approval).

Checks on reading, in order: the file is readable, is JSON, is an object with exactly the
expected keys, carries the expected format version, and each field has its type (hex strings
decode, algorithm names are known).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

FORMAT_VERSION: Final = 1
AK_FILE: Final = "ak.json"
ENROLLMENT_FILE: Final = "enrollment.json"
STATUS_FILE: Final = "status.json"
# "ok", or why the TPM cannot be used now (see agent.tpm.tpm_condition)
TPM_CONDITIONS: Final = frozenset({"ok", "absent", "locked out", "busy", "failed"})
MAX_STATE_FILE: Final = 64 * 1024  # bytes; ours are well under 4 KiB
AK_ALGS: Final = frozenset({"ecc", "rsa"})


class StateError(Exception):
    """The agent's state directory is unusable: unreadable, corrupt, or for another key."""


@dataclass(frozen=True)
class EnrollmentRecord:
    device_id: str
    verifier: str
    ak_name: str  # hex of the AK's TPM name (nameAlg || digest)


@dataclass(frozen=True)
class AkBlobs:
    alg: str  # "ecc" or "rsa"
    public: bytes  # marshalled TPM2B_PUBLIC
    private: bytes  # marshalled TPM2B_PRIVATE (sealed to the parent by the TPM)
    parent: str  # the parent's EK template name, e.g. "EK-ECC256"
    parent_digest: bytes  # SHA-256 of the parent's marshalled TPM2B_PUBLIC at creation


@dataclass(frozen=True)
class TpmStatus:
    condition: str  # one of TPM_CONDITIONS
    detail: str  # the TPM's last error; "" when ok
    since: float  # POSIX seconds: when this condition began

    def __post_init__(self) -> None:
        if self.condition not in TPM_CONDITIONS:
            raise ValueError(f"unknown TPM condition {self.condition!r}")


class AgentState:
    """Files in ``state_dir``; see the module docstring for the invariants."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir).absolute()
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.path, 0o700)
        except OSError as exc:
            raise StateError(f"cannot use state directory {self.path}: {exc}") from exc

    # -- enrollment record -------------------------------------------------------------

    def enrollment(self) -> EnrollmentRecord | None:
        data = self._read(ENROLLMENT_FILE, {"version", "device_id", "verifier", "ak_name"})
        if data is None:
            return None
        where = self.path / ENROLLMENT_FILE
        record = EnrollmentRecord(
            device_id=_text(data, "device_id", where),
            verifier=_text(data, "verifier", where),
            ak_name=_text(data, "ak_name", where),
        )
        _hex(record.ak_name, "ak_name", where)
        return record

    def save_enrollment(self, device_id: str, verifier: str, ak_name_hex: str) -> None:
        bytes.fromhex(ak_name_hex)  # ValueError on a caller's mistake, before writing
        self._write(
            ENROLLMENT_FILE,
            {
                "version": FORMAT_VERSION,
                "device_id": device_id,
                "verifier": verifier,
                "ak_name": ak_name_hex,
            },
        )

    # -- AK blobs ----------------------------------------------------------------------

    def ak_blobs(self) -> AkBlobs | None:
        keys = {"version", "alg", "public", "private", "parent", "parent_digest"}
        data = self._read(AK_FILE, keys)
        if data is None:
            return None
        where = self.path / AK_FILE
        alg = _text(data, "alg", where)
        if alg not in AK_ALGS:
            raise StateError(f"{where}: unknown AK algorithm {alg!r}")
        blobs = AkBlobs(
            alg=alg,
            public=_hex(_text(data, "public", where), "public", where),
            private=_hex(_text(data, "private", where), "private", where),
            parent=_text(data, "parent", where),
            parent_digest=_hex(_text(data, "parent_digest", where), "parent_digest", where),
        )
        if not blobs.public or not blobs.private or len(blobs.parent_digest) != 32:
            raise StateError(f"{where}: empty AK blob or bad parent digest")
        return blobs

    def save_ak_blobs(self, blobs: AkBlobs) -> None:
        if blobs.alg not in AK_ALGS:
            raise ValueError(f"unknown AK algorithm {blobs.alg!r}")
        self._write(
            AK_FILE,
            {
                "version": FORMAT_VERSION,
                "alg": blobs.alg,
                "public": blobs.public.hex(),
                "private": blobs.private.hex(),
                "parent": blobs.parent,
                "parent_digest": blobs.parent_digest.hex(),
            },
        )

    def forget_ak(self) -> None:
        """Remove the AK blobs and the enrollment record (the TPM's EK changed)."""
        for name in (AK_FILE, ENROLLMENT_FILE):
            with contextlib.suppress(FileNotFoundError):
                (self.path / name).unlink()
        _fsync_dir(self.path)

    # -- TPM status --------------------------------------------------------------------

    def tpm_status(self) -> TpmStatus | None:
        data = self._read(STATUS_FILE, {"version", "tpm", "detail", "since"})
        if data is None:
            return None
        where = self.path / STATUS_FILE
        condition, detail, since = data["tpm"], data["detail"], data["since"]
        if condition not in TPM_CONDITIONS or not isinstance(condition, str):
            raise StateError(f"{where}: unknown TPM condition {condition!r}")
        if not isinstance(detail, str) or not isinstance(since, (int, float)):
            raise StateError(f"{where}: detail must be a string and since a number")
        return TpmStatus(condition, detail, float(since))

    def save_tpm_status(self, status: TpmStatus) -> None:
        self._write(
            STATUS_FILE,
            {
                "version": FORMAT_VERSION,
                "tpm": status.condition,
                "detail": status.detail,
                "since": status.since,
            },
        )

    # -- file I/O ----------------------------------------------------------------------

    def _read(self, name: str, keys: set[str]) -> dict[str, object] | None:
        path = self.path / name
        try:
            with path.open("rb") as fh:
                raw = fh.read(MAX_STATE_FILE + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"cannot read {path}: {exc}") from exc
        if len(raw) > MAX_STATE_FILE:
            raise StateError(f"{path}: larger than {MAX_STATE_FILE} bytes")
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise StateError(f"{path}: corrupt state file (not JSON: {exc})") from exc
        if not isinstance(data, dict) or set(data) != keys:
            raise StateError(f"{path}: corrupt state file (expected keys {sorted(keys)})")
        if data["version"] != FORMAT_VERSION:
            raise StateError(f"{path}: unsupported state format {data['version']!r}")
        return data

    def _write(self, name: str, data: dict[str, object]) -> None:
        raw = json.dumps(data, indent=1, sort_keys=True).encode()
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=self.path)
        try:
            with os.fdopen(fd, "wb") as fh:
                os.fchmod(fh.fileno(), 0o600)
                fh.write(raw)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path / name)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        _fsync_dir(self.path)


def _text(data: dict[str, object], key: str, where: Path) -> str:
    value = data[key]
    if not isinstance(value, str) or not value:
        raise StateError(f"{where}: {key} must be a non-empty string")
    return value


def _hex(value: str, key: str, where: Path) -> bytes:
    try:
        return bytes.fromhex(value)
    except ValueError as exc:
        raise StateError(f"{where}: {key} is not hex") from exc


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
