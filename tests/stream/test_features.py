"""The feature engine (stream/features.py): hopping features against a batch recomputation from raw
readings, and per-patient state within its bound, round-tripping through its bytes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel.events import WindowFeatures
from kernel.settings import Settings
from kernel.wire import encode_device_message
from simulators.cohort import CohortConfig, simulate
from stream.features import (BASELINE_MIN_MINUTES, LONG_WINDOW_MS, SHORT_WINDOW_MS, FeatureEngine,
                             PatientState)
from stream.pipeline import VitalsPipeline
from stream.windows import summarise
from tests.stream.reading_streams import METRICS, MINUTE, START, new_pipeline, stream_of_150_minutes

STATE_BOUND_BYTES = 4096


def test_state_per_active_patient_is_at_most_4_kb_and_round_trips() -> None:
    config = CohortConfig(patients=30, seed=5, duration_ms=3 * 3_600_000)
    pipeline = VitalsPipeline.from_settings(Settings())
    for offset, message in enumerate(m for m in simulate(config) if m.kind == "reading"):
        pipeline.on_message(json.dumps(message.payload).encode(), partition=0, offset=offset,
                            record_ts_ms=message.sent_ms)
    sizes = pipeline.state_bytes()
    assert len(sizes) == 30
    assert max(sizes.values()) <= STATE_BOUND_BYTES, max(sizes.values())
    for state in pipeline.features.patients.values():
        assert PatientState.from_bytes(state.to_bytes()) == state
        assert len(state.panes) <= 13, "an hour of 5-minute panes plus the one filling"


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_hopping_features_equal_a_batch_recomputation(seed: int) -> None:
    events = stream_of_150_minutes(seed)
    pipeline = new_pipeline()
    rows = []
    for offset, (patient, metric, t, value) in enumerate(events):
        raw = encode_device_message(device_id="d", patient_id=patient, seq=offset, sent_at=t,
                                    readings=[(metric, t, value)])
        rows += pipeline.on_message(raw, partition=0, offset=offset, record_ts_ms=t).features
    assert rows, "a 150-minute stream emits hop rows"
    for row in rows:
        for metric in METRICS:
            window = [(t, v) for _, m, t, v in events if m == metric and row.ts_ms - LONG_WINDOW_MS <= t < row.ts_ms]
            if not window:
                assert f"{metric}_mean_60m" not in row.x
                continue
            values = np.array([v for _, v in window])
            assert row.x[f"{metric}_mean_60m"] == pytest.approx(values.mean(), rel=1e-9)
            assert row.x[f"{metric}_std_60m"] == pytest.approx(values.std(), rel=1e-6, abs=1e-6)
            assert (row.x[f"{metric}_min_60m"], row.x[f"{metric}_max_60m"]) == (values.min(), values.max())
            assert row.x[f"{metric}_last"] == max(window)[1]
            short = [v for t, v in window if t >= row.ts_ms - SHORT_WINDOW_MS]
            if short:
                assert row.x[f"{metric}_mean_15m"] == pytest.approx(np.mean(short), rel=1e-9)
            panes: dict[int, list[float]] = {}
            for t, v in window:
                panes.setdefault(t - t % (5 * MINUTE), []).append(v)
            if len(panes) > 1:
                starts = np.array(sorted(panes), dtype=float) / 3_600_000
                means = np.array([np.mean(panes[s]) for s in sorted(panes)])
                expected_slope = np.polyfit(starts, means, 1)[0]
                assert row.x[f"{metric}_slope_60m"] == pytest.approx(expected_slope, rel=1e-6, abs=1e-6)


def _minute(patient: str, minute: int, values: dict[str, list[float]]) -> WindowFeatures:
    start = START + minute * MINUTE
    return WindowFeatures(patient_id=patient, start_ms=start, end_ms=start + MINUTE, metrics={
        metric: summarise([(start + 1_000 * i, v) for i, v in enumerate(points)])
        for metric, points in sorted(values.items())})


minutes_of_readings = st.dictionaries(
    st.integers(0, 240), st.dictionaries(st.sampled_from(sorted(METRICS)),
                                         st.lists(st.floats(40.0, 100.0).map(lambda v: round(v, 1)),
                                                  min_size=1, max_size=4), min_size=1),
    min_size=2, max_size=60)


@settings(max_examples=100, deadline=None)
@given(minutes=minutes_of_readings, data=st.data())
def test_a_state_restored_from_its_bytes_computes_what_the_original_would(
        minutes: dict[int, dict[str, list[float]]], data: st.DataObject) -> None:
    windows = [_minute("pt-1", m, minutes[m]) for m in sorted(minutes)]
    cut = data.draw(st.integers(1, len(windows) - 1), label="saved after window")
    original = FeatureEngine()
    for window in windows[:cut]:
        original.on_window(window, partition=3)
    saved = original.patients["pt-1"].to_bytes()
    restored = FeatureEngine()
    restored.patients["pt-1"] = PatientState.from_bytes(saved)
    assert restored.patients["pt-1"] == original.patients["pt-1"]
    for window in windows[cut:]:
        a, b = original.on_window(window, partition=3), restored.on_window(window, partition=3)
        assert (a.rows, a.z, a.baseline) == (b.rows, b.z, b.baseline)
    assert restored.patients["pt-1"] == original.patients["pt-1"]


def test_z_scores_wait_for_a_warm_baseline_and_a_silent_metric_has_zero_completeness() -> None:
    engine = FeatureEngine()
    rows = []
    for minute in range(BASELINE_MIN_MINUTES + 10):
        out = engine.on_window(_minute("pt-1", minute, {"heart_rate": [70.0, 72.0]}), partition=0)
        assert bool(out.z) == (minute >= BASELINE_MIN_MINUTES), minute
        rows += out.rows
    assert "heart_rate_z_60m" not in rows[0].x and "heart_rate_z_60m" in rows[-1].x
    assert rows[-1].x["heart_rate_z_60m"] == pytest.approx(0.0, abs=1e-9), "a flat signal sits on its baseline"
    assert rows[-1].x["oxygen_saturation_completeness_60m"] == 0.0
    assert "oxygen_saturation_mean_60m" not in rows[-1].x
    assert rows[-1].x["heart_rate_completeness_60m"] == pytest.approx(2 / 12)


def test_a_silent_patient_is_reported_stopped_once_per_silence_and_forgotten_after_idle() -> None:
    engine = FeatureEngine()
    engine.on_window(_minute("pt-1", 0, {"heart_rate": [70.0]}), partition=0)
    engine.on_window(_minute("pt-2", 0, {"heart_rate": [70.0]}), partition=1)
    last = START + MINUTE
    assert engine.stopped(0, last + 29 * MINUTE, after_ms=30 * MINUTE) == []
    assert engine.stopped(0, last + 30 * MINUTE, after_ms=30 * MINUTE) == [("pt-1", last)]
    assert engine.stopped(0, last + 40 * MINUTE, after_ms=30 * MINUTE) == [], "once per silence"
    engine.on_window(_minute("pt-1", 45, {"heart_rate": [70.0]}), partition=0)
    back = START + 46 * MINUTE
    assert engine.stopped(0, back + 30 * MINUTE, after_ms=30 * MINUTE) == [("pt-1", back)], "a new silence"
    assert engine.expire(0, back + 60 * MINUTE, idle_ms=60 * MINUTE) == ["pt-1"]
    assert list(engine.patients) == ["pt-2"], "another partition's patient stays"


def test_the_last_known_value_of_each_vital_is_its_latest_window_mean() -> None:
    engine = FeatureEngine()
    engine.on_window(_minute("pt-1", 0, {"heart_rate": [70.0, 72.0], "respiratory_rate": [16.0]}), partition=0)
    engine.on_window(_minute("pt-1", 3, {"heart_rate": [90.0]}), partition=0)
    assert engine.patients["pt-1"].last_known == {"heart_rate": (START + 4 * MINUTE, 90.0),
                                                  "respiratory_rate": (START + MINUTE, 16.0)}


@pytest.mark.parametrize("half_life_ms", [0, -1])
def test_a_baseline_half_life_must_be_positive(half_life_ms: int) -> None:
    with pytest.raises(ValueError, match="baseline_half_life_ms"):
        FeatureEngine(baseline_half_life_ms=half_life_ms)
