"""Builders of uploads for the gateway's tests: FHIR Observations and Bundles, Open mHealth data points, times.

Each builder writes what a well-behaved sender writes for given readings, so a test states the
readings and checks they come back; the hypothesis strategies draw readings within the metrics'
physical limits.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

from kernel.vocabulary import METRICS, PANELS

START = 1_767_571_200_000  # 2026-01-05T00:00:00Z
UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"
VITAL_SIGNS = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                           "code": "vital-signs", "display": "Vital Signs"}]}
BP = PANELS["85354-9"]
SINGLE = sorted(name for name in METRICS if not any(name in p.metrics for p in PANELS.values()))


def iso(t_ms: int, offset_minutes: int = 0) -> str:
    """Epoch ms as an RFC 3339 date-time with milliseconds, in the given UTC offset.

    >>> iso(1_767_571_200_250, 60)
    '2026-01-05T01:00:00.250+01:00'
    """
    zone = timezone(timedelta(minutes=offset_minutes))
    moment = datetime.fromtimestamp(t_ms // 1000, tz=UTC).replace(microsecond=(t_ms % 1000) * 1000).astimezone(zone)
    text = moment.isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z") if offset_minutes == 0 else text


def quantity(metric: str, value: float, code: str | None = None) -> dict[str, Any]:
    m = METRICS[metric]
    return {"value": value, "unit": m.unit, "system": UCUM, "code": code or m.ucum}


def observation(metric: str, t_ms: int, value: float, *, patient: str = "pt-1", device: str | None = None,
                code: str | None = None, offset_minutes: int = 0, **extra: Any) -> dict[str, Any]:
    """A vital-signs Observation of one metric."""
    body: dict[str, Any] = {
        "resourceType": "Observation", "status": "final", "category": [VITAL_SIGNS],
        "code": {"coding": [{"system": LOINC, "code": METRICS[metric].loinc}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": iso(t_ms, offset_minutes),
        "valueQuantity": quantity(metric, value, code),
    }
    if device is not None:
        body["device"] = {"reference": f"Device/{device}"}
    body.update(extra)
    return body


def blood_pressure(t_ms: int, systolic: float, diastolic: float, *, patient: str = "pt-1",
                   device: str | None = None, offset_minutes: int = 0) -> dict[str, Any]:
    """A blood-pressure panel (85354-9) with its two components."""
    body: dict[str, Any] = {
        "resourceType": "Observation", "status": "final", "category": [VITAL_SIGNS],
        "code": {"coding": [{"system": LOINC, "code": BP.loinc, "display": "Blood pressure panel"}]},
        "subject": {"reference": f"Patient/{patient}"}, "effectiveDateTime": iso(t_ms, offset_minutes),
        "component": [
            {"code": {"coding": [{"system": LOINC, "code": METRICS[name].loinc}]},
             "valueQuantity": quantity(name, value)}
            for name, value in zip(BP.metrics, (systolic, diastolic))
        ],
    }
    if device is not None:
        body["device"] = {"reference": f"Device/{device}"}
    return body


def bundle(resources: list[dict[str, Any]], kind: str = "transaction") -> dict[str, Any]:
    entries: list[dict[str, Any]] = []
    for i, resource in enumerate(resources):
        entry: dict[str, Any] = {"fullUrl": f"urn:uuid:00000000-0000-4000-8000-{i:012d}", "resource": resource}
        if kind in ("transaction", "batch"):
            entry["request"] = {"method": "POST", "url": "Observation"}
        entries.append(entry)
    return {"resourceType": "Bundle", "type": kind, "entry": entries}


def omh_point(schema: str, body: dict[str, Any], *, user_id: str | None = None, version: str = "2.0") -> dict[str, Any]:
    header: dict[str, Any] = {
        "id": "3b241101-e2bb-4255-8caf-4136c566a962", "creation_date_time": "2026-01-05T10:00:00Z",
        "schema_id": {"namespace": "omh", "name": schema, "version": version},
        "acquisition_provenance": {"source_name": "Wrist wearable", "modality": "sensed"},
    }
    if user_id is not None:
        header["user_id"] = user_id
    return {"header": header, "body": body}


def omh_reading(metric: str, t_ms: int, value: float, *, user_id: str | None = None,
                offset_minutes: int = 0) -> dict[str, Any]:
    """An Open mHealth data point of one metric (step counts over the minute starting at ``t_ms``)."""
    if metric == "step_count":
        frame = {"time_interval": {"start_date_time": iso(t_ms, offset_minutes),
                                   "end_date_time": iso(t_ms + 60_000, offset_minutes)}}
    else:
        frame = {"date_time": iso(t_ms, offset_minutes)}
    body = {metric: {"value": value, "unit": METRICS[metric].unit}, "effective_time_frame": frame}
    return omh_point(metric.replace("_", "-"), body, user_id=user_id)


def omh_blood_pressure(t_ms: int, systolic: float, diastolic: float, *, user_id: str | None = None) -> dict[str, Any]:
    return omh_point("blood-pressure", {
        "systolic_blood_pressure": {"value": systolic, "unit": "mmHg"},
        "diastolic_blood_pressure": {"value": diastolic, "unit": "mmHg"},
        "effective_time_frame": {"date_time": iso(t_ms)}}, user_id=user_id, version="4.0")


def dumps(document: object) -> bytes:
    return json.dumps(document).encode()


#: The value :func:`mutated` reads as "remove the element".
DELETE = object()


def mutated(document: Any, path: str, value: object) -> Any:
    """A deep copy of ``document`` with the element at dotted ``path`` (digits index a list) set or deleted.

    >>> mutated({"a": [{"b": 1}]}, "a.0.b", 2), mutated({"a": 1, "c": 2}, "a", DELETE)
    ({'a': [{'b': 2}]}, {'c': 2})
    """
    copy = json.loads(json.dumps(document))
    *parents, last = path.split(".")
    node = copy
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    key: Any = int(last) if last.isdigit() else last
    if value is DELETE and isinstance(node, dict):
        node.pop(key, None)
    elif value is DELETE:
        del node[key]
    else:
        node[key] = value
    return copy


# -- hypothesis strategies ------------------------------------------------------------------------

times = st.integers(START - 10**11, START + 10**11)  # 1972 .. 2029, to the millisecond
offsets = st.sampled_from([0, 60, -300, 330, 345, -720, 840])
patients = st.sampled_from(["pt-1", "pt-2", "pt-9c1e"])
devices = st.one_of(st.none(), st.sampled_from(["dev-1", "dev-3f2a"]))


@st.composite
def values(draw: st.DrawFn, metric: str) -> float:
    """A value the metric accepts, in the wire unit (whole numbers are as likely as fractions)."""
    m = METRICS[metric]
    return draw(st.one_of(st.integers(int(m.lowest), int(m.highest)).map(float),
                          st.floats(m.lowest, m.highest, allow_nan=False)))


@st.composite
def single_readings(draw: st.DrawFn) -> tuple[str, int, float]:
    metric = draw(st.sampled_from(SINGLE))
    return metric, draw(times), draw(values(metric))
