"""The bounded JSON reader and the id rule (kernel/limits.py): every reason of the table at its edge, the
level-by-level checks against a plain measure of the parsed value, and the limits the settings ask for."""

from __future__ import annotations

import json
import math
from dataclasses import fields

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel.errors import InvalidMessage
from kernel.limits import DETAIL_VALUE_CHARS, MAX_ID_CHARS, Limits, check_id, clip, load_json, valid_id
from kernel.settings import Settings
from tests.kernel.hostile_records import records

LIMITS = Limits()
TIGHT = Limits(max_depth=3, max_number_digits=5, max_string_chars=8)
#: Every reason load_json may give (the module docstring's table, less the id rule's).
REASONS = {"empty", "too_large", "too_deep", "number_too_large", "string_too_long", "duplicate_key", "not_json"}


def _reason(raw: object, limits: Limits = LIMITS) -> str | None:
    try:
        load_json(raw, limits)
    except InvalidMessage as exc:
        return exc.reason
    return None


@settings(max_examples=300, deadline=None)
@given(raw=st.one_of(records, st.none(), st.text(max_size=20), st.integers()))
def test_any_value_reads_as_json_or_is_refused_with_a_reason_of_the_table(raw: object) -> None:
    assert _reason(raw) in REASONS | {None}


def _depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


def _leaves(value: object) -> list[object]:
    if isinstance(value, dict):
        return [*value, *(leaf for v in value.values() for leaf in _leaves(v))]
    if isinstance(value, list):
        return [leaf for v in value for leaf in _leaves(v)]
    return [value]


def _faults(value: object, limits: Limits) -> set[str]:
    """The limits a parsed value breaks, measured plainly (recursion, every leaf and key)."""
    faults = set()
    if _depth(value) > limits.max_depth:
        faults.add("too_deep")
    for leaf in _leaves(value):
        if type(leaf) is int and len(str(abs(leaf))) > limits.max_number_digits:
            faults.add("number_too_large")
        if type(leaf) is float and len(json.dumps(leaf)) > limits.max_number_digits + 12:
            faults.add("number_too_large")
        if type(leaf) is str and len(leaf) > limits.max_string_chars:
            faults.add("string_too_long")
    return faults


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(10**8), 10**8), st.floats(allow_nan=False, allow_infinity=False),
              st.text(max_size=12)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=25)


@settings(max_examples=500, deadline=None)
@given(value=json_values, limits=st.sampled_from([LIMITS, TIGHT]))
def test_a_value_within_the_limits_reads_back_whole_and_one_beyond_them_is_refused_for_it(
        value: object, limits: Limits) -> None:
    faults = _faults(value, limits)
    reason = _reason(json.dumps(value).encode(), limits)
    if faults:
        assert reason in faults
    else:
        assert reason is None
        assert load_json(json.dumps(value).encode(), limits) == value


@pytest.mark.parametrize("raw,limits,reason", [
    (None, LIMITS, "empty"),
    (b"", LIMITS, "empty"),
    (b"[1]" + b" " * 7, Limits(max_message_bytes=10), None),
    (b"[1]" + b" " * 8, Limits(max_message_bytes=10), "too_large"),
    (b"[[[1]]]", TIGHT, None),
    (b"[[[[1]]]]", TIGHT, "too_deep"),
    (b'{"a": {"b": [1]}}', TIGHT, None),
    (b'{"a": {"b": {"c": [1]}}}', TIGHT, "too_deep"),
    (b"[" * 5_000 + b"]" * 5_000, LIMITS, "too_deep"),  # beyond the parser's own recursion guard
    (b"[99999, -99999]", TIGHT, None),
    (b"[100000]", TIGHT, "number_too_large"),
    (b"-100000", TIGHT, "number_too_large"),
    (b"[1." + b"5" * 15 + b"]", TIGHT, None),  # a literal of 17 characters: digits + 12
    (b"[1." + b"5" * 16 + b"]", TIGHT, "number_too_large"),
    (b"9" * 5_000, LIMITS, "number_too_large"),  # int() itself refuses more than 4,300 digits
    (b'["12345678"]', TIGHT, None),
    (b'["123456789"]', TIGHT, "string_too_long"),
    (b'{"123456789": 1}', TIGHT, "string_too_long"),
    (b'"123456789"', TIGHT, "string_too_long"),
    (b'{"a": 1, "a": 2}', LIMITS, "duplicate_key"),
    (b'{"a": "x:y", "a": 1}', LIMITS, "duplicate_key"),  # a colon inside a string hides no duplicate
    (b'{"a": "x:y", "b": 1}', LIMITS, None),
    (b'[{"k": 1}, {"k": 2, "k": 3}]', LIMITS, "duplicate_key"),
    (b"\xff\xfe", LIMITS, "not_json"),
    (b"{not json", LIMITS, "not_json"),
    ("[1]", LIMITS, "not_json"),  # text, not bytes
])
def test_each_reason_at_its_edge(raw: object, limits: Limits, reason: str | None) -> None:
    assert _reason(raw, limits) == reason


def test_non_finite_numbers_are_read_as_python_reads_them() -> None:
    nan, big, inf = load_json(b"[NaN, 1e999, -Infinity]", LIMITS)
    assert math.isnan(nan) and big == math.inf and inf == -math.inf


@given(value=st.text(max_size=80))
def test_an_id_that_passes_is_short_printable_ascii_without_spaces(value: str) -> None:
    if valid_id(value):
        assert 1 <= len(value) <= MAX_ID_CHARS and value.isascii() and value.isprintable()
        assert " " not in value and value[0].isalnum()
        assert check_id(value, "patient_id") == value
    else:
        with pytest.raises(InvalidMessage) as caught:
            check_id(value, "patient_id")
        assert caught.value.reason == "invalid_id" and caught.value.detail.startswith("patient_id must match")
        assert caught.value.detail.isascii() and "\n" not in caught.value.detail


@pytest.mark.parametrize("value", [17, None, b"pt-1", ["pt-1"]])
def test_an_id_that_is_not_a_string_is_refused_by_its_type(value: object) -> None:
    assert not valid_id(value)
    with pytest.raises(InvalidMessage, match="device_id must be a string"):
        check_id(value, "device_id")


@given(value=st.one_of(st.text(), st.integers(), st.floats(), st.binary(), st.lists(st.text())))
def test_a_clipped_value_is_short_ascii_on_one_line(value: object) -> None:
    text = clip(value)
    assert len(text) <= DETAIL_VALUE_CHARS and text.isascii() and "\n" not in text


@pytest.mark.parametrize("name", [f.name for f in fields(Limits)])
def test_a_limit_below_one_is_refused_by_name(name: str) -> None:
    with pytest.raises(ValueError, match=f"{name} must be >= 1"):
        Limits(**{name: 0})


def test_the_limits_are_the_settings_and_their_defaults_the_settings_defaults() -> None:
    assert Limits() == Limits.from_settings(Settings())
    chosen = Settings(limit_message_bytes=4_096, limit_readings=7, limit_json_depth=5, limit_number_digits=15,
                      limit_string_chars=100, limit_devices_per_partition=3)
    assert Limits.from_settings(chosen) == Limits(max_message_bytes=4_096, max_readings=7, max_depth=5,
                                                  max_number_digits=15, max_string_chars=100, max_devices=3)
