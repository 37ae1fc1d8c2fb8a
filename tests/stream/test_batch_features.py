"""The feature engine across patients: FeatureEngine's rows, as matrices, from the same windows."""

from __future__ import annotations

import numpy as np
import pytest

from stream.batch_features import BatchFeatureEngine, MetricBatch, feature_columns, row_dict, summarise_columns
from kernel.events import WindowFeatures
from stream.features import FeatureEngine
from stream.windows import summarise

MINUTE = 60_000
START = 1_767_571_200_000 + 2 * MINUTE  # not on a hop boundary: the first pane is partial


def test_summarise_columns_equals_summarise_per_column() -> None:
    rng = np.random.default_rng(0)
    k, m = 12, 40
    t = START + np.cumsum(rng.integers(1, 9_000, (k, m)), axis=0)
    v = np.round(rng.normal(80, 10, (k, m)))
    batch = summarise_columns(t, v)
    for j in range(m):
        assert batch.stats(j) == summarise(list(zip(t[:, j].tolist(), v[:, j].tolist())))


def test_batch_engine_rows_match_feature_engine() -> None:
    """Random minutes over 5 hours, metrics present at random (heart rate always), 9 patients."""
    rng = np.random.default_rng(1)
    patients = 9
    metrics = {"heart_rate": (75, 8), "oxygen_saturation": (95, 2), "body_temperature": (36.8, 0.3),
               "systolic_blood_pressure": (130, 12), "step_count": (20, 15)}
    presence = {"heart_rate": 1.0, "oxygen_saturation": 0.9, "body_temperature": 0.2,
                "systolic_blood_pressure": 0.01, "step_count": 0.7}
    engine, batch = FeatureEngine(baseline_half_life_ms=6 * 3_600_000), BatchFeatureEngine(
        patients, baseline_half_life_ms=6 * 3_600_000)
    expected, got = {}, {}
    columns = feature_columns()
    for minute in range(300):
        start = START + minute * MINUTE
        batches: dict[str, MetricBatch] = {}
        per_patient: list[dict] = [{} for _ in range(patients)]
        for name, (mu, sd) in metrics.items():
            rows = np.flatnonzero(rng.random(patients) < presence[name])
            if not rows.size:
                continue
            k = 12 if name == "heart_rate" else 1
            t = start + np.sort(rng.choice(MINUTE, (k, rows.size), replace=False), axis=0) if k > 1 \
                else np.full((1, rows.size), start)
            v = np.round(rng.normal(mu, sd, (k, rows.size)), 1)
            b = summarise_columns(t, v, rows=None if rows.size == patients else rows)
            batches[name] = b
            for j, r in enumerate(rows.tolist()):
                per_patient[r][name] = b.stats(j)
        for p, stats in enumerate(per_patient):
            w = WindowFeatures(patient_id=f"pt-{p}", start_ms=start, end_ms=start + MINUTE, metrics=dict(sorted(stats.items())))
            for row in engine.on_window(w, partition=0).rows:
                expected[(row.patient_id, row.ts_ms)] = row.x
        for ts, x in batch.add_minute(start, batches):
            for p in range(patients):
                got[(f"pt-{p}", ts)] = row_dict(columns, x[p])
    assert got.keys() == expected.keys() and len(got) == patients * 60
    for key, x in expected.items():
        assert got[key].keys() == x.keys(), key
        names = sorted(x)
        assert np.allclose([got[key][n] for n in names], [x[n] for n in names], rtol=1e-9, atol=1e-8), key


def test_minutes_must_follow_each_other_and_cover_everybody() -> None:
    engine = BatchFeatureEngine(2)
    hr = summarise_columns([[START, START]], [[70.0, 71.0]])
    engine.add_minute(START, {"heart_rate": hr})
    with pytest.raises(ValueError, match="follow"):
        engine.add_minute(START + 2 * MINUTE, {"heart_rate": hr})
    with pytest.raises(ValueError, match="every patient"):
        engine.add_minute(START + MINUTE, {"heart_rate": MetricBatch.single(np.array([0]), np.array([70.0]))})
