"""A ``Store`` that times every call and counts the ones that raise, then delegates.

``instrument(inner, metrics)`` wraps every method of the ``verifier.store.base.Store``
protocol: each call runs ``inner``'s under ``VerifierMetrics.store_timer(op)`` with ``op`` the
method's name (the protocol's method names: a fixed set, so the label stays bounded), and
``fleetattest_store_operation_duration_seconds{op}`` and ``fleetattest_store_errors_total{op}``
cover every store access of the verifier. Results and exceptions pass through unchanged; any
other attribute is the inner store's. The wrapper is derived from the protocol, so a method
added to the contract is instrumented without a line here.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, cast

from verifier.metrics import VerifierMetrics
from verifier.store.base import Store

OPERATIONS = frozenset(
    name for name, value in vars(Store).items() if callable(value) and not name.startswith("_")
)


class InstrumentedStore:
    def __init__(self, inner: Store, metrics: VerifierMetrics) -> None:
        self.inner = inner
        self._m = metrics

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if name not in OPERATIONS or not callable(attribute):
            return attribute
        timed = _timed(self._m, name, attribute)
        setattr(self, name, timed)  # found by normal lookup from now on
        return timed


def _timed(metrics: VerifierMetrics, op: str, method: Callable[..., Any]) -> Callable[..., Any]:
    timer = metrics.store_timer(op)
    clock = time.perf_counter

    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        start = clock()
        try:
            return method(*args, **kwargs)
        except Exception:
            timer.error()
            raise
        finally:
            timer.observe(clock() - start)

    return call


def instrument(inner: Store, metrics: VerifierMetrics) -> Store:
    """``inner`` with every contract method timed on ``metrics``."""
    return cast(Store, InstrumentedStore(inner, metrics))
