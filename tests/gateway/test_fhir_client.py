"""What a FHIR client library we did not write produces, the gateway reads: SMART on FHIR's ``fhirclient`` models.

``fhirclient`` generates its R4 (4.0.1) resource classes from the specification and checks every
element's type as it serialises. The Observations and Bundles here are built from those classes
(attributes set one by one, times as Python datetimes), serialised with ``as_json()`` as the
client would send them, and read by :func:`gateway.uploads.parse_upload`. No server is involved.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from fhirclient.models.bundle import Bundle
from fhirclient.models.codeableconcept import CodeableConcept
from fhirclient.models.fhirdatetime import FHIRDateTime
from fhirclient.models.fhirinstant import FHIRInstant
from fhirclient.models.observation import Observation, ObservationComponent
from fhirclient.models.period import Period

from gateway.outcome import UploadRefused
from gateway.uploads import parse_upload
from kernel.limits import Limits
from kernel.vocabulary import METRICS, PANELS
from tests.gateway.fhirclient_models import bundle, concept, quantity, reference

MOMENT = datetime(2026, 1, 5, 10, 0, 0, 250_000, tzinfo=timezone(timedelta(hours=1)))
T = int((MOMENT - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(milliseconds=1))


def _vital(metric: str, value: float, *, code: str | None = None, unit: str = "") -> Observation:
    observation = Observation()
    observation.status = "final"
    observation.category = [CodeableConcept({"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]})]
    observation.code = concept(METRICS[metric].loinc)
    observation.subject = reference("Patient/pt-9c1e")
    observation.device = reference("Device/dev-3f2a")
    observation.effectiveDateTime = FHIRDateTime()
    observation.effectiveDateTime.datetime = MOMENT
    observation.valueQuantity = quantity(value, code or METRICS[metric].ucum, unit or METRICS[metric].unit)
    return observation


def _blood_pressure(systolic: float, diastolic: float) -> Observation:
    panel = PANELS["85354-9"]
    observation = Observation()
    observation.status = "final"
    observation.code = concept(panel.loinc)
    observation.subject = reference("Patient/pt-9c1e")
    observation.effectiveInstant = FHIRInstant()
    observation.effectiveInstant.datetime = MOMENT
    observation.component = []
    for name, value in zip(panel.metrics, (systolic, diastolic)):
        component = ObservationComponent()
        component.code = concept(METRICS[name].loinc)
        component.valueQuantity = quantity(value, "mm[Hg]", "mmHg")
        observation.component.append(component)
    return observation


def _post(resource: Observation | Bundle) -> list[tuple[str, str | None, tuple[str, int, float]]]:
    body = json.dumps(resource.as_json()).encode()  # as_json() checks every element against the R4 model
    upload = parse_upload(body, content_type="application/fhir+json; fhirVersion=4.0", limits=Limits())
    return [(m.patient_id, m.device_id, r) for m in upload.messages for r in m.readings]


def test_one_observation() -> None:
    assert _post(_vital("heart_rate", 71)) == [("pt-9c1e", "dev-3f2a", ("heart_rate", T, 71.0))]


def test_fahrenheit_is_converted() -> None:
    assert _post(_vital("body_temperature", 100.4, code="[degF]", unit="degF")) == [
        ("pt-9c1e", "dev-3f2a", ("body_temperature", T, 38.0))]


@pytest.mark.parametrize("kind", ["transaction", "batch", "collection"])
def test_a_bundle_of_every_vital_sign(kind: str) -> None:
    observations = [_vital("heart_rate", 71), _vital("oxygen_saturation", 97), _vital("respiratory_rate", 16),
                    _vital("body_temperature", 36.8), _vital("step_count", 42), _blood_pressure(128, 82)]
    rows = _post(bundle(observations, kind))
    assert [(device, reading) for _, device, reading in rows] == [
        ("dev-3f2a", ("heart_rate", T, 71.0)), ("dev-3f2a", ("oxygen_saturation", T, 97.0)),
        ("dev-3f2a", ("respiratory_rate", T, 16.0)), ("dev-3f2a", ("body_temperature", T, 36.8)),
        ("dev-3f2a", ("step_count", T, 42.0)),
        (None, ("systolic_blood_pressure", T, 128.0)), (None, ("diastolic_blood_pressure", T, 82.0))]
    assert {patient for patient, _, _ in rows} == {"pt-9c1e"}


def test_step_count_over_a_period() -> None:
    observation = _vital("step_count", 80)
    observation.effectiveDateTime = None
    observation.effectivePeriod = Period()
    observation.effectivePeriod.start = FHIRDateTime()
    observation.effectivePeriod.start.datetime = MOMENT
    observation.effectivePeriod.end = FHIRDateTime()
    observation.effectivePeriod.end.datetime = MOMENT + timedelta(minutes=1)
    assert _post(observation) == [("pt-9c1e", "dev-3f2a", ("step_count", T, 80.0))]


def test_a_wrong_unit_from_the_client_is_refused_naming_the_element() -> None:
    upload = bundle([_vital("heart_rate", 71), _vital("oxygen_saturation", 0.97, code="1", unit="ratio")],
                    "transaction")
    with pytest.raises(UploadRefused) as caught:
        _post(upload)
    assert caught.value.status == 422
    assert [i.expression for i in caught.value.issues] == ["Bundle.entry[1].resource.valueQuantity.code"]
