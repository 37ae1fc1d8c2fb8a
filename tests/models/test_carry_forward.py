"""Tests for models/carry_forward.py: the one NEWS2 carry-forward rule, scalar and array forms."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from models.carry_forward import carried, carried_many, fresh

H = 3_600_000


def test_a_value_exactly_carry_ms_old_still_stands_in() -> None:
    assert fresh(0, 12 * H, carry_ms=12 * H)
    assert not fresh(0, 12 * H + 1, carry_ms=12 * H)
    assert fresh(5, 5, carry_ms=0) and not fresh(5, 6, carry_ms=0)


def test_carried_gives_the_value_while_fresh_and_none_after() -> None:
    assert carried((H, 118.0), 2 * H, carry_ms=H) == 118.0
    assert carried((H, 118.0), 2 * H + 1, carry_ms=H) is None
    assert carried(None, 2 * H, carry_ms=H) is None


def test_carried_many_is_nan_where_stale_or_never_seen() -> None:
    out = carried_many(np.array([0, H, 2 * H, 2 * H]), np.array([1.0, 2.0, 3.0, np.nan]), 2 * H, carry_ms=H)
    assert np.array_equal(out, [np.nan, 2.0, 3.0, np.nan], equal_nan=True)


moments = st.integers(-(2**40), 2**40)


@given(st.lists(st.tuples(moments, st.floats(allow_nan=False)), min_size=1, max_size=30), moments,
       st.integers(0, 2**40))
def test_the_array_form_applies_the_scalar_rule_element_by_element(
        seen: list[tuple[int, float]], now_ms: int, carry_ms: int) -> None:
    seen_ms = np.array([t for t, _ in seen], dtype=np.int64)
    values = np.array([v for _, v in seen])
    assert fresh(seen_ms, now_ms, carry_ms=carry_ms).tolist() == [fresh(t, now_ms, carry_ms=carry_ms)
                                                                   for t, _ in seen]
    expected = [carried(s, now_ms, carry_ms=carry_ms) for s in seen]
    assert [None if np.isnan(v) else v for v in carried_many(seen_ms, values, now_ms, carry_ms=carry_ms).tolist()] \
        == expected
