"""Dead-letter records (stream/deadletters.py): bounded headers that read back to what was written,
a reader that is total on any headers, what may be replayed, and the ops summaries."""

from __future__ import annotations

import json

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from kernel.events import DeadLetter
from kernel.limits import ID_PATTERN, valid_id
from stream.deadletters import (MAX_HEADER_BYTES, SCHEMA, DeadLetterRecord, as_bytes, deadletter_headers,
                                replay_of, replayed_headers, summarise)

START = 1_767_571_200_000

#: The reasons the decoders and the core give a whole record, and those they give one reading.
RECORD_REASONS = ["empty", "too_large", "too_deep", "number_too_large", "string_too_long", "duplicate_key",
                  "not_json", "invalid_id", "not_an_object", "unknown_schema", "missing_field", "too_many_readings",
                  "impossible_value"]
READING_REASONS = ["wrong_type", "unknown_metric", "wrong_unit", "impossible_value", "future_timestamp", "late"]

text = st.text(max_size=2_000)
ids = st.one_of(st.none(), st.from_regex(ID_PATTERN, fullmatch=True), text)
# What a sender controls (the detail quotes its values; ids; the bytes) is anything; the reasons are the
# code's own and the topic an operator's name.
letters = st.builds(
    DeadLetter, reason=st.sampled_from(RECORD_REASONS + READING_REASONS), detail=text, payload=st.binary(max_size=50),
    reasons=st.dictionaries(st.sampled_from(READING_REASONS), st.integers(1, 10**6)),
    accepted=st.integers(0, 10**6), device_id=ids, patient_id=ids)
topics = st.one_of(st.sampled_from(["vitals.readings", "risk.scores", "sink:features"]),
                   st.from_regex(r"[A-Za-z0-9._-]{1,249}", fullmatch=True))  # Kafka allows 249


@settings(max_examples=300, deadline=None)
@given(letter=letters, topic=topics, partition=st.integers(0, 2**31 - 1),
       offset=st.integers(0, 2**63 - 1), record_ts_ms=st.one_of(st.none(), st.integers(0, 2**63 - 1)))
@example(letter=DeadLetter(reason="future_timestamp", detail="\xff" * 400, payload=b"", reasons=dict.fromkeys(READING_REASONS, 10**6), accepted=10**6,
                           device_id="d" * 64, patient_id="p" * 64),
         topic="t" * 249, partition=2**31 - 1, offset=2**63 - 1, record_ts_ms=2**63 - 1)  # every field at its longest
def test_headers_stay_within_their_bound_and_read_back_to_the_letter(letter: DeadLetter, topic: str,
                                                                   partition: int, offset: int,
                                                                   record_ts_ms: int | None) -> None:
    headers = deadletter_headers(letter, topic=topic, partition=partition, offset=offset, record_ts_ms=record_ts_ms)
    assert sum(len(k) + len(v) for k, v in headers) <= MAX_HEADER_BYTES
    assert all(v.isascii() for _, v in headers), "headers are ASCII whatever the letter holds"
    back = DeadLetterRecord.from_kafka(0, 1, START, None, letter.payload, headers)
    assert back.value == letter.payload and back.accepted == letter.accepted
    assert back.source_ms == record_ts_ms
    assert (back.reason, back.counts, back.source) == (letter.reason, letter.counts, (topic[:200], partition, offset))
    for field in ("device_id", "patient_id"):
        value = getattr(letter, field)
        assert getattr(back, field) == (value if valid_id(value) else None)


headers_like = st.one_of(st.none(), st.lists(st.tuples(
    st.one_of(st.sampled_from(["vitalrisk.schema", "vitalrisk.reason", "vitalrisk.counts", "vitalrisk.source",
                               "vitalrisk.accepted", "vitalrisk.source_ms", "vitalrisk.replayed",
                               "vitalrisk.replay_of", "vitalrisk.patient_id", "other"]), st.text(max_size=20)),
    st.one_of(st.none(), st.binary(max_size=40), st.sampled_from([b"[[[[[[", b'{"a": "x"}', b"1/2/3", b"-1",
                                                                  b"9" * 30, b"vitalrisk.deadletter-replayed/1"]))),
    max_size=10))


@settings(max_examples=300, deadline=None)
@given(headers=headers_like, value=st.one_of(st.none(), st.binary(max_size=20)))
def test_reading_any_headers_back_gives_a_record_never_an_exception(headers: list[tuple[str, bytes | None]] | None,
                                                                    value: bytes | None) -> None:
    record = DeadLetterRecord.from_kafka(0, 5, START, None, value, headers)
    assert record.value == (value or b"") and record.counts
    json.dumps(record.as_json())


def _record(*, accepted: int = 0) -> DeadLetterRecord:
    letter = DeadLetter(reason="not_json", detail="bad", payload=b"{", accepted=accepted)
    return DeadLetterRecord.from_kafka(0, 1, START, None, letter.payload, deadletter_headers(
        letter, topic="vitals.readings", partition=0, offset=7, record_ts_ms=START))


def test_only_a_record_refused_whole_from_a_topic_may_be_replayed() -> None:
    assert _record().replayable
    assert not _record(accepted=3).replayable, "some of its readings are in the windows already"
    assert not DeadLetterRecord.from_kafka(0, 1, START, None, b"", deadletter_headers(
        DeadLetter(reason="empty", detail="tombstone", payload=b""), topic="t", partition=0, offset=1, record_ts_ms=None)).replayable
    quarantined = deadletter_headers(DeadLetter(reason="impossible_value", detail="row", payload=b"{}"), topic="sink:features",
                                     partition=0, offset=0, record_ts_ms=None)
    assert not DeadLetterRecord.from_kafka(0, 1, START, None, b"{}", quarantined).replayable
    again = deadletter_headers(DeadLetter(reason="not_json", detail="bad", payload=b"{"), topic="t", partition=0, offset=1,
                               record_ts_ms=None, replay_of=b"0/17")
    refused_again = DeadLetterRecord.from_kafka(0, 2, START, None, b"{", again)
    assert refused_again.replay_of == (0, 17) and not refused_again.replayable
    marker = DeadLetterRecord.from_kafka(0, 3, START, None, None, replayed_headers(0, 1))
    assert marker.replayed == (0, 1) and not marker.replayable


def test_the_replay_header_is_found_among_a_records_headers() -> None:
    assert replay_of([("a", b"x"), ("vitalrisk.replay_of", b"2/9")]) == b"2/9"
    assert replay_of([("vitalrisk.replay_of", None)]) is None and replay_of(None) is None
    headers = deadletter_headers(DeadLetter(reason="x", detail="y", payload=b""), topic="t", partition=0, offset=0, record_ts_ms=None,
                                 replay_of=b"not a position")
    assert all(name != "vitalrisk.replay_of" for name, _ in headers), "a garbled position is not passed on"
    assert dict(headers)["vitalrisk.schema"] == SCHEMA.encode()


def test_summaries_group_by_device_patient_and_hour_and_leave_replay_markers_out() -> None:
    records = [
        DeadLetterRecord(0, 0, START, None, b"x", counts={"late": 3}, device_id="dev-1", patient_id="pt-1"),
        DeadLetterRecord(0, 1, START + 3_600_000, None, b"x", counts={"late": 1}, device_id="dev-1"),
        DeadLetterRecord(0, 2, START + 3_600_001, None, b"x", counts={"not_json": 1}),
        DeadLetterRecord(0, 3, START, None, b"", replayed=(0, 1)),
    ]
    assert summarise(records, "device") == [("dev-1", 2, 4), ("(none)", 1, 1)]
    assert summarise(records, "patient") == [("(none)", 2, 2), ("pt-1", 1, 3)]
    assert summarise(records, "hour") == [("2026-01-05T01:00Z", 2, 2), ("2026-01-05T00:00Z", 1, 3)]
    assert summarise(records, "reason") == [("late", 2, 4), ("not_json", 1, 1)]
    with pytest.raises(ValueError, match="reason, device, patient or hour"):
        summarise(records, "topic")


def test_a_tombstone_or_a_value_that_is_not_bytes_is_kept_as_no_bytes() -> None:
    assert (as_bytes(None), as_bytes("text"), as_bytes(memoryview(b"ab"))) == (b"", b"", b"ab")
