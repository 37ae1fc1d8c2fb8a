"""The core's fast paths give exactly what their plain forms give: validation, window statistics."""

from __future__ import annotations

import json
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from kernel.errors import InvalidMessage
from kernel.events import MetricStats, VitalReading
from kernel.limits import check_id, clip
from kernel.vocabulary import METRICS
from stream.windows import MS_PER_MINUTE, summarise
from kernel.wire import _point, _required, decode_device_message

START = 1_767_571_200_000
RECORD_TS = START + 60_000
MAX_FUTURE = 60_000
ABSENT = object()

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10, 2 * START), st.floats(allow_nan=True),
                         st.sampled_from(["", "x", "beats/min", "%", "heart_rate"]))
good_reading = st.builds(
    lambda metric, dt, frac: {"metric": metric, "t": START + dt, "value": METRICS[metric].lowest + frac * (
        METRICS[metric].highest - METRICS[metric].lowest), "unit": METRICS[metric].unit},
    st.sampled_from(sorted(METRICS)), st.integers(-START, 3 * MAX_FUTURE), st.floats(-0.1, 1.1))
# A reading with one part broken, missing or oddly typed, or something that is not a reading at all.
odd_reading = st.one_of(
    st.tuples(good_reading, st.sampled_from(["metric", "t", "value", "unit"]),
              st.one_of(json_scalars, st.lists(st.integers(-10**18, 10**18), max_size=2), st.just({"a": 1})))
    .map(lambda g: {**g[0], g[1]: g[2]}),
    st.tuples(good_reading, st.sampled_from(["metric", "t", "value", "unit"]))
    .map(lambda g: {k: v for k, v in g[0].items() if k != g[1]}),
    good_reading.map(lambda r: {**r, "value": int(r["value"])}),
    json_scalars, st.lists(st.integers(-10**18, 10**18), max_size=2))


def _plain_decode(body: dict, reference_ms: int | None) -> tuple[list, list[str]]:
    """What decoding gives with every reading checked by the slow path, which names each fault."""
    good, reasons = [], []
    for item in body["readings"]:
        try:
            good.append(_point(item, reference_ms, MAX_FUTURE))
        except InvalidMessage as exc:
            reasons.append(f"{exc.reason}: {exc.detail}")
    return good, reasons


@settings(max_examples=300, deadline=None)
@given(readings=st.lists(st.one_of(good_reading, odd_reading), max_size=8),
       reference_ms=st.one_of(st.none(), st.just(RECORD_TS)))
def test_the_reading_fast_path_accepts_and_rejects_exactly_as_the_slow_path(readings, reference_ms) -> None:
    body = {"schema": "vitalrisk.device/1", "device_id": "d", "patient_id": "p", "seq": 3, "sent_at": START,
            "readings": readings}
    batch = decode_device_message(json.dumps(body).encode(), reference_ms=reference_ms, max_future_ms=MAX_FUTURE)
    good, reasons = _plain_decode(json.loads(json.dumps(body)), reference_ms)
    assert batch.points == good
    assert [f"{d.reason}: {d.detail}" for d in batch.rejected] == reasons
    assert batch.readings == [VitalReading("p", "d", 3, m, t, v) for m, t, v in good]


def _plain_envelope_fault(body: dict) -> str | None:
    """The first envelope fault as checked field by field, or ``None``."""
    try:
        fields = [_required(body, name, kind) for name, kind in (
            ("device_id", str), ("patient_id", str), ("seq", int), ("sent_at", int), ("readings", list))]
        if not (fields[0] and fields[1]):
            return "missing_field: device_id and patient_id must be non-empty"
        check_id(fields[0], "device_id")
        check_id(fields[1], "patient_id")
        if not 0 <= fields[2] < 2**63:
            return f"impossible_value: seq must lie in [0, 2**63), got {clip(fields[2])}"
    except InvalidMessage as exc:
        return f"{exc.reason}: {exc.detail}"
    return None


@settings(max_examples=200, deadline=None)
@given(field=st.sampled_from(["device_id", "patient_id", "seq", "sent_at", "readings"]),
       value=st.one_of(json_scalars, st.lists(st.integers(-10**18, 10**18), max_size=1), st.none().map(lambda _: ABSENT)))
def test_a_broken_envelope_is_named_as_by_the_field_checks(field, value) -> None:
    body = {"schema": "vitalrisk.device/1", "device_id": "d", "patient_id": "p", "seq": 3, "sent_at": START,
            "readings": []}
    if value is ABSENT:
        del body[field]
    else:
        body[field] = value
    try:
        decode_device_message(json.dumps(body).encode())
        fault = None
    except InvalidMessage as exc:
        fault = f"{exc.reason}: {exc.detail}"
    assert fault == _plain_envelope_fault(body)


def test_a_reading_whose_metric_is_not_a_name_is_dead_lettered() -> None:
    body = {"schema": "vitalrisk.device/1", "device_id": "d", "patient_id": "p", "seq": 1, "sent_at": START,
            "readings": [{"metric": ["heart_rate"], "t": START, "value": 70.0}]}
    batch = decode_device_message(json.dumps(body).encode())
    assert batch.points == [] and [d.reason for d in batch.rejected] == ["wrong_type"]


def _plain_summarise(points: list[tuple[int, float]]) -> MetricStats:
    """Window statistics spelled out term by term: the definition summarise must match bit for bit."""
    n = len(points)
    if n == 1:
        value = points[0][1]
        return MetricStats(1, value, value, value, 0.0, value, 0.0, 0.0)
    points = sorted(points)
    values = [v for _, v in points]
    mean = sum(values) / n
    var = sum((v - mean) * (v - mean) for v in values) / n
    t0 = points[0][0]
    minutes = [(t - t0) / MS_PER_MINUTE for t, _ in points]
    t_mean = sum(minutes) / n
    sxx = sum((t - t_mean) * (t - t_mean) for t in minutes)
    slope = sum((t - t_mean) * (v - mean) for t, v in zip(minutes, values)) / sxx if sxx > 0 else 0.0
    rmssd = math.sqrt(sum((b - a) * (b - a) for a, b in zip(values, values[1:])) / (n - 1))
    return MetricStats(n, mean, min(values), max(values), math.sqrt(var), values[-1], slope, rmssd)


@settings(max_examples=500, deadline=None)
@given(points=st.lists(st.tuples(st.integers(START, START + 59_999),
                                 st.one_of(st.floats(0, 1000, allow_nan=False),
                                           st.integers(0, 300).map(float),
                                           st.floats(20, 300, allow_nan=False).map(lambda v: round(v, 1)))),
                       min_size=1, max_size=40))
def test_summarise_is_bit_for_bit_the_plain_definition(points) -> None:
    assert summarise(points) == _plain_summarise(points)
