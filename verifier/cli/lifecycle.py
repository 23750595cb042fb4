"""Operators own the fleet, on the store: inventory, approval, profiles, revocation.

    attest-verifier inventory add (--ek FP | --ek-issuer DN --ek-serial HEX) --profile P
                                  [--label K=V ...] --db DB
    attest-verifier inventory remove (--ek FP | --ek-issuer DN --ek-serial HEX) --db DB
    attest-verifier inventory list --db DB [--json]
    attest-verifier inventory import FILE.csv --db DB
    attest-verifier approve-device DEVICE --profile P [--reason R] --db DB [--golden DIR]
    attest-verifier device set-profile DEVICE PROFILE --reason R --db DB [--golden DIR]
    attest-verifier device history DEVICE --db DB
    attest-verifier decommission DEVICE --reason R --db DB
    attest-verifier ek deny FINGERPRINT --reason R --db DB
    attest-verifier ek undeny FINGERPRINT --reason R --db DB
    attest-verifier revoke-ak DEVICE AK_NAME --reason R --db DB
    attest-verifier revocations --db DB [--all] [--json]

Each change is recorded with the local user name (``local:<user>``), the time and the reason,
and supersedes the device's latest verdict at once: every verifier on the store streams the
event within its poll interval. ``--golden DIR`` checks that a profile exists before binding
it (a device bound to an unknown profile is refused at its next challenge, never affirmed).
The same operations are Operator RPCs on a running verifier (``verifier.service.api``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from verifier import lifecycle
from verifier.cli.common import (
    Subparsers,
    UsageError,
    iso,
    print_json,
    print_table,
    read_store,
    write_store,
)
from verifier.enrollment.policy import (
    certificate_key,
    fingerprint_key,
    parse_inventory_csv,
    parse_labels,
)
from verifier.golden.load import GoldenError, load_golden_dir
from verifier.records import InventoryEntry
from verifier.store import resolve_device

DB_HELP = "SQLite file or postgresql:// URL"


def register(sub: Subparsers[argparse.ArgumentParser]) -> None:
    _register_inventory(sub)
    approve = sub.add_parser("approve-device", help="approve a waiting device with a profile")
    approve.add_argument("device", metavar="DEVICE", help="device id or unique prefix")
    approve.add_argument("--profile", required=True, help="the golden profile to bind")
    approve.add_argument("--reason", default="", help="recorded with the approval")
    _store_flags(approve, golden=True)
    approve.set_defaults(func=cmd_approve_device)

    device = sub.add_parser("device", help="change an enrolled device")
    dsub = device.add_subparsers(dest="device_command", required=True, metavar="COMMAND")
    set_profile = dsub.add_parser("set-profile", help="bind the device to another profile")
    set_profile.add_argument("device", metavar="DEVICE")
    set_profile.add_argument("profile", metavar="PROFILE")
    set_profile.add_argument("--reason", required=True)
    _store_flags(set_profile, golden=True)
    set_profile.set_defaults(func=cmd_set_profile)
    history = dsub.add_parser("history", help="the recorded operator changes of a device")
    history.add_argument("device", metavar="DEVICE")
    _store_flags(history)
    history.set_defaults(func=cmd_history)

    decommission = sub.add_parser("decommission", help="take a device out of the fleet")
    decommission.add_argument("device", metavar="DEVICE")
    decommission.add_argument("--reason", required=True)
    _store_flags(decommission)
    decommission.set_defaults(func=cmd_decommission)

    ek = sub.add_parser("ek", help="deny or undeny an EK (a stolen or recalled TPM)")
    esub = ek.add_subparsers(dest="ek_command", required=True, metavar="COMMAND")
    for name, func in (("deny", cmd_deny_ek), ("undeny", cmd_undeny_ek)):
        cmd = esub.add_parser(name, help=f"{name} an EK by fingerprint (or device id)")
        cmd.add_argument("fingerprint", metavar="FINGERPRINT")
        cmd.add_argument("--reason", required=True)
        _store_flags(cmd)
        cmd.set_defaults(func=func)

    revoke = sub.add_parser("revoke-ak", help="revoke a device's AK; its quotes are refused")
    revoke.add_argument("device", metavar="DEVICE")
    revoke.add_argument("ak_name", help="the AK's full hex TPM name")
    revoke.add_argument("--reason", required=True)
    _store_flags(revoke)
    revoke.set_defaults(func=cmd_revoke_ak)

    listing = sub.add_parser("revocations", help="standing revocations (--all: lifted too)")
    listing.add_argument("--all", action="store_true")
    listing.add_argument("--json", action="store_true")
    _store_flags(listing)
    listing.set_defaults(func=cmd_revocations)


def _store_flags(parser: argparse.ArgumentParser, *, golden: bool = False) -> None:
    parser.add_argument("--db", required=True, help=DB_HELP)
    if golden:
        parser.add_argument("--golden", type=Path, help="check the profile against this set")


def _register_inventory(sub: Subparsers[argparse.ArgumentParser]) -> None:
    inventory = sub.add_parser("inventory", help="devices listed ahead of time")
    isub = inventory.add_subparsers(dest="inventory_command", required=True, metavar="COMMAND")
    add = isub.add_parser("add", help="list an EK with the profile it gets")
    _key_flags(add)
    add.add_argument("--profile", required=True)
    add.add_argument("--label", action="append", default=[], help="K=V (informational)")
    _store_flags(add, golden=True)
    add.set_defaults(func=cmd_inventory_add)
    remove = isub.add_parser("remove", help="unlist an EK (enrolled devices stay enrolled)")
    _key_flags(remove)
    _store_flags(remove)
    remove.set_defaults(func=cmd_inventory_remove)
    listing = isub.add_parser("list", help="every listed EK")
    listing.add_argument("--json", action="store_true")
    _store_flags(listing)
    listing.set_defaults(func=cmd_inventory_list)
    load = isub.add_parser("import", help="list every row of a CSV file")
    load.add_argument("file", type=Path)
    _store_flags(load, golden=True)
    load.set_defaults(func=cmd_inventory_import)


def _key_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ek", help="EK fingerprint (64 hex digits) or device id")
    parser.add_argument("--ek-issuer", help="EK certificate issuer (RFC 4514)")
    parser.add_argument("--ek-serial", help="EK certificate serial (hex)")


def _key(ns: argparse.Namespace) -> str:
    if ns.ek and not (ns.ek_issuer or ns.ek_serial):
        return fingerprint_key(ns.ek.removeprefix("dev-"))
    if not ns.ek and ns.ek_issuer and ns.ek_serial:
        return certificate_key(ns.ek_issuer, ns.ek_serial)
    raise UsageError("give either --ek FINGERPRINT or both --ek-issuer and --ek-serial")


def _check_profiles(golden: Path | None, profiles: set[str]) -> None:
    if golden is None:
        return
    try:
        known = {p.name for p in load_golden_dir(golden).profiles}
    except GoldenError as exc:
        raise UsageError(
            f"{golden}: not a valid golden set ({len(exc.problems)} problems)"
        ) from exc
    unknown = sorted(profiles - known)
    if unknown:
        raise UsageError(f"profile {', '.join(unknown)} is not in {golden}")


def cmd_inventory_add(ns: argparse.Namespace) -> int:
    key = _key(ns)
    _check_profiles(ns.golden, {ns.profile})
    entry = InventoryEntry(
        key, ns.profile, parse_labels(ns.label), lifecycle.local_actor(), time.time()
    )
    with write_store(ns.db) as store:
        store.put_inventory(entry)
    print(f"listed {key} with profile {ns.profile}")
    return 0


def cmd_inventory_remove(ns: argparse.Namespace) -> int:
    key = _key(ns)
    with write_store(ns.db) as store:
        removed = store.remove_inventory(key)
    print(f"{'removed' if removed else 'not listed:'} {key}")
    return 0 if removed else 1


def cmd_inventory_list(ns: argparse.Namespace) -> int:
    with read_store(ns.db) as store:
        entries = store.inventory()
    if ns.json:
        print_json(
            {
                "inventory": [
                    {
                        "key": e.key,
                        "profile": e.profile,
                        "labels": e.labels,
                        "added_by": e.added_by,
                        "added_at": iso(e.added_at),
                    }
                    for e in entries
                ]
            }
        )
        return 0
    rows = [("KEY", "PROFILE", "LABELS", "ADDED BY", "ADDED AT")]
    for e in entries:
        labels = ",".join(f"{k}={v}" for k, v in sorted(e.labels.items()))
        rows.append((e.key, e.profile, labels, e.added_by, iso(e.added_at)))
    print_table(rows)
    return 0


def cmd_inventory_import(ns: argparse.Namespace) -> int:
    rows = parse_inventory_csv(ns.file.read_text(encoding="utf-8"), str(ns.file))
    _check_profiles(ns.golden, {profile for _, profile, _ in rows})
    actor, now = lifecycle.local_actor(), time.time()
    with write_store(ns.db) as store:
        for key, profile, labels in rows:
            store.put_inventory(InventoryEntry(key, profile, labels, actor, now))
    print(f"listed {len(rows)} devices from {ns.file}")
    return 0


def cmd_approve_device(ns: argparse.Namespace) -> int:
    _check_profiles(ns.golden, {ns.profile})
    with write_store(ns.db) as store:
        device_id = resolve_device(store, ns.device)
        lifecycle.approve_device(
            store, device_id, ns.profile, lifecycle.local_actor(), time.time(), ns.reason
        )
    print(f"approved {device_id} with profile {ns.profile}")
    return 0


def cmd_set_profile(ns: argparse.Namespace) -> int:
    _check_profiles(ns.golden, {ns.profile})
    with write_store(ns.db) as store:
        device_id = resolve_device(store, ns.device)
        superseded = lifecycle.set_profile(
            store, device_id, ns.profile, lifecycle.local_actor(), time.time(), ns.reason
        )
    print(f"{device_id} bound to profile {ns.profile} ({superseded} verdict superseded)")
    return 0


def cmd_history(ns: argparse.Namespace) -> int:
    with read_store(ns.db) as store:
        device_id = resolve_device(store, ns.device)
        changes = store.device_changes(device_id)
    rows = [("AT", "WHAT", "BEFORE", "AFTER", "BY", "REASON")]
    rows += [
        (iso(c.at), c.what, c.before or "-", c.after, c.actor, c.reason or "-") for c in changes
    ]
    print_table(rows)
    return 0


def _done(what: str, done: lifecycle.Revoked) -> int:
    print(f"{what}; {done.superseded} verdict superseded")
    return 0


def cmd_decommission(ns: argparse.Namespace) -> int:
    with write_store(ns.db) as store:
        device_id = resolve_device(store, ns.device)
        done = lifecycle.decommission(
            store, device_id, ns.reason, lifecycle.local_actor(), time.time()
        )
    return _done(f"decommissioned {device_id}", done)


def cmd_deny_ek(ns: argparse.Namespace) -> int:
    with write_store(ns.db) as store:
        done = lifecycle.deny_ek(
            store, ns.fingerprint, ns.reason, lifecycle.local_actor(), time.time()
        )
    return _done(f"denied EK {done.record.subject}", done)


def cmd_undeny_ek(ns: argparse.Namespace) -> int:
    with write_store(ns.db) as store:
        lifted = lifecycle.undeny_ek(
            store, ns.fingerprint, ns.reason, lifecycle.local_actor(), time.time()
        )
    print(f"{'undenied' if lifted else 'not denied:'} EK {ns.fingerprint}")
    return 0 if lifted else 1


def cmd_revoke_ak(ns: argparse.Namespace) -> int:
    with write_store(ns.db) as store:
        device_id = resolve_device(store, ns.device)
        done = lifecycle.revoke_ak(
            store, device_id, ns.ak_name, ns.reason, lifecycle.local_actor(), time.time()
        )
    return _done(f"revoked AK {done.record.subject} of {device_id}", done)


def cmd_revocations(ns: argparse.Namespace) -> int:
    with read_store(ns.db) as store:
        records = store.revocations(include_lifted=ns.all)
    if ns.json:
        print_json(
            {
                "revocations": [
                    {
                        "kind": r.kind.value,
                        "subject": r.subject,
                        "device_id": r.device_id or None,
                        "reason": r.reason,
                        "by": r.actor,
                        "at": iso(r.at),
                        "lifted_at": iso(r.lifted_at) if r.lifted_at is not None else None,
                        "lifted_by": r.lifted_by or None,
                        "lifted_reason": r.lifted_reason or None,
                    }
                    for r in records
                ]
            }
        )
        return 0
    rows = [("KIND", "SUBJECT", "BY", "AT", "REASON", "LIFTED")]
    for r in records:
        lifted = f"{iso(r.lifted_at)} by {r.lifted_by}" if r.lifted_at is not None else "-"
        rows.append((r.kind.value, r.subject, r.actor, iso(r.at), r.reason, lifted))
    print_table(rows)
    return 0
