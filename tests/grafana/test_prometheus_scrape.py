"""A real Prometheus scrapes a running worker, loads our rules, and answers every board query.

The Debian ``prometheus`` binary runs on a free 127.0.0.1 port with its TSDB in a temporary
folder, scraping the worker's metrics port every second under our job name and evaluating
grafana/prometheus/rules every second. The test waits until ``vitals_messages_total`` is there,
then checks that every rule group loaded and evaluates without error and that Prometheus' own
query engine accepts every dashboard expression; expressions whose metrics the worker exports
must also return data, so the Ops board shows a running pipeline.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from grafana.build import yaml_text
from grafana.rules import WORKER_JOB
from kernel.settings import Settings
from kernel.wire import encode_device_message
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
def local_prometheus(tmp_path: Path, metrics_port: int) -> Iterator[PrometheusApi]:
    """Run Prometheus scraping ``127.0.0.1:metrics_port`` as the worker job, with our rules."""
    port = _free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml_text({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES_DIR / "*.yml")],
        "scrape_configs": [{"job_name": WORKER_JOB,
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
            """Board queries with no data although Prometheus has every series they read."""
            present = set(prometheus.get("/api/v1/label/__name__/values"))
            return [label for label, expr in expressions
                    if (names := metric_names(expr)) and names <= present and "ALERTS" not in names
                    and not prometheus.query(expr)]

        # a counter that appeared late needs a second scrape before rate() has a value
        deadline = time.monotonic() + 20
        while (empty := empty_panels()) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not empty, f"no data although Prometheus has the series they read: {empty}"
