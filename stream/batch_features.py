"""The feature engine across many patients at once: one numpy operation per statistic, not per window.

:class:`~stream.features.FeatureEngine` folds one closed 1-minute window at a time, about
90 µs each; a simulated cohort closes sixty windows per patient-hour. When every patient's
windows arrive together, minute by minute — an in-process run over a simulated cohort
(``vitalrisk evaluate``) — :class:`BatchFeatureEngine` keeps the same state as arrays over
the patients and computes the same :class:`~stream.features.FeatureRow` values (same
definitions, same baselines; sums in a fixed order, so equal to the engine's up to float
rounding) as one matrix per hop.

Its input is a :class:`MetricBatch` per metric and minute: the 1-minute window statistics
(:class:`~kernel.events.MetricStats` fields) of the patients that have the metric that
minute. :func:`summarise_columns` computes them for readings laid out as a matrix, the way
:func:`stream.windows.summarise` does for one window.

Scope: every patient must have at least one metric in every minute (no silent device), so
that each gets a row at every hop; that is what lets the engine emit rows for all patients
at once. A live stream has silences, late data and restarts: the worker keeps using
:class:`~stream.features.FeatureEngine`.

Examples
--------
>>> import numpy as np
>>> engine = BatchFeatureEngine(patients=2)
>>> out = []
>>> for minute in range(10):
...     hr = np.array([[70.0 + minute, 60.0], [72.0 + minute, 60.0]])  # 2 readings x 2 patients
...     t = np.array([[0, 0], [30_000, 30_000]])
...     batch = summarise_columns(t, hr)
...     out += engine.add_minute(minute * 60_000, {"heart_rate": batch})
>>> [(ts, round(float(x[0, engine.column("heart_rate_mean_60m")]), 1)) for ts, x in out]
[(300000, 73.0), (600000, 75.5)]
>>> float(out[-1][1][0, engine.column("heart_rate_slope_60m")])
60.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kernel.events import HOP_MS, MetricStats
from stream.features import (
    BASELINE_MIN_MINUTES,
    EXPECTED_PER_MINUTE,
    LONG_WINDOW_MS,
    MS_PER_MINUTE,
    PANES,
    SHORT_WINDOW_MS,
    STD_FLOOR,
)
from kernel.vocabulary import METRICS

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Metrics in the engine's (and the rows') order.
METRIC_NAMES: tuple[str, ...] = tuple(sorted(METRICS))
_SHORT_PANES = SHORT_WINDOW_MS // HOP_MS


@dataclass(frozen=True, slots=True)
class MetricBatch:
    """One metric's 1-minute window statistics for many patients (arrays aligned with ``rows``).

    ``rows`` are patient positions in the engine (``None``: every patient, in order); the
    other fields are :class:`~kernel.events.MetricStats`'s, one value per row.
    """

    rows: IntArray | None
    count: FloatArray
    mean: FloatArray
    min: FloatArray
    max: FloatArray
    std: FloatArray
    last: FloatArray
    slope_per_min: FloatArray
    rmssd: FloatArray

    @classmethod
    def single(cls, rows: IntArray | None, values: FloatArray) -> MetricBatch:
        """One reading per patient (what :func:`~stream.windows.summarise` gives for one point)."""
        zeros = np.zeros(len(values))
        return cls(rows, np.ones(len(values)), values, values, values, zeros, values, zeros, zeros)

    def stats(self, i: int) -> MetricStats:
        """Row ``i`` as a :class:`~kernel.events.MetricStats`."""
        return MetricStats(int(self.count[i]), float(self.mean[i]), float(self.min[i]), float(self.max[i]),
                           float(self.std[i]), float(self.last[i]), float(self.slope_per_min[i]),
                           float(self.rmssd[i]))

    def replace_rows(self, positions: IntArray, stats: list[MetricStats]) -> MetricBatch:
        """A copy with the rows at ``positions`` (indices into the arrays) set from ``stats``."""
        fields = {name: getattr(self, name).copy() for name in
                  ("count", "mean", "min", "max", "std", "last", "slope_per_min", "rmssd")}
        for pos, st in zip(positions.tolist(), stats):
            for name, array in fields.items():
                array[pos] = getattr(st, name)
        return MetricBatch(self.rows, **fields)


def summarise_columns(t_ms: npt.ArrayLike, values: npt.ArrayLike, rows: IntArray | None = None) -> MetricBatch:
    """Window statistics of ``k`` readings for each of ``m`` patients: column ``j`` is one window.

    ``t_ms`` and ``values`` are ``(k, m)``, each column sorted by time with distinct times
    (as a device samples). Sums run over the readings in time order, one at a time, exactly
    as :func:`stream.windows.summarise` adds them, so the results are the same floats.

    Examples
    --------
    >>> from stream.windows import summarise
    >>> b = summarise_columns([[0], [30_000], [60_000]], [[70.0], [71.0], [72.0]])
    >>> b.stats(0) == summarise([(0, 70.0), (30_000, 71.0), (60_000, 72.0)])
    True
    """
    t = np.asarray(t_ms, dtype=np.int64)
    v = np.asarray(values, dtype=np.float64)
    k = v.shape[0]
    if k == 1:
        return MetricBatch.single(rows, v[0])
    total = v[0].copy()
    for i in range(1, k):
        total += v[i]
    mean = total / k
    var = (v[0] - mean) * (v[0] - mean)
    for i in range(1, k):
        var += (v[i] - mean) * (v[i] - mean)
    var /= k
    minutes = (t - t[0]) / MS_PER_MINUTE
    t_sum = minutes[0].copy()
    for i in range(1, k):
        t_sum += minutes[i]
    t_mean = t_sum / k
    sxx = (minutes[0] - t_mean) * (minutes[0] - t_mean)
    sxy = (minutes[0] - t_mean) * (v[0] - mean)
    for i in range(1, k):
        sxx += (minutes[i] - t_mean) * (minutes[i] - t_mean)
        sxy += (minutes[i] - t_mean) * (v[i] - mean)
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = np.where(sxx > 0, sxy / np.where(sxx > 0, sxx, 1.0), 0.0)
    d = v[1] - v[0]
    ssd = d * d
    for i in range(2, k):
        d = v[i] - v[i - 1]
        ssd += d * d
    return MetricBatch(rows, np.full(v.shape[1], float(k)), mean, v.min(axis=0), v.max(axis=0), np.sqrt(var),
                       v[k - 1].copy(), slope, np.sqrt(ssd / (k - 1)))


def feature_columns() -> tuple[str, ...]:
    """Names of the row matrix's columns, in order: what :class:`~stream.features.FeatureRow` may hold.

    >>> cols = feature_columns()
    >>> cols[-1], "heart_rate_rmssd_60m" in cols, "step_count_sum_60m" in cols
    ('minutes_since_reading', True, True)
    """
    cols: list[str] = []
    for m in METRIC_NAMES:
        if m in EXPECTED_PER_MINUTE:
            cols.append(f"{m}_completeness_60m")
        cols += [f"{m}_{s}" for s in ("mean_60m", "std_60m", "min_60m", "max_60m", "last", "slope_60m",
                                      "mean_15m", "z_60m")]
        if m == "step_count":
            cols.append("step_count_sum_60m")
        if m == "heart_rate":
            cols.append("heart_rate_rmssd_60m")
    cols.append("minutes_since_reading")
    return tuple(cols)


class _MetricState:
    """Panes (a ring of the last hour's 5-minute sums) and baseline of one metric, for every patient."""

    def __init__(self, patients: int) -> None:
        shape = (PANES, patients)
        self.n = np.zeros(shape)
        self.sum = np.zeros(shape)
        self.sumsq = np.zeros(shape)
        self.min = np.full(shape, np.inf)
        self.max = np.full(shape, -np.inf)
        self.last = np.full(shape, np.nan)
        self.rmssd = np.zeros(shape)
        self.minutes = np.zeros(shape)
        self.base_mean = np.zeros(patients)
        self.base_var = np.zeros(patients)
        self.base_minutes = np.zeros(patients)
        self.base_last_ms = np.zeros(patients)

    def clear_pane(self, slot: int) -> None:
        for a, v in ((self.n, 0.0), (self.sum, 0.0), (self.sumsq, 0.0), (self.min, np.inf), (self.max, -np.inf),
                     (self.last, np.nan), (self.rmssd, 0.0), (self.minutes, 0.0)):
            a[slot] = v


class BatchFeatureEngine:
    """:class:`~stream.features.FeatureEngine`'s features for a fixed set of patients, as arrays.

    Feed every minute in order with :meth:`add_minute`; at each hop boundary it returns the
    row matrix of every patient (columns :func:`feature_columns`, NaN where the engine's row
    has no such feature).

    Parameters
    ----------
    patients
        Number of patients (positions ``0 .. patients - 1``).
    baseline_half_life_ms
        Half-life of the baselines' exponential weighting, event time.
    """

    def __init__(self, patients: int, *, baseline_half_life_ms: int = 2 * 24 * 3_600_000) -> None:
        if patients < 1:
            raise ValueError(f"patients must be at least 1, got {patients}")
        if baseline_half_life_ms <= 0:
            raise ValueError(f"baseline_half_life_ms must be positive, got {baseline_half_life_ms}")
        self.patients = patients
        self.baseline_half_life_ms = baseline_half_life_ms
        self.columns = feature_columns()
        self._index = {c: i for i, c in enumerate(self.columns)}
        self._state = {m: _MetricState(patients) for m in METRIC_NAMES}
        self._last_reading_ms = np.zeros(patients)
        self._next_minute_ms: int | None = None

    def column(self, name: str) -> int:
        """Position of feature ``name`` in the row matrix."""
        return self._index[name]

    def add_minute(self, start_ms: int, metrics: dict[str, MetricBatch]) -> list[tuple[int, FloatArray]]:
        """Fold the windows ``[start_ms, start_ms + 1 min)`` of every patient; rows of hops now complete.

        Every patient must appear in at least one metric's batch, and minutes must come one
        after another without a gap.

        Returns
        -------
        list of (hop boundary ms, ``(patients, columns)`` matrix)
            Empty unless ``start_ms + 1 min`` is a hop boundary (then one entry).

        Raises
        ------
        ValueError
            If a minute is skipped or repeated, ``start_ms`` is not on a minute, or a patient
            has no metric.
        """
        if start_ms % MS_PER_MINUTE:
            raise ValueError(f"start_ms must be on a whole minute, got {start_ms}")
        if self._next_minute_ms is not None and start_ms != self._next_minute_ms:
            raise ValueError(f"minutes must follow each other: expected {self._next_minute_ms}, got {start_ms}")
        self._next_minute_ms = start_ms + MS_PER_MINUTE
        end_ms = start_ms + MS_PER_MINUTE
        slot = (start_ms // HOP_MS) % PANES
        new_pane = start_ms % HOP_MS == 0
        seen = np.zeros(self.patients, dtype=bool)
        for name in METRIC_NAMES:
            state = self._state[name]
            if new_pane:
                state.clear_pane(slot)
            batch = metrics.get(name)
            if batch is None or len(batch.count) == 0:
                continue
            rows = slice(None) if batch.rows is None else batch.rows
            seen[rows] = True
            self._add(state, slot, rows, batch, end_ms)
        if not seen.all():
            raise ValueError(f"every patient needs a window every minute; {int((~seen).sum())} have none at "
                             f"{start_ms}")
        self._last_reading_ms[:] = np.maximum(self._last_reading_ms, end_ms)
        if end_ms % HOP_MS:
            return []
        return [(end_ms, self._rows(end_ms))]

    def _add(self, st: _MetricState, slot: int, rows: slice | IntArray, b: MetricBatch, end_ms: int) -> None:
        # The pane sums, as FeatureEngine's _add_minute: count, sum, sum of squares, extremes, last, rmssd.
        count = b.count
        st.n[slot, rows] += count
        st.sum[slot, rows] += b.mean * count
        st.sumsq[slot, rows] += count * (b.std * b.std + b.mean * b.mean)
        st.min[slot, rows] = np.minimum(st.min[slot, rows], b.min)
        st.max[slot, rows] = np.maximum(st.max[slot, rows], b.max)
        st.last[slot, rows] = b.last  # minutes come in order: the newest minute's last is the pane's
        st.rmssd[slot, rows] += b.rmssd
        st.minutes[slot, rows] += 1.0
        # The baseline, as FeatureEngine._update_baseline: a time-decayed EWMA of the minute means.
        value = b.mean
        minutes = st.base_minutes[rows]
        mean, var, last_ms = st.base_mean[rows], st.base_var[rows], st.base_last_ms[rows]
        first = minutes == 0
        decay = 1.0 - np.power(0.5, np.maximum(end_ms - last_ms, 0.0) / self.baseline_half_life_ms)
        alpha = np.maximum(decay, 1.0 / (minutes + 1.0))
        delta = value - mean
        st.base_mean[rows] = np.where(first, value, mean + alpha * delta)
        st.base_var[rows] = np.where(first, 0.0, (1.0 - alpha) * (var + alpha * delta * delta))
        st.base_minutes[rows] = minutes + 1.0
        st.base_last_ms[rows] = np.where(first, float(end_ms), np.maximum(float(end_ms), last_ms))

    def _rows(self, boundary_ms: int) -> FloatArray:
        """Every patient's row at ``boundary_ms`` (FeatureEngine._row, one column at a time)."""
        p = self.patients
        x = np.full((p, len(self.columns)), np.nan)
        col = self._index
        first_pane = boundary_ms // HOP_MS - PANES  # pane index of boundary - 1 h; slots in time order
        order = [(first_pane + j) % PANES for j in range(PANES)]
        hours = np.array([(j - PANES) * HOP_MS / 3_600_000 for j in range(PANES)])  # pane start - boundary
        for name in METRIC_NAMES:
            st = self._state[name]
            n_p = st.n[order]
            present = n_p > 0
            n = n_p[0].copy()
            total = st.sum[order[0]].copy()
            sumsq = st.sumsq[order[0]].copy()
            for j in range(1, PANES):
                n += n_p[j]
                total += st.sum[order[j]]
                sumsq += st.sumsq[order[j]]
            expected = EXPECTED_PER_MINUTE.get(name)
            if expected is not None:
                x[:, col[f"{name}_completeness_60m"]] = np.minimum(1.0, n / (expected * LONG_WINDOW_MS / MS_PER_MINUTE))
            has = n > 0
            if not has.any():
                continue
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = total / n
                std = np.sqrt(np.maximum(sumsq / n - mean * mean, 0.0))
                low = st.min[order].min(axis=0)
                high = st.max[order].max(axis=0)
                last = np.full(p, np.nan)
                for j in range(PANES):
                    last = np.where(present[j], st.last[order[j]], last)
                # Trend: least-squares slope of the pane means on pane start, per hour.
                pane_mean = np.where(present, st.sum[order] / np.where(present, n_p, 1.0), 0.0)
                w = present.astype(np.float64)
                k = w.sum(axis=0)
                t_mean = (w * hours[:, None]).sum(axis=0) / k
                v_mean = (w * pane_mean).sum(axis=0) / k
                dt = (hours[:, None] - t_mean) * w
                sxx = (dt * dt).sum(axis=0)
                slope = np.where(k >= 2, (dt * (pane_mean - v_mean)).sum(axis=0) / np.where(k >= 2, sxx, 1.0), 0.0)
                short_n = n_p[-_SHORT_PANES:].sum(axis=0)
                short_sum = st.sum[order[-_SHORT_PANES:]].sum(axis=0)
                mean_15 = np.where(short_n > 0, short_sum / short_n, np.nan)
                warm = st.base_minutes >= BASELINE_MIN_MINUTES
                floor = STD_FLOOR.get(name, 1.0)
                z = np.where(warm, (mean - st.base_mean) / np.maximum(np.sqrt(st.base_var), floor), np.nan)
            nan = np.nan
            x[:, col[f"{name}_mean_60m"]] = np.where(has, mean, nan)
            x[:, col[f"{name}_std_60m"]] = np.where(has, std, nan)
            x[:, col[f"{name}_min_60m"]] = np.where(has, low, nan)
            x[:, col[f"{name}_max_60m"]] = np.where(has, high, nan)
            x[:, col[f"{name}_last"]] = np.where(has, last, nan)
            x[:, col[f"{name}_slope_60m"]] = np.where(has, slope, nan)
            x[:, col[f"{name}_mean_15m"]] = np.where(has, mean_15, nan)
            x[:, col[f"{name}_z_60m"]] = np.where(has, z, nan)
            if name == "step_count":
                x[:, col["step_count_sum_60m"]] = np.where(has, total, nan)
            if name == "heart_rate":
                rmssd = st.rmssd[order].sum(axis=0)
                minutes = st.minutes[order].sum(axis=0)
                with np.errstate(invalid="ignore", divide="ignore"):
                    x[:, col["heart_rate_rmssd_60m"]] = np.where(has, rmssd / minutes, nan)
        x[:, col["minutes_since_reading"]] = np.maximum(0.0, (boundary_ms - self._last_reading_ms) / MS_PER_MINUTE)
        return x


def row_dict(columns: tuple[str, ...], row: FloatArray) -> dict[str, float]:
    """A row of the matrix as the feature dict :class:`~stream.features.FeatureRow` holds (NaN dropped).

    >>> row_dict(("a", "b"), np.array([1.0, np.nan]))
    {'a': 1.0}
    """
    return {c: v for c, v in zip(columns, row.tolist()) if not math.isnan(v)}
