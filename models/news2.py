"""The National Early Warning Score 2 (NEWS2), exactly as the RCP's 2017 chart, SpO2 scale 1.

NEWS2 (Royal College of Physicians, *National Early Warning Score (NEWS) 2*, 2017) adds
points for seven parameters, each 0 (normal) to 3, and maps the total to a clinical-risk
band. :func:`news2_score` scores one set of observations; :class:`News2Scorer` wraps it in
the River protocol so that it can serve as a baseline next to the learned models;
:func:`news2_score_many` scores arrays of observations at once (numpy), on the same chart,
missing vitals (NaN) scoring 0 as :class:`News2Scorer` scores an absent one.

Non-integer inputs
------------------
The chart is written for bedside observations: integers, and temperature to 0.1 °C. Our
inputs are window means (16.4 breaths/min, 35.04 °C), which fall between chart rows. We
round half up to the chart's resolution, i.e. each cut point lies midway between adjacent
chart values: respiration ≤8 scores 3 and 9–11 scores 1, so 8.49 scores 3 and 8.5 scores 1;
temperature 35.0 scores 3 and 35.1 scores 1, so the cut is 35.05. Why: a mean is an
estimate of the value a nurse would have charted, and rounding it to the nearest chart
value is what the nurse does with a reading of 8.6; any other cut (truncation, say) would
shift every band by up to one unit of resolution in one direction.

The cut points are explicit constants compared with ``>=``: a value equal to a cut point
belongs to the upper row, so the float ``35.05`` scores 1 and its predecessor
``35.04999999999999`` scores 3, on every platform. ``round()`` is not used because it
rounds half to even and sees binary floats: ``round(35.05, 1)`` is ``35.0``.

Examples
--------
>>> result = news2_score(
...     respiratory_rate=22, spo2=95, systolic_bp=118, heart_rate=96, temperature=38.4
... )
>>> result.total, result.band
(5, 'medium')
>>> result.subscores["respiratory_rate"], result.subscores["temperature"]
(2, 1)
>>> news2_score(
...     respiratory_rate=8.49, spo2=98, systolic_bp=120, heart_rate=70, temperature=37.0
... ).band
'low-medium'
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass, fields
from typing import Literal, get_args

import numpy as np
import numpy.typing as npt

#: Level of consciousness on the ACVPU scale: alert, or new confusion, voice, pain, unresponsive.
Consciousness = Literal["alert", "confusion", "voice", "pain", "unresponsive"]

#: Clinical-risk bands, lowest first.
Band = Literal["low", "low-medium", "medium", "high"]

#: The largest possible NEWS2 total (3 + 3 + 2 + 3 + 3 + 3 + 3).
MAX_TOTAL = 20

_CONSCIOUSNESS_LEVELS: tuple[str, ...] = get_args(Consciousness)
_RED_SCORE = 3
_MEDIUM_TOTAL = 5
_HIGH_TOTAL = 7
_OXYGEN_POINTS = 2

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class _Scale:
    """One row of the chart: cut points (lower bound of each band but the first) and points.

    ``points[i]`` applies to values in ``[cuts[i - 1], cuts[i])``, open at both ends.
    """

    parameter: str
    cuts: tuple[float, ...]
    points: tuple[int, ...]

    def score(self, value: float) -> int:
        """Points for ``value``; raise ``ValueError`` if it is NaN or infinite."""
        if not math.isfinite(value):
            raise ValueError(f"{self.parameter} must be a finite number, got {value!r}")
        return self.points[bisect_right(self.cuts, value)]

    def score_many(self, values: FloatArray) -> IntArray:
        """Points for each of ``values`` (``bisect_right`` as :meth:`score`); NaN, a missing value, scores 0.

        Raises ``ValueError`` if a value is infinite.
        """
        if np.isinf(values).any():
            bad = float(values[np.isinf(values)][0])
            raise ValueError(f"{self.parameter} must be a finite number or NaN (missing), got {bad!r}")
        present = ~np.isnan(values)
        rows = np.searchsorted(np.asarray(self.cuts), np.where(present, values, 0.0), side="right")
        return np.where(present, np.asarray(self.points, dtype=np.int64)[rows], 0)


# Cut points: midway between adjacent chart values (see the module docstring).
_RESPIRATORY_RATE = _Scale("respiratory_rate", (8.5, 11.5, 20.5, 24.5), (3, 1, 0, 2, 3))
_SPO2_SCALE_1 = _Scale("spo2", (91.5, 93.5, 95.5), (3, 2, 1, 0))
_SYSTOLIC_BP = _Scale("systolic_bp", (90.5, 100.5, 110.5, 219.5), (3, 2, 1, 0, 3))
_HEART_RATE = _Scale("heart_rate", (40.5, 50.5, 90.5, 110.5, 130.5), (3, 1, 0, 1, 2, 3))
_TEMPERATURE = _Scale("temperature", (35.05, 36.05, 38.05, 39.05), (3, 1, 0, 1, 2))


@dataclass(frozen=True, slots=True)
class News2:
    """A NEWS2 result: the points of each parameter, with the total and band derived from them.

    Returned by :func:`news2_score` and :meth:`News2Scorer.score_one`. The fields are
    *points*, not observations: ``respiratory_rate=3`` means the respiration rate scored 3.

    Parameters
    ----------
    respiratory_rate, spo2, systolic_bp, heart_rate, consciousness, temperature
        Points, 0 to 3, for each parameter.
    air_or_oxygen
        Points for supplemental oxygen: 2 on oxygen, 0 on air.

    Raises
    ------
    ValueError
        If a field is not an integer from 0 to 3, or ``air_or_oxygen`` is not 0 or 2.

    Examples
    --------
    >>> result = News2(
    ...     respiratory_rate=3, spo2=0, air_or_oxygen=0, systolic_bp=0,
    ...     heart_rate=1, consciousness=0, temperature=0,
    ... )
    >>> result.total, result.band
    (4, 'low-medium')
    >>> result.subscores["heart_rate"]
    1
    """

    respiratory_rate: int
    spo2: int
    air_or_oxygen: int
    systolic_bp: int
    heart_rate: int
    consciousness: int
    temperature: int

    def __post_init__(self) -> None:
        for name in _PARAMETERS:
            points = getattr(self, name)
            if isinstance(points, bool) or not isinstance(points, int) or not 0 <= points <= 3:
                raise ValueError(f"{name} points must be an integer from 0 to 3, got {points!r}")
        if self.air_or_oxygen not in (0, _OXYGEN_POINTS):
            raise ValueError(f"air_or_oxygen points must be 0 or 2, got {self.air_or_oxygen!r}")

    @property
    def subscores(self) -> dict[str, int]:
        """Points of each parameter, by name, in chart order (a new dict on each access)."""
        return {name: getattr(self, name) for name in _PARAMETERS}

    @property
    def total(self) -> int:
        """The aggregate score, 0 to :data:`MAX_TOTAL`."""
        return sum(getattr(self, name) for name in _PARAMETERS)

    @property
    def band(self) -> Band:
        """The RCP's clinical-risk band for this result.

        ``"high"`` for a total of 7 or more, ``"medium"`` for 5 or 6, ``"low-medium"`` for a
        total of 0–4 in which a single parameter scores 3 (a "red score"), else ``"low"``.
        """
        total = self.total
        if total >= _HIGH_TOTAL:
            return "high"
        if total >= _MEDIUM_TOTAL:
            return "medium"
        if any(getattr(self, name) == _RED_SCORE for name in _PARAMETERS):
            return "low-medium"
        return "low"


#: The chart's parameters, in chart order (the fields of :class:`News2`), looked up once.
_PARAMETERS: tuple[str, ...] = tuple(f.name for f in fields(News2))


def _consciousness_points(consciousness: str) -> int:
    if consciousness not in _CONSCIOUSNESS_LEVELS:
        raise ValueError(
            f"consciousness must be one of {', '.join(map(repr, _CONSCIOUSNESS_LEVELS))}, "
            f"got {consciousness!r}"
        )
    return 0 if consciousness == "alert" else _RED_SCORE


def news2_score(
    *,
    respiratory_rate: float,
    spo2: float,
    systolic_bp: float,
    heart_rate: float,
    temperature: float,
    on_oxygen: bool = False,
    consciousness: Consciousness = "alert",
) -> News2:
    """Score one set of observations on the NEWS2 chart (SpO2 scale 1).

    Values between chart rows are rounded half up to the chart's resolution (see the
    module docstring): 8.49 breaths/min scores as 8, 8.5 as 9.

    Parameters
    ----------
    respiratory_rate
        Respiration rate, breaths/min.
    spo2
        Peripheral oxygen saturation, %. Scored on scale 1; scale 2 (hypercapnic
        respiratory failure) is not implemented.
    systolic_bp
        Systolic blood pressure, mmHg.
    heart_rate
        Pulse, beats/min.
    temperature
        Body temperature, °C.
    on_oxygen
        Whether the patient breathes supplemental oxygen (2 points).
    consciousness
        ``"alert"`` (0 points), or new ``"confusion"``, ``"voice"``, ``"pain"`` or
        ``"unresponsive"`` (3 points), the ACVPU scale.

    Returns
    -------
    News2
        The points of each parameter, their ``total`` and the ``band``.

    Raises
    ------
    ValueError
        If a value is NaN or infinite, or ``consciousness`` is not an ACVPU level.
        Physiological plausibility is not checked here (see ``kernel.vocabulary``).

    Examples
    --------
    >>> news2_score(
    ...     respiratory_rate=16, spo2=97, systolic_bp=125, heart_rate=72, temperature=36.8
    ... ).band
    'low'
    >>> severe = news2_score(
    ...     respiratory_rate=26, spo2=90, systolic_bp=88, heart_rate=135, temperature=39.4,
    ...     on_oxygen=True, consciousness="confusion",
    ... )
    >>> severe.total, severe.band
    (19, 'high')
    >>> news2_score(
    ...     respiratory_rate=16, spo2=97, systolic_bp=125, heart_rate=72, temperature=35.05
    ... ).subscores["temperature"]
    1
    >>> news2_score(
    ...     respiratory_rate=16, spo2=97, systolic_bp=125, heart_rate=72, temperature=36.8,
    ...     consciousness="asleep",
    ... )
    Traceback (most recent call last):
    ...
    ValueError: consciousness must be one of 'alert', 'confusion', 'voice', 'pain', 'unresponsive', got 'asleep'
    """
    return News2(
        respiratory_rate=_RESPIRATORY_RATE.score(respiratory_rate),
        spo2=_SPO2_SCALE_1.score(spo2),
        air_or_oxygen=_OXYGEN_POINTS if on_oxygen else 0,
        systolic_bp=_SYSTOLIC_BP.score(systolic_bp),
        heart_rate=_HEART_RATE.score(heart_rate),
        consciousness=_consciousness_points(consciousness),
        temperature=_TEMPERATURE.score(temperature),
    )


@dataclass(frozen=True, slots=True)
class News2Many:
    """NEWS2 results of many observations at once: :class:`News2`'s fields as arrays of points.

    Returned by :func:`news2_score_many`; element ``i`` of every field is observation ``i``'s
    points. As for :class:`News2`, the fields are *points*, not observations.

    Examples
    --------
    >>> many = news2_score_many(respiratory_rate=[22.0, 16.0], spo2=[95.0, 97.0], systolic_bp=[118.0, 125.0],
    ...                         heart_rate=[96.0, 72.0], temperature=[38.4, 36.8])
    >>> many.total.tolist(), many.band.tolist(), many.largest.tolist()
    ([5, 0], ['medium', 'low'], [2, 0])
    """

    respiratory_rate: IntArray
    spo2: IntArray
    air_or_oxygen: IntArray
    systolic_bp: IntArray
    heart_rate: IntArray
    consciousness: IntArray
    temperature: IntArray

    @property
    def subscores(self) -> dict[str, IntArray]:
        """Points of each parameter, by name, in chart order."""
        return {name: getattr(self, name) for name in _PARAMETERS}

    @property
    def total(self) -> IntArray:
        """The aggregate score of each observation, 0 to :data:`MAX_TOTAL`."""
        total: IntArray = sum((getattr(self, name) for name in _PARAMETERS), np.zeros_like(self.spo2))
        return total

    @property
    def largest(self) -> IntArray:
        """Each observation's largest single-parameter points (3: a "red score")."""
        largest: IntArray = np.maximum.reduce([getattr(self, name) for name in _PARAMETERS])
        return largest

    @property
    def band(self) -> npt.NDArray[np.str_]:
        """The clinical-risk band of each observation, by :attr:`News2.band`'s rules."""
        total = self.total
        return np.select([total >= _HIGH_TOTAL, total >= _MEDIUM_TOTAL, self.largest == _RED_SCORE],
                         ["high", "medium", "low-medium"], "low")


def news2_score_many(
    *,
    respiratory_rate: npt.ArrayLike,
    spo2: npt.ArrayLike,
    systolic_bp: npt.ArrayLike,
    heart_rate: npt.ArrayLike,
    temperature: npt.ArrayLike,
    on_oxygen: npt.ArrayLike = False,
) -> News2Many:
    """Score arrays of observations on the NEWS2 chart (SpO2 scale 1), vectorised with numpy.

    The same chart, cut points and rounding as :func:`news2_score`, element by element (the
    tests check that they agree on every input). Unlike :func:`news2_score`, a vital may be
    missing: NaN scores 0, as an absent vital does in :meth:`News2Scorer.score_one`.
    Consciousness is not an input: it scores 0 (alert), as in :class:`News2Scorer`.

    Parameters
    ----------
    respiratory_rate, spo2, systolic_bp, heart_rate, temperature
        Observations in the units of :func:`news2_score`, arrays of one shape (or scalars,
        broadcast); NaN for a missing value.
    on_oxygen
        Whether each patient breathes supplemental oxygen (2 points); default: all on air.

    Returns
    -------
    News2Many
        The points of each parameter, their ``total``, ``band`` and ``largest``.

    Raises
    ------
    ValueError
        If a value is infinite.

    Examples
    --------
    >>> news2_score_many(respiratory_rate=[8.49, float("nan")], spo2=98, systolic_bp=120, heart_rate=70,
    ...                  temperature=37.0).respiratory_rate.tolist()
    [3, 0]
    """
    values = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64)
                                   for v in (respiratory_rate, spo2, systolic_bp, heart_rate, temperature)))
    rr, sp, bp, hr, temp = values
    oxygen = np.broadcast_to(np.asarray(on_oxygen, dtype=np.bool_), rr.shape)
    return News2Many(
        respiratory_rate=_RESPIRATORY_RATE.score_many(rr),
        spo2=_SPO2_SCALE_1.score_many(sp),
        air_or_oxygen=np.where(oxygen, _OXYGEN_POINTS, 0).astype(np.int64),
        systolic_bp=_SYSTOLIC_BP.score_many(bp),
        heart_rate=_HEART_RATE.score_many(hr),
        consciousness=np.zeros(rr.shape, dtype=np.int64),
        temperature=_TEMPERATURE.score_many(temp),
    )


class News2Scorer:
    """NEWS2 behind the River classifier protocol: a fixed, non-learning baseline.

    ``x`` holds window means under the keys ``"respiratory_rate"`` (breaths/min),
    ``"spo2"`` (%), ``"systolic_bp"`` (mmHg), ``"heart_rate"`` (beats/min) and
    ``"temperature"`` (°C), and optionally ``"on_oxygen"`` (1.0 on oxygen, 0.0 on air);
    other keys are ignored. Consciousness cannot be measured by a wearable, so it always
    scores 0 (alert).

    A vital missing from ``x`` (absent, or ``None``) scores 0, as if normal. This keeps a
    score flowing when a sensor drops out, at the cost of under-scoring: a missing vital
    can never raise the alarm, and a window with no vitals at all scores 0.

    :meth:`predict_proba_one` maps the total to ``total / 20``, the fraction of the maximum
    score. It is a monotone *ranking score*, fit for ROC AUC and alert thresholds, not a
    calibrated probability of deterioration.

    Examples
    --------
    >>> model = News2Scorer()
    >>> x = {"respiratory_rate": 22.0, "spo2": 95.0, "heart_rate": 96.0, "on_oxygen": 1.0}
    >>> model.predict_proba_one(x)
    {False: 0.7, True: 0.3}
    >>> model.learn_one(x, True).predict_proba_one(x)
    {False: 0.7, True: 0.3}
    >>> model.score_one(x).band
    'medium'
    """

    def learn_one(self, x: dict[str, float], y: bool) -> News2Scorer:
        """Do nothing: NEWS2 is a fixed chart and does not learn. Return ``self``.

        Parameters
        ----------
        x
            Features; ignored.
        y
            Whether the patient deteriorated; ignored.
        """
        return self

    def score_one(self, x: dict[str, float]) -> News2:
        """The NEWS2 result for one feature dict, missing vitals scoring 0.

        Parameters
        ----------
        x
            Window means, keyed as in the class docstring.

        Raises
        ------
        ValueError
            If a present vital is NaN or infinite, or ``"on_oxygen"`` is not 0 or 1.

        Examples
        --------
        >>> News2Scorer().score_one({"respiratory_rate": 8.0}).subscores["respiratory_rate"]
        3
        >>> News2Scorer().score_one({"on_oxygen": 0.5})
        Traceback (most recent call last):
        ...
        ValueError: on_oxygen must be 0 (air) or 1 (oxygen), got 0.5
        """
        on_oxygen = x.get("on_oxygen")
        if on_oxygen is not None and on_oxygen not in (0, 1):
            raise ValueError(f"on_oxygen must be 0 (air) or 1 (oxygen), got {on_oxygen!r}")
        return News2(
            respiratory_rate=_score_if_present(_RESPIRATORY_RATE, x),
            spo2=_score_if_present(_SPO2_SCALE_1, x),
            air_or_oxygen=_OXYGEN_POINTS if on_oxygen == 1 else 0,
            systolic_bp=_score_if_present(_SYSTOLIC_BP, x),
            heart_rate=_score_if_present(_HEART_RATE, x),
            consciousness=0,
            temperature=_score_if_present(_TEMPERATURE, x),
        )

    def predict_proba_one(self, x: dict[str, float]) -> dict[bool, float]:
        """Ranking score ``total / 20`` as ``{False: 1 - p, True: p}``; not calibrated.

        Parameters
        ----------
        x
            Window means, keyed as in the class docstring.

        Raises
        ------
        ValueError
            As :meth:`score_one`.

        Examples
        --------
        >>> News2Scorer().predict_proba_one({"respiratory_rate": 16.0, "spo2": 98.0})
        {False: 1.0, True: 0.0}
        """
        p = self.score_one(x).total / MAX_TOTAL  # in [0, 1]: News2 checks every field
        return {False: 1.0 - p, True: p}


def _score_if_present(scale: _Scale, x: dict[str, float]) -> int:
    value = x.get(scale.parameter)
    return 0 if value is None else scale.score(value)
