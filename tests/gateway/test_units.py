"""UCUM codes and conversions, and the times of uploaded readings."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.times import epoch_ms, parse_rfc3339
from gateway.units import accepted_codes, canonical, to_wire
from kernel.vocabulary import LOINC, METRICS, PANELS
from tests.gateway.resources import iso, offsets, times


def test_every_metric_has_a_ucum_code_and_is_found_by_each_loinc_code() -> None:
    assert {m.name: m.ucum for m in METRICS.values()} == {
        "heart_rate": "/min", "oxygen_saturation": "%", "respiratory_rate": "/min", "body_temperature": "Cel",
        "systolic_blood_pressure": "mm[Hg]", "diastolic_blood_pressure": "mm[Hg]", "step_count": "{steps}"}
    for metric in METRICS.values():
        assert all(LOINC[code] is metric for code in (metric.loinc, *metric.also_loinc))
    assert set(LOINC).isdisjoint(PANELS)


@pytest.mark.parametrize(("metric", "code"), [
    ("systolic_blood_pressure", "kPa"), ("systolic_blood_pressure", "cm[H2O]"), ("heart_rate", "mm[Hg]"),
    ("heart_rate", "/s"), ("heart_rate", "Hz"), ("oxygen_saturation", "1"), ("body_temperature", "[degC]"),
    ("body_temperature", "cel"), ("body_temperature", "degF"), ("step_count", "/min"), ("step_count", "/d")])
def test_units_refused(metric: str, code: str) -> None:
    assert to_wire(METRICS[metric], code, 1.0) is None


def test_canonical_drops_annotations_only() -> None:
    assert canonical("{beats}/min") == canonical("/min") == canonical("1/min") == "/min"
    assert canonical("{steps}") == canonical("1") == "1"
    assert canonical("10*3{steps}") == "10*3"
    assert accepted_codes(METRICS["heart_rate"]) == ("/min",)


@given(st.floats(25.0, 45.0))
def test_temperature_conversions_round_trip(celsius: float) -> None:
    metric = METRICS["body_temperature"]
    assert to_wire(metric, "[degF]", celsius * 9 / 5 + 32) == pytest.approx(celsius, abs=1e-6)
    assert to_wire(metric, "K", celsius + 273.15) == pytest.approx(celsius, abs=1e-6)


@given(times, offsets)
def test_times_round_trip_in_any_offset(t: int, offset: int) -> None:
    moment = parse_rfc3339(iso(t, offset))
    assert moment is not None and epoch_ms(moment) == t


@pytest.mark.parametrize("text", ["2026-01-05", "2026-01-05T10:00", "2026-01-05T10:00:00", "2026-01-05 10:00:00Z",
                                  "2026-13-05T10:00:00Z", "2026-01-05T10:00:60Z", "2026-01-05T10:00:00+24:00",
                                  "２０２６-01-05T10:00:00Z", "", None, 1767571200000])
def test_times_refused(text: object) -> None:
    assert parse_rfc3339(text) is None


def test_times_before_1970_and_naive_ones_have_no_epoch_ms() -> None:
    assert epoch_ms(datetime(1969, 12, 31, 23, 59, tzinfo=UTC)) is None
    assert epoch_ms(datetime(1970, 1, 1, tzinfo=UTC)) is None  # t must be positive
    assert epoch_ms(datetime(2026, 1, 5)) is None
