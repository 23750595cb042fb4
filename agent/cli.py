"""``attest-agent``: the on-device agent.

    attest-agent enroll --verifier HOST:PORT --tcti TCTI --state-dir DIR
    attest-agent attest --verifier HOST:PORT --tcti TCTI --state-dir DIR
    attest-agent run    --verifier HOST:PORT --tcti TCTI --state-dir DIR

``run`` enrolls if needed, attests, then re-attests at about two thirds of each verdict's
lifetime (with jitter), backing off with jitter while the verifier is unreachable or busy,
until SIGTERM. ``attest`` exits 0 only for an affirming verdict.

``--ima-log PATH`` sends the Linux IMA measurement list (default: the kernel's
``/sys/kernel/security/ima/binary_runtime_measurements`` when it exists, none otherwise;
``--no-ima-log`` sends none). Within one boot only the entries appended since the last
accepted attestation are sent (the cursor lives in the state directory, ``ima.json``).
"""

from __future__ import annotations

import argparse
import logging
import random
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
from agent.flows import DEFAULT_EVENT_LOG, AgentConfig, attest_once, enroll
from agent.ima import DEFAULT_IMA_LOG, ImaListError
from agent.state import StateError
from agent.tpm import TpmError
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
        ima_log=_ima_log(ns.ima_log, ns.no_ima_log),
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        return int(ns.func(config, stop))
    except Stopped:
        return 0
    except grpc.RpcError as exc:
        print(f"attest-agent: verifier said {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 2
    except (TpmError, StateError, ImaListError) as exc:
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
        p.add_argument("--tcti", default="device:/dev/tpmrm0", help="TCTI (default %(default)s)")
        p.add_argument("--state-dir", type=Path, required=True, help="agent state directory")
        p.add_argument("--ak-alg", choices=["ecc", "rsa"], default="ecc")
        p.add_argument("--ek-alg", choices=["auto", "rsa", "ecc"], default="auto")
        p.add_argument("--event-log", type=Path, default=DEFAULT_EVENT_LOG)
        p.add_argument("--no-event-log", action="store_true", help="send no event log")
        p.add_argument("--label", action="append", default=[], help="KEY=VALUE (repeatable)")
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
        p.set_defaults(func=func)
    return parser


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


def cmd_run(config: AgentConfig, stop: threading.Event) -> int:
    rng = random.Random()
    backoff = Backoff()
    device_id = enroll(config, stop)
    attempt = 0
    while not stop.is_set():
        try:
            verdict = attest_once(config, device_id, stop)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:  # the verifier lost this device
                log.warning("the verifier does not know %s; enrolling again", device_id)
                device_id = enroll(config, stop, force=True)
                continue
            if not is_transient(exc) and exc.code() != grpc.StatusCode.FAILED_PRECONDITION:
                raise
            wait = backoff.delay(attempt, rng)
            attempt += 1
            log.warning(
                "attestation failed (%s: %s); retry in %.1fs", exc.code().name, exc.details(), wait
            )
            stop.wait(wait)
            continue
        attempt = 0
        log.info("verdict: %s", format_verdict(verdict).splitlines()[0])
        stop.wait(next_attestation_in(verdict, time.time(), rng))
    return 0


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
