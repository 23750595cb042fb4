"""Write crypto-agile event logs: the inverse of ``parse``, for the tests' crafted vectors.

(The simulator's firmware writes its logs with ``simulator.tcglog``, which keeps the event
order and bank checks a boot needs; this writer writes whatever it is given.)

``encode_log`` emits the Spec ID Event03 for ``banks`` followed by each event in the
crypto-agile format; ``measured`` builds an event whose digests are the hashes of
``measured_bytes`` (the event data unless given), as firmware would.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

from verifier.eventlog.parse import EV_NO_ACTION, KNOWN_ALGS, SPEC_ID_SIGNATURE
from verifier.eventlog.replay import hash_function

ALG_IDS = {name: alg for alg, (name, _) in KNOWN_ALGS.items()}


class RawEvent(NamedTuple):
    pcr: int
    type: int
    digests: Mapping[str, bytes]
    data: bytes


def measured(
    pcr: int, etype: int, data: bytes, banks: Sequence[str], measured_bytes: bytes | None = None
) -> RawEvent:
    """An event whose digest in every bank is the hash of ``measured_bytes`` (default: data)."""
    target = data if measured_bytes is None else measured_bytes
    return RawEvent(pcr, etype, {b: hash_function(b)(target).digest() for b in banks}, data)


def spec_id_event(banks: Sequence[str], vendor_info: bytes = b"") -> bytes:
    body = SPEC_ID_SIGNATURE + struct.pack("<IBBBBI", 0, 0, 2, 0, 2, len(banks))
    for bank in banks:
        alg = ALG_IDS[bank]
        body += struct.pack("<HH", alg, KNOWN_ALGS[alg][1])
    body += bytes([len(vendor_info)]) + vendor_info
    return struct.pack("<II20sI", 0, EV_NO_ACTION, bytes(20), len(body)) + body


def encode_event(event: RawEvent, banks: Sequence[str]) -> bytes:
    out = [struct.pack("<III", event.pcr, event.type, len(banks))]
    for bank in banks:
        out.append(struct.pack("<H", ALG_IDS[bank]) + event.digests[bank])
    out.append(struct.pack("<I", len(event.data)) + event.data)
    return b"".join(out)


def encode_log(events: Iterable[RawEvent], banks: Sequence[str]) -> bytes:
    return spec_id_event(banks) + b"".join(encode_event(e, banks) for e in events)


def encode_sha1_event(event: RawEvent) -> bytes:
    """One event in the SHA-1 (TCG_PCClientPCREvent) format."""
    return (
        struct.pack("<II20sI", event.pcr, event.type, event.digests["sha1"], len(event.data))
        + event.data
    )
