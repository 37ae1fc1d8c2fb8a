"""Per-patient features over hopping windows, relative to the patient's own baseline.

Input is the stream of closed 1-minute windows (:mod:`stream.windows`). Each patient keeps
a ring of 5-minute *panes* (mergeable sums of the minutes in them) and an exponentially
weighted baseline per metric. Every 5 minutes of event time (a *hop*) the engine emits one
:class:`FeatureRow` per patient with data in the last hour: 15- and 60-minute statistics,
completeness, trend, and z-scores against the personal baseline — personalisation without
per-patient models.

Definitions (the property tests recompute each one from raw readings with numpy):

- ``{m}_mean_60m``, ``_std_60m`` (population), ``_min_60m``, ``_max_60m``, ``_mean_15m``:
  over the readings in ``[t - window, t)``;
- ``{m}_last``: the latest reading in the hour;
- ``{m}_slope_60m``: least-squares slope of the 5-minute pane means on pane start, per hour
  (0 with fewer than two panes) — a trend robust to uneven sampling within a pane;
- ``{m}_z_60m``: ``(mean_60m - baseline mean) / max(baseline std, floor)``, once the baseline
  has seen ``BASELINE_MIN_MINUTES`` minutes; the baseline is a time-decayed EWMA of 1-minute
  means with a half-life of ``baseline_half_life_ms`` (default 2 days: slow enough that a
  deterioration over hours shows as deviation rather than being absorbed);
- ``{m}_completeness_60m``: readings / expected readings (nominal device rates), capped at 1,
  emitted as 0 for a metric with no reading — silence is information;
- ``step_count_sum_60m`` and ``heart_rate_rmssd_60m`` (mean of the minutes' successive
  differences, a heart-rate-variability proxy where beat-to-beat intervals are not sent);
- ``minutes_since_reading``: event time since the patient's latest reading.

Examples
--------
>>> from kernel.events import MetricStats, WindowFeatures
>>> engine = FeatureEngine()
>>> rows = []
>>> for minute in range(10):
...     hr = MetricStats(12, 70.0 + minute, 69.0, 72.0 + minute, 1.0, 71.0, 0.0, 1.0)
...     w = WindowFeatures(patient_id="pt-1", start_ms=minute * 60_000, end_ms=(minute + 1) * 60_000, metrics={"heart_rate": hr})
...     rows += engine.on_window(w, partition=0).rows
>>> [(r.ts_ms, r.x["heart_rate_mean_60m"]) for r in rows]
[(300000, 72.0), (600000, 74.5)]
>>> rows[-1].x["heart_rate_slope_60m"]
60.0
"""

from __future__ import annotations

import math
import struct
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from operator import mul, truediv
from dataclasses import dataclass, field

from kernel.events import HOP_MS, FeatureRow, MetricStats, WindowFeatures
from kernel.vocabulary import METRICS

MS_PER_MINUTE = 60_000
SHORT_WINDOW_MS = 15 * MS_PER_MINUTE
LONG_WINDOW_MS = 60 * MS_PER_MINUTE
PANES = LONG_WINDOW_MS // HOP_MS
#: Minutes of data before z-scores are emitted: a baseline of a few minutes is noise.
BASELINE_MIN_MINUTES = 120

#: Nominal readings per minute of the devices we support, for completeness. Blood pressure is
#: measured a few times a day: no completeness expectation.
EXPECTED_PER_MINUTE: Mapping[str, float] = {
    "heart_rate": 12.0, "oxygen_saturation": 1.0, "respiratory_rate": 1.0, "body_temperature": 0.2,
    "step_count": 1.0,
}
#: Smallest baseline standard deviation per metric, so a flat history does not make every
#: small change look extreme (units of the metric).
STD_FLOOR: Mapping[str, float] = {
    "heart_rate": 3.0, "oxygen_saturation": 1.0, "respiratory_rate": 1.0, "body_temperature": 0.2,
    "systolic_blood_pressure": 5.0, "diastolic_blood_pressure": 4.0, "step_count": 5.0,
}


@dataclass(slots=True)
class WindowOutput:
    """What one closed minute produced: its baseline z-scores and any hop rows now due."""

    z: dict[str, float] = field(default_factory=dict)
    baseline: dict[str, float] = field(default_factory=dict)
    rows: list[FeatureRow] = field(default_factory=list)


# Per pane and metric: count, sum, sum of squares, min, max, last minute start, last value,
# sum of the minutes' rmssd, minutes.
_N, _SUM, _SUMSQ, _MIN, _MAX, _LAST_T, _LAST_V, _RMSSD, _MINUTES = range(9)


@dataclass(slots=True)
class PatientState:
    """Everything kept per patient: panes of the last hour, baseline, last known values."""

    partition: int
    panes: dict[int, dict[str, list[float]]] = field(default_factory=dict)  # pane start -> metric -> stats
    baseline: dict[str, list[float]] = field(default_factory=dict)  # metric -> [mean, var, minutes, last_ms]
    last_known: dict[str, tuple[int, float]] = field(default_factory=dict)  # metric -> (window end, mean)
    last_reading_ms: int = 0
    emitted_through_ms: int = 0
    stopped_reported: bool = False

    _HEADER = struct.Struct("<iqqBBBB")
    _PANE = struct.Struct("<qB")
    _STATS = struct.Struct("<BHBB6d")  # code, count, minutes, last minute in pane, 6 sums/extremes
    _SINGLE = struct.Struct("<BBd")  # code | 0x80, minute in pane, the one value
    _BASE = struct.Struct("<B3dq")
    _KNOWN = struct.Struct("<Bqd")

    def to_bytes(self) -> bytes:
        """Compact binary form for the state store (about 3 KB for a patient with a full hour).

        A pane entry holding one reading stores just that value; floats stay 64-bit so a
        restored state computes exactly what the original would have.

        >>> s = PatientState(2, baseline={"heart_rate": [70.0, 4.0, 30.0, 60_000]})
        >>> s.panes[0] = {"heart_rate": [2.0, 141.0, 9941.0, 70.0, 71.0, 60_000.0, 71.0, 1.0, 1.0],
        ...               "body_temperature": [1.0, 36.5, 36.5 * 36.5, 36.5, 36.5, 120_000.0, 36.5, 0.0, 1.0]}
        >>> PatientState.from_bytes(s.to_bytes()) == s
        True
        """
        parts = [self._HEADER.pack(self.partition, self.last_reading_ms, self.emitted_through_ms,
                                   int(self.stopped_reported), len(self.panes), len(self.baseline),
                                   len(self.last_known))]
        for start, metrics in sorted(self.panes.items()):
            parts.append(self._PANE.pack(start, len(metrics)))
            for m, st in metrics.items():
                minute = int((st[_LAST_T] - start) // MS_PER_MINUTE)
                if st[_N] == 1 and st[_MINUTES] == 1 and st[_RMSSD] == 0.0:
                    parts.append(self._SINGLE.pack(_METRIC_CODE[m] | 0x80, minute, st[_SUM]))
                else:
                    parts.append(self._STATS.pack(_METRIC_CODE[m], int(st[_N]), int(st[_MINUTES]), minute,
                                                  st[_SUM], st[_SUMSQ], st[_MIN], st[_MAX], st[_LAST_V],
                                                  st[_RMSSD]))
        for m, (mean, var, minutes, last_ms) in self.baseline.items():
            parts.append(self._BASE.pack(_METRIC_CODE[m], mean, var, minutes, int(last_ms)))
        for m, (end_ms, value) in self.last_known.items():
            parts.append(self._KNOWN.pack(_METRIC_CODE[m], end_ms, value))
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, raw: bytes) -> PatientState:
        partition, last_reading, emitted, stopped, n_panes, n_base, n_known = cls._HEADER.unpack_from(raw, 0)
        pos = cls._HEADER.size
        state = cls(partition, last_reading_ms=last_reading, emitted_through_ms=emitted,
                    stopped_reported=bool(stopped))
        for _ in range(n_panes):
            start, n_metrics = cls._PANE.unpack_from(raw, pos)
            pos += cls._PANE.size
            metrics: dict[str, list[float]] = {}
            for _ in range(n_metrics):
                if raw[pos] & 0x80:
                    code, minute, value = cls._SINGLE.unpack_from(raw, pos)
                    pos += cls._SINGLE.size
                    metrics[_METRIC_NAME[code & 0x7F]] = [1.0, value, value * value, value, value,
                                                          float(start + minute * MS_PER_MINUTE), value, 0.0, 1.0]
                else:
                    code, n, minutes, minute, total, sumsq, low, high, last, rmssd = cls._STATS.unpack_from(raw, pos)
                    pos += cls._STATS.size
                    metrics[_METRIC_NAME[code]] = [float(n), total, sumsq, low, high,
                                                   float(start + minute * MS_PER_MINUTE), last, rmssd, float(minutes)]
            state.panes[start] = metrics
        for _ in range(n_base):
            code, mean, var, minutes, last_ms = cls._BASE.unpack_from(raw, pos)
            pos += cls._BASE.size
            state.baseline[_METRIC_NAME[code]] = [mean, var, minutes, last_ms]
        for _ in range(n_known):
            code, end_ms, value = cls._KNOWN.unpack_from(raw, pos)
            pos += cls._KNOWN.size
            state.last_known[_METRIC_NAME[code]] = (end_ms, value)
        return state


def _metric_codes() -> tuple[dict[str, int], dict[int, str]]:
    names = sorted(METRICS)
    return {n: i for i, n in enumerate(names)}, dict(enumerate(names))


_METRIC_CODE, _METRIC_NAME = _metric_codes()


class FeatureEngine:
    """Hopping-window features and personal baselines for every patient a worker owns.

    Parameters
    ----------
    baseline_half_life_ms
        Half-life of the baseline's exponential weighting, event time.
    """

    def __init__(self, *, baseline_half_life_ms: int = 2 * 24 * 3_600_000) -> None:
        if baseline_half_life_ms <= 0:
            raise ValueError(f"baseline_half_life_ms must be positive, got {baseline_half_life_ms}")
        self.baseline_half_life_ms = baseline_half_life_ms
        self.patients: dict[str, PatientState] = {}

    def state(self, patient_id: str, partition: int) -> PatientState:
        """The patient's state, created empty on first sight."""
        state = self.patients.get(patient_id)
        if state is None:
            state = self.patients[patient_id] = PatientState(partition)
        return state

    def on_window(self, window: WindowFeatures, *, partition: int) -> WindowOutput:
        """Fold one closed 1-minute window into the patient's state; emit rows for hops now complete."""
        state = self.state(window.patient_id, partition)
        out = WindowOutput()
        start_ms, end_ms = window.start_ms, window.end_ms
        pane = state.panes.setdefault(start_ms - start_ms % HOP_MS, {})
        last_known = state.last_known
        for metric, stats in window.metrics.items():
            _add_minute(pane, metric, stats, start_ms)
            z, base_mean = self._update_baseline(state, metric, stats.mean, end_ms)
            if z is not None:
                out.z[metric] = z
                out.baseline[metric] = base_mean
            known = last_known.get(metric)
            if known is None or known[0] <= end_ms:
                last_known[metric] = (end_ms, stats.mean)
        state.last_reading_ms = max(state.last_reading_ms, end_ms)
        state.stopped_reported = False
        due_through = end_ms - end_ms % HOP_MS
        first = max(state.emitted_through_ms + HOP_MS, due_through - LONG_WINDOW_MS + HOP_MS)
        for boundary in range(first, due_through + 1, HOP_MS):
            row = self._row(window.patient_id, state, boundary)
            if row is not None:
                out.rows.append(row)
        if due_through > state.emitted_through_ms:
            state.emitted_through_ms = due_through
        oldest_kept = due_through - LONG_WINDOW_MS
        for old in [s for s in state.panes if s < oldest_kept]:
            del state.panes[old]
        return out

    def stopped(self, partition: int, watermark_ms: int, *, after_ms: int) -> list[tuple[str, int]]:
        """Patients of ``partition`` silent for ``after_ms`` of event time, each reported once per silence."""
        found = []
        for patient_id, state in self.patients.items():
            if (state.partition == partition and not state.stopped_reported
                    and watermark_ms - state.last_reading_ms >= after_ms):
                state.stopped_reported = True
                found.append((patient_id, state.last_reading_ms))
        return found

    def expire(self, partition: int, watermark_ms: int, *, idle_ms: int) -> list[str]:
        """Forget patients of ``partition`` without data for ``idle_ms``; return their ids."""
        gone = [p for p, s in self.patients.items()
                if s.partition == partition and watermark_ms - s.last_reading_ms >= idle_ms]
        for patient_id in gone:
            del self.patients[patient_id]
        return gone

    def _update_baseline(self, state: PatientState, metric: str, value: float,
                         end_ms: int) -> tuple[float | None, float]:
        base = state.baseline.get(metric)
        if base is None:
            state.baseline[metric] = [value, 0.0, 1.0, end_ms]
            return None, value
        mean, var, minutes, last_ms = base
        z = None
        if minutes >= BASELINE_MIN_MINUTES:
            z = (value - mean) / max(math.sqrt(var), STD_FLOOR.get(metric, 1.0))
        decay = 1.0 - 0.5 ** (max(end_ms - last_ms, 0) / self.baseline_half_life_ms)
        alpha = max(decay, 1.0 / (minutes + 1.0))  # plain average while the history is short
        delta = value - mean
        mean += alpha * delta
        var = (1.0 - alpha) * (var + alpha * delta * delta)
        state.baseline[metric] = [mean, var, minutes + 1.0, max(end_ms, last_ms)]
        return z, base[0]

    def _row(self, patient_id: str, state: PatientState, boundary: int) -> FeatureRow | None:
        since = boundary - LONG_WINDOW_MS
        long_panes = [(s, p) for s, p in sorted(state.panes.items()) if since <= s < boundary]
        if not long_panes:
            return None
        # Each metric's (pane start, stats) in pane order, gathered in one pass over the hour.
        series: dict[str, list[tuple[int, list[float]]]] = {}
        for start, pane in long_panes:
            for metric, stats in pane.items():
                entries = series.get(metric)
                if entries is None:
                    series[metric] = [(start, stats)]
                else:
                    entries.append((start, stats))
        x: dict[str, float] = {}
        for metric in sorted(series.keys() | EXPECTED_PER_MINUTE.keys()):
            expected = EXPECTED_PER_MINUTE.get(metric)
            entries = series.get(metric)
            if entries is None:
                if expected is not None:
                    x[f"{metric}_completeness_60m"] = 0.0
                continue
            starts, pane_stats = zip(*entries)
            counts, sums, sumsqs, lows, highs, last_ts, last_values, rmssds, minutes = zip(*pane_stats)
            n = sum(counts)
            if expected is not None:
                x[f"{metric}_completeness_60m"] = min(1.0, n / (expected * LONG_WINDOW_MS / MS_PER_MINUTE))
            total = math.fsum(sums)
            mean = total / n
            x[f"{metric}_mean_60m"] = mean
            x[f"{metric}_std_60m"] = math.sqrt(max(math.fsum(sumsqs) / n - mean * mean, 0.0))
            x[f"{metric}_min_60m"] = min(lows)
            x[f"{metric}_max_60m"] = max(highs)
            x[f"{metric}_last"] = max(zip(last_ts, last_values))[1]
            x[f"{metric}_slope_60m"] = _slope_per_hour(starts, list(map(truediv, sums, counts)))
            short = bisect_left(starts, boundary - SHORT_WINDOW_MS)  # the panes are in time order
            if short < len(starts):
                x[f"{metric}_mean_15m"] = math.fsum(sums[short:]) / sum(counts[short:])
            base = state.baseline.get(metric)
            if base is not None and base[2] >= BASELINE_MIN_MINUTES:
                x[f"{metric}_z_60m"] = (mean - base[0]) / max(math.sqrt(base[1]), STD_FLOOR.get(metric, 1.0))
            if metric == "step_count":
                x["step_count_sum_60m"] = total
            if metric == "heart_rate":
                x["heart_rate_rmssd_60m"] = math.fsum(rmssds) / sum(minutes)
        x["minutes_since_reading"] = max(0.0, (boundary - state.last_reading_ms) / MS_PER_MINUTE)
        return FeatureRow(patient_id=patient_id, ts_ms=boundary, x=x)


def _add_minute(pane: dict[str, list[float]], metric: str, s: MetricStats, minute_start_ms: int) -> None:
    sumsq = s.count * (s.std * s.std + s.mean * s.mean)
    stats = pane.get(metric)
    if stats is None:
        pane[metric] = [float(s.count), s.mean * s.count, sumsq, s.min, s.max, float(minute_start_ms), s.last,
                        s.rmssd, 1.0]
        return
    stats[_N] += s.count
    stats[_SUM] += s.mean * s.count
    stats[_SUMSQ] += sumsq
    stats[_MIN] = min(stats[_MIN], s.min)
    stats[_MAX] = max(stats[_MAX], s.max)
    if (minute_start_ms, s.last) > (stats[_LAST_T], stats[_LAST_V]):
        stats[_LAST_T], stats[_LAST_V] = float(minute_start_ms), s.last
    stats[_RMSSD] += s.rmssd
    stats[_MINUTES] += 1.0


def _slope_per_hour(times_ms: Sequence[int], values: Sequence[float]) -> float:
    """Least-squares slope of ``values`` on ``times_ms``, per hour; 0 for fewer than two points."""
    if len(times_ms) < 2:
        return 0.0
    hours = [t / 3_600_000 for t in times_ms]
    t_mean = math.fsum(hours) / len(hours)
    v_mean = math.fsum(values) / len(values)
    t_deviations = [t - t_mean for t in hours]
    sxx = math.fsum([d ** 2 for d in t_deviations])
    return math.fsum(map(mul, t_deviations, [v - v_mean for v in values])) / sxx
