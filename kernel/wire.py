"""Wire format of device messages (version ``vitalrisk.device/1``) and its validation.

A device message is a small batch from one device::

    {"schema": "vitalrisk.device/1", "device_id": "dev-3f2a", "patient_id": "pt-9c1e",
     "seq": 17, "sent_at": 1767571200000,
     "readings": [{"metric": "heart_rate", "t": 1767571195000, "value": 71.0,
                   "unit": "beats/min"}]}

Times are integer epoch milliseconds (UTC). Metric names and units come from
:mod:`kernel.vocabulary`. Ids are pseudonymous; the format has no place for names or free text.

Every decoder here is total: any bytes give either a value or :class:`~kernel.errors.InvalidMessage`
with a short ``reason``, never another exception. Each reads its record with
:func:`kernel.limits.load_json` within :class:`~kernel.limits.Limits` (size, depth, numbers,
strings, duplicate keys), and every id follows :data:`kernel.limits.ID_PATTERN`.

A device message that cannot be read as a whole raises :class:`~kernel.errors.InvalidMessage`;
a readable message with some bad readings keeps the good ones and names the others, with their
reasons, in :attr:`DeviceBatch.rejected`, so nothing valid is lost with one bad value.

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
kernel.errors.InvalidMessage: not_json: not valid UTF-8 JSON (Expecting property name enclosed in double quotes)
>>> decode_device_message(b'{"schema": "vitalrisk.device/1", "device_id": "d\\\\n1", "patient_id": "pt-1", '
...                       b'"seq": 1, "sent_at": 1, "readings": []}')
Traceback (most recent call last):
...
kernel.errors.InvalidMessage: invalid_id: device_id must match [A-Za-z0-9][A-Za-z0-9._:-]{0,63}, got 'd\\n1'
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from collections.abc import Iterable
from typing import Any, TypeVar, cast, overload

from kernel.errors import InvalidMessage
from kernel.events import FeatureRow, RiskScore, VitalReading, WindowFeatures
from kernel.limits import DEFAULT_LIMITS, Limits, check_id, clip, load_json
from kernel.vocabulary import METRICS

_T = TypeVar("_T")

DEVICE_SCHEMA = "vitalrisk.device/1"
#: Upper bound on readings in one message by default; a device batches seconds to minutes, not days.
MAX_READINGS_PER_MESSAGE = DEFAULT_LIMITS.max_readings
#: Sequence numbers and epoch-ms times are signed 64-bit integers.
MAX_INT64 = 2**63 - 1


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
class RejectedReading:
    """One reading of a readable message that failed validation: its place, reason and detail."""

    index: int
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class DeviceBatch:
    """A decoded device message: its envelope, valid readings, and rejected ones.

    The valid readings are kept as ``(metric, t_ms, value)`` points, the form the windows
    store: the core never needs a :class:`~kernel.events.VitalReading` per reading.
    """

    device_id: str
    patient_id: str
    seq: int
    points: list[tuple[str, int, float]]
    rejected: list[RejectedReading]

    @property
    def readings(self) -> list[VitalReading]:
        """The valid readings as events, in message order."""
        return [VitalReading(patient_id=self.patient_id, device_id=self.device_id, seq=self.seq, metric=metric, ts_ms=t, value=value)
                for metric, t, value in self.points]


def decode_device_message(raw: bytes | None, *, reference_ms: int | None = None,
                          max_future_ms: int = 5 * 60_000, limits: Limits = DEFAULT_LIMITS) -> DeviceBatch:
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
    limits
        What one message may hold (:class:`~kernel.limits.Limits`).

    Returns
    -------
    The envelope, the valid readings, and the place and reason of each invalid one.

    Raises
    ------
    InvalidMessage
        When the message as a whole is unreadable: beyond a limit, not JSON, not an object,
        unknown schema, a missing or mistyped envelope field, an id that breaks the id rule,
        a sequence number outside [0, 2**63).
    """
    body = load_json(raw, limits)
    if not isinstance(body, dict):
        raise InvalidMessage("not_an_object", f"message must be a JSON object, got {type(body).__name__}")
    schema = body.get("schema")
    if schema != DEVICE_SCHEMA:
        raise InvalidMessage("unknown_schema", f"schema must be {DEVICE_SCHEMA!r}, got {clip(schema)}")
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
    check_id(device_id, "device_id")
    check_id(patient_id, "patient_id")
    if not 0 <= seq <= MAX_INT64:
        raise InvalidMessage("impossible_value", f"seq must lie in [0, 2**63), got {clip(seq)}")
    if len(readings) > limits.max_readings:
        raise InvalidMessage("too_many_readings",
                             f"at most {limits.max_readings} readings per message, got {len(readings)}")

    good: list[tuple[str, int, float]] = []
    bad: list[RejectedReading] = []
    latest = _NO_LIMIT if reference_ms is None else reference_ms + max_future_ms
    for index, item in enumerate(readings):
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
            bad.append(RejectedReading(index, exc.reason, exc.detail))
    return DeviceBatch(device_id, patient_id, seq, good, bad)


#: Metric name -> (unit, lowest, highest), for the fast path of decode_device_message.
_LIMITS = {name: (m.unit, m.lowest, m.highest) for name, m in METRICS.items()}
_NO_LIMIT = MAX_INT64


def _point(item: Any, reference_ms: int | None, max_future_ms: int) -> tuple[str, int, float]:
    """One reading as ``(metric, t_ms, value)``, or :class:`InvalidMessage` naming its fault."""
    if not isinstance(item, dict):
        raise InvalidMessage("wrong_type", f"a reading must be an object, got {type(item).__name__}")
    name = _required(item, "metric", str)
    metric = METRICS.get(name)
    if metric is None:
        raise InvalidMessage("unknown_metric", f"metric {clip(name)} is not in the registry")
    t = _required(item, "t", int)
    value = item.get("value")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidMessage("wrong_type", f"value of {name} must be a number, got {_kind(value)}")
    unit = item.get("unit", metric.unit)
    if unit != metric.unit:
        raise InvalidMessage("wrong_unit", f"{name} must be in {metric.unit!r}, got {_kind(unit)}")
    value = _as_float(value)
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


def _kind(value: object) -> str:
    """A rejected value for a detail: scalars clipped, containers by type (never their contents)."""
    return clip(value) if value is None or isinstance(value, (str, int, float)) else type(value).__name__


@overload
def _required(body: dict[str, Any], field: str, kind: type[_T]) -> _T: ...
@overload
def _required(body: dict[str, Any], field: str, kind: tuple[type[int], type[float]]) -> float: ...
def _required(body: dict[str, Any], field: str, kind: type | tuple[type, ...]) -> Any:
    if field not in body:
        raise InvalidMessage("missing_field", f"field {field!r} is required")
    value = body[field]
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        expected = kind.__name__ if isinstance(kind, type) else "number"
        raise InvalidMessage("wrong_type", f"field {field!r} must be {expected}, got {type(value).__name__}")
    return value


SCORE_SCHEMA = "vitalrisk.score/1"


def encode_score(score: RiskScore) -> bytes:
    """A score as the ``risk.scores`` topic carries it (``vitalrisk.score/1``), keyed by patient.

    >>> s = RiskScore(patient_id="pt-1", window_start_ms=0, window_end_ms=60_000, model_name="news2", model_version="rcp-2017-scale1", score=0.15, news2_total=3, news2_band="low-medium",
    ...               inputs={"heart_rate": 135.0}, contributions={"heart_rate": 3.0}, missing_inputs=("body_temperature",),
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


def decode_score(raw: bytes | None, *, limits: Limits = DEFAULT_LIMITS) -> RiskScore:
    """Read one ``vitalrisk.score/1`` record; :class:`~kernel.errors.InvalidMessage` if it is not one.

    Numbers must be finite JSON numbers (``score`` and every risk in [0, 1], ``news2_total`` in
    [0, 20]), names strings, the patient id an id.

    >>> decode_score(b'{"schema": "vitalrisk.score/1", "patient_id": "pt-1", "score": "NaN"}')
    Traceback (most recent call last):
    ...
    kernel.errors.InvalidMessage: missing_field: field 'window_start' is required
    """
    body = load_json(raw, limits)
    if not isinstance(body, dict) or body.get("schema") != SCORE_SCHEMA:
        raise InvalidMessage("unknown_schema", f"a score must be a {SCORE_SCHEMA!r} object")
    patient_id = check_id(_required(body, "patient_id", str), "patient_id")
    start, end = _epoch_ms(body, "window_start"), _epoch_ms(body, "window_end")
    if end < start:
        raise InvalidMessage("impossible_value", f"window_end {end} is before window_start {start}")
    names = [_name(body, k) for k in ("model_name", "model_version", "news2_band")]
    score = _probability(_number(body, "score"), "score")
    news2_total = _required(body, "news2_total", int)
    if not 0 <= news2_total <= 20:
        raise InvalidMessage("impossible_value", f"news2_total must lie in [0, 20], got {news2_total}")
    missing = _required(body, "missing_inputs", list)
    if not all(type(m) is str for m in missing):
        raise InvalidMessage("wrong_type", "missing_inputs must be a list of names")
    return RiskScore(
        patient_id=patient_id, window_start_ms=start, window_end_ms=end, model_name=names[0], model_version=names[1], score=score, news2_total=news2_total, news2_band=names[2],
        inputs=_numbers(body, "inputs"), contributions=_numbers(body, "contributions"), missing_inputs=tuple(missing),
        risks={k: _probability(v, f"risks[{clip(k)}]") for k, v in _numbers(body, "risks").items()},
        news2_subscores={k: int(v) for k, v in _numbers(body, "news2_subscores", int).items()},
    )


def _as_float(value: float) -> float:
    """``value`` as a float; an integer too large for one (only possible when
    ``VITALS_LIMIT_NUMBER_DIGITS`` allows more than 308 digits) becomes infinity, refused as
    not finite by every caller."""
    try:
        return float(value)
    except OverflowError:
        return math.inf


def _number(body: dict[str, Any], field: str) -> float:
    value = _as_float(_required(body, field, (int, float)))
    if not math.isfinite(value):
        raise InvalidMessage("impossible_value", f"{field} must be finite, got {value}")
    return value


def _numbers(body: dict[str, Any], field: str, kind: type | tuple[type, ...] = (int, float)) -> dict[str, float]:
    """A ``{name: number}`` object: finite JSON numbers (load_json refuses the others), no booleans."""
    values: dict[str, Any] = _required(body, field, dict)
    for key, value in values.items():
        if type(value) is bool or not isinstance(value, kind) or not math.isfinite(_as_float(cast(float, value))):
            raise InvalidMessage("wrong_type", f"{field}[{clip(key)}] must be a finite number, got {_kind(value)}")
    return {key: float(value) for key, value in values.items()}


def _probability(value: float, field: str) -> float:
    if not 0.0 <= value <= 1.0:
        raise InvalidMessage("impossible_value", f"{field} must lie in [0, 1], got {value:g}")
    return value


def _name(body: dict[str, Any], field: str) -> str:
    value = _required(body, field, str)
    if not value:
        raise InvalidMessage("missing_field", f"field {field!r} must be non-empty")
    return value


def _epoch_ms(body: dict[str, Any], field: str) -> int:
    value = _required(body, field, int)
    if not 0 <= value <= MAX_INT64:
        raise InvalidMessage("impossible_value", f"{field} must be an epoch-ms time, got {clip(value)}")
    return value


WINDOW_SCHEMA = "vitalrisk.window/1"


def encode_window(window: WindowFeatures) -> bytes:
    """A closed window as JSON (``vitalrisk.window/1``): how a quarantined ``features`` row is kept.

    >>> from kernel.events import MetricStats
    >>> encode_window(WindowFeatures(patient_id="pt-1", start_ms=0, end_ms=60_000, metrics={"heart_rate": MetricStats(2, 71.0, 70.0, 72.0)}))
    b'{"schema":"vitalrisk.window/1","patient_id":"pt-1","start":0,"end":60000,"metrics":{"heart_rate":[2,71.0,70.0,72.0]}}'
    """
    return json.dumps({"schema": WINDOW_SCHEMA, "patient_id": window.patient_id, "start": window.start_ms,
                       "end": window.end_ms, "metrics": {m: [s.count, s.mean, s.min, s.max]
                                                         for m, s in window.metrics.items()}},
                      separators=(",", ":")).encode()


FEATURES_SCHEMA = "vitalrisk.features/1"


def encode_feature_row(row: FeatureRow) -> bytes:
    """A model-input row as the ``vitals.features`` topic carries it, keyed by patient.

    >>> row = FeatureRow(patient_id="pt-1", ts_ms=300_000, x={"heart_rate_mean_60m": 71.5})
    >>> decode_feature_row(encode_feature_row(row)) == row
    True
    """
    return json.dumps({"schema": FEATURES_SCHEMA, "patient_id": row.patient_id, "t": row.ts_ms, "x": row.x},
                      separators=(",", ":")).encode()


def decode_feature_row(raw: bytes, *, limits: Limits = DEFAULT_LIMITS) -> FeatureRow:
    """Read one ``vitalrisk.features/1`` record; :class:`~kernel.errors.InvalidMessage` if it is not one.

    >>> decode_feature_row(b'{"schema": "vitalrisk.features/1", "patient_id": "pt-1", "t": 1, "x": {"a": true}}')
    Traceback (most recent call last):
    ...
    kernel.errors.InvalidMessage: wrong_type: x['a'] must be a finite number, got True
    """
    body = load_json(raw, limits)
    if not isinstance(body, dict) or body.get("schema") != FEATURES_SCHEMA:
        raise InvalidMessage("unknown_schema", f"a feature row must be a {FEATURES_SCHEMA!r} object")
    patient_id = check_id(_required(body, "patient_id", str), "patient_id")
    return FeatureRow(patient_id=patient_id, ts_ms=_epoch_ms(body, "t"), x=_numbers(body, "x"))


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


def decode_patient(raw: bytes, *, limits: Limits = DEFAULT_LIMITS) -> PatientRecord:
    """Read one ``vitalrisk.patient/1`` record; :class:`~kernel.errors.InvalidMessage` if it is not one.

    >>> decode_patient(b'{"schema": "vitalrisk.patient/1", "patient_id": "pt-1", "sex": "X"}')
    Traceback (most recent call last):
    ...
    kernel.errors.InvalidMessage: impossible_value: sex must be one of ('F', 'M'), got 'X'
    >>> decode_patient(b'{"schema": "vitalrisk.patient/1", "patient_id": "pt-1", "conditions": ["gout"]}')  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    kernel.errors.InvalidMessage: impossible_value: conditions must be among (...), got 'gout'
    """
    body = load_json(raw, limits)
    if not isinstance(body, dict) or body.get("schema") != PATIENT_SCHEMA:
        raise InvalidMessage("unknown_schema", f"a patient record must be a {PATIENT_SCHEMA!r} object")
    patient_id = body.get("patient_id")
    if not isinstance(patient_id, str) or not patient_id:
        raise InvalidMessage("wrong_type", "patient_id must be a non-empty string")
    check_id(patient_id, "patient_id")
    groups: dict[str, str] = {}
    for attribute, allowed in PATIENT_ATTRIBUTES.items():
        value = body.get(attribute)
        if value is None:
            continue
        if type(value) is not str or value not in allowed:
            raise InvalidMessage("impossible_value", f"{attribute} must be one of {allowed}, got {_kind(value)}")
        groups[attribute] = value
    conditions = body.get("conditions")
    if conditions is not None:
        if not isinstance(conditions, list):
            raise InvalidMessage("wrong_type", "conditions must be a list of condition names")
        for condition in conditions:
            if type(condition) is not str or condition not in PATIENT_CONDITIONS:
                raise InvalidMessage("impossible_value",
                                     f"conditions must be among {PATIENT_CONDITIONS}, got {_kind(condition)}")
        conditions = tuple(c for c in PATIENT_CONDITIONS if c in conditions)  # canonical order, no repeats
    return PatientRecord(patient_id, groups, conditions)


#: How the snapshots topic is created (by ``vitalrisk infra`` and by the trainer when missing); its
#: replication factor and ``min.insync.replicas`` are the settings' (``VITALS_REPLICATION_FACTOR``...).
SNAPSHOT_TOPIC: dict[str, Any] = {
    "num_partitions": 1,
    "topic_configs": {"cleanup.policy": "compact", "retention.ms": "-1",
                      "max.message.bytes": str(16 * 1024 * 1024)},
}
