"""Event-time tumbling windows (stream/windows.py): the statistics bit for bit against their plain
definition, and which windows close, when, and which readings they refuse as late."""

from __future__ import annotations

import math

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from kernel.events import MetricStats, VitalReading
from stream.windows import MS_PER_MINUTE, PartitionWindows, summarise, window_start

START = 1_767_571_200_000
WINDOW = 60_000
GRACE = 10_000


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


@given(points=st.lists(st.tuples(st.integers(START, START + 59_999), st.floats(20, 300, allow_nan=False)),
                       min_size=1, max_size=30), data=st.data())
def test_summarise_ignores_arrival_order(points: list[tuple[int, float]], data: st.DataObject) -> None:
    assert summarise(data.draw(st.permutations(points))) == summarise(points)


@given(ts_ms=st.integers(-(2**62), 2**62), window_ms=st.integers(1, 10**9))
def test_every_time_falls_in_exactly_one_aligned_window(ts_ms: int, window_ms: int) -> None:
    start = window_start(ts_ms, window_ms)
    assert start % window_ms == 0 and start <= ts_ms < start + window_ms


def _reading(ts_ms: int, patient: str = "pt-1", value: float = 70.0) -> VitalReading:
    return VitalReading(patient_id=patient, device_id="d", seq=1, metric="heart_rate", ts_ms=ts_ms, value=value)


#: Times after START, often on a 5 s grid, so that readings land on window ends and watermarks.
offsets_ms = st.one_of(st.integers(0, 10 * WINDOW), st.integers(0, 120).map(lambda k: k * 5_000))
arrivals = st.lists(st.tuples(st.sampled_from(["pt-1", "pt-2"]), offsets_ms), min_size=1, max_size=60)


@settings(max_examples=200, deadline=None)
@given(arrivals=arrivals)
def test_windows_close_once_the_watermark_passes_their_end_and_later_readings_are_late(
        arrivals: list[tuple[str, int]]) -> None:
    windows = PartitionWindows(window_ms=WINDOW, grace_ms=GRACE)
    newest: int | None = None
    closed_through: int | None = None  # the watermark at the last close: windows ending by then are closed
    counted: dict[tuple[str, int], int] = {}
    for offset, (patient, dt) in enumerate(arrivals):
        ts = START + dt
        start = window_start(ts, WINDOW)
        late = closed_through is not None and start + WINDOW <= closed_through
        assert windows.is_late(ts) == late
        assert windows.add(_reading(ts, patient), offset=offset) is not late
        if not late:
            counted[(patient, start)] = counted.get((patient, start), 0) + 1
            newest = ts if newest is None else max(newest, ts)
        assert newest is not None and windows.watermark_ms == newest - GRACE
        closed_through = newest - GRACE
        out = windows.close_ready()
        assert [w.end_ms for w in out] == sorted(w.end_ms for w in out), "oldest first"
        for w in out:
            assert w.end_ms <= closed_through
            assert w.metrics["heart_rate"].count == counted.pop((w.patient_id, w.start_ms))
        assert all(start + WINDOW > closed_through for _, start in counted), "nothing due is left open"
    assert len(windows) == len(counted)
    rest = windows.close_all()
    assert {(w.patient_id, w.start_ms) for w in rest} == set(counted) and len(windows) == 0
    assert all(windows.is_late(START + dt) for _, dt in arrivals), "after close_all every window is closed"


@settings(max_examples=200, deadline=None)
@given(messages=st.lists(st.lists(st.tuples(st.sampled_from(["heart_rate", "respiratory_rate"]),
                                            offsets_ms, st.floats(20, 80, allow_nan=False)),
                                  max_size=8), min_size=1, max_size=12))
@example(messages=[[("heart_rate", 70_000, 50.0)], [("heart_rate", 30_000, 50.0)]])  # into the window just closed
def test_adding_a_message_at_once_equals_adding_its_readings_one_by_one(
        messages: list[list[tuple[str, int, float]]]) -> None:
    many = PartitionWindows(window_ms=WINDOW, grace_ms=GRACE)
    one = PartitionWindows(window_ms=WINDOW, grace_ms=GRACE)
    for offset, points in enumerate(messages):
        points = [(m, START + dt, v) for m, dt, v in points]
        late = many.add_many("pt-1", points, offset=offset)
        expected_late = [p for p in points
                         if not one.add(VitalReading(patient_id="pt-1", device_id="d", seq=offset, metric=p[0], ts_ms=p[1], value=p[2]), offset=offset)]
        assert late == expected_late
        assert (many.max_event_ms, many.low_offset()) == (one.max_event_ms, one.low_offset())
        assert many.close_ready() == one.close_ready()
    assert many.close_all() == one.close_all()


def test_the_low_offset_is_the_first_offset_of_the_oldest_open_window() -> None:
    windows = PartitionWindows(window_ms=WINDOW, grace_ms=0)
    assert windows.low_offset() is None
    windows.add(_reading(START + 5_000), offset=10)
    windows.add(_reading(START + WINDOW + 5_000, patient="pt-2"), offset=11)
    windows.add(_reading(START + 7_000), offset=9)  # an earlier offset of the same window, read again
    assert windows.low_offset() == 9
    [first] = windows.close_ready()
    assert (first.patient_id, first.start_ms) == ("pt-1", START)
    assert windows.low_offset() == 11
    windows.close_all()
    assert windows.low_offset() is None


def test_a_restored_checkpoint_keeps_closed_windows_closed() -> None:
    windows = PartitionWindows(window_ms=WINDOW, grace_ms=GRACE)
    windows.restore(max_event_ms=START + 2 * WINDOW + GRACE, closed_before_ms=START + 2 * WINDOW)
    assert windows.watermark_ms == START + 2 * WINDOW
    assert not windows.add(_reading(START + 2 * WINDOW - 1), offset=0)
    assert windows.add(_reading(START + 2 * WINDOW), offset=1)
    assert windows.close_ready() == [], "the new reading's window ends after the watermark"


@pytest.mark.parametrize("window_ms,grace_ms", [(0, 0), (-60_000, 0), (60_000, -1)])
def test_windows_that_cannot_work_are_refused(window_ms: int, grace_ms: int) -> None:
    with pytest.raises(ValueError, match="window_ms|grace_ms"):
        PartitionWindows(window_ms=window_ms, grace_ms=grace_ms)
