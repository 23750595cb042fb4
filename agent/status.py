"""The agent's own state for node monitoring: a JSON status file and a textfile metric.

``attest-agent run --status-file PATH`` keeps a JSON document at PATH; ``--metrics-textfile
PATH.prom`` keeps the same facts in the Prometheus text format for node-exporter's textfile
collector (``--collector.textfile.directory``). Both are rewritten after every attempt:

    last verdict     device id, status, verdict id, when issued, when it expires
    next attempt     when the agent will attest next (after a verdict or a back-off)
    last error       when, the gRPC status code name (or the exception class), the message
    failures         attempts failed since the last verdict

Invariants: a file is replaced atomically (a temporary file in the same directory, fsync,
rename), so a collector never reads half of one; the textfile has no label carrying free
text (the error message is only in the JSON file; the metric labels are the status name and
the error code, from fixed sets); a write that fails is logged and never stops the agent.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from fleetattest.v1 import fleetattest_pb2 as pb

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
STATUSES = ("affirming", "warning", "contraindicated", "unspecified")
PREFIX = "attest_agent_"


@dataclass(frozen=True)
class LastVerdict:
    device_id: str
    verdict_id: str
    status: str  # one of STATUSES
    issued_at: float
    expires_at: float


@dataclass(frozen=True)
class LastError:
    at: float
    code: str  # gRPC status code name, or the exception class name
    message: str


@dataclass(frozen=True)
class AgentStatus:
    updated_at: float = 0.0
    last_verdict: LastVerdict | None = None
    next_attestation_at: float | None = None
    last_error: LastError | None = None
    consecutive_failures: int = 0


def _seconds(ts: object) -> float:
    return float(getattr(ts, "seconds", 0)) + float(getattr(ts, "nanos", 0)) / 1e9


def status_name(status: int) -> str:
    try:
        name = pb.Status.Name(status).removeprefix("STATUS_").lower()
    except ValueError:
        return "unspecified"
    return name if name in STATUSES else "unspecified"


def textfile(status: AgentStatus) -> str:
    """The Prometheus text exposition of ``status`` (node-exporter's textfile collector)."""
    lines: list[str] = []

    def gauge(name: str, text: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP {PREFIX}{name} {text}")
        lines.append(f"# TYPE {PREFIX}{name} gauge")
        lines.extend(f"{PREFIX}{name}{labels} {value:.17g}" for labels, value in samples)

    gauge(
        "status_updated_timestamp_seconds", "When this file was written.", [("", status.updated_at)]
    )
    verdict = status.last_verdict
    if verdict is not None:
        gauge(
            "last_verdict_timestamp_seconds",
            "When the last verdict was issued.",
            [("", verdict.issued_at)],
        )
        gauge(
            "last_verdict_expires_timestamp_seconds",
            "When the last verdict expires.",
            [("", verdict.expires_at)],
        )
        gauge(
            "last_verdict_status",
            "1 for the status of the last verdict, 0 for the others.",
            [(f'{{status="{s}"}}', 1.0 if s == verdict.status else 0.0) for s in STATUSES],
        )
    if status.next_attestation_at is not None:
        gauge(
            "next_attestation_timestamp_seconds",
            "When the agent attests next.",
            [("", status.next_attestation_at)],
        )
    if status.last_error is not None:
        code = status.last_error.code if _is_code(status.last_error.code) else "other"
        gauge(
            "last_error_timestamp_seconds",
            "When the last attempt failed, by error code.",
            [(f'{{code="{code}"}}', status.last_error.at)],
        )
    gauge(
        "consecutive_failures",
        "Attempts failed since the last verdict.",
        [("", float(status.consecutive_failures))],
    )
    return "\n".join(lines) + "\n"


def _is_code(code: str) -> bool:
    return 0 < len(code) <= 64 and code.replace("_", "").isalnum() and code.isascii()


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # node-exporter runs as another user; nothing here is secret
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class StatusReporter:
    """Keeps ``AgentStatus`` and writes it to the files it was given (none: only keeps it)."""

    def __init__(self, status_file: Path | None = None, textfile_path: Path | None = None):
        self.status_file = status_file
        self.textfile_path = textfile_path
        self.status = AgentStatus()

    def verdict(self, verdict: pb.Verdict, next_at: float, now: float) -> None:
        last = LastVerdict(
            device_id=verdict.device_id,
            verdict_id=verdict.verdict_id,
            status=status_name(verdict.status),
            issued_at=_seconds(verdict.issued_at),
            expires_at=_seconds(verdict.expires_at),
        )
        self._update(
            replace(
                self.status,
                updated_at=now,
                last_verdict=last,
                next_attestation_at=next_at,
                consecutive_failures=0,
            )
        )

    def error(self, code: str, message: str, next_at: float | None, now: float) -> None:
        self._update(
            replace(
                self.status,
                updated_at=now,
                last_error=LastError(now, code, message),
                next_attestation_at=next_at,
                consecutive_failures=self.status.consecutive_failures + 1,
            )
        )

    def _update(self, status: AgentStatus) -> None:
        self.status = status
        try:
            if self.status_file is not None:
                document = {"format": FORMAT_VERSION, **asdict(status)}
                _atomic_write(self.status_file, json.dumps(document, indent=2) + "\n")
            if self.textfile_path is not None:
                _atomic_write(self.textfile_path, textfile(status))
        except OSError as exc:
            log.warning("cannot write the agent status: %s", exc)
