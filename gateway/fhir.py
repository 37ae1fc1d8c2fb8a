"""FHIR R4 input: vital-signs Observations, alone or in a Bundle, as wire readings.

Each resource is first validated as FHIR by ``fhir.resources`` (its R4B models: the package ships
R5, R4B and STU3 and no R4; R4B changed only the medication-definition, evidence and subscription
resources, so Observation and Bundle are R4's, element for element). What FHIR itself refuses (an
unknown element, a malformed dateTime, a decimal that is not a number) is a 400
(``malformed_fhir``) naming each element. Then the vital-signs rules, each a 422:

- ``status`` final, amended, corrected or preliminary. registered (no result yet), cancelled,
  entered-in-error and unknown are refused (``unsupported_status``): the pipeline cannot take a
  reading back, so an "entered in error" must not look like one that was stored.
- ``code`` holds a LOINC coding of a metric (:data:`kernel.vocabulary.LOINC`) or of the
  blood-pressure panel (:data:`kernel.vocabulary.PANELS`); other codings beside it are ignored.
  41950-7 (steps in 24 hours) is refused: ``step_count`` counts steps over the device's sampling
  interval (a minute) and the worker sums it per window, so a daily total would count a day's
  steps into one window. Send 55423-8 per interval instead.
- ``subject`` is ``Patient/<id>`` (a relative reference with a pseudonymous id that follows the
  id rule); ``device``, if present, ``Device/<id>``.
- ``effectiveDateTime`` or ``effectiveInstant`` with seconds and a UTC offset, or
  ``effectivePeriod`` with a ``start`` (the reading's time is the start of the period, as the
  native format stamps a step count with the start of its minute); ``effectiveTiming`` is refused.
- ``valueQuantity`` (for the panel: each component's) with ``system`` http://unitsofmeasure.org,
  a UCUM ``code`` the metric takes (:mod:`gateway.units`, converted where UCUM allows), no
  ``comparator``, and a value within the metric's physical limits. An Observation (or component)
  with ``dataAbsentReason`` and no value is skipped: nothing was measured.

A Bundle must be a transaction, batch or collection of Observations; each entry of a transaction
or batch must ``POST`` or ``PUT`` its Observation. Issues of every entry are reported together.

Examples
--------
>>> from kernel.limits import Limits
>>> observation = {"resourceType": "Observation", "status": "final",
...     "code": {"coding": [{"system": "http://loinc.org", "code": "8310-5"}]},
...     "subject": {"reference": "Patient/pt-1"}, "effectiveDateTime": "2026-01-05T10:00:00+01:00",
...     "valueQuantity": {"value": 98.6, "unit": "F", "system": "http://unitsofmeasure.org", "code": "[degF]"}}
>>> parse_fhir(observation, Limits())
(ParsedMessage(patient_id='pt-1', device_id=None, seq=None, readings=(('body_temperature', 1767603600000, 37.0),)),)
>>> parse_fhir(dict(observation, valueQuantity={"value": 37, "system": "http://unitsofmeasure.org",
...                                               "code": "mmol/L"}), Limits())
Traceback (most recent call last):
...
gateway.outcome.UploadRefused: wrong_unit: body_temperature takes UCUM Cel, [degF] or K, got 'mmol/L' (at Observation.valueQuantity.code)
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar, cast

import pydantic
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.observation import Observation, ObservationComponent
from fhir.resources.R4B.quantity import Quantity
from fhir.resources.R4B.reference import Reference

from kernel.limits import ID_PATTERN, Limits, clip, valid_id
from kernel.vocabulary import LOINC, METRICS, PANELS, Metric, Panel

from gateway.outcome import Issue, UploadRefused, combine, refuse
from gateway.parsed import ParsedMessage, Reading, group_readings
from gateway.times import epoch_ms
from gateway.units import UCUM_SYSTEM, accepted_codes, to_wire

LOINC_SYSTEM = "http://loinc.org"
#: Observation statuses whose value is a result to store.
ACCEPTED_STATUSES = frozenset({"final", "amended", "corrected", "preliminary"})
#: Bundle types that carry resources to store.
BUNDLE_TYPES = frozenset({"transaction", "batch", "collection"})
#: LOINC codes of a measure the registry has that are refused all the same, and why.
REFUSED_LOINC: Mapping[str, str] = {
    "41950-7": "41950-7 is a 24-hour step total; step_count takes steps per interval (55423-8)",
}
_RESOURCE_TYPE = re.compile(r"[A-Z][A-Za-z]{0,63}")
#: What fhir.resources may raise besides ValidationError on a body it cannot read (it is not total:
#: an unknown resourceType in ``contained`` raises KeyError).
_LIBRARY_ERRORS = (ValueError, TypeError, KeyError, AttributeError, IndexError, ArithmeticError, RecursionError)

_Row = tuple[str, str | None, Reading]
_M = TypeVar("_M", bound=pydantic.BaseModel)


def parse_fhir(document: object, limits: Limits) -> tuple[ParsedMessage, ...]:
    """The readings of an Observation or a Bundle of them (``document`` is the parsed JSON)."""
    if not isinstance(document, dict):
        raise refuse(400, "malformed_fhir", f"a FHIR resource is a JSON object, got {type(document).__name__}", "$")
    kind = document.get("resourceType")
    if kind == "Observation":
        rows = _observation(document, "Observation")
    elif kind == "Bundle":
        rows = _bundle(document)
    elif type(kind) is str and _RESOURCE_TYPE.fullmatch(kind):
        raise refuse(422, "unsupported_resource", f"only Observation and Bundle are accepted, got {kind}", kind)
    else:
        raise refuse(400, "malformed_fhir", "resourceType must name a FHIR resource", "$.resourceType")
    return group_readings(rows, max_readings=limits.max_readings)


def _bundle(document: dict[str, Any]) -> list[_Row]:
    entries = document.get("entry", [])
    envelope = dict(document)
    if isinstance(entries, list) and all(isinstance(e, dict) for e in entries):
        envelope["entry"] = [{k: v for k, v in e.items() if k != "resource"} for e in entries]
    else:
        entries = []  # the envelope's validation names the fault
    bundle = _validate(Bundle, envelope, "Bundle")
    kind = str(bundle.type)
    if kind not in BUNDLE_TYPES:
        raise refuse(422, "unsupported_bundle_type",
                     f"a Bundle of uploads is a transaction, batch or collection, got {clip(kind)}", "Bundle.type")
    if not entries:
        raise refuse(422, "empty_batch", "the Bundle holds no entry", "Bundle.entry")
    rows: list[_Row] = []
    refusals: list[UploadRefused] = []
    for index, entry in enumerate(entries):
        where = f"Bundle.entry[{index}]"
        try:
            _check_request(kind, bundle.entry[index].request if bundle.entry else None, where)
            resource = entry.get("resource")
            if not isinstance(resource, dict):
                raise refuse(400, "malformed_fhir", "an entry must hold a resource", where)
            if resource.get("resourceType") != "Observation":
                raise refuse(422, "unsupported_resource", "a Bundle of uploads holds Observations only",
                             f"{where}.resource.resourceType")
            rows.extend(_observation(resource, f"{where}.resource"))
        except UploadRefused as refused:
            refusals.append(refused)
    if refusals:
        raise combine(refusals)
    return rows


def _check_request(kind: str, request: object, where: str) -> None:
    if kind == "collection":
        return
    method = getattr(request, "method", None)
    if request is None:
        raise refuse(422, "unsupported_request", f"each entry of a {kind} needs a request (POST or PUT)",
                     f"{where}.request")
    if method not in ("POST", "PUT"):
        raise refuse(422, "unsupported_request", f"an upload entry must POST or PUT, got {clip(method)}",
                     f"{where}.request.method")


def _validate(model: type[_M], document: dict[str, Any], root: str) -> _M:
    """``document`` as ``model``; 400 ``malformed_fhir`` naming each element FHIR refuses."""
    try:
        return model.model_validate(document)
    except pydantic.ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        raise UploadRefused(400, [Issue("malformed_fhir", _message(e["msg"]), _path(root, e["loc"]))
                                  for e in errors]) from None
    except _LIBRARY_ERRORS as exc:
        raise refuse(400, "malformed_fhir", f"not a valid R4 {model.__name__} ({type(exc).__name__})", root) from None


def _message(text: str) -> str:
    """A validation message's first line, without pydantic's prefix."""
    line = text.strip().splitlines()[0] if text.strip() else "invalid"
    return line.removeprefix("Value error, ")


def _path(root: str, loc: Sequence[int | str]) -> str:
    """A pydantic location as a FHIRPath: ``('entry', 2, 'resource')`` -> ``Bundle.entry[2].resource``."""
    path = root
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part == "resource_type":
            path += ".resourceType"
        elif part.endswith("__ext"):
            path += f"._{part.removesuffix('__ext')}"
        else:
            path += f".{part}"
    return path


def _observation(document: dict[str, Any], where: str) -> list[_Row]:
    observation = _validate(Observation, document, where)
    status = str(observation.status)
    if status not in ACCEPTED_STATUSES:
        raise refuse(422, "unsupported_status",
                     f"status must be final, amended, corrected or preliminary, got {clip(status)}", f"{where}.status")
    target = _code(observation, where)
    patient_id = _reference_id(observation.subject, "Patient", "invalid_subject", f"{where}.subject")
    if patient_id is None:
        raise refuse(422, "invalid_subject", "subject is required: a reference Patient/<id>", f"{where}.subject")
    device_id = _reference_id(observation.device, "Device", "invalid_device", f"{where}.device")
    t = _time(observation, document, where)
    if isinstance(target, Panel):
        readings = list(_panel(observation, document, target, t, where))
    else:
        readings = list(_single(observation, document, target, t, where))
    return [(patient_id, device_id, reading) for reading in readings]


def _codings(concept: object) -> Iterator[tuple[int, str]]:
    """(index, code) of the LOINC codings of a CodeableConcept."""
    for index, coding in enumerate(getattr(concept, "coding", None) or ()):
        if str(coding.system) == LOINC_SYSTEM and coding.code is not None:
            yield index, str(coding.code)


def _code(observation: Observation, where: str) -> Metric | Panel:
    """The metric or panel the Observation's LOINC codings name (all that name one must agree)."""
    found: dict[str, Metric | Panel] = {}
    first: tuple[int, str] | None = None
    for index, code in _codings(observation.code):
        first = first or (index, code)
        target = PANELS.get(code) or LOINC.get(code)
        if target is not None and code not in REFUSED_LOINC:
            found[target.name] = target
    if len(found) > 1:
        raise refuse(422, "ambiguous_code", f"the LOINC codings name different measures ({', '.join(sorted(found))})",
                     f"{where}.code")
    if found:
        return next(iter(found.values()))
    if first is None:
        raise refuse(422, "unknown_loinc", "code needs a LOINC coding (system http://loinc.org) of a vital sign",
                     f"{where}.code")
    index, code = first
    raise refuse(422, "unknown_loinc", REFUSED_LOINC.get(code, f"LOINC {clip(code)} is not a vital sign taken here"),
                 f"{where}.code.coding[{index}].code")


def _reference_id(reference: Reference | None, kind: str, reason: str, where: str) -> str | None:
    """The id of a relative reference ``<kind>/<id>``; ``None`` when there is no reference; never echoes it."""
    if reference is None:
        return None
    text = reference.reference
    if text is None:
        raise refuse(422, reason, f"{where.rsplit('.', 1)[-1]} must be a literal reference {kind}/<id>",
                     f"{where}.reference")
    prefix, _, ident = str(text).partition("/")
    if prefix != kind or not valid_id(ident):
        raise refuse(422, reason if prefix != kind else "invalid_id",
                     f"reference must be {kind}/<id> with an id matching {ID_PATTERN}", f"{where}.reference")
    return ident


def _time(observation: Observation, document: dict[str, Any], where: str) -> int:
    """effective[x] as epoch ms: a dateTime or instant with its offset, or a period's start."""
    for name in ("effectiveDateTime", "effectiveInstant"):
        if name in document:
            return _instant(getattr(observation, name), f"{where}.{name}")
    if "effectivePeriod" in document:
        period = observation.effectivePeriod
        start = _instant(getattr(period, "start", None), f"{where}.effectivePeriod.start")
        end: object = getattr(period, "end", None)
        if end is not None and _instant(end, f"{where}.effectivePeriod.end") < start:
            raise refuse(422, "imprecise_time", "effectivePeriod ends before it starts", f"{where}.effectivePeriod.end")
        return start
    if "effectiveTiming" in document:
        raise refuse(422, "imprecise_time", "effectiveTiming is not one time; send effectiveDateTime",
                     f"{where}.effectiveTiming")
    raise refuse(422, "missing_time", "effectiveDateTime, effectiveInstant or effectivePeriod is required",
                 f"{where}.effective")


def _instant(value: object, where: str) -> int:
    if value is None:
        raise refuse(422, "missing_time", "a time is required", where)
    t = epoch_ms(value) if isinstance(value, datetime) else None
    if t is None:
        raise refuse(422, "imprecise_time",
                     "a reading's time needs a date, a time to the second and a UTC offset, after 1970", where)
    return t


def _single(observation: Observation, document: dict[str, Any], metric: Metric, t: int,
            where: str) -> Iterator[Reading]:
    if observation.component:
        raise refuse(422, "unexpected_component", f"a {metric.name} Observation has no components",
                     f"{where}.component[0]")
    yield from _value(observation.valueQuantity, observation.dataAbsentReason, document, metric, t, where)


def _panel(observation: Observation, document: dict[str, Any], panel: Panel, t: int,
           where: str) -> Iterator[Reading]:
    value_keys = [k for k in document if k.startswith("value")]
    if value_keys:
        raise refuse(422, "unexpected_value", f"the {panel.name} panel carries its values in components",
                     f"{where}.{value_keys[0]}")
    components: list[ObservationComponent] = observation.component or []
    raw_components = cast(list[dict[str, Any]], document.get("component") or [])
    if not components:
        if observation.dataAbsentReason is not None:
            return
        raise refuse(422, "missing_value", f"the {panel.name} panel needs components ({', '.join(panel.metrics)})",
                     f"{where}.component")
    seen: set[str] = set()
    for index, (component, raw) in enumerate(zip(components, raw_components)):
        here = f"{where}.component[{index}]"
        names = {LOINC[code].name for _, code in _codings(component.code) if code in LOINC} & set(panel.metrics)
        if len(names) != 1:
            codes = [code for _, code in _codings(component.code)]
            detail = (f"a {panel.name} component is one of {', '.join(panel.metrics)} (LOINC "
                      f"{', '.join(METRICS[m].loinc for m in panel.metrics)})")
            raise refuse(422, "unknown_loinc" if len(names) == 0 else "ambiguous_code",
                         detail if codes else detail + "; no LOINC coding found", f"{here}.code")
        name = names.pop()
        if name in seen:
            raise refuse(422, "duplicate_component", f"{name} appears twice in one panel", f"{here}.code")
        seen.add(name)
        yield from _value(component.valueQuantity, component.dataAbsentReason, raw, METRICS[name], t, here)


def _value(quantity: Quantity | None, absent: object, document: dict[str, Any], metric: Metric, t: int,
           where: str) -> Iterator[Reading]:
    """The reading of a ``valueQuantity`` (none when the value is absent for a stated reason)."""
    if quantity is None:
        other = [k for k in document if k.startswith("value")]
        if other:
            raise refuse(422, "wrong_value_type", f"{metric.name} is a valueQuantity, got {other[0]}",
                         f"{where}.{other[0]}")
        if absent is not None:
            return
        raise refuse(422, "missing_value", f"{metric.name} needs a valueQuantity (or a dataAbsentReason)",
                     f"{where}.value")
    here = f"{where}.valueQuantity"
    if quantity.value is None:
        raise refuse(422, "missing_value", "valueQuantity.value is required", f"{here}.value")
    if quantity.comparator is not None:
        raise refuse(422, "inexact_value", "a reading is one value: comparator is not allowed", f"{here}.comparator")
    if quantity.system is None or str(quantity.system) != UCUM_SYSTEM:
        raise refuse(422, "wrong_unit", f"valueQuantity.system must be {UCUM_SYSTEM}", f"{here}.system")
    codes = accepted_codes(metric)
    sent = None if quantity.code is None else str(quantity.code)
    value = to_wire(metric, sent, _float(quantity.value)) if sent is not None else None
    if value is None:
        wanted = codes[0] if len(codes) == 1 else f"{', '.join(codes[:-1])} or {codes[-1]}"
        raise refuse(422, "wrong_unit", f"{metric.name} takes UCUM {wanted}, got {clip(sent)}", f"{here}.code")
    if not (math.isfinite(value) and metric.accepts(value)):
        raise refuse(422, "impossible_value", f"{metric.name} must lie in [{metric.lowest:g}, {metric.highest:g}] "
                     f"{metric.ucum}, got {value:g}", f"{here}.value")
    yield metric.name, t, value


def _float(value: Decimal | float) -> float:
    """A decimal as a float (an out-of-range one becomes infinite, and is refused as impossible)."""
    try:
        return float(value)
    except (OverflowError, ValueError):
        return math.inf
