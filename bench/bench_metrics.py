"""Cost of the metrics one attestation records (in-process mode), in microseconds.

Run from the repository: PYTHONPATH=. python bench/bench_metrics.py
"""

from __future__ import annotations

import time

from verifier.metrics import VerifierMetrics
from verifier.verdict import Status

N = 50_000


def one(m: VerifierMetrics) -> None:
    with m.rpc_in_flight("Attest"):
        with m.store_call("consume_nonce"):
            pass
        m.appraisal_seconds(0.004)
        with m.store_call("add_verdict"):
            pass
        m.attestation(Status.AFFIRMING)


def main() -> None:
    m = VerifierMetrics()
    for _ in range(1000):
        one(m)
    start = time.process_time()
    for _ in range(N):
        one(m)
    per = (time.process_time() - start) / N * 1e6
    print(f"metrics per attestation: {per:.1f} us CPU ({N} attestations)")


if __name__ == "__main__":
    main()
