"""Open mHealth (IEEE 1752) uploads: the schemas' own examples, refusals naming their element, and properties."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gateway.omh import SCHEMAS, parse_omh
from gateway.outcome import UploadRefused
from gateway.uploads import parse_upload
from kernel.limits import Limits
from tests.gateway.resources import (DELETE, START, dumps, iso, mutated, offsets, omh_blood_pressure, omh_point,
                                     omh_reading, single_readings, times, values)

LIMITS = Limits()
T = START + 9 * 3_600_000


def _heart_rate_example() -> dict[str, Any]:
    """Shaped like Open mHealth's heart-rate example: provenance, user id, statistic, notes."""
    return {
        "header": {
            "id": "123e4567-e89b-12d3-a456-426655440000", "creation_date_time": "2013-02-05T07:25:00Z",
            "schema_id": {"namespace": "omh", "name": "heart-rate", "version": "2.0"},
            "acquisition_provenance": {"source_name": "RunKeeper", "source_creation_date_time": "2013-02-05T07:25:00Z",
                                       "modality": "sensed"},
            "user_id": "user1432",
        },
        "body": {"heart_rate": {"value": 50, "unit": "beats/min"},
                 "effective_time_frame": {"date_time": "2013-02-05T07:25:00Z"},
                 "descriptive_statistic": "average", "temporal_relationship_to_physical_activity": "at rest",
                 "user_notes": "I felt quite dizzy"},
    }


def _parse(document: object) -> list[tuple[str, tuple[str, int, float]]]:
    upload = parse_upload(dumps(document), content_type="application/json", limits=LIMITS)
    assert upload.format == "omh"
    assert all(m.device_id is None and m.seq is None for m in upload.messages)
    return [(m.patient_id, r) for m in upload.messages for r in m.readings]


def _refusal(document: object) -> UploadRefused:
    with pytest.raises(UploadRefused) as caught:
        parse_upload(dumps(document), content_type="application/json", limits=LIMITS)
    return caught.value


def test_the_schemas_taken() -> None:
    assert dict(SCHEMAS) == {
        "heart-rate": ("heart_rate",), "oxygen-saturation": ("oxygen_saturation",),
        "respiratory-rate": ("respiratory_rate",), "body-temperature": ("body_temperature",),
        "step-count": ("step_count",), "blood-pressure": ("systolic_blood_pressure", "diastolic_blood_pressure")}


def test_heart_rate_example() -> None:
    assert _parse(_heart_rate_example()) == [("user1432", ("heart_rate", 1_360_049_100_000, 50.0))]


def test_without_user_id_the_patient_is_left_to_the_service() -> None:
    point = _heart_rate_example()
    del point["header"]["user_id"]
    assert _parse(point) == [("", ("heart_rate", 1_360_049_100_000, 50.0))]


def test_notes_are_never_repeated_in_a_refusal() -> None:
    point = _heart_rate_example()
    point["body"]["heart_rate"]["value"] = 900
    refused = _refusal(point)
    assert "dizzy" not in str(refused) and "dizzy" not in str(refused.outcome())


def test_blood_pressure_and_temperature_units() -> None:
    assert _parse(omh_blood_pressure(T, 128, 82, user_id="pt-1")) == [
        ("pt-1", ("systolic_blood_pressure", T, 128.0)), ("pt-1", ("diastolic_blood_pressure", T, 82.0))]
    for unit, value in (("C", 37.0), ("F", 98.6), ("K", 310.15)):
        point = omh_reading("body_temperature", T, value)
        point["body"]["body_temperature"]["unit"] = unit
        assert _parse(point) == [("", ("body_temperature", T, 37.0))]


def test_step_count_shapes_and_intervals() -> None:
    assert _parse(omh_reading("step_count", T, 42)) == [("", ("step_count", T, 42.0))]
    version_1 = omh_point("step-count", {"step_count": 42, "effective_time_frame": {"time_interval": {
        "end_date_time": iso(T + 60_000), "duration": {"value": 1, "unit": "min"}}}}, version="1.0")
    assert _parse(version_1) == [("", ("step_count", T, 42.0))]
    months = copy.deepcopy(version_1)
    months["body"]["effective_time_frame"]["time_interval"]["duration"]["unit"] = "Mo"
    refused = _refusal(months)
    assert (refused.reason, [i.expression for i in refused.issues]) == (
        "imprecise_time", ["$.body.effective_time_frame.time_interval.duration.unit"])


def test_an_array_of_points_by_user() -> None:
    points = [omh_reading("heart_rate", T, 70, user_id="pt-1"), omh_reading("heart_rate", T, 72, user_id="pt-2"),
              omh_reading("oxygen_saturation", T, 97, user_id="pt-1")]
    upload = parse_upload(dumps(points), content_type="application/json", limits=LIMITS)
    assert [(m.patient_id, m.readings) for m in upload.messages] == [
        ("pt-1", (("heart_rate", T, 70.0), ("oxygen_saturation", T, 97.0))), ("pt-2", (("heart_rate", T, 72.0),))]


REFUSALS = [
    ("header.schema_id.name", "blood-glucose", 422, "unsupported_schema", "header.schema_id.name"),
    ("header.schema_id.namespace", "acme", 422, "unsupported_schema", "header.schema_id.namespace"),
    ("header.schema_id.version", "two", 400, "malformed_omh", "header.schema_id.version"),
    ("header.schema_id", DELETE, 400, "malformed_omh", "header.schema_id"),
    ("header.id", DELETE, 400, "malformed_omh", "header.id"),
    ("header.creation_date_time", "yesterday", 400, "malformed_omh", "header.creation_date_time"),
    ("header.user_id", "Jane Doe", 422, "invalid_id", "header.user_id"),
    ("header.acquisition_provenance", {"modality": "sensed"}, 400, "malformed_omh",
     "header.acquisition_provenance.source_name"),
    ("body.heart_rate.unit", "bpm", 422, "wrong_unit", "body.heart_rate.unit"),
    ("body.heart_rate.value", "50", 400, "malformed_omh", "body.heart_rate.value"),
    ("body.heart_rate.value", True, 400, "malformed_omh", "body.heart_rate.value"),
    ("body.heart_rate.value", 500, 422, "impossible_value", "body.heart_rate.value"),
    ("body.heart_rate", DELETE, 400, "malformed_omh", "body.heart_rate"),
    ("body.effective_time_frame.date_time", "2013-02-05T07:25:00", 422, "imprecise_time",
     "body.effective_time_frame.date_time"),
    ("body.effective_time_frame.date_time", "2013-02-05", 422, "imprecise_time",
     "body.effective_time_frame.date_time"),
    ("body.effective_time_frame", DELETE, 422, "missing_time", "body.effective_time_frame"),
    ("body.effective_time_frame", {}, 400, "malformed_omh", "body.effective_time_frame"),
    ("header", [], 400, "malformed_omh", "header"),
]


@pytest.mark.parametrize(("path", "value", "status", "reason", "expression"), REFUSALS,
                         ids=[f"{r[0]}={r[1]!r}"[:50] for r in REFUSALS])
def test_refusals_name_the_element(path: str, value: object, status: int, reason: str, expression: str) -> None:
    refused = _refusal(mutated(_heart_rate_example(), path, value))
    assert (refused.status, refused.reason) == (status, reason)
    assert [i.expression for i in refused.issues] == [f"$.{expression}"]
    assert "Jane" not in str(refused.outcome())


def test_refusals_of_an_array_name_each_point() -> None:
    points = [_heart_rate_example(), mutated(_heart_rate_example(), "body.heart_rate.unit", "Hz"),
              _heart_rate_example(), mutated(_heart_rate_example(), "header.user_id", "x y")]
    refused = _refusal(points)
    assert [i.expression for i in refused.issues] == ["$[1].body.heart_rate.unit", "$[3].header.user_id"]
    assert _refusal([]).reason == "empty_batch"


@st.composite
def points(draw: st.DrawFn) -> tuple[dict[str, Any], list[tuple[str, tuple[str, int, float]]]]:
    user = draw(st.one_of(st.none(), st.sampled_from(["pt-1", "pt-2"])))
    if draw(st.booleans()):
        t, systolic, diastolic = draw(times), draw(values("systolic_blood_pressure")), draw(
            values("diastolic_blood_pressure"))
        return omh_blood_pressure(t, systolic, diastolic, user_id=user), [
            (user or "", ("systolic_blood_pressure", t, systolic)), (user or "", ("diastolic_blood_pressure", t, diastolic))]
    metric, t, value = draw(single_readings())
    point = omh_reading(metric, t, value, user_id=user, offset_minutes=draw(offsets))
    if metric == "body_temperature" and draw(st.booleans()):
        point["body"]["body_temperature"] = {"value": value * 9 / 5 + 32, "unit": "F"}
    return point, [(user or "", (metric, t, value))]


@settings(max_examples=150, deadline=None)
@given(st.lists(points(), min_size=1, max_size=6), st.booleans())
def test_any_valid_points_parse_back_to_their_readings(cases: list[tuple[dict[str, Any], list[Any]]],
                                                       as_array: bool) -> None:
    if not as_array:
        cases = cases[:1]
    document: object = [p for p, _ in cases] if as_array else cases[0][0]
    got = sorted((patient, r[0], r[1], r[2]) for patient, r in _parse(document))
    want = sorted((patient, r[0], r[1], r[2]) for _, rows in cases for patient, r in rows)
    assert [g[:3] for g in got] == [w[:3] for w in want]
    assert all(g[3] == pytest.approx(w[3], abs=1e-6) for g, w in zip(got, want))


@settings(max_examples=100, deadline=None)
@given(st.lists(points(), min_size=1, max_size=4), st.data())
def test_breaking_one_element_is_refused_naming_it(cases: list[tuple[dict[str, Any], list[Any]]],
                                                   data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(cases) - 1))
    path, value, _, _, expression = data.draw(st.sampled_from([r for r in REFUSALS if "heart_rate" not in r[0]]))
    document = [copy.deepcopy(p) for p, _ in cases]
    assume(not (path.endswith(".date_time") and "time_interval" in document[index]["body"]["effective_time_frame"]))
    document[index] = mutated(document[index], path, value)
    refused = _refusal(document)
    assert 400 <= refused.status < 500
    assert f"$[{index}].{expression}" in [i.expression for i in refused.issues]


def test_messages_hold_at_most_max_readings() -> None:
    document = [omh_reading("heart_rate", T + i, 70) for i in range(5)]
    assert [len(m.readings) for m in parse_omh(document, Limits(max_readings=2))] == [2, 2, 1]
