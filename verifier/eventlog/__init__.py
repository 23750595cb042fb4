"""Measured boot, decoded: parse and replay TCG PC Client event logs, extract boot facts.

``parse`` (bytes -> ``EventLog``, ``EventLogError`` only) -> ``replay`` (per bank, PCR values)
-> ``facts`` (facts bound to their digests, from trusted PCRs only, plus problems). This package
decodes and never judges: the policy package (``verifier.golden``) compares facts with a
release (``golden.rules``) and checks a log against quoted PCRs (``golden.logcheck``).
"""

from verifier.eventlog.facts import Authority, BootApp, BootFacts, FirmwareBlob, extract_facts
from verifier.eventlog.parse import Event, EventLog, SpecId, parse_event_log
from verifier.eventlog.replay import ReplayResult, replay

__all__ = [
    "Authority",
    "BootApp",
    "BootFacts",
    "Event",
    "EventLog",
    "FirmwareBlob",
    "ReplayResult",
    "SpecId",
    "extract_facts",
    "parse_event_log",
    "replay",
]
