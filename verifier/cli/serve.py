"""``attest-verifier serve``: the verifier process (or processes) and its lifecycle.

Start-up refuses, with a clear message and exit 2, an unreadable trust directory or allowlist,
an invalid golden set and TLS files that cannot serve: the verifier never runs without a valid
policy. While serving: SIGHUP (or a file change) reloads the golden set, keeping the last
valid one when the edit is broken, and the TLS files (new connections get the new
certificate, established ones keep theirs; a pair that does not load keeps the last good one);
every ``SWEEP_INTERVAL`` seconds the CRLs are re-read when a file changed and every verdict
that stopped being current (a reload, a release past ``not_after``, a revocation made on
another replica) gets its supersession event on the stream; expired nonces and challenges are
purged and the signing key ring re-read every ``PURGE_INTERVAL`` seconds; SIGTERM or SIGINT
stops the server gracefully.

``--enrollment-policy`` defaults to ``approve``: a device the operators have not looked at never
gets a verdict (fail closed), and unlike ``inventory`` it needs no list prepared ahead.

Listeners (``verifier.service.server``): with ``--tls-cert``, ``--tls-key`` and
``--client-ca``, ``--listen`` is the agents' TLS port and ``--caller-listen`` (default: the
same host, the next port) the mutual-TLS port of relying parties and operators. Without them
``--listen`` is plaintext, refused off loopback unless ``--insecure`` is given (then a warning
on every start), and only the Agent service and GetJwks answer (nobody else can be
authenticated). ``--operator-socket PATH`` adds the Operator service on a Unix socket (0600).
``--port-file`` receives the agent port on its first line and the caller port on the second
(absent without TLS), written atomically once serving.

``--processes N`` forks N servers before any gRPC state exists, each binding the same ports
with SO_REUSEPORT (the kernel spreads connections): the way past the GIL, one per core. They
share the store, so a nonce issued by one is consumed exactly once by any. The parent is a
supervisor (``verifier.supervisor``): a worker that dies is replaced after a backoff (logged),
and the verifier exits 1 when workers keep dying. Before forking, the ports must be free: a
leftover verifier holding one with SO_REUSEPORT would otherwise silently share the traffic.
The operator socket and the port file belong to the worker in slot 0 (a Unix socket has one
listener); its replacement takes them back.

Observability (``verifier.metrics``, ``verifier.metrics_http``, ``verifier.service.health``):
``--metrics-listen HOST:PORT`` (off by default) serves /metrics, loopback only unless a TLS
certificate and key are given (or plaintext is allowed explicitly). With ``--processes N``
the supervisor switches to multiprocess metrics before forking, serves the sum of the
workers' files itself and marks each ended worker dead; the worker in slot 0 alone refreshes
the coverage gauges. Every process serves the gRPC health service: NOT_SERVING while the store
does not answer or the golden set has no usable release, SERVING again by itself.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import FrameType

import grpc

from verifier import __version__, auditlog, errors, sdnotify
from verifier.app import Verifier, VerifierSettings, open_trust
from verifier.audit.history import Retention
from verifier.cli.common import Subparsers
from verifier.cli.token import duration
from verifier.clock import ClockGuard, Reading
from verifier.clockshare import SharedAcknowledgement
from verifier.enrollment.crl import STALE_POLICIES
from verifier.enrollment.ekchain import TrustConfigError
from verifier.enrollment.policy import EnrollmentPolicy
from verifier.errors import AttestationError
from verifier.golden.load import GoldenError
from verifier.limits import DEFAULT_LIMITS, Limits
from verifier.livecrl import LiveCrls
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
from verifier.service.server import Listen, Ports, build_server
from verifier.store import Store, open_store
from verifier.store.headroom import parse_size
from verifier.store.maintenance import StoreMaintenance
from verifier.supervisor import check_port_exclusive, supervise
from verifier.tls.credentials import ServerTls, TlsFiles
from verifier.token import KeyRing

log = logging.getLogger("attest-verifier")

PURGE_INTERVAL = 30.0  # seconds between purges of expired nonces and challenges
SWEEP_INTERVAL = 2.0  # seconds between looks for verdicts that stopped being current


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
    serve.add_argument(
        "--port-file",
        type=Path,
        help="write the bound ports here once serving: the agent port, then the caller port",
    )
    tls = serve.add_argument_group("TLS (all three, or none: plaintext)")
    tls.add_argument("--tls-cert", type=Path, help="the verifier's certificate chain (PEM)")
    tls.add_argument("--tls-key", type=Path, help="its private key (PEM)")
    tls.add_argument(
        "--client-ca",
        type=Path,
        help="CA bundle (PEM) trusted for client certificates; names the SPIFFE trust domain",
    )
    tls.add_argument(
        "--caller-listen",
        help="HOST:PORT of the mutual-TLS port for relying parties and operators "
        "(default: --listen's host, the next port)",
    )
    tls.add_argument(
        "--insecure",
        action="store_true",
        help="serve plaintext on a non-loopback --listen (labs only: logged on every start)",
    )
    serve.add_argument(
        "--operator-socket",
        type=Path,
        help="also serve the Operator service on this Unix socket (mode 0600; its callers are "
        "operators). Off by default",
    )
    limits = serve.add_argument_group("limits on callers")
    limits.add_argument(
        "--open-calls-per-peer",
        type=float,
        default=DEFAULT_LIMITS.open_calls_per_peer_per_second,
        help="StartEnrollment/GetChallenge per second per address (default %(default)s)",
    )
    limits.add_argument(
        "--open-calls-peer-burst",
        type=float,
        default=DEFAULT_LIMITS.open_calls_peer_burst,
        help="burst of those per address (default %(default)s)",
    )
    limits.add_argument(
        "--open-calls-per-device",
        type=float,
        default=DEFAULT_LIMITS.open_calls_per_device_per_second,
        help="StartEnrollment/GetChallenge per second per device (default %(default)s)",
    )
    limits.add_argument(
        "--open-calls-device-burst",
        type=float,
        default=DEFAULT_LIMITS.open_calls_device_burst,
        help="burst of those per device (default %(default)s)",
    )
    limits.add_argument(
        "--streams-per-caller",
        type=int,
        default=DEFAULT_LIMITS.max_streams_per_identity,
        help="verdict streams per caller identity (default %(default)s)",
    )
    limits.add_argument(
        "--max-streams",
        type=int,
        help="verdict streams in all, below --workers (default: half the workers, at least 2)",
    )
    serve.add_argument(
        "--enrollment-policy",
        choices=[p.value for p in EnrollmentPolicy],
        default=EnrollmentPolicy.APPROVE.value,
        help="who binds a new device's profile: 'inventory' (listed ahead of time), 'approve' "
        "(an operator approves each new device; the default) or 'open' (its labels, trust "
        "on first use: labs and demos only)",
    )
    serve.add_argument(
        "--token-ttl",
        type=duration,
        help="tokens live at most this long (e.g. 5m), however long the verdict does",
    )
    serve.add_argument(
        "--crl-stale",
        choices=STALE_POLICIES,
        default="fail",
        help="a CRL past its nextUpdate: 'fail' (the devices below it cannot enroll or "
        "attest; the default) or 'warn'",
    )
    _register_audit_flags(serve)
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
    serve.add_argument(
        "--store-reserve",
        type=parse_size,
        default=None,
        metavar="SIZE",
        help="SQLite: refuse writes while less than SIZE is free on the database's file system"
        " (default 64M; 0 turns the check off)",
    )
    serve.set_defaults(func=serve_command)


def serve_command(ns: argparse.Namespace) -> int:
    if ns.processes < 1:
        print("attest-verifier: --processes must be at least 1", file=sys.stderr)
        return 2
    try:
        _tls_files(ns)
        _check_observability(ns)
    except (UsageError, MetricsListenRefused) as exc:
        print(f"attest-verifier: {exc}", file=sys.stderr)
        return 2
    if ns.processes == 1:
        return serve_one(ns, reuse_port=False)
    fixed = [ns.listen] + ([caller_listen(ns)] if ns.tls_cert else [])
    if any(address.rpartition(":")[2] in ("", "0") for address in fixed):
        print(
            "attest-verifier: --processes needs fixed ports in --listen and --caller-listen",
            file=sys.stderr,
        )
        return 2
    # SO_REUSEPORT would let a leftover verifier share a port: only our own workers may.
    for address in fixed:
        held = check_port_exclusive(address)
        if held is not None:
            print(f"attest-verifier: {held}", file=sys.stderr)
            return 2
    return _supervise_workers(ns)


def _check_observability(ns: argparse.Namespace) -> None:
    if ns.coverage_interval <= 0 or ns.health_interval <= 0:
        raise UsageError("the coverage and health intervals must be positive")
    if ns.metrics_listen:
        check_listen(
            ns.metrics_listen,
            ns.metrics_cert,
            ns.metrics_key,
            allow_plaintext=ns.metrics_allow_plaintext,
        )


def _supervise_workers(ns: argparse.Namespace) -> int:
    """The workers under the supervisor; with metrics, the summed /metrics from here."""
    metrics_dir: Path | None = None
    listener: MetricsServer | None = None
    if ns.metrics_listen:
        # Before any fork and before any VerifierMetrics exists (see verifier.metrics_http).
        metrics_dir = Path(tempfile.mkdtemp(prefix="attest-verifier-metrics-"))
        enable_multiprocess(metrics_dir)
    try:
        clock_peers = SharedAcknowledgement()  # before the fork: every worker shares it

        def worker(slot: int) -> int:
            return serve_one(
                ns, reuse_port=True, first=slot == 0, serve_metrics=False, clock_peers=clock_peers
            )

        def ended(pid: int) -> None:
            if metrics_dir is not None:
                mark_worker_dead(pid, metrics_dir)

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
                print(
                    f"attest-verifier: cannot serve metrics on {ns.metrics_listen}: {exc}",
                    file=sys.stderr,
                )
                return 2
        return supervise(worker, ns.processes, on_exit=ended)
    finally:
        if listener is not None:
            listener.stop()
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


class UsageError(AttestationError):
    """Flags that do not go together."""


def _tls_files(ns: argparse.Namespace) -> TlsFiles | None:
    given = [ns.tls_cert, ns.tls_key, ns.client_ca]
    if not any(given):
        if ns.caller_listen:
            raise UsageError("--caller-listen needs --tls-cert, --tls-key and --client-ca")
        return None
    if not all(given):
        raise UsageError("--tls-cert, --tls-key and --client-ca go together")
    if ns.insecure:
        raise UsageError("--insecure and the TLS files are mutually exclusive")
    return TlsFiles(ns.tls_cert, ns.tls_key, ns.client_ca)


def caller_listen(ns: argparse.Namespace) -> str:
    """``--caller-listen``, or ``--listen``'s host with the next port (port 0 stays 0)."""
    if ns.caller_listen:
        return str(ns.caller_listen)
    host, _, port = str(ns.listen).rpartition(":")
    number = int(port) if port.isdigit() else 0
    return f"{host}:{number + 1 if number else 0}"


def _limits(ns: argparse.Namespace) -> Limits:
    return replace(
        DEFAULT_LIMITS,
        open_calls_per_peer_per_second=ns.open_calls_per_peer,
        open_calls_peer_burst=ns.open_calls_peer_burst,
        open_calls_per_device_per_second=ns.open_calls_per_device,
        open_calls_device_burst=ns.open_calls_device_burst,
        max_streams_per_identity=ns.streams_per_caller,
    )


def write_port_file(path: Path, ports: Ports) -> None:
    """The agent port, then the caller port (if any), one per line; atomically (a reader
    polling for the file never sees half of it)."""
    lines = [str(ports.agent)] + ([str(ports.caller)] if ports.caller is not None else [])
    partial = path.with_name(path.name + ".partial")
    partial.write_text("\n".join(lines) + "\n")
    os.replace(partial, path)


def serve_one(
    ns: argparse.Namespace,
    *,
    reuse_port: bool,
    first: bool = True,
    serve_metrics: bool = True,
    clock_peers: SharedAcknowledgement | None = None,
) -> int:
    """One server. ``first``: the worker that owns the operator socket and the port file and
    refreshes the coverage gauges; ``serve_metrics``: it serves its own /metrics (one process);
    ``clock_peers``: the clock acknowledgement shared with the other workers."""
    try:
        trust, allowlist = open_trust(ns.ek_ca, ns.allowlist)
        files = _tls_files(ns)
        tls = ServerTls(files) if files is not None else None
    except (TrustConfigError, OSError, AttestationError) as exc:
        print(f"attest-verifier: {exc}", file=sys.stderr)
        return 2
    try:
        crls = LiveCrls.start(ns.ek_ca, trust)
    except (TrustConfigError, OSError) as exc:
        print(f"attest-verifier: {exc}", file=sys.stderr)
        return 2
    store = open_store(ns.db, reserve_bytes=ns.store_reserve)
    try:
        golden = LiveGolden.start(ns.golden, store, time.time)
    except GoldenError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print("attest-verifier: refusing to start without a valid golden set", file=sys.stderr)
        store.close()
        return 2
    keyring = KeyRing.open(_keys_dir(ns), time.time())
    metrics = VerifierMetrics(version=__version__)
    verifier = Verifier(
        store,
        trust,
        allowlist,
        golden,
        keyring,
        _settings(ns),
        crls=crls,
        metrics=metrics,
        clock_guard=ClockGuard(),
        reading=clock_reading(),
        clock_peers=clock_peers,
    )
    health = HealthMonitor(
        all_of(
            verifier.store.ping,
            lambda: check_golden_usable(golden, time.time()),
            lambda: check_clock_trusted(verifier),
        ),
        ns.health_interval,
    )
    built = _build(ns, verifier, tls, health, reuse_port=reuse_port, first=first)
    if built is None:
        store.close()
        return 2
    server, ports = built
    try:
        metrics_server = _start_metrics(ns, metrics) if serve_metrics else None
    except OSError as exc:
        print(
            f"attest-verifier: cannot serve metrics on {ns.metrics_listen}: {exc}", file=sys.stderr
        )
        store.close()
        return 2
    refresher = CoverageRefresher(metrics, verifier.coverage, ns.coverage_interval)
    observing = Observing(health, refresher, first and bool(ns.metrics_listen))
    _serve_until_stopped(ns, server, ports, verifier, keyring, tls, observing, first=first)
    if metrics_server is not None:
        metrics_server.stop()
    store.close()
    if ns.operator_socket and first:
        ns.operator_socket.unlink(missing_ok=True)
    return 0


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


class Observing:
    """What a serving process runs beside the server: health, and coverage in one process."""

    def __init__(self, health: HealthMonitor, refresher: CoverageRefresher, coverage: bool):
        self.health, self.refresher, self.coverage = health, refresher, coverage

    def start(self) -> None:
        self.health.start()
        if self.coverage:
            self.refresher.start()

    def stop(self) -> None:
        self.health.stop()  # NOT_SERVING first: load balancers drain this process
        self.refresher.stop()


def _build(
    ns: argparse.Namespace,
    verifier: Verifier,
    tls: ServerTls | None,
    health: HealthMonitor,
    *,
    reuse_port: bool,
    first: bool,
) -> tuple[grpc.Server, Ports] | None:
    """The server, or None once the reason it cannot serve is printed."""
    listen = Listen(
        agent=ns.listen,
        tls=tls,
        caller=caller_listen(ns) if tls is not None else None,
        operator_socket=ns.operator_socket if first else None,
        insecure=ns.insecure,
    )
    try:
        return build_server(
            verifier,
            listen,
            workers=ns.workers,
            reuse_port=reuse_port,
            max_streams=ns.max_streams,
            health=health,
        )
    except (AttestationError, ValueError) as exc:
        print(f"attest-verifier: {exc}", file=sys.stderr)
    except (OSError, RuntimeError) as exc:  # grpc says RuntimeError("Failed to bind ...")
        where = " or ".join(a for a in (listen.agent, listen.caller) if a)
        print(
            f"attest-verifier: cannot listen on {where}: the port is in use or the "
            f"address is not this machine's ({exc})",
            file=sys.stderr,
        )
    return None


def _serve_until_stopped(
    ns: argparse.Namespace,
    server: grpc.Server,
    ports: Ports,
    verifier: Verifier,
    keyring: KeyRing,
    tls: ServerTls | None,
    observing: Observing,
    *,
    first: bool,
) -> None:
    golden, store = verifier.golden, verifier.store
    stop = threading.Event()
    reload_requested = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        (reload_requested if signum == signal.SIGHUP else stop).set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    _start_audit(ns, store, stop)
    server.start()
    observing.start()
    _record_key_rotation(verifier.metrics, keyring)
    golden.watch(stop)
    if ns.port_file and first:
        write_port_file(ns.port_file, ports)
    where = f"agents on port {ports.agent}" + (
        f" (TLS), callers on port {ports.caller} (mutual TLS)" if tls else " (plaintext)"
    )
    if ns.operator_socket and first:
        where += f", operators on unix:{ns.operator_socket}"
    log.info("verifier %s serving %s (db %s)", __version__, where, ns.db)
    sdnotify.ready(f"serving {where}")
    verifier.watch(stop, interval=SWEEP_INTERVAL)
    next_purge = time.monotonic() + PURGE_INTERVAL
    maintenance = StoreMaintenance(store, purge_interval=PURGE_INTERVAL)
    while not stop.wait(1.0):
        sdnotify.watchdog()
        verifier.clock_doubt()  # a reading a second: steps are seen without traffic
        maintenance.tick(time.monotonic(), time.time())  # purge, checkpoints; never raises
        if reload_requested.is_set():
            reload_requested.clear()
            log.info("SIGHUP: reloading golden measurements from %s", ns.golden)
            sdnotify.reloading()
            if golden.reload().applied:
                verifier.sweep(full=True)
            if tls is not None:
                log.info("SIGHUP: reloading the TLS files before the next handshake")
                tls.reload()
            sdnotify.ready()
        if time.monotonic() >= next_purge:
            next_purge = time.monotonic() + PURGE_INTERVAL
            keyring.reload(time.time())  # another replica may have rotated the key
            _record_key_rotation(verifier.metrics, keyring)
    log.info("shutting down")
    sdnotify.stopping()
    observing.stop()
    server.stop(grace=5).wait()


def check_clock_trusted(verifier: Verifier) -> None:
    """A health check: raises while the wall clock is in doubt (the verifier vouches for
    nothing then, so load balancers should send agents to another replica)."""
    doubt = verifier.clock_doubt()
    if doubt is not None:
        raise errors.ClockInDoubt(f"the wall clock is in doubt: {doubt}")


BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def clock_reading() -> Callable[[], Reading]:
    """Simultaneous wall and monotonic readings, named by this boot (the monotonic epoch)."""
    try:
        epoch = BOOT_ID.read_text().strip()
    except OSError:
        epoch = f"pid-{os.getpid()}"  # no boot id: this process's monotonic clock only

    def read() -> Reading:
        return Reading(time.time(), time.monotonic(), epoch)

    return read


def _record_key_rotation(metrics: VerifierMetrics, keyring: KeyRing) -> None:
    try:
        rotation = key_rotation(keyring, time.time())
    except OSError as exc:
        log.warning("cannot read the signing key's age: %s", exc)
        return
    metrics.token_key(rotation.age_seconds, rotation.overlap_left_seconds)


def _settings(ns: argparse.Namespace) -> VerifierSettings:
    policy = EnrollmentPolicy(ns.enrollment_policy)
    if policy is EnrollmentPolicy.OPEN:
        log.warning(
            "enrollment policy 'open': any device with a trusted EK enrolls and its own labels "
            "choose its golden profile; for labs and demos only"
        )
    return VerifierSettings(
        nonce_ttl=ns.nonce_ttl,
        issuer=ns.issuer,
        limits=_limits(ns),
        enrollment_policy=policy,
        token_ttl=ns.token_ttl,
        crl_stale=ns.crl_stale,
    )


# ------------------------------------------------------------------ audit (issue 15)


def _register_audit_flags(serve: argparse.ArgumentParser) -> None:
    serve.add_argument(
        "--audit-key",
        type=Path,
        help="checkpoint signing key ('attest-verifier audit init-key FILE'); without it the "
        "log is kept but no checkpoints are signed",
    )
    serve.add_argument(
        "--checkpoint-interval", type=float, default=60.0, help="seconds (default 60)"
    )
    serve.add_argument(
        "--retention-age", type=float, help="keep attestation evidence this many seconds"
    )
    serve.add_argument("--retention-count", type=int, help="keep this many attestations per device")


def _start_audit(ns: argparse.Namespace, store: Store, stop: threading.Event) -> None:
    """Checkpoints (with --audit-key) and retention (with --retention-*), in one thread."""
    signer = auditlog.load_signer(ns.audit_key) if ns.audit_key else None
    retention = Retention(ns.retention_age, ns.retention_count)
    if signer is None and not retention.bounded:
        return
    if signer is not None:
        log.info("audit checkpoints signed by %s", signer.verifier().encode())
    auditlog.start_background(store, stop, time.time, signer, retention, ns.checkpoint_interval)


def _keys_dir(ns: argparse.Namespace) -> Path:
    """--keys, or beside a SQLite database; a PostgreSQL verifier must say where."""
    if ns.keys is not None:
        return Path(ns.keys)
    if "://" in ns.db:
        raise errors.PolicyViolation("--keys DIR is required with a PostgreSQL --db")
    db = Path(ns.db)
    return db.with_name(db.name + ".keys")
