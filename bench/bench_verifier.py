"""The verifier's own cost per attestation, in process: everything but gRPC and the TPM.

    .venv/bin/python bench/bench_verifier.py [--runs 2000] [--profile]

One enrolled device (a software AK from ``simulator.softquote``) with the simulator's good
measured boot (a real crypto-agile event log and its PCRs) against the repository's golden
measurements, SQLite in a temporary directory. Each run is what the gRPC handlers do:
``get_challenge`` (nonce stored), ``attest`` (nonce consumed, quote + event log + golden
policy appraised, verdict and evidence stored) and ``token_for`` (the EAR token signed).
The quote is signed outside the timed part (on a device the TPM does that). Prints median and
p99 in microseconds; ``--profile`` prints the top of a cProfile of the timed part.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import tempfile
import time
from pathlib import Path

from simulator.firmware import boot
from simulator.fleet import DEVICE_LABELS
from simulator.profiles import GOOD_A
from simulator.softquote import QuoteFields, SoftAk
from verifier.app import Verifier, open_trust
from verifier.evidence import Evidence
from verifier.limits import DEFAULT_LIMITS
from verifier.livegolden import LiveGolden
from verifier.store import open_store
from verifier.store.base import DeviceRecord
from verifier.token import KeyRing

ROOT = Path(__file__).resolve().parent.parent


def setup(workdir: Path) -> tuple[Verifier, SoftAk, bytes, dict[int, bytes]]:
    store = open_store(workdir / "verifier.db")
    golden = LiveGolden.start(ROOT / "golden_measurements", store, time.time)
    trust, allowlist = open_trust(None, None)
    verifier = Verifier(store, trust, allowlist, golden, KeyRing.open(workdir / "keys", 0))
    ak = SoftAk.generate()
    store.insert_device(
        DeviceRecord(
            device_id="dev-bench",
            ek_public=b"",
            ek_certificate=b"",
            ek_not_after=None,
            ak_public=ak.tpm2b_public,
            ak_name=ak.name,
            labels=dict(DEVICE_LABELS),
            enrollment_count=1,
            enrolled_at=time.time(),
            profile="sim-gateway",
        )
    )
    record = boot(GOOD_A, lambda pcr, digests: None)
    pcrs = dict(record.expected_pcrs["sha256"])
    return verifier, ak, record.log, pcrs


def one_attestation(
    verifier: Verifier,
    ak: SoftAk,
    log: bytes,
    pcrs: dict[int, bytes],
    profiler: cProfile.Profile | None,
) -> int:
    """Nanoseconds the verifier spent on one attestation (the software quote is not timed)."""
    start = time.perf_counter_ns()
    if profiler:
        profiler.enable()
    challenge = verifier.get_challenge("dev-bench")
    if profiler:
        profiler.disable()
    spent = time.perf_counter_ns() - start
    quoted = {i: pcrs.get(i, bytes(32)) for i in challenge.pcrs}
    attest, signature = ak.quote(QuoteFields(challenge.nonce, "sha256", quoted))
    start = time.perf_counter_ns()
    if profiler:
        profiler.enable()
    evidence = Evidence.build(
        device_id="dev-bench",
        nonce=challenge.nonce,
        quote=attest,
        signature=signature,
        pcr_values=tuple(quoted.items()),
        event_log=log,
        limits=DEFAULT_LIMITS,
    )
    verdict, _token = verifier.attest(evidence)
    if profiler:
        profiler.disable()
    spent += time.perf_counter_ns() - start
    if verdict.status.value != "affirming":
        raise SystemExit(f"unexpected verdict: {verdict}")
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--sort", default="cumulative", help="pstats sort key for --profile")
    parser.add_argument("--top", type=int, default=30, help="rows of the profile to print")
    ns = parser.parse_args()
    profiler = cProfile.Profile() if ns.profile else None
    with tempfile.TemporaryDirectory() as tmp:
        verifier, ak, log, pcrs = setup(Path(tmp))
        for _ in range(50):  # warm up caches (AK parse, golden set, SQLite pages)
            one_attestation(verifier, ak, log, pcrs, None)
        samples = sorted(
            one_attestation(verifier, ak, log, pcrs, profiler) / 1000 for _ in range(ns.runs)
        )
        verifier.store.close()
    p99 = samples[int(len(samples) * 0.99)]
    print(
        f"verifier in process (challenge + attest with a {len(log)}-byte event log + token), "
        f"{ns.runs} runs: median {statistics.median(samples):.0f} us, p99 {p99:.0f} us"
    )
    if profiler:
        pstats.Stats(profiler).sort_stats(ns.sort).print_stats(ns.top)


if __name__ == "__main__":
    main()
