"""``attest-verifier serve``: the verifier process (or processes) and its lifecycle.

Start-up refuses, with a clear message and exit 2, an unreadable trust directory or allowlist
and an invalid golden set: the verifier never runs without a valid policy. While serving:
SIGHUP (or a file change) reloads the golden set, keeping the last valid one when the edit is
broken; expired nonces and challenges are purged and the signing key ring re-read every
``PURGE_INTERVAL`` seconds; SIGTERM or SIGINT stops the server gracefully.

``--processes N`` forks N servers before any gRPC state exists, each binding the same port
with SO_REUSEPORT (the kernel spreads connections): the way past the GIL, one per core. They
share the store, so a nonce issued by one is consumed exactly once by any. The parent is a
supervisor (``verifier.supervisor``): a worker that dies is replaced after a backoff (logged),
and the verifier exits 1 when workers keep dying. Before forking, the port must be free: a
leftover verifier holding it with SO_REUSEPORT would otherwise silently share the traffic.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
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
from verifier.service.server import build_server
from verifier.store import open_store
from verifier.store.headroom import parse_size
from verifier.store.maintenance import StoreMaintenance
from verifier.supervisor import check_port_exclusive, supervise
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
    if ns.processes == 1:
        return serve_one(ns, reuse_port=False)
    if ns.listen.rpartition(":")[2] in ("", "0"):
        print("attest-verifier: --processes needs a fixed port in --listen", file=sys.stderr)
        return 2
    # SO_REUSEPORT would let a leftover verifier share the port: only our own workers may.
    held = check_port_exclusive(ns.listen)
    if held is not None:
        print(f"attest-verifier: {held}", file=sys.stderr)
        return 2
    return supervise(lambda: serve_one(ns, reuse_port=True), ns.processes)


def serve_one(ns: argparse.Namespace, *, reuse_port: bool) -> int:
    try:
        trust, allowlist = open_trust(ns.ek_ca, ns.allowlist)
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
    server.start()
    golden.watch(stop)
    if ns.port_file:
        ns.port_file.write_text(f"{port}\n")
    log.info("verifier %s serving on port %d (db %s)", __version__, port, ns.db)
    sdnotify.ready(f"serving on port {port}")
    next_purge = time.monotonic() + PURGE_INTERVAL
    maintenance = StoreMaintenance(store, purge_interval=PURGE_INTERVAL)
    while not stop.wait(1.0):
        sdnotify.watchdog()
        maintenance.tick(time.monotonic(), time.time())  # purge, checkpoints; never raises
        if reload_requested.is_set():
            reload_requested.clear()
            log.info("SIGHUP: reloading golden measurements from %s", ns.golden)
            sdnotify.reloading()
            golden.reload()
            sdnotify.ready()
        if time.monotonic() >= next_purge:
            next_purge = time.monotonic() + PURGE_INTERVAL
            keyring.reload(time.time())  # another replica may have rotated the key
    log.info("shutting down")
    sdnotify.stopping()
    server.stop(grace=5).wait()
    store.close()
    return 0


def _keys_dir(ns: argparse.Namespace) -> Path:
    """--keys, or beside a SQLite database; a PostgreSQL verifier must say where."""
    if ns.keys is not None:
        return Path(ns.keys)
    if "://" in ns.db:
        raise errors.PolicyViolation("--keys DIR is required with a PostgreSQL --db")
    db = Path(ns.db)
    return db.with_name(db.name + ".keys")
