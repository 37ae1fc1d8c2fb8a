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

A device message is read in two steps, each callable alone: the bytes within the limits
(:func:`~kernel.limits.load_json`, or :func:`~kernel.limits.check_shape` for one message of a
batch already read), then the message's rules (:func:`check_device_message`: fields, the id
rule, each reading). :func:`decode_device_message`, the worker's decoder, is the two in a row;
the ingest gateway reads an upload of many messages once and checks each. For an upload where
everything is valid, :func:`decode_valid_device_messages` does both steps at C speed (msgspec),
and answers ``None`` at the first doubt, so the rules above decide every refusal.

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

import functools
import json
import math
import operator
from dataclasses import dataclass, field
from collections.abc import Iterable
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar, cast, overload

import msgspec

from kernel.errors import InvalidMessage
from kernel.events import FeatureRow, RiskScore, VitalReading, WindowFeatures
from kernel.limits import DEFAULT_LIMITS, MAX_ID_CHARS, Limits, check_id, clip, load_json, valid_id
from kernel.vocabulary import METRICS, Metric

_T = TypeVar("_T")

DEVICE_SCHEMA = "vitalrisk.device/1"
#: Upper bound on readings in one message by default; a device batches seconds to minutes, not days.
MAX_READINGS_PER_MESSAGE = DEFAULT_LIMITS.max_readings
#: Sequence numbers and epoch-ms times are signed 64-bit integers.
MAX_INT64 = 2**63 - 1
#: Tolerated clock lead of a device by default, in milliseconds (``VITALS_MAX_FUTURE_MS`` sets the worker's).
MAX_FUTURE_MS = 5 * 60_000


class _WireReading(msgspec.Struct, gc=False):
    """One reading as :func:`encode_device_message` writes it (fields in wire order)."""

    metric: str
    t: int
    value: float
    unit: str


class _WireMessage(msgspec.Struct, gc=False):
    schema: str
    device_id: str
    patient_id: str
    seq: int
    sent_at: int
    readings: list[_WireReading]


_ENCODER = msgspec.json.Encoder()


def encode_device_message(*, device_id: str, patient_id: str, seq: int, sent_at: int,
                          readings: Iterable[tuple[str, int, float]]) -> bytes:
    """Encode ``(metric, t_ms, value)`` readings as one device message, units from the registry.

    Compact UTF-8 JSON, written by msgspec (about 4 us for 15 readings, a quarter of the
    standard library's time). msgspec writes a non-finite float as ``null`` and refuses a lone
    surrogate; a message holding either (a test's hostile reading) is written by the standard
    library instead, as ``NaN`` or an escape, so it decodes as it was meant.

    >>> encode_device_message(device_id="dev-1", patient_id="pt-1", seq=1, sent_at=2,
    ...                       readings=[("heart_rate", 1, 70.0)])
    b'{"schema":"vitalrisk.device/1","device_id":"dev-1","patient_id":"pt-1","seq":1,"sent_at":2,"readings":[{"metric":"heart_rate","t":1,"value":70.0,"unit":"beats/min"}]}'
    >>> encode_device_message(device_id="dev-1", patient_id="pt-1", seq=1, sent_at=2,
    ...                       readings=[("heart_rate", 1, math.nan)])[-33:]
    b'"value":NaN,"unit":"beats/min"}]}'
    """
    points = readings if isinstance(readings, (list, tuple)) else list(readings)
    try:
        raw = _ENCODER.encode(_WireMessage(DEVICE_SCHEMA, device_id, patient_id, seq, sent_at,
                                           [_WireReading(m, t, v, _UNITS[m]) for m, t, v in points]))
    except (UnicodeEncodeError, TypeError, OverflowError):
        raw = b"null"  # what is not a str or an int (a test's hostile value): the standard library's turn
    if b"null" not in raw:
        return raw
    body = {
        "schema": DEVICE_SCHEMA, "device_id": device_id, "patient_id": patient_id, "seq": seq,
        "sent_at": sent_at,
        "readings": [{"metric": m, "t": t, "value": v, "unit": METRICS[m].unit} for m, t, v in points],
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
                          max_future_ms: int = MAX_FUTURE_MS, limits: Limits = DEFAULT_LIMITS) -> DeviceBatch:
    """Read and validate one device message: :func:`~kernel.limits.load_json`, then :func:`check_device_message`.

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
    return check_device_message(load_json(raw, limits), reference_ms=reference_ms, max_future_ms=max_future_ms,
                                limits=limits)


def check_device_message(body: object, *, reference_ms: int | None = None, max_future_ms: int = MAX_FUTURE_MS,
                         limits: Limits = DEFAULT_LIMITS) -> DeviceBatch:
    """The rules of a device message, on one already read within the limits (:func:`kernel.limits.load_json`).

    The one definition of a device message's fields, id rule and readings: the worker's
    decoder and the ingest gateway both call it. ``body`` is the parsed JSON; the parameters
    and what it raises are :func:`decode_device_message`'s, but for the limits of the bytes
    (size, depth, numbers, strings, repeated keys), which the reader enforces: only
    ``limits.max_readings`` is checked here.

    >>> batch = check_device_message({"schema": "vitalrisk.device/1", "device_id": "dev-1", "patient_id": "pt-1",
    ...     "seq": 4, "sent_at": 1, "readings": [{"metric": "heart_rate", "t": 1_000, "value": 71}]})
    >>> batch.points, batch.rejected
    ([('heart_rate', 1000, 71.0)], [])
    """
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


#: Metric name -> (unit, lowest, highest), for the fast paths of check_device_message and decode_valid_device_messages.
_LIMITS = {name: (m.unit, m.lowest, m.highest) for name, m in METRICS.items()}
_UNITS = {name: m.unit for name, m in METRICS.items()}
_NO_LIMIT = MAX_INT64


def _valid_reading(metric: Metric) -> type[msgspec.Struct]:
    """The one reading of ``metric`` that decode_valid_device_messages takes, as a msgspec type checked in C.

    ``metric`` is the tag: its name, its unit (or none), a time in (0, 2**63), a finite value in
    the metric's range, and no other field; the rules of :func:`check_device_message`, from the
    same registry.
    """
    unit: object = Literal.__getitem__(metric.unit)
    return msgspec.defstruct(
        f"_Valid_{metric.name}",
        [("t", Annotated[int, msgspec.Meta(gt=0, le=MAX_INT64)]),
         ("value", Annotated[float, msgspec.Meta(ge=metric.lowest, le=metric.highest)]),
         ("unit", unit | msgspec.UnsetType, msgspec.UNSET)],
        tag_field="metric", tag=metric.name, forbid_unknown_fields=True, gc=False)


_VALID_READINGS = [_valid_reading(metric) for metric in METRICS.values()]
#: The type of each valid reading -> its metric's name.
_VALID_METRIC: dict[type, str] = {kind: metric for kind, metric in zip(_VALID_READINGS, METRICS)}

if TYPE_CHECKING:  # what every one of _VALID_READINGS holds, for the type checker
    class _ValidReading(msgspec.Struct):
        t: int
        value: float
        unit: str | msgspec.UnsetType
else:
    _ValidReading = functools.reduce(operator.or_, _VALID_READINGS)  # a tagged union: "metric" names the type


class _ValidMessage(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """A message as :func:`decode_valid_device_messages` takes it: these fields, these types, nothing else."""

    schema: Literal["vitalrisk.device/1"]
    device_id: str
    patient_id: str
    seq: Annotated[int, msgspec.Meta(ge=0, le=MAX_INT64)]
    sent_at: int
    readings: list[_ValidReading]


_VALID_DECODER = msgspec.json.Decoder(list[_ValidMessage] | _ValidMessage)
_VALID_ONE_DECODER = msgspec.json.Decoder(_ValidMessage)
#: Keys a message always has (schema, device_id, patient_id, seq, sent_at, readings) and a reading (metric, t, value).
_MESSAGE_KEYS, _READING_KEYS = len(_ValidMessage.__struct_fields__), 3
#: Depth of an array of messages (array, message, readings array, reading), and the longest string
#: a valid message may hold: the limits under which decode_valid_device_messages can answer at all.
_VALID_DEPTH = 4
_VALID_STRING_CHARS = max(MAX_ID_CHARS, len(DEVICE_SCHEMA), *map(len, METRICS), *map(len, _UNITS.values()),
                          *map(len, _ValidMessage.__struct_fields__))
#: Fewest digits the limit must allow for every valid value to be written as an integer (1000 steps).
_VALID_DIGITS = len(str(int(max(m.highest for m in METRICS.values()))))
#: bytes.translate table: every character of a JSON number to "0", the rest to a space.
_NUMBER_CHARS = bytes(0x30 if chr(c) in "0123456789.eE+-" else 0x20 for c in range(256))


def decode_valid_device_messages(raw: bytes, *, reference_ms: int | None = None,
                                 max_future_ms: int = MAX_FUTURE_MS,
                                 limits: Limits = DEFAULT_LIMITS) -> list[DeviceBatch] | None:
    """One device message or a JSON array of them, when every message and reading is valid; else ``None``.

    The fast path of an upload (msgspec: read and checked in C, about 6 us for a 15-reading
    message against 60 for the two steps with the standard library). It answers only when
    the answer is certain: when it returns batches, reading ``raw`` with
    :func:`~kernel.limits.load_json` and each message with :func:`~kernel.limits.check_shape`
    and :func:`check_device_message` under the same ``limits`` (and ``reference_ms``) gives
    these very batches, none with a rejected reading. Anything else -- any fault, an unknown
    field, a run of number characters longer than a float literal may be, an id with a colon
    (the repeated-key check counts colons), an empty array -- is ``None``, and the caller takes the
    two steps itself, which name the fault. For one message, that means ``[decode_device_message(raw)]``.

    The rules are the registry's and :mod:`kernel.limits`' own, as msgspec types: a reading's
    ``metric`` names its type, which holds the metric's unit and range; ids are checked with
    :func:`~kernel.limits.valid_id`. The limits hold without a second reading: the types admit
    no unknown field, so an array of messages nests 4 levels and holds only ids (64 characters
    at most), registry names and units; a run of number characters longer than a float literal
    may be sends the body to the slow path, and the integers' digit limit is a bound on their
    values; as many colons as decoded keys means no key was repeated. Under limits tighter than
    those (``max_depth`` below 4, ``max_string_chars`` below 64, ``max_number_digits`` below 4)
    it always answers ``None``.

    >>> raw = encode_device_message(device_id="dev-1", patient_id="pt-1", seq=1, sent_at=60_000,
    ...     readings=[("heart_rate", 1_000, 70.0)])
    >>> [(b.seq, b.points) for b in decode_valid_device_messages(b"[" + raw + b"," + raw + b"]")]
    [(1, [('heart_rate', 1000, 70.0)]), (1, [('heart_rate', 1000, 70.0)])]
    >>> decode_valid_device_messages(raw.replace(b"70.0", b"400.0")) is None  # impossible: the slow path says why
    True
    """
    return _valid_batches(raw, _VALID_DECODER, reference_ms, max_future_ms, limits)


def decode_valid_device_message(raw: bytes | None, *, reference_ms: int | None = None,
                                max_future_ms: int = MAX_FUTURE_MS, limits: Limits = DEFAULT_LIMITS) -> DeviceBatch | None:
    """One device message (never an array of them) when it and every reading is valid; else ``None``.

    The worker's fast path for one Kafka record: :func:`decode_valid_device_messages`' rules
    and guarantee, for exactly what :func:`decode_device_message` reads. When it returns a
    batch, ``decode_device_message(raw)`` with the same arguments returns the same batch, with
    no rejected reading; on ``None`` the caller takes that slow path, which names the fault.

    >>> raw = encode_device_message(device_id="dev-1", patient_id="pt-1", seq=1, sent_at=60_000,
    ...     readings=[("heart_rate", 1_000, 70.0)])
    >>> decode_valid_device_message(raw).points
    [('heart_rate', 1000, 70.0)]
    >>> decode_valid_device_message(b"[" + raw + b"]") is None  # an array is not one message
    True
    >>> decode_valid_device_message(raw, reference_ms=0, max_future_ms=10) is None  # in the future: slow path
    True
    """
    if raw is None:
        return None
    batches = _valid_batches(raw, _VALID_ONE_DECODER, reference_ms, max_future_ms, limits)
    return None if batches is None else batches[0]


def _valid_batches(raw: bytes, decoder: msgspec.json.Decoder[list[_ValidMessage] | _ValidMessage]
                   | msgspec.json.Decoder[_ValidMessage], reference_ms: int | None, max_future_ms: int,
                   limits: Limits) -> list[DeviceBatch] | None:
    """The body of :func:`decode_valid_device_messages`, with the msgspec decoder given."""
    digits = limits.max_number_digits
    if (type(raw) is not bytes or not 0 < len(raw) <= limits.max_message_bytes or limits.max_depth < _VALID_DEPTH
            or limits.max_string_chars < _VALID_STRING_CHARS or digits < _VALID_DIGITS
            or b"0" * (digits + 13) in raw.translate(_NUMBER_CHARS)):
        return None
    try:
        decoded = decoder.decode(raw)
    except (msgspec.DecodeError, ValueError):  # ValidationError too: a type, a field, a syntax error
        return None
    messages = decoded if isinstance(decoded, list) else [decoded]
    # The integers' digit limit, as bounds on the values: t and seq are positive, sent_at any integer.
    below = 10 ** digits
    latest = min(_NO_LIMIT if reference_ms is None else reference_ms + max_future_ms, below - 1)
    metric_of, unset = _VALID_METRIC, msgspec.UNSET
    keys = 0
    batches: list[DeviceBatch] = []
    for message in messages:
        readings = message.readings
        if (not valid_id(message.device_id) or not valid_id(message.patient_id) or message.seq >= below
                or not -below < message.sent_at < below or len(readings) > limits.max_readings):
            return None
        if latest < _NO_LIMIT and any(reading.t > latest for reading in readings):
            return None
        keys += _MESSAGE_KEYS + _READING_KEYS * len(readings) + sum(r.unit is not unset for r in readings)
        points = [(metric_of[type(r)], r.t, r.value) for r in readings]
        batches.append(DeviceBatch(message.device_id, message.patient_id, message.seq, points, []))
    if not batches or raw.count(b":") != keys:
        return None
    return batches


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
