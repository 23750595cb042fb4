"""The verifier's Prometheus metrics: definitions and the typed calls that record them.

Every metric lives on the ``CollectorRegistry`` of one ``VerifierMetrics`` object (never the
global default registry), so a test builds a fresh one and a process builds exactly one.
Label values are bounded: enums for outcomes and kinds, and ``BoundedLabel`` (an identifier
pattern plus a cap on distinct values, then ``other``) for RPC names, store operations and
reason codes. No label ever carries a device id, a nonce or any other per-request value; the
golden digest label changes only on a reload (the old series is set to 0 and dropped).

Every name below starts with ``fleetattest_``. Types: C counter, G gauge, H histogram.
SLIs: S success rate, L attestation latency, D policy deny rate, F freshness failure rate,
V coverage, R revocation propagation, K key rotation compliance, A audit query latency.

======================================  ==  ===============  ===============================  ===
name                                    T   labels           meaning                          SLI
======================================  ==  ===============  ===============================  ===
build_info                              G   version          1; the running version
attestations_total                      C   outcome          verdicts stored, by status       S D
verdict_reasons_total                   C   code             reasons in stored verdicts
refusals_total                          C   rpc, error_type  RPCs refused with an error       S
rpc_duration_seconds                    H   rpc              whole unary RPC latency          L A
rpcs_in_flight                          G   rpc              unary RPCs being handled now
appraisal_duration_seconds              H   -                appraisal latency                L
freshness_failures_total                C   kind             bad nonces, stale evidence       F
rollout_decisions_total                 C   decision         rollout gate answers go/no_go    D
rollout_deny_reasons_total              C   reason           reasons behind no_go answers     D
enrollments_total                       C   outcome          enrollment results
devices_enrolled                        G   -                enrolled devices                 V
devices_current_affirming               G   -                latest verdict fresh, affirming  V
devices_expired                         G   -                verdict expired or superseded    V
devices_never_attested                  G   -                enrolled, no verdict             V
coverage_refresh_timestamp_seconds      G   -                last coverage refresh            V
coverage_refresh_failures_total         C   -                coverage queries that failed     V
golden_reloads_total                    C   result           golden loads, ok / failed
golden_reload_failing                   G   -                1 while the last load failed
golden_info                             G   digest           processes serving this digest
golden_last_success_timestamp_seconds   G   -                last valid load (oldest process)
revocation_propagation_seconds          H   -                verdict stored -> stream event   R
streams_open                            G   -                WatchVerdicts streams open
token_signing_key_age_seconds           G   -                age of the active signing key    K
token_rotation_overlap_seconds          G   -                until the last retired key goes  K
store_errors_total                      C   op               store calls that raised
clock_in_doubt                          G   -                1 while the wall clock is doubted
clock_acknowledgements_total            C   -                operators' clock acknowledgements
store_operation_duration_seconds        H   op               store call latency               A
======================================  ==  ===============  ===============================  ===

Not exported: the false deny rate needs human review of denies, which the verifier does not
record; it is left to the review tooling.

Several processes (``--processes N``) use prometheus_client's multiprocess mode (set up by
``verifier.metrics_http``). Counters and histograms sum across processes; each gauge declares
how it combines (``livesum``, ``livemax``, ``livemin`` or ``livemostrecent``: the ``live``
modes drop a worker's values once it is marked dead). Info and Enum metrics do not work in
that mode, so none is used (the golden digest is a gauge label), and ``_created`` samples are
not exported there. In that mode all ``VerifierMetrics`` of one process share its files: build
exactly one per process.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from verifier import errors
from verifier.verdict import Status

log = logging.getLogger(__name__)

PREFIX = "fleetattest_"
OTHER = "other"

# Whole-RPC latency: fine around the 200 ms attestation and 1 s audit targets.
RPC_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0)
APPRAISAL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0)
STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)
# Revocation propagation: target under 5 minutes.
PROPAGATION_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class Refusal(enum.Enum):
    """Why an RPC was refused: the ``error_type`` label."""

    NONCE_MISMATCH = "nonce_mismatch"
    STALE_EVIDENCE = "stale_evidence"
    SIGNATURE = "signature"
    MALFORMED = "malformed"
    LIMIT_EXCEEDED = "limit_exceeded"
    REPLAY_MISMATCH = "replay_mismatch"
    POLICY = "policy"
    UNKNOWN_DEVICE = "unknown_device"
    ENROLLMENT_REFUSED = "enrollment_refused"
    ACTIVATION_FAILED = "activation_failed"
    STORE_UNAVAILABLE = "store_unavailable"
    CLOCK_IN_DOUBT = "clock_in_doubt"
    SHED_LOAD = "shed_load"
    INTERNAL = "internal"


# Most specific first, as in verifier.service.errors: the first isinstance match wins.
_REFUSALS: tuple[tuple[type[errors.AttestationError], Refusal], ...] = (
    (errors.LimitExceeded, Refusal.LIMIT_EXCEEDED),
    (errors.MalformedEvidence, Refusal.MALFORMED),
    (errors.UnknownDevice, Refusal.UNKNOWN_DEVICE),
    (errors.EnrollmentRefused, Refusal.ENROLLMENT_REFUSED),
    (errors.ActivationFailed, Refusal.ACTIVATION_FAILED),
    (errors.SignatureInvalid, Refusal.SIGNATURE),
    (errors.NonceMismatch, Refusal.NONCE_MISMATCH),
    (errors.StaleEvidence, Refusal.STALE_EVIDENCE),
    (errors.ReplayMismatch, Refusal.REPLAY_MISMATCH),
    (errors.PolicyViolation, Refusal.POLICY),
    (errors.StoreUnavailable, Refusal.STORE_UNAVAILABLE),
    (errors.ClockInDoubt, Refusal.CLOCK_IN_DOUBT),
)


def refusal_for(exc: BaseException) -> Refusal:
    """The refusal label of an exception; anything not an ``AttestationError`` is internal."""
    for cls, kind in _REFUSALS:
        if isinstance(exc, cls):
            return kind
    return Refusal.POLICY if isinstance(exc, errors.AttestationError) else Refusal.INTERNAL


class FreshnessFailure(enum.Enum):
    """The ``kind`` label of freshness failures."""

    NONCE_EXPIRED = "nonce_expired"
    NONCE_REUSED = "nonce_reused"
    NONCE_UNKNOWN = "nonce_unknown"  # never issued to this device
    NONCE_REJECTED = "nonce_rejected"  # the store could not say which of the three
    STALE_EVIDENCE = "stale_evidence"  # a counter or clock that went backwards


class EnrollmentResult(enum.Enum):
    ENROLLED = "enrolled"
    REENROLLED = "reenrolled"
    APPROVAL_REQUIRED = "approval_required"
    REFUSED = "refused"


class BoundedLabel:
    """Label values from code or configuration, bounded in number.

    A value is kept when it matches ``pattern`` and fewer than ``cap`` distinct values were
    kept so far; anything else becomes ``other``. Thread safe.
    """

    def __init__(self, pattern: str, cap: int) -> None:
        self._pattern = re.compile(pattern)
        self._cap = cap
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if not self._pattern.fullmatch(value):
            return OTHER
        with self._lock:
            if len(self._seen) >= self._cap:
                return OTHER
            self._seen.add(value)
        return value


@dataclass(frozen=True)
class Coverage:
    """Device counts from the store. ``expired`` includes superseded verdicts."""

    enrolled: int
    current_affirming: int
    expired: int
    never_attested: int


class VerifierMetrics:
    """All of the verifier's metrics on one registry, and the calls that record them."""

    def __init__(self, registry: CollectorRegistry | None = None, version: str = "") -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self._rpc = BoundedLabel(r"[A-Z][A-Za-z0-9]{0,63}", 64)
        self._op = BoundedLabel(r"[a-z][a-z0-9_]{0,63}", 64)
        self._code = BoundedLabel(r"[a-z][a-z0-9_]{0,63}", 128)
        self._lock = threading.Lock()
        self._digest = ""

        self._build = Gauge(
            PREFIX + "build_info",
            "The running version (always 1).",
            ["version"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self._build.labels(version or "unknown").set(1)
        self._attestations = Counter(
            PREFIX + "attestations", "Verdicts stored, by status.", ["outcome"], registry=r
        )
        self._outcomes = {s: self._attestations.labels(s.value) for s in Status}
        self._reasons = Counter(
            PREFIX + "verdict_reasons",
            "Reasons in stored verdicts, by code.",
            ["code"],
            registry=r,
        )
        self._refusals = Counter(
            PREFIX + "refusals",
            "RPCs refused with an error, by error type.",
            ["rpc", "error_type"],
            registry=r,
        )
        for kind in Refusal:
            self._refusals.labels("Attest", kind.value)
        self._rpc_seconds = Histogram(
            PREFIX + "rpc_duration_seconds",
            "Whole unary RPC latency.",
            ["rpc"],
            buckets=RPC_BUCKETS,
            registry=r,
        )
        self._in_flight = Gauge(
            PREFIX + "rpcs_in_flight",
            "Unary RPCs being handled.",
            ["rpc"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self._appraisal = Histogram(
            PREFIX + "appraisal_duration_seconds",
            "Appraisal latency.",
            buckets=APPRAISAL_BUCKETS,
            registry=r,
        )
        self._freshness = Counter(
            PREFIX + "freshness_failures",
            "Expired, reused or unknown nonces; stale evidence.",
            ["kind"],
            registry=r,
        )
        self._freshness_kinds = {k: self._freshness.labels(k.value) for k in FreshnessFailure}
        self._rollout = Counter(
            PREFIX + "rollout_decisions", "Rollout gate answers.", ["decision"], registry=r
        )
        self._rollout_go = self._rollout.labels("go")
        self._rollout_no_go = self._rollout.labels("no_go")
        self._rollout_reasons = Counter(
            PREFIX + "rollout_deny_reasons",
            "Reasons behind no_go answers.",
            ["reason"],
            registry=r,
        )
        self._enrollments = Counter(
            PREFIX + "enrollments", "Enrollment results.", ["outcome"], registry=r
        )
        self._enrollment_kinds = {e: self._enrollments.labels(e.value) for e in EnrollmentResult}
        self._init_coverage(r)
        self._init_golden(r)
        self._propagation = Histogram(
            PREFIX + "revocation_propagation_seconds",
            "Seconds from a verdict being stored to its WatchVerdicts event.",
            buckets=PROPAGATION_BUCKETS,
            registry=r,
        )
        self._streams = Gauge(
            PREFIX + "streams_open",
            "WatchVerdicts streams open.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self._key_age = Gauge(
            PREFIX + "token_signing_key_age_seconds",
            "Age of the active token signing key.",
            registry=r,
            multiprocess_mode="livemax",
        )
        self._overlap = Gauge(
            PREFIX + "token_rotation_overlap_seconds",
            "Seconds until the last retired signing key leaves the JWKS (0: none).",
            registry=r,
            multiprocess_mode="livemax",
        )
        self._store_errors = Counter(
            PREFIX + "store_errors", "Store calls that raised.", ["op"], registry=r
        )
        self._store_seconds = Histogram(
            PREFIX + "store_operation_duration_seconds",
            "Store call latency.",
            ["op"],
            buckets=STORE_BUCKETS,
            registry=r,
        )

    def _init_coverage(self, r: CollectorRegistry) -> None:
        def gauge(name: str, text: str) -> Gauge:
            return Gauge(PREFIX + name, text, registry=r, multiprocess_mode="livemostrecent")

        self._enrolled = gauge("devices_enrolled", "Enrolled devices.")
        self._affirming = gauge(
            "devices_current_affirming", "Devices whose latest verdict is fresh and affirming."
        )
        self._expired = gauge(
            "devices_expired", "Devices whose latest verdict expired or was superseded."
        )
        self._never = gauge("devices_never_attested", "Enrolled devices with no verdict.")
        self._coverage_at = gauge(
            "coverage_refresh_timestamp_seconds", "When the coverage gauges were refreshed."
        )
        self._coverage_failures = Counter(
            PREFIX + "coverage_refresh_failures", "Coverage queries that failed.", registry=r
        )

    def _init_golden(self, r: CollectorRegistry) -> None:
        self._golden_reloads = Counter(
            PREFIX + "golden_reloads", "Golden set load attempts.", ["result"], registry=r
        )
        self._golden_ok = self._golden_reloads.labels("ok")
        self._golden_failed = self._golden_reloads.labels("failed")
        self._golden_failing = Gauge(
            PREFIX + "golden_reload_failing",
            "1 while the last reload attempt was refused.",
            registry=r,
            multiprocess_mode="livemax",
        )
        self._golden_info = Gauge(
            PREFIX + "golden_info",
            "Processes serving this golden set digest.",
            ["digest"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self._golden_at = Gauge(
            PREFIX + "golden_last_success_timestamp_seconds",
            "When a valid golden set was last loaded (the oldest process).",
            registry=r,
            multiprocess_mode="livemin",
        )
        self._clock_in_doubt = Gauge(
            PREFIX + "clock_in_doubt",
            "1 while this process doubts its wall clock (no tokens, verdicts unknown).",
            registry=r,
            multiprocess_mode="livemax",
        )
        self._clock_acks = Counter(
            PREFIX + "clock_acknowledgements",
            "Operators' acknowledgements that the wall clock is right (clearing doubt).",
            registry=r,
        )

    # ------------------------------------------------------------ attestation

    def attestation(self, outcome: Status, reason_codes: Iterable[str] = ()) -> None:
        """A verdict was stored (call once per successful Attest)."""
        self._outcomes[outcome].inc()
        for code in reason_codes:
            self._reasons.labels(self._code(code)).inc()

    def refusal(self, rpc: str, kind: Refusal) -> None:
        """An RPC ended with an error (call from the one error mapping)."""
        self._refusals.labels(self._rpc(rpc), kind.value).inc()

    def observe_rpc(self, rpc: str, seconds: float) -> None:
        self._rpc_seconds.labels(self._rpc(rpc)).observe(seconds)

    @contextlib.contextmanager
    def rpc_in_flight(self, rpc: str) -> Iterator[None]:
        """Count the RPC as in flight and observe its whole duration, error or not."""
        name = self._rpc(rpc)
        gauge = self._in_flight.labels(name)
        gauge.inc()
        start = time.perf_counter()
        try:
            yield
        finally:
            gauge.dec()
            self._rpc_seconds.labels(name).observe(time.perf_counter() - start)

    def appraisal_seconds(self, seconds: float) -> None:
        self._appraisal.observe(seconds)

    def freshness_failure(self, kind: FreshnessFailure) -> None:
        self._freshness_kinds[kind].inc()

    def enrollment(self, outcome: EnrollmentResult) -> None:
        self._enrollment_kinds[outcome].inc()

    # ------------------------------------------------------------ relying party

    def rollout_decision(self, go: bool, reason_codes: Iterable[str] = ()) -> None:
        """One CheckRollout answer; a no_go counts each of its reason codes too."""
        if go:
            self._rollout_go.inc()
            return
        self._rollout_no_go.inc()
        for code in reason_codes:
            self._rollout_reasons.labels(self._code(code)).inc()

    def stream_opened(self) -> None:
        self._streams.inc()

    def stream_closed(self) -> None:
        self._streams.dec()

    def revocation_propagation(self, seconds: float) -> None:
        """A verdict stored ``seconds`` ago was just sent on a live stream."""
        self._propagation.observe(max(0.0, seconds))

    # ------------------------------------------------------------ fleet and policy

    def coverage(self, counts: Coverage, now: float) -> None:
        self._enrolled.set(counts.enrolled)
        self._affirming.set(counts.current_affirming)
        self._expired.set(counts.expired)
        self._never.set(counts.never_attested)
        self._coverage_at.set(now)

    def coverage_failed(self) -> None:
        self._coverage_failures.inc()

    def golden_reload(self, ok: bool, digest: str, now: float) -> None:
        """A load attempt: ``digest`` is the live digest afterwards (kept on failure)."""
        if not ok:
            self._golden_failed.inc()
            self._golden_failing.set(1)
            return
        self._golden_ok.inc()
        self._golden_failing.set(0)
        self._golden_at.set(now)
        with self._lock:
            if digest != self._digest:
                if self._digest:
                    self._golden_info.labels(self._digest).set(0)  # multiprocess files keep 0
                    self._golden_info.remove(self._digest)
                self._golden_info.labels(digest).set(1)
                self._digest = digest

    def clock_doubt(self, in_doubt: bool) -> None:
        self._clock_in_doubt.set(1 if in_doubt else 0)

    def clock_acknowledged(self) -> None:
        self._clock_acks.inc()

    def token_key(self, age_seconds: float, overlap_left_seconds: float) -> None:
        self._key_age.set(max(0.0, age_seconds))
        self._overlap.set(max(0.0, overlap_left_seconds))

    # ------------------------------------------------------------ store

    def store_error(self, op: str) -> None:
        self._store_errors.labels(self._op(op)).inc()

    def store_latency(self, op: str, seconds: float) -> None:
        self._store_seconds.labels(self._op(op)).observe(seconds)

    def store_timer(self, op: str) -> StoreTimer:
        """The duration histogram and error counter of store calls named ``op``, bound once
        (a label lookup per call costs more than some of the calls it times)."""
        name = self._op(op)
        return StoreTimer(self._store_seconds.labels(name), self._store_errors.labels(name))


class StoreTimer:
    """``observe(seconds)`` and ``error()`` for one store operation's label."""

    __slots__ = ("error", "observe")

    def __init__(self, seconds: Histogram, errors: Counter) -> None:
        self.observe = seconds.observe
        self.error = errors.inc


class CoverageRefresher:
    """Calls ``query`` every ``period`` seconds in a daemon thread and sets the gauges.

    A query that raises is logged and counted (``coverage_refresh_failures``); the gauges
    keep their last values and ``coverage_refresh_timestamp_seconds`` shows how old they are.
    """

    def __init__(
        self,
        metrics: VerifierMetrics,
        query: Callable[[], Coverage],
        period: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if period <= 0:
            raise ValueError("the coverage period must be positive")
        self._metrics = metrics
        self._query = query
        self._period = period
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> bool:
        """One refresh now; False when the query failed."""
        try:
            counts = self._query()
        except errors.StoreUnavailable as exc:  # an outage: one line, no traceback
            log.warning("coverage query failed (%s); the coverage gauges are unchanged", exc)
            self._metrics.coverage_failed()
            return False
        except Exception:  # the refresher must survive anything; this is a bug
            log.exception("coverage query failed; the coverage gauges are unchanged")
            self._metrics.coverage_failed()
            return False
        self._metrics.coverage(counts, self._clock())
        return True

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the coverage refresher is already running")

        def loop() -> None:
            self.refresh()
            while not self._stop.wait(self._period):
                self.refresh()

        self._thread = threading.Thread(target=loop, name="coverage", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def exported_names(registry: CollectorRegistry) -> frozenset[str]:
    """Every sample name the registry can export, with the type suffixes Prometheus sees."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("_sum", "_count", "_created", ""),
        "info": ("_info",),
    }
    names: set[str] = set()
    for family in registry.collect():
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return frozenset(names)
