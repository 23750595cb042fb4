"""A bounds-checked reader for TPM 2.0 marshalled structures (big-endian, TPM2B = u16 size).

Every read checks the bytes left first and raises ``MalformedEvidence`` naming the field, so
a truncated or oversized structure never reads past its end or raises anything else.
``Reader.finish`` refuses trailing bytes: a structure is exactly as long as it says.
"""

from __future__ import annotations

import struct

from verifier.errors import MalformedEvidence

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")

# TPM_ALG_ID values used across the verifier.
ALG_RSA = 0x0001
ALG_SHA1 = 0x0004
ALG_HMAC = 0x0005
ALG_AES = 0x0006
ALG_KEYEDHASH = 0x0008
ALG_SHA256 = 0x000B
ALG_SHA384 = 0x000C
ALG_SHA512 = 0x000D
ALG_NULL = 0x0010
ALG_RSASSA = 0x0014
ALG_RSAES = 0x0015
ALG_RSAPSS = 0x0016
ALG_OAEP = 0x0017
ALG_ECDSA = 0x0018
ALG_ECDH = 0x0019
ALG_ECC = 0x0023
ALG_SYMCIPHER = 0x0025
ALG_CFB = 0x0043

HASH_ALGS = {ALG_SHA1: "sha1", ALG_SHA256: "sha256", ALG_SHA384: "sha384", ALG_SHA512: "sha512"}
HASH_IDS = {name: alg for alg, name in HASH_ALGS.items()}
DIGEST_SIZES = {"sha1": 20, "sha256": 32, "sha384": 48, "sha512": 64}


class Reader:
    """Reads one structure from ``data``; ``what`` names it in error messages."""

    __slots__ = ("_data", "_pos", "what")

    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._pos = 0
        self.what = what

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def _take(self, n: int, field: str) -> bytes:
        if n > self.remaining:
            raise MalformedEvidence(
                f"{self.what}: {field} needs {n} bytes, {self.remaining} left (truncated)"
            )
        start = self._pos
        self._pos += n
        return self._data[start : self._pos]

    def u8(self, field: str) -> int:
        return self._take(1, field)[0]

    def u16(self, field: str) -> int:
        value: int = _U16.unpack(self._take(2, field))[0]
        return value

    def u32(self, field: str) -> int:
        value: int = _U32.unpack(self._take(4, field))[0]
        return value

    def u64(self, field: str) -> int:
        value: int = _U64.unpack(self._take(8, field))[0]
        return value

    def raw(self, n: int, field: str) -> bytes:
        return self._take(n, field)

    def tpm2b(self, field: str, max_size: int | None = None) -> bytes:
        size = self.u16(f"{field} size")
        if max_size is not None and size > max_size:
            raise MalformedEvidence(
                f"{self.what}: {field} is {size} bytes, at most {max_size} allowed"
            )
        return self._take(size, field)

    def finish(self) -> None:
        if self.remaining:
            raise MalformedEvidence(f"{self.what}: {self.remaining} trailing bytes")


def u16(value: int) -> bytes:
    return _U16.pack(value)


def u32(value: int) -> bytes:
    return _U32.pack(value)


def tpm2b(data: bytes) -> bytes:
    return _U16.pack(len(data)) + data
