"""A simulated device for IMA tests: files "run" after boot, PCR 10 extended as a kernel does.

It keeps the binary measurement list and the PCR values of one bank, extending PCR 10 with
the same rule the chosen kernel behaviour uses (``ExtendMode``), independently of
``verifier.ima.replay`` (the extend rule is written out here once more on purpose).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from verifier.ima import write
from verifier.ima.parse import parse_binary
from verifier.ima.replay import ExtendMode

SIZES = {"sha1": 20, "sha256": 32, "sha384": 48}


def file_digest(path: str, version: int = 0) -> bytes:
    return hashlib.sha256(f"{path}#{version}".encode()).digest()


@dataclass
class Device:
    bank: str = "sha256"
    mode: ExtendMode = ExtendMode.BANK_HASH
    boot_pcrs_through: int = 9
    pcrs: dict[int, bytes] = field(default_factory=dict)
    raw: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        size = SIZES[self.bank]
        for i in range(10):
            self.pcrs[i] = hashlib.new(self.bank, b"boot pcr %d" % i).digest()[:size]
        self.pcrs[10] = bytes(size)
        alg = "sha1" if self.bank == "sha1" else self.bank
        through = 7 if alg == "sha1" else self.boot_pcrs_through
        self.append(write.boot_aggregate_entry(self.pcrs, alg, through=through))

    def append(self, raw: bytes) -> None:
        (parsed,) = parse_binary(raw).entries
        size = SIZES[self.bank]
        if parsed.violation:
            value = b"\xff" * size
        elif self.mode is ExtendMode.SHA1_PADDED or self.bank == "sha1":
            value = parsed.template_hash.ljust(size, b"\0")
        else:
            value = hashlib.new(self.bank, template_input_of(raw)).digest()
        self.pcrs[10] = hashlib.new(self.bank, self.pcrs[10] + value).digest()
        self.raw.append(raw)

    def run(self, path: str, version: int = 0, *, signature: bytes | None = None) -> None:
        self.append(write.file_entry(path, file_digest(path, version), signature=signature))

    def quoted(self) -> dict[str, dict[int, bytes]]:
        return {self.bank: dict(self.pcrs)}

    def since(self, index: int) -> bytes:
        """The list from entry ``index`` on (what an incremental agent sends)."""
        return b"".join(self.raw[index:])

    @property
    def log(self) -> bytes:
        return b"".join(self.raw)


def template_input_of(raw: bytes) -> bytes:
    (parsed,) = parse_binary(raw).entries
    return parsed.template_input
