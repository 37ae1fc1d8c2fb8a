"""Rows from events (sinks.rows): pure, no database."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
from hypothesis import given, strategies as st

from kernel.events import MetricStats, OpsEvent, VitalReading, WindowFeatures
from sinks.rows import feature_rows, ops_event_row, reading_rows, score_rows, utc
from sinks.timescale import FEATURES, READINGS, RISK_SCORES
from tests.sinks.conftest import START_MS, make_scores, make_windows


@given(st.integers(-2 ** 40, 2 ** 45))
def test_utc_is_exact_to_the_millisecond(ms: int) -> None:
    when = utc(ms)
    assert when.tzinfo is UTC
    assert (when - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1) == ms


def test_rows_have_their_tables_columns_and_are_grouped_by_patient() -> None:
    windows = make_windows(patients=3, minutes=2)
    features = feature_rows(windows)
    scores = score_rows(make_scores(windows))
    assert {len(r) for r in features} == {len(FEATURES.columns)}
    assert {len(r) for r in scores} == {len(RISK_SCORES.columns)}
    patients = [str(r[0]) for r in features]
    assert patients == sorted(patients), "grouped by patient"
    starts = [r[2] for r in features if r[0] == "pt-0001" and isinstance(r[2], datetime)]
    assert len(starts) == 2 * 3 and starts == sorted(starts), "each patient's windows stay in time order"
    assert scores[0][8] == {"heart_rate": windows[0].metrics["heart_rate"].mean}  # jsonb stays a dict
    assert scores[0][10] == ["body_temperature"]


def test_a_window_without_metrics_has_no_rows_and_times_are_shared() -> None:
    empty = WindowFeatures(patient_id="pt-1", start_ms=START_MS, end_ms=START_MS + 60_000, metrics={})
    full = WindowFeatures(patient_id="pt-2", start_ms=START_MS, end_ms=START_MS + 60_000, metrics={"heart_rate": MetricStats(1, 70.0, 70.0, 70.0),
                                                               "respiratory_rate": MetricStats(1, 15.0, 15.0, 15.0)})
    rows = feature_rows([empty, full])
    assert [r[:2] for r in rows] == [("pt-2", "heart_rate"), ("pt-2", "respiratory_rate")]
    assert rows[0][2] is rows[1][2], "one datetime per window boundary"


def test_readings_are_thinned_per_patient_metric_and_bucket() -> None:
    readings = [VitalReading(patient_id=p, device_id="d", seq=1, metric=m, ts_ms=START_MS + t, value=70.0) for p in ("pt-2", "pt-1")
                for m in ("heart_rate", "oxygen_saturation") for t in (0, 1_000, 10_000)]
    rows = reading_rows(readings, 10_000)
    assert len(rows) == 2 * 2 * 2 and {len(r) for r in rows} == {len(READINGS.columns)}
    assert [r[0] for r in rows] == ["pt-1"] * 4 + ["pt-2"] * 4
    assert len(reading_rows(readings, 0)) == len(readings)


def test_an_ops_event_row_holds_its_details_as_json() -> None:
    event = OpsEvent(kind="fairness", ts_ms=START_MS, subject="risk-logreg:news2",
                     details={"gap": np.float64(0.4), "attribute": "sex"})
    ts_ms, kind, subject, details = ops_event_row(event)
    assert (ts_ms, kind, subject) == (START_MS, "fairness", "risk-logreg:news2")
    assert json.loads(details) == {"gap": 0.4, "attribute": "sex"}
