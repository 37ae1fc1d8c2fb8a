"""The model loop of ``vitalrisk evaluate``: how a run models, labels and judges, and the loop itself. Pure.

:class:`EvaluateOptions` says how a run models, labels and judges; :class:`EvaluationCore` is
the models' side of a run, the live system's loop run as fast as it goes: each feature row is
scored by the current model snapshot and by NEWS2 on the same row; the scores are held by the
:class:`~models.labelling.DelayedLabeller` until the outcome events (or their absence) label
them; then they are judged (prequential, :mod:`models.prequential`) and learned by the
trainer, whose hourly snapshots the scorer swaps to. Feature rows and outcomes come in
(:mod:`stream.evaluate_cohort` drives them from a simulated cohort); an
:class:`~stream.evaluate_report.EvaluationResult` comes out.

The report covers windows scored after a warm-up (default 3 days, while the model is young):
AUROC, AUPRC, Brier score and ECE of the model and NEWS2 per condition; the subgroup table and
fairness flags; ADWIN drift events; and the alert burden of the default alert policy replayed
over the scores (:mod:`stream.evaluate_burden`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from kernel.events import HOP_MS, FeatureRow, OpsEvent
from models.fairness import FairnessMonitor, FairnessPolicy
from models.labelling import ANY, DEFAULT_HORIZON_MS, MS_PER_DAY, MS_PER_HOUR, DelayedLabeller, Outcome
from models.news2 import MAX_TOTAL
from models.patient_context import DEFAULT_INPUTS, PatientContext
from models.prequential import PrequentialEvaluator
from models.risk import CONDITIONS, DEFAULT_NEGATIVE_RATE, RiskModel
from models.scorer import FeatureSpace, News2MatrixScorer, News2RowScorer, Scorer
from models.trainer import Trainer
from stream.alert_tuning import Candidate, CohortTallies, subgroup_burden
from stream.alerts.rules import AlertPolicy
from stream.evaluate_burden import SeriesStore, alert_burden, patient_tallies
from stream.evaluate_report import MODEL, NEWS2, Burden, EvaluationResult, Example

#: The name of the alerter's default policy among the tallies of a run.
DEFAULT_CANDIDATE = "default"
#: NEWS2 at or above this counts as an alert for window-level sensitivity (RCP: 5 = medium risk).
NEWS2_ALERT_TOTAL = 5

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
    context
        Patients' inputs joined to the rows of :meth:`add_rows` (none by default).
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
        threshold = options.alert_threshold if options.alert_threshold is not None else AlertPolicy().risk.enter
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
        self.any_head = ANY if ANY in self.conditions else self.conditions[0]
        self.series = SeriesStore(tuple(c for c in self.conditions if c != self.any_head))
        self.patient_ids: list[str] = list(groups)
        self.groups = groups
        self._news2_matrix = News2MatrixScorer(len(self.patient_ids), carry_ms=news2_carry_ms)
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
        any_index = self.conditions.index(self.any_head)
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
        :func:`stream.evaluate_cohort.evaluate_cohort`: scores, NEWS2 and the bookkeeping run over
        the matrix, and only the labeller is fed window by window.

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
        totals, red = self._news2_matrix.score(rows, ts_ms, X, cols)
        p_rows = list(zip(*(probs[c].tolist() for c in self.conditions), strict=True))
        news2 = (totals / MAX_TOTAL).tolist()
        ids = self.patient_ids
        pids = [ids[r] for r in rows.tolist()]
        episode = self.labeller.add_many(pids, ts_ms, [_Held(X[i], p, n)
                                                       for i, (p, n) in enumerate(zip(p_rows, news2, strict=True))])
        self.series.add(pids, ts_ms, probs[self.any_head], totals, red, episode,
                        [probs[c] for c in self.series.heads])
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
            pids = [w.patient_id for w, keep in zip(released, mask.tolist(), strict=True) if keep]
            any_c = self.any_head
            self.fairness.update_many(pids, y[any_c][mask], {MODEL: pm[any_c][mask], NEWS2: pn_one[mask]})
        snapshot = self.trainer.learn(released, now_ms=now_ms)
        if snapshot is not None:
            self.scorer.swap(snapshot)
            if now_ms - self.report_from_ms >= 0 and (now_ms // MS_PER_HOUR) % 24 == 0:
                self.fairness_events += self.fairness.check(now_ms)

    def finish(self, *, end_ms: int, seconds: float, patients: int, seed: int = 0,
               candidates: Sequence[Candidate] = ()) -> EvaluationResult:
        """Close the run at ``end_ms`` and compute the report.

        Windows whose horizon reaches past ``end_ms`` are censored, not labelled negative: the
        simulation has no onsets after its end, so their negatives would be unearned.

        The result's :attr:`~stream.evaluate_report.EvaluationResult.tallies` hold the per-patient
        tallies of the default policy (:data:`DEFAULT_CANDIDATE`) and of each of ``candidates``
        (for ``--tune-seeds``/``--test-seeds``, :mod:`stream.alert_tuning`), the cohort named by
        its simulator ``seed``; its subgroup burden is the default policy's.
        """
        self.advance(end_ms)
        self.labeller.drain()
        self.fairness_events += self.fairness.check(end_ms)
        metrics = {s: {c: self.report.metrics(s, c) for c in self.conditions} for s in (MODEL, NEWS2)}
        any_c = self.any_head
        model_sk, news2_sk = self.report.sketch(MODEL, any_c), self.report.sketch(NEWS2, any_c)
        window_alerts = {
            MODEL: {"threshold": self.alert_threshold, "sensitivity": model_sk.sensitivity(self.alert_threshold),
                    "ppv": model_sk.ppv(self.alert_threshold)},
            NEWS2: {"threshold_total": NEWS2_ALERT_TOTAL,
                    "sensitivity": news2_sk.sensitivity(NEWS2_ALERT_TOTAL / MAX_TOTAL),
                    "ppv": news2_sk.ppv(NEWS2_ALERT_TOTAL / MAX_TOTAL)},
        }
        report_days = max(end_ms - self.report_from_ms, 0) / MS_PER_DAY
        burden = self.alert_burden(patients, report_days, end_ms)
        tallies = self.tallies((self.default_candidate(), *candidates), seed=seed, end_ms=end_ms)
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
            seconds=seconds, sketches={MODEL: model_sk, NEWS2: news2_sk}, examples=self._examples(),
            subgroup_burden=subgroup_burden([tallies], DEFAULT_CANDIDATE), tallies=tallies)

    def default_candidate(self) -> Candidate:
        """The alerter's default policy as a candidate: every head pages (``data_stopped`` off in a replay)."""
        return Candidate(DEFAULT_CANDIDATE, AlertPolicy(data_stopped_ms=None), (self.any_head, *self.series.heads))

    def tallies(self, candidates: Sequence[Candidate], *, seed: int, end_ms: int) -> CohortTallies:
        """Each candidate's pages tallied per patient over the report period up to ``end_ms``
        (:func:`stream.evaluate_burden.patient_tallies`), every patient of ``groups`` included."""
        report_days = max(end_ms - self.report_from_ms, 0) / MS_PER_DAY
        by_candidate = patient_tallies(
            self.series, self.outcomes, self._episodes(), any_head=self.any_head, report_from_ms=self.report_from_ms,
            end_ms=end_ms, horizon_ms=self.options.horizon_ms, patient_ids=self.patient_ids,
            report_days=report_days, candidates=candidates, label=self.scorer.version or "untrained")
        attributes = sorted({a for g in self.groups.values() for a in g})
        groups = {a: tuple(self.groups[pid].get(a, "") for pid in self.patient_ids) for a in attributes}
        return CohortTallies(seed, tuple(self.patient_ids), report_days, groups, by_candidate)

    def _episodes(self) -> dict[str, list[tuple[int, int]]]:
        """Patient -> the labeller's exclusion of each of their outcomes (it forgets past ones)."""
        episodes: dict[str, list[tuple[int, int]]] = {}
        for o in self.outcomes:
            episodes.setdefault(o.patient_id, []).append(self.labeller.exclusion(o))
        return episodes

    def alert_burden(self, patients: int, report_days: float, end_ms: int) -> list[Burden]:
        """The alert burden of the scores so far over the report period up to ``end_ms``
        (:func:`stream.evaluate_burden.alert_burden`)."""
        return alert_burden(self.series, self.outcomes, self._episodes(), any_head=self.any_head,
                            report_from_ms=self.report_from_ms, end_ms=end_ms, horizon_ms=self.options.horizon_ms,
                            patients=patients, report_days=report_days, thresholds=self.options.burden_thresholds,
                            label=self.scorer.version or "untrained")

    def _snapshot_metrics(self) -> dict[str, float | None]:
        m = self.live.metrics(MODEL, self.conditions[0], rolling=True)
        return {f"{k}_{self.conditions[0]}": (None if math.isnan(v) else v)
                for k, v in (("auroc", m.auroc), ("brier", m.brier), ("ece", m.ece))}

    def _examples(self) -> list[Example]:
        series = self.series.by_patient()
        seen: set[str] = set()
        picked: list[Example] = []
        for o in sorted(self.outcomes, key=lambda o: (o.onset_ms, o.patient_id)):
            if o.onset_ms < self.report_from_ms + MS_PER_DAY or o.patient_id in seen or o.patient_id not in series:
                continue
            seen.add(o.patient_id)
            s = series[o.patient_id]
            keep = (s.ts >= o.onset_ms - 3 * MS_PER_DAY) & (s.ts <= o.onset_ms + MS_PER_DAY)
            picked.append(Example(o.patient_id, o.kind, o.onset_ms, s.ts[keep], s.risk[keep],
                                  s.news2[keep].astype(np.float64)))
            if len(picked) >= self.options.example_patients:
                break
        return picked
