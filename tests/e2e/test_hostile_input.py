"""Hostile and broken input on the real broker and database: nothing stalls, nothing leaks in.

A known cohort (:class:`tests.e2e.streams.Stream`) is interleaved with about 3,300 hostile
records: a 100,000-deep nest, 5,000-digit numbers, ids with NUL, a lone surrogate, a newline or
900 KB, 1,000 bad readings in one message, a fast clock, duplicate keys, not-JSON, tombstones, a
flood of invented device ids, and a patient whose rows the database refuses. The database must
then hold exactly the cohort's rows, the worker must never restart, its committed offsets must
reach the end of the topic, and every hostile record must have its dead letter with a reason.
``vitalrisk deadletters`` then lists, summarises and replays them.
"""

from __future__ import annotations

import io
import json
import time

import psycopg
import pytest
from kafka import KafkaProducer

from stream.cli import build_parser
from stream.deadletter_topic import read_all, run
from kernel.settings import Settings
from kernel.wire import encode_device_message
from tests.conftest import committed_to_end
from tests.e2e.streams import START_MS, Stream, assert_features_equal, feature_rows, wait_until

pytestmark = pytest.mark.integration

STREAM = Stream(patients=4, minutes=6)
POISON = "pt-poison"
FLOOD = 3_000


def _device(device_id: str, patient_id: str, seq: object, readings: list[dict[str, object]]) -> bytes:
    return json.dumps({"schema": "vitalrisk.device/1", "device_id": device_id, "patient_id": patient_id,
                       "seq": seq, "sent_at": START_MS, "readings": readings}).encode()


def _hostile() -> list[tuple[bytes | None, bytes | None]]:
    """(key, value) of every hostile record, each of which must be dead-lettered."""
    hr = {"metric": "heart_rate", "t": START_MS + 1_000, "value": 70.0}
    future = int(time.time() * 1000) + 3_900_000
    records: list[tuple[bytes | None, bytes | None]] = [
        (b"x", b"[" * 100_000 + b"]" * 100_000),
        (b"x", b'{"schema":"vitalrisk.device/1","seq":' + b"9" * 5_000 + b"}"),
        (b"x", _device("dev-h", "pt-h", 1, [hr]).replace(b"70.0", b"7" * 5_000)),
        (b"x", _device("dev-h", "pt\x00h", 1, [hr])),
        (b"x", _device("dev-h", "pt\ud800", 1, [hr]) if False else
         b'{"schema":"vitalrisk.device/1","device_id":"dev-h","patient_id":"\\ud800","seq":1,"sent_at":1,"readings":[]}'),
        (b"x", _device("dev-h", "pt-1\nINFO forged", 1, [hr])),
        (b"x", _device("dev-h", "p" * 900_000, 1, [hr])),
        (b"x", _device("dev-bad", "pt-bad", 1, [{**hr, "value": 999.0}] * 1_000)),
        (b"pt-fast", _device("dev-fast", "pt-fast", 1, [{**hr, "t": future}])),
        (b"x", b'{"schema":"vitalrisk.device/1","schema":"vitalrisk.device/1"}'),
        (b"x", b"\xff\xfe not json"),
        (b"x", None),
        (b"x", _device("dev-h", "pt-h", 2, [{**hr, "value": float("nan")}])),
    ]
    # a flood of invented devices, each sending one reading for a window long closed
    records += [(b"pt-flood", _device(f"dev-flood-{i}", "pt-flood", 1, [hr])) for i in range(FLOOD)]
    return records


def _publish(settings: Settings, records: list[tuple[bytes | None, bytes | None]]) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", max_request_size=2_000_000)
    for key, value in records:
        producer.send(settings.readings_topic, key=key, value=value)
    producer.flush()
    producer.close()


def _poison(settings: Settings, minutes: range) -> list[tuple[bytes | None, bytes | None]]:
    """Valid messages of a patient whose rows the database refuses."""
    out: list[tuple[bytes | None, bytes | None]] = []
    for minute in minutes:
        t0 = START_MS + minute * 60_000
        out.append((POISON.encode(), encode_device_message(
            device_id="dev-poison", patient_id=POISON, seq=minute, sent_at=t0 + 60_000,
            readings=[("heart_rate", t0 + 5_000, 80.0), ("respiratory_rate", t0 + 10_000, 16.0)])))
    return out


def _cli(settings: Settings, *argv: str) -> str:
    out = io.StringIO()
    assert run(settings, build_parser().parse_args(["deadletters", *argv]), out) == 0
    return out.getvalue()


def test_hostile_records_are_dead_lettered_and_the_cohort_lands_exactly(isolated: Settings, start_worker) -> None:
    settings = isolated.model_copy(update={"limit_devices_per_partition": 100})
    with psycopg.connect(settings.admin_database_url, autocommit=True) as conn:
        for table in ("features", "risk_scores"):
            conn.execute(f"ALTER TABLE {table} ADD CONSTRAINT poison CHECK (patient_id <> '{POISON}')")
    hostile = _hostile()
    poison = _poison(settings, range(STREAM.minutes))
    sent = STREAM.publish(settings, range(3))
    _publish(settings, poison[:3])
    _publish(settings, hostile)
    sent += STREAM.publish(settings, range(3, STREAM.minutes))
    _publish(settings, poison[3:])
    total = sent + len(hostile) + STREAM.minutes

    worker = start_worker(settings)
    worker.wait_metric("vitals_messages_total", lambda v: v >= total, timeout_s=180)
    worker.wait_metric("vitals_open_windows", lambda v: v == 0, timeout_s=60)
    expected = STREAM.expected_features()
    wait_until(lambda: len(feature_rows(settings)) >= len(expected), timeout_s=60, what="the cohort's rows",
               log=worker.log)
    wait_until(lambda: committed_to_end(settings, settings.readings_topic, settings.app_id), timeout_s=60, what="offsets committed to the end",
               log=worker.log)

    assert_features_equal(feature_rows(settings), expected)
    assert worker.proc.poll() is None, "the worker never stopped"
    assert worker.metric("vitals_devices_forgotten_total") > 0
    # the poison patient's windows that were not late reached the sink, which refused them alone
    assert worker.metric("vitals_deadletters_total", {"reason": "sink_rejected"}) >= 1

    letters = read_all(settings)
    from_readings = {r.source[1:] for r in letters if r.source and r.source[0] == settings.readings_topic}
    assert len(from_readings) >= len(hostile), "every hostile record has its dead letter"
    assert all(r.reason != "unknown" for r in letters)
    reasons = {r.reason for r in letters}
    assert {"too_deep", "number_too_large", "invalid_id", "string_too_long", "impossible_value",
            "future_timestamp", "duplicate_key", "not_json", "empty", "late", "sink_rejected"} <= reasons, reasons
    assert sum(len(r.value) for r in letters if r.source and r.source[0] == settings.readings_topic) <= \
        sum(len(v or b"") for _, v in hostile + poison), "never more bytes out than in"

    # ops: list, summary, replay (once)
    listed = [json.loads(line) for line in _cli(settings, "list", "--json", "--reason", "too_deep").splitlines()]
    assert listed and all(x["reason"] == "too_deep" for x in listed)
    summary = json.loads(_cli(settings, "summary", "--json", "--by", "reason"))
    assert {g["group"] for g in summary["groups"]} >= {"late", "sink_rejected"}
    assert "pt-flood" in _cli(settings, "summary", "--by", "patient")
    before = feature_rows(settings)
    first = _cli(settings, "replay", "--reason", "duplicate_key")
    assert first.startswith("replayed 1,"), first
    assert _cli(settings, "replay", "--reason", "duplicate_key").startswith("replayed 0,")
    worker.wait_metric("vitals_deadletters_total", lambda v: v >= 2, labels={"reason": "duplicate_key"})
    assert feature_rows(settings) == before
    assert worker.proc.poll() is None
