"""A worker killed with SIGKILL mid-stream resumes with its windows and baselines intact."""

from __future__ import annotations

import json
import signal
import uuid

import psycopg
import pytest
from kafka import KafkaConsumer
from psycopg import sql

from simulators.cohort import CohortConfig, simulate
from simulators.kafka_publisher import make_producer, publish
from sinks.migrations import migrate
from kernel.settings import Settings

pytestmark = pytest.mark.integration

HOURS = 4
PATIENTS = 40


def _second_run(settings: Settings, superuser_url: str) -> Settings:
    """Same input topic; its own consumer group, output topics and database."""
    tag = uuid.uuid4().hex[:8]
    admin = superuser_url.rsplit("/", 1)[0]
    dbname = f"test_kill_{tag}"
    with psycopg.connect(f"{admin}/postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    migrate(f"{admin}/{dbname}", timescale=settings.sink_timescale)
    return settings.model_copy(update={
        "app_id": f"{settings.app_id}-kill", "database_url": settings.database_url.rsplit("/", 1)[0] + f"/{dbname}",
        "admin_database_url": f"{admin}/{dbname}", "scores_topic": f"{settings.scores_topic}-kill",
        "features_topic": f"{settings.features_topic}-kill", "deadletter_topic": f"{settings.deadletter_topic}-kill",
        "data_dir": settings.data_dir.with_name(settings.data_dir.name + "-kill")})


def _rows(settings: Settings) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    with psycopg.connect(settings.database_url) as conn:
        features = conn.execute("SELECT patient_id, metric, window_start, n, mean, min, max FROM features "
                                "ORDER BY 1, 2, 3").fetchall()
        scores = conn.execute("SELECT patient_id, model_name, window_start, news2_total, inputs, missing_inputs "
                              "FROM risk_scores ORDER BY 1, 2, 3").fetchall()
    return features, scores


def _feature_topic(settings: Settings) -> dict[tuple[str, int], dict[str, float]]:
    consumer = KafkaConsumer(settings.features_topic, bootstrap_servers=settings.kafka_bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=5000, group_id=None)
    rows: dict[tuple[str, int], dict[str, float]] = {}
    for message in consumer:
        body = json.loads(message.value)
        key = (body["patient_id"], body["t"])
        assert rows.get(key, body["x"]) == body["x"], f"a replay changed the features of {key}"
        rows[key] = body["x"]
    consumer.close()
    return rows


def test_sigkill_mid_stream_writes_every_window_once_with_the_same_values(services, isolated: Settings,
                                                                          start_worker) -> None:
    config = CohortConfig(patients=PATIENTS, seed=7, duration_ms=HOURS * 3_600_000)
    producer = make_producer(isolated)
    report = publish(simulate(config), settings=isolated, producer=producer)
    producer.close()
    device_messages = report.messages - report.outcomes

    reference = start_worker(isolated)
    reference.wait_metric("vitals_messages_total", lambda v: v >= device_messages, timeout_s=180)
    reference.wait_metric("vitals_open_windows", lambda v: v == 0, timeout_s=60)
    reference.wait_metric("vitals_sink_rows_total", lambda v: v > 0, labels={"table": "features"})
    assert reference.stop() == 0

    crashed = _second_run(isolated, services.superuser_url)
    worker = start_worker(crashed)
    worker.wait_metric("vitals_sink_rows_total", lambda v: v >= 2_000, labels={"table": "features"}, timeout_s=120)
    assert worker.metric("vitals_messages_total") < device_messages, "killed too late to prove anything"
    worker.stop(signal.SIGKILL)

    restarted = start_worker(crashed)
    restarted.wait_metric("vitals_messages_total", lambda v: v > 0, timeout_s=120)
    restarted.wait_metric("vitals_open_windows", lambda v: v == 0, timeout_s=180)
    _wait_until_equal(lambda: _rows(crashed), _rows(isolated))

    expected_features, expected_scores = _rows(isolated)
    got_features, got_scores = _rows(crashed)
    missing, extra = sorted(set(expected_features) - set(got_features)), sorted(set(got_features) - set(expected_features))
    assert not missing and not extra, f"{len(missing)} rows missing, e.g. {missing[:6]}; {len(extra)} extra, e.g. {extra[:6]}"
    assert len(got_features) == len(expected_features) > 0
    assert got_features == expected_features
    assert got_scores == expected_scores
    reference_rows = _feature_topic(isolated)
    assert any("heart_rate_z_60m" in x for x in reference_rows.values()), "baselines never warmed up"
    assert _feature_topic(crashed) == reference_rows, "hopping features and baselines survive the crash"


def _wait_until_equal(get, expected, timeout_s: float = 60) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and get() != expected:
        time.sleep(1)
