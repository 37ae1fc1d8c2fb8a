"""The worker's fast path for one record: the strict reader's answer, or none (kernel.wire)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernel.errors import InvalidMessage
from kernel.limits import Limits
from kernel.wire import DeviceBatch, decode_device_message, decode_valid_device_message
from tests.kernel.hostile_records import records
from tests.kernel.test_wire import LIMIT_CASES, MAX_FUTURE, _valid_message, clock, mutated, valid_points


def _strict(raw: bytes | None, limits: Limits, reference_ms: int | None) -> DeviceBatch | None:
    """What the worker's strict reader gives, or ``None`` when it refuses the record or a reading."""
    try:
        batch = decode_device_message(raw, reference_ms=reference_ms, max_future_ms=MAX_FUTURE, limits=limits)
    except InvalidMessage:
        return None
    return None if batch.rejected else batch


def _fast(raw: bytes | None, limits: Limits, reference_ms: int | None) -> DeviceBatch | None:
    return decode_valid_device_message(raw, reference_ms=reference_ms, max_future_ms=MAX_FUTURE, limits=limits)


@settings(max_examples=200, deadline=None)
@given(seq=st.integers(0, 2**63 - 1), points=valid_points, reference_ms=clock)
def test_a_valid_message_takes_the_fast_path_with_the_strict_answer(seq, points, reference_ms) -> None:
    raw = json.dumps(_valid_message(seq, points)).encode()
    fast, strict = _fast(raw, Limits(), reference_ms), _strict(raw, Limits(), reference_ms)
    assert fast == strict
    if reference_ms is None:
        assert fast is not None


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seq=st.integers(0, 5), points=valid_points, data=st.data(), limits=st.sampled_from(LIMIT_CASES),
       reference_ms=clock)
def test_a_mutated_record_is_never_answered_otherwise_than_by_the_strict_reader(seq, points, data, limits,
                                                                               reference_ms) -> None:
    document: Any = _valid_message(seq, points)
    if data.draw(st.booleans()):
        document = [document]  # an array is never one message
    raw = mutated(document, data, limits)
    fast = _fast(raw, limits, reference_ms)
    if fast is not None:
        assert fast == _strict(raw, limits, reference_ms)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=records, limits=st.sampled_from(LIMIT_CASES))
def test_hostile_records_are_never_answered_otherwise_than_by_the_strict_reader(raw: bytes, limits: Limits) -> None:
    fast = _fast(raw, limits, None)
    if fast is not None:
        assert fast == _strict(raw, limits, None)


def test_a_tombstone_and_an_array_take_the_strict_reader() -> None:
    assert _fast(None, Limits(), None) is None
    raw = json.dumps(_valid_message(1, [("heart_rate", 1_767_571_200_000, 70.0)])).encode()
    assert _fast(raw, Limits(), None) is not None
    assert _fast(b"[" + raw + b"]", Limits(), None) is None
