"""In-process appraisal cost per attestation: quote check + PCR policy + verdict.

    .venv/bin/python bench/bench_appraisal.py [--runs 5000]

Builds a real ECDSA P-256 quote (simulator.softquote marshals TPMS_ATTEST as a TPM does) over
sha256 PCRs 0-9 and appraises it against a three-release profile, as the verifier does after
the store consumed the nonce. Prints median and p99 in microseconds. Target: under 300 us.
"""

from __future__ import annotations

import argparse
import statistics
import time

from simulator.softquote import QuoteFields, SoftAk
from verifier.appraisal import AppraisalContext, appraise
from verifier.evidence import Evidence
from verifier.golden.model import Profile, Release
from verifier.limits import DEFAULT_LIMITS
from verifier.store.base import IssuedNonce


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5000)
    ns = parser.parse_args()
    ak = SoftAk.generate()
    pcrs = {i: bytes([i]) * 32 for i in range(10)}
    nonce = b"n" * 32
    releases = (
        *(
            Release(f"fw-{k}", pcrs={i: bytes([i + k * 16]) * 32 for i in range(10)})
            for k in (2, 1)
        ),
        Release("fw-0", pcrs=dict(pcrs)),
    )
    profile = Profile("bench", "bench.yaml", {}, 3600, "sha256", tuple(range(10)), releases)
    attest, sig = ak.quote(QuoteFields(nonce, "sha256", pcrs))
    ctx = AppraisalContext(
        ak_public_key=ak.key.public_key(),
        ak_hash="sha256",
        issued=IssuedNonce(nonce, "dev", "sha256", tuple(range(10)), "bench", 2e9),
        profile=profile,
        golden_digest="sha256:00",
        previous=None,
        ek_not_after=None,
    )
    samples = []
    for _ in range(ns.runs):
        start = time.perf_counter_ns()
        evidence = Evidence.build(
            device_id="dev",
            nonce=nonce,
            quote=attest,
            signature=sig,
            pcr_values=tuple(pcrs.items()),
            event_log=b"",
            limits=DEFAULT_LIMITS,
        )
        verdict = appraise(evidence, ctx, 1.7e9)
        samples.append((time.perf_counter_ns() - start) / 1000)
    assert verdict.status.value == "affirming", verdict
    samples.sort()
    p99 = samples[int(len(samples) * 0.99)]
    print(
        f"appraisal (quote check + PCR policy + verdict), {ns.runs} runs: "
        f"median {statistics.median(samples):.1f} us, p99 {p99:.1f} us (target < 300 us)"
    )


if __name__ == "__main__":
    main()
