"""``attest-agent``: the on-device agent.

    attest-agent enroll --verifier HOST:PORT --ca FILE --tcti TCTI --state-dir DIR
    attest-agent attest --verifier HOST:PORT --ca FILE --tcti TCTI --state-dir DIR
    attest-agent run    --verifier HOST:PORT --ca FILE --tcti TCTI --state-dir DIR

``--ca FILE`` pins the verifier's CA bundle (``ca.pem`` from ``attest-verifier certs init``):
the agent talks TLS and refuses, with one line and exit 2, a verifier it cannot authenticate.
``--insecure`` instead talks plaintext (a lab verifier started with ``serve --insecure``); one
of the two is required.

``run`` enrolls if needed, attests, then re-attests at about two thirds of each verdict's
lifetime (with jitter), backing off with jitter while the verifier is unreachable or busy,
until SIGTERM. It keeps one channel for all its attestations (gRPC reconnects it when the
verifier restarts or the idle connection was closed). A TPM that is absent, unreachable, in
dictionary-attack lockout, busy or in failure mode (``agent.tpm.tpm_condition``) does not end
``run`` either: it is logged, written to ``status.json`` in the state directory
(``agent.state.TpmStatus``) and retried with the same backoff. Only errors that need an
operator (a corrupt state file, an AK that no longer loads after a TPM clear) exit 2.
``attest`` exits 0 only for an affirming verdict. ``run --status-file PATH`` and
``--metrics-textfile PATH.prom`` keep the agent's state for node monitoring (``agent.status``):
last verdict, next attestation, last error.

``--ima-log PATH`` sends the Linux IMA measurement list (default: the kernel's
``/sys/kernel/security/ima/binary_runtime_measurements`` when it exists, none otherwise;
``--no-ima-log`` sends none). Within one boot only the entries appended since the last
accepted attestation are sent (the cursor lives in the state directory, ``ima.json``).
"""

from __future__ import annotations

import argparse
import base64
import functools
import logging
import random
import re
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import grpc

from agent import __version__
from agent.backoff import Backoff, Stopped, is_transient
from agent.flows import (
    DEFAULT_EVENT_LOG,
    AgentConfig,
    ChannelConfigError,
    VerifierNotAuthenticated,
    attest_once,
    config_channel,
    enroll,
)
from agent.ima import DEFAULT_IMA_LOG, ImaListError
from agent.state import AgentState, StateError, TpmStatus
from agent.status import StatusReporter
from agent.tpm import TpmError, tpm_condition
from fleetattest.v1 import fleetattest_pb2 as pb

log = logging.getLogger("attest-agent")


def main(argv: Sequence[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, ns.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    config = AgentConfig(
        verifier=ns.verifier,
        tcti=ns.tcti,
        state_dir=ns.state_dir,
        ak_alg=ns.ak_alg,
        ek_alg=ns.ek_alg,
        event_log=None if ns.no_event_log else ns.event_log,
        labels=dict(_label(item) for item in ns.label),
        new_ak=getattr(ns, "new_ak", False),
        ca=ns.ca,
        insecure=ns.insecure,
        ek_intermediates=read_certificates(ns.ek_intermediates),
        ima_log=_ima_log(ns.ima_log, ns.no_ima_log),
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    func = ns.func
    if ns.command == "run":
        func = functools.partial(
            cmd_run, reporter=StatusReporter(ns.status_file, ns.metrics_textfile)
        )
    try:
        return int(func(config, stop))
    except Stopped:
        return 0
    except grpc.RpcError as exc:
        print(f"attest-agent: verifier said {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 2
    except (
        TpmError,
        StateError,
        ChannelConfigError,
        VerifierNotAuthenticated,
        ImaListError,
    ) as exc:
        print(f"attest-agent: {exc}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attest-agent", description="fleet-attest on-device agent: enroll and attest this TPM"
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, func, text in (
        ("enroll", cmd_enroll, "enroll this TPM with the verifier (once)"),
        ("attest", cmd_attest, "attest once and print the verdict"),
        ("run", cmd_run, "enroll if needed, then attest on schedule until SIGTERM"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--verifier", required=True, help="HOST:PORT of the verifier")
        wire = p.add_mutually_exclusive_group(required=True)
        wire.add_argument(
            "--ca", type=Path, help="the verifier's CA bundle (PEM) to pin: TLS, authenticated"
        )
        wire.add_argument(
            "--insecure",
            action="store_true",
            help="plaintext to the verifier (a lab verifier run with serve --insecure)",
        )
        p.add_argument("--tcti", default="device:/dev/tpmrm0", help="TCTI (default %(default)s)")
        p.add_argument("--state-dir", type=Path, required=True, help="agent state directory")
        p.add_argument("--ak-alg", choices=["ecc", "rsa"], default="ecc")
        p.add_argument("--ek-alg", choices=["auto", "rsa", "ecc"], default="auto")
        p.add_argument("--event-log", type=Path, default=DEFAULT_EVENT_LOG)
        p.add_argument("--no-event-log", action="store_true", help="send no event log")
        p.add_argument("--label", action="append", default=[], help="KEY=VALUE (repeatable)")
        p.add_argument(
            "--ek-intermediates",
            type=Path,
            nargs="+",
            default=[],
            metavar="FILE",
            help="CA certificates (PEM or DER) between the EK certificate and the vendor root, "
            "sent at enrollment for a verifier whose trust directory lacks them",
        )
        p.add_argument(
            "--ima-log",
            type=Path,
            help=f"IMA measurement list to send (default {DEFAULT_IMA_LOG} when it exists)",
        )
        p.add_argument("--no-ima-log", action="store_true", help="send no IMA log")
        if name == "enroll":
            p.add_argument(
                "--new-ak",
                action="store_true",
                help="forget the saved AK and enroll a new one (after a TPM clear); "
                "an operator must approve it",
            )
        if name == "run":
            p.add_argument("--status-file", type=Path, help="keep the agent's state here (JSON)")
            p.add_argument(
                "--metrics-textfile",
                type=Path,
                help="keep the agent's state here for node-exporter's textfile collector (.prom)",
            )
        p.set_defaults(func=func)
    return parser


_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", re.DOTALL)


def read_certificates(paths: Sequence[Path]) -> tuple[bytes, ...]:
    """Every certificate of the files, as DER (a PEM file may hold several)."""
    found: list[bytes] = []
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise SystemExit(f"attest-agent: {path}: {exc.strerror or exc}") from exc
        blocks = _PEM_CERT.findall(data)
        if not blocks and b"-----BEGIN" in data:
            raise SystemExit(f"attest-agent: {path}: PEM without a CERTIFICATE block")
        try:
            found += [base64.b64decode(b"".join(b.split()), validate=True) for b in blocks]
        except ValueError as exc:
            raise SystemExit(f"attest-agent: {path}: bad PEM ({exc})") from exc
        if not blocks:
            found.append(data)
    return tuple(found)


def _ima_log(given: Path | None, off: bool) -> Path | None:
    if off:
        return None
    if given is not None:
        return given
    return DEFAULT_IMA_LOG if DEFAULT_IMA_LOG.exists() else None


def _label(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise SystemExit(f"attest-agent: --label wants KEY=VALUE, got {item!r}")
    return key, value


def cmd_enroll(config: AgentConfig, stop: threading.Event) -> int:
    device_id = enroll(config, stop)
    print(device_id)
    return 0


def cmd_attest(config: AgentConfig, stop: threading.Event) -> int:
    device_id = enroll(config, stop)
    verdict = attest_once(config, device_id, stop)
    print(format_verdict(verdict))
    return 0 if verdict.status == pb.STATUS_AFFIRMING else 1


def cmd_run(
    config: AgentConfig, stop: threading.Event, reporter: StatusReporter | None = None
) -> int:
    reporter = reporter or StatusReporter()
    rng = random.Random()
    backoff = Backoff()
    with config_channel(config) as ch:  # one channel for every attestation
        return _run_loop(config, stop, ch, rng, backoff, reporter)


def _run_loop(
    config: AgentConfig,
    stop: threading.Event,
    ch: grpc.Channel,
    rng: random.Random,
    backoff: Backoff,
    reporter: StatusReporter,
) -> int:
    health = TpmHealth(AgentState(config.state_dir))
    device_id: str | None = None
    attempt = 0
    while not stop.is_set():
        try:
            if device_id is None:
                device_id = enroll(config, stop)  # loads (or creates) the AK: the TPM works
                health.report("ok")
            verdict = attest_once(config, device_id, stop, ch)
        except TpmError as exc:
            condition = tpm_condition(exc)
            if condition is None:
                raise
            wait = backoff.delay(attempt, rng)
            attempt += 1
            health.report(condition, str(exc))
            log.warning("the TPM is %s (%s); retry in %.1fs", condition, exc, wait)
            stop.wait(wait)
            continue
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND and device_id is not None:
                log.warning("the verifier does not know %s; enrolling again", device_id)
                device_id = enroll(config, stop, force=True)
                continue
            if not is_transient(exc) and exc.code() != grpc.StatusCode.FAILED_PRECONDITION:
                reporter.error(exc.code().name, str(exc.details()), None, time.time())
                raise
            wait = backoff.delay(attempt, rng)
            attempt += 1
            now = time.time()
            reporter.error(exc.code().name, str(exc.details()), now + wait, now)
            log.warning(
                "attestation failed (%s: %s); retry in %.1fs", exc.code().name, exc.details(), wait
            )
            stop.wait(wait)
            continue
        attempt = 0
        health.report("ok")
        log.info("verdict: %s", format_verdict(verdict).splitlines()[0])
        now = time.time()
        wait = next_attestation_in(verdict, now, rng)
        reporter.verdict(verdict, now + wait, now)
        stop.wait(wait)
    return 0


class TpmHealth:
    """The TPM's condition as ``run`` last saw it, saved to ``status.json`` when it changes."""

    def __init__(self, state: AgentState) -> None:
        self.state = state
        self.current: TpmStatus | None = None

    def report(self, condition: str, detail: str = "") -> None:
        if self.current is not None and self.current.condition == condition:
            return
        status = TpmStatus(condition, detail, time.time())
        if condition == "ok" and self.current is not None:
            log.info("the TPM is usable again (it was %s)", self.current.condition)
        self.current = status
        try:
            self.state.save_tpm_status(status)
        except OSError as exc:  # a full disk must not stop attestation
            log.warning("cannot write the TPM status: %s", exc)


def next_attestation_in(verdict: pb.Verdict, now: float, rng: random.Random) -> float:
    """About two thirds of the verdict's remaining lifetime, jittered by +-10%."""
    expires = verdict.expires_at.seconds + verdict.expires_at.nanos / 1e9
    remaining = max(0.0, expires - now)
    return max(1.0, remaining * 2 / 3 * rng.uniform(0.9, 1.1))


def format_verdict(verdict: pb.Verdict) -> str:
    status = pb.Status.Name(verdict.status).removeprefix("STATUS_").lower()
    lines = [
        f"{verdict.device_id}: {status} (profile {verdict.profile}, "
        f"release {verdict.release or '-'})"
    ]
    for reason in verdict.reasons:
        where = f" pcr {reason.pcr}" if reason.HasField("pcr") else ""
        lines.append(f"  - {reason.code}{where}: {reason.text}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
