"""``devices``, ``verdict show`` and ``approve-ak``: the fleet as the store records it.

    attest-verifier devices --db DB [--golden DIR] [--json]   (with each device's last attestation)
    attest-verifier verdict show DEVICE --db DB [--golden DIR] [--history N] [--json]
    attest-verifier approve-ak DEVICE AK_NAME --db DB

``devices`` and ``verdict show`` open the store read-only (a missing database is an error, never
a new empty one). Whether a verdict is current is ``verifier.currency``'s decision with the
store's revocations and the golden set of ``--golden DIR``; without it, ``unknown``.
DEVICE is a device id or a unique prefix of one (``verifier.store.
resolve_device``, as every command and RPC). AK names are printed and taken in full.
"""

from __future__ import annotations

import argparse
import sys
import time

from verifier import lifecycle
from verifier.auditlog import local_caller, record_operator_action
from verifier.cli.common import Subparsers, iso, print_json, print_table, read_store, write_store
from verifier.cli.judge import LocalJudge, add_golden_flag
from verifier.currency import Currency, trusted
from verifier.records import DeviceRecord
from verifier.store import resolve_device
from verifier.verdict import Freshness, Reason, Verdict


def register(sub: Subparsers[argparse.ArgumentParser]) -> Subparsers[argparse.ArgumentParser]:
    """Add ``devices``, ``verdict`` (returns its subparsers) and ``approve-ak``."""
    devices = sub.add_parser("devices", help="list enrolled devices and their latest verdicts")
    devices.add_argument("--db", required=True, help="SQLite file or postgresql:// URL")
    devices.add_argument("--json", action="store_true", help="one JSON document")
    add_golden_flag(devices)
    devices.set_defaults(func=cmd_devices)

    verdict = sub.add_parser("verdict", help="verdicts")
    vsub = verdict.add_subparsers(dest="verdict_command", required=True, metavar="COMMAND")
    show = vsub.add_parser("show", help="the latest verdict of a device, with its reasons")
    show.add_argument("device", metavar="DEVICE", help="device id or unique prefix")
    show.add_argument("--db", required=True, help="SQLite file or postgresql:// URL")
    show.add_argument("--history", type=int, default=0, help="also show N earlier verdicts")
    show.add_argument("--json", action="store_true", help="one JSON document")
    add_golden_flag(show)
    show.set_defaults(func=cmd_verdict_show)

    approve = sub.add_parser("approve-ak", help="approve a new AK for an enrolled EK")
    approve.add_argument("device", metavar="DEVICE", help="device id or unique prefix")
    approve.add_argument("ak_name", help="the pending AK's full hex TPM name (see 'devices')")
    approve.add_argument("--db", required=True, help="SQLite file or postgresql:// URL")
    approve.set_defaults(func=cmd_approve_ak)
    return vsub


def cmd_devices(ns: argparse.Namespace) -> int:
    with read_store(ns.db) as store:
        judge = LocalJudge(store, ns.golden)
        listed = []
        for device in store.list_devices():
            latest = store.latest_verdict(device.device_id)
            current = judge.currency(latest, device, latest.boot_epoch) if latest else None
            listed.append((device, latest, current))
    if ns.json:
        print_json(
            {
                "devices": [
                    device_document(d, v, c, judge.revocations.revoked_identity(d.device_id))
                    for d, v, c in listed
                ]
            }
        )
        return 0
    header = (
        "DEVICE PROFILE STATE LABELS ENROLLED LAST_ATTESTED STATUS FRESHNESS RELEASE PENDING_AK"
    )
    rows = [tuple(word.replace("_", " ") for word in header.split())]
    for device, latest, current in listed:
        labels = ",".join(f"{k}={v}" for k, v in sorted(device.labels.items()))
        state = (
            "revoked"
            if judge.revocations.revoked_identity(device.device_id)
            else ("active" if device.approved else "waiting")
        )
        rows.append(
            (
                device.device_id,
                device.profile or "-",
                state,
                labels,
                str(device.enrollment_count),
                iso(latest.issued_at) if latest else "never",
                latest.status.value if latest else "-",
                current.state.value if current else "-",
                (latest.release or "-") if latest else "-",
                device.pending_ak_name.hex(),
            )
        )
    print_table(rows)
    return 0


def cmd_verdict_show(ns: argparse.Namespace) -> int:
    if ns.history < 0:
        print("attest-verifier: --history must be 0 or more", file=sys.stderr)
        return 2
    with read_store(ns.db) as store:
        judge = LocalJudge(store, ns.golden)
        device_id = resolve_device(store, ns.device)
        device = store.get_device(device_id)
        history = store.verdict_history(device_id, limit=1 + ns.history)
    if not history:
        print(f"attest-verifier: device {device_id} has no verdict", file=sys.stderr)
        return 1
    epoch = history[0].boot_epoch
    judged = [(v, judge.currency(v, device, epoch)) for v in history]
    if ns.json:
        print_json(
            {"device_id": device_id, "verdicts": [verdict_document(v, c) for v, c in judged]}
        )
        return 0
    for verdict, current in judged:
        print(format_verdict(verdict, current))
    return 0


def cmd_approve_ak(ns: argparse.Namespace) -> int:
    try:
        name = bytes.fromhex(ns.ak_name)
    except ValueError:
        print(f"attest-verifier: {ns.ak_name!r} is not a hex AK name", file=sys.stderr)
        return 2
    with write_store(ns.db) as store:
        device_id = resolve_device(store, ns.device)
        if not lifecycle.approve_ak(store, device_id, name, time.time()):
            print(
                f"attest-verifier: device {device_id} has no pending AK named {ns.ak_name}",
                file=sys.stderr,
            )
            return 1
        record_operator_action(
            store,
            local_caller(),
            "approve_ak",
            {"device_id": device_id, "ak_name": ns.ak_name},
            time.time(),
        )
    print(f"approved AK {ns.ak_name} for {device_id}")
    return 0


def device_document(
    device: DeviceRecord, latest: Verdict | None, current: Currency | None, revoked: str | None
) -> dict[str, object]:
    return {
        "device_id": device.device_id,
        "profile": device.profile or None,
        "approved": device.approved,
        "revoked": revoked,
        "labels": dict(sorted(device.labels.items())),
        "enrollment_count": device.enrollment_count,
        "enrolled_at": iso(device.enrolled_at),
        "ak_name": device.ak_name.hex(),
        "pending_ak_name": device.pending_ak_name.hex() or None,
        "last_attested_at": iso(latest.issued_at) if latest else None,
        "last_status": latest.status.value if latest else None,
        "latest_verdict": verdict_document(latest, current) if latest and current else None,
    }


def verdict_document(verdict: Verdict, current: Currency) -> dict[str, object]:
    return {
        "verdict_id": verdict.verdict_id,
        "sequence": verdict.sequence,
        "device_id": verdict.device_id,
        "status": verdict.status.value,
        "freshness": current.state.value,
        "currency_reason": current.why or None,
        "trusted": trusted(verdict, current),
        "profile": verdict.profile,
        "release": verdict.release or None,
        "golden_digest": verdict.golden_digest,
        "boot_epoch": {
            "reset_count": verdict.boot_epoch.reset_count,
            "restart_count": verdict.boot_epoch.restart_count,
        },
        "safe": verdict.safe,
        "clock_ms": verdict.clock,
        "tpm_firmware_version": f"0x{verdict.firmware_version:016x}",
        "issued_at": iso(verdict.issued_at),
        "expires_at": iso(verdict.expires_at),
        "reasons": [reason_document(r) for r in verdict.reasons],
    }


def reason_document(reason: Reason) -> dict[str, object]:
    return {
        "code": reason.code,
        "severity": reason.severity.value,
        "text": reason.text,
        "pcr": reason.pcr,
        "event_index": reason.event_index,
        "expected": reason.expected or None,
        "actual": reason.actual or None,
        "release": reason.release or None,
        "rule": reason.rule or None,
    }


def format_verdict(verdict: Verdict, current: Currency) -> str:
    fresh = current.state
    verdict_word = "TRUSTED" if trusted(verdict, current) else "NOT TRUSTED"
    lines = [
        f"device      {verdict.device_id}",
        f"verdict     {verdict.verdict_id}  sequence {verdict.sequence}",
        f"status      {verdict.status.value} ({fresh.value}; {verdict_word})",
        f"profile     {verdict.profile}  release {verdict.release or '-'}",
        f"golden      {verdict.golden_digest}",
        f"boot epoch  reset {verdict.boot_epoch.reset_count}"
        f" restart {verdict.boot_epoch.restart_count}  safe {int(verdict.safe)}"
        f"  clock {verdict.clock} ms  TPM firmware 0x{verdict.firmware_version:016x}",
        f"issued      {iso(verdict.issued_at)}",
        f"expires     {iso(verdict.expires_at)}"
        + ("  (expired: unknown, not trusted)" if fresh is Freshness.EXPIRED else ""),
    ]
    if current.why:
        lines.append(f"why         {current.why}")
    for reason in verdict.reasons:
        where = f" pcr {reason.pcr}" if reason.pcr is not None else ""
        where += f" event {reason.event_index}" if reason.event_index is not None else ""
        lines.append(f"  - [{reason.severity.value}] {reason.code}{where}: {reason.text}")
        if reason.expected or reason.actual:
            lines.append(f"      expected {reason.expected or '-'}  actual {reason.actual or '-'}")
    return "\n".join(lines) + "\n"
