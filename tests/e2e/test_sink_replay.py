"""A replayed stream (a new consumer group reading the topic from the start) changes no row."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest

from sinks.timescale import refresh_rollups
from kernel.settings import Settings
from tests.conftest import WorkerProcess
from tests.e2e.streams import Stream, assert_features_equal, count, feature_rows, score_keys, wait_until

pytestmark = pytest.mark.integration


def _rollups(settings: Settings) -> list[tuple[object, ...]]:
    with psycopg.connect(settings.database_url) as conn:
        refresh_rollups(conn)
        return [*conn.execute("SELECT * FROM vitals_5m ORDER BY bucket, patient_id, metric").fetchall(),
                *conn.execute("SELECT * FROM risk_1h ORDER BY bucket, patient_id, model_name").fetchall()]


def test_replaying_the_stream_leaves_every_table_unchanged(isolated: Settings, start_worker: Callable[[Settings], WorkerProcess]) -> None:
    stream = Stream(patients=5, minutes=6)
    sent = stream.publish(isolated, range(stream.minutes))
    worker = start_worker(isolated)
    worker.wait_metric("vitals_messages_total", lambda v: v >= sent)
    wait_until(lambda: count(isolated, "risk_scores") >= stream.windows, timeout_s=60, what="every score")
    assert worker.stop() == 0
    features, scores, rollups = feature_rows(isolated), score_keys(isolated), _rollups(isolated)
    assert_features_equal(features, stream.expected_features())
    assert len(scores) == stream.windows
    assert rollups, "the rollups hold the stream"

    replay = isolated.model_copy(update={"app_id": isolated.app_id + "-replay"})
    worker = start_worker(replay)
    worker.wait_metric("vitals_messages_total", lambda v: v >= sent)
    worker.wait_metric("vitals_windows_emitted_total", lambda v: v >= stream.windows)
    worker.wait_metric("vitals_open_windows", lambda v: v == 0)
    worker.wait_metric("vitals_sink_flush_seconds_count", lambda v: v >= 1)
    assert worker.stop() == 0
    assert feature_rows(isolated) == features
    assert score_keys(isolated) == scores
    assert _rollups(isolated) == rollups
