"""``audit``: what an auditor or an incident responder runs against the store (or an export).

    attest-verifier audit init-key FILE [--name NAME]
    attest-verifier audit verify --key VKEY (--db DB | --export FILE) [--json]
    attest-verifier audit show DEVICE --at TIME --db DB [--json]
    attest-verifier audit replay VERDICT_ID --db DB [--golden DIR] [--json]
    attest-verifier audit proof inclusion VERDICT_ID --db DB [--size N]
    attest-verifier audit proof consistency OLD NEW --db DB
    attest-verifier audit export --db DB [--from POSITION]
    attest-verifier audit checkpoint --db DB --audit-key FILE

Every command but ``init-key`` and ``checkpoint`` opens the store read-only. VKEY is the
verifier key string ``init-key`` printed (or a file holding it). TIME is ISO 8601
(``2026-07-21T14:00:00Z``) or POSIX seconds. Exit 1 when ``verify`` finds any problem or
``replay`` does not reproduce the recorded verdict.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from collections.abc import Mapping as MappingABC
from datetime import datetime
from pathlib import Path

from verifier import auditlog
from verifier.audit import VerifierKey, verify_log
from verifier.audit.history import StoredAttestation
from verifier.cli.common import (
    Subparsers,
    UsageError,
    iso,
    print_json,
    read_store,
    write_store,
)
from verifier.golden.load import SUFFIXES, read_golden_file
from verifier.store import resolve_device

DB_HELP = "SQLite file or postgresql:// URL"


def register(sub: Subparsers[argparse.ArgumentParser]) -> None:
    audit = sub.add_parser("audit", help="the tamper-evident audit log: verify, show, replay")
    commands = audit.add_subparsers(dest="audit_command", required=True, metavar="COMMAND")

    init = commands.add_parser("init-key", help="create the checkpoint signing key (0600)")
    init.add_argument("file", type=Path)
    init.add_argument("--name", default=auditlog.DEFAULT_KEY_NAME, help="log origin / key name")
    init.set_defaults(func=cmd_init_key)

    verify = commands.add_parser("verify", help="recompute the tree, check every checkpoint")
    verify.add_argument("--key", required=True, help="verifier key string, or a file with it")
    source = verify.add_mutually_exclusive_group(required=True)
    source.add_argument("--db", help=DB_HELP)
    source.add_argument("--export", type=Path, help="a JSON-lines export (from position 0)")
    verify.add_argument("--json", action="store_true")
    verify.set_defaults(func=cmd_verify)

    show = commands.add_parser("show", help="the verdict current for a device at a time")
    show.add_argument("device", metavar="DEVICE")
    show.add_argument("--at", required=True, help="ISO 8601 time or POSIX seconds")
    show.add_argument("--db", required=True, help=DB_HELP)
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_show)

    rerun = commands.add_parser("replay", help="re-run the appraisal of a stored verdict")
    rerun.add_argument("verdict_id")
    rerun.add_argument("--db", required=True, help=DB_HELP)
    rerun.add_argument(
        "--golden", type=Path, help="the golden files of that time, if the store lacks them"
    )
    rerun.add_argument("--json", action="store_true")
    rerun.set_defaults(func=cmd_replay)

    proof = commands.add_parser("proof", help="inclusion and consistency proofs")
    proofs = proof.add_subparsers(dest="proof_command", required=True, metavar="KIND")
    inclusion = proofs.add_parser("inclusion", help="a verdict's entry is in the tree")
    inclusion.add_argument("verdict_id")
    inclusion.add_argument("--db", required=True, help=DB_HELP)
    inclusion.add_argument("--size", type=int, help="tree size (default: the log's head)")
    inclusion.set_defaults(func=cmd_inclusion)
    consistency = proofs.add_parser("consistency", help="tree OLD is a prefix of tree NEW")
    consistency.add_argument("old", type=int)
    consistency.add_argument("new", type=int)
    consistency.add_argument("--db", required=True, help=DB_HELP)
    consistency.set_defaults(func=cmd_consistency)

    export = commands.add_parser("export", help="entries as JSON lines (resumable)")
    export.add_argument("--db", required=True, help=DB_HELP)
    export.add_argument("--from", dest="start", type=int, default=0, help="first position")
    export.set_defaults(func=cmd_export)

    checkpoint = commands.add_parser("checkpoint", help="sign the log's head now")
    checkpoint.add_argument("--db", required=True, help=DB_HELP)
    checkpoint.add_argument("--audit-key", type=Path, required=True)
    checkpoint.set_defaults(func=cmd_checkpoint)


def parse_time(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise UsageError(f"{text!r} is neither ISO 8601 nor POSIX seconds") from exc
    if parsed.tzinfo is None:
        raise UsageError(f"{text!r} has no time zone (add Z for UTC)")
    return parsed.timestamp()


def _key(text: str) -> VerifierKey:
    path = Path(text)
    if "+" not in text and path.is_file():
        text = path.read_text().strip()
    return VerifierKey.parse(text.strip())


def cmd_init_key(ns: argparse.Namespace) -> int:
    signer = auditlog.create_key_file(ns.file, ns.name)
    print(f"checkpoint signing key written to {ns.file} (mode 0600)")
    print("verifier key for auditors (audit verify --key ...):")
    print(signer.verifier().encode())
    return 0


def _progress(phase: str, done: int) -> None:
    what = "log entries hashed" if phase == "entries" else "attestation rows checked"
    print(f"attest-verifier: audit verify: {done} {what}", file=sys.stderr, flush=True)


def cmd_verify(ns: argparse.Namespace) -> int:
    key = _key(ns.key)
    if ns.export is not None:
        with ns.export.open(encoding="utf-8") as lines:
            entries, checkpoints = auditlog.read_export(lines)
        report = verify_log(entries, checkpoints, key)
    else:
        with read_store(ns.db) as store:
            report = auditlog.verify_store(store, key, progress=_progress)
    if ns.json:
        print_json(
            {
                "size": report.size,
                "root": report.root.hex(),
                "checkpoints_verified": report.checkpoints_verified,
                "latest_matching_size": report.latest_matching.size
                if report.latest_matching
                else None,
                "problems": [
                    {
                        "kind": p.kind.value,
                        "position": p.position,
                        "checkpoint": p.checkpoint,
                        "detail": p.detail,
                    }
                    for p in report.problems
                ],
            }
        )
    else:
        matching = report.latest_matching.size if report.latest_matching else "none"
        print(
            f"{report.size} entries, root {report.root.hex()}; "
            f"{report.checkpoints_verified} checkpoints verified, latest matching size {matching}"
        )
        for p in report.problems:
            where = f"position {p.position}" if p.position is not None else "-"
            cp = f" checkpoint {p.checkpoint}" if p.checkpoint is not None else ""
            print(f"PROBLEM {p.kind.value} at {where}{cp}: {p.detail}")
        print("OK" if report.ok else f"{len(report.problems)} problems")
    return 0 if report.ok else 1


def _attestation_json(a: StoredAttestation) -> dict[str, object]:
    return {
        "verdict_id": a.verdict_id,
        "sequence": a.sequence,
        "received_at": iso(a.received_at),
        "evidence_digest": a.evidence_digest,
        "audit_position": a.audit_position,
        "purged_at": iso(a.purged_at) if a.purged_at is not None else None,
        "evidence": None
        if a.record is None
        else {
            "bank": a.record.issued.bank,
            "profile": a.record.issued.profile,
            "nonce": a.record.issued.nonce.hex(),
            "quote": a.record.quote.hex(),
            "signature": a.record.signature.hex(),
            "pcrs": {str(i): v.hex() for i, v in a.record.pcr_values},
            "event_log_sha256": a.record.log_digest.hex(),
            "event_log_bytes": len(a.record.event_log),
        },
    }


def cmd_show(ns: argparse.Namespace) -> int:
    at = parse_time(ns.at)
    with read_store(ns.db) as store:
        device_id = resolve_device(store, ns.device)
        decision = auditlog.show(store, device_id, at)
    if decision is None:
        print(f"attest-verifier: {device_id} had no verdict at {iso(at)}", file=sys.stderr)
        return 1
    entry = dict(decision.entry.fields) if decision.entry else {}
    verdict = decision.verdict
    document = {
        "device_id": device_id,
        "at": iso(at),
        "attestation": _attestation_json(decision.attestation),
        "log_entry": entry,
        "verdict": None
        if verdict is None
        else {
            "status": verdict.status.value,
            "profile": verdict.profile,
            "release": verdict.release,
            "golden_digest": verdict.golden_digest,
            "issued_at": iso(verdict.issued_at),
            "expires_at": iso(verdict.expires_at),
            "reasons": [{"code": r.code, "text": r.text} for r in verdict.reasons],
        },
        "golden_files": dict(decision.golden_files),
    }
    if ns.json:
        print_json(document)
        return 0
    a = decision.attestation
    print(
        f"device {device_id} at {iso(at)}: verdict {a.verdict_id} (log position "
        f"{a.audit_position}) received {iso(a.received_at)}"
    )
    status = verdict.status.value if verdict else entry.get("status", "?")
    print(f"  status {status}, golden {entry.get('golden_digest', '-')}")
    if verdict is not None:
        print(
            f"  profile {verdict.profile}, release {verdict.release or '-'}, "
            f"expires {iso(verdict.expires_at)}"
        )
        for reason in verdict.reasons:
            print(f"  reason {reason.code}: {reason.text}")
    else:
        print(f"  verdict row purged by retention; reason codes {entry.get('codes', ())}")
    print(f"  evidence {a.evidence_digest or '-'}" + (" (body purged)" if a.record is None else ""))
    if a.record is not None:
        print(
            f"  quote {len(a.record.quote)} bytes, event log sha256 "
            f"{a.record.log_digest.hex()} ({len(a.record.event_log)} bytes)"
        )
    for name, sha in sorted(decision.golden_files.items()):
        print(f"  golden file {name} sha256 {sha}")
    return 0


class _GoldenDirFiles(MappingABC[str, bytes]):
    """The files of ``--golden DIR`` by name, read when asked for (only those the golden
    history names are), with the loader's checks; a missing file is a missing key."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._read: dict[str, bytes | None] = {}

    def _get(self, name: str) -> bytes | None:
        if name not in self._read:
            path = self.directory / name
            self._read[name] = (
                read_golden_file(self.directory, name)
                if path.is_file() or path.is_symlink()
                else None
            )
        return self._read[name]

    def __getitem__(self, name: str) -> bytes:
        data = self._get(name)
        if data is None:
            raise KeyError(name)
        return data

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._get(name) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(p.name for p in self.directory.iterdir() if p.suffix in SUFFIXES))

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _read_golden_dir(directory: Path | None) -> MappingABC[str, bytes] | None:
    return None if directory is None else _GoldenDirFiles(directory)


def cmd_replay(ns: argparse.Namespace) -> int:
    supplied = _read_golden_dir(ns.golden)
    with read_store(ns.db) as store:
        result = auditlog.replay(store, ns.verdict_id, supplied)
    replayed = result.replayed
    if ns.json:
        print_json(
            {
                "verdict_id": result.verdict_id,
                "recorded_status": result.recorded_status,
                "replayed_status": replayed.status.value,
                "status_matches": result.status_matches,
                "reasons_match": result.reasons_match,
                "reproduced": result.reproduced,
                "replayed_reasons": [r.code for r in replayed.reasons],
            }
        )
    else:
        print(
            f"verdict {result.verdict_id}: recorded {result.recorded_status}, replayed "
            f"{replayed.status.value}; status {'matches' if result.status_matches else 'DIFFERS'}"
            f", reasons {'match' if result.reasons_match else 'DIFFER'} byte for byte"
        )
        print("REPRODUCED" if result.reproduced else "NOT REPRODUCED")
    return 0 if result.reproduced else 1


def cmd_inclusion(ns: argparse.Namespace) -> int:
    with read_store(ns.db) as store:
        position = auditlog.position_of(store, ns.verdict_id)
        proof = auditlog.inclusion_proof(store, position, ns.size)
    print_json(
        {
            "verdict_id": ns.verdict_id,
            "position": proof.position,
            "tree_size": proof.size,
            "root": proof.root.hex(),
            "leaf_hash": proof.leaf_hash.hex(),
            "entry": proof.entry.decode("utf-8", "replace"),
            "proof": [h.hex() for h in proof.proof],
        }
    )
    return 0


def cmd_consistency(ns: argparse.Namespace) -> int:
    with read_store(ns.db) as store:
        proof = auditlog.consistency_proof(store, ns.old, ns.new)
    print_json(
        {
            "old_size": proof.old_size,
            "new_size": proof.new_size,
            "old_root": proof.old_root.hex(),
            "new_root": proof.new_root.hex(),
            "proof": [h.hex() for h in proof.proof],
        }
    )
    return 0


def cmd_export(ns: argparse.Namespace) -> int:
    if ns.start < 0:
        raise UsageError("--from must be a position (0 or more)")
    with read_store(ns.db) as store:
        for line in auditlog.export_lines(store, ns.start):
            sys.stdout.write(line + "\n")
    return 0


def cmd_checkpoint(ns: argparse.Namespace) -> int:
    signer = auditlog.load_signer(ns.audit_key)
    with write_store(ns.db) as store:
        note = auditlog.write_checkpoint(store, signer, time.time())
    if note is None:
        print("the log has not grown since the latest checkpoint")
    else:
        sys.stdout.write(note.decode("utf-8"))
    return 0


__all__ = ["parse_time", "register"]
