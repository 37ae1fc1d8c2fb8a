"""Model scores for the worker: each feature row the core emits, scored by the newest snapshot.

Pure (no Kafka, no database): the worker's adapter feeds rows in and sends the scores out, and
the snapshot feed (:class:`models.snapshot_topic.SnapshotFeed`) swaps the model underneath.

Every score is accountable: it names the model and version that made it, its risk per
condition, the NEWS2 total, band and sub-scores of the same row (15-minute means; blood
pressure carried forward, see :class:`models.scorer.News2RowScorer`), the inputs it saw and its
top contributing features (the patient's enrolment diagnoses among the inputs, when known).
Before the first snapshot there is no model to score with, and rows
get no model score (NEWS2 per minute still flows from the core).

Examples
--------
>>> from models.risk import RiskModel
>>> from models.snapshots import Snapshot
>>> from kernel.events import FeatureRow
>>> scoring = ModelScoring(Scorer())
>>> scoring.score_rows([FeatureRow(patient_id="pt-1", ts_ms=600_000, x={"heart_rate_mean_15m": 120.0})])
[]
>>> scoring.swap(Snapshot("risk-logreg", 4, 0, 0, {}, RiskModel(conditions=("any", "infection"))))
True
>>> [score] = scoring.score_rows([FeatureRow(patient_id="pt-1", ts_ms=600_000, x={"heart_rate_mean_15m": 120.0})])
>>> score.model_version, score.window_start_ms, score.news2_total, sorted(score.risks)
('risk-logreg-v4', 300000, 2, ['any', 'infection'])
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from models.news2 import MAX_TOTAL
from models.patient_context import PatientContext
from models.scorer import NEWS2_FEATURES, News2RowScorer, Scorer
from models.snapshots import Snapshot
from kernel.events import HOP_MS, FeatureRow, RiskScore
from stream.scoring import MODEL_NAME as NEWS2_NAME, MODEL_VERSION as NEWS2_VERSION


class ModelScoring:
    """Scores feature rows with a :class:`~models.scorer.Scorer`, NEWS2 of the same row beside.

    Parameters
    ----------
    scorer
        Holds the snapshot in use; :meth:`swap` replaces it with a newer one.
    news2_carry_ms
        How long a patient's last blood pressure stands in for a missing one.
    context
        The patients' diagnoses, joined to each row as model inputs (the worker's patient feed
        keeps it current).
    """

    def __init__(self, scorer: Scorer, *, news2_carry_ms: int = 12 * 3_600_000,
                 context: PatientContext | None = None) -> None:
        self.scorer = scorer
        self.context = context if context is not None else PatientContext()
        self.news2 = News2RowScorer(carry_ms=news2_carry_ms)
        self.seconds = 0.0  # time spent scoring, for the worker's histogram

    @property
    def version(self) -> str | None:
        return self.scorer.version

    def swap(self, snapshot: Snapshot) -> bool:
        """Score with ``snapshot`` from now on if it is newer than the one in use."""
        return self.scorer.swap(snapshot)

    def score_rows(self, rows: Sequence[FeatureRow]) -> list[RiskScore]:
        """One accountable score per row (none before the first snapshot)."""
        if self.scorer.snapshot is None or not rows:
            return []
        started = time.perf_counter()
        out: list[RiskScore] = []
        for row in rows:
            inputs, n2 = self.news2.score_with_inputs(row.patient_id, row.ts_ms, row.x)
            news2 = RiskScore(patient_id=row.patient_id, window_start_ms=row.ts_ms - HOP_MS, window_end_ms=row.ts_ms, model_name=NEWS2_NAME, model_version=NEWS2_VERSION,
                              score=n2.total / MAX_TOTAL, news2_total=n2.total, news2_band=n2.band, inputs={}, contributions={},
                              missing_inputs=tuple(k for k in NEWS2_FEATURES if k not in inputs),
                              news2_subscores=dict(n2.subscores))
            x = self.context.join(row.patient_id, row.x)
            score = self.scorer.risk_score(row.patient_id, row.ts_ms - HOP_MS, row.ts_ms, x, news2=news2)
            if score is not None:
                out.append(score)
        self.seconds = time.perf_counter() - started
        return out
