"""The wire format's decoders: total on anything a sender writes, exact on what they encode, and the
device decoder's fast paths (a reading's, and the typed one of a valid upload) equal to its plain,
field-by-field checks."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernel.errors import InvalidMessage
from kernel.events import FeatureRow, RiskScore, VitalReading
from kernel.limits import ID_PATTERN, Limits, check_id, check_shape, clip, load_json
from kernel.vocabulary import METRICS
from kernel.wire import (PATIENT_ATTRIBUTES, PATIENT_CONDITIONS, DeviceBatch, PatientRecord, _point, _required,
                         check_device_message, decode_device_message, decode_feature_row, decode_patient,
                         decode_score, decode_valid_device_messages, encode_device_message, encode_feature_row,
                         encode_patient, encode_score)
from models.errors import InvalidOutcome, SnapshotRejected
from models.labelling import Outcome
from models.snapshots import Snapshot
from tests.kernel.hostile_records import HOSTILE_IDS, json_values, records

START = 1_767_571_200_000
RECORD_TS = START + 60_000
MAX_FUTURE = 60_000
ABSENT = object()
KEY = "k" * 32

ids = st.from_regex(ID_PATTERN, fullmatch=True)
names = st.text(min_size=1, max_size=30)
finite = st.floats(-1e12, 1e12, allow_nan=False)
probability = st.floats(0.0, 1.0, allow_nan=False)

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
    assert batch.readings == [VitalReading(patient_id="p", device_id="d", seq=3, metric=m, ts_ms=t, value=v) for m, t, v in good]


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


def _decoders() -> list[tuple[str, Callable[[bytes], object], type[Exception]]]:
    return [
        ("device", decode_device_message, InvalidMessage),
        ("device, with a clock", lambda raw: decode_device_message(raw, reference_ms=START, max_future_ms=0),
         InvalidMessage),
        ("score", decode_score, InvalidMessage),
        ("feature row", decode_feature_row, InvalidMessage),
        ("patient", decode_patient, InvalidMessage),
        # The models' decoders of sender-written records, held to the same rule.
        ("outcome", Outcome.from_bytes, InvalidOutcome),
        ("snapshot", lambda raw: Snapshot.from_bytes(raw, KEY), SnapshotRejected),
    ]


@pytest.mark.parametrize("name,decode,rejection", _decoders(), ids=[d[0] for d in _decoders()])
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=records)
def test_every_decoder_is_total(name: str, decode: Callable[[bytes], object], rejection: type[Exception],
                                raw: bytes) -> None:
    try:
        decode(raw)
    except rejection as exc:
        assert str(exc)  # a reason and a detail, never empty
        if isinstance(exc, InvalidMessage):
            assert exc.reason and exc.reason.isascii() and " " not in exc.reason


@pytest.mark.parametrize("patient_id", HOSTILE_IDS)
def test_hostile_ids_are_refused_at_the_door(patient_id: str) -> None:
    body = {"schema": "vitalrisk.device/1", "device_id": "dev-1", "patient_id": patient_id, "seq": 1,
            "sent_at": START, "readings": [{"metric": "heart_rate", "t": START, "value": 70.0}]}
    raw = json.dumps(body).encode()
    with pytest.raises(InvalidMessage) as caught:
        decode_device_message(raw, limits=Limits(max_message_bytes=2_000_000, max_string_chars=1_000_000))
    assert caught.value.reason in {"invalid_id", "missing_field"}
    assert "\n" not in caught.value.detail and len(caught.value.detail) < 200


valid_points = st.lists(st.sampled_from(sorted(METRICS)).flatmap(lambda m: st.tuples(
    st.just(m), st.integers(1, 2**62), st.floats(METRICS[m].lowest, METRICS[m].highest, allow_nan=False))),
    max_size=20)


@settings(max_examples=200, deadline=None)
@given(device_id=ids, patient_id=ids, seq=st.integers(0, 2**63 - 1), points=valid_points)
def test_a_device_message_decodes_to_exactly_what_was_encoded(device_id: str, patient_id: str, seq: int,
                                                              points: list[tuple[str, int, float]]) -> None:
    raw = encode_device_message(device_id=device_id, patient_id=patient_id, seq=seq, sent_at=START,
                                readings=points)
    batch = decode_device_message(raw)
    assert (batch.device_id, batch.patient_id, batch.seq) == (device_id, patient_id, seq)
    assert batch.points == points and batch.rejected == []


def test_a_reading_at_the_clock_skew_limit_counts_and_one_ms_later_is_future() -> None:
    limit = RECORD_TS + MAX_FUTURE
    raw = encode_device_message(device_id="d", patient_id="p", seq=1, sent_at=START,
                                readings=[("heart_rate", limit, 70.0), ("heart_rate", limit + 1, 70.0)])
    batch = decode_device_message(raw, reference_ms=RECORD_TS, max_future_ms=MAX_FUTURE)
    assert batch.points == [("heart_rate", limit, 70.0)]
    assert [(r.index, r.reason) for r in batch.rejected] == [(1, "future_timestamp")]
    assert len(decode_device_message(raw).points) == 2, "no reference time: no clock check"
    edge = {"metric": "heart_rate", "t": limit, "value": 70.0}
    assert _point(edge, RECORD_TS, MAX_FUTURE) == ("heart_rate", limit, 70.0), "the field checks agree"
    with pytest.raises(InvalidMessage, match="future_timestamp"):
        _point({**edge, "t": limit + 1}, RECORD_TS, MAX_FUTURE)


def test_the_encoder_writes_what_the_standard_library_wrote() -> None:
    """msgspec writes the message; a value it cannot write (NaN, a lone surrogate) falls back to json.dumps."""
    points = [("heart_rate", START, 70.0), ("body_temperature", START + 1, 36.65), ("step_count", START + 2, 1e-7)]
    raw = encode_device_message(device_id="dev-1", patient_id="pt-1", seq=2**63 - 1, sent_at=START, readings=points)
    old = json.dumps({"schema": "vitalrisk.device/1", "device_id": "dev-1", "patient_id": "pt-1", "seq": 2**63 - 1,
                      "sent_at": START, "readings": [{"metric": m, "t": t, "value": v, "unit": METRICS[m].unit}
                                                     for m, t, v in points]}, separators=(",", ":")).encode()
    assert json.loads(raw) == json.loads(old)
    for value in (math.nan, math.inf, -math.inf):
        hostile = encode_device_message(device_id="d", patient_id="p", seq=1, sent_at=START,
                                        readings=[("heart_rate", START, value)])
        assert decode_device_message(hostile).rejected[0].reason == "impossible_value"
    surrogate = encode_device_message(device_id="d\ud800", patient_id="p", seq=1, sent_at=START, readings=[])
    assert json.loads(surrogate)["device_id"] == "d\ud800"
    with pytest.raises(KeyError):
        encode_device_message(device_id="d", patient_id="p", seq=1, sent_at=START, readings=[("pulse", 1, 1.0)])


def test_more_readings_than_the_limit_refuse_the_whole_message() -> None:
    raw = encode_device_message(device_id="d", patient_id="p", seq=1, sent_at=START,
                                readings=[("heart_rate", START, 70.0)] * 4)
    assert len(decode_device_message(raw, limits=Limits(max_readings=4)).points) == 4
    with pytest.raises(InvalidMessage) as caught:
        decode_device_message(raw, limits=Limits(max_readings=3))
    assert caught.value.reason == "too_many_readings"


scores = st.builds(
    lambda patient, start, length, names, score, total, inputs, contributions, missing, risks, subscores:
    RiskScore(patient_id=patient, window_start_ms=start, window_end_ms=start + length, model_name=names[0], model_version=names[1], score=score, news2_total=total, news2_band=names[2], inputs=inputs, contributions=contributions,
              missing_inputs=tuple(missing), risks=risks, news2_subscores=subscores),
    ids, st.integers(0, 2**62), st.integers(0, 10**9), st.tuples(names, names, names), probability,
    st.integers(0, 20), st.dictionaries(names, finite, max_size=5), st.dictionaries(names, finite, max_size=5),
    st.lists(names, max_size=3), st.dictionaries(names, probability, max_size=5),
    st.dictionaries(names, st.integers(0, 3), max_size=7))


@settings(max_examples=200, deadline=None)
@given(score=scores)
def test_a_score_decodes_to_the_score_encoded(score: RiskScore) -> None:
    assert decode_score(encode_score(score)) == score


@settings(max_examples=200, deadline=None)
@given(patient=ids, ts_ms=st.integers(0, 2**63 - 1), x=st.dictionaries(names, finite, max_size=30))
def test_a_feature_row_decodes_to_the_row_encoded(patient: str, ts_ms: int, x: dict[str, float]) -> None:
    row = FeatureRow(patient_id=patient, ts_ms=ts_ms, x=x)
    assert decode_feature_row(encode_feature_row(row)) == row


@given(patient=ids, groups=st.fixed_dictionaries({}, optional={a: st.sampled_from(v)
                                                              for a, v in PATIENT_ATTRIBUTES.items()}),
       conditions=st.one_of(st.none(), st.sets(st.sampled_from(PATIENT_CONDITIONS))))
def test_a_patient_record_decodes_to_the_record_encoded(patient: str, groups: dict[str, str],
                                                        conditions: set[str] | None) -> None:
    ordered = None if conditions is None else tuple(c for c in PATIENT_CONDITIONS if c in conditions)
    record = PatientRecord(patient, groups, ordered)
    assert decode_patient(encode_patient(record)) == record


@pytest.mark.parametrize("change,reason", [
    ({"score": 1.5}, "impossible_value"),
    ({"risks": {"any": -0.1}}, "impossible_value"),
    ({"news2_total": 21}, "impossible_value"),
    ({"window_end": 0}, "impossible_value"),
    ({"model_name": ""}, "missing_field"),
    ({"inputs": {"heart_rate": True}}, "wrong_type"),
    ({"missing_inputs": [1]}, "wrong_type"),
    ({"patient_id": "Jane Doe"}, "invalid_id"),
    ({"schema": "vitalrisk.score/2"}, "unknown_schema"),
])
def test_a_score_breaking_a_rule_is_refused_with_its_reason(change: dict[str, object], reason: str) -> None:
    good = RiskScore(patient_id="pt-1", window_start_ms=START, window_end_ms=START + 60_000, model_name="news2", model_version="rcp-2017-scale1", score=0.15, news2_total=3, news2_band="low-medium", inputs={}, contributions={},
                     risks={"any": 0.2})
    body = {**json.loads(encode_score(good)), **change}
    with pytest.raises(InvalidMessage) as caught:
        decode_score(json.dumps(body).encode())
    assert caught.value.reason == reason


def test_an_integer_too_large_for_a_float_is_refused_not_an_overflow() -> None:
    """With the digit limit raised past 308, a 400-digit value still gets a reason, not an OverflowError."""
    generous = Limits(max_number_digits=500)
    raw = json.dumps({"schema": "vitalrisk.device/1", "device_id": "d1", "patient_id": "pt-1", "seq": 1,
                      "sent_at": 1, "readings": [{"metric": "heart_rate", "t": 5, "value": 10**400}]}).encode()
    assert [r.reason for r in decode_device_message(raw, limits=generous).rejected] == ["impossible_value"]
    score = json.loads(encode_score(RiskScore(
        patient_id="pt-1", window_start_ms=0, window_end_ms=60_000, model_name="news2", model_version="1",
        score=0.5, news2_total=1, news2_band="low", inputs={"heart_rate": 70.0}, contributions={})))
    score["inputs"]["heart_rate"] = 10**400
    with pytest.raises(InvalidMessage, match="finite"):
        decode_score(json.dumps(score).encode(), limits=generous)


# -- the typed fast path of a valid upload: the same answer as the two steps, or none ------------

def _two_steps(raw: bytes, limits: Limits, reference_ms: int | None) -> list[DeviceBatch] | None:
    """The messages of ``raw`` by the worker's rules (read within limits, then each message checked),
    or ``None`` when any step refuses it or any reading is rejected."""
    try:
        document = load_json(raw, limits)
        items = document if isinstance(document, list) else [document]
        batches = []
        for item in items:
            check_shape(item, limits)
            batches.append(check_device_message(item, reference_ms=reference_ms, max_future_ms=MAX_FUTURE,
                                                limits=limits))
    except InvalidMessage:
        return None
    return batches if items and not any(b.rejected for b in batches) else None


def _fast(raw: bytes, limits: Limits, reference_ms: int | None) -> list[DeviceBatch] | None:
    return decode_valid_device_messages(raw, reference_ms=reference_ms, max_future_ms=MAX_FUTURE, limits=limits)


LIMIT_CASES = [Limits(), Limits(max_number_digits=13), Limits(max_number_digits=4), Limits(max_number_digits=3),
               Limits(max_readings=2), Limits(max_string_chars=64), Limits(max_depth=4), Limits(max_depth=3),
               Limits(max_string_chars=63), Limits(max_message_bytes=300)]
clock = st.one_of(st.none(), st.just(RECORD_TS))


def _valid_message(seq: int, points: list[tuple[str, int, float]]) -> dict[str, Any]:
    return json.loads(encode_device_message(device_id="dev-1", patient_id="pt-9", seq=seq, sent_at=START,
                                            readings=points))


@settings(max_examples=200, deadline=None)
@given(messages=st.lists(st.tuples(st.integers(0, 2**63 - 1), valid_points), min_size=1, max_size=4),
       array=st.booleans(), style=st.sampled_from(["compact", "spaced", "indented", "no unit", "int values"]))
def test_valid_messages_take_the_fast_path_with_the_two_steps_answer(messages, array, style) -> None:
    bodies = [_valid_message(seq, points) for seq, points in messages]
    if style == "no unit":
        for body in bodies:
            for reading in body["readings"]:
                del reading["unit"]
    if style == "int values":
        for body in bodies:
            for reading in body["readings"]:
                reading["value"] = int(reading["value"])
    document = bodies if array or len(bodies) > 1 else bodies[0]
    raw = {"compact": json.dumps(document, separators=(",", ":")), "spaced": json.dumps(document),
           "indented": json.dumps(document, indent=2), "no unit": json.dumps(document),
           "int values": json.dumps(document)}[style].encode()
    fast = _fast(raw, Limits(), None)
    assert fast is not None and fast == _two_steps(raw, Limits(), None)
    if not array and len(bodies) == 1:
        assert fast == [decode_device_message(raw)]


def _mutations(document: object) -> list[tuple[Any, ...]]:
    paths: list[tuple[Any, ...]] = [()]
    if isinstance(document, dict):
        paths += [(key, *rest) for key, value in document.items() for rest in _mutations(value)]
    elif isinstance(document, list):
        paths += [(i, *rest) for i, value in enumerate(document) for rest in _mutations(value)]
    return paths


def _set(document: Any, path: tuple[Any, ...], value: object, *, delete: bool) -> object:
    if not path:
        return value
    node = document
    for part in path[:-1]:
        node = node[part]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return document


TEXT_ATTACKS = [  # (pattern, replacement) on the compact bytes: what no parsed value can say
    (rb'"seq":', b'"seq":1,"seq":'), (rb'"unit":', b'"unit":"x","unit":'), (rb'"t":', b'"t":1,"t":'),
    (rb'"device_id":"dev-1"', b'"device_id":"dev:1"'), (rb'"patient_id":"pt-9"', b'"patient_id":"pt-9:a"'),
    (rb'"device_id":"dev-1"', b'"device_id":"dev 1"'), (rb'"patient_id":"pt-9"', b'"patient_id":"pt-9\\n"'),
    (rb'"device_id":"dev-1"', b'"device_id":""'), (rb'"patient_id":"pt-9"', b'"patient_id":"' + b"p" * 65 + b'"'),
    (rb"^", b"\xef\xbb\xbf"), (rb'"value":[-0-9.eE+]+', b'"value":NaN'), (rb'"value":[-0-9.eE+]+', b'"value":1e999'),
    (rb'"dev-1"', b'"\\u0064ev-1"'), (rb'"pt-9"', b'"pt\\u002d9"'), (rb"}", b', "extra": 1}'), (rb"]", b", null]"),
    (rb'"schema"', b'"sch\\u0065ma"'), (rb'"seq":\d+', b'"seq":-0'), (rb'"t":\d+', b'"t":true'),
    # number literals as long as the digit limit allows, and one character longer
    (rb'("value":-?\d+)(?=[,}])', rb"\1.%(zeros)s"), (rb'("value":-?\d+\.\d+)(?=[,}])', rb"\1%(zeros)s"),
    (rb'("value":[-0-9.]+)(?=[,}])', rb"\1e+%(zeros)s"), (rb'"sent_at":\d+', rb'"sent_at":1%(zeros)s'),
    (rb'"t":\d+', rb'"t":1%(zeros)s'), (rb'"seq":\d+', rb'"seq":1%(zeros)s')]


def mutated(document: Any, data: st.DataObject, limits: Limits) -> bytes:
    """``document`` as bytes after one drawn attack: a value replaced or deleted, a text attack, or none."""
    how = data.draw(st.sampled_from(["replace", "delete", "text", "none"]))
    if how in ("replace", "delete"):
        path = data.draw(st.sampled_from(_mutations(document)))
        if how == "replace" or path:
            document = _set(document, path, data.draw(json_values), delete=how == "delete")
    raw = json.dumps(document, allow_nan=True, separators=(",", ":")).encode("utf-8", "surrogatepass")
    if how == "text":
        pattern, replacement = data.draw(st.sampled_from(TEXT_ATTACKS))
        zeros = b"0" * data.draw(st.integers(0, limits.max_number_digits + 14))
        text = replacement.replace(b"%(zeros)s", zeros)  # literal, but for a leading \1 (the matched group)
        raw = re.sub(pattern, lambda m: m.group(1) + text[2:] if text.startswith(rb"\1") else text, raw, count=1)
    return raw


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=st.lists(st.tuples(st.integers(0, 5), valid_points), min_size=1, max_size=3), data=st.data(),
       limits=st.sampled_from(LIMIT_CASES), reference_ms=clock)
def test_a_mutated_upload_is_never_answered_otherwise_than_by_the_two_steps(messages, data, limits,
                                                                            reference_ms) -> None:
    document: Any = [_valid_message(seq, points) for seq, points in messages]
    if len(document) == 1 and data.draw(st.booleans()):
        document = document[0]
    raw = mutated(document, data, limits)
    fast = _fast(raw, limits, reference_ms)
    if fast is not None:
        assert fast == _two_steps(raw, limits, reference_ms)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=records, limits=st.sampled_from(LIMIT_CASES))
def test_hostile_records_are_never_answered_otherwise_than_by_the_two_steps(raw: bytes, limits: Limits) -> None:
    fast = _fast(raw, limits, None)
    if fast is not None:
        assert fast == _two_steps(raw, limits, None)


def test_what_the_fast_path_leaves_to_the_two_steps() -> None:
    good = encode_device_message(device_id="dev-1", patient_id="pt-1", seq=1, sent_at=START,
                                 readings=[("heart_rate", START, 70.0)])
    assert _fast(good, Limits(), None) == [decode_device_message(good)]
    for raw in [good.replace(b'"seq":1', b'"seq":1,"seq":2'),  # a repeated key: the reader refuses it
                good.replace(b"70.0", b"70." + b"0" * 30),  # a float literal longer than the digit limit
                good.replace(b"dev-1", b"dev:1"),  # valid, but its colon defeats the repeated-key count
                good.replace(b"dev-1", b"dev 1"), good.replace(b"pt-1", b"pt-1\\n"), good.replace(b"pt-1", b""),
                good.replace(b'"unit":"beats/min"', b'"unit":"bpm"'), good.replace(b"70.0", b"NaN"),
                b"[]", b"[" + good + b",1]", good[:-1] + b',"x":1}', b"\xef\xbb\xbf" + good]:
        assert _fast(raw, Limits(), None) is None
    assert _fast(good, Limits(max_string_chars=63), None) is None and _fast(good, Limits(max_depth=3), None) is None
    edge = encode_device_message(device_id="dev-1", patient_id="pt-1", seq=1, sent_at=START,
                                 readings=[("heart_rate", RECORD_TS + MAX_FUTURE, 70.0)])
    assert _fast(edge, Limits(), RECORD_TS) == _two_steps(edge, Limits(), RECORD_TS) is not None
    late = edge.replace(str(RECORD_TS + MAX_FUTURE).encode(), str(RECORD_TS + MAX_FUTURE + 1).encode())
    assert _fast(late, Limits(), RECORD_TS) is None and _fast(late, Limits(), None) is not None


@pytest.mark.parametrize("digits", [3, 4, 13, 20])
def test_the_digit_limit_holds_on_every_number_the_fast_path_reads(digits: int) -> None:
    """At the digit limit and one past it, on each integer field and on a float literal's length."""
    limits = Limits(max_number_digits=digits)
    body = {"schema": "vitalrisk.device/1", "device_id": "dev-1", "patient_id": "pt-1", "seq": 1, "sent_at": 1,
            "readings": [{"metric": "step_count", "t": 1, "value": 1000}]}
    cases = []
    for n in (digits, digits + 1):
        cases += [{**body, "seq": 10**n - 1}, {**body, "sent_at": 10**n - 1}, {**body, "sent_at": 1 - 10**n},
                  {**body, "readings": [{"metric": "step_count", "t": 10**n - 1, "value": 1000}]}]
    raws = [json.dumps(case).encode() for case in cases]
    for length in (digits + 12, digits + 13):  # characters of a float literal: "1." and zeros
        raws.append(json.dumps(body).encode().replace(b"1000}", b"1." + b"0" * (length - 2) + b"}"))
    answers = [(_fast(raw, limits, None), _two_steps(raw, limits, None)) for raw in raws]
    assert all(fast is None or fast == slow for fast, slow in answers)
    # Below 4 digits a step count of 1000 breaks the limit and the fast path stands aside; past
    # 19, a t beyond 2**63 (valid without a clock) is left to the two steps.
    accepted, answered = {3: 1, 4: 5, 13: 5, 20: 4}[digits], {3: 0, 4: 5, 13: 5, 20: 3}[digits]
    assert (sum(slow is not None for _, slow in answers), sum(fast is not None for fast, _ in answers)) == (
        accepted, answered)
