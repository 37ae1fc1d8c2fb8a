"""``vitalrisk evaluate``: simulator -> pipeline core -> features -> models, in one process, no Kafka.

A cohort without faults (the default) takes the array path: the simulator's per-minute arrays
become the pipeline's 1-minute window statistics and feature rows with numpy
(:mod:`stream.cohort_features`, :mod:`stream.batch_features`; the same rows the pipeline
computes, tested), in worker processes by patient shard, merged hop by hop in (time, patient)
order into one model loop, so the result does not depend on the number of processes. A cohort
with faults goes, as wire bytes, through the same pure core the worker runs
(:class:`stream.pipeline.VitalsPipeline`: validation, de-duplication and event-time windows; one
partition, offsets a counter, record time the send time), then through the feature engine
(:class:`stream.features.FeatureEngine`: a row per patient every 5 minutes of event time). Each
row is scored by the current model snapshot and by NEWS2 on the same row; the scores are held
by the :class:`~models.labelling.DelayedLabeller` until the simulator's outcome events (or
their absence) label them; then they are judged (prequential) and learned by the trainer,
whose hourly snapshots the scorer swaps to — the live system's loop, run as fast as it goes.

The report covers windows scored after a warm-up (default 3 days, while the model is young):
AUROC, AUPRC, Brier score and ECE of the model and NEWS2 per condition; the subgroup table and
fairness flags; ADWIN drift events; and the alert burden of the default alert policy replayed
over the scores (:func:`stream.alerts.replay.replay_pages`; every model risk head pages, as in
the alerter): pages per patient-day, page PPV (a firing page followed by an onset within the
horizon), episode sensitivity (an onset preceded by a firing page within the horizon; an onset
whose whole horizon lay inside an earlier episode is counted apart, since every score that could
have warned of it is excluded as that episode's aftermath) and median lead time, overall and per
outcome kind (``by_kind``), where the onsets no page preceded are also timed to their first
page after onset (reported apart, never counted as detections).
Plots (ROC, calibration, example trajectories) go to ``out_dir`` when matplotlib is installed.

Simulated cohorts prove the machinery, not clinical validity: the simulator's physiology and
its deteriorations are ours, so a model that beats NEWS2 here has learned our simulator.
"""

from __future__ import annotations

import gc
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt

from kernel.events import OpsEvent
from models.prequential import LOGIT_RANGE, N_BINS, Metrics, PrequentialEvaluator, ScoreSketch, wilson_interval
from models.fairness import FairnessMonitor, FairnessPolicy, GroupMetrics, patient_record
from models.labelling import ANY, DEFAULT_HORIZON_MS, DelayedLabeller, Outcome, covered
from models.news2 import MAX_TOTAL
from models.patient_context import DEFAULT_INPUTS, PatientContext, parse_inputs, patient_columns, patient_matrix
from models.risk import CONDITIONS, DEFAULT_NEGATIVE_RATE, RiskModel
from models import news2 as _news2
from models.scorer import NEWS2_FEATURES, FeatureSpace, News2RowScorer, Scorer
from models.trainer import Trainer
from kernel.events import HOP_MS, FeatureRow, RiskScore
from stream.features import FeatureEngine
from kernel.settings import Settings
from simulators.cohort import CohortConfig, episodes, population, simulate
from stream.alerts.replay import replay_pages
from stream.alerts.rules import AlertPolicy, Threshold
from stream.cohort_features import cohort_hops, feature_columns, supports
from stream.pipeline import VitalsPipeline

MS_PER_HOUR = 3_600_000
MS_PER_DAY = 24 * MS_PER_HOUR
#: Scorers compared.
MODEL, NEWS2 = "model", "news2"
#: NEWS2 at or above this counts as an alert for window-level sensitivity (RCP: 5 = medium risk).
NEWS2_ALERT_TOTAL = 5
#: The outcome kind with the most sudden onset (simulators/deterioration.py: AF starts at once,
#: after a short, faint prodrome); the report gives episode sensitivity without it as well.
SUDDEN_KIND = "af_episode"
#: Default directory of the plots.
DEFAULT_OUT_DIR = Path("docs/img")

FloatVector = npt.NDArray[np.float64]
FloatMatrix = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class EvaluateOptions:
    """How an evaluation run models, labels and judges.

    Parameters
    ----------
    model
        Head kind (``"logreg"`` or ``"hat"``).
    seed
        Model seed.
    conditions
        Conditions with a head.
    horizon_ms
        Label horizon.
    warmup_ms
        Windows scored earlier than this after the start are learned but not reported.
    snapshot_every_ms
        Event time between snapshots (the scorer swaps to each).
    negative_rate
        Share of negative windows learned.
    outcome_grace_ms
        How late an outcome may come and still label (the simulator's delay plus slack).
    alert_threshold
        Model risk counted as an alert for window-level sensitivity and the fairness gate;
        ``None``: the alert policy's entry threshold.
    fairness
        The fairness policy.
    example_patients
        Patients with an outcome drawn in the trajectory plot.
    patient_inputs
        What the model learns of each patient besides the vitals, as the trainer and the
        workers do (:mod:`models.patient_context`); ``()`` for vitals alone.
    """

    model: str = "logreg"
    seed: int = 42
    conditions: tuple[str, ...] = CONDITIONS
    horizon_ms: int = DEFAULT_HORIZON_MS
    warmup_ms: int = 3 * MS_PER_DAY
    snapshot_every_ms: int = MS_PER_HOUR
    negative_rate: float = DEFAULT_NEGATIVE_RATE
    outcome_grace_ms: int = 10 * 60_000
    alert_threshold: float | None = 0.1
    fairness: FairnessPolicy = field(default_factory=FairnessPolicy)
    example_patients: int = 4
    model_params: tuple[tuple[str, float], ...] = ()
    """Extra keyword arguments of :func:`models.risk.make_risk_model`, e.g. ``(("learning_rate", 0.02),)``."""
    burden_thresholds: tuple[float, ...] = (0.3, 0.15)
    """Model risk entry thresholds replayed besides the default policy's (exit at 70 % of entry)."""
    patient_inputs: tuple[str, ...] = DEFAULT_INPUTS


@dataclass(slots=True)
class _Held:
    """What the labeller holds per scored window: features, the model's and NEWS2's scores."""

    x: FloatVector
    p: tuple[float, ...]
    news2: float


@dataclass(slots=True)
class _Series:
    """One patient's scores over time (for alert replay and plots), in time order."""

    ts: npt.NDArray[np.int64]
    risk: FloatVector
    news2: npt.NDArray[np.int8]
    red: npt.NDArray[np.int8]
    in_episode: npt.NDArray[np.bool_]
    heads: dict[str, FloatVector] = field(default_factory=dict)
    """The per-condition heads' risks besides ``risk`` (the "any" head), by condition."""


class _SeriesStore:
    """Every score's patient, time, model risk ("any" and per condition), NEWS2 total and red
    score, appended a batch at a time as compact arrays, and grouped per patient once at the end."""

    def __init__(self, heads: Sequence[str] = ()) -> None:
        self.heads = tuple(heads)
        self._index: dict[str, int] = {}
        self._ids: list[str] = []
        self._chunks: list[tuple[npt.NDArray[np.int64], ...] | tuple[Any, ...]] = []
        self._grouped: dict[str, _Series] | None = None

    def add(self, patient_ids: Sequence[str], ts_ms: npt.ArrayLike, risk: npt.ArrayLike, news2: npt.ArrayLike,
            red: npt.ArrayLike, in_episode: npt.ArrayLike, heads: Sequence[npt.ArrayLike] = ()) -> None:
        index = self._index
        for pid in patient_ids:
            if pid not in index:
                index[pid] = len(self._ids)
                self._ids.append(pid)
        n = len(patient_ids)
        self._chunks.append((np.fromiter((index[p] for p in patient_ids), dtype=np.int32, count=n),
                             np.broadcast_to(np.asarray(ts_ms, dtype=np.int64), (n,)).copy(),
                             np.asarray(risk, dtype=np.float64), np.asarray(news2, dtype=np.int8),
                             np.asarray(red, dtype=np.int8), np.asarray(in_episode, dtype=np.bool_),
                             *(np.asarray(h, dtype=np.float64) for h in heads)))
        self._grouped = None

    def by_patient(self) -> dict[str, _Series]:
        """Patient id -> their series (stable: each patient's scores in the order they came)."""
        if self._grouped is None:
            if not self._chunks:
                self._grouped = {}
                return self._grouped
            cols = [np.concatenate(c) for c in zip(*self._chunks)]
            order = np.argsort(cols[0], kind="stable")
            who, ts, risk, news2, red, episode, *heads = (c[order] for c in cols)
            names = self.heads if len(heads) == len(self.heads) else ()
            starts = np.searchsorted(who, np.arange(len(self._ids) + 1))
            self._grouped = {pid: _Series(ts[a:b], risk[a:b], news2[a:b], red[a:b], episode[a:b],
                                          {c: h[a:b] for c, h in zip(names, heads)})
                             for pid, a, b in zip(self._ids, starts[:-1].tolist(), starts[1:].tolist()) if b > a}
        return self._grouped


@dataclass(frozen=True, slots=True)
class Burden:
    """Alert burden of one scorer under the alert policy, over the report period."""

    scorer: str
    kinds: tuple[str, ...]
    pages: int
    true_pages: int
    """Pages followed by an onset within the horizon (PPV's numerator)."""
    pages_per_patient_day: float
    ppv: float
    sensitivity: float
    outcomes: int
    detected: int
    median_lead_h: float
    by_kind: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per outcome kind: ``outcomes``, ``detected`` (a page within the horizon before onset),
    ``sensitivity``, ``median_lead_h``; and, of the onsets no page preceded, ``late_detected``
    (a first page within the horizon after onset, scores in the episode included) and
    ``median_delay_h`` (onset to that page). Late pages are not detections. ``in_episode``:
    onsets left out of ``outcomes``, as in :attr:`in_episode`."""
    in_episode: int = 0
    """Onsets in the report period whose whole horizon lay inside the patient's earlier episodes:
    every score that could have warned of them was excluded as that episode's aftermath (as the
    labeller excludes it from training and the window metrics), so no scorer could page before
    them. They are not in ``outcomes``; counting them as misses is ``detected / (outcomes + in_episode)``."""

    def as_dict(self) -> dict[str, Any]:
        out = {k: _json_safe(getattr(self, k)) for k in self.__slots__}  # type: ignore[attr-defined]
        out["ppv_ci95"] = _json_safe(list(self.ppv_interval()))
        out["sensitivity_ci95"] = _json_safe(list(self.sensitivity_interval()))
        return out

    def ppv_interval(self) -> tuple[float, float]:
        """95 % Wilson interval of the PPV: tens of pages make it wide, and a target judged on
        the point estimate alone would be judged on noise.

        >>> [round(v, 2) for v in Burden("model", (), 40, 20, 0.1, 0.5, 0.5, 4, 2, 6.0).ppv_interval()]
        [0.35, 0.65]
        """
        return wilson_interval(self.true_pages, self.pages)

    def sensitivity_interval(self) -> tuple[float, float]:
        """95 % Wilson interval of the episode sensitivity (onsets are few: 43 on the default cohort)."""
        return wilson_interval(self.detected, self.outcomes)

    def sensitivity_without(self, kind: str) -> float:
        """Episode sensitivity over the onsets of every other outcome kind.

        >>> b = Burden("model", (), 4, 2, 0.1, 0.5, 0.5, 4, 2, 6.0,
        ...            {"af_episode": {"outcomes": 2, "detected": 0}, "infection": {"outcomes": 2, "detected": 2}})
        >>> b.sensitivity_without("af_episode")
        1.0
        """
        rest = [v for k, v in self.by_kind.items() if k != kind]
        n = sum(v["outcomes"] for v in rest)
        return sum(v["detected"] for v in rest) / n if n else math.nan


@dataclass(slots=True)
class EvaluationResult:
    """Everything an evaluation run measured."""

    patients: int
    days: float
    report_days: float
    windows_scored: int
    windows_labelled: int
    metrics: dict[str, dict[str, Metrics]]
    window_alerts: dict[str, dict[str, float]]
    subgroups: list[GroupMetrics]
    fairness_flags: list[dict[str, object]]
    fairness_events: list[OpsEvent]
    fairness_inherent: list[dict[str, object]]
    drift_events: list[OpsEvent]
    burden: list[Burden]
    model_version: str | None
    labeller: dict[str, Any]
    seconds: float
    sketches: dict[str, ScoreSketch] = field(repr=False, default_factory=dict)
    examples: list[dict[str, Any]] = field(repr=False, default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The JSON object ``--json`` prints."""
        any_m, any_n = self.metrics[MODEL].get(ANY), self.metrics[NEWS2].get(ANY)
        out: dict[str, Any] = {
            "patients": self.patients, "days": self.days, "report_days": self.report_days,
            "windows_scored": self.windows_scored, "windows_labelled": self.windows_labelled,
            "auroc_model": any_m.auroc if any_m else None, "auroc_news2": any_n.auroc if any_n else None,
            "auprc_model": any_m.auprc if any_m else None, "auprc_news2": any_n.auprc if any_n else None,
            "brier_model": any_m.brier if any_m else None, "brier_news2": any_n.brier if any_n else None,
            "ece_model": any_m.ece if any_m else None, "ece_news2": any_n.ece if any_n else None,
            "metrics": {s: {c: m.as_dict() for c, m in by_c.items()} for s, by_c in self.metrics.items()},
            "window_alerts": self.window_alerts,
            "subgroups": [r.as_dict() for r in self.subgroups],
            "fairness_flags": self.fairness_flags,
            "fairness_inherent": self.fairness_inherent,
            "drift_events": [{"ts_ms": e.ts_ms, "model": e.subject, **e.details} for e in self.drift_events],
            "alert_burden": [b.as_dict() for b in self.burden],
            "model_version": self.model_version, "labeller": self.labeller, "seconds": round(self.seconds, 1),
        }
        return _json_safe(out)


class EvaluationCore:
    """The models' side of an evaluation run: feature rows and outcomes in, results out. Pure.

    Parameters
    ----------
    options
        Modelling and reporting options.
    start_ms
        Start of the simulated period (for the warm-up).
    groups
        Patient id -> attribute -> group, for fairness.
    news2_carry_ms
        How long blood pressure is carried forward for NEWS2.
    """

    def __init__(self, options: EvaluateOptions, *, start_ms: int, groups: dict[str, dict[str, str]],
                 news2_carry_ms: int = 12 * MS_PER_HOUR, context: PatientContext | None = None) -> None:
        self.options = options
        self.context = context if context is not None else PatientContext()
        self.start_ms = start_ms
        self.report_from_ms = start_ms + options.warmup_ms
        self.conditions = options.conditions
        self.space = FeatureSpace()
        self.news2 = News2RowScorer(carry_ms=news2_carry_ms)
        self.labeller: DelayedLabeller[_Held] = DelayedLabeller(
            horizon_ms=options.horizon_ms, outcome_grace_ms=options.outcome_grace_ms, hop_ms=HOP_MS,
            max_pending_per_patient=-(-(options.horizon_ms + options.outcome_grace_ms) // HOP_MS) + 16)
        self.model = RiskModel(options.model, options.seed, self.conditions, negative_rate=options.negative_rate,
                               **dict(options.model_params))
        self.live = PrequentialEvaluator((MODEL, NEWS2), self.conditions)
        threshold = options.alert_threshold if options.alert_threshold is not None else _policy_threshold()
        self.alert_threshold = threshold
        self.report = PrequentialEvaluator((MODEL, NEWS2), self.conditions, learned=(),
                                           alert_thresholds={MODEL: (threshold,),
                                                             NEWS2: (NEWS2_ALERT_TOTAL / MAX_TOTAL,)})
        self.fairness = FairnessMonitor(groups, (MODEL, NEWS2),
                                        {MODEL: threshold, NEWS2: NEWS2_ALERT_TOTAL / MAX_TOTAL},
                                        policy=options.fairness, model=f"risk-{options.model}")
        self.trainer: Trainer[_Held] = Trainer(
            self.model, name=f"risk-{options.model}", snapshot_every=None,
            snapshot_every_ms=options.snapshot_every_ms, to_x=lambda held: self.space.to_dict(held.x),
            metrics=self._snapshot_metrics)
        self.scorer = Scorer(self.trainer.snapshot(start_ms))
        any_c = ANY if ANY in self.conditions else self.conditions[0]
        self.series = _SeriesStore(tuple(c for c in self.conditions if c != any_c))
        self.patient_ids: list[str] = list(groups)
        self._news2_batch = _News2Batch(len(self.patient_ids), carry_ms=news2_carry_ms)
        self.outcomes: list[Outcome] = []
        self.windows_scored = 0
        self.now_ms = start_ms
        self.fairness_events: list[OpsEvent] = []

    def add_rows(self, rows: Sequence[FeatureRow]) -> None:
        """Score feature rows with the current snapshot and NEWS2; hold them for their labels."""
        if not rows:
            return
        space = self.space
        vectors = [space.vector(self.context.join(r.patient_id, r.x)) for r in rows]
        probs = self.scorer.score_many(space.matrix(vectors), space.columns)
        columns = [probs[c] for c in self.conditions]
        any_index = self.conditions.index(ANY) if ANY in self.conditions else 0
        risk, totals, red, episode = [], [], [], []
        for i, row in enumerate(rows):
            pid, ts = row.patient_id, row.ts_ms
            if ts > self.now_ms:  # release what is final before holding newer windows (memory bound)
                self.advance(ts)
            n2 = self.news2.score(pid, ts, row.x)
            total = n2.total
            p = tuple(float(col[i]) for col in columns)
            episode.append(self.labeller.in_episode(pid, ts))
            self.labeller.add(pid, ts, _Held(vectors[i], p, total / MAX_TOTAL))
            risk.append(p[any_index])
            totals.append(total)
            red.append(max(n2.subscores.values()))
        heads = [columns[self.conditions.index(c)] for c in self.series.heads]
        self.series.add([r.patient_id for r in rows], [r.ts_ms for r in rows], risk, totals, red, episode, heads)
        self.windows_scored += len(rows)

    def add_hop(self, ts_ms: int, rows: npt.NDArray[np.int64], X: FloatMatrix, columns: Sequence[str]) -> None:
        """Score one hop's feature rows given as a matrix, like :meth:`add_rows` for rows at ``ts_ms``.

        ``rows`` index :attr:`patient_ids` (the ``groups`` order), one per row of ``X``, whose
        columns are ``columns`` (NaN: feature absent). The array path of
        :func:`evaluate_cohort`: scores, NEWS2 and the bookkeeping run over the matrix, and
        only the labeller is fed window by window.

        Raises
        ------
        ValueError
            If ``columns`` differ from those of earlier rows.
        """
        if not len(rows):
            return
        cols = tuple(columns)
        if not self.space.columns:
            self.space = FeatureSpace(cols)
        elif self.space.columns != cols:
            raise ValueError("add_hop needs the same columns every hop (and no add_rows before it)")
        if ts_ms > self.now_ms:  # release what is final before holding newer windows (memory bound)
            self.advance(ts_ms)
        probs = self.scorer.score_many(X, cols)
        totals, red = self._news2_batch.score(rows, ts_ms, X, cols)
        p_rows = list(zip(*(probs[c].tolist() for c in self.conditions)))
        any_c = ANY if ANY in self.conditions else self.conditions[0]
        news2 = (totals / MAX_TOTAL).tolist()
        ids = self.patient_ids
        pids = [ids[r] for r in rows.tolist()]
        episode = self.labeller.add_many(pids, ts_ms, [_Held(X[i], p, n) for i, (p, n) in enumerate(zip(p_rows, news2))])
        self.series.add(pids, ts_ms, probs[any_c], totals, red, episode, [probs[c] for c in self.series.heads])
        self.windows_scored += len(rows)

    def add_outcome(self, outcome: Outcome) -> None:
        """An outcome event arrived."""
        self.outcomes.append(outcome)
        self.labeller.on_outcome(outcome)

    def advance(self, now_ms: int) -> None:
        """Event time moved to ``now_ms``: judge and learn every window whose label is now final."""
        self.now_ms = max(self.now_ms, now_ms)
        released = self.labeller.advance(now_ms)
        if not released:
            return
        conds = self.conditions
        # One pass over the windows per array, not one per condition.
        labels = np.array([[w.labels[c] for c in conds] for w in released], dtype=bool)
        probs = np.array([w.item.p for w in released], dtype=np.float64)
        y = {c: labels[:, j] for j, c in enumerate(conds)}
        pm = {c: probs[:, j] for j, c in enumerate(conds)}
        pn_one = np.array([w.item.news2 for w in released], dtype=np.float64)
        pn = {c: pn_one for c in conds}
        self.live.update_many(now_ms, y, {MODEL: pm, NEWS2: pn})
        ts = np.array([w.ts_ms for w in released], dtype=np.int64)
        mask = ts >= self.report_from_ms
        if mask.any():
            self.report.update_many(now_ms, {c: v[mask] for c, v in y.items()},
                                    {MODEL: {c: v[mask] for c, v in pm.items()},
                                     NEWS2: {c: v[mask] for c, v in pn.items()}})
            pids = [w.patient_id for w, keep in zip(released, mask.tolist()) if keep]
            any_c = ANY if ANY in conds else conds[0]
            self.fairness.update_many(pids, y[any_c][mask], {MODEL: pm[any_c][mask], NEWS2: pn_one[mask]})
        snapshot = self.trainer.learn(released, now_ms=now_ms)
        if snapshot is not None:
            self.scorer.swap(snapshot)
            if now_ms - self.report_from_ms >= 0 and (now_ms // MS_PER_HOUR) % 24 == 0:
                self.fairness_events += self.fairness.check(now_ms)

    def finish(self, *, end_ms: int, seconds: float, patients: int) -> EvaluationResult:
        """Close the run at ``end_ms`` and compute the report.

        Windows whose horizon reaches past ``end_ms`` are censored, not labelled negative: the
        simulation has no onsets after its end, so their negatives would be unearned.
        """
        self.advance(end_ms)
        self.labeller.drain()
        self.fairness_events += self.fairness.check(end_ms)
        metrics = {s: {c: self.report.metrics(s, c) for c in self.conditions} for s in (MODEL, NEWS2)}
        any_c = ANY if ANY in self.conditions else self.conditions[0]
        model_sk, news2_sk = self.report.sketch(MODEL, any_c), self.report.sketch(NEWS2, any_c)
        window_alerts = {
            MODEL: {"threshold": self.alert_threshold, "sensitivity": model_sk.sensitivity(self.alert_threshold),
                    "ppv": model_sk.ppv(self.alert_threshold)},
            NEWS2: {"threshold_total": NEWS2_ALERT_TOTAL,
                    "sensitivity": news2_sk.sensitivity(NEWS2_ALERT_TOTAL / MAX_TOTAL),
                    "ppv": news2_sk.ppv(NEWS2_ALERT_TOTAL / MAX_TOTAL)},
        }
        report_days = max(end_ms - self.report_from_ms, 0) / MS_PER_DAY
        burden = self._burden(patients, report_days, end_ms)
        stats = self.labeller.stats
        return EvaluationResult(
            patients=patients, days=(end_ms - self.start_ms) / MS_PER_DAY, report_days=report_days,
            windows_scored=self.windows_scored, windows_labelled=self.live.labelled, metrics=metrics,
            window_alerts=window_alerts, subgroups=self.fairness.table(), fairness_flags=self.fairness.flagged(),
            fairness_events=self.fairness_events, fairness_inherent=self.fairness.inherent(),
            drift_events=list(self.live.drift_events), burden=burden,
            model_version=self.scorer.version,
            labeller={"excluded": stats.excluded, "overflow": stats.overflow, "out_of_order": stats.out_of_order,
                      "late_outcomes": stats.late_outcomes, "censored": stats.censored,
                      "positives": dict(stats.positives), "outcomes": len(self.outcomes)},
            seconds=seconds, sketches={MODEL: model_sk, NEWS2: news2_sk}, examples=self._examples())

    def _snapshot_metrics(self) -> dict[str, float | None]:
        m = self.live.metrics(MODEL, self.conditions[0], rolling=True)
        return {f"{k}_{self.conditions[0]}": (None if math.isnan(v) else v)
                for k, v in (("auroc", m.auroc), ("brier", m.brier), ("ece", m.ece))}

    def _burden(self, patients: int, report_days: float, end_ms: int) -> list[Burden]:
        from dataclasses import replace

        default = AlertPolicy(data_stopped_ms=None)
        out = self._burden_for(default, patients, report_days, end_ms, "", (MODEL, NEWS2))
        any_c = ANY if ANY in self.conditions else self.conditions[0]
        out += self._burden_for(default, patients, report_days, end_ms, f":{any_c}", (MODEL,), heads=(any_c,))
        for enter in self.options.burden_thresholds:
            risk = Threshold(enter, round(0.7 * enter, 6), for_ms=default.risk.for_ms,
                             clear_for_ms=default.risk.clear_for_ms, severity=default.risk.severity)
            out += self._burden_for(replace(default, risk=risk, risk_by_condition={}), patients, report_days,
                                    end_ms, f"@{enter:g}", (MODEL,))
        return out

    def _burden_for(self, policy: Any, patients: int, report_days: float, end_ms: int,
                    suffix: str, scorers: tuple[str, ...], *, heads: tuple[str, ...] | None = None) -> list[Burden]:
        """Replay ``policy`` over the report period's scores; the burden of each of ``scorers``.

        The model's kinds are ``risk_high:<condition>`` for each of ``heads`` (default: every
        head, as the live alerter pages them); a patient's pages of different heads each count.
        The model's kinds and NEWS2's kinds are replayed separately: the engine couples no
        model-risk kind with a NEWS2 kind (its one inhibition is NEWS2 high over NEWS2 red), so
        each one's pages are what a joint replay gives. Each replay is fed only the scores that
        change some kind's state (:func:`_transitions`); the others are no-ops to the engine, and
        a week of scores shrinks to the few around each episode, which keeps the replay of a
        large cohort to seconds. A test checks the pages against a replay of every score.

        Scores in an episode (the labeller's exclusion after an onset) are left out of the
        burden replay. A second replay keeps them, only to time the first page *after* an
        onset that no page preceded (``by_kind``: ``late_detected``, ``median_delay_h``);
        those late pages never count toward sensitivity. An onset whose whole horizon the
        exclusion covers is therefore out of every scorer's reach: it is counted in
        ``in_episode``, not in ``outcomes``.
        """
        onsets: dict[str, list[tuple[int, str]]] = {}
        horizon = self.options.horizon_ms
        in_episode: dict[str, int] = {}
        episodes: dict[str, list[tuple[int, int]]] = {}  # the labeller's exclusions (it forgets past ones)
        for o in self.outcomes:
            episodes.setdefault(o.patient_id, []).append(self.labeller.exclusion(o))
        for o in self.outcomes:
            if self.report_from_ms <= o.onset_ms < end_ms:
                if covered(episodes[o.patient_id], o.onset_ms - horizon, o.onset_ms):
                    in_episode[o.kind] = in_episode.get(o.kind, 0) + 1
                else:
                    onsets.setdefault(o.patient_id, []).append((o.onset_ms, o.kind))
        any_c = ANY if ANY in self.conditions else self.conditions[0]
        names = (any_c, *self.series.heads) if heads is None else heads
        firing = self._replay(policy, scorers, names, in_episode=False)
        late = self._replay(policy, scorers, names, in_episode=True)
        out = []
        n_outcomes = sum(len(v) for v in onsets.values())
        kinds_of = {MODEL: tuple(_risk_kind(c) for c in names), NEWS2: _NEWS2_KINDS}
        for scorer in scorers:
            pages = firing[scorer]
            n_pages = sum(len(v) for v in pages.values())
            true_pages = sum(1 for pid, times in pages.items() for t in times
                             if any(t < onset <= t + horizon for onset, _ in onsets.get(pid, ())))
            leads: list[float] = []
            per_kind: dict[str, dict[str, list[float] | int]] = {}
            for pid, times in onsets.items():
                for onset, kind in times:
                    k = per_kind.setdefault(kind, _kind_counts())
                    k["outcomes"] += 1  # type: ignore[operator]
                    before = [t for t in pages.get(pid, ()) if onset - horizon <= t < onset]
                    if before:
                        leads.append((onset - min(before)) / MS_PER_HOUR)
                        k["leads"].append(leads[-1])  # type: ignore[union-attr]
                        continue
                    after = [t for t in late[scorer].get(pid, ()) if onset <= t < onset + horizon]
                    if after:
                        k["delays"].append((min(after) - onset) / MS_PER_HOUR)  # type: ignore[union-attr]
            by_kind = {kind: _kind_burden(per_kind.get(kind) or _kind_counts(), in_episode.get(kind, 0))
                       for kind in sorted(per_kind.keys() | in_episode.keys())}
            out.append(Burden(scorer + (suffix if scorer == MODEL else ""), kinds_of[scorer], n_pages, true_pages,
                              n_pages / (patients * report_days) if report_days > 0 else math.nan,
                              true_pages / n_pages if n_pages else math.nan,
                              len(leads) / n_outcomes if n_outcomes else math.nan, n_outcomes, len(leads),
                              float(np.median(leads)) if leads else math.nan, by_kind, sum(in_episode.values())))
        return out

    def _replay(self, policy: Any, scorers: tuple[str, ...], heads: tuple[str, ...], *,
                in_episode: bool) -> dict[str, dict[str, list[int]]]:
        """Event times of the firing pages of each scorer's kinds, per patient (see :meth:`_burden_for`)."""

        any_c = ANY if ANY in self.conditions else self.conditions[0]
        model_kinds = {_risk_kind(c) for c in heads}
        firing: dict[str, dict[str, list[int]]] = {s: {} for s in scorers}
        label = self.scorer.version or "untrained"
        for pid, s in self.series.by_patient().items():
            keep = s.ts >= self.report_from_ms
            if not in_episode:
                keep &= ~s.in_episode
            ts = s.ts[keep]
            for scorer in scorers:
                if scorer == MODEL:
                    risks = {c: (s.risk if c == any_c else s.heads[c])[keep] for c in heads
                             if c == any_c or c in s.heads}
                    if not risks:
                        continue
                    needed = np.zeros(len(ts), dtype=bool)
                    for c, r in risks.items():
                        needed |= _transitions(ts, r, policy.threshold(_risk_kind(c)))
                    idx = np.flatnonzero(needed)
                    columns = {c: r[idx].tolist() for c, r in risks.items()}
                    first = next(iter(columns))
                    scores = [RiskScore(pid, t - HOP_MS, t, "risk", label, columns[first][j], 0, "", {}, {},
                                        risks={c: columns[c][j] for c in columns})
                              for j, t in enumerate(ts[idx].tolist())]
                else:
                    total = s.news2[keep].astype(np.int64)
                    red = s.red[keep].astype(np.int64)
                    needed = (_transitions(ts, total, policy.news2_total)
                              | _transitions(ts, red, policy.news2_parameter))
                    scores = [RiskScore(pid, t - HOP_MS, t, "news2", label, n / MAX_TOTAL, n, "", {}, {},
                                        news2_subscores={"max": r})
                              for t, n, r in zip(ts[needed].tolist(), total[needed].tolist(), red[needed].tolist())]
                if not scores:
                    continue
                for page in replay_pages(scores, policy):
                    if page.action != "firing" or page.event_ms is None:
                        continue
                    if page.kind in (model_kinds if scorer == MODEL else _NEWS2_KINDS):
                        firing[scorer].setdefault(pid, []).append(page.event_ms)
        return firing

    def _examples(self) -> list[dict[str, Any]]:
        series = self.series.by_patient()
        seen: set[str] = set()
        picked: list[dict[str, Any]] = []
        for o in sorted(self.outcomes, key=lambda o: (o.onset_ms, o.patient_id)):
            if o.onset_ms < self.report_from_ms + MS_PER_DAY or o.patient_id in seen or o.patient_id not in series:
                continue
            seen.add(o.patient_id)
            s = series[o.patient_id]
            keep = (s.ts >= o.onset_ms - 3 * MS_PER_DAY) & (s.ts <= o.onset_ms + MS_PER_DAY)
            picked.append({"patient_id": o.patient_id, "kind": o.kind, "onset_ms": o.onset_ms,
                           "ts": s.ts[keep], "risk": s.risk[keep], "news2": s.news2[keep].astype(np.float64)})
            if len(picked) >= self.options.example_patients:
                break
        return picked


class _News2Batch:
    """:class:`~models.scorer.News2RowScorer` over a matrix of rows: same inputs, chart and carry.

    Blood pressure is carried per patient position for ``carry_ms``; a vital missing from a
    row scores 0. Returns each row's total and its largest single-parameter score.
    """

    # The chart's rows, as models.news2 scores them (bisect_right on the cut points).
    _SCALES = {"respiratory_rate": _news2._RESPIRATORY_RATE, "spo2": _news2._SPO2_SCALE_1,  # noqa: SLF001
               "systolic_bp": _news2._SYSTOLIC_BP, "heart_rate": _news2._HEART_RATE,  # noqa: SLF001
               "temperature": _news2._TEMPERATURE}  # noqa: SLF001

    def __init__(self, patients: int, *, carry_ms: int) -> None:
        self.carry_ms = carry_ms
        self._bp_ts = np.full(patients, np.iinfo(np.int64).min // 2, dtype=np.int64)
        self._bp = np.full(patients, np.nan)
        self._columns: tuple[str, ...] = ()
        self._sources: dict[str, list[int]] = {}

    def score(self, rows: npt.NDArray[np.int64], ts_ms: int, X: FloatMatrix,
              columns: tuple[str, ...]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        if columns != self._columns:
            index = {c: j for j, c in enumerate(columns)}
            self._sources = {name: [index[k] for k in keys if k in index] for name, keys in NEWS2_FEATURES.items()}
            self._columns = columns
        total = np.zeros(len(rows), dtype=np.int64)
        red = np.zeros(len(rows), dtype=np.int64)
        for name, scale in self._SCALES.items():
            value = np.full(len(rows), np.nan)
            for j in self._sources[name]:  # the first present feature of the list
                value = np.where(np.isnan(value), X[:, j], value)
            if name == "systolic_bp":
                seen = ~np.isnan(value)
                self._bp_ts[rows[seen]] = ts_ms
                self._bp[rows[seen]] = value[seen]
                carried = ~seen & (ts_ms - self._bp_ts[rows] <= self.carry_ms)
                value = np.where(carried, self._bp[rows], value)
            present = ~np.isnan(value)
            points = np.asarray(scale.points, dtype=np.int64)[
                np.searchsorted(np.asarray(scale.cuts), np.where(present, value, 0.0), side="right")]
            points = np.where(present, points, 0)
            total += points
            red = np.maximum(red, points)
        return total, red


_NEWS2_KINDS = ("news2_high", "news2_red_parameter")


def _risk_kind(condition: str) -> str:
    return f"risk_high:{condition}"


def _kind_counts() -> dict[str, Any]:
    """An outcome kind's tally while the burden is counted: onsets, and the leads and delays of its pages."""
    return {"outcomes": 0, "leads": [], "delays": []}


def _kind_burden(v: dict[str, Any], in_episode: int) -> dict[str, Any]:
    """One outcome kind's entry of :attr:`Burden.by_kind` from its counts, lead and delay lists,
    and its onsets counted apart."""
    n, leads, delays = v["outcomes"], v["leads"], v["delays"]
    return {"outcomes": n, "detected": len(leads), "sensitivity": len(leads) / n if n else math.nan,
            "median_lead_h": float(np.median(leads)) if leads else math.nan,
            "late_detected": len(delays), "median_delay_h": float(np.median(delays)) if delays else math.nan,
            "in_episode": in_episode}


def _transitions(ts: npt.NDArray[np.int64], value: npt.NDArray[Any], threshold: Any) -> npt.NDArray[np.bool_]:
    """Which of one patient's scores change an alert kind's state in the engine (see :meth:`EvaluationCore._burden_for`).

    Follows :class:`stream.alerts.engine.AlertEngine`'s phases for one kind: idle, a score at
    or above ``enter`` starts a pending episode (firing at once if ``for_ms`` has passed);
    pending, a score below ``enter`` cancels it and one at or above fires it once ``for_ms``
    has passed; firing, a score at or below ``exit`` starts (or continues) clearing, which
    resolves after ``clear_for_ms``, and one above ``exit`` stops a clearing in progress.
    Every other score — below ``enter`` while idle, above ``exit`` while firing and not
    clearing — changes nothing but the alert's last value, so leaving it out changes no page
    but re-notifications (which the burden does not count).

    >>> from stream.alerts.rules import Threshold
    >>> t = np.arange(9) * 300_000
    >>> v = np.array([0.1, 0.6, 0.8, 0.9, 0.6, 0.2, 0.1, 0.6, 0.1])
    >>> _transitions(t, v, Threshold(0.7, 0.5, 60_000, 60_000)).tolist()
    [False, False, True, True, False, True, True, False, False]
    """
    enter, exit_, for_ms, clear_ms = threshold.enter, threshold.exit, threshold.for_ms, threshold.clear_for_ms
    out = np.zeros(len(value), dtype=bool)
    idle, pending, firing = 0, 1, 2
    phase, since, clearing = idle, 0, -1
    for i, (t, v) in enumerate(zip(ts.tolist(), value.tolist())):
        if phase == idle:
            if v < enter:
                continue
            out[i] = True
            phase, since = pending, t
            if t - since >= for_ms:
                phase, clearing = firing, -1
        elif phase == pending:
            out[i] = True
            if v < enter:
                phase = idle
            elif t - since >= for_ms:
                phase, clearing = firing, -1
        elif v > exit_:
            out[i] = clearing >= 0
            clearing = -1
        else:
            out[i] = True
            if clearing < 0:
                clearing = t
            if t - clearing >= clear_ms:
                phase = idle
    return out


def _policy_threshold() -> float:
    return AlertPolicy().risk.enter


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return _json_safe(value.item())
    return value


def evaluate_cohort(config: Any, options: EvaluateOptions, settings: Settings, *,
                    progress: Callable[[float, int], None] | None = None,
                    processes: int | None = None) -> EvaluationResult:
    """Run the cohort of ``config`` (a :class:`simulators.cohort.CohortConfig`) through everything.

    A cohort without faults takes the array path: feature rows straight from the simulator's
    arrays (:mod:`stream.cohort_features`, the rows the pipeline would compute), in
    ``processes`` worker processes (``0``: in this process; ``None``: one per spare core),
    merged hop by hop in (time, patient) order into the one model loop, so the result does not
    depend on ``processes``. A cohort with faults goes through the pipeline core as wire
    messages (validation, de-duplication, late readings), one process.

    ``progress(fraction_done, rows_scored)`` is called about twice a second.
    """

    with _few_collections():
        if supports(config):
            return _evaluate_arrays(config, options, settings, progress=progress,
                                    processes=default_processes() if processes is None else processes)
        return _evaluate_messages(config, options, settings, progress=progress)


@contextmanager
def _few_collections() -> Iterator[None]:
    """Run with Python's cyclic garbage collector mostly idle, then restore its thresholds.

    A run holds about a million small tracked objects (held windows, their labels); every full
    collection walks all of them, and at the default thresholds that costs 10-15 % of the run.
    The run makes almost no reference cycles (a few dozen objects over a whole run).
    """
    before = gc.get_threshold()
    gc.set_threshold(200_000, 100, 100)
    try:
        yield
    finally:
        gc.set_threshold(*before)


def default_processes() -> int:
    """Feature worker processes by default: one per core beside the model loop's (at least one).

    >>> default_processes() >= 1
    True
    """
    return max(1, (os.cpu_count() or 1) - 1)


def _evaluate_arrays(config: Any, options: EvaluateOptions, settings: Settings, *,
                     progress: Callable[[float, int], None] | None, processes: int) -> EvaluationResult:

    started = time.monotonic()
    patients = population(config)
    records = [patient_record(p) for p in patients]
    groups = {r.patient_id: r.groups for r in records}
    core = EvaluationCore(options, start_ms=config.start_ms, groups=groups, news2_carry_ms=settings.news2_carry_ms)
    end_ms = config.start_ms + config.duration_ms
    columns: tuple[str, ...] = feature_columns()
    inputs = None
    if options.patient_inputs:
        inputs = patient_matrix(records, options.patient_inputs)
        columns = (*columns, *patient_columns(options.patient_inputs))
    # Outcome events in the order simulate() sends them (by send time; ties in plan order).
    sent = sorted(((e.onset_ms + config.outcome_delay_ms, i, Outcome.from_wire(out))
                   for i, e in enumerate(episodes(config)) if (out := e.outcome()) is not None),
                  key=lambda item: item[:2])
    outcomes = [(at, outcome) for at, _, outcome in sent]
    next_outcome = 0
    rows = np.arange(len(patients), dtype=np.int64)
    last_report = 0.0
    for ts, X in cohort_hops(config, processes=processes):
        # A hop's rows exist once its last minute's window has closed: about a minute after ts,
        # when the next minute's messages arrive; outcomes sent before then are known first.
        while next_outcome < len(outcomes) and outcomes[next_outcome][0] <= ts + settings.window_ms:
            core.add_outcome(outcomes[next_outcome][1])
            next_outcome += 1
        core.add_hop(ts, rows, X if inputs is None else np.hstack([X, inputs]), columns)
        if progress is not None:
            now = time.monotonic()
            if now - last_report >= 0.5:
                last_report = now
                progress(min(1.0, (ts - config.start_ms) / config.duration_ms), core.windows_scored)
    for _, outcome in outcomes[next_outcome:]:
        core.add_outcome(outcome)
    if progress is not None:
        progress(1.0, core.windows_scored)
    return core.finish(end_ms=end_ms, seconds=time.monotonic() - started, patients=len(patients))


def _evaluate_messages(config: Any, options: EvaluateOptions, settings: Settings, *,
                       progress: Callable[[float, int], None] | None) -> EvaluationResult:
    """The message path: wire bytes through :class:`~stream.pipeline.VitalsPipeline`, then the feature engine."""

    started = time.monotonic()
    patients = population(config)
    records = [patient_record(p) for p in patients]
    groups = {r.patient_id: r.groups for r in records}
    context = PatientContext(options.patient_inputs)
    for record in records:
        context.update(record)
    core = EvaluationCore(options, start_ms=config.start_ms, groups=groups, news2_carry_ms=settings.news2_carry_ms,
                          context=context)
    pipeline = VitalsPipeline.from_settings(settings)
    engine = FeatureEngine()
    end_ms = config.start_ms + config.duration_ms
    buffer: list[FeatureRow] = []
    last_report = 0.0

    def flush() -> None:
        if buffer:
            core.add_rows(buffer)
            core.advance(max(r.ts_ms for r in buffer))
            buffer.clear()

    def take(windows: Iterable[Any]) -> None:
        for window in windows:
            buffer.extend(engine.on_window(window, partition=0).rows)

    for offset, message in enumerate(simulate(config)):
        if message.kind == "outcome":
            flush()
            core.add_outcome(Outcome.from_wire(message.payload))  # type: ignore[arg-type]
            continue
        payload = message.payload
        raw = payload if isinstance(payload, bytes) else json.dumps(payload, separators=(",", ":")).encode()
        step = pipeline.on_message(raw, partition=0, offset=offset, record_ts_ms=message.sent_ms)
        if step.windows:
            take(step.windows)
            if len(buffer) >= 1024:
                flush()
        if progress is not None and offset % 2048 == 0:
            now = time.monotonic()
            if now - last_report >= 0.5:
                last_report = now
                progress(min(1.0, (message.sent_ms - config.start_ms) / config.duration_ms), core.windows_scored)
    take(pipeline.close_partition(0).windows)
    flush()
    if progress is not None:
        progress(1.0, core.windows_scored)
    return core.finish(end_ms=end_ms, seconds=time.monotonic() - started, patients=len(patients))


def _progress_bar(stream: TextIO) -> Callable[[float, int], None]:
    started = time.monotonic()

    def show(fraction: float, rows: int) -> None:
        elapsed = time.monotonic() - started
        eta = elapsed / fraction - elapsed if fraction > 0.001 else math.nan
        filled = int(30 * fraction)
        eta_text = "--:--" if math.isnan(eta) else f"{int(eta // 60):02d}:{int(eta % 60):02d}"
        stream.write(f"\r[{'#' * filled}{' ' * (30 - filled)}] {100 * fraction:5.1f}%  {rows:,} rows scored  "
                     f"elapsed {int(elapsed // 60):02d}:{int(elapsed % 60):02d}  eta {eta_text} ")
        stream.flush()
    return show


def format_report(result: EvaluationResult) -> str:
    """The human-readable report."""
    lines = [f"vitalrisk evaluate: {result.patients} patients x {result.days:g} days; report on the last "
             f"{result.report_days:g} days ({result.windows_scored:,} windows scored, "
             f"{result.windows_labelled:,} labelled; model {result.model_version})", ""]
    lines.append(f"  {'condition':<19}{'scorer':<8}{'AUROC':>7}{'AUPRC':>7}{'Brier':>8}{'ECE':>7}"
                 f"{'windows':>10}{'positives':>10}")
    for c in result.metrics[MODEL]:
        for s in (MODEL, NEWS2):
            m = result.metrics[s][c]
            lines.append(f"  {c:<19}{s:<8}{m.auroc:7.3f}{m.auprc:7.3f}{m.brier:8.4f}{m.ece:7.4f}"
                         f"{int(m.n):>10,}{int(m.positives):>10,}")
    lines += ["", "  subgroups (any deterioration; sens at the window-alert threshold; E/O expected/observed events, NEWS2 histogram-calibrated)",
              f"  {'scorer':<8}{'attribute':<11}{'group':<8}{'patients':>9}{'positives':>10}{'AUROC':>7}"
              f"{'sens':>7}{'E/O':>7}"]
    for r in result.subgroups:
        lines.append(f"  {r.scorer:<8}{r.attribute:<11}{r.group:<8}{r.patients:>9}{int(r.positives):>10,}"
                     f"{r.auroc:7.3f}{r.sensitivity:7.3f}{r.calibration:7.2f}")
    def gap_text(f: dict[str, object]) -> str:
        return (f"{f['scorer']} {f['metric']} gap on {f['attribute']} ({f['low_group']} {f['low']:.3g} vs "
                f"{f['high_group']} {f['high']:.3g})")

    flags = result.fairness_flags
    lines.append("")
    lines.append("  fairness: " + ("nothing flagged" if not flags else "; ".join(gap_text(f) for f in flags)))
    if result.fairness_inherent:
        lines.append("  inherent to a baseline (reported, no ops event): "
                     + "; ".join(gap_text(f) for f in result.fairness_inherent))
    lines.append(f"  drift (ADWIN on the model's loss): {len(result.drift_events)} event(s)")
    lines += ["", "  alert burden (alert policy replayed over the report period; model: every risk head, as the "
              "alerter pages;", "  model:any: the \"any\" head only; model@T: every head at entry T, exit 0.7 T; "
              f"sens-AF: without {SUDDEN_KIND})",
              f"  {'scorer':<12}{'pages':>7}{'/pt-day':>9}{'PPV':>7}{'(95% CI)':>13}{'sens':>7}{'(95% CI)':>13}"
              f"{'sens-AF':>8}{'lead h':>8}"]
    for b in result.burden:
        lines.append(f"  {b.scorer:<12}{b.pages:>7}{b.pages_per_patient_day:9.3f}{b.ppv:7.3f}{_span(b.ppv_interval()):>13}"
                     f"{b.sensitivity:7.3f}{_span(b.sensitivity_interval()):>13}"
                     f"{b.sensitivity_without(SUDDEN_KIND):8.3f}{b.median_lead_h:8.1f}")
    lines.append("  by outcome kind: detected/onsets (median lead h); of the missed, paged within the horizon "
                 "after onset (median delay h) — late pages are not detections")
    for b in result.burden:
        parts = [f"{kind} {k['detected']}/{k['outcomes']} ({_hours(k['median_lead_h'])}), late {k['late_detected']} "
                 f"({_hours(k['median_delay_h'])})" for kind, k in b.by_kind.items()]
        lines.append(f"  {b.scorer:<12}" + ("; ".join(parts) or "no onset in the report period"))
    skipped = {kind: k["in_episode"] for kind, k in (result.burden[0].by_kind if result.burden else {}).items()
               if k["in_episode"]}
    if skipped:
        lines.append("  not counted: onsets whose whole horizon lay inside an earlier episode (no score could warn): "
                     + ", ".join(f"{kind} {n}" for kind, n in skipped.items()))
    lines.append(f"\n  {result.seconds:.0f} s. Simulated cohorts prove the machinery, not clinical validity.")
    return "\n".join(lines)


def _span(interval: tuple[float, float]) -> str:
    lo, hi = interval
    return "-" if math.isnan(lo) else f"{lo:.2f}-{hi:.2f}"


def _hours(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.1f}"


def write_plots(result: EvaluationResult, out_dir: Path) -> list[Path]:
    """ROC, calibration and trajectory plots as PNG files; ``[]`` if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, sk in result.sketches.items():
        fpr, tpr = roc_curve(sk)
        ax.plot(fpr, tpr, label=f"{name} (AUROC {sk.auroc():.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate",
           title="Any deterioration within 12 h (report period)")
    ax.legend(loc="lower right")
    paths.append(_save(fig, out_dir / "evaluate_roc.png"))
    fig, ax = plt.subplots(figsize=(5, 5))
    predicted, observed, counts = reliability(result.sketches[MODEL])
    ax.plot(predicted, observed, "o-", label=f"model (ECE {result.sketches[MODEL].ece():.4f})")
    top = max(float(np.nanmax(predicted)) if len(predicted) else 0.01, float(np.nanmax(observed)) if len(observed) else 0.01)
    ax.plot([0, top], [0, top], "k:", lw=0.8, label="perfect calibration")
    ax.set(xlabel="mean predicted risk (bin)", ylabel="observed rate (bin)",
           title="Calibration, any deterioration (quantile bins)")
    ax.legend(loc="upper left")
    paths.append(_save(fig, out_dir / "evaluate_calibration.png"))
    if result.examples:
        fig, axes = plt.subplots(len(result.examples), 1, figsize=(8, 2.2 * len(result.examples)), sharex=False)
        for ax, ex in zip(np.atleast_1d(axes), result.examples):
            hours = (ex["ts"] - ex["onset_ms"]) / MS_PER_HOUR
            ax.plot(hours, ex["risk"], lw=0.8, label="model risk (any)")
            ax.plot(hours, ex["news2"] / MAX_TOTAL, lw=0.8, label="NEWS2 / 20")
            ax.axvline(0, color="r", lw=1)
            ax.axvspan(-12, 0, color="r", alpha=0.08)
            ax.set_title(f"{ex['patient_id']}: {ex['kind']} (onset at 0 h; shaded: 12-h horizon)", fontsize=9)
            ax.set_ylim(0, 1)
        np.atleast_1d(axes)[-1].set_xlabel("hours from onset")
        np.atleast_1d(axes)[0].legend(loc="upper left", fontsize=8)
        fig.tight_layout()
        paths.append(_save(fig, out_dir / "evaluate_trajectories.png"))
    return paths


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def roc_curve(sketch: ScoreSketch) -> tuple[FloatVector, FloatVector]:
    """ROC points (FPR, TPR) of a sketch, highest threshold first."""
    sketch.fold()
    tp = np.concatenate([[0.0], np.cumsum(sketch.pos[::-1])])
    fp = np.concatenate([[0.0], np.cumsum(sketch.neg[::-1])])
    return fp / max(fp[-1], 1e-12), tp / max(tp[-1], 1e-12)


def reliability(sketch: ScoreSketch, groups: int = 12) -> tuple[FloatVector, FloatVector, FloatVector]:
    """Reliability points from a sketch: score bins merged into ``groups`` of equal weight."""
    sketch.fold()
    centers = np.arange(N_BINS, dtype=np.float64)
    logit = (centers - 1 + 0.5) * (2 * LOGIT_RANGE / (N_BINS - 2)) - LOGIT_RANGE
    p_center = 1.0 / (1.0 + np.exp(-logit))
    weight = sketch.pos + sketch.neg
    cum = np.cumsum(weight)
    if cum[-1] <= 0:
        return np.array([]), np.array([]), np.array([])
    edges = np.searchsorted(cum, np.linspace(0, cum[-1], groups + 1)[1:-1])
    predicted, observed, counts = [], [], []
    for part in np.split(np.arange(N_BINS), edges):
        w = weight[part].sum()
        if w <= 0:
            continue
        predicted.append(float(np.sum(weight[part] * p_center[part]) / w))
        observed.append(float(sketch.pos[part].sum() / w))
        counts.append(float(w))
    return np.array(predicted), np.array(observed), np.array(counts)


def run_evaluate(settings: Settings, patients: int, days: float, seed: int, model: str, as_json: bool,
                 out_dir: Path | str | None = DEFAULT_OUT_DIR, *, stdout: TextIO | None = None,
                 stderr: TextIO | None = None) -> int:
    """``vitalrisk evaluate``: run, print the report (or one JSON object), write plots; exit status.

    A bad argument, or a plot folder that cannot be made, ends in one line on stderr (exit 2)
    before the run, not after minutes of it.
    """

    out, err = stdout or sys.stdout, stderr or sys.stderr
    if patients < 1 or days <= 0:
        err.write("vitalrisk: evaluate needs --patients >= 1 and --days > 0\n")
        return 2
    if out_dir is not None:
        try:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            err.write(f"vitalrisk: cannot make the plot folder --out {out_dir}: {exc.strerror or exc}\n")
            return 2
    duration_ms = int(round(days * MS_PER_DAY / 60_000)) * 60_000
    config = CohortConfig(patients=patients, seed=seed, duration_ms=duration_ms)
    options = EvaluateOptions(model=model, warmup_ms=min(3 * MS_PER_DAY, duration_ms // 2),
                              patient_inputs=parse_inputs(settings.model_patient_inputs))
    result = evaluate_cohort(config, options, settings, progress=_progress_bar(err))
    err.write("\n")
    paths = write_plots(result, Path(out_dir)) if out_dir is not None else []
    if out_dir is not None and not paths:
        err.write("vitalrisk: matplotlib is not installed: no plots written\n")
    if as_json:
        summary = result.summary()
        summary["plots"] = [str(p) for p in paths]
        out.write(json.dumps(summary, separators=(",", ":")) + "\n")
    else:
        out.write(format_report(result) + "\n")
        for p in paths:
            out.write(f"  plot: {p}\n")
    return 0
