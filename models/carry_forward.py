"""The NEWS2 carry-forward rule: how long a vital's last value stands in for a missing one. Pure.

Wearables measure vitals at different rates: heart rate every few seconds, blood pressure a
few times a day. NEWS2 needs all of them at once, so a vital missing from the window being
scored takes its last known value while that value is *fresh*: measured no more than
``carry_ms`` before the moment scored (``now_ms - seen_ms <= carry_ms``; a value exactly
``carry_ms`` old still counts). Every NEWS2 in the codebase carries this way — the pipeline's
per-window score (:func:`stream.scoring.news2_for_window`), the score beside the model
(:class:`models.scorer.News2RowScorer`) and its matrix form (:class:`models.scorer.News2MatrixScorer`).

:func:`fresh` is the rule; :func:`carried` applies it to one remembered ``(seen_ms, value)``
pair and :func:`carried_many` to arrays of them.

Examples
--------
>>> fresh(0, 3_600_000, carry_ms=3_600_000), fresh(0, 3_600_001, carry_ms=3_600_000)
(True, False)
>>> carried((60_000, 118.0), 120_000, carry_ms=60_000), carried((0, 118.0), 120_000, carry_ms=60_000)
(118.0, None)
>>> carried_many(np.array([0, 50]), np.array([118.0, 121.0]), 100, carry_ms=60).tolist()
[nan, 121.0]
"""

from __future__ import annotations

from typing import overload

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


@overload
def fresh(seen_ms: int, now_ms: int, *, carry_ms: int) -> bool: ...
@overload
def fresh(seen_ms: IntArray, now_ms: int, *, carry_ms: int) -> BoolArray: ...


def fresh(seen_ms: int | IntArray, now_ms: int, *, carry_ms: int) -> bool | BoolArray:
    """Whether a value measured at ``seen_ms`` may stand in at ``now_ms``: at most ``carry_ms`` old.

    Parameters
    ----------
    seen_ms
        When the value was measured (for a window mean: the end of its window), one or an array.
    now_ms
        The moment scored (the end of the window being scored).
    carry_ms
        The oldest a value may be and still stand in.

    Examples
    --------
    >>> fresh(np.array([0, 10, 20]), 30, carry_ms=20).tolist()
    [False, True, True]
    """
    return now_ms - seen_ms <= carry_ms


def carried(seen: tuple[int, float] | None, now_ms: int, *, carry_ms: int) -> float | None:
    """The remembered value if it is :func:`fresh` at ``now_ms``, else ``None``.

    Parameters
    ----------
    seen
        ``(seen_ms, value)``: the last measurement of one vital, or ``None`` if there was none.
    now_ms, carry_ms
        As :func:`fresh`.

    Examples
    --------
    >>> carried(None, 0, carry_ms=60_000) is None
    True
    """
    if seen is None or not fresh(seen[0], now_ms, carry_ms=carry_ms):
        return None
    return seen[1]


def carried_many(seen_ms: IntArray, values: FloatArray, now_ms: int, *, carry_ms: int) -> FloatArray:
    """:func:`carried` over arrays: ``values`` where :func:`fresh` at ``now_ms``, NaN elsewhere.

    Parameters
    ----------
    seen_ms
        When each value was measured (any time for a NaN value: "never measured").
    values
        The remembered values, NaN for none.
    now_ms, carry_ms
        As :func:`fresh`.
    """
    return np.where(fresh(seen_ms, now_ms, carry_ms=carry_ms), values, np.nan)
