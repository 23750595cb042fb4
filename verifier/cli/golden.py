"""``attest-verifier golden ...``: operator commands on golden measurement files.

    attest-verifier golden lint DIR
    attest-verifier golden learn --db DB --device ID [--name NAME] [--output FILE]
    attest-verifier golden learn --event-log FILE --pcrs FILE [--bank sha256] [--name NAME]
    attest-verifier golden explain DEVICE --db DB --golden DIR [--ima-log FILE]
    attest-verifier golden dry-run DIR --db DB [--golden CURRENT_DIR]
    attest-verifier golden learn --ima-log FILE [--exclude GLOB] [--output FILE]
    attest-verifier golden import-keylime POLICY.json [--output FILE]

``lint`` loads DIR exactly as the verifier would (same loader, same limits) and prints each
problem as ``file:line:column: message`` with its hint on the next line, then a summary;
warnings (a runtime exclusion that matches every path) are printed as ``warning: ...``.
Exit codes: 0 clean, 1 problems found, 2 DIR missing or unreadable.

``learn`` prints (or writes to a new ``--output`` file) a candidate release learned from a
device's latest stored evidence or from files: an event log and the PCR values a quote
proved, as JSON ``{"0": "<hex>", ...}`` (the per-bank shape ``eventlog replay --json``
prints; its whole output ``{"sha256": {...}}`` is accepted too and ``--bank`` picks the bank).
Feeding a log's own replay back proves nothing: take the values from a quote
(``tpm2_pcrread``) when the evidence is not from the store. The selection is every PCR given
unless ``--select 0,4,7,8,9``. Never applied: review it, paste it under ``releases:``, lint.

``explain`` shows, for a device's latest evidence (DEVICE may be a unique prefix of its id),
every rule of every release of its profile: PASS or FAIL with expected and actual. For a
profile with a ``runtime:`` section it then judges the IMA entries the verifier holds for the
device's current boot (rebuilt from the attestation history: the last whole list and the
increments after it) by the set's runtime policy, printing each failing entry (number,
path, template, code, expected, actual) and one summary line; ``--ima-log FILE`` judges
that list (binary or ASCII) instead. Entries the history cannot give (purged by retention,
only the running state kept) are reported as ``runtime not re-evaluated: <why>``.
``dry-run`` evaluates a proposed directory against the latest evidence (and held runtime
entries) of every device and prints which devices would change status, release or runtime
findings and why, and which could not have their runtime re-evaluated; it changes nothing.
Exit 1 when the proposed directory is invalid (problems printed as ``lint`` does), and with
``--fail-on-change`` when any device would change or its runtime could not be re-evaluated.

``learn --ima-log`` writes a ``runtime:`` section from a known-good device's IMA measurement
list (binary or ASCII; repeat ``--ima-log`` for several devices); ``import-keylime`` turns a
Keylime runtime policy (JSON) into one, printing each warning (an exclude that matches
every path switches the policy off) as ``warning: ...`` on stderr. Neither is applied: paste
the section into a profile and lint.

The store is only read. Errors are one line on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO, TypeVar

import yaml

from verifier.cli.common import Subparsers, UsageError, read_store
from verifier.errors import AttestationError, LimitExceeded, MalformedEvidence, UnknownDevice
from verifier.golden.learn import learn_release
from verifier.golden.load import GoldenError, GoldenProblem, load_golden_dir
from verifier.golden.model import BANKS, QUIRKS, GoldenSet
from verifier.golden.sidefiles import name_problem
from verifier.golden.whatif import DryRunReport, Explanation, RuleOutcome, dry_run, explain
from verifier.ima.digestsfile import format_digest_lines, writable
from verifier.ima.held import HeldEntries
from verifier.ima.keylime import import_keylime_policy
from verifier.ima.learn import learn_runtime_policy
from verifier.ima.parse import parse_measurement_list
from verifier.ima.policy import PathPattern
from verifier.ima.reappraise import RuntimeOutcome
from verifier.ima.section import parse_runtime_section
from verifier.imahistory import held_for_explain, held_for_fleet
from verifier.limits import DEFAULT_LIMITS
from verifier.records import StoredEvidence
from verifier.store import Store, resolve_device

MAX_PCRS_FILE_BYTES = 64 * 1024
T = TypeVar("T")
DIGESTS_FILE_HELP = (
    "write the file digests to this new file (sha256sum lines) and name its file name in "
    "the section (digests_file:); put it in the golden directory beside the profile"
)


def register(
    subparsers: Subparsers[argparse.ArgumentParser],
) -> Subparsers[argparse.ArgumentParser]:
    """Add the ``golden`` command group; returns its subparsers so others can add commands."""
    golden = subparsers.add_parser("golden", help="operate golden measurement files")
    commands = golden.add_subparsers(dest="golden_command", required=True, metavar="COMMAND")
    lint = commands.add_parser(
        "lint",
        help="validate a golden directory; print file:line:column: problems",
        description="Validate every *.yaml/*.yml file of DIR as the verifier would load it.",
    )
    lint.add_argument("directory", type=Path, metavar="DIR")
    lint.set_defaults(func=cmd_lint)
    _register_learn(commands)
    _register_explain(commands)
    _register_dry_run(commands)
    _register_runtime(commands)
    return commands


def _register_runtime(commands: Subparsers[argparse.ArgumentParser]) -> None:
    keylime = commands.add_parser(
        "import-keylime", help="a Keylime runtime policy (JSON) as a runtime: section"
    )
    keylime.add_argument("policy", type=Path, metavar="POLICY.json")
    keylime.add_argument("--output", type=Path, help="write to this new file instead of stdout")
    keylime.add_argument("--digests-file", type=Path, metavar="FILE", help=DIGESTS_FILE_HELP)
    keylime.set_defaults(func=cmd_import_keylime)


def _register_learn(commands: Subparsers[argparse.ArgumentParser]) -> None:
    learn = commands.add_parser(
        "learn",
        help="write a candidate release learned from a verified boot (never applied)",
        description="Learn a release from a device's latest stored evidence (--db, --device) "
        'or from files (--event-log, --pcrs). PCRS FILE is JSON {"0": "<hex>", ...}, '
        "the shape 'eventlog replay --json' prints per bank.",
    )
    learn.add_argument("--db", help="SQLite file or postgresql:// URL (with --device)")
    learn.add_argument("--device", help="device id or a unique prefix of it (with --db)")
    learn.add_argument("--event-log", type=Path, help="binary event log (with --pcrs)")
    learn.add_argument("--pcrs", type=Path, help="JSON PCR values proven by a quote")
    learn.add_argument("--bank", default="sha256", choices=sorted(BANKS), help="with --pcrs")
    learn.add_argument("--name", default="candidate", help="release name (default candidate)")
    learn.add_argument("--select", help="PCRs to cover, e.g. 0,4,7,8,9 (default: all given)")
    learn.add_argument(
        "--quirk", action="append", default=[], choices=sorted(QUIRKS), help="repeatable"
    )
    learn.add_argument("--output", type=Path, help="write to this new file instead of stdout")
    learn.add_argument(
        "--ima-log",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="learn a runtime: section from this IMA list instead (repeatable)",
    )
    learn.add_argument("--exclude", action="append", default=[], metavar="GLOB", help="runtime")
    learn.add_argument("--template-hash", default="sha1", help="of the IMA lists (default sha1)")
    learn.add_argument(
        "--digests-file", type=Path, metavar="FILE", help="with --ima-log: " + DIGESTS_FILE_HELP
    )
    learn.set_defaults(func=cmd_learn)


def _register_explain(commands: Subparsers[argparse.ArgumentParser]) -> None:
    explain_cmd = commands.add_parser(
        "explain",
        help="every rule of the device's profile: passed or failed, expected and actual",
    )
    explain_cmd.add_argument("device", metavar="DEVICE", help="device id or unique prefix")
    explain_cmd.add_argument("--db", required=True, help="SQLite file or postgresql:// URL")
    explain_cmd.add_argument(
        "--golden", type=Path, required=True, metavar="DIR", help="the golden set to explain with"
    )
    explain_cmd.add_argument(
        "--ima-log",
        type=Path,
        metavar="FILE",
        help="judge this IMA list (binary or ASCII) instead of the entries the verifier holds",
    )
    explain_cmd.set_defaults(func=cmd_explain)


def _register_dry_run(commands: Subparsers[argparse.ArgumentParser]) -> None:
    dry = commands.add_parser(
        "dry-run",
        help="which devices a proposed golden directory would change; changes nothing",
    )
    dry.add_argument("directory", type=Path, metavar="DIR", help="the proposed directory")
    dry.add_argument("--db", required=True, help="SQLite file or postgresql:// URL")
    dry.add_argument(
        "--golden", type=Path, required=True, metavar="CURRENT_DIR", help="the live set"
    )
    dry.add_argument(
        "--fail-on-change",
        action="store_true",
        help="exit 1 when any device's status, release or runtime findings would change, or "
        "its runtime could not be re-evaluated (for CI)",
    )
    dry.set_defaults(func=cmd_dry_run)


def cmd_lint(ns: argparse.Namespace) -> int:
    return lint(ns.directory, sys.stdout, sys.stderr)


def lint(directory: Path, out: TextIO, err: TextIO) -> int:
    if not directory.is_dir() or not os.access(directory, os.R_OK | os.X_OK):
        print(f"attest-verifier golden lint: {directory}: not a readable directory", file=err)
        return 2
    try:
        golden = load_golden_dir(directory)
    except GoldenError as exc:
        _print_problems(exc.problems, out)
        return 1
    _print_summary(golden, out)
    return 0


def _print_problems(problems: tuple[GoldenProblem, ...], out: TextIO) -> None:
    for problem in problems:
        print(f"{problem.file}:{problem.line}:{problem.column}: {problem.message}", file=out)
        if problem.hint:
            print(f"    hint: {problem.hint}", file=out)
    files = len({p.file for p in problems})
    noun = "problem" if len(problems) == 1 else "problems"
    print(f"{len(problems)} {noun} in {files} file{'s' if files != 1 else ''}", file=out)


def _print_summary(golden: GoldenSet, out: TextIO) -> None:
    for profile in golden.profiles:
        for warning in profile.runtime_warnings:
            print(f"warning: {warning}", file=out)
    releases = sum(len(p.releases) for p in golden.profiles)
    print(
        f"ok: {len(golden.files)} files, {len(golden.profiles)} profiles, {releases} releases; "
        f"digest {golden.digest}",
        file=out,
    )


# --- learn, explain, dry-run ----------------------------------------------------------------


def _guarded(name: str, run: Callable[[], int], err: TextIO) -> int:
    """Run a command; any error becomes one line on ``err`` and exit code 2."""
    try:
        return run()
    except GoldenError as exc:
        print(f"attest-verifier golden {name}: invalid golden set: {exc}", file=err)
    except AttestationError as exc:
        print(f"attest-verifier golden {name}: {type(exc).__name__}: {exc}", file=err)
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"attest-verifier golden {name}: {where}{exc.strerror or exc}", file=err)
    return 2


def cmd_learn(ns: argparse.Namespace) -> int:
    return _guarded("learn", lambda: learn(ns, sys.stdout), sys.stderr)


def learn(ns: argparse.Namespace, out: TextIO) -> int:
    if ns.digests_file is not None and not ns.ima_log:
        raise UsageError("--digests-file goes with --ima-log (a runtime section)")
    if ns.ima_log:
        if ns.db or ns.device or ns.event_log or ns.pcrs:
            raise UsageError("--ima-log learns a runtime section: give it without a release source")
        return learn_runtime(ns, out, sys.stderr)
    evidence = _learn_evidence(ns)
    selection = _selection(ns.select) if ns.select else sorted(evidence.pcrs)
    text = learn_release(
        evidence.event_log,
        evidence.pcrs,
        evidence.bank,
        ns.name,
        selection,
        frozenset(ns.quirk),
    )
    if ns.output is None:
        out.write(text)
        return 0
    with ns.output.open("x", encoding="utf-8") as handle:  # never overwrite a golden file
        handle.write(text)
    print(
        f"wrote candidate release {ns.name!r} to {ns.output}; review it, then paste it "
        "under releases: of a profile and run golden lint",
        file=out,
    )
    return 0


def _learn_evidence(ns: argparse.Namespace) -> StoredEvidence:
    from_store = ns.db is not None or ns.device is not None
    from_files = ns.event_log is not None or ns.pcrs is not None
    if from_store == from_files:
        raise UsageError("give either --db and --device, or --event-log and --pcrs")
    if from_store:
        if ns.db is None or ns.device is None:
            raise UsageError("--db and --device go together")
        return _with_store(ns.db, lambda store: _latest(store, ns.device))
    if ns.event_log is None or ns.pcrs is None:
        raise UsageError("--event-log and --pcrs go together")
    log = _read_bounded(ns.event_log, DEFAULT_LIMITS.max_event_log_bytes)
    pcrs = parse_pcrs_json(_read_bounded(ns.pcrs, MAX_PCRS_FILE_BYTES), ns.bank)
    return StoredEvidence("(files)", 0.0, ns.bank, pcrs, log)


def _selection(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"--select {text!r}: give PCR indices like 0,4,7,8,9") from None


def _read_bounded(path: Path, limit: int) -> bytes:
    with path.open("rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise LimitExceeded(f"{path} is larger than {limit} bytes")
    return data


def parse_pcrs_json(data: bytes, bank: str) -> dict[int, bytes]:
    """``{"0": "<hex>", ...}`` or ``{"<bank>": {"0": "<hex>", ...}, ...}`` -> {index: bytes}."""
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedEvidence(f"the PCR file is not JSON: {exc}") from None
    if isinstance(document, dict) and document and all(k in BANKS for k in document):
        if bank not in document:
            raise MalformedEvidence(
                f"the PCR file has no {bank} bank (it has {', '.join(document)})"
            )
        document = document[bank]
    if not isinstance(document, dict) or not document:
        raise MalformedEvidence('the PCR file must be a JSON object {"0": "<hex>", ...}')
    pcrs: dict[int, bytes] = {}
    for key, value in document.items():
        if not (isinstance(key, str) and key.isdigit() and int(key) <= 23):
            raise MalformedEvidence(f"PCR file: {key!r} is not a PCR index 0-23")
        if not isinstance(value, str):
            raise MalformedEvidence(f"PCR file: PCR {key} is not a hex string")
        try:
            pcrs[int(key)] = bytes.fromhex(value)
        except ValueError:
            raise MalformedEvidence(f"PCR file: PCR {key} is not hex") from None
    return pcrs


def cmd_explain(ns: argparse.Namespace) -> int:
    return _guarded("explain", lambda: explain_device(ns, sys.stdout), sys.stderr)


def explain_device(ns: argparse.Namespace, out: TextIO) -> int:
    golden = load_golden_dir(ns.golden)
    ima_log = None
    if ns.ima_log is not None:
        ima_log = _read_bounded(ns.ima_log, DEFAULT_LIMITS.max_ima_log_bytes)

    def read(store: Store) -> Explanation:
        evidence = _latest(store, ns.device)
        held = held_for_explain(store, evidence, golden, DEFAULT_LIMITS, ima_log, str(ns.ima_log))
        return explain(evidence, golden, time.time(), DEFAULT_LIMITS, held)

    print_explanation(_with_store(ns.db, read), golden, out)
    return 0


def print_explanation(found: Explanation, golden: GoldenSet, out: TextIO) -> None:
    outcome = found.outcome
    print(f"device   {outcome.device_id}", file=out)
    print(f"profile  {outcome.profile or '(none)'}  golden {golden.digest}", file=out)
    print(f"status   {outcome.status.value}  release {outcome.release or '-'}", file=out)
    for reason in found.log_reasons:
        print(f"  {reason.severity.value}: {reason.code}: {reason.text}", file=out)
    if found.rules:
        rows = [("RELEASE", "RULE", "RESULT", "EXPECTED", "ACTUAL")]
        for rule in found.rules:
            rows += _rule_rows(rule)
        _print_table(rows, out)
    if found.runtime is not None:
        print_runtime(found.runtime, out)


def print_runtime(runtime: RuntimeOutcome, out: TextIO) -> None:
    """The runtime part of ``explain``: where the entries came from, each failing entry, and
    the summary line (``RuntimeOutcome.summary``)."""
    if runtime.source:
        print(f"runtime  {runtime.source}", file=out)
    if runtime.note:
        print(f"  note: {runtime.note}", file=out)
    if runtime.failures:
        rows = [("ENTRY", "TEMPLATE", "PATH", "RESULT", "EXPECTED", "ACTUAL")]
        rows += [
            (
                str(f.number),
                f.template,
                _printable(f.path),
                f"{f.severity.value}: {f.code}",
                f.expected or "-",
                f.actual,
            )
            for f in runtime.failures
        ]
        _print_table(rows, out)
    unlisted = runtime.failing - len(runtime.failures)
    if unlisted > 0:
        print(f"  ({unlisted} more failing entries not listed)", file=out)
    for reason in runtime.reasons if not runtime.failures else ():
        print(f"  {reason.severity.value}: {reason.code}: {reason.text}", file=out)
    print(runtime.summary(), file=out)


def _printable(path: str) -> str:
    """A logged path as one cell: control characters and spaces never break the table."""
    shown = path[:300]
    return shown if shown.isprintable() and " " not in shown else repr(shown)


def _rule_rows(rule: RuleOutcome) -> list[tuple[str, str, str, str, str]]:
    """One row per rule; a list (the boot chain) continues on one row per item."""
    result = "PASS" if rule.passed else "FAIL"
    if rule.rule != "boot_chain":
        return [(rule.release, rule.rule, result, rule.expected, rule.actual)]
    expected = rule.expected.split(",") if rule.expected else []
    actual = rule.actual.split(",") if rule.actual else []
    size = max(len(expected), len(actual), 1)
    expected += ["(none)"] * (size - len(expected))
    actual += ["(none)"] * (size - len(actual))
    rows = [(rule.release, rule.rule, result, expected[0], actual[0])]
    rows += [("", "", "", e, a) for e, a in zip(expected[1:], actual[1:], strict=True)]
    return rows


def cmd_dry_run(ns: argparse.Namespace) -> int:
    return _guarded("dry-run", lambda: dry_run_dir(ns, sys.stdout), sys.stderr)


def dry_run_dir(ns: argparse.Namespace, out: TextIO) -> int:
    if not ns.directory.is_dir():
        raise UsageError(f"{ns.directory}: not a readable directory")
    try:
        proposed = load_golden_dir(ns.directory)
    except GoldenError as exc:
        _print_problems(exc.problems, out)
        print(
            "the proposed set is invalid: the verifier would refuse it; nothing evaluated", file=out
        )
        return 1
    current = load_golden_dir(ns.golden)

    def read(store: Store) -> tuple[list[StoredEvidence], dict[str, HeldEntries]]:
        evidences = list(store.all_latest_evidence())
        return evidences, held_for_fleet(store, evidences, (current, proposed), DEFAULT_LIMITS)

    evidences, held = _with_store(ns.db, read)
    report = dry_run(evidences, current, proposed, time.time(), DEFAULT_LIMITS, held)
    print_dry_run(report, out)
    if ns.fail_on_change and (report.changes or report.not_reevaluated):
        print(
            f"{len(report.changes)} devices would change, {len(report.not_reevaluated)} not "
            "fully re-evaluated: failing (--fail-on-change)",
            file=out,
        )
        return 1
    return 0


def print_dry_run(report: DryRunReport, out: TextIO) -> None:
    print(f"current  {report.current_digest}", file=out)
    print(f"proposed {report.proposed_digest}", file=out)
    print(f"{len(report.devices)} devices with stored evidence", file=out)
    for line in report.summary():
        print(line, file=out)
    for change in report.changes:
        print(f"  {change.describe()}", file=out)
    for device in report.not_reevaluated:
        unknown = device.runtime_unknown
        if unknown is not None:
            print(f"  {device.device_id}: {unknown.summary()}", file=out)


def _with_store(db: str, use: Callable[[Store], T]) -> T:
    with read_store(db) as store:
        return use(store)


def _latest(store: Store, device: str) -> StoredEvidence:
    device_id = resolve_device(store, device)
    evidence = store.latest_evidence(device_id)
    if evidence is None:
        raise UnknownDevice(f"device {device_id} has no stored evidence (it has not attested)")
    return evidence


def _print_table(rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]).rstrip(), file=out)


# --- runtime sections --------------------------------------------------------------------


def learn_runtime(ns: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    logs = [
        parse_measurement_list(
            _read_bounded(path, DEFAULT_LIMITS.max_ima_log_bytes),
            template_hash_alg=ns.template_hash,
        )
        for path in ns.ima_log
    ]
    learned = learn_runtime_policy(logs, exclude=[PathPattern("glob", g) for g in ns.exclude])
    for note in learned.notes:
        print(f"note: {note}", file=err)
    return _write_section(learned.section, ns.output, ns.digests_file, out, err)


def cmd_import_keylime(ns: argparse.Namespace) -> int:
    return _guarded(
        "import-keylime", lambda: import_keylime(ns, sys.stdout, sys.stderr), sys.stderr
    )


def import_keylime(ns: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    raw = _read_bounded(ns.policy, DEFAULT_LIMITS.max_runtime_policy_bytes)
    imported = import_keylime_policy(raw)
    parse_runtime_section(imported.section)  # what it imports must load
    for warning in imported.warnings:
        print(f"warning: {warning}", file=err)
    return _write_section(imported.section, ns.output, ns.digests_file, out, err)


def _write_section(
    section: dict[str, object],
    output: Path | None,
    digests_file: Path | None,
    out: TextIO,
    err: TextIO,
) -> int:
    """The section as YAML (to ``output``, a new file, or ``out``); with ``digests_file``
    its file digests go to that new file instead (paths it cannot hold stay inline). A
    section too big for a golden file is refused unless its digests go to a file."""
    lines: list[str] = []
    if digests_file is not None:
        section, lines = _split_digests(section, digests_file, err)
    text = yaml.safe_dump({"runtime": section}, sort_keys=False, width=100)
    limit = DEFAULT_LIMITS.max_golden_file_bytes
    if len(text.encode("utf-8", "surrogateescape")) > limit:
        raise UsageError(
            f"the runtime section is {len(text.encode('utf-8', 'surrogateescape'))} bytes, "
            f"more than a golden file may hold ({limit}): give --digests-file FILE to write "
            "its digests to a digests file"
        )
    if output is not None and output.exists():  # checked before anything is written
        raise FileExistsError(errno.EEXIST, "file exists", str(output))
    if digests_file is not None:
        with digests_file.open("x", encoding="utf-8") as handle:  # never overwrite
            handle.writelines(lines)
        print(f"wrote {len(lines)} digests to {digests_file}", file=err)
    if output is None:
        out.write(text)
        return 0
    with output.open("x", encoding="utf-8") as handle:  # never overwrite a golden file
        handle.write(text)
    print(f"wrote a runtime: section to {output}; paste it into a profile, then lint", file=out)
    return 0


def _split_digests(
    section: dict[str, object], digests_file: Path, err: TextIO
) -> tuple[dict[str, object], list[str]]:
    """The section naming ``digests_file`` (its file name) and the lines to write there."""
    problem = name_problem(digests_file.name)
    if problem is not None:
        raise UsageError(f"--digests-file: {problem}")
    digests = section.get("digests")
    inline: dict[str, object] = {}
    moved: dict[str, list[str]] = {}
    for path, values in digests.items() if isinstance(digests, dict) else ():
        if writable(path) and isinstance(values, list):
            moved[path] = [str(v) for v in values]
        else:
            inline[path] = values
    if not moved:
        raise UsageError("--digests-file: the section has no file digests to write")
    if inline:
        print(
            f"note: {len(inline)} paths a digests file cannot hold (not absolute or not "
            "UTF-8) stay inline under digests:",
            file=err,
        )
    result: dict[str, object] = {}
    for key, value in section.items():
        if key == "digests":
            if inline:
                result["digests"] = inline
            result["digests_file"] = digests_file.name
        else:
            result[key] = value
    if "digests_file" not in result:
        result["digests_file"] = digests_file.name
    return result, list(format_digest_lines(moved))
