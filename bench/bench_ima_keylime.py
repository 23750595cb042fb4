"""Keylime's runtime policy check next to fleet-attest's, on the same files, in one run.

The inputs are those of ``bench/bench_ima.py``: a 50,000-entry ``ima-ng`` list (boot_aggregate
then files, PCR 10 extended with the bank's hash, sha256 bank) and a 200,000-digest policy
with three exclusions. They are written once to a work directory:

- ``ascii_runtime_measurements`` (what Keylime's agent sends) and ``binary_runtime_measurements``;
- ``runtime_policy.json``: the policy in Keylime's runtime-policy format (version 1: ``meta``,
  ``release``, ``digests``, ``excludes``, ``keyrings``, ``ima``, ``ima-buf``,
  ``verification-keys``); the excludes are the regexes the globs of ``bench_ima`` mean.

Keylime is timed in a subprocess of the interpreter given by ``--keylime-python`` (a scratch
venv with ``pip install keylime``), so nothing of Keylime is imported by this repository:
its ``keylime.ima.ima.process_measurement_list`` (what its verifier calls per attestation,
and its tests call) over the ASCII list, against the policy already loaded (its JSON parse is
timed apart), with the quoted PCR 10 and the boot_aggregate its verifier would pass.

fleet-attest reads the same files: ``golden import-keylime``'s import of the JSON policy into a
``runtime:`` section, loaded once (as per golden set), then ``appraise_ima`` of the whole list
(parse, template hashes, PCR 10 replay against the quote, boot_aggregate against PCRs 0-9,
policy) for the ASCII and the binary form.

Each figure is min / median / max of ``--repeats`` runs (3 by default). Run on purpose, not
in CI; on a shared machine under ``nice``:

    python3 -m venv /tmp/kl && /tmp/kl/bin/pip install keylime
    # keylime's wheel declares no dependencies; keylime.ima.ima needs these:
    /tmp/kl/bin/pip install jsonschema cryptography pyyaml lark packaging alembic sqlalchemy
    # and GPGME's bindings (keylime.signing imports gpg), which PyPI has no wheel of:
    apt-get install python3-gpg && ln -s /usr/lib/python3/dist-packages/gpg \
        /tmp/kl/lib/python3.11/site-packages/gpg
    PYTHONPATH=$PWD/proto:$PWD nice -n 10 python bench/bench_ima_keylime.py \\
        --keylime-python /tmp/kl/bin/python

Prints figures; asserts nothing about time. Exit 2 with one line when the Keylime
interpreter is missing or cannot import ``keylime.ima.ima``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verifier.ima import write
from verifier.ima.appraise import appraise_ima
from verifier.ima.keylime import import_keylime_policy
from verifier.ima.parse import BOOT_AGGREGATE, ImaEntry, parse_binary
from verifier.ima.replay import ExtendMode, replay
from verifier.ima.section import parse_runtime_section

ENTRIES = 50_000
POLICY_DIGESTS = 200_000
BANK = "sha256"
BOOT_PCRS = {i: hashlib.sha256(b"pcr %d" % i).digest() for i in range(10)}
# bench_ima's exclusions (glob /tmp/**, regex /var/log/.*\.log, glob /proc/*) as Keylime
# regexes (matched at the start of the path)
KEYLIME_EXCLUDES = ["/tmp/.*", "/var/log/.*\\.log$", "/proc/[^/]*$"]

# Runs in the Keylime interpreter: argv = list, policy, pcr10 hex, boot_aggregate hex, repeats.
# Prints one JSON line: the samples and what Keylime concluded.
KEYLIME_RUNNER = r"""
import copy, json, logging, sys, time
logging.disable(logging.WARNING)  # its config-file warnings; the check itself is unchanged
from keylime.common.algorithms import Hash
from keylime.ima import ima

list_path, policy_path, pcr10, aggregate, repeats = sys.argv[1:6]
with open(list_path, encoding="utf-8") as f:
    text = f.read()
with open(policy_path, encoding="utf-8") as f:
    raw = f.read()
ima.validate_runtime_policy(json.loads(raw))  # as when the policy is uploaded (not timed)
checks, loads, results = [], [], []
for _ in range(int(repeats)):
    began = time.perf_counter()
    policy = ima.deserialize_runtime_policy(raw)  # what its verifier does per quote response
    loads.append(time.perf_counter() - began)
    began = time.perf_counter()
    running, failure = ima.process_measurement_list(
        None, text.split("\n"), policy, pcrval=pcr10,
        boot_aggregates={"sha256": [aggregate]}, hash_alg=Hash.SHA256,
    )
    checks.append(time.perf_counter() - began)
    results.append((running, bool(failure), len(failure.events)))
print(json.dumps({"checks": checks, "loads": loads, "results": results}))
"""


def _path(n: int) -> str:  # as bench_ima
    return f"/usr/lib/pkg{n % 997}/lib{n}.so.{n % 7}"


def _digest(n: int) -> bytes:  # as bench_ima
    return hashlib.sha256(n.to_bytes(8, "big")).digest()


def keylime_policy(digests: int) -> dict[str, Any]:
    return {
        "meta": {"version": 1, "generator": 0},
        "release": 0,
        "digests": {_path(n): [_digest(n).hex()] for n in range(digests)},
        "excludes": KEYLIME_EXCLUDES,
        "keyrings": {},
        "ima": {"ignored_keyrings": [], "log_hash_alg": "sha1", "dm_policy": None},
        "ima-buf": {},
        "verification-keys": "",
    }


def ascii_line(entry: ImaEntry) -> str:
    """The kernel's ``ascii_runtime_measurements`` line of an ``ima-ng`` entry."""
    return (
        f"{entry.pcr} {entry.template_hash.hex()} {entry.template} "
        f"{entry.digest_alg}:{entry.digest.hex()} {entry.path}"
    )


@dataclass(frozen=True)
class Inputs:
    directory: Path
    ascii_list: Path
    binary_list: Path
    policy: Path
    pcr10: bytes
    boot_aggregate: bytes


def write_inputs(directory: Path, entries: int, digests: int) -> Inputs:
    """The shared files (see the module); entries past the policy's size are unknown."""
    raw = [write.boot_aggregate_entry(BOOT_PCRS, BANK)]
    raw += [write.file_entry(_path(n), _digest(n)) for n in range(entries - 1)]
    binary = b"".join(raw)
    parsed = parse_binary(binary).entries
    assert parsed[0].path == BOOT_AGGREGATE
    inputs = Inputs(
        directory,
        directory / "ascii_runtime_measurements",
        directory / "binary_runtime_measurements",
        directory / "runtime_policy.json",
        replay(parsed, BANK, ExtendMode.BANK_HASH),
        parsed[0].digest,
    )
    inputs.binary_list.write_bytes(binary)
    inputs.ascii_list.write_text("".join(ascii_line(e) + "\n" for e in parsed), encoding="utf-8")
    inputs.policy.write_text(json.dumps(keylime_policy(digests)), encoding="utf-8")
    return inputs


def check_interpreter(python: Path) -> str | None:
    """Why ``python`` cannot run Keylime's check, or None."""
    if not (python.is_file() and os.access(python, os.X_OK)):
        return (
            f"{python}: no such interpreter (make one: python3 -m venv /tmp/kl && "
            "/tmp/kl/bin/pip install keylime)"
        )
    probe = subprocess.run(
        [str(python), "-c", "import keylime.ima.ima; print('keylime.ima.ima imported')"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0 or "keylime.ima.ima imported" not in probe.stdout:
        last = (probe.stderr.strip().splitlines() or ["(no output)"])[-1]
        return f"{python} cannot import keylime.ima.ima: {last} (see this script's docstring)"
    return None


def keylime_version(python: Path) -> str:
    out = subprocess.run(
        [str(python), "-m", "pip", "show", "keylime"], capture_output=True, text=True, check=False
    ).stdout
    return next(
        (ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Version:")), "?"
    )


def run_keylime(python: Path, inputs: Inputs, repeats: int) -> dict[str, Any]:
    done = subprocess.run(
        [
            str(python),
            "-c",
            KEYLIME_RUNNER,
            str(inputs.ascii_list),
            str(inputs.policy),
            inputs.pcr10.hex(),
            inputs.boot_aggregate.hex(),
            str(repeats),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"bench_ima_keylime: Keylime's run failed: {done.stderr.strip()[-2000:]}")
    lines = done.stdout.strip().splitlines()
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, ValueError):
        raise SystemExit(
            f"bench_ima_keylime: Keylime's run printed no result: {lines[-1:]}"
        ) from None
    return result


def _times(func: Callable[[], Any], repeats: int) -> tuple[list[float], Any]:
    samples, result = [], None
    for _ in range(repeats):
        began = time.perf_counter()
        result = func()
        samples.append(time.perf_counter() - began)
    return samples, result


def _figure(samples: list[float]) -> str:
    ms = [s * 1000 for s in samples]
    return f"min {min(ms):.0f} / median {statistics.median(ms):.0f} / max {max(ms):.0f} ms"


def run_fleet_attest(inputs: Inputs, repeats: int) -> dict[str, Any]:
    raw = inputs.policy.read_bytes()

    def load() -> Any:
        section = import_keylime_policy(raw).section
        return parse_runtime_section(section).policy

    load_samples, policy = _times(load, 1)
    quoted = {BANK: {**BOOT_PCRS, 10: inputs.pcr10}}
    figures: dict[str, Any] = {"load": load_samples[0]}
    for form, path in (("ascii", inputs.ascii_list), ("binary", inputs.binary_list)):
        data = path.read_bytes()

        def full(data: bytes = data) -> Any:
            return appraise_ima(
                data, 0, state=None, boot_id="1:0", bank=BANK, quoted=quoted, policy=policy
            )

        samples, result = _times(full, repeats)
        figures[form] = (samples, result.new_entries, len(result.reasons))
    return figures


def report(keylime: dict[str, Any], ours: dict[str, Any], version: str, pcr10: bytes) -> None:
    running, failed, events = keylime["results"][-1]
    verdict = f"failure with {events} events" if failed else "no failure"
    checks, loads = keylime["checks"], keylime["loads"]
    per_quote = [c + lo for c, lo in zip(checks, loads, strict=True)]
    match = "matches" if running == pcr10.hex() else "DIFFERS"
    print(f"keylime {version}: PCR 10 {match}, {verdict}")
    print(f"  process_measurement_list (ASCII list):           {_figure(checks)}")
    print(f"  deserialize_runtime_policy (per quote response): {_figure(loads)}")
    print(f"  both, as its verifier does per attestation:      {_figure(per_quote)}")
    for form in ("ascii", "binary"):
        samples, accepted, reasons = ours[form]
        print(
            f"fleet-attest appraise_ima ({form} list): {_figure(samples)}; "
            f"{accepted} entries accepted, {reasons} reasons"
        )
    print(f"fleet-attest policy import + load (once per golden set): {ours['load'] * 1000:.0f} ms")
    for form in ("ascii", "binary"):
        ours_median = statistics.median(ours[form][0])
        print(
            f"median ratio, {form} list: keylime check / fleet-attest "
            f"{statistics.median(checks) / ours_median:.1f}x; keylime per attestation / "
            f"fleet-attest {statistics.median(per_quote) / ours_median:.1f}x"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keylime-python", type=Path, required=True, metavar="PYTHON")
    parser.add_argument("--entries", type=int, default=ENTRIES)
    parser.add_argument("--digests", type=int, default=POLICY_DIGESTS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, help="keep the inputs here (default: a temp dir)")
    ns = parser.parse_args(argv)
    why = check_interpreter(ns.keylime_python)
    if why is not None:
        print(f"bench_ima_keylime: {why}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-ima-keylime-") as scratch:
        directory = ns.workdir or Path(scratch)
        directory.mkdir(parents=True, exist_ok=True)
        inputs = write_inputs(directory, ns.entries, ns.digests)
        size = inputs.ascii_list.stat().st_size / 2**20
        print(
            f"inputs in {directory}: {ns.entries} entries ({size:.1f} MiB ASCII, "
            f"{inputs.binary_list.stat().st_size / 2**20:.1f} MiB binary), {ns.digests}-digest "
            f"policy ({inputs.policy.stat().st_size / 2**20:.1f} MiB JSON); "
            f"{ns.repeats} repeats each"
        )
        keylime = run_keylime(ns.keylime_python, inputs, ns.repeats)
        ours = run_fleet_attest(inputs, ns.repeats)
    report(keylime, ours, keylime_version(ns.keylime_python), inputs.pcr10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
