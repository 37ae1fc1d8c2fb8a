"""Scoring with the current snapshot, NEWS2 on the same feature rows, and accountable score rows.

- :class:`Scorer` holds the snapshot a worker scores with and swaps to a newer one only
  (hot swap: a snapshot is immutable once published, so swapping is one assignment).
- :class:`FeatureSpace` turns feature dicts into rows of a numpy matrix with a stable column
  order, for batch scoring of many patients at once.
- :class:`News2RowScorer` scores NEWS2 from the same feature row the model sees (15-minute
  means, falling back to 60-minute ones), carrying blood pressure forward by the one rule of
  :mod:`models.carry_forward`, so model and NEWS2 are compared on identical windows;
  :class:`News2MatrixScorer` does the same for a matrix of rows at once.

Examples
--------
>>> from models.risk import RiskModel
>>> from models.snapshots import Snapshot
>>> scorer = Scorer()
>>> scorer.score({"heart_rate_z_60m": 1.0})
{}
>>> scorer.swap(Snapshot("risk-logreg", 2, 0, 0, {}, RiskModel(conditions=("any",))))
True
>>> scorer.swap(Snapshot("risk-logreg", 1, 0, 0, {}, RiskModel(conditions=("any",))))
False
>>> scorer.version, round(scorer.score({"heart_rate_z_60m": 1.0})["any"], 3)  # untrained: odds 1 x 0.05
('risk-logreg-v2', 0.048)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from models.carry_forward import carried, carried_many
from models.news2 import MAX_TOTAL, News2, News2Scorer, news2_score_many
from models.labelling import ANY
from models.snapshots import Snapshot
from kernel.events import RiskScore

FloatMatrix = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: NEWS2 input -> feature keys tried in order (the first present is used).
NEWS2_FEATURES: Mapping[str, tuple[str, ...]] = {
    "respiratory_rate": ("respiratory_rate_mean_15m", "respiratory_rate_mean_60m"),
    "spo2": ("oxygen_saturation_mean_15m", "oxygen_saturation_mean_60m"),
    "heart_rate": ("heart_rate_mean_15m", "heart_rate_mean_60m"),
    "temperature": ("body_temperature_mean_15m", "body_temperature_mean_60m"),
    "systolic_bp": ("systolic_blood_pressure_last",),
}
#: NEWS2 input -> the wire metric it comes from (for ``RiskScore.inputs``).
_NEWS2_METRIC = {"respiratory_rate": "respiratory_rate", "spo2": "oxygen_saturation", "heart_rate": "heart_rate",
                 "temperature": "body_temperature", "systolic_bp": "systolic_blood_pressure"}


class Scorer:
    """Scores feature dicts with the newest snapshot it has been given.

    Parameters
    ----------
    snapshot
        Initial snapshot; without one, :meth:`score` returns ``{}`` (nothing to score with).
    top_features
        How many contributing features :meth:`risk_score` lists.
    """

    def __init__(self, snapshot: Snapshot | None = None, *, top_features: int = 5) -> None:
        self.snapshot = snapshot
        self.top_features = top_features

    @property
    def version(self) -> str | None:
        """``name-vN`` of the snapshot in use, ``None`` before the first."""
        return None if self.snapshot is None else self.snapshot.label

    def swap(self, snapshot: Snapshot) -> bool:
        """Use ``snapshot`` if it is newer (same name, higher version; or the first); say whether it was."""
        current = self.snapshot
        if current is not None and (snapshot.name != current.name or snapshot.version <= current.version):
            return False
        self.snapshot = snapshot
        return True

    def score(self, x: Mapping[str, float]) -> dict[str, float]:
        """Probability of each condition for one window; ``{}`` without a snapshot."""
        if self.snapshot is None:
            return {}
        return dict(self.snapshot.model.risk_one(dict(x)))

    def score_many(self, X: FloatMatrix, columns: Sequence[str]) -> dict[str, npt.NDArray[np.float64]]:
        """Probabilities for many windows at once (rows of ``X``; NaN = absent); ``{}`` without a snapshot."""
        if self.snapshot is None:
            return {}
        return dict(self.snapshot.model.predict_many(X, columns))

    def explain(self, x: Mapping[str, float], *, condition: str = ANY, k: int | None = None) -> list[tuple[str, float]]:
        """Top contributing features of ``condition``'s score (see :func:`models.risk.explain`)."""
        if self.snapshot is None:
            return []
        return list(self.snapshot.model.explain(dict(x), k=self.top_features if k is None else k,
                                                condition=condition))

    def risk_score(self, patient_id: str, window_start_ms: int, window_end_ms: int, x: Mapping[str, float],
                   news2: RiskScore | None = None, risks: Mapping[str, float] | None = None) -> RiskScore | None:
        """An accountable score row: model name and version, risks, NEWS2 beside, top features.

        ``news2`` is the NEWS2 score of the same window (from :mod:`stream.scoring`), if any;
        ``risks`` may pass probabilities already computed by :meth:`score_many`.
        ``None`` without a snapshot.
        """
        if self.snapshot is None:
            return None
        risks = dict(risks) if risks is not None else self.score(x)
        contributions = dict(self.explain(x))
        return RiskScore(
            patient_id=patient_id, window_start_ms=window_start_ms, window_end_ms=window_end_ms, model_name=self.snapshot.name, model_version=self.snapshot.label,
            score=float(risks.get(ANY, max(risks.values(), default=0.0))),
            news2_total=news2.news2_total if news2 is not None else -1, news2_band=news2.news2_band if news2 is not None else "unknown",
            inputs={k: float(v) for k, v in x.items()}, contributions=contributions,
            missing_inputs=news2.missing_inputs if news2 is not None else (), risks={k: float(v) for k, v in risks.items()},
            news2_subscores=dict(news2.news2_subscores) if news2 is not None else {})


class FeatureSpace:
    """A growing, stable column order for feature dicts; rows as float vectors (NaN = absent).

    Examples
    --------
    >>> space = FeatureSpace()
    >>> space.vector({"b": 2.0, "a": 1.0}).tolist()
    [1.0, 2.0]
    >>> space.vector({"c": 3.0}).tolist(), space.columns
    ([nan, nan, 3.0], ('a', 'b', 'c'))
    >>> space.to_dict(np.array([1.0, np.nan]))
    {'a': 1.0}
    """

    def __init__(self, columns: Sequence[str] = ()) -> None:
        self._columns: list[str] = list(columns)
        self._known: set[str] = set(columns)
        self._tuple: tuple[str, ...] = tuple(columns)

    @property
    def columns(self) -> tuple[str, ...]:
        """Column names, in order; new names are appended as they appear."""
        return self._tuple

    def vector(self, x: Mapping[str, float]) -> npt.NDArray[np.float64]:
        """``x`` as a vector over the columns (adding any new names first)."""
        new = x.keys() - self._known
        if new:
            self._columns.extend(sorted(new))
            self._known.update(new)
            self._tuple = tuple(self._columns)
        return np.array(list(map(x.get, self._columns)), dtype=np.float64)  # absent: None -> NaN

    def matrix(self, rows: Sequence[npt.NDArray[np.float64]]) -> FloatMatrix:
        """Stack vectors made at different times (older ones are shorter: padded with NaN)."""
        out = np.full((len(rows), len(self._columns)), np.nan)
        for i, row in enumerate(rows):
            out[i, :len(row)] = row
        return out

    def to_dict(self, vector: npt.NDArray[np.float64]) -> dict[str, float]:
        """The feature dict of a vector (NaN entries dropped; a vector made before new columns is shorter)."""
        return {c: v for c, v in zip(self._columns, vector.tolist(), strict=False) if v == v}


class News2RowScorer:
    """NEWS2 from a feature row, with blood pressure carried forward per patient.

    Wearables measure blood pressure twice a day: the last systolic value seen in a patient's
    rows stands in for up to ``carry_ms`` (:mod:`models.carry_forward`, as in :mod:`stream.scoring`).
    Vitals missing from the row score 0 (see :class:`models.news2.News2Scorer`).

    Examples
    --------
    >>> n2 = News2RowScorer()
    >>> n2.score("pt-1", 0, {"respiratory_rate_mean_15m": 22.0, "oxygen_saturation_mean_15m": 95.0,
    ...                       "heart_rate_mean_15m": 96.0, "body_temperature_mean_15m": 38.4,
    ...                       "systolic_blood_pressure_last": 118.0}).total
    5
    >>> n2.score("pt-1", 3_600_000, {"respiratory_rate_mean_60m": 22.0}).subscores["systolic_bp"]
    0
    """

    def __init__(self, *, carry_ms: int = 12 * 3_600_000) -> None:
        self.carry_ms = carry_ms
        self._news2 = News2Scorer()
        self._bp: dict[str, tuple[int, float]] = {}

    def inputs(self, patient_id: str, ts_ms: int, x: Mapping[str, float]) -> dict[str, float]:
        """The NEWS2 inputs this row provides (blood pressure possibly carried)."""
        out: dict[str, float] = {}
        for name, keys in NEWS2_FEATURES.items():
            for key in keys:
                value = x.get(key)
                if value is not None and value == value:
                    out[name] = float(value)
                    break
        if "systolic_bp" in out:
            self._bp[patient_id] = (ts_ms, out["systolic_bp"])
        elif (bp := carried(self._bp.get(patient_id), ts_ms, carry_ms=self.carry_ms)) is not None:
            out["systolic_bp"] = bp
        return out

    def score(self, patient_id: str, ts_ms: int, x: Mapping[str, float]) -> News2:
        """NEWS2 of one row (call in time order per patient, so the carried value is the latest)."""
        return self.score_with_inputs(patient_id, ts_ms, x)[1]

    def score_with_inputs(self, patient_id: str, ts_ms: int,
                          x: Mapping[str, float]) -> tuple[dict[str, float], News2]:
        """:meth:`inputs` and their NEWS2, from one pass over the row."""
        inputs = self.inputs(patient_id, ts_ms, x)
        return inputs, self._news2.score_one(inputs)

    @staticmethod
    def probability(news2: News2) -> float:
        """NEWS2 as a [0, 1] ranking score, ``total / 20`` (not calibrated)."""
        return news2.total / MAX_TOTAL

    @staticmethod
    def metric_inputs(inputs: Mapping[str, float]) -> dict[str, float]:
        """NEWS2 inputs renamed to wire metrics (for ``RiskScore.inputs``)."""
        return {_NEWS2_METRIC[k]: float(v) for k, v in inputs.items()}


class News2MatrixScorer:
    """:class:`News2RowScorer` over a matrix of rows, one hop at a time: same inputs, chart and carry.

    Rows are patients by position (``0 .. patients - 1``); a hop's matrix ``X`` holds some of
    them (``rows``), its columns named by ``columns`` (NaN: feature absent). Each NEWS2 input
    is the first present of its :data:`NEWS2_FEATURES`; blood pressure is carried per patient
    for ``carry_ms`` (:mod:`models.carry_forward`); a vital still missing scores 0. Scored with
    :func:`models.news2.news2_score_many`.

    Examples
    --------
    >>> n2 = News2MatrixScorer(2, carry_ms=3_600_000)
    >>> columns = ("respiratory_rate_mean_15m", "systolic_blood_pressure_last")
    >>> total, largest = n2.score(np.array([0, 1]), 0, np.array([[22.0, 85.0], [16.0, np.nan]]), columns)
    >>> total.tolist(), largest.tolist()
    ([5, 0], [3, 0])
    >>> n2.score(np.array([0]), 3_600_000, np.array([[16.0, np.nan]]), columns)[0].tolist()  # 85 mmHg carried
    [3]
    """

    def __init__(self, patients: int, *, carry_ms: int = 12 * 3_600_000) -> None:
        self.carry_ms = carry_ms
        self._bp_ts = np.full(patients, np.iinfo(np.int64).min // 2, dtype=np.int64)
        self._bp = np.full(patients, np.nan)
        self._columns: tuple[str, ...] = ()
        self._sources: dict[str, list[int]] = {}

    def score(self, rows: IntArray, ts_ms: int, X: FloatMatrix,
              columns: tuple[str, ...]) -> tuple[IntArray, IntArray]:
        """Each row's NEWS2 total and its largest single-parameter points (rows of one hop, at ``ts_ms``)."""
        if columns != self._columns:
            index = {c: j for j, c in enumerate(columns)}
            self._sources = {name: [index[k] for k in keys if k in index] for name, keys in NEWS2_FEATURES.items()}
            self._columns = columns
        values: dict[str, npt.NDArray[np.float64]] = {}
        for name, sources in self._sources.items():
            value = np.full(len(rows), np.nan)
            for j in sources:  # the first present feature of the list
                value = np.where(np.isnan(value), X[:, j], value)
            values[name] = value
        bp = values["systolic_bp"]
        seen = ~np.isnan(bp)
        self._bp_ts[rows[seen]] = ts_ms
        self._bp[rows[seen]] = bp[seen]
        values["systolic_bp"] = np.where(seen, bp, carried_many(self._bp_ts[rows], self._bp[rows], ts_ms,
                                                                  carry_ms=self.carry_ms))
        news2 = news2_score_many(**values)
        return news2.total, news2.largest
