"""Risk of deterioration per condition: River classifiers for rare events, and their explanations.

One population model, one binary *head* per condition (:data:`CONDITIONS`): ``"any"``
deterioration, heart-failure decompensation, COPD exacerbation, infection and AF episode. Every
head is a River classifier (``learn_one`` / ``predict_proba_one``) made by :func:`make_risk_model`:

``"logreg"`` (default)
    ``StandardScaler | Clip | LogisticRegression``: scaled features, clipped at
    ±``clip_sd`` standard deviations so one wild reading cannot swing the score, and a
    logistic regression trained by SGD. Its contributions are exact (weight x scaled value).
``"hat"``
    A Hoeffding adaptive tree (``river.tree.HoeffdingAdaptiveTreeClassifier``): non-linear,
    replaces its branches when they drift. About ten times slower to learn.

**The AF head is clipped wider** (:data:`HEAD_CLIP_SD`). An AF episode's one warning is beat-to-beat
irregularity: over the hours before onset the heart rate's RMSSD climbs 4–25 population standard
deviations above its usual spread, where no other deterioration takes it. Clipped at 5 like the
other heads, that evidence was capped at a fraction of its size, and the "any" head paged 4 of the
default cohort's 10 AF onsets before onset; a head of its own clipped at 25 pages 7 (docs/alerting.md).
Clipping every head at 25 instead cost heart-failure onsets, so the other heads keep 5.

**Rare events.** Deterioration is rare (well under 1 % of scored windows precede an onset
within 12 h), so a head learns every positive window and only a share ``negative_rate`` of
the negatives (:class:`NegativeSampling`): balanced enough for SGD to learn the positives,
and ~1/``negative_rate`` times cheaper. The sampling shifts the odds by ``1/negative_rate``;
predictions undo it exactly (prior correction, King & Zeng 2001: ``odds = r x odds_sampled``),
so the probabilities stay calibrated to the real event rate, not to the sample.

**Speed.** Scoring a thousand patients every five minutes runs through
:meth:`RiskModel.predict_many`, which evaluates linear heads as numpy matrix products (the
same arithmetic as ``predict_proba_one``, to ~1e-12) and loops over ``predict_proba_one`` for
any other head.

Examples
--------
>>> model = make_risk_model("logreg", seed=42, negative_rate=1.0)
>>> for i in range(200):
...     model.learn_one({"hr_z": float(i % 10) - 4.5, "rr_z": 0.0}, i % 10 >= 8)
>>> round(model.predict_proba_one({"hr_z": 4.0, "rr_z": 0.0})[True], 2) > 0.5
True
>>> [name for name, _ in explain(model, {"hr_z": 4.0, "rr_z": 0.0}, k=1)]
['hr_z']
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, cast

import numpy as np
import numpy.typing as npt
from river import base, compose, linear_model, optim, preprocessing, tree

from models.errors import UnknownModel
from models.labelling import ANY

#: Conditions with a head in the default risk model, ``"any"`` first.
CONDITIONS: tuple[str, ...] = (ANY, "hf_decompensation", "copd_exacerbation", "infection", "af_episode")
#: Feature clip of the heads whose evidence lies far out in the tail, by condition (others: the default).
HEAD_CLIP_SD: Mapping[str, float] = MappingProxyType({"af_episode": 25.0})
#: Model names :func:`make_risk_model` builds.
MODEL_NAMES: tuple[str, ...] = ("logreg", "hat")
#: Default share of negative windows a head learns from.
DEFAULT_NEGATIVE_RATE = 0.05
#: Default clip of scaled features, in standard deviations.
DEFAULT_CLIP_SD = 5.0
_LOGIT_CLIP = 30.0  # river.utils.math.sigmoid returns exactly 0 or 1 beyond it

FloatMatrix = npt.NDArray[np.float64]
FloatVector = npt.NDArray[np.float64]


#: River's feature dict. Ours are ``dict[str, float]``; dict is invariant, so they are handed over
#: through :func:`river_features`.
RiverFeatures = dict[base.typing.FeatureName, Any]


def river_features(x: dict[str, float]) -> RiverFeatures:
    """``x`` as River's signatures type it (the same object: a ``str`` key is hashable)."""
    return cast(RiverFeatures, x)


class Clip(base.Transformer):
    """Clip every feature to ``[-limit, limit]`` (after scaling: standard deviations).

    Examples
    --------
    >>> Clip(3.0).transform_one({"a": 7.5, "b": -1.0})
    {'a': 3.0, 'b': -1.0}
    """

    def __init__(self, limit: float = DEFAULT_CLIP_SD) -> None:
        if not limit > 0:
            raise ValueError(f"limit must be positive, got {limit}")
        self.limit = limit

    def transform_one(self, x: dict[str, float]) -> dict[str, float]:  # type: ignore[override]  # narrower than River's dict[Hashable, Any]
        lim = self.limit
        return {k: (lim if v > lim else -lim if v < -lim else v) for k, v in x.items()}


class NegativeSampling(base.Classifier):
    """Learn every positive and a share ``negative_rate`` of the negatives; predict calibrated.

    The inner classifier sees negatives ``1 / negative_rate`` times less often than they
    occur, so its odds are that much too high; :meth:`predict_proba_one` multiplies them by
    ``negative_rate`` (prior correction), which is exact for a correctly specified model.
    Which negatives are kept is drawn from a seeded generator in learning order, so the same
    stream in the same order always trains the same model.

    Parameters
    ----------
    classifier
        A binary River classifier.
    negative_rate
        Share of negatives learned, in (0, 1]; 1 learns everything.
    seed
        Seed of the sampling generator.

    Examples
    --------
    >>> class Half(base.Classifier):
    ...     def learn_one(self, x, y): pass
    ...     def predict_proba_one(self, x): return {False: 0.5, True: 0.5}
    >>> NegativeSampling(Half(), negative_rate=0.1).predict_proba_one({})[True]  # odds 1 -> 0.1
    0.09090909090909091
    """

    def __init__(self, classifier: base.Classifier | compose.Pipeline, negative_rate: float = DEFAULT_NEGATIVE_RATE,
                 seed: int | None = None) -> None:
        if not 0 < negative_rate <= 1:
            raise ValueError(f"negative_rate must be in (0, 1], got {negative_rate}")
        self.classifier = classifier
        self.negative_rate = negative_rate
        self.seed = seed
        self._rng = random.Random(seed)
        self.seen = 0
        self.learned = 0

    @property
    def _multiclass(self) -> bool:
        return False

    def keep(self, y: bool) -> bool:
        """Draw whether a window labelled ``y`` is learned (advances the generator for negatives)."""
        self.seen += 1
        return bool(y) or self.negative_rate >= 1.0 or self._rng.random() < self.negative_rate

    def learn_kept(self, x: dict[str, float], y: bool) -> None:
        """Learn a window :meth:`keep` accepted."""
        self.learned += 1
        self.classifier.learn_one(river_features(x), bool(y))

    def learn_one(self, x: dict[str, float], y: bool) -> None:  # type: ignore[override]  # narrower than River's dict[Hashable, Any]
        if self.keep(y):
            self.learn_kept(x, y)

    def predict_proba_one(self, x: dict[str, float]) -> dict[bool, float]:  # type: ignore[override]  # narrower than River's dict[Hashable, Any]
        p = self.classifier.predict_proba_one(river_features(x)).get(True, 0.0)
        p = correct_prior(p, self.negative_rate)
        return {False: 1.0 - p, True: p}


def correct_prior(p: float, negative_rate: float) -> float:
    """Probability under the real class balance from one learned on ``negative_rate`` of negatives.

    >>> round(correct_prior(0.5, 0.05), 6)
    0.047619
    >>> correct_prior(0.0, 0.05), correct_prior(1.0, 0.05)
    (0.0, 1.0)
    """
    if negative_rate >= 1.0 or p <= 0.0 or p >= 1.0:
        return float(p)
    odds = negative_rate * p
    return odds / (odds + 1.0 - p)


def make_risk_model(name: str = "logreg", seed: int = 42, *, negative_rate: float = DEFAULT_NEGATIVE_RATE,
                    learning_rate: float = 0.01, l2: float = 1e-4, clip_sd: float = DEFAULT_CLIP_SD,
                    grace_period: int = 400, max_depth: int = 8) -> NegativeSampling:
    """A fresh risk head: one binary River classifier for one condition.

    Parameters
    ----------
    name
        ``"logreg"`` (scaling + clipping + logistic regression) or ``"hat"`` (Hoeffding
        adaptive tree).
    seed
        Seeds negative sampling (and the tree's bootstrap); the same seed and stream give the
        same model.
    negative_rate
        Share of negative windows learned (see :class:`NegativeSampling`).
    learning_rate, l2, clip_sd
        SGD step, L2 penalty and feature clip of ``"logreg"``.
    grace_period, max_depth
        Examples between split attempts, and depth limit, of ``"hat"``.

    Raises
    ------
    UnknownModel
        If ``name`` is not one of :data:`MODEL_NAMES`.

    Examples
    --------
    >>> type(make_risk_model("hat").classifier).__name__
    'HoeffdingAdaptiveTreeClassifier'
    >>> make_risk_model("forest")
    Traceback (most recent call last):
    ...
    models.errors.UnknownModel: model must be one of ('logreg', 'hat'), got 'forest'
    """
    inner: base.Classifier | compose.Pipeline
    if name == "logreg":
        inner = compose.Pipeline(
            ("scale", preprocessing.StandardScaler()),
            ("clip", Clip(clip_sd)),
            ("logreg", linear_model.LogisticRegression(optimizer=optim.SGD(learning_rate), l2=l2)),
        )
    elif name == "hat":
        inner = tree.HoeffdingAdaptiveTreeClassifier(grace_period=grace_period, max_depth=max_depth,
                                                     leaf_prediction="nba", seed=seed)
    else:
        raise UnknownModel(f"model must be one of {MODEL_NAMES}, got {name!r}")
    return NegativeSampling(inner, negative_rate=negative_rate, seed=seed)


class RiskModel(base.MultiLabelClassifier):
    """One head per condition, learned together from multi-label windows.

    River's multi-label protocol: ``learn_one(x, y)`` with ``y`` a dict of condition -> bool,
    ``predict_proba_one(x)`` a dict of condition -> ``{False: 1 - p, True: p}``.
    :meth:`risk_one` gives condition -> p directly.

    Parameters
    ----------
    name
        Head kind, see :func:`make_risk_model`.
    seed
        Head ``i`` is seeded with ``seed + i``.
    conditions
        Conditions with a head.
    **params
        Passed to :func:`make_risk_model`; a ``clip_sd`` given here applies to every head,
        else a head in :data:`HEAD_CLIP_SD` takes its clip from there.

    Examples
    --------
    >>> model = RiskModel("logreg", seed=1, conditions=("any", "infection"), negative_rate=1.0)
    >>> model.learn_one({"temp_z": 3.0}, {"any": True, "infection": True})
    >>> sorted(model.risk_one({"temp_z": 3.0}))
    ['any', 'infection']
    """

    def __init__(self, name: str = "logreg", seed: int = 42, conditions: Sequence[str] = CONDITIONS,
                 **params: Any) -> None:
        if not conditions:
            raise ValueError("a risk model needs at least one condition")
        self.name = name
        self.seed = seed
        self.conditions = tuple(conditions)
        self.params = dict(params)
        self.heads: dict[str, NegativeSampling] = {
            c: make_risk_model(name, seed + i, **{"clip_sd": HEAD_CLIP_SD.get(c, DEFAULT_CLIP_SD), **params})
            for i, c in enumerate(self.conditions)}
        self.examples_seen = 0
        self._compiled: dict[tuple[str, ...], _LinearBatch | None] = {}

    def learn_one(self, x: dict[str, float], y: Mapping[str, bool]) -> None:  # type: ignore[override]  # narrower than River's dict[Hashable, Any]
        self.learn_lazy(lambda: x, y)

    def learn_lazy(self, make_x: Callable[[], dict[str, float]], y: Mapping[str, bool]) -> bool:
        """Learn one labelled window, building ``x`` only if some head keeps it; ``True`` if one did."""
        self.examples_seen += 1
        heads = self.heads
        keep = [c for c in self.conditions if heads[c].keep(y[c])]
        if not keep:
            return False
        x = make_x()
        for c in keep:
            self.heads[c].learn_kept(x, bool(y[c]))
        self._compiled.clear()
        return True

    def predict_proba_one(self, x: dict[str, float]) -> dict[str, dict[bool, float]]:  # type: ignore[override]  # narrower than River's dict[Hashable, Any]
        return {c: head.predict_proba_one(x) for c, head in self.heads.items()}

    def predict_one(self, x: dict[str, float]) -> dict[str, bool]:  # type: ignore[override]  # narrower than River's dict[Hashable, Any]
        return {c: p >= 0.5 for c, p in self.risk_one(x).items()}

    def risk_one(self, x: dict[str, float]) -> dict[str, float]:
        """Probability of each condition within the horizon."""
        return {c: head.predict_proba_one(x)[True] for c, head in self.heads.items()}

    def predict_many(self, X: FloatMatrix, columns: Sequence[str]) -> dict[str, FloatVector]:
        """Probabilities for a matrix of windows (NaN = feature absent), condition -> vector.

        Linear heads run as numpy matrix products; others loop over ``predict_proba_one``.
        """
        key = tuple(columns)
        compiled = self._compiled.get(key)
        if key not in self._compiled:
            compiled = self._compiled[key] = _LinearBatch.compile(self, key)
        if compiled is not None:
            return compiled.predict(X)
        out = {c: np.empty(len(X)) for c in self.conditions}
        for i, row in enumerate(X):
            x = {k: float(v) for k, v in zip(columns, row) if v == v}
            for c, p in self.risk_one(x).items():
                out[c][i] = p
        return out

    def explain(self, x: dict[str, float], k: int = 5, condition: str = ANY) -> list[tuple[str, float]]:
        """The ``k`` features that moved ``condition``'s score most, see :func:`explain`."""
        return explain(self.heads[condition], x, k)


class _LinearBatch:
    """The linear heads of a :class:`RiskModel` as arrays over a fixed column order."""

    def __init__(self, conditions: tuple[str, ...], mean: FloatMatrix, std: FloatMatrix, weights: FloatMatrix,
                 intercept: FloatVector, limit: FloatVector, rate: FloatVector) -> None:
        self.conditions = conditions
        self.mean, self.std, self.weights = mean, std, weights
        self.intercept, self.limit, self.rate = intercept, limit, rate

    @classmethod
    def compile(cls, model: RiskModel, columns: tuple[str, ...]) -> _LinearBatch | None:
        found = [_linear_parts(model.heads[c]) for c in model.conditions]
        parts = [p for p in found if p is not None]
        if len(parts) < len(found):
            return None
        n, m = len(model.conditions), len(columns)
        mean, std, weights = np.zeros((n, m)), np.zeros((n, m)), np.zeros((n, m))
        intercept, limit, rate = np.zeros(n), np.zeros(n), np.zeros(n)
        for i, part in enumerate(parts):
            scaler, clip, lr, r = part
            for j, col in enumerate(columns):
                mean[i, j] = scaler.means.get(col, 0.0)
                var = scaler.vars.get(col, 0.0)
                std[i, j] = math.sqrt(var) if var else 0.0
                weights[i, j] = lr._weights.get(col, 0.0)  # noqa: SLF001 - river keeps weights there
            intercept[i], limit[i], rate[i] = lr.intercept, clip.limit, r
        return cls(model.conditions, mean, std, weights, intercept, limit, rate)

    def predict(self, X: FloatMatrix) -> dict[str, FloatVector]:
        present = ~np.isnan(X)
        out: dict[str, FloatVector] = {}
        with np.errstate(invalid="ignore", divide="ignore"):
            for i, c in enumerate(self.conditions):
                std = self.std[i]
                z = np.where(present & (std > 0), (X - self.mean[i]) / np.where(std > 0, std, 1.0), 0.0)
                z = np.clip(z, -self.limit[i], self.limit[i])
                logit = z @ self.weights[i] + self.intercept[i]
                p = np.where(logit < -_LOGIT_CLIP, 0.0,
                             np.where(logit > _LOGIT_CLIP, 1.0, 1.0 / (1.0 + np.exp(-np.clip(logit, -50, 50)))))
                r = self.rate[i]
                if r < 1.0:
                    odds = r * p
                    p = np.where((p > 0) & (p < 1), odds / (odds + 1.0 - p), p)
                out[c] = p
        return out


def _linear_parts(head: base.Classifier | compose.Pipeline) -> tuple[preprocessing.StandardScaler, Clip,
                                                  linear_model.LogisticRegression, float] | None:
    rate = 1.0
    if isinstance(head, NegativeSampling):
        rate, head = head.negative_rate, head.classifier
    if not isinstance(head, compose.Pipeline):
        return None
    steps = list(head.steps.values())
    if (len(steps) == 3 and isinstance(steps[0], preprocessing.StandardScaler) and isinstance(steps[1], Clip)
            and isinstance(steps[2], linear_model.LogisticRegression)):
        return steps[0], steps[1], steps[2], rate
    return None


def _logit(p: float) -> float:
    p = min(max(p, 1e-12), 1.0 - 1e-12)
    return math.log(p / (1.0 - p))


def explain(model: base.Classifier | RiskModel, x: dict[str, float], k: int = 5,
            condition: str = ANY) -> list[tuple[str, float]]:
    """The ``k`` features that contributed most to the score of ``x``, largest magnitude first.

    For a linear head the contribution of a feature is exact: its weight times its scaled (and
    clipped) value, in logit units; the scores' logit is their sum plus the intercept. For any
    other model it is the change in logit when the feature is removed from ``x`` (occlusion:
    River models treat an absent feature as unknown), an approximation that ignores interactions.

    Parameters
    ----------
    model
        A head from :func:`make_risk_model` (or any binary River classifier), or a
        :class:`RiskModel` (then ``condition`` picks the head).
    x
        The features of one window.
    k
        How many features to return.
    condition
        Head of a :class:`RiskModel` to explain.

    Returns
    -------
    list of (feature, contribution)
        Positive contributions raise the risk, negative ones lower it.

    Examples
    --------
    >>> head = make_risk_model(negative_rate=1.0)
    >>> for i in range(100):
    ...     head.learn_one({"spo2_z": -float(i % 5), "temp_z": 0.1 * (i % 3)}, i % 5 == 4)
    >>> explain(head, {"spo2_z": -4.0, "temp_z": 0.0}, k=1)[0][0]
    'spo2_z'
    """
    if k < 0:
        raise ValueError(f"k must be zero or more, got {k}")
    if isinstance(model, RiskModel):
        model = model.heads[condition]
    parts = _linear_parts(model)
    contributions: dict[str, float]
    if parts is not None:
        scaler, clip, lr, _ = parts
        z = clip.transform_one(scaler.transform_one(river_features(x)))  # type: ignore[no-untyped-call]  # River leaves StandardScaler.transform_one unannotated
        contributions = {f: lr._weights.get(f, 0.0) * v for f, v in z.items()}  # noqa: SLF001 - river keeps weights there
    else:
        full = _logit(model.predict_proba_one(river_features(x)).get(True, 0.0))
        contributions = {}
        for f in x:
            without = {g: v for g, v in x.items() if g != f}
            contributions[f] = full - _logit(model.predict_proba_one(river_features(without)).get(True, 0.0))
    ranked = sorted(contributions.items(), key=lambda kv: (-abs(kv[1]), kv[0]))
    return [(f, float(c)) for f, c in ranked[:k]]
