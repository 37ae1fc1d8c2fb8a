"""True vital signs of a whole cohort, one simulated minute at a time, as numpy arrays.

Each minute every patient's signal is the personal baseline plus:

- **circadian rhythm**: core temperature swings about ±0.3 °C with its peak in the late
  afternoon; heart rate and blood pressure follow a smaller daily wave;
- **sleep**: a personal bedtime and sleep length (jittered by about 20 minutes a day); asleep,
  heart rate falls about 9 beats/min, breathing slows, blood pressure dips 10–15 % ("dipping"),
  and SpO2 drops a little (more with COPD); transitions take about ten minutes;
- **activity**: awake patients alternate between sitting and walking bouts (a two-state
  Markov chain, bouts of about five minutes); steps per minute raise a smoothed "effort" that
  drives heart rate, breathing and blood pressure up, and SpO2 down with COPD;
- **slow personal variation**: an AR(1) wander per vital sign with a time constant of
  about 40 minutes;
- **deterioration**: an ``effects`` array from :mod:`simulators.deterioration`.

These are *true* values, clipped to physiologically plausible limits; measurement noise and
device bias are added in :mod:`simulators.devices`. Default parameters give an older,
chronically ill cohort about 3,000–6,000 steps a day.

The clock is local time, taken to be UTC: ``minute_of_day`` 0 is midnight UTC.

Examples
--------
>>> from simulators.population import sample_cohort, seeded_rng
>>> cohort = sample_cohort(3, seed=1)
>>> rng = seeded_rng(1, 99)
>>> state = PhysiologyState.start(cohort, rng)
>>> vitals = advance(state, cohort, minute_of_day=600, effects=no_effects(3), rng=rng)
>>> vitals.heart_rate_bpm.shape, bool((vitals.spo2_pct <= 100).all())
((3,), True)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from simulators.population import CohortArrays

FloatArray = npt.NDArray[np.float64]

# Columns of the ``effects`` array handed to :func:`advance` (one row per patient): additive
# changes of each true vital sign, the fraction of activity lost, and the beat-to-beat
# irregularity of heart rate (standard deviation between 5-second readings, beats/min).
EFFECT_HEART_RATE = 0
EFFECT_RESPIRATORY_RATE = 1
EFFECT_SPO2 = 2
EFFECT_TEMPERATURE = 3
EFFECT_SYSTOLIC = 4
EFFECT_DIASTOLIC = 5
EFFECT_ACTIVITY_LOSS = 6
EFFECT_IRREGULARITY = 7
N_EFFECTS = 8

MINUTES_PER_DAY = 1440
_WALK_START_PER_MIN = 0.0096  # with bouts of ~5 min: ~4-5 % of waking minutes walking
_WALK_STOP_PER_MIN = 0.2
_AR_PHI = float(np.exp(-1.0 / 40.0))  # 40-minute time constant
_AR_INNOVATION = float(np.sqrt(1.0 - _AR_PHI**2))
_N_WANDER = 6  # HR, RR, SpO2, temperature, systolic, diastolic


def no_effects(n: int) -> FloatArray:
    """An ``(n, N_EFFECTS)`` effects array of zeros: nobody is deteriorating.

    Examples
    --------
    >>> no_effects(2).shape
    (2, 8)
    """
    return np.zeros((n, N_EFFECTS))


@dataclass(slots=True)
class PhysiologyState:
    """What the physiology carries from one minute to the next, for one run.

    Created by :meth:`start` and advanced in place by :func:`advance`; one instance per
    simulation, never shared.
    """

    walking: npt.NDArray[np.bool_]
    effort: FloatArray
    sleepiness: FloatArray
    wander: FloatArray  # (n, 6) standard-normal AR(1) states
    bedtime_jitter_min: FloatArray

    @classmethod
    def start(cls, cohort: CohortArrays, rng: np.random.Generator, minute_of_day: int = 0) -> PhysiologyState:
        """Initial state at ``minute_of_day``: sitting and rested, asleep if it is night for
        the patient, wander drawn from its stationary distribution."""
        n = len(cohort)
        state = cls(
            walking=np.zeros(n, dtype=np.bool_),
            effort=np.zeros(n),
            sleepiness=np.zeros(n),
            wander=rng.standard_normal((n, _N_WANDER)),
            bedtime_jitter_min=20.0 * rng.standard_normal(n),
        )
        state.sleepiness = state.asleep(cohort, minute_of_day).astype(np.float64)
        return state

    def new_day(self, rng: np.random.Generator) -> None:
        """Draw a new bedtime jitter (about ±20 minutes) for every patient."""
        self.bedtime_jitter_min = 20.0 * rng.standard_normal(len(self.effort))

    def asleep(self, cohort: CohortArrays, minute_of_day: int) -> npt.NDArray[np.bool_]:
        """Who is asleep at ``minute_of_day`` (0–1439, local time)."""
        since_bed = np.mod(minute_of_day - cohort.bedtime_min - self.bedtime_jitter_min, MINUTES_PER_DAY)
        return since_bed < cohort.sleep_min


@dataclass(frozen=True, slots=True)
class Vitals:
    """True vital signs of every patient for one minute (arrays of length n)."""

    heart_rate_bpm: FloatArray
    hr_irregularity_bpm: FloatArray
    spo2_pct: FloatArray
    respiratory_rate_per_min: FloatArray
    body_temperature_c: FloatArray
    systolic_mmhg: FloatArray
    diastolic_mmhg: FloatArray
    steps_per_min: FloatArray
    asleep: npt.NDArray[np.bool_]


def _daily_wave(minute_of_day: int, peak_hour: float) -> float:
    return float(np.cos(2.0 * np.pi * (minute_of_day - peak_hour * 60.0) / MINUTES_PER_DAY))


def advance(
    state: PhysiologyState,
    cohort: CohortArrays,
    *,
    minute_of_day: int,
    effects: FloatArray,
    rng: np.random.Generator,
) -> Vitals:
    """Advance ``state`` by one minute and return every patient's true vitals.

    Draws the same amount of randomness from ``rng`` whatever ``effects`` holds, so a run
    with deterioration and one without see the same noise (a paired counterfactual).

    Parameters
    ----------
    state
        The run's state; updated in place.
    cohort
        The patients.
    minute_of_day
        Local minute of the day, 0–1439.
    effects
        ``(n, N_EFFECTS)`` deterioration effects, see the ``EFFECT_*`` columns.
    rng
        The physiology's random stream.

    Returns
    -------
    Vitals
        True values, clipped to physiologically plausible limits.

    Raises
    ------
    ValueError
        If ``minute_of_day`` is outside 0–1439 or ``effects`` has the wrong shape.

    Examples
    --------
    >>> from simulators.population import sample_cohort, seeded_rng
    >>> cohort = sample_cohort(2, seed=3)
    >>> state = PhysiologyState.start(cohort, seeded_rng(3, 9))
    >>> fever = no_effects(2)
    >>> fever[:, EFFECT_TEMPERATURE] = 2.0
    >>> v = advance(state, cohort, minute_of_day=720, effects=fever, rng=seeded_rng(3, 9))
    >>> bool((v.body_temperature_c > cohort.body_temperature_c + 1.5).all())
    True
    """
    n = len(cohort)
    if not 0 <= minute_of_day < MINUTES_PER_DAY:
        raise ValueError(f"minute_of_day must be in 0..1439, got {minute_of_day}")
    if effects.shape != (n, N_EFFECTS):
        raise ValueError(f"effects must have shape ({n}, {N_EFFECTS}), got {effects.shape}")
    copd = cohort.has("copd")

    asleep = state.asleep(cohort, minute_of_day)
    state.sleepiness += (asleep - state.sleepiness) * 0.1

    u = rng.random((n, 2))
    loss = _bound(effects[:, EFFECT_ACTIVITY_LOSS], 0.0, 0.95)
    p_start = _WALK_START_PER_MIN * cohort.activity * (1.0 - loss)
    walking = np.where(state.walking, u[:, 0] >= _WALK_STOP_PER_MIN, u[:, 0] < p_start) & ~asleep
    state.walking = walking
    shuffle = np.where(u[:, 1] < 0.25, np.floor(u[:, 1] * 40.0), 0.0)  # pottering about: 0-9
    steps = np.where(walking, np.floor(cohort.cadence_steps_per_min * (0.5 + 0.5 * u[:, 1])), shuffle)
    steps = np.where(asleep, 0.0, steps)
    state.effort = 0.65 * state.effort + 0.35 * steps / 100.0
    effort = state.effort
    sleepy = state.sleepiness

    state.wander = _AR_PHI * state.wander + _AR_INNOVATION * rng.standard_normal((n, _N_WANDER))
    w = state.wander
    e = effects

    hr = (
        cohort.heart_rate_bpm
        + 2.0 * _daily_wave(minute_of_day, 16.0)
        - 9.0 * sleepy
        + cohort.effort_gain_bpm * effort
        + 3.0 * w[:, 0]
        + e[:, EFFECT_HEART_RATE]
    )
    rr = (
        cohort.respiratory_rate_per_min
        - 1.5 * sleepy
        + 7.0 * effort
        + 0.8 * w[:, 1]
        + e[:, EFFECT_RESPIRATORY_RATE]
    )
    spo2 = (
        cohort.spo2_pct
        - np.where(copd, 2.0, 0.6) * sleepy
        - np.where(copd, 3.0, 0.3) * effort
        + 0.4 * w[:, 2]
        + e[:, EFFECT_SPO2]
    )
    temp = (
        cohort.body_temperature_c
        + 0.3 * _daily_wave(minute_of_day, 17.0)
        + 0.15 * effort
        + 0.08 * w[:, 3]
        + e[:, EFFECT_TEMPERATURE]
    )
    bp_wave = 4.0 * _daily_wave(minute_of_day, 10.0)
    sbp = (
        cohort.systolic_mmhg + bp_wave - 13.0 * sleepy + 18.0 * effort + 5.0 * w[:, 4] + e[:, EFFECT_SYSTOLIC]
    )
    dbp = (
        cohort.diastolic_mmhg + 0.5 * bp_wave - 8.0 * sleepy + 5.0 * effort + 3.0 * w[:, 5]
        + e[:, EFFECT_DIASTOLIC]
    )
    sbp = _bound(sbp, 70.0, 230.0)
    dbp = _bound(np.minimum(dbp, sbp - 15.0), 35.0, 130.0)

    return Vitals(
        heart_rate_bpm=_bound(hr, 40.0, 200.0),
        hr_irregularity_bpm=_bound(e[:, EFFECT_IRREGULARITY], 0.0, 30.0),
        spo2_pct=_bound(spo2, 60.0, 100.0),
        respiratory_rate_per_min=_bound(rr, 8.0, 45.0),
        body_temperature_c=_bound(temp, 34.0, 42.0),
        systolic_mmhg=sbp,
        diastolic_mmhg=dbp,
        steps_per_min=steps,
        asleep=asleep,
    )


def _bound(values: npt.NDArray[np.float64], lo: float, hi: float) -> npt.NDArray[np.float64]:
    """``np.clip`` without its Python-level dispatch (called many times a simulated minute)."""
    return np.minimum(np.maximum(values, lo), hi)
