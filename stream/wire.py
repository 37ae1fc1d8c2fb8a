"""Wire format of device messages (version ``vitalrisk.device/1``) and its validation.

A device message is a small batch from one device::

    {"schema": "vitalrisk.device/1", "device_id": "dev-3f2a", "patient_id": "pt-9c1e",
     "seq": 17, "sent_at": 1767571200000,
     "readings": [{"metric": "heart_rate", "t": 1767571195000, "value": 71.0,
                   "unit": "beats/min"}]}

Times are integer epoch milliseconds (UTC). Metric names and units come from
:mod:`stream.vocabulary`. Ids are pseudonymous; the format has no place for names or free text.

A message that cannot be read as a whole raises :class:`~stream.errors.InvalidMessage`;
a readable message with some bad readings keeps the good ones and returns the others as
dead letters, so nothing valid is lost with one bad value.

Examples
--------
>>> raw = encode_device_message(device_id="dev-1", patient_id="pt-1", seq=1, sent_at=60_000,
...     readings=[("heart_rate", 1_000, 70.0), ("heart_rate", 2_000, 400.0)])
>>> batch = decode_device_message(raw)
>>> [(r.metric, r.value) for r in batch.readings], batch.seq
([('heart_rate', 70.0)], 1)
>>> batch.rejected[0].reason
'impossible_value'
>>> decode_device_message(b"{not json")
Traceback (most recent call last):
...
stream.errors.InvalidMessage: not_json: message is not valid UTF-8 JSON (Expecting property name enclosed in double quotes)
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from collections.abc import Iterable
from typing import Any

from stream.errors import InvalidMessage
from stream.events import DeadLetter, RiskScore, VitalReading
from stream.features import FeatureRow
from stream.vocabulary import METRICS

DEVICE_SCHEMA = "vitalrisk.device/1"
#: Upper bound on readings in one message; a device batches seconds to minutes, not days.
MAX_READINGS_PER_MESSAGE = 10_000


def encode_device_message(*, device_id: str, patient_id: str, seq: int, sent_at: int,
                          readings: Iterable[tuple[str, int, float]]) -> bytes:
    """Encode ``(metric, t_ms, value)`` readings as one device message, units from the registry."""
    body = {
        "schema": DEVICE_SCHEMA, "device_id": device_id, "patient_id": patient_id, "seq": seq,
        "sent_at": sent_at,
        "readings": [{"metric": m, "t": t, "value": v, "unit": METRICS[m].unit} for m, t, v in readings],
    }
    return json.dumps(body, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class DeviceBatch:
    """A decoded device message: its envelope, valid readings, and rejected ones.

    The valid readings are kept as ``(metric, t_ms, value)`` points, the form the windows
    store: the core never needs a :class:`~stream.events.VitalReading` per reading.
    """

    device_id: str
    patient_id: str
    seq: int
    points: list[tuple[str, int, float]]
    rejected: list[DeadLetter]

    @property
    def readings(self) -> list[VitalReading]:
        """The valid readings as events, in message order."""
        return [VitalReading(self.patient_id, self.device_id, self.seq, metric, t, value)
                for metric, t, value in self.points]


def decode_device_message(raw: bytes, *, reference_ms: int | None = None,
                          max_future_ms: int = 5 * 60_000) -> DeviceBatch:
    """Validate one device message.

    Parameters
    ----------
    raw
        The Kafka record value.
    reference_ms
        A trusted "now" for the message (the Kafka record timestamp); readings more than
        ``max_future_ms`` after it are rejected as ``future_timestamp``. ``None`` skips the check.
    max_future_ms
        Tolerated clock lead of a device, in milliseconds.

    Returns
    -------
    The envelope, the valid readings, and a dead letter for each invalid one.

    Raises
    ------
    InvalidMessage
        When the message as a whole is unreadable: not JSON, not an object, unknown schema,
        a missing or mistyped envelope field.
    """
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidMessage("not_json", f"message is not valid UTF-8 JSON ({_first_clause(exc)})") from None
    if not isinstance(body, dict):
        raise InvalidMessage("not_an_object", f"message must be a JSON object, got {type(body).__name__}")
    schema = body.get("schema")
    if schema != DEVICE_SCHEMA:
        raise InvalidMessage("unknown_schema", f"schema must be {DEVICE_SCHEMA!r}, got {schema!r}")
    device_id, patient_id, seq = body.get("device_id"), body.get("patient_id"), body.get("seq")
    readings = body.get("readings")
    if not (type(device_id) is str and type(patient_id) is str and type(seq) is int
            and type(body.get("sent_at")) is int and type(readings) is list):
        # Something is missing or mistyped: check field by field to name the first fault.
        device_id = _required(body, "device_id", str)
        patient_id = _required(body, "patient_id", str)
        seq = _required(body, "seq", int)
        _required(body, "sent_at", int)
        readings = _required(body, "readings", list)
    if not device_id or not patient_id:
        raise InvalidMessage("missing_field", "device_id and patient_id must be non-empty")
    if len(readings) > MAX_READINGS_PER_MESSAGE:
        raise InvalidMessage("too_many_readings",
                             f"at most {MAX_READINGS_PER_MESSAGE} readings per message, got {len(readings)}")

    good: list[tuple[str, int, float]] = []
    bad: list[DeadLetter] = []
    latest = _NO_LIMIT if reference_ms is None else reference_ms + max_future_ms
    for item in readings:
        # Fast path for a well-formed reading; anything unusual takes _point, which names the fault.
        try:
            metric, t, value = item["metric"], item["t"], item["value"]
            unit, lowest, highest = _LIMITS[metric]
        except (KeyError, TypeError):
            pass
        else:
            if (type(t) is int and 0 < t <= latest and (type(value) is float or type(value) is int)
                    and lowest <= value <= highest and item.get("unit", unit) == unit):
                good.append((metric, t, float(value)))
                continue
        try:
            good.append(_point(item, reference_ms, max_future_ms))
        except InvalidMessage as exc:
            payload = json.dumps({"device_id": device_id, "patient_id": patient_id, "seq": seq,
                                  "reading": item}, separators=(",", ":"), default=str).encode()
            bad.append(DeadLetter(exc.reason, exc.detail, payload))
    return DeviceBatch(device_id, patient_id, seq, good, bad)


#: Metric name -> (unit, lowest, highest), for the fast path of decode_device_message.
_LIMITS = {name: (m.unit, m.lowest, m.highest) for name, m in METRICS.items()}
_NO_LIMIT = 2**63


def _point(item: Any, reference_ms: int | None, max_future_ms: int) -> tuple[str, int, float]:
    """One reading as ``(metric, t_ms, value)``, or :class:`InvalidMessage` naming its fault."""
    if not isinstance(item, dict):
        raise InvalidMessage("wrong_type", f"a reading must be an object, got {type(item).__name__}")
    name = _required(item, "metric", str)
    metric = METRICS.get(name)
    if metric is None:
        raise InvalidMessage("unknown_metric", f"metric {name!r} is not in the registry")
    t = _required(item, "t", int)
    value = item.get("value")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidMessage("wrong_type", f"value of {name} must be a number, got {value!r}")
    unit = item.get("unit", metric.unit)
    if unit != metric.unit:
        raise InvalidMessage("wrong_unit", f"{name} must be in {metric.unit!r}, got {unit!r}")
    value = float(value)
    if not math.isfinite(value) or not metric.accepts(value):
        raise InvalidMessage("impossible_value",
                             f"{name} must lie in [{metric.lowest:g}, {metric.highest:g}] {metric.unit}, "
                             f"got {value:g}")
    if t <= 0:
        raise InvalidMessage("impossible_value", f"t must be a positive epoch-ms time, got {t}")
    if reference_ms is not None and t > reference_ms + max_future_ms:
        raise InvalidMessage("future_timestamp",
                             f"t={t} is {t - reference_ms} ms after the record time (limit {max_future_ms})")
    return name, t, value


def _required(body: dict[str, Any], field: str, kind: type) -> Any:
    if field not in body:
        raise InvalidMessage("missing_field", f"field {field!r} is required")
    value = body[field]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InvalidMessage("wrong_type", f"field {field!r} must be {kind.__name__}, got {type(value).__name__}")
    return value


def _first_clause(exc: Exception) -> str:
    return str(exc).split(":")[0]


SCORE_SCHEMA = "vitalrisk.score/1"


def encode_score(score: RiskScore) -> bytes:
    """A score as the ``risk.scores`` topic carries it (``vitalrisk.score/1``), keyed by patient.

    >>> s = RiskScore("pt-1", 0, 60_000, "news2", "rcp-2017-scale1", 0.15, 3, "low-medium",
    ...               {"heart_rate": 135.0}, {"heart_rate": 3.0}, ("body_temperature",),
    ...               news2_subscores={"heart_rate": 3})
    >>> decode_score(encode_score(s)) == s
    True
    """
    body = {"schema": SCORE_SCHEMA, "patient_id": score.patient_id, "window_start": score.window_start_ms,
            "window_end": score.window_end_ms, "model_name": score.model_name,
            "model_version": score.model_version, "score": score.score, "risks": score.risks,
            "news2_total": score.news2_total, "news2_band": score.news2_band,
            "news2_subscores": score.news2_subscores, "inputs": score.inputs,
            "contributions": score.contributions, "missing_inputs": list(score.missing_inputs)}
    return json.dumps(body, separators=(",", ":")).encode()


def decode_score(raw: bytes) -> RiskScore:
    """Read one ``vitalrisk.score/1`` record; :class:`~stream.errors.InvalidMessage` if it is not one."""
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidMessage("not_json", f"score is not valid UTF-8 JSON ({_first_clause(exc)})") from None
    if not isinstance(body, dict) or body.get("schema") != SCORE_SCHEMA:
        raise InvalidMessage("unknown_schema", f"a score must be a {SCORE_SCHEMA!r} object")
    try:
        return RiskScore(
            str(body["patient_id"]), int(body["window_start"]), int(body["window_end"]), str(body["model_name"]),
            str(body["model_version"]), float(body["score"]), int(body["news2_total"]), str(body["news2_band"]),
            {str(k): float(v) for k, v in body["inputs"].items()},
            {str(k): float(v) for k, v in body["contributions"].items()},
            tuple(str(m) for m in body["missing_inputs"]),
            risks={str(k): float(v) for k, v in body["risks"].items()},
            news2_subscores={str(k): int(v) for k, v in body["news2_subscores"].items()},
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InvalidMessage("wrong_type", f"score field missing or mistyped ({exc})") from None


FEATURES_SCHEMA = "vitalrisk.features/1"


def encode_feature_row(row: FeatureRow) -> bytes:
    """A model-input row as the ``vitals.features`` topic carries it, keyed by patient.

    >>> row = FeatureRow("pt-1", 300_000, {"heart_rate_mean_60m": 71.5})
    >>> decode_feature_row(encode_feature_row(row)) == row
    True
    """
    return json.dumps({"schema": FEATURES_SCHEMA, "patient_id": row.patient_id, "t": row.ts_ms, "x": row.x},
                      separators=(",", ":")).encode()


def decode_feature_row(raw: bytes) -> FeatureRow:
    """Read one ``vitalrisk.features/1`` record; :class:`~stream.errors.InvalidMessage` if it is not one."""
    try:
        body = json.loads(raw)
        if body.get("schema") != FEATURES_SCHEMA:
            raise InvalidMessage("unknown_schema", f"a feature row must be a {FEATURES_SCHEMA!r} object")
        return FeatureRow(str(body["patient_id"]), int(body["t"]), {str(k): float(v) for k, v in body["x"].items()})
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InvalidMessage("wrong_type", f"feature row unreadable ({type(exc).__name__})") from None


PATIENT_SCHEMA = "vitalrisk.patient/1"
#: The coarse attributes a patient record may carry, and their values, in report order: the
#: fairness monitor's subgroups and nothing more (no birth date, no name, no free text).
PATIENT_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "sex": ("F", "M"),
    "age_band": ("<65", "65-74", "75+"),
    "skin_tone": ("I-II", "III-IV", "V-VI"),
}
#: The chronic conditions a patient may be enrolled for: the programme knows them (they are why
#: the patient is monitored) and the risk model uses them as inputs.
PATIENT_CONDITIONS: tuple[str, ...] = ("heart_failure", "copd", "hypertension", "type2_diabetes",
                                       "atrial_fibrillation")


@dataclass(frozen=True, slots=True)
class PatientRecord:
    """One patient of the programme as the compacted ``vitals.patients`` topic carries it.

    ``groups`` are the fairness subgroups (:data:`PATIENT_ATTRIBUTES`); ``conditions`` the
    enrolment diagnoses (:data:`PATIENT_CONDITIONS`), or ``None`` when the record does not say
    (an older producer), which is not the same as none.
    """

    patient_id: str
    groups: dict[str, str] = field(default_factory=dict)
    conditions: tuple[str, ...] | None = None


def encode_patient(record: PatientRecord) -> bytes:
    """A patient record as the compacted ``vitals.patients`` topic carries it, keyed by patient.

    >>> record = PatientRecord("pt-1", {"sex": "F", "age_band": "75+", "skin_tone": "V-VI"}, ("copd",))
    >>> decode_patient(encode_patient(record)) == record
    True
    """
    body: dict[str, Any] = {"schema": PATIENT_SCHEMA, "patient_id": record.patient_id, **record.groups}
    if record.conditions is not None:
        body["conditions"] = list(record.conditions)
    return json.dumps(body, separators=(",", ":")).encode()


def decode_patient(raw: bytes) -> PatientRecord:
    """Read one ``vitalrisk.patient/1`` record.

    >>> decode_patient(b'{"schema": "vitalrisk.patient/1", "patient_id": "pt-1", "sex": "X"}')
    Traceback (most recent call last):
    ...
    stream.errors.InvalidMessage: impossible_value: sex must be one of ('F', 'M'), got 'X'
    >>> decode_patient(b'{"schema": "vitalrisk.patient/1", "patient_id": "pt-1", "conditions": ["gout"]}')  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    stream.errors.InvalidMessage: impossible_value: conditions must be among (...), got 'gout'
    """
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidMessage("not_json", f"patient record is not JSON ({type(exc).__name__})") from None
    if not isinstance(body, dict) or body.get("schema") != PATIENT_SCHEMA:
        raise InvalidMessage("unknown_schema", f"a patient record must be a {PATIENT_SCHEMA!r} object")
    patient_id = body.get("patient_id")
    if not isinstance(patient_id, str) or not patient_id:
        raise InvalidMessage("wrong_type", "patient_id must be a non-empty string")
    groups: dict[str, str] = {}
    for attribute, allowed in PATIENT_ATTRIBUTES.items():
        value = body.get(attribute)
        if value is None:
            continue
        if value not in allowed:
            raise InvalidMessage("impossible_value", f"{attribute} must be one of {allowed}, got {value!r}")
        groups[attribute] = value
    conditions = body.get("conditions")
    if conditions is not None:
        if not isinstance(conditions, list):
            raise InvalidMessage("wrong_type", "conditions must be a list of condition names")
        for condition in conditions:
            if condition not in PATIENT_CONDITIONS:
                raise InvalidMessage("impossible_value",
                                     f"conditions must be among {PATIENT_CONDITIONS}, got {condition!r}")
        conditions = tuple(c for c in PATIENT_CONDITIONS if c in conditions)  # canonical order, no repeats
    return PatientRecord(patient_id, groups, conditions)
