"""Open mHealth (IEEE 1752) input: data points of the vital signs, one or a JSON array of them, as wire readings.

A data point is ``{"header": {...}, "body": {...}}``. The header needs an ``id``, a
``creation_date_time`` and a ``schema_id`` whose namespace is ``omh`` and whose name is one of
:data:`SCHEMAS` (any ``major.minor`` version: the measures' shapes did not change between
versions, except step-count 1.x's bare number, which is read too); ``acquisition_provenance``, if
present, needs its ``source_name``. The body holds the measure as a unit-value in the wire's own
unit (Open mHealth's unit names are the wire's: ``beats/min``, ``%``, ``breaths/min``, ``mmHg``,
``steps``; a body temperature may also be ``F`` or ``K``, converted to ``C``), and an
``effective_time_frame``: a ``date_time``, or a ``time_interval`` whose start is the reading's time
(given, or its end less its ``duration``; months and years are not fixed durations and are
refused). Times are RFC 3339 with an offset; one without (which IEEE 1752's text would read as
UTC) is refused, since a phone's local clock sent without its offset would land hours off.

**Whose readings.** A data point has no subject. The patient is ``header.user_id`` when the data
point names one (it must follow the id rule), otherwise ``""``: the gateway service fills in the
patient the device's token is bound to. No device is named either (``device_id`` is ``None``;
``acquisition_provenance.source_name`` is a product name, not an id).

What the schema refuses (a missing header field, a value that is not a number) is a 400
(``malformed_omh``); a schema the gateway does not take, a wrong unit or an impossible value a 422.
Other body properties (``descriptive_statistic``, ``user_notes``, ...) are ignored, and never
repeated in a refusal.

Examples
--------
>>> from kernel.limits import Limits
>>> point = {"header": {"id": "b3b5c2a0-5d7e-4b39-9d36-4e0f6d1d2c11", "creation_date_time": "2026-01-05T09:00:05Z",
...                     "schema_id": {"namespace": "omh", "name": "blood-pressure", "version": "4.0"}},
...          "body": {"systolic_blood_pressure": {"value": 128, "unit": "mmHg"},
...                   "diastolic_blood_pressure": {"value": 82, "unit": "mmHg"},
...                   "effective_time_frame": {"date_time": "2026-01-05T09:00:00Z"}}}
>>> parse_omh(point, Limits())
(ParsedMessage(patient_id='', device_id=None, seq=None, readings=(('systolic_blood_pressure', 1767603600000, 128.0), ('diastolic_blood_pressure', 1767603600000, 82.0))),)
>>> point["body"]["systolic_blood_pressure"]["unit"] = "kPa"
>>> parse_omh([point], Limits())
Traceback (most recent call last):
...
gateway.outcome.UploadRefused: wrong_unit: systolic_blood_pressure takes 'mmHg', got 'kPa' (at $[0].body.systolic_blood_pressure.unit)
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any, cast

from kernel.limits import ID_PATTERN, Limits, clip, valid_id
from kernel.vocabulary import METRICS, PANELS, Metric

from gateway.outcome import UploadRefused, combine, refuse
from gateway.parsed import ParsedMessage, Reading, group_readings
from gateway.times import epoch_ms, parse_rfc3339
from gateway.units import to_wire

NAMESPACE = "omh"
#: Open mHealth schema name -> the metrics its body holds (a panel's members go in the panel's schema).
SCHEMAS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    **{name.replace("_", "-"): (name,) for name in METRICS
       if not any(name in panel.metrics for panel in PANELS.values())},
    **{panel.name.replace("_", "-"): panel.metrics for panel in PANELS.values()},
})
#: Open mHealth temperature units as UCUM codes (the conversions are :mod:`gateway.units`').
TEMPERATURE_UNITS: Mapping[str, str] = MappingProxyType({"C": "Cel", "F": "[degF]", "K": "K"})
#: Open mHealth duration units of fixed length (``Mo`` and ``yr`` are not).
DURATIONS: Mapping[str, timedelta] = MappingProxyType({
    "ps": timedelta(0), "ns": timedelta(0), "us": timedelta(microseconds=1), "ms": timedelta(milliseconds=1),
    "sec": timedelta(seconds=1), "min": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1),
    "wk": timedelta(weeks=1),
})
_TEMPERATURE = METRICS["body_temperature"]
_VERSION = re.compile(r"\d{1,4}\.\d{1,4}", re.ASCII)


def parse_omh(document: object, limits: Limits) -> tuple[ParsedMessage, ...]:
    """The readings of one data point or a JSON array of them (``document`` is the parsed JSON)."""
    if isinstance(document, list):
        if not document:
            raise refuse(422, "empty_batch", "the array holds no data point", "$")
        points = [(f"$[{i}]", point) for i, point in enumerate(document)]
    else:
        points = [("$", document)]
    rows: list[tuple[str, str | None, Reading]] = []
    refusals: list[UploadRefused] = []
    for where, point in points:
        try:
            patient_id, readings = _data_point(point, where)
        except UploadRefused as refused:
            refusals.append(refused)
        else:
            rows.extend((patient_id, None, reading) for reading in readings)
    if refusals:
        raise combine(refusals)
    return group_readings(rows, max_readings=limits.max_readings)


def _data_point(point: object, where: str) -> tuple[str, list[Reading]]:
    if not isinstance(point, dict):
        raise refuse(400, "malformed_omh", f"a data point is a JSON object, got {type(point).__name__}", where)
    header = _object(point, "header", where)
    body = _object(point, "body", where)
    name, patient_id = _header(header, f"{where}.header")
    t = _time_frame(body, f"{where}.body")
    readings = [_reading(body, METRICS[metric], t, f"{where}.body") for metric in SCHEMAS[name]]
    return patient_id, readings


def _object(parent: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = parent.get(key)
    if not isinstance(value, dict):
        raise refuse(400, "malformed_omh", f"{key} is required and is an object", f"{where}.{key}")
    return value


def _string(parent: dict[str, Any], key: str, where: str) -> str:
    value = parent.get(key)
    if type(value) is not str or not value:
        raise refuse(400, "malformed_omh", f"{key} is required and is a non-empty string", f"{where}.{key}")
    return value


def _header(header: dict[str, Any], where: str) -> tuple[str, str]:
    """The schema name and the patient (``""`` when the header names none)."""
    _string(header, "id", where)
    if parse_rfc3339(header.get("creation_date_time")) is None:
        raise refuse(400, "malformed_omh", "creation_date_time is required: an RFC 3339 date-time with its offset",
                     f"{where}.creation_date_time")
    schema = _object(header, "schema_id", where)
    namespace = _string(schema, "namespace", f"{where}.schema_id")
    name = _string(schema, "name", f"{where}.schema_id")
    version = _string(schema, "version", f"{where}.schema_id")
    if namespace != NAMESPACE:
        raise refuse(422, "unsupported_schema", f"schema_id.namespace must be {NAMESPACE!r}, got {clip(namespace)}",
                     f"{where}.schema_id.namespace")
    if name not in SCHEMAS:
        raise refuse(422, "unsupported_schema",
                     f"schema {clip(name)} is not taken here (one of {', '.join(SCHEMAS)})", f"{where}.schema_id.name")
    if _VERSION.fullmatch(version) is None:
        raise refuse(400, "malformed_omh", f"schema_id.version is major.minor, got {clip(version)}",
                     f"{where}.schema_id.version")
    if "acquisition_provenance" in header:
        provenance = _object(header, "acquisition_provenance", where)
        _string(provenance, "source_name", f"{where}.acquisition_provenance")
        if provenance.get("modality", "sensed") not in ("sensed", "self-reported"):
            raise refuse(400, "malformed_omh", "modality is sensed or self-reported",
                         f"{where}.acquisition_provenance.modality")
    if "user_id" not in header:
        return name, ""
    user_id = header["user_id"]
    if not valid_id(user_id):
        raise refuse(422, "invalid_id", f"user_id must be a pseudonymous id matching {ID_PATTERN}",
                     f"{where}.user_id")
    return name, user_id


def _time_frame(body: dict[str, Any], where: str) -> int:
    if "effective_time_frame" not in body:
        raise refuse(422, "missing_time", "effective_time_frame is required", f"{where}.effective_time_frame")
    frame = _object(body, "effective_time_frame", where)
    here = f"{where}.effective_time_frame"
    if ("date_time" in frame) == ("time_interval" in frame):
        raise refuse(400, "malformed_omh", "effective_time_frame holds either date_time or time_interval", here)
    if "date_time" in frame:
        return _instant(frame["date_time"], f"{here}.date_time")
    interval = _object(frame, "time_interval", here)
    here += ".time_interval"
    if "start_date_time" in interval:
        start = _instant(interval["start_date_time"], f"{here}.start_date_time")
        if "end_date_time" in interval and _instant(interval["end_date_time"], f"{here}.end_date_time") < start:
            raise refuse(422, "imprecise_time", "the interval ends before it starts", f"{here}.end_date_time")
        return start
    if "end_date_time" in interval and "duration" in interval:
        end = _moment(interval["end_date_time"], f"{here}.end_date_time")
        start_ms = epoch_ms(end - _duration(interval, here))
        if start_ms is None:
            raise refuse(422, "imprecise_time", "the interval starts before 1970", f"{here}.duration")
        return start_ms
    raise refuse(400, "malformed_omh", "time_interval needs start_date_time, or end_date_time and duration", here)


def _moment(value: object, where: str) -> datetime:
    moment = parse_rfc3339(value)
    if moment is None or epoch_ms(moment) is None:
        raise refuse(422, "imprecise_time", "a time is an RFC 3339 date-time with seconds and its offset, after 1970",
                     where)
    return moment


def _instant(value: object, where: str) -> int:
    return cast(int, epoch_ms(_moment(value, where)))  # _moment refused the times epoch_ms cannot give


def _duration(interval: dict[str, Any], where: str) -> timedelta:
    duration = _object(interval, "duration", where)
    value, unit = _number(duration.get("value")), duration.get("unit")
    if value is None or not math.isfinite(value) or value < 0:
        raise refuse(400, "malformed_omh", "duration.value is a non-negative number", f"{where}.duration.value")
    step = DURATIONS.get(unit) if type(unit) is str else None
    if step is None:
        raise refuse(422, "imprecise_time", f"duration.unit is one of {', '.join(DURATIONS)}, got {clip(unit)}",
                     f"{where}.duration.unit")
    try:
        return step * value
    except OverflowError:
        raise refuse(422, "imprecise_time", "the duration is too long", f"{where}.duration.value") from None


def _reading(body: dict[str, Any], metric: Metric, t: int, where: str) -> Reading:
    here = f"{where}.{metric.name}"
    measure = body.get(metric.name)
    if metric.name == "step_count" and _number(measure) is not None:  # step-count 1.x: a bare number
        measure = {"value": measure, "unit": metric.unit}
    if not isinstance(measure, dict):
        raise refuse(400, "malformed_omh", f"{metric.name} is required: {{\"value\": number, \"unit\": "
                     f"{metric.unit!r}}}", here)
    value, unit = _number(measure.get("value")), measure.get("unit")
    if value is None:
        raise refuse(400, "malformed_omh", f"{metric.name}.value is a number", f"{here}.value")
    if type(unit) is not str:
        raise refuse(400, "malformed_omh", f"{metric.name}.unit is a string", f"{here}.unit")
    wire = value if unit == metric.unit else None
    if wire is None and metric is _TEMPERATURE and unit in TEMPERATURE_UNITS:
        wire = to_wire(metric, TEMPERATURE_UNITS[unit], value)
    if wire is None:
        wanted = ", ".join(repr(u) for u in TEMPERATURE_UNITS) if metric is _TEMPERATURE else repr(metric.unit)
        raise refuse(422, "wrong_unit", f"{metric.name} takes {wanted}, got {clip(unit)}", f"{here}.unit")
    if not (math.isfinite(wire) and metric.accepts(wire)):
        raise refuse(422, "impossible_value",
                     f"{metric.name} must lie in [{metric.lowest:g}, {metric.highest:g}] {metric.unit}, got {wire:g}",
                     f"{here}.value")
    return metric.name, t, wire


def _number(value: object) -> float | None:
    """A JSON number as a float (``None`` for anything else, booleans included).

    >>> _number(3), _number(2.5), _number(True), _number("3")
    (3.0, 2.5, None, None)
    """
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    try:
        return float(value)
    except OverflowError:  # an integer beyond any float (Limits may allow up to 400 digits)
        return math.inf if value > 0 else -math.inf
