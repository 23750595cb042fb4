"""``attest-verifier``: run the verifier and operate it.

    attest-verifier serve --listen HOST:PORT --db DB --ek-ca DIR [--golden DIR] [--processes N]
    attest-verifier devices --db DB
    attest-verifier verdict show DEVICE --db DB [--history N]
    attest-verifier verdict check DEVICE --max-age 10m (--verifier ADDR [--jwks FILE] | --db DB)
    attest-verifier approve-ak DEVICE AK_NAME --db DB
    attest-verifier keys export-jwks --keys DIR FILE | keys rotate --keys DIR [--overlap 2h]
    attest-verifier eventlog {show,replay,facts} FILE
    attest-verifier golden {lint,learn,explain,dry-run} ...
    attest-verifier golden reload --verifier ADDR | status --verifier ADDR

DB is a SQLite file or a postgresql:// URL. DEVICE may be a unique prefix of a device id.
Exit codes: 0 success, 1 a check failed (lint problems, an untrusted verdict), 2 bad input.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from verifier import __version__, errors, operator_cli
from verifier.eventlog import cli as eventlog_cli
from verifier.golden import cli as golden_cli
from verifier.serve import serve_command
from verifier.store import open_store
from verifier.token import cli as token_cli
from verifier.verdict import Freshness, Verdict

log = logging.getLogger("attest-verifier")

DEFAULT_GOLDEN = Path(__file__).resolve().parent.parent / "golden_measurements"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, ns.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(ns.func(ns))
    except errors.AttestationError as exc:
        print(f"attest-verifier: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attest-verifier", description="fleet-attest: TPM 2.0 remote attestation verifier"
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the gRPC verifier")
    serve.add_argument(
        "--listen", default="127.0.0.1:50051", help="HOST:PORT (default %(default)s)"
    )
    serve.add_argument("--db", required=True, help="SQLite database file, or a postgresql:// URL")
    serve.add_argument("--ek-ca", type=Path, help="directory of trusted EK CA certificates")
    serve.add_argument("--allowlist", type=Path, help="file of allowed EK public-key SHA-256s")
    serve.add_argument("--golden", type=Path, default=DEFAULT_GOLDEN, help="golden directory")
    serve.add_argument(
        "--keys", type=Path, help="token signing key directory (default: DB path + '.keys')"
    )
    serve.add_argument("--issuer", default="fleet-attest", help="the tokens' iss claim")
    serve.add_argument("--nonce-ttl", type=float, default=60.0, help="seconds (default 60)")
    serve.add_argument("--workers", type=int, default=4, help="RPC threads per process (default 4)")
    serve.add_argument(
        "--processes",
        type=int,
        default=1,
        help="server processes sharing the port with SO_REUSEPORT (default 1; one per core)",
    )
    serve.add_argument("--port-file", type=Path, help="write the bound port here once serving")
    serve.set_defaults(func=serve_command)

    devices = sub.add_parser("devices", help="list enrolled devices and their latest verdicts")
    devices.add_argument("--db", required=True, help="SQLite file or postgresql:// URL")
    devices.set_defaults(func=cmd_devices)

    verdict = sub.add_parser("verdict", help="verdicts")
    vsub = verdict.add_subparsers(dest="verdict_command", required=True)
    show = vsub.add_parser("show", help="the latest verdict of a device, with its reasons")
    show.add_argument("device")
    show.add_argument("--db", required=True, help="SQLite file or postgresql:// URL")
    show.add_argument("--history", type=int, default=0, help="also show N earlier verdicts")
    show.set_defaults(func=cmd_verdict_show)
    token_cli.register_verdict_check(vsub)

    approve = sub.add_parser("approve-ak", help="approve a new AK for an enrolled EK")
    approve.add_argument("device")
    approve.add_argument("ak_name", help="hex TPM name of the pending AK (see 'devices')")
    approve.add_argument("--db", required=True, help="SQLite file or postgresql:// URL")
    approve.set_defaults(func=cmd_approve_ak)

    token_cli.register_keys(sub)
    eventlog_cli.register(sub)
    golden = golden_cli.register(sub)
    operator_cli.register(sub, golden)
    return parser


def cmd_devices(ns: argparse.Namespace) -> int:
    store = open_store(ns.db)
    now = time.time()
    rows = [("DEVICE", "LABELS", "ENROLLED", "STATUS", "FRESHNESS", "RELEASE", "PENDING AK")]
    for device in store.list_devices():
        latest = store.latest_verdict(device.device_id)
        labels = ",".join(f"{k}={v}" for k, v in sorted(device.labels.items()))
        status = latest.status.value if latest else "-"
        fresh = latest.freshness(now).value if latest else "-"
        release = (latest.release or "-") if latest else "-"
        pending = device.pending_ak_name.hex()[:16] if device.pending_ak_name else ""
        rows.append(
            (
                device.device_id[:19],
                labels,
                str(device.enrollment_count),
                status,
                fresh,
                release,
                pending,
            )
        )
    _print_table(rows)
    return 0


def cmd_verdict_show(ns: argparse.Namespace) -> int:
    store = open_store(ns.db)
    device_id = _resolve_device(store.list_devices(), ns.device)
    history = store.verdict_history(device_id, limit=1 + ns.history)
    if not history:
        print(f"device {device_id} has no verdict", file=sys.stderr)
        return 1
    for verdict in history:
        print(format_verdict(verdict, time.time()))
    return 0


def cmd_approve_ak(ns: argparse.Namespace) -> int:
    store = open_store(ns.db)
    device_id = _resolve_device(store.list_devices(), ns.device)
    if not store.approve_pending_ak(device_id, bytes.fromhex(ns.ak_name), time.time()):
        print(f"device {device_id} has no pending AK named {ns.ak_name}", file=sys.stderr)
        return 1
    print(f"approved AK {ns.ak_name} for {device_id}")
    return 0


def format_verdict(verdict: Verdict, now: float) -> str:
    fresh = verdict.freshness(now)
    trusted = "TRUSTED" if verdict.is_trusted(now) else "NOT TRUSTED"
    lines = [
        f"device      {verdict.device_id}",
        f"status      {verdict.status.value} ({fresh.value}; {trusted})",
        f"profile     {verdict.profile}  release {verdict.release or '-'}",
        f"golden      {verdict.golden_digest}",
        f"boot epoch  reset {verdict.boot_epoch.reset_count}"
        f" restart {verdict.boot_epoch.restart_count}  safe {int(verdict.safe)}"
        f"  clock {verdict.clock} ms  TPM firmware 0x{verdict.firmware_version:016x}",
        f"issued      {_iso(verdict.issued_at)}",
        f"expires     {_iso(verdict.expires_at)}"
        + ("  (expired: unknown, not trusted)" if fresh is Freshness.EXPIRED else ""),
    ]
    for reason in verdict.reasons:
        where = f" pcr {reason.pcr}" if reason.pcr is not None else ""
        where += f" event {reason.event_index}" if reason.event_index is not None else ""
        lines.append(f"  - [{reason.severity.value}] {reason.code}{where}: {reason.text}")
        if reason.expected or reason.actual:
            lines.append(f"      expected {reason.expected or '-'}  actual {reason.actual or '-'}")
    return "\n".join(lines) + "\n"


def _resolve_device(devices: Sequence[object], prefix: str) -> str:
    ids = [d.device_id for d in devices if d.device_id.startswith(prefix)]  # type: ignore[attr-defined]
    if len(ids) != 1:
        raise errors.UnknownDevice(
            f"{prefix!r} matches {len(ids)} devices; give more of the device id"
        )
    return str(ids[0])


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _print_table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


if __name__ == "__main__":
    raise SystemExit(main())
