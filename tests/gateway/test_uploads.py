"""The entry point: media types, format detection, the body's bounds, and hostile bodies (a result or UploadRefused, nothing else)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.outcome import MAX_ISSUES, UploadRefused
from gateway.parsed import ParsedUpload
from gateway.uploads import UPLOAD_DEPTH, parse_upload, read_limits
from kernel.limits import Limits
from kernel.wire import encode_device_message
from tests.gateway.resources import (START, blood_pressure, bundle, dumps, observation, omh_blood_pressure,
                                     omh_reading)

LIMITS = Limits()
T = START + 3_600_000
NATIVE = encode_device_message(device_id="dev-1", patient_id="pt-1", seq=1, sent_at=T,
                               readings=[("heart_rate", T, 71.0)])


def _refusal(body: bytes, content_type: str = "application/json", limits: Limits = LIMITS) -> UploadRefused:
    with pytest.raises(UploadRefused) as caught:
        parse_upload(body, content_type=content_type, limits=limits)
    return caught.value


@pytest.mark.parametrize(("content_type", "format_"), [
    ("application/json", "native"), ("application/json; charset=utf-8", "native"),
    ("APPLICATION/JSON;charset=\"UTF-8\"", "native")])
def test_json_media_types(content_type: str, format_: str) -> None:
    assert parse_upload(NATIVE, content_type=content_type, limits=LIMITS).format == format_


@pytest.mark.parametrize(("content_type", "reason"), [
    ("text/csv", "unsupported_media_type"), ("", "unsupported_media_type"), ("application/xml", "unsupported_media_type"),
    ("application/fhir+xml", "unsupported_media_type"), ("application/json; charset=latin-1", "unsupported_charset")])
def test_other_media_types_are_415(content_type: str, reason: str) -> None:
    refused = _refusal(NATIVE, content_type)
    assert (refused.status, refused.reason) == (415, reason)


def test_detection_by_content() -> None:
    def fmt(document: object) -> str:
        return parse_upload(dumps(document), content_type="application/json", limits=LIMITS).format
    assert fmt(observation("heart_rate", T, 70.0)) == "fhir"
    assert fmt(bundle([blood_pressure(T, 120.0, 80.0)])) == "fhir"
    assert fmt(omh_reading("heart_rate", T, 70)) == "omh"
    assert fmt([omh_blood_pressure(T, 120, 80), omh_reading("heart_rate", T, 70)]) == "omh"
    assert fmt([json.loads(NATIVE)]) == "native"
    for document in ({"hello": 1}, [1, 2], "text", 3, None, [[]]):
        assert _refusal(dumps(document)).reason in ("unknown_format", "malformed_fhir")


def test_fhir_media_type_is_always_fhir() -> None:
    refused = _refusal(NATIVE, "application/fhir+json")
    assert (refused.status, refused.reason) == (400, "malformed_fhir")
    assert parse_upload(dumps(observation("heart_rate", T, 70.0)), content_type="application/json+fhir",
                        limits=LIMITS).format == "fhir"


@pytest.mark.parametrize(("body", "status", "reason"), [
    (b"", 400, "empty"), (b"{not json", 400, "not_json"), (b"\xff\xfe", 400, "not_json"),
    (b"[" * 100_000 + b"]" * 100_000, 400, "too_deep"), (b'{"seq": ' + b"9" * 5_000 + b"}", 400, "number_too_large"),
    (b'{"a": 1, "a": 2}', 400, "duplicate_key"), (b'"' + b"x" * 20_000 + b'"', 400, "string_too_long")])
def test_hostile_bodies_are_refused_by_the_bounded_reader(body: bytes, status: int, reason: str) -> None:
    refused = _refusal(body)
    assert (refused.status, refused.reason) == (status, reason)


def test_a_body_larger_than_one_record_is_413() -> None:
    refused = _refusal(b" " * 300 + NATIVE, limits=Limits(max_message_bytes=256))
    assert (refused.status, refused.reason) == (413, "too_large")


def test_fhir_depth_and_narrative_fit_the_read_limits() -> None:
    panel = blood_pressure(T, 120.0, 80.0)
    panel["text"] = {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">' + "x" * 5_000 + "</div>"}
    panel["component"][0]["code"]["coding"][0]["extension"] = [
        {"url": "http://example.org/fhir/StructureDefinition/note", "valueCodeableConcept": {"coding": [{"code": "a"}]}}]
    document = bundle([panel])
    assert parse_upload(dumps(document), content_type="application/fhir+json", limits=LIMITS).readings == 2
    assert read_limits(LIMITS).max_depth == UPLOAD_DEPTH > LIMITS.max_depth


def test_an_outcome_lists_at_most_max_issues() -> None:
    document = bundle([observation("heart_rate", T, 900.0) for _ in range(MAX_ISSUES + 7)])
    refused = _refusal(dumps(document), "application/fhir+json")
    issues = refused.outcome()["issue"]
    assert isinstance(issues, list) and len(issues) == MAX_ISSUES + 1
    assert issues[-1]["details"]["text"] == "7 more issue(s) not listed"


# -- hostile input: anything in, a result or UploadRefused out ------------------------------------

hostile_text = st.one_of(st.text(max_size=40), st.sampled_from([
    "", "\x00", "\ud800", "Jane Doe", "x" * 300, "Patient/pt-1", "Patient/", "Device/dev-1", "urn:uuid:1",
    "http://loinc.org", "http://unitsofmeasure.org", "8867-4", "85354-9", "/min", "[degF]", "Cel", "final",
    "Observation", "Bundle", "Patient", "transaction", "omh", "heart-rate", "blood-pressure", "2.0",
    "2026-01-05T10:00:00Z", "2026-01-05", "1969-01-01T00:00:00+14:00", "vitalrisk.device/1", "beats/min", "F"]))
leaf = st.one_of(st.none(), st.booleans(), st.integers(-(10**21), 10**21), st.floats(allow_nan=True), hostile_text)
json_values = st.recursive(leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(hostile_text, inner, max_size=4)), max_leaves=25)
content_types = st.sampled_from(["application/json", "application/fhir+json", "application/json; charset=utf-8"])


def _valid_documents() -> list[object]:
    return [observation("heart_rate", T, 70.0, device="dev-1"), blood_pressure(T, 120.0, 80.0),
            bundle([observation("body_temperature", T, 98.6, code="[degF]"), blood_pressure(T, 120.0, 80.0)]),
            omh_reading("step_count", T, 12), [omh_blood_pressure(T, 120, 80)], json.loads(NATIVE),
            [json.loads(NATIVE)]]


def _paths(node: object, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*path, index))
    return found


def _replaced(document: object, path: tuple[Any, ...], value: object) -> object:
    if not path:
        return value
    document = json.loads(json.dumps(document))
    node: Any = document
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return document


def _total(body: bytes, content_type: str) -> None:
    try:
        result = parse_upload(body, content_type=content_type, limits=LIMITS)
    except UploadRefused as refused:
        assert refused.status in (400, 413, 415, 422)
        assert refused.issues and all(i.detail and "\n" not in i.detail for i in refused.issues)
        json.dumps(refused.outcome())
    else:
        assert isinstance(result, ParsedUpload)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300), content_types)
def test_random_bytes(body: bytes, content_type: str) -> None:
    _total(body, content_type)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values, content_types)
def test_random_json(document: object, content_type: str) -> None:
    _total(json.dumps(document).encode("utf-8", "surrogatepass"), content_type)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_valid_documents()), st.data(), content_types)
def test_valid_uploads_with_one_node_replaced_by_random_json(document: object, data: st.DataObject,
                                                            content_type: str) -> None:
    path = data.draw(st.sampled_from(_paths(document)))
    mutated = _replaced(document, path, data.draw(json_values))
    _total(json.dumps(mutated).encode("utf-8", "surrogatepass"), content_type)
