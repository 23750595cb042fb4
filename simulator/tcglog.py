"""TCG PC Client crypto-agile event logs: encode and replay, and real logs read for replay.

Layout (TCG PC Client Platform Firmware Profile, section 10):

1. The first event is in the SHA-1 format ``TCG_PCClientPCREvent``: PCRIndex 0 (u32), EventType
   EV_NO_ACTION (u32), a 20-byte zero digest, EventSize (u32) and a
   ``TCG_EfiSpecIDEventStruct``: signature "Spec ID Event03\\0", platformClass 0 (client),
   specVersionMinor 0, specVersionMajor 2, specErrata 0, uintnSize 2 (UINTN is 64 bits),
   numberOfAlgorithms and (algorithmId u16, digestSize u16) pairs, vendorInfoSize 0.
2. Every later event is a ``TCG_PCR_EVENT2``: PCRIndex (u32), EventType (u32),
   ``TPML_DIGEST_VALUES`` (count u32, then hashAlg u16 + digest, in the header's algorithm
   order), EventSize (u32), Event.

Replay: a bank starts at all zeros (PCR 0 at ``00..0L`` when an EV_NO_ACTION StartupLocality
event says locality L) and each event that is not EV_NO_ACTION extends
``pcr = H(pcr || digest)``. Real logs (replayed into a TPM by the simulator) are read with the
verifier's own parser (``verifier.eventlog.parse_event_log``): its checks and limits, and
``EventLogError`` for anything it refuses.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum

from verifier.eventlog import parse_event_log
from verifier.limits import DEFAULT_LIMITS, Limits

# bank name -> (TPM_ALG_ID, digest size)
ALGORITHMS: dict[str, tuple[int, int]] = {
    "sha1": (0x0004, 20),
    "sha256": (0x000B, 32),
    "sha384": (0x000C, 48),
    "sha512": (0x000D, 64),
}
ALGORITHM_NAMES = {alg: name for name, (alg, _) in ALGORITHMS.items()}

SPEC_ID_SIGNATURE = b"Spec ID Event03\x00"
STARTUP_LOCALITY_SIGNATURE = b"StartupLocality\x00"


class EventType(IntEnum):
    """TCG PC Client event types (PFP section 10.4.1) the simulator uses or must recognise."""

    EV_PREBOOT_CERT = 0x00000000
    EV_POST_CODE = 0x00000001
    EV_NO_ACTION = 0x00000003
    EV_SEPARATOR = 0x00000004
    EV_ACTION = 0x00000005
    EV_S_CRTM_VERSION = 0x00000008
    EV_IPL = 0x0000000D
    EV_EFI_VARIABLE_DRIVER_CONFIG = 0x80000001
    EV_EFI_VARIABLE_BOOT = 0x80000002
    EV_EFI_BOOT_SERVICES_APPLICATION = 0x80000003
    EV_EFI_ACTION = 0x80000007
    EV_EFI_PLATFORM_FIRMWARE_BLOB = 0x80000008
    EV_EFI_PLATFORM_FIRMWARE_BLOB2 = 0x8000000A
    EV_EFI_HCRTM_EVENT = 0x80000010
    EV_EFI_VARIABLE_AUTHORITY = 0x800000E0


@dataclass(frozen=True)
class LogEvent:
    """One event as the firmware logs it: ``digests`` holds (bank, digest) in bank order."""

    pcr: int
    event_type: int
    digests: tuple[tuple[str, bytes], ...]
    data: bytes

    def digest(self, bank: str) -> bytes:
        for name, value in self.digests:
            if name == bank:
                return value
        raise KeyError(bank)

    @property
    def extends(self) -> bool:
        """Whether firmware extends this event into its PCR (EV_NO_ACTION never is)."""
        return self.event_type != EventType.EV_NO_ACTION


def check_banks(banks: Sequence[str]) -> tuple[str, ...]:
    """The banks as a tuple, refusing unknown names, duplicates and an empty selection."""
    if not banks:
        raise ValueError("at least one PCR bank is needed")
    unknown = [b for b in banks if b not in ALGORITHMS]
    if unknown:
        raise ValueError(f"unknown PCR bank(s) {unknown}; known: {sorted(ALGORITHMS)}")
    if len(set(banks)) != len(banks):
        raise ValueError(f"duplicate PCR bank in {list(banks)}")
    return tuple(banks)


def measured(
    pcr: int,
    event_type: int,
    data: bytes,
    banks: Sequence[str],
    measured_bytes: bytes | None = None,
) -> LogEvent:
    """An event whose digest in each bank is the hash of ``measured_bytes`` (default: data)."""
    source = data if measured_bytes is None else measured_bytes
    digests = tuple((b, hashlib.new(b, source).digest()) for b in banks)
    return LogEvent(pcr, event_type, digests, data)


def no_action(pcr: int, data: bytes, banks: Sequence[str]) -> LogEvent:
    """An EV_NO_ACTION event: all digests zero, never extended."""
    digests = tuple((b, bytes(ALGORITHMS[b][1])) for b in banks)
    return LogEvent(pcr, EventType.EV_NO_ACTION, digests, data)


def startup_locality_event(locality: int, banks: Sequence[str]) -> LogEvent:
    """The EV_NO_ACTION StartupLocality event (PFP 10.4.5.3) for PCR 0."""
    if not 0 <= locality <= 4:
        raise ValueError(f"startup locality {locality} is not 0-4")
    return no_action(0, STARTUP_LOCALITY_SIGNATURE + bytes([locality]), banks)


def spec_id_header(banks: Sequence[str]) -> bytes:
    """The first event of a crypto-agile log: SHA-1 format, EV_NO_ACTION, Spec ID Event03."""
    body = SPEC_ID_SIGNATURE + struct.pack("<IBBBBI", 0, 0, 2, 0, 2, len(banks))
    body += b"".join(struct.pack("<HH", *ALGORITHMS[b]) for b in banks) + b"\x00"
    return struct.pack("<II", 0, EventType.EV_NO_ACTION) + bytes(20) + _sized(body)


def encode_event2(event: LogEvent, banks: Sequence[str]) -> bytes:
    """One ``TCG_PCR_EVENT2``, its digests in the order of ``banks``."""
    parts = [struct.pack("<III", event.pcr, event.event_type, len(banks))]
    for bank in banks:
        value = event.digest(bank)
        alg, size = ALGORITHMS[bank]
        if len(value) != size:
            raise ValueError(f"{bank} digest of {len(value)} bytes, expected {size}")
        parts.append(struct.pack("<H", alg) + value)
    parts.append(_sized(event.data))
    return b"".join(parts)


def encode_log(events: Iterable[LogEvent], banks: Sequence[str]) -> bytes:
    """The whole log: the Spec ID header, then every event in order."""
    banks = check_banks(banks)
    return spec_id_header(banks) + b"".join(encode_event2(e, banks) for e in events)


def pcr0_start(events: Iterable[LogEvent]) -> int:
    """The last byte of PCR 0's start value: 4 with an H-CRTM event, else the locality of a
    StartupLocality event, else 0 (PFP 10.4.5.3 and the H-CRTM sequence)."""
    events = list(events)
    if any(e.pcr == 0 and e.event_type == EventType.EV_EFI_HCRTM_EVENT for e in events):
        return 4
    for event in events:
        if (
            event.event_type == EventType.EV_NO_ACTION
            and event.pcr == 0
            and event.data.startswith(STARTUP_LOCALITY_SIGNATURE)
            and len(event.data) == len(STARTUP_LOCALITY_SIGNATURE) + 1
        ):
            return event.data[-1]
    return 0


def replay(events: Sequence[LogEvent], banks: Sequence[str]) -> dict[str, dict[int, bytes]]:
    """Software replay: bank -> PCR index -> value, for every PCR that has an extended event."""
    start = pcr0_start(events)
    result: dict[str, dict[int, bytes]] = {}
    for bank in banks:
        size = ALGORITHMS[bank][1]
        pcrs: dict[int, bytes] = {}
        for event in events:
            if not event.extends:
                continue
            initial = bytes(size - 1) + bytes([start if event.pcr == 0 else 0])
            old = pcrs.get(event.pcr, initial)
            pcrs[event.pcr] = hashlib.new(bank, old + event.digest(bank)).digest()
        result[bank] = dict(sorted(pcrs.items()))
    return result


def extend_value(bank: str, old: bytes, digest: bytes) -> bytes:
    """``H(old || digest)``: what TPM2_PCR_Extend does to one bank of one PCR."""
    return hashlib.new(bank, old + digest).digest()


# --- real logs, read by the verifier's own parser -----------------------------------------


@dataclass(frozen=True)
class ParsedLog:
    """A parsed log: its banks and its events after the Spec ID header, as ``LogEvent``s."""

    banks: tuple[str, ...]
    crypto_agile: bool
    events: tuple[LogEvent, ...]


def parse_log(data: bytes, limits: Limits = DEFAULT_LIMITS) -> ParsedLog:
    """Parse a SHA-1-format or crypto-agile TCG PC Client log with ``verifier.eventlog``
    (every check and limit is the verifier's; ``EventLogError`` otherwise)."""
    log = parse_event_log(data, limits)
    agile = log.format == "crypto_agile"
    events = tuple(
        LogEvent(e.pcr, e.type, tuple(e.digests.items()), e.data)
        for e in log.events
        if not (agile and e.number == 0)  # the Spec ID header
    )
    return ParsedLog(log.banks, agile, events)


def _sized(data: bytes) -> bytes:
    return struct.pack("<I", len(data)) + data
