"""``attest-sim``: simulated swtpm devices against a real verifier.

    attest-sim demo [--devices 8] [--keep DIR]  a verifier and a small fleet; prints verdicts
    attest-sim scenarios                        every scenario; exits 1 on any unexpected outcome
    attest-sim rollout [--bad-device]           a staged rollout fw-1.0.0 -> fw-1.1.0 in waves

Each starts the verifier in this process (SQLite in a temporary directory, or in ``--keep DIR``
for the demo) and one swtpm per device, and stops everything on exit, Ctrl-C included: no
swtpm process outlives the command. The golden set is the simulator's own
(``simulator.goldengen``, the same as ``golden_measurements/sim-gateway.yaml``) unless
``--golden DIR`` names another.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from simulator.firmware import FirmwareProfile
from simulator.fleet import Fleet, RunningVerifier, SimDevice
from simulator.goldengen import (
    PROFILE_NAME,
    RUNTIME_PROFILE,
    golden_yaml,
    release_name,
    runtime_yaml,
)
from simulator.profiles import GOOD_A, GOOD_B, INIT_SH, SECUREBOOT_OFF, TAMPERED_BOOTLOADER
from simulator.rollout import run_rollout
from simulator.scenarios import SCENARIOS, Outcome, attest
from simulator.swtpm import kill_all, swtpm_available
from verifier import __version__
from verifier.errors import AttestationError
from verifier.golden.load import GoldenError

COMPROMISED = (TAMPERED_BOOTLOADER, INIT_SH, SECUREBOOT_OFF)


def main(argv: Sequence[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, ns.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not swtpm_available():
        print("attest-sim: swtpm is not installed (scripts/bootstrap.sh setup)", file=sys.stderr)
        return 2
    if ns.golden is not None and not ns.golden.is_dir():
        print(f"attest-sim: --golden {ns.golden}: not a directory", file=sys.stderr)
        return 2
    try:
        return int(ns.func(ns))
    except GoldenError as exc:
        print(f"attest-sim: the golden set is invalid: {exc}", file=sys.stderr)
        for problem in exc.problems[:10]:
            print(f"  {problem}", file=sys.stderr)
        return 2
    except (AttestationError, OSError) as exc:
        print(f"attest-sim: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the verifier and every swtpm", file=sys.stderr)
        return 130
    finally:
        kill_all()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attest-sim", description="simulated swtpm devices against a real verifier"
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--log-level",
        default="warning",
        choices=["debug", "info", "warning", "error"],
        help="default %(default)s (info logs the verifier's work)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    golden_help = "golden directory (default: the simulator's own, as golden_measurements/)"
    demo = sub.add_parser("demo", help="a verifier and a small fleet, verdicts printed")
    demo.add_argument("--devices", type=int, default=8, help="fleet size (default 8)")
    demo.add_argument("--golden", type=Path, help=golden_help)
    demo.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="keep the verifier's database, keys and golden set in DIR (new or empty) to try "
        "the operator commands on the demo's fleet afterwards",
    )
    demo.set_defaults(func=cmd_demo)
    scen = sub.add_parser("scenarios", help="run every scenario, expected vs actual")
    scen.add_argument("--golden", type=Path, help=golden_help)
    scen.set_defaults(func=cmd_scenarios)
    roll = sub.add_parser("rollout", help="an update server moves the fleet A -> B in waves")
    roll.add_argument("--devices", type=int, default=6, help="fleet size (default 6)")
    roll.add_argument("--wave-size", type=int, default=2, help="devices per wave (default 2)")
    roll.add_argument(
        "--bad-device",
        action="store_true",
        help="one device of the second wave boots a tampered fw-1.1.0: the rollout halts",
    )
    roll.add_argument("--golden", type=Path, help=golden_help)
    roll.set_defaults(func=cmd_rollout)
    return parser


def fleet_firmware(count: int) -> list[FirmwareProfile]:
    """Mostly good devices (a few already on fw-1.1.0), one of each compromise."""
    bad = list(COMPROMISED[: min(len(COMPROMISED), (count + 2) // 3 if count > 1 else 0)])
    good = [GOOD_B if i % 4 == 3 else GOOD_A for i in range(count - len(bad))]
    return good + bad


@contextlib.contextmanager
def _workdir(keep: Path | None) -> Iterator[Path]:
    """A temporary directory, or ``keep`` (which must be new or empty) left in place."""
    if keep is None:
        with tempfile.TemporaryDirectory(prefix="attest-sim-") as tmp:
            yield Path(tmp)
        return
    if keep.exists() and (not keep.is_dir() or any(keep.iterdir())):
        raise FileExistsError(17, "--keep needs a new or empty directory", str(keep))
    keep.mkdir(parents=True, exist_ok=True)
    yield keep.absolute()


def golden_dir(given: Path | None, workdir: Path) -> Path:
    """``--golden``, or the simulator's own set written into ``workdir``."""
    if given is not None:
        return given
    directory = workdir / "golden"
    directory.mkdir(exist_ok=True)
    (directory / f"{PROFILE_NAME}.yaml").write_text(golden_yaml(), encoding="utf-8")
    (directory / f"{RUNTIME_PROFILE}.yaml").write_text(runtime_yaml(), encoding="utf-8")
    return directory


def cmd_demo(ns: argparse.Namespace) -> int:
    if ns.devices < 1:
        print("attest-sim: --devices must be at least 1", file=sys.stderr)
        return 2
    started = time.monotonic()
    with _workdir(ns.keep) as tmp, Fleet(tmp) as fleet:
        golden = golden_dir(ns.golden, tmp)
        verifier = fleet.start_verifier(golden)
        print(f"verifier listening on {verifier.address} (SQLite in {verifier.workdir})")
        _print_wire(verifier)
        print(f"golden set {verifier.golden.current().profile_set.digest[:23]}... from {golden}")
        firmware = fleet_firmware(ns.devices)
        devices = []
        for i, profile in enumerate(firmware):
            devices.append(fleet.add_device(f"gw-{i:02d}", profile))
            _progress("booting devices (swtpm + measured boot)", i + 1, len(firmware))
        with ThreadPoolExecutor(max_workers=4) as pool:
            enrolled = pool.map(lambda d: d.enroll(verifier.address), devices)
            for done, device_id in enumerate(enrolled, 1):
                _progress(f"enrolling (last: {device_id[:16]}...)", done, len(devices))
            outcomes = []
            for outcome in pool.map(lambda d: attest(d, verifier.address), devices):
                outcomes.append(outcome)
                _progress("attesting", len(outcomes), len(devices))
        print()
        _fleet_table(devices, outcomes)
        for device, outcome in zip(devices, outcomes, strict=True):
            if outcome.texts and outcome.result != "affirming":
                print(f"\n{device.name} ({device.firmware.name}): {outcome.result}")
                for text in outcome.texts:
                    print(f"  - {text}")
        counts = {r: sum(o.result == r for o in outcomes) for r in {o.result for o in outcomes}}
        summary = ", ".join(f"{n} {r}" for r, n in sorted(counts.items()))
        print(f"\n{len(devices)} devices: {summary} ({time.monotonic() - started:.1f} s)")
        print("shutting down the verifier and every swtpm")
    if ns.keep is not None:
        _print_next_steps(ns.keep.absolute(), golden, devices[-1].device_id)
    return 0


def _print_wire(verifier: RunningVerifier) -> None:
    """The production wire, as the demo runs it."""
    print(
        f"  agents:  TLS on {verifier.address}, verifier certificate pinned to "
        f"{verifier.ca} (attest-agent --ca)"
    )
    print(
        f"  callers: mutual TLS on {verifier.caller_address}, role from the client "
        f"certificate (operator.pem, relying-party.pem in {verifier.pki})"
    )


def _print_next_steps(keep: Path, golden: Path, device_id: str) -> None:
    db = keep / "verifier" / "verifier.db"
    print(f"\nkept in {keep}: the database, the signing keys and the golden set. Try:")
    for command in (
        f"attest-verifier devices --db {db}",
        f"attest-verifier verdict show {device_id[:12]} --db {db}",
        f"attest-verifier golden explain {device_id[:12]} --db {db} --golden {golden}",
        f"attest-verifier golden dry-run {golden} --db {db} --golden {golden} --fail-on-change",
        f"attest-verifier keys export-jwks --keys {keep / 'verifier' / 'keys'} jwks.json",
    ):
        print(f"  {command}")


def cmd_scenarios(ns: argparse.Namespace) -> int:
    rows = [("SCENARIO", "EXPECTED", "ACTUAL", "OK", "DETAIL")]
    failures = 0
    with tempfile.TemporaryDirectory(prefix="attest-sim-") as tmp, Fleet(Path(tmp)) as fleet:
        verifier = fleet.start_verifier(golden_dir(ns.golden, Path(tmp)))
        for k, scenario in enumerate(SCENARIOS, 1):
            _progress(f"scenario {scenario.name}", k, len(SCENARIOS))
            try:
                outcome = scenario.run(fleet, verifier.address)
            except Exception as exc:  # a scenario that crashes is a failure, not a crash
                outcome = Outcome("error", f"{type(exc).__name__}: {exc}")
            ok = outcome.result == scenario.expected
            failures += not ok
            rows.append(
                (
                    scenario.name,
                    scenario.expected,
                    outcome.result,
                    "ok" if ok else "FAIL",
                    _short(outcome.detail),
                )
            )
    print()
    _table(rows)
    print(f"\n{len(SCENARIOS) - failures} passed, {failures} failed")
    return 1 if failures else 0


def cmd_rollout(ns: argparse.Namespace) -> int:
    if ns.devices < 1 or ns.wave_size < 1:
        print("attest-sim: --devices and --wave-size must be at least 1", file=sys.stderr)
        return 2
    target = release_name(GOOD_B)
    with tempfile.TemporaryDirectory(prefix="attest-sim-") as tmp, Fleet(Path(tmp)) as fleet:
        verifier = fleet.start_verifier(golden_dir(ns.golden, Path(tmp)))
        devices = [fleet.add_device(f"gw-{i:02d}", GOOD_A) for i in range(ns.devices)]
        for device in devices:
            device.attest(verifier.address)
        print(f"{len(devices)} devices affirming on {release_name(GOOD_A)}; target {target}")
        bad = devices[ns.wave_size] if ns.bad_device and len(devices) > ns.wave_size else None
        waves = [devices[i : i + ns.wave_size] for i in range(0, len(devices), ns.wave_size)]
        report = run_rollout(
            verifier,
            waves,
            target,
            lambda d: (
                replace(GOOD_B, name="tampered-b", grub=TAMPERED_BOOTLOADER.grub)
                if d is bad
                else GOOD_B
            ),
        )
        for name, why in report.halted_by:
            print(f"  halted by {name}: {why}")
        untouched = [d.name for wave in waves[report.waves_done :] for d in wave]
        if untouched:
            print(f"  never shipped: {', '.join(untouched)}")
    return 1 if report.halted else 0


def _fleet_table(devices: Sequence[SimDevice], outcomes: Sequence[Outcome]) -> None:
    rows = [("DEVICE", "DEVICE ID", "FIRMWARE", "VERDICT", "REASONS")]
    for device, outcome in zip(devices, outcomes, strict=True):
        rows.append(
            (
                device.name,
                device.device_id[:20],
                device.firmware.name,
                outcome.result,
                _short(outcome.detail),
            )
        )
    _table(rows)


def _short(text: str, width: int = 70) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _progress(what: str, done: int, total: int) -> None:
    """One line that counts up on a terminal; only the final count elsewhere (logs, CI)."""
    if sys.stdout.isatty():
        end = "\n" if done == total else ""
        print(f"\r  {what}: {done}/{total}".ljust(72), end=end, flush=True)
    elif done == total:
        print(f"  {what}: {done}/{total}", flush=True)


def _table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


if __name__ == "__main__":
    raise SystemExit(main())
