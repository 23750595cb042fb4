"""Observability wired into the verifier: coverage, key rotation, health, the rpc wrapper's
metrics and log fields, the instrumented store, serve's metrics flags, ``devices`` and the
agent's status files. (The real Prometheus scrape is in test_e2e_prometheus.py.)"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pgcluster import fresh_schema_url, pg_cluster  # noqa: F401 (the fixture)
from prometheus_client.parser import text_string_to_metric_families

from agent.status import StatusReporter, textfile
from fleetattest.v1 import fleetattest_pb2 as pb
from fleetattest.v1 import fleetattest_pb2_grpc as pb_grpc
from verifier import cli
from verifier.app import Verifier, open_trust
from verifier.errors import StoreUnavailable
from verifier.golden.load import load_golden_dir
from verifier.livegolden import LiveGolden
from verifier.logjson import JsonFormatter
from verifier.metrics import VerifierMetrics
from verifier.observe import GoldenUnusable, check_golden_usable, coverage_of, key_rotation
from verifier.records import DeviceRecord
from verifier.service.health import NOT_SERVING, SERVING, HealthMonitor, all_of
from verifier.service.server import Listen, build_server
from verifier.store import open_store
from verifier.store.base import LatestVerdictCounts, LatestVerdictGroup, Store
from verifier.store.instrumented import instrument
from verifier.token import KeyRing
from verifier.verdict import BootEpoch, Status, Verdict

GOLDEN = Path(__file__).resolve().parent.parent / "golden_measurements"
YEAR_2031 = 1_925_000_000.0  # after every release's not_after (2030-12-31)


def value(metrics: VerifierMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def group(status: Status, release: str, live: bool, devices: int) -> LatestVerdictGroup:
    return LatestVerdictGroup(status, "sim-gateway", release, live, devices)


# ------------------------------------------------------------------ coverage and keys


def test_coverage_counts_a_revoked_release_as_superseded_not_affirming(tmp_path: Path) -> None:
    text = (GOLDEN / "sim-gateway.yaml").read_text()
    golden_dir = tmp_path / "golden"
    golden_dir.mkdir()
    (golden_dir / "sim-gateway.yaml").write_text(
        text.replace("  - name: fw-1.0.0\n", "  - name: fw-1.0.0\n    revoked: true\n", 1)
    )
    golden = load_golden_dir(golden_dir)
    counts = LatestVerdictCounts(
        enrolled=10,
        groups=(
            group(Status.AFFIRMING, "fw-1.0.0", True, 3),  # revoked since: superseded
            group(Status.AFFIRMING, "fw-1.1.0", True, 2),
            group(Status.AFFIRMING, "fw-1.1.0", False, 1),  # expired
            group(Status.CONTRAINDICATED, "", True, 1),
            group(Status.AFFIRMING, "fw-9.9.9", True, 1),  # release gone from the profile
        ),
    )
    coverage = coverage_of(counts, golden, time.time())
    assert (coverage.current_affirming, coverage.expired, coverage.never_attested) == (2, 5, 2)


def test_coverage_after_a_release_retires_counts_no_device_affirming() -> None:
    golden = load_golden_dir(GOLDEN)
    counts = LatestVerdictCounts(3, (group(Status.AFFIRMING, "fw-1.1.0", True, 3),))
    assert coverage_of(counts, golden, time.time()).current_affirming == 3
    retired = coverage_of(counts, golden, YEAR_2031)
    assert (retired.current_affirming, retired.expired) == (0, 3)


def test_key_rotation_reports_age_and_the_overlap_left(tmp_path: Path) -> None:
    now = time.time()
    ring = KeyRing.open(tmp_path / "keys", now)
    first = key_rotation(ring, now + 100)
    assert first.age_seconds >= 99 and first.overlap_left_seconds == 0
    ring.rotate(now, overlap_seconds=7200)
    rotated = key_rotation(ring, now + 600)
    assert rotated.overlap_left_seconds == pytest.approx(6600)
    assert rotated.age_seconds == pytest.approx(600, abs=30)  # the new key's file, not the old


# ------------------------------------------------------------------ health


def test_golden_set_whose_releases_all_retired_is_unusable(tmp_path: Path) -> None:
    store = open_store(tmp_path / "v.db")
    try:
        golden = LiveGolden.start(GOLDEN, store, time.time)
        check_golden_usable(golden, time.time())
        with pytest.raises(GoldenUnusable, match="revoked or retired"):
            check_golden_usable(golden, YEAR_2031)
    finally:
        store.close()


def _serving_status(monitor: HealthMonitor, service: str) -> int:
    request = health_pb2.HealthCheckRequest(service=service)
    context: grpc.ServicerContext = None  # type: ignore[assignment]  # Check never uses it
    return int(monitor.servicer.Check(request, context).status)


def test_health_flips_to_not_serving_on_a_retired_golden_set_and_back_after_a_reload(
    tmp_path: Path,
) -> None:
    golden_dir = tmp_path / "golden"
    shutil.copytree(GOLDEN, golden_dir)
    store = open_store(tmp_path / "v.db")
    clock = [YEAR_2031]
    try:
        golden = LiveGolden.start(golden_dir, store, time.time)
        monitor = HealthMonitor(
            all_of(store.ping, lambda: check_golden_usable(golden, clock[0])), period=60
        )
        assert not monitor.check_now()
        assert _serving_status(monitor, "") == (NOT_SERVING)
        path = golden_dir / "sim-gateway.yaml"
        path.write_text(path.read_text().replace("not_after: 2030-12-31", "not_after: 2040-01-01"))
        assert golden.reload().applied
        assert monitor.check_now()
        for service in ("", "fleetattest.v1.Agent", "fleetattest.v1.Operator"):
            assert _serving_status(monitor, service) == SERVING
    finally:
        store.close()


def test_health_is_not_serving_while_postgresql_drops_the_connection_then_recovers(
    pg_cluster: str,  # noqa: F811 (the fixture)
) -> None:
    import psycopg  # type: ignore[import-not-found, unused-ignore]  # noqa: PLC0415

    url = fresh_schema_url(pg_cluster)
    store = open_store(url)
    try:
        monitor = HealthMonitor(store.ping, period=60)
        assert monitor.check_now()
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE pid <> pg_backend_pid() AND datname = current_database()"
            )
        assert not monitor.check_now()  # the store's connection was cut
        assert monitor.check_now()  # the next check reconnects: serving again by itself
    finally:
        store.close()


# ------------------------------------------------------------------ a verifier without TPMs


@dataclass
class Served:
    verifier: Verifier
    address: str
    channel: grpc.Channel


def make_verifier(tmp_path: Path) -> Verifier:
    store = open_store(tmp_path / "v.db")
    trust, allow = open_trust(None, None)
    golden = LiveGolden.start(GOLDEN, store, time.time)
    return Verifier(store, trust, allow, golden, KeyRing.open(tmp_path / "keys", time.time()))


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    verifier = make_verifier(tmp_path)
    monitor = HealthMonitor(verifier.store.ping, period=60)
    socket = tmp_path / "operator.sock"  # operator calls need an identity: the socket's
    server, _ports = build_server(
        verifier, Listen("127.0.0.1:0", operator_socket=socket), workers=4, health=monitor
    )
    server.start()
    monitor.check_now()
    channel = grpc.insecure_channel(f"unix:{socket}")
    try:
        yield Served(verifier, f"unix:{socket}", channel)
    finally:
        channel.close()
        server.stop(grace=None).wait()
        verifier.store.close()


def test_challenge_for_an_unknown_device_is_counted_as_its_refusal_type(served: Served) -> None:
    stub = pb_grpc.AgentStub(served.channel)
    for _ in range(3):
        with pytest.raises(grpc.RpcError) as refused:
            stub.GetChallenge(pb.GetChallengeRequest(device_id="nobody"), timeout=10)
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    m = served.verifier.metrics
    refusals = value(
        m, "fleetattest_refusals_total", rpc="GetChallenge", error_type="unknown_device"
    )
    assert refusals == 3
    assert value(m, "fleetattest_rpc_duration_seconds_count", rpc="GetChallenge") == 3
    assert value(m, "fleetattest_rpcs_in_flight", rpc="GetChallenge") == 0
    assert value(m, "fleetattest_store_operation_duration_seconds_count", op="get_device") == 3


def test_nonce_never_issued_counts_a_freshness_failure_and_a_nonce_refusal(served: Served) -> None:
    store = served.verifier.store
    store.insert_device(
        DeviceRecord("dev-x", b"", b"", None, b"ak", b"name", {"model": "sim-gateway"}, 1, 0.0)
    )
    stub = pb_grpc.AgentStub(served.channel)
    with pytest.raises(grpc.RpcError) as refused:
        stub.Attest(
            pb.AttestRequest(
                device_id="dev-x",
                nonce=b"n" * 32,
                quote=b"q",
                signature=b"s",
                pcr_values=[pb.PcrValue(pcr=0, digest=b"\x00" * 32)],
            ),
            timeout=10,
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    m = served.verifier.metrics
    assert value(m, "fleetattest_freshness_failures_total", kind="nonce_rejected") == 1
    assert value(m, "fleetattest_refusals_total", rpc="Attest", error_type="nonce_mismatch") == 1
    assert value(m, "fleetattest_attestations_total", outcome="affirming") == 0


def test_health_service_answers_serving_without_credentials(served: Served) -> None:
    stub = health_pb2_grpc.HealthStub(served.channel)
    reply = stub.Check(health_pb2.HealthCheckRequest(service="fleetattest.v1.Agent"), timeout=10)
    assert reply.status == SERVING


def test_status_command_prints_health_and_exits_zero(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["status", "--verifier", served.address]) == 0
    assert "health        SERVING" in capsys.readouterr().out


def test_refusal_log_record_carries_rpc_caller_device_and_duration(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    stub = pb_grpc.AgentStub(served.channel)
    with (
        caplog.at_level(logging.INFO, logger="verifier.service.errors"),
        pytest.raises(grpc.RpcError),
    ):
        stub.GetChallenge(pb.GetChallengeRequest(device_id="dev\nforged"), timeout=10)
    (record,) = [r for r in caplog.records if "refused" in r.getMessage()]
    line = JsonFormatter().format(record)
    assert "\n" not in line  # a device id with a line break cannot forge a second record
    entry = json.loads(line)
    assert entry["rpc"] == "GetChallenge"
    assert entry["device_id"] == "dev\nforged"
    assert entry["caller"]  # anonymous here: no interceptor resolved a role
    assert entry["duration_ms"] >= 0


class _Broken:
    """A store whose every call fails the way a lost database does."""

    def __getattr__(self, name: str) -> object:
        def fail(*args: object, **kwargs: object) -> object:
            raise StoreUnavailable(f"store: {name} failed: connection lost")

        return fail


def test_instrumented_store_counts_errors_by_operation_and_lets_them_through() -> None:
    metrics = VerifierMetrics()
    broken: Store = _Broken()  # type: ignore[assignment]
    store = instrument(broken, metrics)
    for _ in range(2):
        with pytest.raises(StoreUnavailable):
            store.consume_nonce("dev", b"n", 0.0)
    with pytest.raises(StoreUnavailable):
        store.ping()
    assert value(metrics, "fleetattest_store_errors_total", op="consume_nonce") == 2
    assert value(metrics, "fleetattest_store_errors_total", op="ping") == 1
    assert (
        value(metrics, "fleetattest_store_operation_duration_seconds_count", op="consume_nonce")
        == 2
    )


# ------------------------------------------------------------------ serve flags and devices


@pytest.mark.parametrize(
    "flags",
    [
        ["--metrics-listen", "0.0.0.0:9464"],
        ["--metrics-listen", "10.1.2.3:9464"],
        ["--metrics-listen", "127.0.0.1:9464", "--metrics-cert", "/nonexistent.crt"],
        ["--metrics-listen", "no-port"],
    ],
)
def test_metrics_on_a_network_address_without_tls_is_refused_before_serving(
    tmp_path: Path, flags: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "v.db"
    code = cli.main(["serve", "--db", str(db), "--golden", str(GOLDEN), *flags])
    assert code == 2
    assert "metrics" in capsys.readouterr().err
    assert not db.exists()  # refused before anything was opened


def test_devices_shows_when_each_device_last_attested(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "v.db"
    store = open_store(db)
    for name in ("dev-seen", "dev-silent"):
        store.insert_device(DeviceRecord(name, b"", b"", None, b"ak", b"n", {}, 1, 0.0))
    issued = 1_800_000_000.0
    store.add_verdict(
        Verdict(
            "dev-seen", Status.AFFIRMING, (), "p", "r", "d", BootEpoch(1, 0), issued, issued + 3600
        )
    )
    store.close()
    assert cli.main(["devices", "--db", str(db), "--json"]) == 0
    listed = {d["device_id"]: d for d in json.loads(capsys.readouterr().out)["devices"]}
    assert listed["dev-seen"]["last_attested_at"] == "2027-01-15T08:00:00+00:00"
    assert listed["dev-seen"]["last_status"] == "affirming"
    assert listed["dev-silent"]["last_attested_at"] is None
    assert cli.main(["devices", "--db", str(db)]) == 0
    table = capsys.readouterr().out
    assert "LAST ATTESTED" in table and "never" in table


# ------------------------------------------------------------------ the agent's own state


def _verdict(status: pb.Status) -> pb.Verdict:
    v = pb.Verdict(device_id="dev-1", verdict_id="v1", status=status)
    v.issued_at.seconds = 1_800_000_000
    v.expires_at.seconds = 1_800_003_600
    return v


def test_agent_status_file_and_textfile_say_last_verdict_next_attempt_and_last_error(
    tmp_path: Path,
) -> None:
    reporter = StatusReporter(tmp_path / "status.json", tmp_path / "agent.prom")
    reporter.verdict(_verdict(pb.STATUS_AFFIRMING), next_at=1_800_002_400, now=1_800_000_001)
    reporter.error("UNAVAILABLE", "verifier down", next_at=1_800_002_500, now=1_800_002_401)
    document = json.loads((tmp_path / "status.json").read_text())
    assert document["last_verdict"]["status"] == "affirming"
    assert document["next_attestation_at"] == 1_800_002_500
    assert document["last_error"]["code"] == "UNAVAILABLE"
    assert document["consecutive_failures"] == 1
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families((tmp_path / "agent.prom").read_text())
        for s in family.samples
    }
    assert samples[("attest_agent_last_verdict_status", (("status", "affirming"),))] == 1
    assert samples[("attest_agent_last_verdict_status", (("status", "contraindicated"),))] == 0
    assert samples[("attest_agent_next_attestation_timestamp_seconds", ())] == 1_800_002_500
    assert samples[("attest_agent_last_error_timestamp_seconds", (("code", "UNAVAILABLE"),))]
    reporter.verdict(_verdict(pb.STATUS_CONTRAINDICATED), next_at=1.0, now=2.0)
    assert json.loads((tmp_path / "status.json").read_text())["consecutive_failures"] == 0


def test_error_code_with_a_line_break_cannot_forge_a_textfile_sample() -> None:
    reporter = StatusReporter()
    reporter.error('X"} 1\nattest_agent_forged 1\n#', "m", next_at=None, now=5.0)
    text = textfile(reporter.status)
    assert "attest_agent_forged" not in text
    names = {f.name for f in text_string_to_metric_families(text)}
    assert "attest_agent_last_error_timestamp_seconds" in names
    assert 'code="other"' in text


# ------------------------------------------------------------------ --processes N


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_two_worker_processes_are_summed_on_one_metrics_listener(tmp_path: Path) -> None:
    port, metrics_port = _free_port(), _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    serve = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "verifier.cli",
            "--log-format",
            "json",
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            "--processes",
            "2",
            "--db",
            str(tmp_path / "v.db"),
            "--golden",
            str(GOLDEN),
            "--metrics-listen",
            f"127.0.0.1:{metrics_port}",
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        while time.monotonic() < deadline:  # a deadline for start-up, not a timing claim
            try:
                samples = _scrape(metrics_port)
            except OSError:
                samples = {}
            serving = sum(v for (n, _), v in samples.items() if n == "fleetattest_golden_info")
            if serving == 2:
                break
            time.sleep(0.2)
        golden = {k: v for k, v in samples.items() if k[0] == "fleetattest_golden_info"}
        assert sum(golden.values()) == 2, golden  # both workers serve the digest
        calls = 24
        for _ in range(calls):  # a new connection each: SO_REUSEPORT spreads them
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                pb_grpc.RelyingPartyStub(channel).GetJwks(pb.GetJwksRequest(), timeout=10)
        samples = _scrape(metrics_port)
        count = ("fleetattest_rpc_duration_seconds_count", (("rpc", "GetJwks"),))
        assert samples[count] == calls
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=10
            )
        assert health.status == SERVING
    finally:
        serve.send_signal(signal.SIGTERM)
        _, err = serve.communicate(timeout=60)
    assert serve.returncode == 0, err
    records = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any("serving agents on port" in r["msg"] for r in records)
