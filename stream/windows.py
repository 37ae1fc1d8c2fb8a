"""Event-time tumbling windows for one partition: pure math and state, no Kafka, no clock.

A window ``[start_ms, start_ms + window_ms)`` closes when the partition's watermark — the
largest event time seen minus ``grace_ms`` — reaches its end. Until then late readings still
count; a reading whose window has already closed is *late*: :meth:`PartitionWindows.add`
refuses it so the caller can count and dead-letter it instead of silently merging it.

An open window keeps its readings (a minute holds tens of them) and summarises them when it
closes, sorted by time, so every statistic — including ``last``, slope and successive
differences — is the same whatever order the readings arrived in.

Every open window remembers the lowest source offset that fed it, so the adapter knows the
highest offset it may commit: everything below :meth:`PartitionWindows.low_offset` has reached
a closed window (or was rejected) and need never be read again.

Examples
--------
>>> from kernel.events import VitalReading
>>> w = PartitionWindows(window_ms=60_000, grace_ms=10_000)
>>> w.add(VitalReading(patient_id="pt-1", device_id="d", seq=1, metric="heart_rate", ts_ms=5_000, value=70.0), offset=0)
True
>>> w.add(VitalReading(patient_id="pt-1", device_id="d", seq=2, metric="heart_rate", ts_ms=65_000, value=90.0), offset=1)
True
>>> w.close_ready()
[]
>>> w.add(VitalReading(patient_id="pt-1", device_id="d", seq=3, metric="heart_rate", ts_ms=71_000, value=80.0), offset=2)
True
>>> [(f.start_ms, f.metrics["heart_rate"].mean) for f in w.close_ready()]
[(0, 70.0)]
>>> w.low_offset()
1
>>> w.add(VitalReading(patient_id="pt-1", device_id="d", seq=4, metric="heart_rate", ts_ms=30_000, value=75.0), offset=3)
False
"""

from __future__ import annotations

import heapq
import math
from operator import mul, sub
from dataclasses import dataclass, field

from kernel.events import MetricStats, VitalReading, WindowFeatures

MS_PER_MINUTE = 60_000


def window_start(ts_ms: int, window_ms: int) -> int:
    """Start of the tumbling window holding ``ts_ms``.

    >>> window_start(125_000, 60_000), window_start(-1, 60_000)
    (120000, -60000)
    """
    return ts_ms - ts_ms % window_ms


def summarise(points: list[tuple[int, float]]) -> MetricStats:
    """Statistics of ``(ts_ms, value)`` points, independent of their order.

    >>> s = summarise([(60_000, 72.0), (0, 70.0), (30_000, 71.0)])
    >>> s.count, s.mean, s.last, s.slope_per_min, round(s.std, 4), s.rmssd
    (3, 71.0, 72.0, 2.0, 0.8165, 1.0)
    """
    n = len(points)
    if n == 1:
        value = points[0][1]
        return MetricStats(1, value, value, value, 0.0, value, 0.0, 0.0)
    times, values = zip(*sorted(points))
    mean = sum(values) / n
    # Deviations once, then products of them: the same floats as spelling out each term.
    deviations = [v - mean for v in values]
    var = sum(map(mul, deviations, deviations)) / n
    t0 = times[0]
    minutes = [(t - t0) / MS_PER_MINUTE for t in times]
    t_mean = sum(minutes) / n
    t_deviations = [t - t_mean for t in minutes]
    sxx = sum(map(mul, t_deviations, t_deviations))
    slope = sum(map(mul, t_deviations, deviations)) / sxx if sxx > 0 else 0.0
    steps = list(map(sub, values[1:], values))
    rmssd = math.sqrt(sum(map(mul, steps, steps)) / (n - 1))
    return MetricStats(n, mean, min(values), max(values), math.sqrt(var), values[-1], slope, rmssd)


@dataclass(slots=True)
class _OpenWindow:
    first_offset: int
    points: dict[str, list[tuple[int, float]]] = field(default_factory=dict)


class PartitionWindows:
    """Open tumbling windows of all patients in one partition.

    Parameters
    ----------
    window_ms
        Window length in event-time milliseconds.
    grace_ms
        How far behind the largest event time a reading may arrive and still count.
    """

    def __init__(self, *, window_ms: int, grace_ms: int) -> None:
        if window_ms <= 0:
            raise ValueError(f"window_ms must be positive, got {window_ms}")
        if grace_ms < 0:
            raise ValueError(f"grace_ms must be zero or more, got {grace_ms}")
        self.window_ms = window_ms
        self.grace_ms = grace_ms
        self.max_event_ms: int | None = None
        self.closed_before_ms: int | None = None  # every window ending at or before this is closed
        self._open: dict[tuple[str, int], _OpenWindow] = {}
        self._by_end: list[tuple[int, str, int]] = []  # heap of (end_ms, patient, start_ms)

    @property
    def watermark_ms(self) -> int | None:
        """Largest event time seen minus the grace period; ``None`` before the first reading."""
        if self.max_event_ms is None:
            return None
        return self.max_event_ms - self.grace_ms

    def __len__(self) -> int:
        return len(self._open)

    def restore(self, *, max_event_ms: int | None, closed_before_ms: int | None) -> None:
        """Resume from a checkpoint: windows ending at or before ``closed_before_ms`` stay closed."""
        self.max_event_ms = max_event_ms
        self.closed_before_ms = closed_before_ms

    def is_late(self, ts_ms: int) -> bool:
        """Whether a reading at ``ts_ms`` belongs to an already closed window."""
        end = window_start(ts_ms, self.window_ms) + self.window_ms
        return self.closed_before_ms is not None and end <= self.closed_before_ms

    def add(self, reading: VitalReading, *, offset: int) -> bool:
        """Add one reading read at source ``offset``; ``False`` (and no change) if it is late."""
        start = window_start(reading.ts_ms, self.window_ms)
        end = start + self.window_ms
        if self.closed_before_ms is not None and end <= self.closed_before_ms:
            return False
        key = (reading.patient_id, start)
        window = self._open.get(key)
        if window is None:
            window = self._open[key] = _OpenWindow(offset)
            heapq.heappush(self._by_end, (end, reading.patient_id, start))
        elif offset < window.first_offset:
            window.first_offset = offset
        points = window.points.get(reading.metric)
        if points is None:
            window.points[reading.metric] = [(reading.ts_ms, reading.value)]
        else:
            points.append((reading.ts_ms, reading.value))
        if self.max_event_ms is None or reading.ts_ms > self.max_event_ms:
            self.max_event_ms = reading.ts_ms
        return True

    def add_many(self, patient_id: str, points: list[tuple[str, int, float]], *,
                 offset: int) -> list[tuple[str, int, float]]:
        """Add one message's ``(metric, ts_ms, value)`` points of ``patient_id``, read at source
        ``offset``; return the late ones (not added).

        Equivalent to :meth:`add` for each reading, with the lookups done once per window
        rather than once per reading: a message usually fills one window of one patient.
        """
        late: list[tuple[str, int, float]] = []
        size = self.window_ms
        closed_before = self.closed_before_ms
        open_windows = self._open
        newest = self.max_event_ms
        current_start: int | None = None
        by_metric: dict[str, list[tuple[int, float]]] = {}
        for point in points:
            metric, ts, value = point
            start = ts - ts % size
            if start != current_start:
                if closed_before is not None and start + size <= closed_before:
                    late.append(point)
                    continue
                window = open_windows.get((patient_id, start))
                if window is None:
                    window = open_windows[(patient_id, start)] = _OpenWindow(offset)
                    heapq.heappush(self._by_end, (start + size, patient_id, start))
                elif offset < window.first_offset:
                    window.first_offset = offset
                current_start, by_metric = start, window.points
            series = by_metric.get(metric)
            if series is None:
                by_metric[metric] = [(ts, value)]
            else:
                series.append((ts, value))
            if newest is None or ts > newest:
                newest = ts
        self.max_event_ms = newest
        return late

    def close_ready(self) -> list[WindowFeatures]:
        """Close and return every window the watermark has passed, oldest first."""
        watermark = self.watermark_ms
        if watermark is None:
            return []
        return self._close_until(watermark)

    def close_all(self) -> list[WindowFeatures]:
        """Close every open window (idle partition); later readings for them count as late."""
        if not self._by_end:
            return []
        return self._close_until(max(end for end, _, _ in self._by_end))

    def low_offset(self) -> int | None:
        """Lowest source offset still held by an open window, ``None`` when none is open."""
        return min((w.first_offset for w in self._open.values()), default=None)

    def _close_until(self, limit_ms: int) -> list[WindowFeatures]:
        closed: list[WindowFeatures] = []
        while self._by_end and self._by_end[0][0] <= limit_ms:
            end, patient, start = heapq.heappop(self._by_end)
            window = self._open.pop((patient, start))
            closed.append(WindowFeatures(patient_id=patient, start_ms=start, end_ms=end,
                                         metrics={m: summarise(pts) for m, pts in sorted(window.points.items())}))
        if self.closed_before_ms is None or limit_ms > self.closed_before_ms:
            self.closed_before_ms = limit_ms
        return closed
