"""TimescaleWriter on the real PostgreSQL: idempotence, fallbacks, outages, rollups; ops events."""

from __future__ import annotations

import asyncio
import logging
import socket
from datetime import timedelta

import numpy as np
import psycopg
import pytest
from prometheus_client import CollectorRegistry

from kernel.events import OpsEvent, RiskScore, VitalReading
from sinks.errors import SinkRejected, SinkUnavailable
from sinks.metrics import PipelineMetrics
from sinks.rows import utc
from sinks.timescale import TimescaleWriter, refresh_rollups, write_ops_events
from tests.sinks.conftest import START_MS, Database, make_scores, make_windows

pytestmark = pytest.mark.integration


def _counts(db: Database) -> tuple[int, int]:
    with psycopg.connect(db.owner_url) as conn:
        row = conn.execute("SELECT (SELECT count(*) FROM features), (SELECT count(*) FROM risk_scores)").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _writer(db: Database, *, write_timeout_s: float = 60.0, metrics: PipelineMetrics | None = None,
            readings_every_ms: int | None = None, rollup_refresh_s: float | None = None) -> TimescaleWriter:
    return TimescaleWriter(db.writer_url, first_backoff_s=0.05, max_backoff_s=0.5, write_timeout_s=write_timeout_s,
                           metrics=metrics, readings_every_ms=readings_every_ms, rollup_refresh_s=rollup_refresh_s)


def test_rows_land_exactly_and_a_replay_adds_nothing(db: Database, caplog: pytest.LogCaptureFixture) -> None:
    windows = make_windows(patients=4, minutes=5)
    scores = make_scores(windows)

    async def run() -> tuple[int, int, int, int]:
        async with _writer(db) as writer:
            first = await writer.write_many(windows, scores)
            replay = await writer.write_many(windows, scores)
            # a batch with old and new rows (a replay that runs into new data) keeps only the new
            more = make_windows(patients=4, minutes=2, first_minute=5)
            mixed = await writer.write_many(windows[-4:] + more, make_scores(windows[-4:] + more))
            # and once a batch meets no old rows, the writer is back on the direct-COPY path
            fresh = make_windows(patients=4, minutes=1, first_minute=7)
            new = await writer.write_many(fresh, make_scores(fresh))
            assert not writer._conflicting
            return first, replay, mixed, new

    with caplog.at_level(logging.INFO, logger="sinks.timescale"):
        first, replay, mixed, new = asyncio.run(run())
    assert first == len(windows) * 3 + len(scores)
    assert replay == 0
    assert mixed == 8 * 3 + 8
    assert new == 4 * 3 + 4
    assert _counts(db) == (8 * 4 * 3, 8 * 4)
    assert "a replay" in caplog.text

    with psycopg.connect(db.reader_url) as conn:
        row = conn.execute("SELECT window_start, window_end, n, mean, min, max FROM features "
                           "WHERE patient_id = 'pt-0001' AND metric = 'heart_rate' ORDER BY window_start "
                           "LIMIT 1").fetchone()
        score = conn.execute("SELECT inputs, contributions, missing_inputs, news2_band, model_version "
                             "FROM risk_scores ORDER BY patient_id, window_start LIMIT 1").fetchone()
    assert row == (utc(START_MS), utc(START_MS + 60_000), 12, 61.0, 59.0, 64.0)
    assert score == ({"heart_rate": 60.0}, {"heart_rate": 0.0}, ["body_temperature"], "low", "rcp-2017")


def test_readings_are_thinned_and_optional(db: Database) -> None:
    readings = [VitalReading(patient_id="pt-1", device_id="dev-1", seq=1, metric="heart_rate", ts_ms=START_MS + k * 1_000, value=70.0 + k) for k in range(30)]
    readings += [VitalReading(patient_id="pt-1", device_id="dev-1", seq=1, metric="oxygen_saturation", ts_ms=START_MS + 500, value=97.0)]
    windows = make_windows(1, 1)

    async def run() -> tuple[int, int, int]:
        async with _writer(db) as off:
            none = await off.write_many(windows, [], readings=readings)
        async with _writer(db, readings_every_ms=10_000) as thin:
            thinned = await thin.write_many([], [], readings=readings)
            again = await thin.write_many([], [], readings=readings)
        return none, thinned, again

    none, thinned, again = asyncio.run(run())
    assert none == 3, "without readings_every_ms, readings are not stored"
    assert (thinned, again) == (4, 0)
    with psycopg.connect(db.reader_url) as conn:
        rows = conn.execute("SELECT metric, ts, value FROM readings ORDER BY metric, ts").fetchall()
    assert rows == [("heart_rate", utc(START_MS), 70.0), ("heart_rate", utc(START_MS + 10_000), 80.0),
                    ("heart_rate", utc(START_MS + 20_000), 90.0), ("oxygen_saturation", utc(START_MS + 500), 97.0)]


def test_a_refused_batch_raises_at_once_and_writes_nothing(db: Database) -> None:
    windows = make_windows(2, 1)
    bad = [RiskScore(patient_id="pt-0000", window_start_ms=START_MS, window_end_ms=START_MS + 60_000, model_name="news2", model_version="1", score=0.5, news2_total=3, news2_band="purple", inputs={}, contributions={})]

    async def run() -> int:
        async with _writer(db) as writer:
            with pytest.raises(SinkRejected, match="CheckViolation"):
                await writer.write_many(windows, bad)
            return await writer.write_many(windows, [])  # the connection is still usable

    assert asyncio.run(run()) == 6
    assert _counts(db) == (6, 0), "the refused batch was rolled back whole"


def test_writes_wait_out_an_outage_and_report_it(db: Database) -> None:
    metrics = PipelineMetrics(CollectorRegistry())
    windows = make_windows(3, 2)

    async def run() -> int:
        async with _writer(db, metrics=metrics) as writer:
            await writer.write_many(windows[:3], [])
            assert metrics.sink_up._value.get() == 1
            db.block()
            task = asyncio.create_task(writer.write_many(windows, make_scores(windows)))
            for _ in range(200):
                await asyncio.sleep(0.05)
                if metrics.sink_errors._value.get() >= 2:
                    break
            assert not task.done(), "the write waits for the database"
            assert metrics.sink_up._value.get() == 0
            db.unblock()
            return await asyncio.wait_for(task, 30)

    assert asyncio.run(run()) == 3 * 3 + len(windows)
    assert metrics.sink_up._value.get() == 1
    assert _counts(db) == (len(windows) * 3, len(windows))


def test_retry_for_s_bounds_the_wait(db: Database) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    writer = TimescaleWriter(f"postgresql://vitalrisk_writer@127.0.0.1:{port}/x", retry_for_s=0.5,
                             first_backoff_s=0.05, rollup_refresh_s=None)

    async def run() -> None:
        try:
            await writer.write_many(make_windows(1, 1), [])
        finally:
            await writer.close()

    with pytest.raises(SinkUnavailable, match="unreachable for 0 s|unreachable for 1 s"):
        asyncio.run(run())


def test_a_write_stuck_past_its_timeout_is_retried(db: Database) -> None:
    windows = make_windows(2, 1)
    metrics = PipelineMetrics(CollectorRegistry())

    async def run() -> int:
        async with _writer(db, write_timeout_s=0.5, metrics=metrics) as writer:
            with psycopg.connect(db.owner_url) as locker:
                locker.execute("LOCK TABLE features IN ACCESS EXCLUSIVE MODE")
                task = asyncio.create_task(writer.write_many(windows, []))
                await asyncio.sleep(1.5)
                assert not task.done()
                locker.rollback()  # release the lock
            return await asyncio.wait_for(task, 30)

    assert asyncio.run(run()) == 6
    assert metrics.sink_errors._value.get() >= 1


def test_rollups_equal_date_bin_queries_and_the_writer_refreshes_them(db: Database) -> None:
    windows = make_windows(patients=3, minutes=70)  # crosses hour and 5-minute boundaries
    scores = make_scores(windows)

    async def run() -> None:
        async with _writer(db, rollup_refresh_s=0.2) as writer:
            await writer.write_many(windows[:30], scores[:30])
            await asyncio.sleep(0.3)
            await writer.write_many(windows[30:], scores[30:])  # due: refresh in the background
            await asyncio.sleep(0.3)
            await writer.write_many(windows[:3], [])  # the background refresh ran (or runs) meanwhile
            assert writer._refresh_task is not None
            await writer._refresh_task

    asyncio.run(run())
    with psycopg.connect(db.reader_url) as conn:
        in_view = conn.execute("SELECT count(*) FROM vitals_5m").fetchone()
        assert in_view is not None and in_view[0] > 0, "the writer refreshed the views"
    with psycopg.connect(db.writer_url) as conn:
        refresh_rollups(conn)
    with psycopg.connect(db.reader_url) as conn:
        for view, width in (("vitals_5m", "5 minutes"), ("vitals_1h", "1 hour")):
            got = conn.execute(f"SELECT bucket, patient_id, metric, n, mean, min, max FROM {view} "  # noqa: S608 - view names from a literal tuple
                               "ORDER BY 1, 2, 3").fetchall()
            want = conn.execute(
                "SELECT date_bin(%s::interval, window_start, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS b, "
                "patient_id, metric, sum(n), sum(mean * n) / sum(n), min(min), max(max) FROM features "
                "GROUP BY 1, 2, 3 ORDER BY 1, 2, 3", (width,)).fetchall()
            assert [r[:4] + (pytest.approx(r[4]),) + r[5:] for r in got] == want, view
        buckets = conn.execute("SELECT DISTINCT bucket FROM vitals_5m ORDER BY 1").fetchall()
        assert all(b[0].minute % 5 == 0 and b[0].second == 0 for b in buckets)
        assert len(conn.execute("SELECT DISTINCT bucket FROM vitals_1h").fetchall()) == 2
        for view, width in (("risk_5m", "5 minutes"), ("risk_1h", "1 hour")):
            got = conn.execute(f"SELECT bucket, patient_id, model_name, windows, score_max, news2_max "  # noqa: S608 - view names from a literal tuple
                               f"FROM {view} ORDER BY 1, 2, 3").fetchall()
            want = conn.execute(
                "SELECT date_bin(%s::interval, window_start, TIMESTAMPTZ '2000-01-01 00:00:00+00'), patient_id, "
                "model_name, count(*), max(score), max(news2_total) FROM risk_scores GROUP BY 1, 2, 3 "
                "ORDER BY 1, 2, 3", (width,)).fetchall()
            assert got == want, view
        first = conn.execute("SELECT min(bucket) FROM risk_1h").fetchone()
        assert first is not None and first[0] == utc(START_MS)
        assert first[0] + timedelta(hours=1) == utc(START_MS + 3_600_000)


def test_ops_events_are_recorded_once(db: Database) -> None:
    events = [OpsEvent(ts_ms=START_MS, kind="drift", subject="river-logreg",
                       details={"detector": "adwin", "loss": 0.31}),
              OpsEvent(ts_ms=START_MS, kind="data_stopped", subject="pt-0001", details={"silent_s": 900}),
              OpsEvent(ts_ms=START_MS + 1, kind="fairness", subject="river-logreg",
                       details={"attribute": "sex", "gap": np.float64(0.12)})]  # numpy's floats, as fairness gives

    with psycopg.connect(db.writer_url, autocommit=True) as conn:  # as the trainer's connection is
        assert write_ops_events(conn, events) == 3
        assert write_ops_events(conn, events + events) == 0
        assert write_ops_events(conn, []) == 0
    with psycopg.connect(db.reader_url) as conn:
        rows = conn.execute("SELECT kind, subject, details FROM ops_events ORDER BY ts, kind").fetchall()
    assert rows == [("data_stopped", "pt-0001", {"silent_s": 900}),
                    ("drift", "river-logreg", {"detector": "adwin", "loss": 0.31}),
                    ("fairness", "river-logreg", {"attribute": "sex", "gap": 0.12})]


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="write_timeout_s must be > 0"):
        TimescaleWriter("postgresql://x", write_timeout_s=0)
    with pytest.raises(ValueError, match="readings_every_ms must be >= 0"):
        TimescaleWriter("postgresql://x", readings_every_ms=-5)
