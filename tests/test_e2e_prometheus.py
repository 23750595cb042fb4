"""A real scrape: the Prometheus server (Debian's ``prometheus``) scrapes a running verifier
while simulated devices attest, and its HTTP API must agree with what the devices were told.

The verifier is the fleet harness's in-process one (``simulator.fleet``), its metrics served
with ``verifier.metrics_http.start_metrics_server`` on 127.0.0.1 and its coverage gauges
refreshed by ``CoverageRefresher`` as ``serve`` does. Prometheus gets a temporary config
(scrape and rule evaluation every second, the job named ``attest-verifier`` as
deploy/prometheus/rules.yml expects) and a TEST COPY of rules.yml in which every ``for:`` is
rewritten to 1s and every group interval to 1s: the expressions are the shipped ones, only
the waiting is shortened. Waits below are deadlines for a condition, never timing claims.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleetattest.v1 import fleetattest_pb2 as pb
from fleetattest.v1 import fleetattest_pb2_grpc as pb_grpc
from simulator.fleet import Fleet
from simulator.profiles import GOOD_A, GOOD_B, TAMPERED_BOOTLOADER
from verifier.metrics import CoverageRefresher
from verifier.metrics_http import start_metrics_server

PROMETHEUS = shutil.which("prometheus")
ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "golden_measurements"
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
DEADLINE = 90.0  # seconds a condition may take before the test fails

pytestmark = [
    pytest.mark.swtpm,
    pytest.mark.slow,
    pytest.mark.skipif(
        PROMETHEUS is None,
        reason="the prometheus server is not installed (apt-get install prometheus)",
    ),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def shortened_rules(target: Path) -> None:
    """rules.yml with every ``for:`` and group ``interval:`` set to 1s (nothing else)."""
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        if "interval" in group:
            group["interval"] = "1s"
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "1s"
    target.write_text(yaml.safe_dump(rules, sort_keys=False))


class Prometheus:
    def __init__(self, workdir: Path, metrics_port: int) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        shortened_rules(workdir / "rules.yml")
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(workdir / "rules.yml")],
            "scrape_configs": [
                {
                    "job_name": "attest-verifier",
                    "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}],
                }
            ],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        assert PROMETHEUS is not None
        self.log = (workdir / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.wait_for("Prometheus ready", self._ready)

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"prometheus exited with {self.process.returncode}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as reply:
                return bool(reply.status == 200)
        except OSError:
            return False

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as reply:
            body = json.load(reply)
        assert body["status"] == "success", body
        return body["data"]

    def value(self, expr: str) -> float | None:
        """The single value of an instant query (None: no series)."""
        result = self.api("query", query=expr)["result"]
        if not result:
            return None
        assert len(result) == 1, result
        return float(result[0]["value"][1])

    def firing(self) -> set[str]:
        alerts = self.api("alerts")["alerts"]
        return {a["labels"]["alertname"] for a in alerts if a["state"] == "firing"}

    @staticmethod
    def wait_for(what: str, condition: Callable[[], bool]) -> None:
        deadline = time.monotonic() + DEADLINE
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {DEADLINE:.0f} s: {what}")
            time.sleep(0.5)

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


@pytest.fixture
def observed(tmp_path: Path) -> Iterator[tuple[Fleet, Prometheus, Path]]:
    golden = tmp_path / "golden"
    shutil.copytree(GOLDEN, golden)
    with Fleet(tmp_path / "fleet") as fleet:
        live = fleet.start_verifier(golden)
        metrics = live.verifier.metrics
        listener = start_metrics_server("127.0.0.1:0", metrics.registry)
        refresher = CoverageRefresher(metrics, live.verifier.coverage, period=1.0)
        refresher.start()
        prometheus = Prometheus(tmp_path / "prometheus", listener.port)
        try:
            yield fleet, prometheus, golden
        finally:
            prometheus.close()
            refresher.stop()
            listener.stop()


def test_scraped_counters_agree_with_the_verdicts_and_a_broken_golden_set_fires_its_alert(
    observed: tuple[Fleet, Prometheus, Path],
) -> None:
    fleet, prometheus, golden = observed
    address = fleet.live.address
    devices = [
        fleet.add_device("good-1", GOOD_A),
        fleet.add_device("good-2", GOOD_B),
        fleet.add_device("tampered", TAMPERED_BOOTLOADER),
    ]
    received: dict[str, int] = {}
    for _ in range(2):
        for device in devices:
            verdict = device.attest(address)
            name = pb.Status.Name(verdict.status).removeprefix("STATUS_").lower()
            received[name] = received.get(name, 0) + 1
    assert received == {"affirming": 4, "contraindicated": 2}
    attempts = sum(received.values())

    def scraped(expr: str, expected: float) -> Callable[[], bool]:
        return lambda: prometheus.value(expr) == expected

    for outcome, count in received.items():
        expr = f'sum(fleetattest_attestations_total{{job="attest-verifier",outcome="{outcome}"}})'
        prometheus.wait_for(f"{expr} == {count}", scraped(expr, count))
    assert prometheus.value('sum(fleetattest_attestations_total{outcome="warning"})') == 0
    assert prometheus.value('fleetattest_rpc_duration_seconds_count{rpc="Attest"}') == attempts
    assert prometheus.value("sum(fleetattest_enrollments_total{outcome='enrolled'})") == 3
    assert prometheus.value("sum(fleetattest_refusals_total)") == 0
    prometheus.wait_for(
        "coverage: 3 enrolled, 2 affirming",
        lambda: (
            prometheus.value("fleetattest_devices_enrolled") == 3
            and prometheus.value("fleetattest_devices_current_affirming") == 2
        ),
    )
    assert prometheus.value("fleetattest_devices_never_attested") == 0
    # The recording rules of rules.yml, evaluated by Prometheus on the scraped series.
    prometheus.wait_for(
        "coverage ratio recorded",
        lambda: prometheus.value("fleetattest:coverage:ratio") == pytest.approx(2 / 3),
    )
    assert "GoldenReloadFailing" not in prometheus.firing()

    with fleet.live.operator_channel() as channel:
        listed = pb_grpc.OperatorStub(channel).ListDevices(pb.ListDevicesRequest(), timeout=10)
    last = {d.device_id: d for d in listed.devices}
    for device in devices:
        assert last[device.device_id].last_attested_at.seconds > 0
    assert last[devices[2].device_id].last_status == pb.STATUS_CONTRAINDICATED

    digest = fleet.live.golden.current().profile_set.digest
    (golden / "sim-gateway.yaml").write_text("profile: [this is not a golden file\n")
    prometheus.wait_for(
        "GoldenReloadFailing fires", lambda: "GoldenReloadFailing" in prometheus.firing()
    )
    failed = prometheus.value("sum(fleetattest_golden_reloads_total{result='failed'})")
    assert failed is not None and failed >= 1
    assert prometheus.value(f'fleetattest_golden_info{{digest="{digest}"}}') == 1  # kept serving
