"""A simulated kernel's IMA: a device that runs files after boot.

``ImaKernel`` keeps a device's ``binary_runtime_measurements`` file and extends PCR 10 of
its swtpm as Linux does with a SHA-256 bank (``ExtendMode.BANK_HASH``: the bank's hash over
the template data; all ones for a violation). ``boot`` starts a new list with
``boot_aggregate`` over the TPM's PCRs 0-9 and writes a new boot id (the agent's cursor is
per boot). The entries are built with ``verifier.ima.write``.

``SIM_FILES`` is the simulator's "distribution": what a runtime device runs, and what
``simulator.goldengen`` allows in ``golden_measurements/sim-runtime.yaml``. Files under
``SIGNED_DIR`` must carry an ``ima-sig`` signature by ``SIGNING_KEY`` (a fixed ECDSA P-256
key: simulated, never a secret).
"""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agent.tpm import Tpm
from verifier.ima import write
from verifier.ima.keys import key_id_of, sign_v2
from verifier.ima.parse import IMA_PCR, parse_binary

BANK = "sha256"
SIM_FILES: dict[str, bytes] = {
    "/usr/lib/systemd/systemd": b"systemd 252",
    "/usr/bin/bash": b"GNU bash 5.2.15",
    "/usr/sbin/sshd": b"OpenSSH 9.2p1",
    "/usr/lib/x86_64-linux-gnu/libc.so.6": b"glibc 2.36",
    "/usr/bin/ls": b"coreutils 9.1 ls",
}
SIGNED_DIR = "/opt/fleet"
SIGNED_FILES: dict[str, bytes] = {"/opt/fleet/gatewayd": b"fleet gatewayd 3.4"}
SIGNING_KEY = ec.derive_private_key(0x5EED_F1EE7, ec.SECP256R1())  # simulated, public
OTHER_KEY = ec.derive_private_key(0xBAD_5EED, ec.SECP256R1())  # a key no policy lists


def file_digest(content: bytes) -> bytes:
    return hashlib.sha256(content).digest()


def signing_key_pem() -> str:
    public = SIGNING_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return public.decode("ascii")


def signature_for(content: bytes, key: ec.EllipticCurvePrivateKey = SIGNING_KEY) -> bytes:
    """An IMA signature v2 over the file's SHA-256, as evmctl writes it."""
    keyid = key_id_of(key.public_key())
    return sign_v2(key, keyid, "sha256", file_digest(content))


class ImaKernel:
    """The measurement list file of one device and the extends into its TPM's PCR 10."""

    def __init__(self, tcti: str, list_path: Path, boot_id_path: Path) -> None:
        self.tcti = tcti
        self.list_path = list_path
        self.boot_id_path = boot_id_path

    def boot(self) -> None:
        """A new boot: a new boot id and a list holding only boot_aggregate (PCRs 0-9)."""
        self.boot_id_path.write_text(str(uuid.uuid4()) + "\n", encoding="ascii")
        with Tpm.open(self.tcti) as tpm:
            pcrs = tpm.read_pcrs(BANK, list(range(10)))
        self.list_path.write_bytes(b"")
        self.append(write.boot_aggregate_entry(pcrs, BANK, through=9))

    def run(self, path: str, content: bytes, *, signature: bytes | None = None) -> None:
        """The kernel measures ``path`` (its content's SHA-256) before it runs."""
        self.append(write.file_entry(path, file_digest(content), signature=signature))

    def violation(self, path: str) -> None:
        """A ToMToU / open-writer violation: zero template hash, PCR 10 extended with ones."""
        self.append(write.file_entry(path, bytes(32), violation=True))

    def append(self, raw: bytes, *, extend: bool = True) -> None:
        """Append one entry to the list and (unless told otherwise) extend PCR 10."""
        (entry,) = parse_binary(raw).entries
        if extend:
            if entry.violation:
                value = b"\xff" * 32
            else:
                value = hashlib.sha256(entry.template_input).digest()
            with Tpm.open(self.tcti) as tpm:
                tpm.extend(IMA_PCR, {BANK: value})
        with self.list_path.open("ab") as fh:
            fh.write(raw)

    def entries(self) -> list[bytes]:
        """The raw entries of the list, in order (for scenarios that rewrite it)."""
        data = self.list_path.read_bytes()
        out, pos = [], 0
        for entry in parse_binary(data).entries:
            size = len(_encode(entry.template, entry.template_hash, entry.template_input))
            out.append(data[pos : pos + size])
            pos += size
        return out

    def rewrite(self, entries: list[bytes]) -> None:
        """Replace the list file without touching the TPM (what a rootkit would do)."""
        self.list_path.write_bytes(b"".join(entries))

    def run_distribution(self) -> None:
        for path, content in SIM_FILES.items():
            self.run(path, content)
        for path, content in SIGNED_FILES.items():
            self.run(path, content, signature=signature_for(content))


def _encode(template: str, template_hash: bytes, template_input: bytes) -> bytes:
    name = template.encode("ascii")
    size = len(template_input).to_bytes(4, "little")
    return (
        (10).to_bytes(4, "little")
        + template_hash
        + len(name).to_bytes(4, "little")
        + name
        + size
        + template_input
    )
