"""A real Prometheus scrapes a running worker, loads our rules, and answers every board query.

The Debian ``prometheus`` binary runs on a free 127.0.0.1 port with its TSDB in a temporary
folder, scraping the worker's metrics port every second under our job name and evaluating
grafana/prometheus/rules every second. The test waits until ``vitals_messages_total`` is there,
then checks that every rule group loaded and evaluates without error and that Prometheus' own
query engine accepts every dashboard expression; expressions whose metrics the worker exports
must also return data, so the Ops board shows a running pipeline.

The ingest gateway's row is checked the same way against a running gateway app (its fake device
table and broker from ``tests/gateway``, so no services): uploads accepted, refused for each kind
of reason and answered 503, then every panel of the row has data and VitalsGatewayUnavailable
is pending.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from kafka import KafkaProducer
from prometheus_client import CollectorRegistry

from gateway.app import BodyLimits, build_app, make_runner
from gateway.service import Gateway
from grafana.build import yaml_text
from grafana.rules import GATEWAY_JOB, WORKER_JOB
from infra.processes import free_port
from kernel.settings import Settings
from kernel.wire import encode_device_message
from sinks.metrics import GatewayMetrics
from tests.gateway.test_service_app import FakeBroker, FakeDirectory, native
from tests.grafana.artefacts import RULES_DIR, all_queries, dashboards
from tests.grafana.promql import LABEL_VALUES, interpolate, metric_names

pytestmark = pytest.mark.integration

PROMETHEUS = Path("/usr/bin/prometheus")
START_MS = 1_767_571_200_000  # 2026-01-05T00:00Z
TIMEOUT_S = 45.0
#: Series a worker that has read the test's messages exports, from each part of the Ops board.
EXPECTED_SERIES = {"vitals_messages_total", "vitals_readings_total", "vitals_deadletters_total",
                   "vitals_processing_seconds_bucket", "vitals_sink_flush_seconds_bucket", "vitals_sink_up",
                   "vitals_consumer_lag", "vitals_watermark_lag_seconds", "vitals_open_windows"}


class PrometheusApi:
    """The HTTP API of one local Prometheus."""

    def __init__(self, port: int, log: Path) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.log = log

    def get(self, path: str, **params: str) -> Any:
        url = f"{self.base}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - local test server
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read())
        if body.get("status") != "success":
            raise AssertionError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.get("/api/v1/query", query=expr)
        return data["result"] if data["resultType"] in ("vector", "matrix") else [data["result"]]

    def wait(self, what: str, check: Any, *, timeout_s: float = TIMEOUT_S) -> Any:
        deadline = time.monotonic() + timeout_s
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = check()
                if last:
                    return last
            except (OSError, AssertionError) as exc:
                last = exc
            time.sleep(0.5)
        raise AssertionError(f"{what} not within {timeout_s} s (last: {last!r});\n"
                             f"{self.log.read_text(errors='replace')[-3000:]}")


@contextmanager
def local_prometheus(tmp_path: Path, metrics_port: int, job: str = WORKER_JOB) -> Iterator[PrometheusApi]:
    """Run Prometheus scraping ``127.0.0.1:metrics_port`` as ``job`` (the worker's), with our rules."""
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml_text({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES_DIR / "*.yml")],
        "scrape_configs": [{"job_name": job,
                            "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}],
    }))
    log = tmp_path / "prometheus.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(PROMETHEUS), f"--config.file={config}",
                                 f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        yield PrometheusApi(port, log)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _publish_a_little(settings: Settings) -> int:
    """Three minutes of two patients, and one unreadable message (a dead letter)."""
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    sent = 0
    for minute in range(3):
        for patient in ("pt-0a", "pt-0b"):
            t0 = START_MS + minute * 60_000
            readings = [("heart_rate", t0 + k * 5_000, 70.0 + k) for k in range(12)]
            readings += [("respiratory_rate", t0 + 1_000, 16.0), ("oxygen_saturation", t0 + 2_000, 97.0)]
            producer.send(settings.readings_topic, key=patient.encode(), timestamp_ms=t0 + 60_000,
                          value=encode_device_message(device_id=f"dev-{patient}", patient_id=patient, seq=minute,
                                                      sent_at=t0 + 60_000, readings=readings))
            sent += 1
    producer.send(settings.readings_topic, key=b"pt-0a", value=b"not json", timestamp_ms=START_MS + 180_000)
    producer.flush()
    producer.close()
    return sent + 1


def _board_expressions() -> list[tuple[str, str]]:
    """(label, PromQL) of every Prometheus query on the boards, variables as "All"."""
    found = []
    for query in all_queries():
        if query.language not in ("promql", "prometheus-variable"):
            continue
        text = query.text
        if query.language == "prometheus-variable":
            match = LABEL_VALUES.match(text)
            assert match, query.label
            text = match.group(1)
        variables = {v["name"]: ".*" for v in dashboards()[query.board]["templating"]["list"]
                     if v["datasource"]["type"] == "prometheus"}
        found.append((query.label, interpolate(text, variables)))
    return found


@pytest.mark.skipif(not PROMETHEUS.is_file(), reason="prometheus not installed (Debian package; make system-deps)")
def test_prometheus_scrapes_a_running_worker_and_answers_the_boards(isolated: Settings, start_worker: Any,
                                                                    tmp_path: Path) -> None:
    sent = _publish_a_little(isolated)
    worker = start_worker(isolated)
    with local_prometheus(tmp_path, worker.metrics_port) as prometheus:  # starts while the worker does
        worker.wait_metric("vitals_messages_total", lambda v: v >= sent)
        worker.wait_metric("vitals_sink_rows_total", lambda v: v > 0, labels={"table": "risk_scores"})
        series = prometheus.wait(  # the worker has read everything; wait for a scrape that shows it
            f"vitals_messages_total >= {sent} in Prometheus",
            lambda: [s for s in prometheus.query("vitals_messages_total") if float(s["value"][1]) >= sent])
        assert [s["metric"]["job"] for s in series] == [WORKER_JOB]
        up = prometheus.query(f'up{{job="{WORKER_JOB}"}}')
        assert [float(s["value"][1]) for s in up] == [1.0]

        # every rule group loads, and every rule has been evaluated without error
        def rules_evaluated() -> list[dict[str, Any]]:
            groups = prometheus.get("/api/v1/rules")["groups"]
            rules = [rule for group in groups for rule in group["rules"]]
            never = "0001-01-01T00:00:00Z"  # Go's zero time: not evaluated yet
            return rules if rules and all(r["lastEvaluation"] != never for r in rules) else []

        rules = prometheus.wait("every rule evaluated", rules_evaluated)
        assert {g["name"] for g in prometheus.get("/api/v1/rules")["groups"]} == {"vitalrisk.recording",
                                                                                 "vitalrisk.alerts"}
        broken = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
        assert not broken, broken

        # rates need two scrapes in their window; some gauges appear only after the worker's first ticks
        prometheus.wait("a rate over the worker's counters",
                        lambda: prometheus.query("sum(rate(vitals_messages_total[1m]))"))
        prometheus.wait(f"the worker's metrics {sorted(EXPECTED_SERIES)}",
                        lambda: EXPECTED_SERIES <= set(prometheus.get("/api/v1/label/__name__/values")))
        expressions = _board_expressions()
        for _, expr in expressions:
            prometheus.query(expr)  # raises on any parse or evaluation error

        def empty_panels() -> list[str]:
            """Board queries with no data although Prometheus has every series they read (the gateway's
            ``up`` is not scraped here: the gateway test below answers its row)."""
            present = set(prometheus.get("/api/v1/label/__name__/values"))
            return [label for label, expr in expressions
                    if (names := metric_names(expr)) and names <= present and "ALERTS" not in names
                    and GATEWAY_JOB not in expr and not prometheus.query(expr)]

        # a counter that appeared late needs a second scrape before rate() has a value
        deadline = time.monotonic() + 20
        while (empty := empty_panels()) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not empty, f"no data although Prometheus has the series they read: {empty}"


@contextmanager
def serving_gateway() -> Iterator[tuple[int, FakeDirectory, FakeBroker]]:
    """The gateway's HTTP app on a free port, in a thread of its own, with a fake device table and broker."""
    settings = Settings(gateway_rate_per_device=1000.0, gateway_burst=1000)
    directory, broker, registry = FakeDirectory(), FakeBroker(timeout_s=0.1), CollectorRegistry()
    gateway = Gateway.from_settings(settings, directory=directory, sink=broker, metrics=GatewayMetrics(registry))
    runner = make_runner(build_app(gateway, registry, body_limits=BodyLimits(settings.gateway_max_body_bytes,
                                                                             settings.gateway_max_decompressed_bytes)))
    port = free_port()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> None:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()

    try:
        asyncio.run_coroutine_threadsafe(start(), loop).result(10)
        yield port, directory, broker
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(20)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def _upload(port: int, body: bytes, token: str | None, content_type: str = "application/json") -> int:
    headers = {"Content-Type": content_type, **({"Authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/uploads", data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - local test server
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _gateway_row_expressions() -> list[tuple[str, str]]:
    return [(label, expr) for label, expr in _board_expressions()
            if "vitals_gateway_" in expr or GATEWAY_JOB in expr]


@pytest.mark.skipif(not PROMETHEUS.is_file(), reason="prometheus not installed (Debian package; make system-deps)")
def test_prometheus_scrapes_a_running_gateway_and_answers_its_row(tmp_path: Path) -> None:
    with serving_gateway() as (port, directory, broker), local_prometheus(tmp_path, port, GATEWAY_JOB) as prometheus:
        token = directory.enroll("pt-1", "dev-1").token
        expressions = _gateway_row_expressions()
        assert len(expressions) >= 10, expressions

        def upload_a_round(seq: int) -> list[int]:
            statuses = [_upload(port, native(seq=seq), token),  # 202
                        _upload(port, native(seq=seq), None),  # 401 missing
                        _upload(port, native(seq=seq), "not-a-token"),  # 401 malformed
                        _upload(port, b"{not json", token),  # 400 not_json
                        _upload(port, native(patient="pt-2", seq=seq), token)]  # 403 patient_mismatch
            broker.down = True  # the request below is the only one in flight: no race with the gateway's thread
            statuses.append(_upload(port, native(seq=10_000 + seq), token))  # 503 broker_unavailable
            broker.down = False
            return statuses

        def panels_without_data() -> list[str]:
            return [label for label, expr in expressions if not prometheus.query(expr)]

        seq, deadline, empty = 0, time.monotonic() + TIMEOUT_S, [label for label, _ in expressions]
        while empty and time.monotonic() < deadline:
            seq += 1
            assert upload_a_round(seq) == [202, 401, 401, 400, 403, 503]
            time.sleep(0.5)
            empty = panels_without_data()
        assert not empty, f"gateway panels without data: {empty}"
        assert {s["metric"]["reason"] for s in prometheus.query("vitals_gateway_auth_failures_total")} == \
            {"missing", "malformed"}

        pending = prometheus.wait("VitalsGatewayUnavailable pending", lambda: prometheus.query(
            'ALERTS{alertname="VitalsGatewayUnavailable", alertstate="pending"}'))
        assert [s["metric"]["reason"] for s in pending] == ["broker_unavailable"]
