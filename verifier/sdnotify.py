"""A minimal sd_notify(3) client: tell the service manager that the process is ready.

The manager (systemd with ``Type=notify``) passes the path of a datagram socket in
``NOTIFY_SOCKET``. A path starting with ``@`` names a socket in the abstract namespace (the
``@`` stands for a leading NUL byte). Each message is one datagram of newline-separated
``KEY=VALUE`` assignments.

Invariants: with ``NOTIFY_SOCKET`` unset or empty every function does nothing and returns
``False`` (the program runs the same outside systemd). A set but unusable ``NOTIFY_SOCKET`` (a
relative path, a socket that refuses the datagram) raises ``OSError``: a service that cannot
report readiness would be killed by its start timeout, so the failure is loud, not silent.
The environment is read at each call, never cached: a forked worker sees what its parent saw
(with ``NotifyAccess=all`` the manager accepts the workers' messages too).
"""

from __future__ import annotations

import os
import socket
import time

__all__ = ["notify", "ready", "reloading", "status", "stopping", "watchdog"]


def notify(*assignments: str) -> bool:
    """Send ``assignments`` as one datagram; ``False`` when not run by a service manager."""
    for item in assignments:
        if "=" not in item or "\n" in item:
            raise ValueError(f"a notification is one KEY=VALUE line, got {item!r}")
    address = _socket_address()
    if address is None:
        return False
    payload = "\n".join(assignments).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(address)
        sock.send(payload)
    return True


def ready(text: str | None = None) -> bool:
    """The service is up (for the verifier: serving on its port)."""
    return notify("READY=1", *_status(text))


def reloading(text: str | None = None) -> bool:
    """A reload started; call ``ready()`` again when it is done.

    ``MONOTONIC_USEC`` lets a manager that supports ``Type=notify-reload`` match the reload
    to the request; older managers ignore it.
    """
    return notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}", *_status(text))


def stopping(text: str | None = None) -> bool:
    """The service is shutting down."""
    return notify("STOPPING=1", *_status(text))


def status(text: str) -> bool:
    """A one-line status shown by ``systemctl status``."""
    return notify(*_status(text))


def watchdog() -> bool:
    """Keep-alive ping for ``WatchdogSec=``: send it at least twice per interval.

    The manager ignores it when the unit sets no watchdog, so a loop may ping unconditionally.
    """
    return notify("WATCHDOG=1")


def _status(text: str | None) -> tuple[str, ...]:
    return () if text is None else (f"STATUS={' '.join(text.split())}",)


def _socket_address() -> str | bytes | None:
    path = os.environ.get("NOTIFY_SOCKET", "")
    if not path:
        return None
    if path.startswith("@"):
        return b"\0" + path[1:].encode()
    if not path.startswith("/"):
        raise OSError(f"NOTIFY_SOCKET must be an absolute path or start with '@', got {path!r}")
    return path
