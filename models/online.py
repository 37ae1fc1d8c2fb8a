"""The live trainer's pure loop: feature rows and outcomes in; labelled learning, snapshots, events out.

:class:`OnlineLearner` is what ``vitalrisk trainer`` (:mod:`models.trainer_service`) runs between
Kafka and the registry, and it is pure: no Kafka, no database, no clock. Each feature row is
scored test-then-train: the current model and NEWS2 score it when it arrives, the
:class:`~models.labelling.DelayedLabeller` holds it until outcomes (or their absence) label it,
and then it is judged (:class:`~models.prequential.PrequentialEvaluator`, ADWIN drift) and
learned by the :class:`~models.trainer.Trainer`, which takes snapshots every N windows or T of
event time.

**Resuming.** Each snapshot records where a restarted trainer picks up (``Snapshot.resume``):

- ``learned_before_ms``: every window before this event time is final and was learned (or
  refused) by the snapshot's model; on replay such rows are skipped, not learned twice;
- ``features``: per partition of the features topic, the lowest offset of a row still held
  for its label (or the next offset, when none is held), so nothing pending is lost.

Outcomes are few; a restarted trainer reads them all again before the features, so the
replayed windows get the labels and exclusions they had.

Examples
--------
>>> from models.labelling import Outcome
>>> from models.risk import RiskModel
>>> from kernel.events import FeatureRow
>>> H = 3_600_000
>>> learner = OnlineLearner(RiskModel(conditions=("any",), negative_rate=1.0), name="risk-logreg",
...                         horizon_ms=H, outcome_grace_ms=0, snapshot_every=2, snapshot_every_ms=None)
>>> for i, t in enumerate(range(0, 4 * H, H)):
...     _ = learner.offer(FeatureRow(patient_id="pt-1", ts_ms=t, x={"heart_rate_z_60m": float(i)}), partition=0, offset=i)
>>> learner.on_outcome(Outcome("pt-1", "infection", onset_ms=4 * H, t_ms=4 * H))
>>> events, snapshot = learner.advance(6 * H)
>>> snapshot.version, snapshot.examples_seen, snapshot.resume
(2, 4, {'learned_before_ms': 18000000, 'features': {'0': 4}})
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from kernel.events import OpsEvent
from models.prequential import PrequentialEvaluator
from models.fairness import FairnessMonitor
from models.labelling import ANY, DelayedLabeller, Outcome
from models.news2 import MAX_TOTAL
from models.patient_context import DEFAULT_INPUTS, PatientContext
from models.risk import RiskModel
from models.scorer import FeatureSpace, News2RowScorer
from models.snapshots import Snapshot
from models.trainer import Trainer
from kernel.events import HOP_MS, FeatureRow
from kernel.wire import PatientRecord

#: Scorers the live evaluation compares.
MODEL, NEWS2 = "model", "news2"
#: NEWS2 at or above this counts as an alert when fairness compares sensitivity (RCP: medium risk).
NEWS2_ALERT_TOTAL = 5


@dataclass(frozen=True, slots=True)
class _Held:
    """A scored row waiting for its label: where it came from, its features and its two scores."""

    partition: int
    offset: int
    x: npt.NDArray[np.float64]  # over the learner's FeatureSpace: compact, unlike a dict
    p_model: tuple[float, ...]
    p_news2: float


class OnlineLearner:
    """Test-then-train on a live stream of feature rows and outcomes.

    Parameters
    ----------
    model
        The model to train (a fresh one, or a resumed snapshot's).
    name
        Model name in snapshots, e.g. ``"risk-logreg"``.
    horizon_ms, outcome_grace_ms
        Labelling (see :class:`~models.labelling.DelayedLabeller`).
    snapshot_every, snapshot_every_ms
        Snapshot cadence (see :class:`~models.trainer.Trainer`).
    first_version
        Version of the first snapshot this learner publishes (a resumed one's plus one).
    learned_before_ms
        Rows before this event time were learned before a restart: skip them.
    resumed_at_ms
        Event time of the snapshot resumed from, if any (the snapshot cadence counts from it).
    news2_carry_ms
        How long NEWS2 carries a patient's blood pressure forward.
    alert_threshold
        The model's paging threshold, at which the fairness monitor compares sensitivity.
    patient_inputs
        What the model learns of each patient from their record (:mod:`models.patient_context`).
    """

    def __init__(self, model: RiskModel, *, name: str, horizon_ms: int, outcome_grace_ms: int,
                 snapshot_every: int | None, snapshot_every_ms: int | None, first_version: int = 1,
                 learned_before_ms: int | None = None, resumed_at_ms: int | None = None,
                 news2_carry_ms: int = 12 * 3_600_000, alert_threshold: float = 0.7,
                 patient_inputs: Collection[str] = DEFAULT_INPUTS) -> None:
        self.model = model
        self.conditions = model.conditions
        self.space = FeatureSpace()
        self.news2 = News2RowScorer(carry_ms=news2_carry_ms)
        self.labeller: DelayedLabeller[_Held] = DelayedLabeller(
            horizon_ms=horizon_ms, outcome_grace_ms=outcome_grace_ms, hop_ms=HOP_MS,
            max_pending_per_patient=-(-(horizon_ms + outcome_grace_ms) // HOP_MS) + 16)
        self.evaluator = PrequentialEvaluator((MODEL, NEWS2), self.conditions)
        self.trainer: Trainer[_Held] = Trainer(
            model, name=name, snapshot_every=snapshot_every, snapshot_every_ms=snapshot_every_ms,
            to_x=lambda held: self.space.to_dict(held.x), metrics=self._snapshot_metrics,
            first_version=first_version)
        self.groups: dict[str, dict[str, str]] = {}
        self.context = PatientContext(patient_inputs)
        self.fairness = FairnessMonitor(self.groups, (MODEL, NEWS2),
                                        {MODEL: alert_threshold, NEWS2: NEWS2_ALERT_TOTAL / MAX_TOTAL},
                                        model=name)
        self.fairness_events: list[OpsEvent] = []
        self.learned_before_ms = learned_before_ms
        if resumed_at_ms is not None:
            self.trainer.last_snapshot_ms = resumed_at_ms  # the cadence goes on from the resumed snapshot
        self.now_ms: int | None = None
        self.rows_scored = 0
        self.rows_skipped = 0
        self._next_offset: dict[int, int] = {}
        self._partition_ts: dict[int, int] = {}  # newest row time per partition

    def partition_ts(self, partition: int) -> int | None:
        """Event time of the newest row read from ``partition``."""
        return self._partition_ts.get(partition)

    def watermark(self, *, caught_up: frozenset[int] = frozenset()) -> int | None:
        """Event time every partition has reached: the oldest of their newest rows.

        Advancing to it, never to the newest row of any one partition, releases windows in one
        global ``(ts, patient)`` order however the partitions' records interleave — so a
        trainer replaying after a restart learns exactly what it would have learned. A
        partition read to its end (``caught_up``) does not hold the others back.
        """
        behind = [ts for p, ts in self._partition_ts.items() if p not in caught_up]
        if behind:
            return min(behind)
        return max(self._partition_ts.values(), default=None)

    @property
    def name(self) -> str:
        return self.trainer.name

    def on_patient(self, record: PatientRecord) -> None:
        """A patient's record: subgroups for the fairness monitor, diagnoses for the model; the latest wins."""
        self.groups[record.patient_id] = dict(record.groups)
        self.context.update(record)

    def forget_patient(self, patient_id: str) -> None:
        """The patient left the programme."""
        self.groups.pop(patient_id, None)
        self.context.forget(patient_id)

    def on_outcome(self, outcome: Outcome) -> None:
        """An outcome arrived: label, or exclude, the patient's held windows."""
        self.labeller.on_outcome(outcome)

    def on_row(self, row: FeatureRow, *, partition: int, offset: int) -> bool:
        """Score one feature row with the model and NEWS2 and hold it; ``False`` if not held."""
        self._next_offset[partition] = max(self._next_offset.get(partition, 0), offset + 1)
        if row.ts_ms > self._partition_ts.get(partition, row.ts_ms - 1):
            self._partition_ts[partition] = row.ts_ms
        if self.learned_before_ms is not None and row.ts_ms < self.learned_before_ms:
            self.rows_skipped += 1  # final before the restart: the resumed model has it
            return False
        x = self.context.join(row.patient_id, row.x)
        risks = self.model.risk_one(x)
        news2 = self.news2.score(row.patient_id, row.ts_ms, row.x)
        held = _Held(partition, offset, self.space.vector(x), tuple(float(risks[c]) for c in self.conditions),
                     news2.total / MAX_TOTAL)
        self.rows_scored += 1
        return self.labeller.add(row.patient_id, row.ts_ms, held)

    def offer(self, row: FeatureRow, *, partition: int, offset: int,
              caught_up: frozenset[int] = frozenset()) -> tuple[list[OpsEvent], Snapshot | None]:
        """:meth:`on_row`, then :meth:`advance` to the :meth:`watermark`: what the trainer does per row."""
        self.on_row(row, partition=partition, offset=offset)
        watermark = self.watermark(caught_up=caught_up)
        return self.advance(watermark) if watermark is not None else ([], None)

    def advance(self, now_ms: int) -> tuple[list[OpsEvent], Snapshot | None]:
        """Event time reached ``now_ms``: judge and learn what is final; a snapshot if one is due."""
        if self.now_ms is not None and now_ms <= self.now_ms:
            return [], None
        self.now_ms = now_ms
        released = self.labeller.advance(now_ms)
        events: list[OpsEvent] = []
        if released:
            n = len(released)
            y = {c: np.fromiter((w.labels[c] for w in released), dtype=bool, count=n) for c in self.conditions}
            pm = {c: np.fromiter((w.item.p_model[j] for w in released), dtype=np.float64, count=n)
                  for j, c in enumerate(self.conditions)}
            pn = np.fromiter((w.item.p_news2 for w in released), dtype=np.float64, count=n)
            events = self.evaluator.update_many(now_ms, y, {MODEL: pm, NEWS2: {c: pn for c in self.conditions}})
            if self.groups:
                fair = ANY if ANY in self.conditions else self.conditions[0]
                self.fairness.update_many([w.patient_id for w in released], y[fair], {MODEL: pm[fair], NEWS2: pn})
        if not released and self.trainer.examples_seen == 0:
            return events, None  # an untrained model is not worth a version
        snapshot = self.trainer.learn(released, now_ms=now_ms)
        if snapshot is not None:
            snapshot = dataclasses.replace(snapshot, resume=self.resume_point())
            if self.groups:  # gaps are checked as often as a model is published
                fairness = self.fairness.check(now_ms)
                self.fairness_events += fairness
                events = [*events, *fairness]
        return events, snapshot

    def resume_point(self) -> dict[str, Any]:
        """Where a trainer restarted from the current state must pick up (see the module docstring)."""
        lowest = dict(self._next_offset)
        for held in self.labeller.pending_items():
            if held.offset < lowest[held.partition]:
                lowest[held.partition] = held.offset
        final_before = (None if self.now_ms is None
                        else self.now_ms - self.labeller.horizon_ms - self.labeller.outcome_grace_ms)
        learned_before = max((t for t in (final_before, self.learned_before_ms) if t is not None), default=None)
        return {"learned_before_ms": learned_before, "features": {str(p): o for p, o in sorted(lowest.items())}}

    def metrics(self, *, rolling: bool = True) -> dict[str, dict[str, dict[str, float | None]]]:
        """Scorer -> condition -> AUROC/AUPRC/Brier/ECE dicts (rolling window by default)."""
        return {s: {c: self.evaluator.metrics(s, c, rolling=rolling).as_dict() for c in self.conditions}
                for s in (MODEL, NEWS2)}

    def _snapshot_metrics(self) -> dict[str, float | None]:
        condition = ANY if ANY in self.conditions else self.conditions[0]
        out: dict[str, float | None] = {}
        for scorer in (MODEL, NEWS2):
            m = self.evaluator.metrics(scorer, condition, rolling=True)
            prefix = "" if scorer == MODEL else "news2_"
            for key, value in (("auroc", m.auroc), ("auprc", m.auprc), ("brier", m.brier), ("ece", m.ece)):
                out[f"{prefix}{key}_{condition}"] = None if math.isnan(value) else value
        out["labelled"] = float(self.evaluator.labelled)
        return out
