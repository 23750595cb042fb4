"""What every command shares: one-line errors, store access, device names, tables, JSON.

Exit codes of every program: 0 success, 1 a check failed (lint problems, an untrusted verdict,
a dry run that changes a device with ``--fail-on-change``), 2 the command could not run (bad
input, a missing database, an unreachable verifier). A user never sees a traceback: ``run``
turns every expected failure into one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import grpc

from verifier import __version__, logjson
from verifier.errors import AttestationError
from verifier.store import Store, open_store
from verifier.token.errors import TokenError

Subparsers = argparse._SubParsersAction  # argparse has no public name for it
Command = Callable[[argparse.Namespace], int]

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMAT = logjson.TEXT_FORMAT
LOG_FORMATS = ("text", "json")


class UsageError(AttestationError):
    """A command line that cannot be acted on (exit 2)."""


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    """``--version``, ``--log-level`` and ``--log-format``: the same on every program."""
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--log-level", default="info", choices=LOG_LEVELS, help="default %(default)s"
    )
    parser.add_argument(
        "--log-format",
        default="text",
        choices=LOG_FORMATS,
        help="text lines, or one JSON object per event (verifier.logjson); default %(default)s",
    )


def configure_logging(level: str, log_format: str = "text") -> None:
    """Text lines by default; ``json``: one object per event, on the root handler alone."""
    if log_format == "json":
        logjson.configure_logging("json", getattr(logging, level.upper()))
        return
    logging.basicConfig(level=getattr(logging, level.upper()), format=LOG_FORMAT)


def run(program: str, command: Command, ns: argparse.Namespace, err: TextIO | None = None) -> int:
    """Run one command; an expected failure is one line on ``err`` and exit code 2."""
    err = err or sys.stderr
    try:
        return int(command(ns))
    except AttestationError as exc:
        print(f"{program}: {type(exc).__name__}: {exc}", file=err)
    except TokenError as exc:
        print(f"{program}: {type(exc).__name__}: {exc}", file=err)
    except grpc.RpcError as exc:
        print(f"{program}: {rpc_error_text(exc)}", file=err)
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"{program}: {where}{exc.strerror or exc}", file=err)
    except KeyboardInterrupt:
        print(f"{program}: interrupted", file=err)
        return 130
    return 2


def rpc_error_text(exc: grpc.RpcError) -> str:
    code = exc.code() if isinstance(exc, grpc.Call) else None
    details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
    if code is grpc.StatusCode.UNAVAILABLE:
        return f"the verifier is unreachable: {details}"
    return f"the verifier answered {code.name if code else 'an error'}: {details}"


@contextmanager
def read_store(db: str | Path) -> Iterator[Store]:
    """The store, opened read-only: it must exist; nothing is created, migrated or written."""
    store = open_store(str(db), read_only=True)
    try:
        yield store
    finally:
        store.close()


@contextmanager
def write_store(db: str | Path) -> Iterator[Store]:
    """The store for a command that changes it: it must exist already (serve creates it)."""
    target = str(db)
    if "://" not in target and not Path(target).is_file():
        raise UsageError(f"{target}: no such database (serve creates it)")
    store = open_store(target)
    try:
        yield store
    finally:
        store.close()


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def print_table(rows: Sequence[Sequence[str]], out: TextIO | None = None) -> None:
    out = out or sys.stdout
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip(), file=out
        )


def print_json(document: object, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    json.dump(document, out, indent=2, sort_keys=True)
    out.write("\n")
