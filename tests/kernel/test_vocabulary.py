"""The registry of metrics (kernel/vocabulary.py): read-only, one entry per wire name, bounds that
accept exactly the possible values, and the registry the wire format validates against."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernel.vocabulary import METRICS
from kernel.wire import decode_device_message, encode_device_message

#: The wire's metric names and units (Open mHealth / IEEE 1752).
WIRE = {"heart_rate": "beats/min", "oxygen_saturation": "%", "respiratory_rate": "breaths/min",
        "body_temperature": "C", "systolic_blood_pressure": "mmHg", "diastolic_blood_pressure": "mmHg",
        "step_count": "steps"}


def test_the_registry_holds_the_wire_names_and_units_under_their_own_names() -> None:
    assert {name: m.unit for name, m in METRICS.items()} == WIRE
    assert all(m.name == name for name, m in METRICS.items())


def test_every_metric_has_a_loinc_code_of_its_own_and_a_non_empty_range() -> None:
    codes = [m.loinc for m in METRICS.values()]
    assert len(set(codes)) == len(codes)
    assert all(re.fullmatch(r"\d{1,7}-\d", code) for code in codes)
    assert all(m.lowest < m.highest for m in METRICS.values())


def test_the_registry_is_read_only() -> None:
    with pytest.raises(TypeError):
        METRICS["made_up"] = METRICS["heart_rate"]
    with pytest.raises(AttributeError):
        METRICS["heart_rate"].highest = 400.0


@given(name=st.sampled_from(sorted(METRICS)), value=st.floats(allow_nan=True, allow_infinity=True))
def test_a_metric_accepts_exactly_the_values_within_its_inclusive_bounds(name: str, value: float) -> None:
    metric = METRICS[name]
    assert metric.accepts(value) == (metric.lowest <= value <= metric.highest)
    assert metric.accepts(metric.lowest) and metric.accepts(metric.highest)
    assert not metric.accepts(float("nan"))


def test_the_bounds_are_what_no_body_can_show_not_alarm_limits() -> None:
    heart_rate, spo2, steps = METRICS["heart_rate"], METRICS["oxygen_saturation"], METRICS["step_count"]
    assert heart_rate.accepts(250.0) and not heart_rate.accepts(400.0), "alarming is possible; a broken sensor is not"
    assert spo2.accepts(100.0) and not spo2.accepts(100.5)
    assert steps.accepts(0.0) and not steps.accepts(-1.0)


@pytest.mark.parametrize("name", sorted(METRICS))
def test_the_wire_refuses_a_value_just_outside_the_bounds_and_any_other_unit(name: str) -> None:
    metric = METRICS[name]
    raw = encode_device_message(device_id="d", patient_id="p", seq=1, sent_at=1, readings=[
        (name, 1, metric.lowest), (name, 1, metric.highest), (name, 1, metric.highest + 0.001),
        (name, 1, metric.lowest - 0.001)])
    batch = decode_device_message(raw)
    assert [r.reason for r in batch.rejected] == ["impossible_value", "impossible_value"]
    assert len(batch.points) == 2
    other = next(u for u in WIRE.values() if u != metric.unit)
    body = raw.replace(f'"unit":"{metric.unit}"'.encode(), f'"unit":"{other}"'.encode())
    assert {r.reason for r in decode_device_message(body).rejected} == {"wrong_unit"}
