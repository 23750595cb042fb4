"""The /metrics listener and the multiprocess set-up for ``--processes N``.

Transport rule (the same as the gRPC listener's): the listener binds loopback by default; a
non-loopback address needs a certificate and key (TLS 1.2 at least) unless the caller passes
``allow_plaintext=True`` (an explicit operator choice, e.g. a scrape over a private link).

``--processes N`` uses prometheus_client's multiprocess mode, because the workers share one
port with SO_REUSEPORT and a scrape would otherwise reach one worker at random:

1. the parent, before forking and before any ``VerifierMetrics`` exists, calls
   ``enable_multiprocess(dir)`` (a private directory, emptied of a previous run's files);
2. each worker builds its own ``VerifierMetrics()`` and records as usual (values go to
   per-process mmap files in ``dir``; the worker serves no listener);
3. after forking, the parent serves ``multiprocess_registry(dir)`` with
   ``start_metrics_server``, which sums the workers' files on every scrape, and calls
   ``mark_worker_dead(pid, dir)`` when it reaps a worker.

With one process the worker serves its own ``VerifierMetrics().registry`` directly.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server, values
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

DEFAULT_LISTEN = "127.0.0.1:9464"


class MetricsListenRefused(ValueError):
    """The --metrics-listen address or TLS settings are not acceptable."""


@dataclass(frozen=True)
class MetricsServer:
    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port``; raises ``MetricsListenRefused``."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise MetricsListenRefused(f"--metrics-listen {listen!r}: expected HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    number = int(port)
    if number > 65535:
        raise MetricsListenRefused(f"--metrics-listen {listen!r}: port out of range")
    return host, number


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve anywhere


def check_listen(
    listen: str,
    certfile: Path | None = None,
    keyfile: Path | None = None,
    *,
    allow_plaintext: bool = False,
) -> tuple[str, int]:
    """The host and port to bind, or ``MetricsListenRefused`` (call before forking workers)."""
    host, port = parse_listen(listen)
    if (certfile is None) != (keyfile is None):
        raise MetricsListenRefused("metrics TLS needs both a certificate and a key")
    if certfile is None and not is_loopback(host) and not allow_plaintext:
        raise MetricsListenRefused(
            f"--metrics-listen {listen}: not a loopback address; give a TLS certificate and"
            " key, or allow plaintext explicitly"
        )
    return host, port


def start_metrics_server(
    listen: str,
    registry: CollectorRegistry,
    certfile: Path | None = None,
    keyfile: Path | None = None,
    *,
    allow_plaintext: bool = False,
) -> MetricsServer:
    """Serve ``registry`` on ``listen`` (/metrics; any path answers) in a daemon thread."""
    host, port = check_listen(listen, certfile, keyfile, allow_plaintext=allow_plaintext)
    if host == "localhost":
        host = "127.0.0.1"
    server, thread = start_http_server(
        port,
        addr=host,
        registry=registry,
        certfile=str(certfile) if certfile else None,
        keyfile=str(keyfile) if keyfile else None,
        tls_min_version=ssl.TLSVersion.TLSv1_2,
    )
    return MetricsServer(server, thread)


def enable_multiprocess(directory: Path) -> None:
    """Switch this process (and the workers it forks) to multiprocess metrics in ``directory``.

    Call in the parent before forking and before any ``VerifierMetrics`` exists: metrics
    built earlier keep in-process values and are not summed. Removes stale ``*.db`` files
    of a previous run (their counters would otherwise be added to this run's).
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    # prometheus_client picks its value class from the environment at import; this is the
    # same switch made after import (what its own multiprocess tests do).
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]


def multiprocess_registry(directory: Path) -> CollectorRegistry:
    """A registry that reads and sums every process's metric files (serve it in the parent)."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    return registry


def mark_worker_dead(pid: int, directory: Path) -> None:
    """Drop a dead worker's ``live*`` gauges (its counters still count)."""
    mark_process_dead(pid, path=str(directory))  # type: ignore[no-untyped-call]
