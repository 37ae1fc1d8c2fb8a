"""Native ``vitalrisk.device/1`` uploads: exactly what the worker's decoder accepts, and nothing partial."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.native import parse_native, parse_valid_native
from gateway.outcome import UploadRefused
from gateway.uploads import parse_upload, read_limits
from kernel.limits import Limits, load_json
from kernel.wire import decode_device_message, encode_device_message
from tests.gateway.resources import START, single_readings
from tests.kernel.hostile_records import json_values

LIMITS = Limits()


def _message(seq: int = 1, readings: list[tuple[str, int, float]] | None = None, **fields: Any) -> dict[str, Any]:
    raw = encode_device_message(device_id="dev-1", patient_id="pt-1", seq=seq, sent_at=START + 60_000,
                                readings=readings if readings is not None else [("heart_rate", START, 71.0)])
    return {**json.loads(raw), **fields}


def _upload(document: object) -> list[tuple[str, str | None, int | None, tuple[tuple[str, int, float], ...]]]:
    upload = parse_upload(json.dumps(document).encode(), content_type="application/json", limits=LIMITS)
    assert upload.format == "native"
    return [(m.patient_id, m.device_id, m.seq, m.readings) for m in upload.messages]


def _refusal(document: object, limits: Limits = LIMITS) -> UploadRefused:
    with pytest.raises(UploadRefused) as caught:
        parse_upload(json.dumps(document).encode(), content_type="application/json", limits=limits)
    return caught.value


def test_one_message_and_a_batch() -> None:
    assert _upload(_message()) == [("pt-1", "dev-1", 1, (("heart_rate", START, 71.0),))]
    batch = [_message(seq) for seq in range(3)]
    assert [seq for _, _, seq, _ in _upload(batch)] == [0, 1, 2]


def test_an_empty_message_is_a_message() -> None:
    assert _upload(_message(readings=[])) == [("pt-1", "dev-1", 1, ())]
    assert _refusal([]).reason == "empty_batch"


def test_one_bad_reading_refuses_the_upload_naming_each() -> None:
    batch = [_message(0), _message(1, [("heart_rate", START, 71.0), ("heart_rate", START, 400.0),
                                       ("oxygen_saturation", START, 101.0)])]
    refused = _refusal(batch)
    assert (refused.status, refused.reason) == (422, "impossible_value")
    assert [(i.reason, i.expression) for i in refused.issues] == [
        ("impossible_value", "$[1].readings[1]"), ("impossible_value", "$[1].readings[2]")]
    assert refused.issues[0].detail.startswith("reading 1: heart_rate must lie in")


@pytest.mark.parametrize(("fields", "status", "reason", "expression"), [
    ({"patient_id": "Jane Doe"}, 422, "invalid_id", "$.patient_id"),
    ({"device_id": "dev 1"}, 422, "invalid_id", "$.device_id"),
    ({"seq": -1}, 422, "impossible_value", "$.seq"),
    ({"seq": "1"}, 400, "wrong_type", "$.seq"),
    ({"sent_at": None}, 400, "wrong_type", "$.sent_at"),
    ({"schema": "vitalrisk.device/2"}, 400, "unknown_schema", "$.schema"),
    ({"readings": {}}, 400, "wrong_type", "$.readings"),
])
def test_envelope_refusals(fields: dict[str, Any], status: int, reason: str, expression: str) -> None:
    refused = _refusal({**_message(), **fields})
    assert (refused.status, refused.reason, [i.expression for i in refused.issues]) == (status, reason, [expression])
    assert "Jane" not in str(refused)


def test_missing_field_and_too_many_readings() -> None:
    message = _message()
    del message["seq"]
    assert [i.expression for i in _refusal(message).issues] == ["$.seq"]
    message = _message(readings=[("heart_rate", START + i, 70.0) for i in range(4)])
    refused = _refusal([message], Limits(max_readings=3))
    assert (refused.status, refused.reason, refused.issues[0].expression) == (422, "too_many_readings",
                                                                              "$[0].readings")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(single_readings(), max_size=6), min_size=1, max_size=4))
def test_accepts_exactly_what_the_worker_decodes(messages: list[list[tuple[str, int, float]]]) -> None:
    batch = [_message(seq, readings) for seq, readings in enumerate(messages)]
    got = _upload(batch)
    want = [decode_device_message(json.dumps(m).encode()) for m in batch]
    assert [r for _, _, _, r in got] == [tuple(d.points) for d in want]
    body = json.dumps(batch).encode()
    assert parse_valid_native(body, LIMITS) == parse_native(json.loads(body), LIMITS), "the fast path, taken"


def _answer(parse: Any) -> object:
    try:
        return parse()
    except UploadRefused as refused:
        return refused.status, [(i.reason, i.detail, i.expression) for i in refused.issues]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(single_readings(), max_size=4), min_size=1, max_size=3), st.data())
def test_the_fast_path_answers_as_the_full_read_or_not_at_all(messages: list[list[tuple[str, int, float]]],
                                                               data: st.DataObject) -> None:
    batch: Any = [_message(seq, readings) for seq, readings in enumerate(messages)]
    i = data.draw(st.integers(0, len(batch) - 1))
    field = data.draw(st.sampled_from(["schema", "device_id", "patient_id", "seq", "sent_at", "readings", "extra"]))
    batch[i][field] = data.draw(json_values)
    body = json.dumps(batch if data.draw(st.booleans()) else batch[0]).encode("utf-8", "surrogatepass")
    fast = parse_valid_native(body, LIMITS)
    if fast is not None:
        assert fast == _answer(lambda: parse_native(load_json(body, read_limits(LIMITS)), LIMITS))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(single_readings(), min_size=1, max_size=6), min_size=1, max_size=4), st.data())
def test_breaking_one_reading_is_refused_naming_it(messages: list[list[tuple[str, int, float]]],
                                                   data: st.DataObject) -> None:
    batch = [_message(seq, readings) for seq, readings in enumerate(messages)]
    i = data.draw(st.integers(0, len(batch) - 1))
    j = data.draw(st.integers(0, len(batch[i]["readings"]) - 1))
    key, value = data.draw(st.sampled_from([("value", 1e6), ("value", "71"), ("unit", "bpm"), ("metric", "hr"),
                                            ("t", -5), ("t", 1.5)]))
    batch[i]["readings"][j][key] = value
    refused = _refusal(batch)
    assert refused.status == 422
    assert [issue.expression for issue in refused.issues] == [f"$[{i}].readings[{j}]"]
