"""Cost of the metrics one attestation records (in-process mode), in microseconds.

Run from the repository: PYTHONPATH=. python bench/bench_metrics.py
"""

from __future__ import annotations

import time
from typing import Any, cast

from verifier.metrics import VerifierMetrics
from verifier.store.base import Store
from verifier.store.instrumented import instrument
from verifier.verdict import Status

N = 50_000


class _Store:
    def consume_nonce(self) -> None:
        pass

    def add_verdict(self) -> None:
        pass


def one(m: VerifierMetrics, store: Any) -> None:
    with m.rpc_in_flight("Attest"):
        store.consume_nonce()
        m.appraisal_seconds(0.004)
        store.add_verdict()
        m.attestation(Status.AFFIRMING)


def main() -> None:
    m = VerifierMetrics()
    store = instrument(cast(Store, _Store()), m)  # the store calls timed as the verifier's are
    for _ in range(1000):
        one(m, store)
    start = time.process_time()
    for _ in range(N):
        one(m, store)
    per = (time.process_time() - start) / N * 1e6
    print(f"metrics per attestation: {per:.1f} us CPU ({N} attestations)")


if __name__ == "__main__":
    main()
