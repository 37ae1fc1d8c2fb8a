"""Live prequential evaluation: every score is judged when its label arrives, then learned from.

*Prequential* ("predictive sequential", Dawid 1984): a window is scored with the model of the
moment; when its label becomes final (:mod:`models.labelling`), the stored score is compared
with the label, and only then does the trainer learn the window. Every score is thus judged
before the model saw its label — an honest, continuously updated test set. River's
``evaluate.progressive_val_score`` does the same with a delay; the tests check that both give
the same ROCAUC on the same labelled stream.

What is measured, per scorer (the model, NEWS2) and condition, cumulatively and over a rolling
event-time window (default the last 7 days, in 6-hour buckets):

- **AUROC**: the probability that a positive window scores above a negative one (ties half);
- **AUPRC**: average precision — more telling than AUROC when positives are rare;
- **Brier score**: mean squared error of the probability;
- **ECE**: expected calibration error over 10 equal-width probability bins,
  ``sum_b n_b / n * |mean p_b - rate_b|``;
- **River's ROCAUC** (``roc_auc_river``): the same trapezoid over ``n_thresholds`` fixed
  thresholds that ``river.metrics.ROCAUC`` computes — a coarse approximation for rare
  events (all calibrated scores may sit below its first threshold above 0), kept for parity.

Memory does not grow with the stream: :class:`ScoreSketch` keeps weighted counts of scores in
``N_BINS`` bins uniform in logit (resolution ~0.006 logit units; NEWS2's 21 levels never share
a bin, so its AUROC is exact), plus exact sums for Brier and calibration. Sketches add, so a
rolling window is the sum of its buckets.

**Drift.** ADWIN (``river.drift.ADWIN``) watches each learned scorer's per-window loss (squared
error, in [0, 1]) on the ``"any"`` condition; a change it detects that *raises* the mean loss
by at least ``drift_min_rise`` becomes an :class:`OpsEvent` of kind ``"drift"`` (count it in
``vitals_drift_events_total``). Losses come in bursts — the windows before one onset — so ADWIN
also fires on the burst of an ordinary episode; the rise rule keeps the improvements out, and
``drift_delta`` trades sensitivity for quiet.

Examples
--------
>>> ev = PrequentialEvaluator(scorers=("model", "news2"), conditions=("any",))
>>> for i, (y, p, n) in enumerate([(False, .1, .0), (True, .8, .35), (False, .3, .4), (True, .7, .2)]):
...     _ = ev.update(i * 60_000, {"any": y}, {"model": {"any": p}, "news2": {"any": n}})
>>> ev.metrics("model", "any").auroc, ev.metrics("news2", "any").auroc
(1.0, 0.5)
>>> round(ev.metrics("model", "any").brier, 4)
0.0575
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt
from scipy import integrate  # type: ignore[import-untyped]  # scipy publishes no type information (no stubs here)

from kernel.events import OpsEvent

if TYPE_CHECKING:
    from prometheus_client import Gauge

#: Score bins of a sketch, uniform in logit over [-LOGIT_RANGE, LOGIT_RANGE] (0 and 1 in the end bins).
N_BINS = 4096
LOGIT_RANGE = 12.0
#: Equal-width probability bins of the expected calibration error.
ECE_BINS = 10
_RECENT_ALPHA = 0.1  # weight of the newest loss in the recent-loss average (drift direction)
_FOLD_AT = 65_536  # buffered scores folded into a sketch at once
#: Default thresholds of the River-compatible ROCAUC (``river.metrics.ROCAUC``'s default).
RIVER_THRESHOLDS = 10

MS_PER_HOUR = 3_600_000
DEFAULT_WINDOW_MS = 7 * 24 * MS_PER_HOUR
DEFAULT_BUCKET_MS = 6 * MS_PER_HOUR

FloatVector = npt.NDArray[np.float64]


class QualityGauges(Protocol):
    """The four gauges :meth:`PrequentialEvaluator.publish` sets, labelled by model and condition
    (:class:`sinks.metrics.ModelMetrics` has them; the models import no sink)."""

    @property
    def auroc(self) -> Gauge: ...

    @property
    def auprc(self) -> Gauge: ...

    @property
    def brier(self) -> Gauge: ...

    @property
    def ece(self) -> Gauge: ...


@dataclass(frozen=True, slots=True)
class Metrics:
    """Prequential metrics of one scorer on one condition (NaN where undefined)."""

    n: float
    positives: float
    auroc: float
    auprc: float
    brier: float
    ece: float
    log_loss: float
    mean_score: float
    roc_auc_river: float

    @property
    def prevalence(self) -> float:
        """Share of positive windows."""
        return self.positives / self.n if self.n else math.nan

    def as_dict(self) -> dict[str, float | None]:
        """Plain dict, NaN as ``None`` (JSON-friendly)."""
        out: dict[str, float] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["prevalence"] = self.prevalence
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in out.items()}


def wilson_interval(successes: int, trials: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval of a proportion (default 95 %); ``(nan, nan)`` without trials.

    Alert burden counts are small (tens of onsets, tens of pages), where the normal
    approximation's interval leaves [0, 1] or collapses at 0 and 1; Wilson's does not.

    Examples
    --------
    >>> [round(v, 3) for v in wilson_interval(31, 43)]
    [0.573, 0.833]
    >>> wilson_interval(0, 10)[0], round(wilson_interval(0, 10)[1], 3)
    (0.0, 0.278)
    """
    if trials <= 0:
        return math.nan, math.nan
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must be within 0..{trials}, got {successes}")
    p = successes / trials
    z2 = z * z
    centre = (p + z2 / (2 * trials)) / (1 + z2 / trials)
    half = z / (1 + z2 / trials) * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials))
    # At 0 and at every trial a bound is exactly 0 or 1; the subtraction leaves a rounding residue.
    return (0.0 if successes == 0 else centre - half), (1.0 if successes == trials else centre + half)


def _score_bins(p: FloatVector) -> npt.NDArray[np.intp]:
    with np.errstate(divide="ignore"):
        logit = np.log(p) - np.log1p(-p)
    pos = (logit + LOGIT_RANGE) * ((N_BINS - 2) / (2 * LOGIT_RANGE)) + 1
    return np.clip(np.nan_to_num(pos, nan=0.0, posinf=N_BINS - 1, neginf=0.0), 0, N_BINS - 1).astype(np.intp)


class ScoreSketch:
    """Additive summary of weighted ``(label, score)`` pairs: enough for every metric above.

    Parameters
    ----------
    river_thresholds
        Thresholds of the River-compatible ROCAUC.
    alert_thresholds
        Scores at which to count true and false positives exactly (sensitivity, PPV).

    Examples
    --------
    >>> s = ScoreSketch()
    >>> s.update_many(np.array([0, 0, 1, 1]), np.array([.1, .4, .35, .8]))
    >>> s.auroc(), s.roc_auc_river()  # River's doctest gives 87.50% for the latter
    (0.75, 0.875)
    """

    def __init__(self, *, river_thresholds: int = RIVER_THRESHOLDS,
                 alert_thresholds: Sequence[float] = ()) -> None:
        if river_thresholds < 2:
            raise ValueError(f"river_thresholds must be at least 2, got {river_thresholds}")
        self.river_thresholds = river_thresholds
        t = [i / (river_thresholds - 1) for i in range(river_thresholds)]
        t[0] -= 1e-7
        t[-1] += 1e-7
        self._thresholds = np.array(t)
        self.alert_thresholds = tuple(float(a) for a in alert_thresholds)
        self.pos = np.zeros(N_BINS)
        self.neg = np.zeros(N_BINS)
        self.river_pos = np.zeros(river_thresholds + 1)
        self.river_neg = np.zeros(river_thresholds + 1)
        self.cal_n = np.zeros(ECE_BINS)
        self.cal_p = np.zeros(ECE_BINS)
        self.cal_y = np.zeros(ECE_BINS)
        self.alert_tp = np.zeros(len(self.alert_thresholds))
        self.alert_fp = np.zeros(len(self.alert_thresholds))
        self._n = 0.0
        self._positives = 0.0
        self.sum_p = 0.0
        self.sum_sq = 0.0  # sum of w (p - y)^2
        self.sum_log = 0.0  # sum of w log-loss
        self._buffer: list[tuple[npt.NDArray[np.bool_], FloatVector, FloatVector]] = []
        self._buffered = 0

    @property
    def n(self) -> float:
        """Total weight (windows) added."""
        self.fold()
        return self._n

    @property
    def positives(self) -> float:
        """Total weight of positive windows."""
        self.fold()
        return self._positives

    def empty_like(self) -> ScoreSketch:
        """A new, empty sketch with the same settings."""
        return ScoreSketch(river_thresholds=self.river_thresholds, alert_thresholds=self.alert_thresholds)

    def update(self, y: bool, p: float, w: float = 1.0) -> None:
        """Add one labelled score."""
        self.update_many(np.array([bool(y)]), np.array([float(p)]), np.array([float(w)]))

    def update_many(self, y: npt.ArrayLike, p: npt.ArrayLike, w: npt.ArrayLike | None = None) -> None:
        """Add labelled scores (arrays of equal length; ``w`` defaults to 1).

        Small batches are buffered and folded in together (on the next read, or every
        ``_FOLD_AT`` scores), so many small updates cost little more than one large one.
        """
        yb = np.asarray(y, dtype=bool).ravel()
        pf = np.asarray(p, dtype=np.float64).ravel()
        if yb.shape != pf.shape:
            raise ValueError(f"y and p must have the same shape, got {yb.shape} and {pf.shape}")
        if yb.size == 0:
            return
        if not (pf.min() >= 0.0 and pf.max() <= 1.0):  # NaN fails both
            raise ValueError("scores must be probabilities in [0, 1]")
        wf = np.ones_like(pf) if w is None else np.asarray(w, dtype=np.float64).ravel()
        self._buffer.append((yb, pf, wf))
        self._buffered += yb.size
        if self._buffered >= _FOLD_AT:
            self.fold()

    def fold(self) -> None:
        """Fold buffered scores into the counts (reads do it themselves)."""
        if not self._buffer:
            return
        if len(self._buffer) == 1:
            yb, pf, wf = self._buffer[0]
        else:
            yb = np.concatenate([b[0] for b in self._buffer])
            pf = np.concatenate([b[1] for b in self._buffer])
            wf = np.concatenate([b[2] for b in self._buffer])
        self._buffer.clear()
        self._buffered = 0
        yf = yb.astype(np.float64)
        bins = _score_bins(pf)
        self.pos += np.bincount(bins, weights=wf * yf, minlength=N_BINS)
        self.neg += np.bincount(bins, weights=wf * (1 - yf), minlength=N_BINS)
        k = np.searchsorted(self._thresholds, pf, side="left")  # thresholds strictly below p
        self.river_pos += np.bincount(k, weights=wf * yf, minlength=self.river_thresholds + 1)
        self.river_neg += np.bincount(k, weights=wf * (1 - yf), minlength=self.river_thresholds + 1)
        cb = np.minimum((pf * ECE_BINS).astype(np.intp), ECE_BINS - 1)
        self.cal_n += np.bincount(cb, weights=wf, minlength=ECE_BINS)
        self.cal_p += np.bincount(cb, weights=wf * pf, minlength=ECE_BINS)
        self.cal_y += np.bincount(cb, weights=wf * yf, minlength=ECE_BINS)
        for i, a in enumerate(self.alert_thresholds):
            hit = pf >= a
            self.alert_tp[i] += float(np.sum(wf * yf * hit))
            self.alert_fp[i] += float(np.sum(wf * (1 - yf) * hit))
        self._n += float(wf.sum())
        self._positives += float(np.sum(wf * yf))
        self.sum_p += float(np.sum(wf * pf))
        self.sum_sq += float(np.sum(wf * (pf - yf) ** 2))
        clipped = np.clip(pf, 1e-15, 1 - 1e-15)
        self.sum_log -= float(np.sum(wf * (yf * np.log(clipped) + (1 - yf) * np.log1p(-clipped))))

    def __iadd__(self, other: ScoreSketch) -> ScoreSketch:
        self.fold()
        other.fold()
        for name in ("pos", "neg", "river_pos", "river_neg", "cal_n", "cal_p", "cal_y", "alert_tp", "alert_fp"):
            getattr(self, name).__iadd__(getattr(other, name))
        self._n += other._n
        self._positives += other._positives
        self.sum_p += other.sum_p
        self.sum_sq += other.sum_sq
        self.sum_log += other.sum_log
        return self

    def auroc(self) -> float:
        """Area under the ROC curve, ties (same bin) counted half; NaN without both classes."""
        self.fold()
        p_total, n_total = self.pos.sum(), self.neg.sum()
        if p_total <= 0 or n_total <= 0:
            return math.nan
        pos_above = np.cumsum(self.pos[::-1])[::-1] - self.pos  # positives in higher bins
        return float(np.sum(self.neg * (pos_above + 0.5 * self.pos)) / (p_total * n_total))

    def auprc(self) -> float:
        """Average precision (area under the precision-recall steps); NaN without positives."""
        self.fold()
        p_total = self.pos.sum()
        if p_total <= 0:
            return math.nan
        tp = np.cumsum(self.pos[::-1])
        fp = np.cumsum(self.neg[::-1])
        gained = self.pos[::-1]
        mask = gained > 0
        return float(np.sum(gained[mask] / p_total * tp[mask] / (tp[mask] + fp[mask])))

    def brier(self) -> float:
        """Mean squared error of the probabilities."""
        self.fold()
        return self.sum_sq / self.n if self.n else math.nan

    def ece(self) -> float:
        """Expected calibration error over equal-width bins."""
        self.fold()
        return float(np.sum(np.abs(self.cal_p - self.cal_y)) / self.n) if self.n else math.nan

    def log_loss(self) -> float:
        """Mean log loss (scores clipped to [1e-15, 1 - 1e-15])."""
        self.fold()
        return self.sum_log / self.n if self.n else math.nan

    def mean_score(self) -> float:
        """Mean predicted probability (calibration-in-the-large: compare with the prevalence)."""
        self.fold()
        return self.sum_p / self.n if self.n else math.nan

    def roc_auc_river(self) -> float:
        """ROCAUC exactly as ``river.metrics.ROCAUC(n_thresholds=river_thresholds)`` computes it."""
        self.fold()
        tp = np.cumsum(self.river_pos[::-1])[::-1][1:]  # scores above threshold i
        fp = np.cumsum(self.river_neg[::-1])[::-1][1:]
        p_total, n_total = self.river_pos.sum(), self.river_neg.sum()
        tprs = [float(t) / p_total if p_total else 0.0 for t in tp]
        fprs = [float(f) / n_total if n_total else 0.0 for f in fp]
        return float(-integrate.trapezoid(x=fprs, y=tprs))

    def sensitivity(self, threshold: float) -> float:
        """Share of positives scoring at least ``threshold`` (one of ``alert_thresholds``)."""
        self.fold()
        i = self._alert_index(threshold)
        return float(self.alert_tp[i] / self.positives) if self.positives else math.nan

    def ppv(self, threshold: float) -> float:
        """Share of windows scoring at least ``threshold`` that are positive."""
        self.fold()
        i = self._alert_index(threshold)
        flagged = self.alert_tp[i] + self.alert_fp[i]
        return float(self.alert_tp[i] / flagged) if flagged else math.nan

    def metrics(self) -> Metrics:
        """All metrics at once."""
        self.fold()
        return Metrics(self.n, self.positives, self.auroc(), self.auprc(), self.brier(), self.ece(),
                       self.log_loss(), self.mean_score(), self.roc_auc_river())

    def _alert_index(self, threshold: float) -> int:
        try:
            return self.alert_thresholds.index(float(threshold))
        except ValueError:
            raise ValueError(f"threshold {threshold} is not one of the sketch's alert_thresholds "
                             f"{self.alert_thresholds}") from None


class RollingSketch:
    """The sum of the sketches of the last ``window_ms`` of event time, kept in buckets.

    Examples
    --------
    >>> r = RollingSketch(ScoreSketch(), window_ms=2 * MS_PER_HOUR, bucket_ms=MS_PER_HOUR)
    >>> r.update_many(0, np.array([1, 0]), np.array([.9, .1]))
    >>> r.update_many(3 * MS_PER_HOUR, np.array([1, 0]), np.array([.1, .9]))
    >>> r.total().n, r.total().auroc()  # the first bucket has left the window
    (2.0, 0.0)
    """

    def __init__(self, template: ScoreSketch, *, window_ms: int = DEFAULT_WINDOW_MS,
                 bucket_ms: int = DEFAULT_BUCKET_MS) -> None:
        if bucket_ms <= 0 or window_ms < bucket_ms:
            raise ValueError(f"need 0 < bucket_ms <= window_ms, got {bucket_ms} and {window_ms}")
        self.template = template.empty_like()
        self.window_ms = window_ms
        self.bucket_ms = bucket_ms
        self._buckets: deque[tuple[int, ScoreSketch]] = deque()

    def update_many(self, ts_ms: int, y: npt.ArrayLike, p: npt.ArrayLike, w: npt.ArrayLike | None = None) -> None:
        """Add scores labelled at event time ``ts_ms``."""
        start = ts_ms - ts_ms % self.bucket_ms
        buckets = self._buckets
        if not buckets or buckets[-1][0] < start:
            buckets.append((start, self.template.empty_like()))
            self._evict(start)
            buckets[-1][1].update_many(y, p, w)
            return
        if start <= buckets[-1][0] - self.window_ms:
            return  # older than the window: ignored
        for i in range(len(buckets) - 1, -1, -1):
            if buckets[i][0] == start:
                buckets[i][1].update_many(y, p, w)
                return
            if buckets[i][0] < start:
                buckets.insert(i + 1, (start, self.template.empty_like()))
                buckets[i + 1][1].update_many(y, p, w)
                return
        buckets.appendleft((start, self.template.empty_like()))
        buckets[0][1].update_many(y, p, w)

    def total(self) -> ScoreSketch:
        """The sum of the buckets in the window."""
        out = self.template.empty_like()
        for _, sketch in self._buckets:
            out += sketch
        return out

    def _evict(self, newest_start: int) -> None:
        while self._buckets and self._buckets[0][0] <= newest_start - self.window_ms:
            self._buckets.popleft()


class PrequentialEvaluator:
    """Prequential metrics of several scorers on the same labelled windows, with drift detection.

    Parameters
    ----------
    scorers
        Names of the scorers compared (e.g. ``("model", "news2")``).
    conditions
        Conditions evaluated.
    learned
        Scorers whose loss ADWIN watches (those that learn); default the first scorer.
    drift_condition
        Condition whose loss is watched.
    drift_delta
        ADWIN's confidence parameter (smaller: fewer, surer detections).
    drift_min_rise
        A change ADWIN detects becomes a drift event only if the recent loss (an exponential
        average over the last ~10 windows) is at least this many times ADWIN's mean before it:
        the model getting *better* (it does, while it learns) or a small wobble is not an ops event.
    window_ms, bucket_ms
        Rolling window of the ``rolling=True`` metrics, and its granularity.
    river_thresholds
        Thresholds of the River-compatible ROCAUC.
    alert_thresholds
        Per scorer, scores at which sensitivity and PPV are counted exactly.
    """

    def __init__(self, scorers: Sequence[str], conditions: Sequence[str], *, learned: Sequence[str] | None = None,
                 drift_condition: str = "any", drift_delta: float = 0.002, drift_min_rise: float = 1.5,
                 window_ms: int = DEFAULT_WINDOW_MS,
                 bucket_ms: int = DEFAULT_BUCKET_MS, river_thresholds: int = RIVER_THRESHOLDS,
                 alert_thresholds: Mapping[str, Sequence[float]] | None = None) -> None:
        if not scorers or not conditions:
            raise ValueError("need at least one scorer and one condition")
        self.scorers = tuple(scorers)
        self.conditions = tuple(conditions)
        self.learned = tuple(learned) if learned is not None else self.scorers[:1]
        self.drift_condition = drift_condition
        thresholds = dict(alert_thresholds or {})
        self._cumulative: dict[tuple[str, str], ScoreSketch] = {}
        self._rolling: dict[tuple[str, str], RollingSketch] = {}
        for s in self.scorers:
            for c in self.conditions:
                sketch = ScoreSketch(river_thresholds=river_thresholds, alert_thresholds=thresholds.get(s, ()))
                self._cumulative[(s, c)] = sketch
                self._rolling[(s, c)] = RollingSketch(sketch, window_ms=window_ms, bucket_ms=bucket_ms)
        self.drift_min_rise = drift_min_rise
        # Imported here, not at the top: river.drift loads scipy.stats for its KSWIN (two seconds of
        # every `vitalrisk` command's start-up), and only an evaluator needs ADWIN.
        from river.drift import ADWIN

        self._adwin = {s: ADWIN(delta=drift_delta)  # type: ignore[no-untyped-call]  # river: no annotations
                       for s in self.learned}
        self._recent_loss = {s: 0.0 for s in self.learned}
        self.drift_events: list[OpsEvent] = []
        self.labelled = 0

    def update(self, ts_ms: int, labels: Mapping[str, bool],
               scores: Mapping[str, Mapping[str, float]]) -> list[OpsEvent]:
        """Judge one window's stored scores against its final labels; return drift events."""
        return self.update_many(ts_ms, {c: np.array([bool(labels[c])]) for c in self.conditions},
                                {s: {c: np.array([float(scores[s][c])]) for c in self.conditions}
                                 for s in self.scorers})

    def update_many(self, ts_ms: int, labels: Mapping[str, npt.ArrayLike],
                    scores: Mapping[str, Mapping[str, npt.ArrayLike]]) -> list[OpsEvent]:
        """Judge a batch of windows labelled at event time ``ts_ms`` (in release order)."""
        events: list[OpsEvent] = []
        n = 0
        for s in self.scorers:
            for c in self.conditions:
                y, p = labels[c], scores[s][c]
                self._cumulative[(s, c)].update_many(y, p)
                self._rolling[(s, c)].update_many(ts_ms, y, p)
                n = len(np.asarray(y))
        self.labelled += n
        dc = self.drift_condition
        if dc in self.conditions:
            y = np.asarray(labels[dc], dtype=np.float64)
            for s in self.learned:
                losses = (np.asarray(scores[s][dc], dtype=np.float64) - y) ** 2
                adwin = self._adwin[s]
                recent = self._recent_loss[s]
                for loss in losses.tolist():
                    before = adwin.estimation
                    adwin.update(loss)  # type: ignore[no-untyped-call]  # river's ADWIN has no annotations
                    recent += _RECENT_ALPHA * (loss - recent)
                    if adwin.drift_detected and recent > before * self.drift_min_rise:
                        events.append(OpsEvent(kind="drift", ts_ms=ts_ms, subject=s, details={
                            "condition": dc, "recent_loss": recent, "mean_loss_before": before,
                            "labelled": self.labelled}))
                self._recent_loss[s] = recent
        self.drift_events.extend(events)
        return events

    def sketch(self, scorer: str, condition: str, *, rolling: bool = False) -> ScoreSketch:
        """The sketch behind :meth:`metrics` (a copy for ``rolling=True``)."""
        if rolling:
            return self._rolling[(scorer, condition)].total()
        return self._cumulative[(scorer, condition)]

    def metrics(self, scorer: str, condition: str, *, rolling: bool = False) -> Metrics:
        """Metrics of ``scorer`` on ``condition``, since the start or over the rolling window."""
        return self.sketch(scorer, condition, rolling=rolling).metrics()

    def publish(self, model_metrics: QualityGauges, *, rolling: bool = True) -> None:
        """Set the ``vitals_model_*`` gauges of a :class:`sinks.metrics.ModelMetrics`."""
        for s in self.scorers:
            for c in self.conditions:
                m = self.metrics(s, c, rolling=rolling)
                for gauge, value in ((model_metrics.auroc, m.auroc), (model_metrics.auprc, m.auprc),
                                     (model_metrics.brier, m.brier), (model_metrics.ece, m.ece)):
                    if not math.isnan(value):
                        gauge.labels(model=s, condition=c).set(value)
