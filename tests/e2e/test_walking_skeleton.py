"""End to end on the real broker and database: readings in, exactly the expected windows out."""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import psycopg
import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord

from kernel.settings import Settings
from kernel.wire import encode_device_message

pytestmark = pytest.mark.integration

START_MS = 1_767_571_200_000  # 2026-01-05T00:00Z
MINUTES = 8
PATIENTS = [f"pt-{i:04x}" for i in range(5)]

MALFORMED = {
    b"this is not json": "not_json",
    json.dumps({"schema": "vitalrisk.device/1", "device_id": "d", "seq": 1, "sent_at": 1,
                "readings": []}).encode(): "missing_field",
    json.dumps({"schema": "vitalrisk.device/1", "device_id": "d", "patient_id": "pt-0000", "seq": "one",
                "sent_at": 1, "readings": []}).encode(): "wrong_type",
}


def _readings(patient: int, minute: int) -> list[tuple[str, int, float]]:
    """Five vitals a minute; heart rate every 5 s. Values vary by patient and minute."""
    t0 = START_MS + minute * 60_000
    rng = np.random.default_rng(patient * 1000 + minute)
    hr = [("heart_rate", t0 + k * 5_000, float(round(70 + 10 * patient + rng.normal(0, 3), 1))) for k in range(12)]
    return hr + [
        ("respiratory_rate", t0 + 10_000, 14.0 + patient * 2 + minute % 3),
        ("oxygen_saturation", t0 + 20_000, 97.0 - patient),
        ("body_temperature", t0 + 30_000, 36.8 + 0.3 * patient),
        ("systolic_blood_pressure", t0 + 40_000, 125.0 - 8 * patient),
    ]


def _publish(settings: Settings) -> tuple[dict[tuple[str, str, int], list[float]], int]:
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    expected: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    sent = 0
    for minute in range(MINUTES):
        for p, patient in enumerate(PATIENTS):
            readings = _readings(p, minute)
            # one reading the worker must reject without losing the rest of the message
            bad = [("heart_rate", START_MS + minute * 60_000 + 59_000, 999.0)] if minute == 3 else []
            sent_at = START_MS + (minute + 1) * 60_000
            producer.send(settings.readings_topic, key=patient.encode(), timestamp_ms=sent_at,
                          value=encode_device_message(device_id=f"dev-{p}", patient_id=patient, seq=minute,
                                                      sent_at=sent_at, readings=readings + bad))
            sent += 1
            for metric, t, value in readings:
                expected[(patient, metric, t - t % 60_000)].append(value)
        if minute == 4:  # malformed messages mid-stream, before good ones on the same partitions
            for raw in MALFORMED:
                producer.send(settings.readings_topic, key=PATIENTS[0].encode(), value=raw,
                              timestamp_ms=START_MS + 5 * 60_000)
                sent += 1
    producer.flush()
    producer.close()
    return expected, sent


def _feature_rows(settings: Settings) -> dict[tuple[str, str, int], tuple[int, float, float, float]]:
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute("SELECT patient_id, metric, (extract(epoch FROM window_start) * 1000)::bigint, "
                            "n, mean, min, max FROM features").fetchall()
    return {(r[0], r[1], int(r[2])): (r[3], r[4], r[5], r[6]) for r in rows}


def _count(settings: Settings, table: str) -> int:
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608 - fixed names
        assert row is not None
        return int(row[0])


def test_known_readings_become_exactly_the_expected_windows(isolated: Settings, start_worker) -> None:
    expected, sent = _publish(isolated)
    worker = start_worker(isolated)
    worker.wait_metric("vitals_messages_total", lambda v: v >= sent)
    worker.wait_metric("vitals_windows_emitted_total", lambda v: v >= len(PATIENTS) * MINUTES)
    worker.wait_metric("vitals_sink_rows_total", lambda v: v >= len(expected), labels={"table": "features"})

    rows = _feature_rows(isolated)
    assert set(rows) == set(expected), "every window once, none missing, none extra"
    for key, values in expected.items():
        n, mean, low, high = rows[key]
        assert (n, low, high) == (len(values), min(values), max(values)), key
        assert mean == pytest.approx(float(np.mean(values)), rel=1e-12), key
    assert _count(isolated, "risk_scores") == len(PATIENTS) * MINUTES

    # malformed messages went to the dead-letter topic with reasons; the worker kept going
    for reason in set(MALFORMED.values()) | {"impossible_value"}:
        assert worker.metric("vitals_deadletters_total", {"reason": reason}) >= 1, reason
    letters = _read_topic(isolated, isolated.deadletter_topic, expect=len(MALFORMED) + len(PATIENTS))
    assert sorted(dict(m.headers)["vitalrisk.reason"].decode() for m in letters) == sorted(
        list(MALFORMED.values()) + ["impossible_value"] * len(PATIENTS))
    # each dead letter is its record's bytes, once, under its own key
    assert {m.value for m in letters if m.value in MALFORMED} == set(MALFORMED)
    assert worker.stop() == 0

    # a second consumer group replays the whole topic: the database gains no rows
    replay = isolated.model_copy(update={"app_id": isolated.app_id + "-replay"})
    worker = start_worker(replay)
    worker.wait_metric("vitals_messages_total", lambda v: v >= sent)
    worker.wait_metric("vitals_windows_emitted_total", lambda v: v >= len(PATIENTS) * MINUTES)
    worker.wait_metric("vitals_sink_flush_seconds_count", lambda v: v >= 1)
    worker.wait_metric("vitals_open_windows", lambda v: v == 0)
    assert _feature_rows(isolated) == rows
    assert _count(isolated, "risk_scores") == len(PATIENTS) * MINUTES


def _read_topic(settings: Settings, topic: str, *, expect: int) -> list[ConsumerRecord]:
    consumer = KafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=5000, group_id=None)
    values = list(consumer)
    consumer.close()
    assert len(values) == expect, values
    return values
