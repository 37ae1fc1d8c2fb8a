"""FHIR R4 uploads: the vital-signs examples, every refusal naming its element, and properties over random readings.

The examples follow the FHIR specification's vital-signs examples (heart rate, oxygen saturation,
respiratory rate, body temperature, blood pressure), shaped as the spec writes them (identifier,
category, narrative, interpretation, body site, performer, extra codings). The spec's examples
give a date alone (``"effectiveDateTime": "1999-07-02"``), which the gateway refuses: a device
reading needs its instant, so here they carry one.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from fhir.resources.R4B.operationoutcome import OperationOutcome
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.fhir import parse_fhir
from gateway.outcome import UploadRefused
from gateway.uploads import parse_upload
from kernel.limits import Limits
from kernel.vocabulary import METRICS
from tests.gateway.resources import (DELETE, LOINC, START, UCUM, VITAL_SIGNS, blood_pressure, bundle, devices, dumps,
                                     iso, mutated, observation, offsets, patients, single_readings, times, values)

LIMITS = Limits()
FHIR = "application/fhir+json"
T = START + 9 * 3_600_000  # 2026-01-05T09:00:00Z

NARRATIVE = {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml"><p>' + "x" * 900 + "</p></div>"}


def _heart_rate_example() -> dict[str, Any]:
    """The spec's heart-rate example: 44 beats/minute, code 8867-4, UCUM /min."""
    return {
        "resourceType": "Observation", "id": "heart-rate",
        "meta": {"profile": ["http://hl7.org/fhir/StructureDefinition/vitalsigns"]},
        "text": NARRATIVE, "status": "final", "category": [dict(VITAL_SIGNS, text="Vital Signs")],
        "code": {"coding": [{"system": LOINC, "code": "8867-4", "display": "Heart rate"}], "text": "Heart rate"},
        "subject": {"reference": "Patient/example"}, "effectiveDateTime": "1999-07-02T08:30:00+02:00",
        "valueQuantity": {"value": 44, "unit": "beats/minute", "system": UCUM, "code": "/min"},
    }


def _oxygen_saturation_example() -> dict[str, Any]:
    """The spec's SpO2 example: 95 %, codes 2708-6 and 59408-5 and a pulse-oximetry coding, a reference range."""
    return {
        "resourceType": "Observation", "id": "satO2", "text": NARRATIVE,
        "meta": {"profile": ["http://hl7.org/fhir/StructureDefinition/vitalsigns"]},
        "identifier": [{"system": "http://goodcare.org/observation/id", "value": "o1223435-10"}],
        "partOf": [{"reference": "Procedure/ob"}], "status": "final", "category": [VITAL_SIGNS],
        "code": {"coding": [
            {"system": LOINC, "code": "2708-6", "display": "Oxygen saturation in Arterial blood"},
            {"system": LOINC, "code": "59408-5",
             "display": "Oxygen saturation in Arterial blood by Pulse oximetry"},
            {"system": "urn:iso:std:iso:11073:10101", "code": "150456", "display": "MDC_PULS_OXIM_SAT_O2"}]},
        "subject": {"reference": "Patient/example"}, "effectiveDateTime": "2014-12-05T09:30:10+01:00",
        "valueQuantity": {"value": 95, "unit": "%", "system": UCUM, "code": "%"},
        "interpretation": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                                        "code": "N", "display": "Normal"}], "text": "Normal (applies to non-numeric results)"}],
        "referenceRange": [{"low": {"value": 90, "unit": "%", "system": UCUM, "code": "%"},
                            "high": {"value": 99, "unit": "%", "system": UCUM, "code": "%"}}],
    }


def _simple_example(ident: str, code: str, display: str, value: float, unit: str, ucum: str) -> dict[str, Any]:
    """The spec's respiratory-rate (26 /min) and body-temperature (36.5 Cel) examples: code, subject, value."""
    return {
        "resourceType": "Observation", "id": ident, "status": "final", "category": [VITAL_SIGNS],
        "code": {"coding": [{"system": LOINC, "code": code, "display": display}], "text": display},
        "subject": {"reference": "Patient/example"}, "effectiveDateTime": "1999-07-02T08:30:00Z",
        "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": ucum},
    }


def _respiratory_rate_example() -> dict[str, Any]:
    return _simple_example("respiratory-rate", "9279-1", "Respiratory rate", 26, "breaths/minute", "/min")


def _body_temperature_example() -> dict[str, Any]:
    return _simple_example("body-temperature", "8310-5", "Body temperature", 36.5, "C", "Cel")


def _blood_pressure_example() -> dict[str, Any]:
    """The spec's blood-pressure example: the 85354-9 panel, 107/60 mm[Hg], with its SNOMED and local codings."""
    return {
        "resourceType": "Observation", "id": "blood-pressure", "text": NARRATIVE,
        "meta": {"profile": ["http://hl7.org/fhir/StructureDefinition/vitalsigns"]},
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": "urn:uuid:187e0c12-8dd2-67e2-99b2-bf273c878281"}],
        "basedOn": [{"identifier": {"system": "https://acme.org/identifiers", "value": "1234"}}],
        "status": "final", "category": [VITAL_SIGNS],
        "code": {"coding": [{"system": LOINC, "code": "85354-9",
                             "display": "Blood pressure panel with all children optional"}],
                 "text": "Blood pressure systolic & diastolic"},
        "subject": {"reference": "Patient/example"}, "effectiveDateTime": "2012-09-17T07:45:00-05:00",
        "performer": [{"reference": "Practitioner/example"}],
        "interpretation": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                                        "code": "L", "display": "low"}], "text": "Below low normal"}],
        "bodySite": {"coding": [{"system": "http://snomed.info/sct", "code": "368209003", "display": "Right arm"}]},
        "component": [
            {"code": {"coding": [{"system": LOINC, "code": "8480-6", "display": "Systolic blood pressure"},
                                 {"system": "http://snomed.info/sct", "code": "271649006"},
                                 {"system": "http://acme.org/devices/clinical-codes", "code": "bp-s"}]},
             "valueQuantity": {"value": 107, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"},
             "interpretation": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                                             "code": "N", "display": "normal"}]}]},
            {"code": {"coding": [{"system": LOINC, "code": "8462-4", "display": "Diastolic blood pressure"}]},
             "valueQuantity": {"value": 60, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}},
        ],
    }


def _parse(document: object) -> tuple[tuple[str, str | None, tuple[tuple[str, int, float], ...]], ...]:
    upload = parse_upload(dumps(document), content_type=FHIR, limits=LIMITS)
    assert upload.format == "fhir"
    assert all(m.seq is None for m in upload.messages)
    return tuple((m.patient_id, m.device_id, m.readings) for m in upload.messages)


def _refusal(document: object, content_type: str = FHIR) -> UploadRefused:
    with pytest.raises(UploadRefused) as caught:
        parse_upload(dumps(document), content_type=content_type, limits=LIMITS)
    return caught.value


def _expressions(refused: UploadRefused) -> list[str | None]:
    return [issue.expression for issue in refused.issues]


# -- the specification's examples ----------------------------------------------------------------

def test_heart_rate_example() -> None:
    assert _parse(_heart_rate_example()) == (("example", None, (("heart_rate", 930_897_000_000, 44.0),)),)


def test_oxygen_saturation_example_with_both_loinc_codes() -> None:
    assert _parse(_oxygen_saturation_example()) == (
        ("example", None, (("oxygen_saturation", 1_417_768_210_000, 95.0),)),)


def test_oxygen_saturation_by_its_arterial_code_alone() -> None:
    resource = _oxygen_saturation_example()
    resource["code"]["coding"] = resource["code"]["coding"][:1]  # 2708-6 only
    assert _parse(resource)[0][2][0][0] == "oxygen_saturation"


def test_respiratory_rate_and_body_temperature_examples() -> None:
    assert _parse(_respiratory_rate_example())[0][2] == (("respiratory_rate", 930_904_200_000, 26.0),)
    assert _parse(_body_temperature_example())[0][2] == (("body_temperature", 930_904_200_000, 36.5),)


def test_blood_pressure_panel_example() -> None:
    t = 1_347_885_900_000  # 2012-09-17T07:45:00-05:00
    assert _parse(_blood_pressure_example()) == (
        ("example", None, (("systolic_blood_pressure", t, 107.0), ("diastolic_blood_pressure", t, 60.0))),)


def test_the_spec_examples_in_one_transaction_bundle() -> None:
    resources = [_heart_rate_example(), _oxygen_saturation_example(), _respiratory_rate_example(),
                 _body_temperature_example(), _blood_pressure_example()]
    (patient, device, readings), = _parse(bundle(resources))
    assert (patient, device) == ("example", None)
    assert [r[0] for r in readings] == ["heart_rate", "oxygen_saturation", "respiratory_rate", "body_temperature",
                                        "systolic_blood_pressure", "diastolic_blood_pressure"]


@pytest.mark.parametrize("kind", ["transaction", "batch", "collection"])
def test_bundle_types(kind: str) -> None:
    assert _parse(bundle([observation("heart_rate", T, 70.0)], kind)) == (
        ("pt-1", None, (("heart_rate", T, 70.0),)),)


def test_the_spec_date_alone_is_refused_as_imprecise() -> None:
    resource = _heart_rate_example()
    resource["effectiveDateTime"] = "1999-07-02"
    refused = _refusal(resource)
    assert (refused.status, refused.reason, _expressions(refused)) == (
        422, "imprecise_time", ["Observation.effectiveDateTime"])


def test_device_metric_reference_is_refused_device_reference_kept() -> None:
    resource = _oxygen_saturation_example()
    resource["device"] = {"reference": "DeviceMetric/example"}  # as the spec's SpO2 example has it
    assert _expressions(_refusal(resource)) == ["Observation.device.reference"]
    resource["device"] = {"reference": "Device/dev-oxi-7"}
    assert _parse(resource)[0][1] == "dev-oxi-7"


# -- what is read ----------------------------------------------------------------------------------

def test_groups_by_patient_and_device_in_first_seen_order() -> None:
    resources = [observation("heart_rate", T, 70.0, patient="pt-2", device="dev-1"),
                 observation("heart_rate", T, 71.0, patient="pt-1"),
                 observation("step_count", T, 12.0, patient="pt-2", device="dev-1")]
    assert _parse(bundle(resources)) == (
        ("pt-2", "dev-1", (("heart_rate", T, 70.0), ("step_count", T, 12.0))),
        ("pt-1", None, (("heart_rate", T, 71.0),)))


def test_messages_hold_at_most_max_readings() -> None:
    resources = [observation("heart_rate", T + i * 1000, 70.0) for i in range(7)]
    messages = parse_fhir(bundle(resources), Limits(max_readings=3))
    assert [len(m.readings) for m in messages] == [3, 3, 1]
    assert [r for m in messages for r in m.readings] == [("heart_rate", T + i * 1000, 70.0) for i in range(7)]


@pytest.mark.parametrize(("code", "value", "expected"), [
    ("Cel", 37.2, 37.2), ("[degF]", 98.6, 37.0), ("[degF]", 104.0, 40.0), ("K", 310.15, 37.0)])
def test_temperature_units(code: str, value: float, expected: float) -> None:
    assert _parse(observation("body_temperature", T, value, code=code))[0][2] == (("body_temperature", T, expected),)


@pytest.mark.parametrize(("metric", "code"), [("heart_rate", "{beats}/min"), ("heart_rate", "1/min"),
                                              ("respiratory_rate", "{breaths}/min"), ("step_count", "1"),
                                              ("step_count", "{steps}")])
def test_ucum_annotations_do_not_change_the_unit(metric: str, code: str) -> None:
    assert _parse(observation(metric, T, 30.0, code=code))[0][2] == ((metric, T, 30.0),)


def test_instant_and_period_start() -> None:
    instant = observation("heart_rate", T, 70.0)
    instant["effectiveInstant"] = instant.pop("effectiveDateTime")
    assert _parse(instant)[0][2][0][1] == T
    steps = observation("step_count", T, 80.0)
    del steps["effectiveDateTime"]
    steps["effectivePeriod"] = {"start": iso(T, 60), "end": iso(T + 60_000, 60)}
    assert _parse(steps)[0][2] == (("step_count", T, 80.0),)


@pytest.mark.parametrize("status", ["final", "amended", "corrected", "preliminary"])
def test_accepted_statuses(status: str) -> None:
    assert _parse(observation("heart_rate", T, 70.0, status=status))


def test_data_absent_is_skipped_not_refused() -> None:
    absent = observation("heart_rate", T, 70.0)
    del absent["valueQuantity"]
    absent["dataAbsentReason"] = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason",
                                              "code": "error"}]}
    panel = blood_pressure(T, 120.0, 80.0)
    del panel["component"][1]["valueQuantity"]
    panel["component"][1]["dataAbsentReason"] = absent["dataAbsentReason"]
    assert _parse(bundle([absent, panel, observation("heart_rate", T, 71.0)])) == (
        ("pt-1", None, (("systolic_blood_pressure", T, 120.0), ("heart_rate", T, 71.0))),)


def test_other_codings_beside_loinc_are_ignored() -> None:
    resource = observation("heart_rate", T, 70.0)
    resource["code"]["coding"].insert(0, {"system": "http://snomed.info/sct", "code": "364075005"})
    assert _parse(resource)[0][2] == (("heart_rate", T, 70.0),)


def test_fhir_version_parameter() -> None:
    body = dumps(observation("heart_rate", T, 70.0))
    assert parse_upload(body, content_type="application/fhir+json; fhirVersion=4.0", limits=LIMITS).messages
    with pytest.raises(UploadRefused) as caught:
        parse_upload(body, content_type="application/fhir+json; fhirVersion=5.0", limits=LIMITS)
    assert (caught.value.status, caught.value.reason) == (415, "unsupported_fhir_version")


def test_json_media_type_detects_fhir() -> None:
    upload = parse_upload(dumps(observation("heart_rate", T, 70.0)), content_type="application/json", limits=LIMITS)
    assert upload.format == "fhir"


# -- refusals, each naming its element -------------------------------------------------------------

def _hr() -> dict[str, Any]:
    return observation("heart_rate", T, 70.0, device="dev-1")


REFUSALS = [
    # (path, new value, status, reason, expression below "Observation")
    ("status", "entered-in-error", 422, "unsupported_status", ".status"),
    ("status", "registered", 422, "unsupported_status", ".status"),
    ("code.coding.0.code", "2339-0", 422, "unknown_loinc", ".code.coding[0].code"),
    ("code.coding.0.code", "41950-7", 422, "unknown_loinc", ".code.coding[0].code"),
    ("code.coding.0.system", "http://snomed.info/sct", 422, "unknown_loinc", ".code"),
    ("valueQuantity.code", "mmol/L", 422, "wrong_unit", ".valueQuantity.code"),
    ("valueQuantity.code", DELETE, 422, "wrong_unit", ".valueQuantity.code"),
    ("valueQuantity.system", "http://example.org/units", 422, "wrong_unit", ".valueQuantity.system"),
    ("valueQuantity.value", 100_000, 422, "impossible_value", ".valueQuantity.value"),
    ("valueQuantity.value", -1, 422, "impossible_value", ".valueQuantity.value"),
    ("valueQuantity.value", DELETE, 422, "missing_value", ".valueQuantity.value"),
    ("valueQuantity.value", "seventy", 400, "malformed_fhir", ".valueQuantity.value"),
    ("valueQuantity.comparator", "<", 422, "inexact_value", ".valueQuantity.comparator"),
    ("subject.reference", "Group/ward-3", 422, "invalid_subject", ".subject.reference"),
    ("subject.reference", "Patient/Jane Doe", 422, "invalid_id", ".subject.reference"),
    ("subject.reference", "https://ehr.example.org/fhir/Patient/pt-1", 422, "invalid_subject", ".subject.reference"),
    ("subject", DELETE, 422, "invalid_subject", ".subject"),
    ("subject", {"display": "Jane Doe"}, 422, "invalid_subject", ".subject.reference"),
    ("device.reference", "Location/ward-3", 422, "invalid_device", ".device.reference"),
    ("effectiveDateTime", "2026-01-05", 422, "imprecise_time", ".effectiveDateTime"),
    ("effectiveDateTime", "2026-01", 422, "imprecise_time", ".effectiveDateTime"),
    ("effectiveDateTime", "1969-12-31T23:00:00Z", 422, "imprecise_time", ".effectiveDateTime"),
    ("effectiveDateTime", "2026-01-05T10:00:00", 400, "malformed_fhir", ".effectiveDateTime"),
    ("effectiveDateTime", DELETE, 422, "missing_time", ".effective"),
    ("colour", "red", 400, "malformed_fhir", ".colour"),
    ("component", [{"code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
                    "valueQuantity": {"value": 120, "system": UCUM, "code": "mm[Hg]"}}],
     422, "unexpected_component", ".component[0]"),
]


@pytest.mark.parametrize(("path", "value", "status", "reason", "expression"), REFUSALS,
                         ids=[f"{r[0]}={r[1]!r}"[:50] for r in REFUSALS])
def test_refusals_name_the_element(path: str, value: object, status: int, reason: str, expression: str) -> None:
    refused = _refusal(mutated(_hr(), path, value))
    assert (refused.status, refused.reason) == (status, reason)
    assert f"Observation{expression}" in _expressions(refused)
    outcome = refused.outcome()
    assert outcome["resourceType"] == "OperationOutcome"


def test_refusals_never_echo_a_subject() -> None:
    refused = _refusal(mutated(_hr(), "subject.reference", "Patient/Jane Doe"))
    assert "Jane" not in str(refused) and "Jane" not in str(refused.outcome())


def test_value_of_another_type() -> None:
    resource = _hr()
    del resource["valueQuantity"]
    resource["valueString"] = "seventy"
    refused = _refusal(resource)
    assert (refused.reason, _expressions(refused)) == ("wrong_value_type", ["Observation.valueString"])


def test_period_without_start_and_backwards_period() -> None:
    resource = _hr()
    del resource["effectiveDateTime"]
    resource["effectivePeriod"] = {"end": iso(T)}
    assert _expressions(_refusal(resource)) == ["Observation.effectivePeriod.start"]
    resource["effectivePeriod"] = {"start": iso(T), "end": iso(T - 1000)}
    assert _expressions(_refusal(resource)) == ["Observation.effectivePeriod.end"]


def test_codings_that_disagree_are_ambiguous() -> None:
    resource = _hr()
    resource["code"]["coding"].append({"system": LOINC, "code": METRICS["respiratory_rate"].loinc})
    assert _refusal(resource).reason == "ambiguous_code"


def test_panel_refusals() -> None:
    panel = blood_pressure(T, 120.0, 80.0)
    panel["component"][1]["valueQuantity"]["code"] = "kPa"
    refused = _refusal(panel)
    assert (refused.reason, _expressions(refused)) == ("wrong_unit", ["Observation.component[1].valueQuantity.code"])
    panel = blood_pressure(T, 120.0, 80.0)
    panel["component"][1]["code"]["coding"][0]["code"] = "8867-4"  # heart rate is no part of the panel
    assert _expressions(_refusal(panel)) == ["Observation.component[1].code"]
    panel = blood_pressure(T, 120.0, 80.0)
    panel["component"][1] = copy.deepcopy(panel["component"][0])
    assert _refusal(panel).reason == "duplicate_component"
    panel = blood_pressure(T, 120.0, 80.0)
    del panel["component"]
    assert (_refusal(panel).reason, _expressions(_refusal(panel))) == ("missing_value", ["Observation.component"])
    panel = blood_pressure(T, 120.0, 80.0)
    panel["valueQuantity"] = {"value": 120, "system": UCUM, "code": "mm[Hg]"}
    assert _refusal(panel).reason == "unexpected_value"


def test_bundle_refusals_name_every_entry() -> None:
    resources = [observation("heart_rate", T, 70.0), observation("heart_rate", T, 700.0),
                 observation("body_temperature", T, 37.0, code="[degC]"), observation("heart_rate", T, 71.0)]
    refused = _refusal(bundle(resources))
    assert refused.status == 422
    assert _expressions(refused) == ["Bundle.entry[1].resource.valueQuantity.value",
                                     "Bundle.entry[2].resource.valueQuantity.code"]
    assert [i["expression"] for i in refused.outcome()["issue"]] == [
        ["Bundle.entry[1].resource.valueQuantity.value"], ["Bundle.entry[2].resource.valueQuantity.code"]]


def test_bundle_envelope_refusals() -> None:
    document = bundle([observation("heart_rate", T, 70.0)], "searchset")
    assert (_refusal(document).reason, _expressions(_refusal(document))) == ("unsupported_bundle_type",
                                                                             ["Bundle.type"])
    document = bundle([observation("heart_rate", T, 70.0), {"resourceType": "Patient", "id": "pt-1"}])
    assert _expressions(_refusal(document)) == ["Bundle.entry[1].resource.resourceType"]
    document = bundle([observation("heart_rate", T, 70.0)])
    document["entry"][0]["request"]["method"] = "DELETE"
    assert _expressions(_refusal(document)) == ["Bundle.entry[0].request.method"]
    del document["entry"][0]["request"]
    assert _expressions(_refusal(document)) == ["Bundle.entry[0].request"]
    assert _refusal(bundle([])).reason == "empty_batch"
    document = bundle([observation("heart_rate", T, 70.0)])
    document["entry"][0]["request"]["verb"] = "POST"
    assert (_refusal(document).status, _expressions(_refusal(document))) == (400, ["Bundle.entry[0].request.verb"])
    document = bundle([observation("heart_rate", T, 70.0)])
    document["entry"][0]["resource"]["contained"] = [{"resourceType": "NoSuchResource"}]
    assert (_refusal(document).status, _refusal(document).reason) == (400, "malformed_fhir")


def test_other_resources_are_unsupported() -> None:
    refused = _refusal({"resourceType": "Patient", "id": "pt-1"})
    assert (refused.status, refused.reason, _expressions(refused)) == (422, "unsupported_resource", ["Patient"])
    assert _refusal({"id": "pt-1"}).reason == "malformed_fhir"
    assert _refusal([observation("heart_rate", T, 70.0)]).reason == "malformed_fhir"


def test_outcome_is_a_valid_operation_outcome() -> None:
    refused = _refusal(bundle([observation("heart_rate", T, 700.0), observation("heart_rate", T, 70.0, status="x")]))
    outcome = OperationOutcome.model_validate(refused.outcome())
    assert [i.code for i in outcome.issue] == ["value", "business-rule"]


# -- properties --------------------------------------------------------------------------------------

@st.composite
def resources(draw: st.DrawFn) -> tuple[dict[str, Any], list[tuple[str, str | None, tuple[str, int, float]]]]:
    """An Observation of random readings, and the rows it should give."""
    patient, device, offset = draw(patients), draw(devices), draw(offsets)
    if draw(st.booleans()):
        t, systolic, diastolic = draw(times), draw(values("systolic_blood_pressure")), draw(
            values("diastolic_blood_pressure"))
        resource = blood_pressure(t, systolic, diastolic, patient=patient, device=device, offset_minutes=offset)
        rows = [(patient, device, ("systolic_blood_pressure", t, systolic)),
                (patient, device, ("diastolic_blood_pressure", t, diastolic))]
        return resource, rows
    metric, t, value = draw(single_readings())
    code, sent = None, value
    if metric == "body_temperature":
        code = draw(st.sampled_from(["Cel", "[degF]", "K"]))
        sent = {"Cel": value, "[degF]": value * 9 / 5 + 32, "K": value + 273.15}[code]
    resource = observation(metric, t, sent, patient=patient, device=device, code=code, offset_minutes=offset)
    return resource, [(patient, device, (metric, t, value))]


def _rows(document: object) -> list[tuple[str, str | None, tuple[str, int, float]]]:
    upload = parse_upload(dumps(document), content_type=FHIR, limits=LIMITS)
    return [(m.patient_id, m.device_id, r) for m in upload.messages for r in m.readings]


def _close(got: list[tuple[str, str | None, tuple[str, int, float]]],
           want: list[tuple[str, str | None, tuple[str, int, float]]]) -> bool:
    def key(row: tuple[str, str | None, tuple[str, int, float]]) -> tuple[str, str, str, int]:
        return row[0], row[1] or "", row[2][0], row[2][1]
    return len(got) == len(want) and all(
        key(g) == key(w) and g[2][2] == pytest.approx(w[2][2], abs=1e-6)
        for g, w in zip(sorted(got, key=key), sorted(want, key=key)))


@settings(max_examples=150, deadline=None)
@given(resources())
def test_any_valid_observation_parses_back_to_its_readings(case: tuple[dict[str, Any], list[Any]]) -> None:
    resource, rows = case
    assert _close(_rows(resource), rows)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(resources(), min_size=1, max_size=8), st.sampled_from(["transaction", "batch", "collection"]))
def test_any_valid_bundle_parses_back_to_its_readings(cases: list[tuple[dict[str, Any], list[Any]]],
                                                      kind: str) -> None:
    document = bundle([resource for resource, _ in cases], kind)
    assert _close(_rows(document), [row for _, rows in cases for row in rows])


MUTATIONS: list[tuple[str, object, str]] = [
    (path, value, expression) for path, value, _, _, expression in REFUSALS
    if not path.startswith(("device", "component"))
]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(resources(), min_size=1, max_size=5), st.data())
def test_breaking_one_element_of_a_bundle_is_refused_naming_it(cases: list[tuple[dict[str, Any], list[Any]]],
                                                               data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(cases) - 1))
    single = [i for i, (resource, _) in enumerate(cases) if "valueQuantity" in resource]
    if data.draw(st.booleans()) and single:
        index = data.draw(st.sampled_from(single))
        path, value, expression = data.draw(st.sampled_from(MUTATIONS))
    else:
        path, value, expression = data.draw(st.sampled_from([
            ("status", "cancelled", ".status"), ("subject.reference", "Patient/", ".subject.reference"),
            ("effectiveDateTime", "2026", ".effectiveDateTime"), ("code.coding.0.code", "0000-0",
                                                                  ".code.coding[0].code")]))
    document = mutated(bundle([resource for resource, _ in cases]), f"entry.{index}.resource.{path}", value)
    refused = _refusal(document)
    assert 400 <= refused.status < 500
    assert f"Bundle.entry[{index}].resource{expression}" in _expressions(refused)
