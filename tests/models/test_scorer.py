"""Tests for models/scorer.py: NEWS2 beside the model, row by row and as a matrix, carrying blood pressure."""

from __future__ import annotations

import numpy as np

from models.scorer import News2MatrixScorer, News2RowScorer

H = 3_600_000


def test_the_matrix_scorer_equals_the_row_scorer() -> None:
    """Same inputs (first present feature), chart and blood-pressure carry, hop after hop."""
    rng = np.random.default_rng(3)
    columns = ("respiratory_rate_mean_15m", "respiratory_rate_mean_60m", "oxygen_saturation_mean_15m",
               "heart_rate_mean_60m", "body_temperature_mean_15m", "systolic_blood_pressure_last")
    centre = np.array([18, 18, 94, 90, 37.5, 110])
    spread = np.array([6, 6, 4, 25, 1.5, 25])
    batch, rows = News2MatrixScorer(5, carry_ms=2 * H), np.arange(5)
    scorer = News2RowScorer(carry_ms=2 * H)
    for hop in range(60):
        X = np.round(centre + spread * rng.standard_normal((5, len(columns))), 2)
        X[rng.random(X.shape) < 0.3] = np.nan
        total, red = batch.score(rows, hop * 300_000, X, columns)
        for i in range(5):
            x = {c: float(v) for c, v in zip(columns, X[i], strict=True) if v == v}
            expected = scorer.score(f"pt-{i}", hop * 300_000, x)
            assert (total[i], red[i]) == (expected.total, max(expected.subscores.values()))


def test_blood_pressure_is_carried_for_carry_ms_and_no_longer() -> None:
    bp_only = {"systolic_blood_pressure_last": 85.0}  # 3 points
    row = News2RowScorer(carry_ms=H)
    matrix = News2MatrixScorer(1, carry_ms=H)
    columns = ("systolic_blood_pressure_last",)
    for ts, expected in ((0, 3), (H, 3), (H + 1, 0)):
        x = bp_only if ts == 0 else {}
        assert row.score("pt-1", ts, x).subscores["systolic_bp"] == expected
        X = np.array([[bp_only["systolic_blood_pressure_last"] if ts == 0 else np.nan]])
        assert matrix.score(np.array([0]), ts, X, columns)[0].tolist() == [expected]


def test_the_row_scorer_carries_per_patient() -> None:
    row = News2RowScorer(carry_ms=H)
    row.score("pt-1", 0, {"systolic_blood_pressure_last": 85.0})
    assert "systolic_bp" in row.inputs("pt-1", 60_000, {})
    assert "systolic_bp" not in row.inputs("pt-2", 60_000, {})
