"""The events between stages (kernel/events.py): frozen and slotted, ``OpsEvent`` keyword-only, a dead
letter's counts, and the hop that divides the hour of features."""

from __future__ import annotations

import dataclasses

import pytest

from kernel.events import (HOP_MS, DeadLetter, FeatureRow, MetricStats, OpsEvent, RiskScore, VitalReading,
                           WindowFeatures)

EVENTS = [
    VitalReading(patient_id="pt-1", device_id="dev-1", seq=7, metric="heart_rate", ts_ms=1_000, value=72.0),
    MetricStats(1, 72.0, 72.0, 72.0),
    WindowFeatures(patient_id="pt-1", start_ms=0, end_ms=60_000, metrics={}),
    RiskScore(patient_id="pt-1", window_start_ms=0, window_end_ms=60_000, model_name="news2", model_version="rcp-2017-scale1", score=0.1, news2_total=2, news2_band="low", inputs={}, contributions={}),
    OpsEvent(kind="drift", ts_ms=0, subject="risk-logreg"),
    DeadLetter(reason="not_json", detail="bad", payload=b"{"),
    FeatureRow(patient_id="pt-1", ts_ms=300_000, x={}),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_events_are_frozen_and_hold_no_other_attribute(event: object) -> None:
    name = dataclasses.fields(event)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(event, name, None)
    assert not hasattr(event, "__dict__"), "slotted: no attribute can be added by mistake"


def test_an_ops_event_is_built_by_keyword_only() -> None:
    with pytest.raises(TypeError):
        OpsEvent("drift", 0, "risk-logreg")
    assert OpsEvent(kind="fairness", ts_ms=5, subject="m").details == {}


def test_a_dead_letter_counts_its_refused_readings_or_itself_once() -> None:
    assert DeadLetter(reason="not_json", detail="bad", payload=b"{").counts == {"not_json": 1}
    letter = DeadLetter(reason="late", detail="t=1", payload=b"{}", reasons={"late": 2, "wrong_unit": 1}, accepted=4, device_id="d")
    assert letter.counts == {"late": 2, "wrong_unit": 1} and letter.patient_id is None


def test_stats_of_an_empty_slot_have_no_last_value_and_the_hop_divides_an_hour() -> None:
    stats = MetricStats(0, 0.0, 0.0, 0.0)
    assert stats.last != stats.last and (stats.std, stats.slope_per_min, stats.rmssd) == (0.0, 0.0, 0.0)
    assert 3_600_000 % HOP_MS == 0 and HOP_MS % 60_000 == 0
