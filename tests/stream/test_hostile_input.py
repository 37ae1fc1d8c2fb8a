"""Any bytes into any decoder, and into the core: a value or the typed rejection, nothing else.

Arbitrary bytes, arbitrary JSON (deep, huge, wrong types, hostile strings) and the attacks of the
issue that started this (a 100,000-deep nest, 5,000-digit numbers, ids with NUL, lone surrogates,
newlines or 900 KB, a fast clock, a flood of invented devices). Dead letters stay within their
bound: one per record, never more bytes out than in plus :data:`stream.deadletters.MAX_HEADER_BYTES`.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.errors import InvalidOutcome, SnapshotRejected
from models.labelling import Outcome
from models.snapshots import Snapshot
from stream.deadletters import MAX_HEADER_BYTES, DeadLetterRecord, deadletter_headers
from kernel.errors import InvalidMessage
from kernel.limits import Limits
from stream.pipeline import VitalsPipeline
from kernel.wire import (decode_device_message, decode_feature_row, decode_patient, decode_score,
                         encode_device_message)

START = 1_767_571_200_000
KEY = "k" * 32

hostile_text = st.one_of(
    st.text(max_size=80),
    st.sampled_from(["", "pt\x00", "\ud800", "pt-1\nINFO forged log line", "x" * 300, "Jane Doe", "../../etc",
                     "pt-1", "dev-1", "heart_rate", "beats/min", "vitalrisk.device/1", "vitalrisk.score/1"]),
)
leaf = st.one_of(st.none(), st.booleans(), st.integers(-(10**25), 10**25), st.floats(allow_nan=True),
                 hostile_text)
json_values = st.recursive(leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(hostile_text, inner, max_size=5)), max_leaves=30)


def device_like(draw_readings: st.SearchStrategy) -> st.SearchStrategy:
    """A device message with every field possibly wrong."""
    return st.fixed_dictionaries({
        "schema": st.one_of(st.just("vitalrisk.device/1"), json_values),
        "device_id": st.one_of(st.just("dev-1"), hostile_text, json_values),
        "patient_id": st.one_of(st.just("pt-1"), hostile_text, json_values),
        "seq": st.one_of(st.integers(-5, 10**22), json_values),
        "sent_at": st.one_of(st.just(START), json_values),
        "readings": st.one_of(st.lists(draw_readings, max_size=8), json_values),
    })


readings_like = st.one_of(json_values, st.fixed_dictionaries({
    "metric": st.one_of(st.sampled_from(["heart_rate", "oxygen_saturation"]), json_values),
    "t": st.one_of(st.integers(-1, START + 10**12), json_values),
    "value": st.one_of(st.floats(allow_nan=True), st.integers(-(10**21), 10**21), json_values),
    "unit": st.one_of(st.sampled_from(["beats/min", "%"]), json_values)}))

structured = st.one_of(json_values, device_like(readings_like), st.fixed_dictionaries({
    "schema": st.sampled_from(["vitalrisk.score/1", "vitalrisk.features/1", "vitalrisk.patient/1",
                               "vitalrisk.outcome/1"]),
    "patient_id": st.one_of(st.just("pt-1"), hostile_text), "t": json_values, "x": json_values,
    "window_start": json_values, "window_end": json_values, "score": json_values, "inputs": json_values,
    "kind": json_values, "onset": json_values, "sex": json_values, "conditions": json_values}))


def _bytes_of(value: object) -> bytes:
    return json.dumps(value, allow_nan=True).encode("utf-8", "surrogatepass")


records = st.one_of(st.binary(max_size=300), structured.map(_bytes_of),
                    st.sampled_from([b"[" * 100_000 + b"]" * 100_000, b'{"seq": ' + b"9" * 5_000 + b"}",
                                     b'{"a": ' * 50_000 + b"1" + b"}" * 50_000, b"", b"\xff\xfe", b"null",
                                     b'{"schema": "vitalrisk.device/1", "schema": "x"}']))


def _decoders() -> list[tuple[str, Callable[[bytes], object], type[Exception]]]:
    return [
        ("device", decode_device_message, InvalidMessage),
        ("device, with a clock", lambda raw: decode_device_message(raw, reference_ms=START, max_future_ms=0),
         InvalidMessage),
        ("score", decode_score, InvalidMessage),
        ("feature row", decode_feature_row, InvalidMessage),
        ("patient", decode_patient, InvalidMessage),
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


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raws=st.lists(records, min_size=1, max_size=6))
def test_the_core_takes_anything_and_bounds_its_dead_letters(raws: list[bytes]) -> None:
    core = VitalsPipeline(window_ms=60_000, grace_ms=0, max_future_ms=60_000, carry_ms=3_600_000)
    for offset, raw in enumerate(raws):
        step = core.on_message(raw, partition=0, offset=offset, record_ts_ms=START, now_ms=START)
        assert len(step.dead_letters) <= 1, "one dead letter per record"
        for letter in step.dead_letters:
            assert letter.payload == raw, "the record's own bytes, once"
            headers = deadletter_headers(letter, topic="vitals.readings", partition=0, offset=offset,
                                         record_ts_ms=START)
            extra = sum(len(k) + len(v) for k, v in headers)
            assert extra <= MAX_HEADER_BYTES
            back = DeadLetterRecord.from_kafka(0, offset, START, None, letter.payload, headers)
            assert back.reason == letter.reason and back.counts == letter.counts


def test_a_thousand_bad_readings_make_one_dead_letter_no_bigger_than_their_message() -> None:
    raw = encode_device_message(device_id="dev-1", patient_id="pt-" + "a" * 61, seq=1, sent_at=START,
                                readings=[("heart_rate", START, 999.0)] * 1_000)
    core = VitalsPipeline(window_ms=60_000, grace_ms=0, max_future_ms=60_000, carry_ms=3_600_000)
    letter, = core.on_message(raw, partition=0, offset=0, record_ts_ms=START).dead_letters
    assert letter.counts == {"impossible_value": 1_000} and letter.payload == raw
    headers = deadletter_headers(letter, topic="t", partition=0, offset=0, record_ts_ms=START)
    assert len(letter.payload) + sum(len(k) + len(v) for k, v in headers) <= len(raw) + MAX_HEADER_BYTES


@pytest.mark.parametrize("patient_id", ["pt\x00", "\ud800", "pt-1\nforged", "x" * 900_000, "Jane Doe", ""])
def test_hostile_ids_are_refused_at_the_door(patient_id: str) -> None:
    body = {"schema": "vitalrisk.device/1", "device_id": "dev-1", "patient_id": patient_id, "seq": 1,
            "sent_at": START, "readings": [{"metric": "heart_rate", "t": START, "value": 70.0}]}
    raw = json.dumps(body).encode()
    with pytest.raises(InvalidMessage) as caught:
        decode_device_message(raw, limits=Limits(max_message_bytes=2_000_000, max_string_chars=1_000_000))
    assert caught.value.reason in {"invalid_id", "missing_field"}
    assert "\n" not in caught.value.detail and len(caught.value.detail) < 200


def test_a_fast_clock_is_refused_alone_and_moves_no_watermark() -> None:
    core = VitalsPipeline(window_ms=60_000, grace_ms=0, max_future_ms=60_000, carry_ms=3_600_000)
    now = START + 10 * 60_000
    forged = encode_device_message(device_id="dev-fast", patient_id="pt-fast", seq=1, sent_at=now + 3_900_000,
                                   readings=[("heart_rate", now + 3_900_000, 70.0)])
    # the sender set its record time an hour ahead too; the worker's clock still bounds it
    step = core.on_message(forged, partition=0, offset=0, record_ts_ms=now + 3_900_000, now_ms=now)
    assert [d.reason for d in step.dead_letters] == ["future_timestamp"]
    assert core.watermark_ms(0) is None
    honest = encode_device_message(device_id="dev-1", patient_id="pt-1", seq=1, sent_at=now,
                                   readings=[("heart_rate", now - 30_000, 70.0)])
    step = core.on_message(honest, partition=0, offset=1, record_ts_ms=now, now_ms=now)
    assert not step.dead_letters and step.readings == 1


def test_invented_devices_are_forgotten_least_recently_seen_first() -> None:
    core = VitalsPipeline(window_ms=60_000, grace_ms=0, max_future_ms=60_000, carry_ms=3_600_000,
                          limits=Limits(max_devices=100))
    forgotten = 0
    for i in range(1_000):
        raw = encode_device_message(device_id=f"dev-{i}", patient_id="pt-1", seq=1, sent_at=START,
                                    readings=[("heart_rate", START, 70.0)])
        forgotten += core.on_message(raw, partition=0, offset=i, record_ts_ms=START).devices_forgotten
    assert forgotten == 900 and len(core._partitions[0].seqs) == 100
