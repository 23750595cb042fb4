"""Clock doubt has an operator path (issue 18): ``AcknowledgeClock``.

A verifier whose wall clock stepped vouches for nothing until the step settles; an operator
who has checked the host's time may clear the doubt at once. Only operators may, with a
reason, and the act is in the audit log with the caller. Reproduced over the real services
(TLS listeners with role certificates, the operator socket) and software quotes.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from test_clock_steps import DEVICE, TWO_HOURS, Served, SteppableClock, attest, served_verdict

from fleetattest.v1 import fleetattest_pb2 as pb
from fleetattest.v1 import fleetattest_pb2_grpc as pb_grpc
from simulator.fleet import DEVICE_LABELS
from simulator.softquote import SoftAk
from verifier.app import Verifier, open_trust
from verifier.audit import EntryKind, LogEntry
from verifier.clock import ClockGuard, Reading
from verifier.clockshare import SharedAcknowledgement
from verifier.errors import ClockInDoubt
from verifier.livegolden import LiveGolden
from verifier.records import DeviceRecord
from verifier.service.server import Listen, build_server
from verifier.store import open_store
from verifier.tls import pki
from verifier.tls.credentials import (
    ServerTls,
    TlsFiles,
    agent_channel_credentials,
    caller_channel_credentials,
)
from verifier.token import KeyRing

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Served, grpc.Channel]]:
    """The verifier over TLS: ``Served`` (agent port, operator socket) and a relying party's
    channel to the mutual-TLS caller port."""
    pki_dir = tmp_path / "pki"
    pki.init_pki(pki_dir, verifier_names=["localhost"], now=dt.datetime.now(dt.UTC))
    tls = ServerTls(
        TlsFiles(pki_dir / "verifier.pem", pki_dir / "verifier.key", pki_dir / "ca.pem")
    )
    clock = SteppableClock()
    store = open_store(tmp_path / "verifier.db")
    trust, allowlist = open_trust(None, None)
    verifier = Verifier(
        store,
        trust,
        allowlist,
        LiveGolden.start(ROOT / "golden_measurements", store, clock.wall),
        KeyRing.open(tmp_path / "keys", clock.wall()),
        clock=clock.wall,
        clock_guard=ClockGuard(settle_seconds=3600),
        reading=clock.reading,
    )
    ak = SoftAk.generate()
    store.insert_device(
        DeviceRecord(
            device_id=DEVICE,
            ek_public=b"",
            ek_certificate=b"",
            ek_not_after=None,
            ak_public=ak.tpm2b_public,
            ak_name=ak.name,
            labels=dict(DEVICE_LABELS),
            enrollment_count=1,
            enrolled_at=clock.wall(),
            profile="sim-gateway",
        )
    )
    socket = tmp_path / "op.sock"
    listen = Listen("127.0.0.1:0", tls=tls, caller="127.0.0.1:0", operator_socket=socket)
    server, ports = build_server(verifier, listen, workers=4)
    server.start()
    agent = grpc.secure_channel(
        f"localhost:{ports.agent}", agent_channel_credentials(pki_dir / "ca.pem")
    )
    operator = grpc.insecure_channel(f"unix:{socket}")
    relying_party = grpc.secure_channel(
        f"localhost:{ports.caller}",
        caller_channel_credentials(
            pki_dir / "ca.pem", pki_dir / "relying-party.pem", pki_dir / "relying-party.key"
        ),
    )
    try:
        yield Served(verifier, agent, operator, clock, ak), relying_party
    finally:
        for channel in (agent, operator, relying_party):
            channel.close()
        server.stop(None)
        store.close()


def _acknowledge(channel: grpc.Channel, reason: str) -> pb.AcknowledgeClockResponse:
    request = pb.AcknowledgeClockRequest(reason=reason)
    reply: pb.AcknowledgeClockResponse = pb_grpc.OperatorStub(channel).AcknowledgeClock(
        request, timeout=10
    )
    return reply


def _status(channel: grpc.Channel) -> pb.VerifierStatus:
    status: pb.VerifierStatus = pb_grpc.OperatorStub(channel).GetStatus(
        pb.GetStatusRequest(), timeout=10
    )
    return status


def _metric(verifier: Verifier, name: str) -> float | None:
    return verifier.metrics.registry.get_sample_value(name)


def test_relying_party_cannot_acknowledge_the_clock(
    served: tuple[Served, grpc.Channel],
) -> None:
    one, relying_party = served
    attest(one)
    one.clock.offset = TWO_HOURS
    with pytest.raises(grpc.RpcError) as refused:
        _acknowledge(relying_party, "trust me")
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as anonymous:
        _acknowledge(one.agent, "trust me")
    assert anonymous.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "stepped forward" in _status(one.operator).clock.doubt  # still in doubt
    assert served_verdict(one).token == ""


def test_acknowledged_clock_issues_tokens_again_and_is_audit_logged(
    served: tuple[Served, grpc.Channel],
) -> None:
    one, _ = served
    attest(one)
    assert _status(one.operator).clock.doubt == ""
    one.clock.offset = TWO_HOURS
    status = _status(one.operator)
    assert "stepped forward" in status.clock.doubt
    assert status.clock.doubt_since.seconds > 0
    assert served_verdict(one).token == ""
    assert _metric(one.verifier, "fleetattest_clock_in_doubt") == 1

    reply = _acknowledge(one.operator, "checked chrony: synced, offset 2 ms")
    assert "stepped forward" in reply.cleared
    assert reply.clock.doubt == ""
    assert _status(one.operator).clock.doubt == ""
    assert _metric(one.verifier, "fleetattest_clock_in_doubt") == 0
    assert _metric(one.verifier, "fleetattest_clock_acknowledgements_total") == 1

    again = attest(one)  # a challenge and a verdict on the acknowledged clock
    assert again.status == pb.STATUS_AFFIRMING
    verdict = served_verdict(one)
    assert verdict.freshness == pb.FRESHNESS_FRESH and verdict.token

    store = one.verifier.store
    entries = [LogEntry.from_canonical(e.data) for e in store.iter_audit_entries()]
    [action] = [e for e in entries if e.kind is EntryKind.OPERATOR_ACTION]
    assert action.fields["action"] == "acknowledge clock"
    assert action.fields["caller"] == "operator/operator-socket (unix-socket)"
    assert action.fields["reason"] == "checked chrony: synced, offset 2 ms"
    assert "stepped forward" in str(action.fields["cleared"])
    assert reply.audit_position == entries.index(action)


def test_clock_acknowledgement_without_a_reason_is_refused(
    served: tuple[Served, grpc.Channel],
) -> None:
    one, _ = served
    assert _status(one.operator).clock.doubt == ""  # a first reading: the baseline
    one.clock.offset = TWO_HOURS
    assert _status(one.operator).clock.doubt
    with pytest.raises(grpc.RpcError) as refused:
        _acknowledge(one.operator, "   ")
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "stepped forward" in _status(one.operator).clock.doubt
    entries = [LogEntry.from_canonical(e.data) for e in one.verifier.store.iter_audit_entries()]
    assert not [e for e in entries if e.kind is EntryKind.OPERATOR_ACTION]


def test_a_reading_observed_late_does_not_put_the_clock_in_doubt() -> None:
    """Threads take a reading, then wait for the guard's lock: one that waited longer than the
    tolerance arrives after a newer reading. Compared with the newer wall time it looked like
    a clock behind a time already used (a transient UNAVAILABLE under load)."""
    guard = ClockGuard()
    wall, mono = time.time(), 1000.0
    late = Reading(wall, mono, "boot")
    guard.observe(Reading(wall + 5.0, mono + 5.0, "boot"))
    guard.observe(late)
    assert guard.doubt is None


def test_clock_commands_show_and_acknowledge_the_doubt(
    served: tuple[Served, grpc.Channel], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``status`` shows the doubt (exit 1); ``clock acknowledge`` needs a reason, clears it."""
    from verifier.cli import main  # noqa: PLC0415

    one, _ = served
    where = ["--verifier", f"unix:{tmp_path / 'op.sock'}"]  # the fixture's operator socket
    assert main(["status", *where]) == 0
    assert "clock         trusted" in capsys.readouterr().out
    one.clock.offset = TWO_HOURS
    assert main(["status", *where]) == 1
    assert "IN DOUBT" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["clock", "acknowledge", *where])  # --reason is required
    assert main(["clock", "acknowledge", "--reason", "NTP checked", *where]) == 0
    out = capsys.readouterr().out
    assert "cleared: wall clock stepped forward" in out and "audit entry" in out
    assert main(["status", *where]) == 0


def test_health_is_not_serving_while_the_clock_is_in_doubt(
    served: tuple[Served, grpc.Channel],
) -> None:
    """``serve``'s health check: NOT_SERVING in doubt, SERVING once acknowledged."""
    from verifier.cli.serve import check_clock_trusted  # noqa: PLC0415

    one, _ = served
    check_clock_trusted(one.verifier)  # the baseline reading: trusted
    one.clock.offset = TWO_HOURS
    with pytest.raises(ClockInDoubt, match="stepped forward"):
        check_clock_trusted(one.verifier)
    _acknowledge(one.operator, "NTP checked")
    check_clock_trusted(one.verifier)


def _worker(
    tmp_path: Path, name: str, clock: SteppableClock, peers: SharedAcknowledgement
) -> Verifier:
    """One worker of ``serve --processes N``: its own store connection and clock guard."""
    store = open_store(tmp_path / "verifier.db")
    trust, allowlist = open_trust(None, None)
    return Verifier(
        store,
        trust,
        allowlist,
        LiveGolden.start(ROOT / "golden_measurements", store, clock.wall),
        KeyRing.open(tmp_path / f"keys-{name}", clock.wall()),
        clock=clock.wall,
        clock_guard=ClockGuard(settle_seconds=3600),
        reading=clock.reading,
        clock_peers=peers,
    )


def test_an_acknowledgement_through_one_worker_clears_every_worker(tmp_path: Path) -> None:
    """The operator's call reaches one worker; the others share the host's clock."""
    clock, peers = SteppableClock(), SharedAcknowledgement()
    one, two = (_worker(tmp_path, name, clock, peers) for name in ("one", "two"))
    assert one.clock_doubt() is None and two.clock_doubt() is None
    clock.offset = TWO_HOURS
    assert one.clock_doubt() is not None and two.clock_doubt() is not None
    one.acknowledge_clock("operator:test", "chrony synced")
    assert two.clock_doubt() is None
    assert one.clock_doubt() is None


def test_a_step_after_another_workers_acknowledgement_is_still_a_step(tmp_path: Path) -> None:
    """A worker takes the acknowledging worker's reading as its baseline, not its own later
    one: a step between the acknowledgement and the worker's next reading is not forgiven."""
    clock, peers = SteppableClock(), SharedAcknowledgement()
    one, two = (_worker(tmp_path, name, clock, peers) for name in ("one", "two"))
    assert one.clock_doubt() is None and two.clock_doubt() is None
    clock.offset = TWO_HOURS
    assert one.clock_doubt() is not None and two.clock_doubt() is not None
    one.acknowledge_clock("operator:test", "chrony synced")
    clock.offset += TWO_HOURS  # stepped again before worker two looked
    assert two.clock_doubt() is not None
    assert one.clock_doubt() is not None


def test_a_worker_started_after_an_acknowledgement_does_not_replay_it(tmp_path: Path) -> None:
    """A replacement worker must not apply an old acknowledgement: it would forget the times
    it has since read from the store (here a verdict issued in its future)."""
    clock, peers = SteppableClock(), SharedAcknowledgement()
    one = _worker(tmp_path, "one", clock, peers)
    one.acknowledge_clock("operator:test", "chrony synced")
    replacement = _worker(tmp_path, "replacement", clock, peers)
    assert replacement.clock_guard is not None
    replacement.clock_guard.check_issued_at(clock.wall() + 3600)  # a verdict from ahead
    assert replacement.clock_doubt() is not None


def test_the_acknowledgement_crosses_a_fork() -> None:
    peers = SharedAcknowledgement()
    pid = os.fork()
    if pid == 0:  # the child publishes, as a worker whose operator acknowledged would
        peers.publish(Reading(1234.5, 67.0, "boot"))
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    published = peers.latest()
    assert (published.generation, published.wall, published.mono) == (1, 1234.5, 67.0)
