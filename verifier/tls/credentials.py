"""gRPC credentials from certificate files: server side reloading, client side pinned.

Server side. gRPC Python offers two client-certificate modes only (grpcio 1.85,
``grpc/_cython/_cygrpc/credentials.pyx.pxi``): ``require_client_auth=True`` maps to
REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY and ``False`` to
DONT_REQUEST_CLIENT_CERTIFICATE; "request but optional" is not exposed. Agents have no client
certificate, relying parties and operators must present one, so the verifier listens twice with
one set of files (``ServerTls``):

- the agent listener (``agent_credentials``): TLS, server certificate only; every caller is
  anonymous there (role ``agent``);
- the caller listener (``caller_credentials``): mutual TLS, the client certificate is required
  and verified against ``--client-ca`` by the TLS layer before any RPC runs.

Both serve every service: the authorization interceptor (``verifier.service.authz``) decides
per method from the caller's identity, so an anonymous caller reaching Operator methods on the
agent listener gets UNAUTHENTICATED.

Reloading: both credentials are ``grpc.dynamic_ssl_server_credentials``. gRPC calls the
fetcher before every new TLS handshake; the fetcher re-reads the files when ``reload()`` was
called (SIGHUP) or, at most every ``check_interval`` seconds, when a file's (inode, size,
mtime) changed. A new configuration applies to new connections only: established connections
keep theirs, nothing is dropped. A configuration that does not load (a key that does not match
its certificate mid-rotation, an unreadable file) is logged and the last good one stays.

TLS versions: gRPC core's SSL credentials default to TLS 1.2 minimum and TLS 1.3 maximum
(``grpc_ssl_server_credentials_options`` defaults, not settable from Python); TLS 1.3 is
negotiated whenever the peer has it (tests/test_tls_wire.py checks that a TLS 1.1 client is
refused and a TLS 1.2 one accepted; gRPC's own clients negotiate TLS 1.3, as the auth context's
``ssl_tls_version`` shows).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from verifier.errors import AttestationError
from verifier.tls.identity import trust_domain_of

log = logging.getLogger(__name__)

CHECK_INTERVAL = 1.0  # seconds between stat() of the certificate files (on new connections)


class TlsConfigError(AttestationError):
    """Certificate, key or CA files that cannot serve: unreadable, mismatched, expired."""


@dataclass(frozen=True)
class TlsFiles:
    cert: Path  # PEM chain, leaf first
    key: Path  # PEM private key of the leaf
    client_ca: Path  # PEM bundle trusted for client certificates


@dataclass(frozen=True)
class LoadedTls:
    cert_chain: bytes
    key: bytes
    client_ca: bytes
    trust_domain: str
    not_after: dt.datetime


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TlsConfigError(f"cannot read {path}: {exc.strerror}") from exc


def load_tls_files(files: TlsFiles, now: dt.datetime) -> LoadedTls:
    """Read and check the files: the key is the leaf's, the leaf is valid at ``now``, the
    client CA parses and names a trust domain."""
    chain, key_pem, ca = _read(files.cert), _read(files.key), _read(files.client_ca)
    try:
        leaf = x509.load_pem_x509_certificates(chain)[0]
        key = serialization.load_pem_private_key(key_pem, password=None)
        x509.load_pem_x509_certificates(ca)
    except (ValueError, TypeError, IndexError) as exc:
        raise TlsConfigError(f"{files.cert}, {files.key} or {files.client_ca}: {exc}") from exc
    if key.public_key() != leaf.public_key():
        raise TlsConfigError(f"{files.key} is not the private key of {files.cert}")
    if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
        raise TlsConfigError(
            f"{files.cert} is not valid now (valid {leaf.not_valid_before_utc} to "
            f"{leaf.not_valid_after_utc})"
        )
    return LoadedTls(chain, key_pem, ca, trust_domain_of(ca), leaf.not_valid_after_utc)


def _signature(files: TlsFiles) -> tuple[tuple[int, int, int], ...]:
    out = []
    for path in (files.cert, files.key, files.client_ca):
        try:
            st = os.stat(path)
        except OSError:
            out.append((0, 0, 0))
            continue
        out.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


class ServerTls:
    """The verifier's TLS files, reloaded on request and when they change.

    Thread-safe: ``reload()`` may be called from the main thread (SIGHUP) while gRPC's threads
    call the fetchers. ``generation`` counts successful loads.
    """

    def __init__(
        self,
        files: TlsFiles,
        *,
        check_interval: float = CHECK_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.files = files
        self._interval = check_interval
        self._clock = clock
        self._now = wall_clock
        self._lock = threading.Lock()
        self._current = load_tls_files(files, wall_clock())  # start-up: raise, never serve bad
        self._signature = _signature(files)
        self._failed_signature: tuple[tuple[int, int, int], ...] | None = None
        self._next_check = clock() + check_interval
        self._reload_requested = False
        self.generation = 1

    @property
    def trust_domain(self) -> str:
        return self._current.trust_domain

    def reload(self) -> None:
        """Re-read the files before the next handshake (the SIGHUP hook); never raises."""
        with self._lock:
            self._reload_requested = True

    def agent_credentials(self) -> grpc.ServerCredentials:
        """TLS with the server certificate only: the agent listener."""
        return self._credentials(require_client_cert=False)

    def caller_credentials(self) -> grpc.ServerCredentials:
        """Mutual TLS, client certificate required and verified: the caller listener."""
        return self._credentials(require_client_cert=True)

    def _credentials(self, *, require_client_cert: bool) -> grpc.ServerCredentials:
        seen = [self.generation]

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            try:
                current, generation = self._maybe_reload()
                if generation == seen[0]:
                    return None
                seen[0] = generation
                return self._config(current, require_client_cert)
            except Exception:  # an exception must never reach gRPC's handshake thread
                log.exception("TLS certificate fetcher failed; keeping the current certificate")
                return None

        return grpc.dynamic_ssl_server_credentials(
            self._config(self._current, require_client_cert),
            fetch,  # type: ignore[arg-type]  # None means "no change" (grpc's docstring)
            require_client_authentication=require_client_cert,
        )

    @staticmethod
    def _config(loaded: LoadedTls, with_ca: bool) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration(
            [(loaded.key, loaded.cert_chain)], loaded.client_ca if with_ca else None
        )

    def _maybe_reload(self) -> tuple[LoadedTls, int]:
        with self._lock:
            due = self._clock() >= self._next_check
            if not (self._reload_requested or due):
                return self._current, self.generation
            forced, self._reload_requested = self._reload_requested, False
            self._next_check = self._clock() + self._interval
            signature = _signature(self.files)
            if not forced and signature in (self._signature, self._failed_signature):
                return self._current, self.generation
            try:
                loaded = load_tls_files(self.files, self._now())
            except TlsConfigError as exc:
                self._failed_signature = signature
                log.error("TLS files not reloaded, keeping the current ones: %s", exc)
                return self._current, self.generation
            self._signature, self._failed_signature = signature, None
            if loaded == self._current:
                return self._current, self.generation
            self._current = loaded
            self.generation += 1
            log.info(
                "TLS certificate reloaded from %s (valid until %s)",
                self.files.cert,
                loaded.not_after,
            )
            return self._current, self.generation


# ------------------------------------------------------------------ clients


def agent_channel_credentials(ca: Path) -> grpc.ChannelCredentials:
    """An agent's credentials: the verifier must chain to ``ca`` (pinned, not the system
    store); no client certificate (the TPM authenticates the device)."""
    return grpc.ssl_channel_credentials(root_certificates=_read(ca))


def caller_channel_credentials(ca: Path, cert: Path, key: Path) -> grpc.ChannelCredentials:
    """A relying party's or an operator's credentials: pinned CA and a client certificate."""
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca), private_key=_read(key), certificate_chain=_read(cert)
    )


def open_channel(
    address: str,
    *,
    ca: Path | None,
    cert: Path | None = None,
    key: Path | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.Channel:
    """The one way clients (agent, operator CLI, relying-party code) reach the verifier.

    ``unix:PATH``: the operator socket. Otherwise TLS pinned to ``ca``, with the client
    certificate when ``cert`` and ``key`` are given (both or neither). Without ``ca`` it
    refuses: nothing fetched in the clear (a JWKS above all) may be trusted.
    """
    if address.startswith("unix:"):
        return grpc.secure_channel(
            address, grpc.local_channel_credentials(grpc.LocalConnectionType.UDS), options
        )
    if (cert is None) != (key is None):
        raise TlsConfigError("--cert and --key go together")
    if ca is None:
        raise TlsConfigError(
            f"refusing to talk to {address} in plaintext: give --ca (the verifier's CA bundle)"
        )
    if cert is not None and key is not None:
        creds = caller_channel_credentials(ca, cert, key)
    else:
        creds = agent_channel_credentials(ca)
    return grpc.secure_channel(address, creds, options)


def explain_connect_error(address: str, details: str) -> str:
    """One line for a failed connection, from ``grpc.RpcError.details()`` of UNAVAILABLE."""
    if "CERTIFICATE_VERIFY_FAILED" in details or "certificate verify failed" in details:
        return (
            f"cannot authenticate the verifier at {address}: its certificate does not chain to "
            "the pinned CA (--ca)"
        )
    if "handshake" in details.lower():
        return (
            f"TLS handshake with {address} failed: a plaintext verifier, or one that refuses "
            "this client certificate"
        )
    return f"cannot reach the verifier at {address}"


def operator_socket_channel(path: Path) -> grpc.Channel:
    """A channel to the operator socket (``unix:PATH``, local credentials)."""
    return grpc.secure_channel(
        f"unix:{path}", grpc.local_channel_credentials(grpc.LocalConnectionType.UDS)
    )


# ------------------------------------------------------------------ listeners


@dataclass(frozen=True)
class ListenCheck:
    ok: bool
    error: str | None = None
    warning: str | None = None


def _host_of(address: str) -> str:
    if address.startswith("unix:") or address.startswith("unix-abstract:"):
        return "unix"
    host = address.removeprefix("dns:").removeprefix("ipv4:").removeprefix("ipv6:")
    host = host.rpartition(":")[0] if ":" in host else host
    return host.strip("[]").lower()


def is_loopback(address: str) -> bool:
    """Whether ``address`` (gRPC's ``host:port`` or ``unix:path``) reaches this host only."""
    host = _host_of(address)
    if host in ("unix", "localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name, "", "0.0.0.0", "::": another host may reach it


def check_listen(address: str, *, tls: bool, insecure: bool) -> ListenCheck:
    """Refuse plaintext on a non-loopback address unless ``--insecure`` was given explicitly."""
    if tls and insecure:
        return ListenCheck(False, error="--insecure and TLS files are mutually exclusive")
    if tls:
        return ListenCheck(True)
    if is_loopback(address):
        return ListenCheck(
            True,
            warning=f"serving {address} without TLS (loopback only): callers are anonymous, "
            "so only the Agent service and GetJwks answer",
        )
    if not insecure:
        return ListenCheck(
            False,
            error=f"refusing to serve {address} without TLS: give --tls-cert, --tls-key and "
            "--client-ca, or --insecure to accept plaintext on the network",
        )
    return ListenCheck(
        True,
        warning=f"INSECURE: serving {address} in plaintext (--insecure): anyone on the network "
        "can read and alter the traffic, and callers cannot be authenticated",
    )


def add_operator_socket(server: grpc.Server, path: Path) -> None:
    """Listen on the Unix socket ``path`` with local credentials, mode 0600.

    Callers on it are operators (``verifier.service.authz``): the file's mode, owner and its
    directory decide who may connect. A stale socket file is replaced; any other file at
    ``path`` is refused.
    """
    if path.is_symlink() or (path.exists() and not path.is_socket()):
        raise TlsConfigError(f"{path} exists and is not a socket: refusing to replace it")
    path.unlink(missing_ok=True)
    old = os.umask(0o177)  # the socket is born 0600: no window where others may connect
    try:
        port = server.add_secure_port(
            f"unix:{path}", grpc.local_server_credentials(grpc.LocalConnectionType.UDS)
        )
    finally:
        os.umask(old)
    if port == 0 or not path.is_socket():
        raise TlsConfigError(f"cannot listen on unix:{path}")
    os.chmod(path, 0o600)
