"""``attest-verifier serve``: the verifier process (or processes) and its lifecycle.

Start-up refuses, with a clear message and exit 2, an unreadable trust directory or allowlist
and an invalid golden set: the verifier never runs without a valid policy. While serving:
SIGHUP (or a file change) reloads the golden set, keeping the last valid one when the edit is
broken; expired nonces and challenges are purged and the signing key ring re-read every
``PURGE_INTERVAL`` seconds; SIGTERM or SIGINT stops the server gracefully.

``--processes N`` forks N servers before any gRPC state exists, each binding the same port
with SO_REUSEPORT (the kernel spreads connections): the way past the GIL, one per core. They
share the store, so a nonce issued by one is consumed exactly once by any.

Observability (``verifier.metrics``, ``verifier.metrics_http``, ``verifier.service.health``):
``--metrics-listen HOST:PORT`` (off by default) serves /metrics, loopback only unless a TLS
certificate and key are given (or plaintext is allowed explicitly). With ``--processes N``
the parent switches to multiprocess metrics before forking, serves the sum of the workers'
files itself and marks each reaped worker dead; the first worker alone refreshes the
coverage gauges. Every process serves the gRPC health service: NOT_SERVING while the store
does not answer or the golden set has no usable release, SERVING again by itself.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType

from verifier import __version__, errors, sdnotify
from verifier.app import Verifier, VerifierSettings, open_trust
from verifier.cli.common import Subparsers
from verifier.enrollment.ekchain import TrustConfigError
from verifier.golden.load import GoldenError
from verifier.livegolden import LiveGolden
from verifier.metrics import CoverageRefresher, VerifierMetrics
from verifier.metrics_http import (
    MetricsListenRefused,
    MetricsServer,
    check_listen,
    enable_multiprocess,
    mark_worker_dead,
    multiprocess_registry,
    start_metrics_server,
)
from verifier.observe import check_golden_usable, key_rotation
from verifier.service.health import HealthMonitor, all_of
from verifier.service.server import build_server
from verifier.store import open_store
from verifier.token import KeyRing

log = logging.getLogger("attest-verifier")

PURGE_INTERVAL = 30.0  # seconds between purges of expired nonces and challenges


def register(sub: Subparsers[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser("serve", help="run the gRPC verifier")
    serve.add_argument(
        "--listen", default="127.0.0.1:50051", help="HOST:PORT (default %(default)s)"
    )
    serve.add_argument("--db", required=True, help="SQLite database file, or a postgresql:// URL")
    serve.add_argument("--ek-ca", type=Path, help="directory of trusted EK CA certificates")
    serve.add_argument("--allowlist", type=Path, help="file of allowed EK public-key SHA-256s")
    serve.add_argument(
        "--golden",
        type=Path,
        required=True,
        help="golden measurements directory (required: there is no default policy)",
    )
    serve.add_argument(
        "--keys", type=Path, help="token signing key directory (default: DB path + '.keys')"
    )
    serve.add_argument("--issuer", default="fleet-attest", help="the tokens' iss claim")
    serve.add_argument("--nonce-ttl", type=float, default=60.0, help="seconds (default 60)")
    serve.add_argument("--workers", type=int, default=4, help="RPC threads per process (default 4)")
    serve.add_argument(
        "--processes",
        type=int,
        default=1,
        help="server processes sharing the port with SO_REUSEPORT (default 1; one per core)",
    )
    serve.add_argument("--port-file", type=Path, help="write the bound port here once serving")
    serve.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http(s)://HOST:PORT/metrics (default: off; loopback"
        " only unless --metrics-cert/--metrics-key or --metrics-allow-plaintext)",
    )
    serve.add_argument("--metrics-cert", type=Path, help="TLS certificate of the metrics listener")
    serve.add_argument("--metrics-key", type=Path, help="TLS key of the metrics listener")
    serve.add_argument(
        "--metrics-allow-plaintext",
        action="store_true",
        help="allow plain HTTP metrics on a non-loopback address (a private scrape network)",
    )
    serve.add_argument(
        "--coverage-interval",
        type=float,
        default=60.0,
        help="seconds between refreshes of the coverage gauges (default %(default)s)",
    )
    serve.add_argument(
        "--health-interval",
        type=float,
        default=5.0,
        help="seconds between health checks of the store and golden set (default %(default)s)",
    )
    serve.set_defaults(func=serve_command)


def serve_command(ns: argparse.Namespace) -> int:
    if ns.processes < 1:
        print("attest-verifier: --processes must be at least 1", file=sys.stderr)
        return 2
    if ns.coverage_interval <= 0 or ns.health_interval <= 0:
        print(
            "attest-verifier: the coverage and health intervals must be positive", file=sys.stderr
        )
        return 2
    if ns.metrics_listen:
        try:
            _check_metrics(ns)
        except MetricsListenRefused as exc:
            print(f"attest-verifier: {exc}", file=sys.stderr)
            return 2
    if ns.processes == 1:
        return serve_one(ns, reuse_port=False)
    if ns.listen.rpartition(":")[2] in ("", "0"):
        print("attest-verifier: --processes needs a fixed port in --listen", file=sys.stderr)
        return 2
    return _serve_workers(ns)


def _check_metrics(ns: argparse.Namespace) -> None:
    check_listen(
        ns.metrics_listen,
        ns.metrics_cert,
        ns.metrics_key,
        allow_plaintext=ns.metrics_allow_plaintext,
    )


def _start_metrics(ns: argparse.Namespace, metrics: VerifierMetrics) -> MetricsServer | None:
    if not ns.metrics_listen:
        return None
    server = start_metrics_server(
        ns.metrics_listen,
        metrics.registry,
        ns.metrics_cert,
        ns.metrics_key,
        allow_plaintext=ns.metrics_allow_plaintext,
    )
    log.info("metrics on %s (port %d)", ns.metrics_listen, server.port)
    return server


def _serve_workers(ns: argparse.Namespace) -> int:
    metrics_dir: Path | None = None
    if ns.metrics_listen:
        # Before any fork and before any VerifierMetrics exists (see verifier.metrics_http).
        metrics_dir = Path(tempfile.mkdtemp(prefix="attest-verifier-metrics-"))
        enable_multiprocess(metrics_dir)
    try:
        return _fork_workers(ns, metrics_dir)
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _fork_workers(ns: argparse.Namespace, metrics_dir: Path | None) -> int:
    children: list[int] = []
    for index in range(ns.processes):
        pid = os.fork()
        if pid == 0:  # a worker: its own gRPC server, store connections and signal handlers
            code = 1
            try:
                code = serve_one(ns, reuse_port=True, serve_metrics=False, coverage=index == 0)
            finally:
                os._exit(code)
        children.append(pid)
    listener = None
    if metrics_dir is not None:
        try:
            listener = start_metrics_server(
                ns.metrics_listen,
                multiprocess_registry(metrics_dir),
                ns.metrics_cert,
                ns.metrics_key,
                allow_plaintext=ns.metrics_allow_plaintext,
            )
        except OSError as exc:
            log.error("cannot serve metrics on %s: %s", ns.metrics_listen, exc)

    def forward(signum: int, frame: FrameType | None) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    log.info("%d verifier processes started: %s", len(children), children)
    worst = 0
    for child in children:
        _, status = os.waitpid(child, 0)
        if metrics_dir is not None:
            mark_worker_dead(child, metrics_dir)
        worst = max(worst, os.waitstatus_to_exitcode(status) & 0xFF)
    if listener is not None:
        listener.stop()
    return worst


def serve_one(
    ns: argparse.Namespace, *, reuse_port: bool, serve_metrics: bool = True, coverage: bool = True
) -> int:
    """One verifier process. ``serve_metrics``: it serves its own /metrics (one process);
    ``coverage``: it refreshes the coverage gauges (one process of N)."""
    try:
        trust, allowlist = open_trust(ns.ek_ca, ns.allowlist)
    except (TrustConfigError, OSError) as exc:
        print(f"attest-verifier: {exc}", file=sys.stderr)
        return 2
    store = open_store(ns.db)
    try:
        golden = LiveGolden.start(ns.golden, store, time.time)
    except GoldenError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print("attest-verifier: refusing to start without a valid golden set", file=sys.stderr)
        store.close()
        return 2
    keyring = KeyRing.open(_keys_dir(ns), time.time())
    settings = VerifierSettings(nonce_ttl=ns.nonce_ttl, issuer=ns.issuer)
    metrics = VerifierMetrics(version=__version__)
    verifier = Verifier(store, trust, allowlist, golden, keyring, settings, metrics=metrics)
    health = HealthMonitor(
        all_of(verifier.store.ping, lambda: check_golden_usable(golden, time.time())),
        ns.health_interval,
    )
    try:
        server, port = build_server(
            verifier, ns.listen, workers=ns.workers, reuse_port=reuse_port, health=health
        )
    except (OSError, RuntimeError) as exc:  # grpc says RuntimeError("Failed to bind ...")
        print(
            f"attest-verifier: cannot listen on {ns.listen}: the port is in use or the "
            f"address is not this machine's ({exc})",
            file=sys.stderr,
        )
        store.close()
        return 2
    stop = threading.Event()
    reload_requested = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        (reload_requested if signum == signal.SIGHUP else stop).set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        metrics_server = _start_metrics(ns, metrics) if serve_metrics else None
    except OSError as exc:
        print(
            f"attest-verifier: cannot serve metrics on {ns.metrics_listen}: {exc}", file=sys.stderr
        )
        store.close()
        return 2
    refresher = CoverageRefresher(metrics, verifier.coverage, ns.coverage_interval)
    server.start()
    health.start()
    _start_refresher(refresher, coverage and bool(ns.metrics_listen))
    _record_key_rotation(metrics, keyring)
    golden.watch(stop)
    if ns.port_file:
        ns.port_file.write_text(f"{port}\n")
    log.info("verifier %s serving on port %d (db %s)", __version__, port, ns.db)
    sdnotify.ready(f"serving on port {port}")
    _serve_loop(ns, verifier, stop, reload_requested)
    log.info("shutting down")
    sdnotify.stopping()
    health.stop()  # NOT_SERVING first: load balancers drain this process
    refresher.stop()
    server.stop(grace=5).wait()
    _stop_quietly(metrics_server)
    store.close()
    return 0


def _stop_quietly(metrics_server: MetricsServer | None) -> None:
    if metrics_server is not None:
        metrics_server.stop()


def _start_refresher(refresher: CoverageRefresher, wanted: bool) -> None:
    if wanted:
        refresher.start()


def _serve_loop(
    ns: argparse.Namespace,
    verifier: Verifier,
    stop: threading.Event,
    reload_requested: threading.Event,
) -> None:
    """Until ``stop``: reloads on SIGHUP; purges, key ring reloads and key gauges every
    ``PURGE_INTERVAL``. A store outage is logged and waited out (health says NOT_SERVING)."""
    next_purge = time.monotonic() + PURGE_INTERVAL
    while not stop.wait(1.0):
        sdnotify.watchdog()
        if reload_requested.is_set():
            reload_requested.clear()
            log.info("SIGHUP: reloading golden measurements from %s", ns.golden)
            sdnotify.reloading()
            verifier.golden.reload()
            sdnotify.ready()
        if time.monotonic() >= next_purge:
            next_purge = time.monotonic() + PURGE_INTERVAL
            try:
                verifier.store.purge_expired(time.time())
            except errors.StoreUnavailable as exc:
                log.warning("purge skipped: %s", exc)
            verifier.keyring.reload(time.time())  # another replica may have rotated the key
            _record_key_rotation(verifier.metrics, verifier.keyring)


def _record_key_rotation(metrics: VerifierMetrics, keyring: KeyRing) -> None:
    try:
        rotation = key_rotation(keyring, time.time())
    except OSError as exc:
        log.warning("cannot read the signing key's age: %s", exc)
        return
    metrics.token_key(rotation.age_seconds, rotation.overlap_left_seconds)


def _keys_dir(ns: argparse.Namespace) -> Path:
    """--keys, or beside a SQLite database; a PostgreSQL verifier must say where."""
    if ns.keys is not None:
        return Path(ns.keys)
    if "://" in ns.db:
        raise errors.PolicyViolation("--keys DIR is required with a PostgreSQL --db")
    db = Path(ns.db)
    return db.with_name(db.name + ".keys")
