"""Attestation evidence, parsed once at the boundary into plain bytes and ints.

``Evidence.build`` checks every size against ``Limits`` and the shape of the PCR list (indices
0-23, no duplicates) before anything else looks at it; past that line nothing is unchecked.
The TPM structures themselves (TPMS_ATTEST, TPMT_SIGNATURE) stay bytes here: the quote
module parses them, because the signature is over the exact bytes.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

from verifier import errors
from verifier.limits import Limits

MAX_PCR = 23


@dataclass(frozen=True)
class Evidence:
    device_id: str
    nonce: bytes
    quote: bytes  # TPMS_ATTEST
    signature: bytes  # TPMT_SIGNATURE
    pcr_values: tuple[tuple[int, bytes], ...]  # as sent, in the order sent
    event_log: bytes
    ima_log: bytes = b""  # IMA measurement list entries from number ``ima_offset`` on
    ima_offset: int = 0  # 0: the whole list (or none, when ``ima_log`` is empty)

    @functools.cached_property
    def log_digest(self) -> bytes:
        """SHA-256 of ``event_log``, computed once for every use (memo key, storage)."""
        return hashlib.sha256(self.event_log).digest()

    @classmethod
    def build(
        cls,
        *,
        device_id: str,
        nonce: bytes,
        quote: bytes,
        signature: bytes,
        pcr_values: tuple[tuple[int, bytes], ...],
        event_log: bytes,
        limits: Limits,
        ima_log: bytes = b"",
        ima_offset: int = 0,
    ) -> Evidence:
        _limit("device_id", len(device_id), limits.max_device_id_bytes)
        _limit("nonce", len(nonce), 64)
        _limit("quote", len(quote), limits.max_quote_bytes)
        _limit("signature", len(signature), limits.max_signature_bytes)
        _limit("event log", len(event_log), limits.max_event_log_bytes)
        _limit("IMA log", len(ima_log), limits.max_ima_log_bytes)
        if not 0 <= ima_offset < limits.max_ima_entries:
            raise errors.LimitExceeded(
                f"ima_offset {ima_offset} is past the {limits.max_ima_entries} entries allowed"
            )
        if not device_id:
            raise errors.MalformedEvidence("device_id is empty")
        if not quote or not signature:
            raise errors.MalformedEvidence("the quote and its signature are required")
        if not pcr_values:
            raise errors.MalformedEvidence("no PCR values were sent with the quote")
        _check_pcr_values(pcr_values)
        return cls(device_id, nonce, quote, signature, pcr_values, event_log, ima_log, ima_offset)


def _limit(what: str, size: int, limit: int) -> None:
    if size > limit:
        raise errors.LimitExceeded(f"{what} is {size} bytes; the limit is {limit}")


def _check_pcr_values(pcr_values: tuple[tuple[int, bytes], ...]) -> None:
    seen: set[int] = set()
    for index, digest in pcr_values:
        if not 0 <= index <= MAX_PCR:
            raise errors.MalformedEvidence(f"PCR index {index} is outside 0-{MAX_PCR}")
        if index in seen:
            raise errors.MalformedEvidence(f"PCR {index} was sent twice")
        if len(digest) > 64:
            raise errors.MalformedEvidence(f"PCR {index} value is {len(digest)} bytes")
        seen.add(index)
