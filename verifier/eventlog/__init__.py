"""Measured boot: parse and replay TCG PC Client event logs, extract boot facts, event rules.

``parse`` (bytes -> ``EventLog``, ``EventLogError`` only) -> ``replay`` (per bank, PCR values)
-> ``facts`` (facts bound to their digests, from trusted PCRs only, plus problems) ->
``rules`` (facts vs a release's ``EventRules``). ``appraise_event_log`` chains them against
the quoted PCRs for the attestation appraisal.
"""

from verifier.eventlog.appraise import LogAppraisal, appraise_event_log
from verifier.eventlog.facts import Authority, BootApp, BootFacts, FirmwareBlob, extract_facts
from verifier.eventlog.parse import Event, EventLog, SpecId, parse_event_log
from verifier.eventlog.replay import ReplayResult, replay
from verifier.eventlog.rules import evaluate_event_rules, rules_pcrs, rules_quote_pcrs

__all__ = [
    "Authority",
    "BootApp",
    "BootFacts",
    "Event",
    "EventLog",
    "FirmwareBlob",
    "LogAppraisal",
    "ReplayResult",
    "SpecId",
    "appraise_event_log",
    "evaluate_event_rules",
    "extract_facts",
    "parse_event_log",
    "replay",
    "rules_pcrs",
    "rules_quote_pcrs",
]
