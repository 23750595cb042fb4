"""``attest-verifier eventlog {show,replay,facts} FILE``: the event log tools for operators.

Every command reads one file, parses it once, and exits 0; a file that cannot be read or is not
a valid firmware event log gives exit 2 and one line on stderr (``eventlog: FILE: reason``).
``replay --json`` prints ``{"sha256": {"0": "<hex>", ...}, "sha1": {...}}`` for every bank the
log carries (PCRs with events only, keys in numeric order).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from verifier.errors import EventLogError
from verifier.eventlog import efi
from verifier.eventlog.facts import extract_facts
from verifier.eventlog.parse import (
    EV_EFI_ACTION,
    EV_EFI_BOOT_SERVICES_APPLICATION,
    EV_EFI_VARIABLE_AUTHORITY,
    EV_EFI_VARIABLE_BOOT,
    EV_EFI_VARIABLE_DRIVER_CONFIG,
    EV_IPL,
    EV_S_CRTM_VERSION,
    Event,
    EventLog,
    parse_event_log,
)
from verifier.eventlog.replay import HASHES, replay
from verifier.golden.model import QUIRKS

REPLAY_QUIRKS = frozenset({"missing_exit_boot_services"})  # the quirks replay itself applies


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("eventlog", help="inspect a TCG firmware event log")
    sub = parser.add_subparsers(dest="eventlog_command", required=True)

    show = sub.add_parser("show", help="a table of the events, decoded")
    show.add_argument("file", type=Path)
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(func=cmd_show)

    rep = sub.add_parser("replay", help="the PCR values the log replays to, per bank")
    rep.add_argument("file", type=Path)
    rep.add_argument("--json", action="store_true", help="print JSON")
    rep.add_argument(
        "--quirk",
        action="append",
        default=[],
        choices=sorted(REPLAY_QUIRKS),
        help="a vendor quirk that changes replay (repeatable; spelled as in golden files)",
    )
    rep.set_defaults(func=cmd_replay)

    facts = sub.add_parser("facts", help="the boot facts and problems the log establishes")
    facts.add_argument("file", type=Path)
    facts.add_argument("--json", action="store_true", help="print JSON")
    facts.add_argument("--bank", help="digest bank (default: sha256 if present, else sha1)")
    facts.add_argument(
        "--quirk",
        action="append",
        default=[],
        choices=sorted(QUIRKS),
        help="enable a vendor quirk (repeatable)",
    )
    facts.set_defaults(func=cmd_facts)


def _load(path: Path) -> EventLog | None:
    try:
        return parse_event_log(path.read_bytes())
    except (OSError, EventLogError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        print(f"eventlog: {path}: {detail}", file=sys.stderr)
        return None


def cmd_replay(ns: argparse.Namespace) -> int:
    log = _load(ns.file)
    if log is None:
        return 2
    out: dict[str, dict[str, str]] = {}
    notes: list[str] = []
    for bank in log.banks:
        if bank not in HASHES:
            continue
        result = replay(
            log, bank, missing_exit_boot_services="missing_exit_boot_services" in ns.quirk
        )
        out[bank] = {str(pcr): result.pcrs[pcr].hex() for pcr in sorted(result.pcrs)}
        notes.extend(n for n in result.notes if n not in notes)
    if ns.json:
        print(json.dumps(out, indent=2))
    else:
        for bank, pcrs in out.items():
            for pcr, value in pcrs.items():
                print(f"{bank:7} {int(pcr):2d}  {value}")
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    return 0


def cmd_facts(ns: argparse.Namespace) -> int:
    log = _load(ns.file)
    if log is None:
        return 2
    bank = ns.bank or ("sha256" if "sha256" in log.banks else log.banks[0])
    try:
        facts = extract_facts(log, bank, frozenset(ns.quirk))
    except EventLogError as exc:
        print(f"eventlog: {ns.file}: {exc}", file=sys.stderr)
        return 2
    view = facts.to_json()
    if ns.json:
        print(json.dumps(view, indent=2))
        return 0
    for key, value in view.items():
        if key == "problems":
            continue
        print(f"{key:20} {json.dumps(value)}")
    for problem in facts.problems:
        print(f"problem [{problem.severity.value}] {problem.code}: {problem.text}")
    return 0


def cmd_show(ns: argparse.Namespace) -> int:
    log = _load(ns.file)
    if log is None:
        return 2
    bank = "sha256" if "sha256" in log.banks else log.banks[0]
    if ns.json:
        print(json.dumps(show_document(log), indent=2))
        return 0
    print(f"# {log.format} log, {len(log.events)} events, banks {', '.join(log.banks)}")
    print(f"{'#':>4} {'PCR':>3}  {'TYPE':32} {bank.upper():16}  DATA")
    for event in log.events:
        digest = event.digests.get(bank, b"").hex()[:16]
        pcr = str(event.pcr) if event.pcr <= 23 else f"0x{event.pcr:x}"
        print(f"{event.number:4d} {pcr:>3}  {event.type_name:32} {digest:16}  {describe(event)}")
    return 0


def show_document(log: EventLog) -> dict[str, object]:
    """Every event with all its digests and the decoded reading (untrusted, for display)."""
    return {
        "format": log.format,
        "banks": list(log.banks),
        "events": [
            {
                "number": event.number,
                "pcr": event.pcr,
                "type": event.type,
                "type_name": event.type_name,
                "digests": {bank: digest.hex() for bank, digest in event.digests.items()},
                "data_bytes": len(event.data),
                "description": describe(event),
            }
            for event in log.events
        ],
    }


def describe(event: Event) -> str:
    """A one-line human reading of the event data (untrusted: for display only)."""
    data = event.data
    try:
        if event.type in (
            EV_EFI_VARIABLE_DRIVER_CONFIG,
            EV_EFI_VARIABLE_BOOT,
            EV_EFI_VARIABLE_AUTHORITY,
        ):
            var = efi.parse_variable(data)
            return f"{var.name} ({len(var.data)} bytes)"
        if event.type == EV_EFI_BOOT_SERVICES_APPLICATION:
            return efi.image_path(data) or f"({len(data)} bytes)"
        if event.type == EV_S_CRTM_VERSION and len(data) % 2 == 0:
            return repr(efi.decode_utf16(data))
    except efi.EfiDecodeError:
        return f"(malformed, {len(data)} bytes)"
    if event.type in (EV_EFI_ACTION, EV_IPL) or _printable(data):
        text = data.rstrip(b"\x00").decode("utf-8", "replace")
        return repr(text[:80] + ("..." if len(text) > 80 else ""))
    return data[:24].hex() + ("..." if len(data) > 24 else "")


def _printable(data: bytes) -> bool:
    stripped = data.rstrip(b"\x00")
    return bool(stripped) and all(32 <= b < 127 for b in stripped)
