"""Tests for stream/scoring.py: a window's NEWS2 from the patient's last known vitals, carried forward."""

from __future__ import annotations

import pytest

from kernel.events import WindowFeatures
from stream.scoring import news2_for_window

H = 3_600_000
WINDOW = WindowFeatures(patient_id="pt-1", start_ms=11 * H, end_ms=12 * H, metrics={})
CONTINUOUS = {"heart_rate": (12 * H, 96.0), "respiratory_rate": (12 * H, 22.0), "oxygen_saturation": (12 * H, 95.0)}


@pytest.mark.parametrize(("seen_ms", "carried"), [(10 * H, True), (10 * H - 1, False), (12 * H, True)])
def test_a_vital_stands_in_while_no_older_than_carry_ms(seen_ms: int, carried: bool) -> None:
    known = {**CONTINUOUS, "systolic_blood_pressure": (seen_ms, 85.0)}
    score = news2_for_window(WINDOW, known, carry_ms=2 * H)
    assert score is not None
    assert ("systolic_blood_pressure" in score.inputs) is carried
    assert ("systolic_blood_pressure" in score.missing_inputs) is not carried
    assert score.news2_subscores["systolic_bp"] == (3 if carried else 0)


def test_a_stale_continuous_vital_leaves_the_window_unscored() -> None:
    known = {**CONTINUOUS, "heart_rate": (10 * H - 1, 96.0)}
    assert news2_for_window(WINDOW, known, carry_ms=2 * H) is None
    assert news2_for_window(WINDOW, known, carry_ms=2 * H + 1) is not None
