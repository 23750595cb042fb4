"""Write binary IMA measurement list entries, as the kernel does (tests, simulator, bench).

``entry`` encodes one entry of any supported template from its fields; the helpers build the
fields of the common cases. ``violation=True`` writes the all-zero template hash the kernel
logs for ToMToU / open-writer violations (with a zero digest, as the kernel does).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

from verifier.ima.parse import BOOT_AGGREGATE, IMA_PCR, hash_function, template_input

_U32 = struct.Struct("<I")


def entry(
    template: str,
    fields: tuple[bytes, ...],
    *,
    pcr: int = IMA_PCR,
    violation: bool = False,
    template_hash_alg: str = "sha1",
) -> bytes:
    """One entry of the binary list."""
    hfunc = hash_function(template_hash_alg)
    digest = hfunc(template_input(template, fields)).digest()
    if violation:
        digest = bytes(len(digest))
    name = template.encode("ascii")
    head = _U32.pack(pcr) + digest + _U32.pack(len(name)) + name
    if template == "ima":
        return head + fields[0] + _U32.pack(len(fields[1])) + fields[1]
    data = template_input(template, fields)
    return head + _U32.pack(len(data)) + data


def dng(alg: str, digest: bytes) -> bytes:
    return alg.encode("ascii") + b":\0" + digest


def nng(path: str) -> bytes:
    return path.encode("utf-8", "surrogateescape") + b"\0"


def file_entry(
    path: str,
    digest: bytes,
    alg: str = "sha256",
    *,
    signature: bytes | None = None,
    violation: bool = False,
) -> bytes:
    """An ``ima-ng`` entry, or ``ima-sig`` when ``signature`` is given (b"" for unsigned)."""
    if violation:
        digest = bytes(len(digest))
    if signature is None:
        return entry("ima-ng", (dng(alg, digest), nng(path)), violation=violation)
    return entry("ima-sig", (dng(alg, digest), nng(path), signature), violation=violation)


def buf_entry(name: str, buf: bytes, alg: str = "sha256") -> bytes:
    digest = hash_function(alg)(buf).digest()
    return entry("ima-buf", (dng(alg, digest), nng(name), buf))


def boot_aggregate_entry(
    pcrs: Mapping[int, bytes], alg: str = "sha256", *, through: int = 9
) -> bytes:
    """``boot_aggregate`` over PCRs 0..``through`` (7 for SHA-1 and old kernels)."""
    digest = hash_function(alg)(b"".join(pcrs[i] for i in range(through + 1))).digest()
    return entry("ima-ng", (dng(alg, digest), nng(BOOT_AGGREGATE)))
