"""How the command line reaches a running verifier: the one set of connection flags.

    --verifier HOST:PORT --ca CA.pem --cert NAME.pem --key NAME.key   the caller port (mTLS)
    --verifier unix:PATH                                              the operator socket

The caller port authenticates both sides: the verifier's certificate must chain to ``--ca``
(pinned, not the system store), and the client certificate (``certs init`` or ``certs
issue``) names the caller's role. The operator socket needs no certificate: whoever can open
it is an operator. Plaintext is never used (``open_channel`` refuses it).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import grpc

from verifier.cli.common import UsageError
from verifier.tls.credentials import explain_connect_error, open_channel


def add_connection_flags(parser: argparse.ArgumentParser, role: str) -> None:
    parser.add_argument(
        "--verifier",
        required=True,
        help="HOST:PORT of the verifier's caller port (mutual TLS), or unix:PATH of its "
        "operator socket",
    )
    parser.add_argument("--ca", type=Path, help="the verifier's CA bundle (PEM) to pin")
    parser.add_argument("--cert", type=Path, help=f"{role} client certificate (PEM)")
    parser.add_argument("--key", type=Path, help="its private key (PEM)")


def connect(ns: argparse.Namespace) -> grpc.Channel:
    """The channel the flags describe; ``TlsConfigError`` (exit 2) for a plaintext one, a
    ``UsageError`` for the caller port without a client certificate (it would refuse us)."""
    address = str(ns.verifier)
    if not address.startswith("unix:") and ns.ca is not None and ns.cert is None:
        raise UsageError(
            f"{address}: the caller port needs a client certificate (--cert and --key), or "
            "reach the operator socket with --verifier unix:PATH"
        )
    return open_channel(address, ca=ns.ca, cert=ns.cert, key=ns.key)


def is_authenticated_tls(ns: argparse.Namespace) -> bool:
    """Whether the flags make a TLS channel that authenticates the verifier."""
    return not str(ns.verifier).startswith("unix:") and ns.ca is not None


def error_text(address: str, exc: grpc.RpcError) -> str:
    """One line for a failed call: the TLS explanation for a failed connection."""
    code = exc.code() if isinstance(exc, grpc.Call) else None
    details = str(exc.details()) if isinstance(exc, grpc.Call) else str(exc)
    if code is grpc.StatusCode.UNAVAILABLE:
        return explain_connect_error(address, details)
    return f"{address}: {code.name if code else 'error'}: {details}"
