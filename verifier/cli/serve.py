"""``attest-verifier serve``: the verifier process (or processes) and its lifecycle.

Start-up refuses, with a clear message and exit 2, an unreadable trust directory or allowlist
and an invalid golden set: the verifier never runs without a valid policy. While serving:
SIGHUP (or a file change) reloads the golden set, keeping the last valid one when the edit is
broken; expired nonces and challenges are purged and the signing key ring re-read every
``PURGE_INTERVAL`` seconds; SIGTERM or SIGINT stops the server gracefully.

``--processes N`` forks N servers before any gRPC state exists, each binding the same port
with SO_REUSEPORT (the kernel spreads connections): the way past the GIL, one per core. They
share the store, so a nonce issued by one is consumed exactly once by any.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from verifier import __version__, auditlog, errors, sdnotify
from verifier.app import Verifier, VerifierSettings, open_trust
from verifier.audit.history import Retention
from verifier.cli.common import Subparsers
from verifier.enrollment.ekchain import TrustConfigError
from verifier.golden.load import GoldenError
from verifier.livegolden import LiveGolden
from verifier.service.server import build_server
from verifier.store import Store, open_store
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
    _register_audit_flags(serve)
    serve.set_defaults(func=serve_command)


def serve_command(ns: argparse.Namespace) -> int:
    if ns.processes < 1:
        print("attest-verifier: --processes must be at least 1", file=sys.stderr)
        return 2
    if ns.processes == 1:
        return serve_one(ns, reuse_port=False)
    if ns.listen.rpartition(":")[2] in ("", "0"):
        print("attest-verifier: --processes needs a fixed port in --listen", file=sys.stderr)
        return 2
    return _serve_workers(ns)


def _serve_workers(ns: argparse.Namespace) -> int:
    children: list[int] = []
    for _ in range(ns.processes):
        pid = os.fork()
        if pid == 0:  # a worker: its own gRPC server, store connections and signal handlers
            code = 1
            try:
                code = serve_one(ns, reuse_port=True)
            finally:
                os._exit(code)
        children.append(pid)

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
        worst = max(worst, os.waitstatus_to_exitcode(status) & 0xFF)
    return worst


def serve_one(ns: argparse.Namespace, *, reuse_port: bool) -> int:
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
    verifier = Verifier(store, trust, allowlist, golden, keyring, settings)
    try:
        server, port = build_server(verifier, ns.listen, workers=ns.workers, reuse_port=reuse_port)
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
    _start_audit(ns, store, stop)
    server.start()
    golden.watch(stop)
    if ns.port_file:
        ns.port_file.write_text(f"{port}\n")
    log.info("verifier %s serving on port %d (db %s)", __version__, port, ns.db)
    sdnotify.ready(f"serving on port {port}")
    next_purge = time.monotonic() + PURGE_INTERVAL
    while not stop.wait(1.0):
        sdnotify.watchdog()
        if reload_requested.is_set():
            reload_requested.clear()
            log.info("SIGHUP: reloading golden measurements from %s", ns.golden)
            sdnotify.reloading()
            golden.reload()
            sdnotify.ready()
        if time.monotonic() >= next_purge:
            next_purge = time.monotonic() + PURGE_INTERVAL
            store.purge_expired(time.time())
            keyring.reload(time.time())  # another replica may have rotated the key
    log.info("shutting down")
    sdnotify.stopping()
    server.stop(grace=5).wait()
    store.close()
    return 0


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
