"""Seeded synthetic patients: pseudonymous ids, demographics, chronic conditions, baselines.

The cohort is what a remote-monitoring programme for chronic disease enrols: adults aged
40–95, skewed older, with heart failure, COPD, hypertension, type 2 diabetes and atrial
fibrillation at age-dependent prevalence. Each patient gets personal resting baselines for
every vital sign, so that "normal" differs between patients as it does in real life.

Patients carry no names or free text; the id is ``"pt-"`` and ten hex digits derived from
the seed and the patient's index by a keyed hash, so the same seed always gives the same ids.

Every attribute is drawn from its own random stream, one value (or row) per patient, so a
cohort is a prefix of any larger cohort with the same seed: patient 17 is the same person in
a 100-patient and a 10,000-patient run.

Examples
--------
>>> cohort = sample_cohort(3, seed=42)
>>> [p.patient_id for p in cohort.patients()] == [patient_id(42, i) for i in range(3)]
True
>>> patient_id(42, 0)
'pt-e4174c6515'
>>> all(40 <= p.age_years <= 95 for p in cohort.patients())
True
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal, get_args
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

#: The chronic conditions a patient may have.
Condition = Literal["heart_failure", "copd", "hypertension", "type2_diabetes", "atrial_fibrillation"]

#: All conditions, in the column order of :attr:`CohortArrays.conditions`.
CONDITIONS: tuple[Condition, ...] = get_args(Condition)

#: Biological sex as recorded for reference ranges.
Sex = Literal["F", "M"]

#: Default share of each Fitzpatrick skin type I–VI: a deliberately diverse cohort, so that
#: fairness monitoring has enough patients with darker skin (V–VI: 25 %).
DEFAULT_SKIN_TONE_WEIGHTS: tuple[float, ...] = (0.10, 0.25, 0.25, 0.15, 0.15, 0.10)

AGE_MIN_YEARS = 40
AGE_MAX_YEARS = 95

# Age-dependent prevalence in the general population, as (age, prevalence) knots with linear
# interpolation between them. Rough published figures:
# - hypertension: NHANES 2017-2018 (BP >= 130/80 mmHg or treated), about 55 % at 40-59 years
#   and 75 % at 60+ (Ostchega et al., NCHS Data Brief 364, 2020).
# - type 2 diabetes: CDC National Diabetes Statistics Report 2020, diagnosed plus undiagnosed,
#   17.5 % at 45-64 and 26.8 % at 65+.
# - heart failure: AHA Heart Disease and Stroke Statistics 2023 (NHANES 2017-2020), roughly
#   1-2 % at 40-59, 4-7 % at 60-79 and 9-13 % at 80+.
# - COPD: BOLD / GOLD 2023, spirometric prevalence about 10 % of adults 40+; CDC BRFSS 2013,
#   diagnosed, about 5 % at 45-54 rising to 12 % at 65-74.
# - atrial fibrillation: ATRIA (Go et al., JAMA 2001), 0.1 % under 55, 3.8 % at 60+, 9 % at
#   80+; Rotterdam (Heeringa et al., Eur Heart J 2006), 17.8 % at 85+.
_PREVALENCE_KNOTS: Mapping[Condition, tuple[tuple[float, float], ...]] = MappingProxyType({
    "heart_failure": ((40, 0.01), (60, 0.03), (70, 0.06), (80, 0.10), (95, 0.13)),
    "copd": ((40, 0.03), (55, 0.06), (70, 0.11), (95, 0.12)),
    "hypertension": ((40, 0.40), (60, 0.60), (75, 0.75), (95, 0.80)),
    "type2_diabetes": ((40, 0.10), (55, 0.17), (70, 0.26), (95, 0.22)),
    "atrial_fibrillation": ((40, 0.002), (55, 0.01), (65, 0.04), (75, 0.07), (85, 0.12), (95, 0.15)),
})

# Remote-monitoring programmes enrol heart-failure and COPD patients above all, so the cohort
# has more of them than the general population of the same age.
_ENRICHMENT: Mapping[Condition, float] = MappingProxyType({
    "heart_failure": 3.0,
    "copd": 2.0,
    "hypertension": 1.0,
    "type2_diabetes": 1.0,
    "atrial_fibrillation": 1.5,
})

# One random stream per attribute (see the module docstring); the numbers are stream keys.
_STREAM: Mapping[str, int] = MappingProxyType({
    "age": 1, "sex": 2, "skin": 3, "conditions": 4, "hr": 5, "spo2": 6, "rr": 7, "temp": 8,
    "sbp": 9, "dbp": 10, "activity": 11, "cadence": 12, "effort": 13, "bedtime": 14, "sleep": 15,
})  # fmt: skip
_POPULATION_DOMAIN = 0x504F50  # "POP": keeps population streams apart from other modules'


def prevalence(condition: Condition, age_years: float | npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Cohort prevalence of ``condition`` at ``age_years``, enrichment included.

    Parameters
    ----------
    condition
        One of :data:`CONDITIONS`.
    age_years
        Age or array of ages in years; ages outside 40–95 take the nearest knot's value.

    Returns
    -------
    numpy.ndarray
        Probability in [0, 1] for each age.

    Raises
    ------
    ValueError
        If ``condition`` is not one of :data:`CONDITIONS`.

    Examples
    --------
    >>> float(prevalence("hypertension", 60))
    0.6
    >>> prevalence("heart_failure", [40, 80]).round(2).tolist()
    [0.03, 0.3]
    """
    if condition not in _PREVALENCE_KNOTS:
        raise ValueError(f"condition must be one of {CONDITIONS}, got {condition!r}")
    ages, values = zip(*_PREVALENCE_KNOTS[condition])
    p: npt.NDArray[np.float64] = np.interp(np.asarray(age_years, dtype=np.float64), ages, values) * _ENRICHMENT[condition]
    return np.minimum(p, 1.0, dtype=np.float64)


def patient_id(seed: int, index: int) -> str:
    """The pseudonymous id of patient ``index`` in the cohort drawn with ``seed``.

    ``"pt-"`` and the first ten hex digits of a BLAKE2b hash of seed and index: stable,
    not reversible to anything personal, and different for every seed.

    Examples
    --------
    >>> patient_id(42, 0)
    'pt-e4174c6515'
    >>> patient_id(42, 0) != patient_id(43, 0)
    True
    >>> from kernel.limits import valid_id
    >>> valid_id(patient_id(42, 0))  # the rule every decoder applies
    True
    """
    return "pt-" + _digest(f"patient:{seed}:{index}", 5)


def _digest(text: str, size: int) -> str:
    return hashlib.blake2b(text.encode(), digest_size=size, person=b"vitalrisk-sim").hexdigest()


def seeded_rng(seed: int, *key: int) -> np.random.Generator:
    """An independent random generator for ``seed`` and a stream ``key``.

    Each part of the simulation draws from its own stream, so switching one part on or off
    (faults, say) never changes the numbers another part sees.

    Examples
    --------
    >>> a = seeded_rng(42, 1).random()
    >>> a == seeded_rng(42, 1).random(), a == seeded_rng(42, 2).random()
    (True, False)
    """
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


@dataclass(frozen=True, slots=True)
class Baseline:
    """A patient's personal resting, awake, daytime mean of each vital sign.

    The simulated signal moves around it with circadian rhythm, sleep, activity and
    deterioration; it is the value a clinician would call "normal for this patient".
    """

    heart_rate_bpm: float
    spo2_pct: float
    respiratory_rate_per_min: float
    body_temperature_c: float
    systolic_mmhg: float
    diastolic_mmhg: float


@dataclass(frozen=True, slots=True)
class Patient:
    """One synthetic patient: attributes for fairness analysis and export.

    ``skin_tone`` is the Fitzpatrick type, 1 (I) to 6 (VI). ``conditions`` lists the chronic
    conditions in the order of :data:`CONDITIONS`.
    """

    patient_id: str
    age_years: int
    sex: Sex
    skin_tone: int
    conditions: tuple[Condition, ...]
    baseline: Baseline

    def has(self, condition: Condition) -> bool:
        """Whether the patient has ``condition``."""
        return condition in self.conditions


@dataclass(frozen=True, slots=True)
class CohortArrays:
    """The whole cohort as parallel numpy arrays, one element (or row) per patient.

    The vectorised simulation works on these; :meth:`patients` turns them into
    :class:`Patient` records. Besides the baselines it holds the behavioural parameters
    the physiology needs: activity propensity, walking cadence, heart-rate gain per unit
    of effort, and the sleep schedule (bedtime and sleep length in minutes of the day).
    """

    ids: tuple[str, ...]
    age_years: npt.NDArray[np.int64]
    female: npt.NDArray[np.bool_]
    skin_tone: npt.NDArray[np.int64]
    conditions: npt.NDArray[np.bool_]  # (n, len(CONDITIONS))
    heart_rate_bpm: npt.NDArray[np.float64]
    spo2_pct: npt.NDArray[np.float64]
    respiratory_rate_per_min: npt.NDArray[np.float64]
    body_temperature_c: npt.NDArray[np.float64]
    systolic_mmhg: npt.NDArray[np.float64]
    diastolic_mmhg: npt.NDArray[np.float64]
    activity: npt.NDArray[np.float64]
    cadence_steps_per_min: npt.NDArray[np.float64]
    effort_gain_bpm: npt.NDArray[np.float64]
    bedtime_min: npt.NDArray[np.float64]
    sleep_min: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.ids)

    def has(self, condition: Condition) -> npt.NDArray[np.bool_]:
        """Boolean mask of the patients with ``condition``."""
        return self.conditions[:, CONDITIONS.index(condition)]

    def patients(self) -> list[Patient]:
        """The cohort as :class:`Patient` records, in index order."""
        out: list[Patient] = []
        for i, pid in enumerate(self.ids):
            out.append(
                Patient(
                    patient_id=pid,
                    age_years=int(self.age_years[i]),
                    sex="F" if self.female[i] else "M",
                    skin_tone=int(self.skin_tone[i]),
                    conditions=tuple(c for j, c in enumerate(CONDITIONS) if self.conditions[i, j]),
                    baseline=Baseline(
                        heart_rate_bpm=round(float(self.heart_rate_bpm[i]), 1),
                        spo2_pct=round(float(self.spo2_pct[i]), 1),
                        respiratory_rate_per_min=round(float(self.respiratory_rate_per_min[i]), 1),
                        body_temperature_c=round(float(self.body_temperature_c[i]), 2),
                        systolic_mmhg=round(float(self.systolic_mmhg[i]), 1),
                        diastolic_mmhg=round(float(self.diastolic_mmhg[i]), 1),
                    ),
                )
            )
        return out


def sample_cohort(
    n: int,
    *,
    seed: int,
    skin_tone_weights: tuple[float, ...] = DEFAULT_SKIN_TONE_WEIGHTS,
) -> CohortArrays:
    """Draw ``n`` patients for ``seed``.

    Parameters
    ----------
    n
        Number of patients, at least 1.
    seed
        Non-negative integer seed; the same seed gives the same patients.
    skin_tone_weights
        Six non-negative weights for Fitzpatrick types I–VI (normalised here).

    Returns
    -------
    CohortArrays
        The cohort, patient ``i`` at index ``i`` of every array.

    Raises
    ------
    ValueError
        If ``n`` < 1, ``seed`` < 0, or the weights are not six non-negative numbers with a
        positive sum.

    Examples
    --------
    >>> cohort = sample_cohort(4, seed=1)
    >>> len(cohort), sorted(set(cohort.skin_tone.tolist()) - {1, 2, 3, 4, 5, 6})
    (4, [])
    >>> sample_cohort(2, seed=1).ids == cohort.ids[:2]
    True
    """
    if n < 1:
        raise ValueError(f"a cohort needs at least 1 patient, got {n}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    weights = np.asarray(skin_tone_weights, dtype=np.float64)
    if weights.shape != (6,) or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(
            "skin_tone_weights must be six non-negative weights (Fitzpatrick I-VI) with a "
            f"positive sum, got {skin_tone_weights!r}"
        )

    def rng(name: str) -> np.random.Generator:
        return seeded_rng(seed, _POPULATION_DOMAIN, _STREAM[name])

    ids = _unique_ids(seed, n)
    span = AGE_MAX_YEARS - AGE_MIN_YEARS
    # Beta(2.2, 1.8) on 40-95: mean about 70, mode about 73 -- skewed towards old age.
    age = np.rint(AGE_MIN_YEARS + span * rng("age").beta(2.2, 1.8, n)).astype(np.int64)
    female = rng("sex").random(n) < 0.5
    cum = np.cumsum(weights / weights.sum())
    skin = np.minimum(np.searchsorted(cum, rng("skin").random(n), side="right"), 5) + 1
    u = rng("conditions").random((n, len(CONDITIONS)))
    conditions = np.column_stack([u[:, j] < prevalence(c, age) for j, c in enumerate(CONDITIONS)])

    hf, copd, htn, af = (conditions[:, CONDITIONS.index(c)] for c in
                         ("heart_failure", "copd", "hypertension", "atrial_fibrillation"))  # fmt: skip
    older = np.maximum(age - 60, 0)

    hr = 70.0 + 8.0 * rng("hr").standard_normal(n) + 3.0 * female + 4.0 * hf + 4.0 * af
    z_spo2 = rng("spo2").standard_normal(n)
    spo2 = np.where(
        copd,
        93.0 + 1.5 * z_spo2,  # COPD: lower and wider (GOLD's target on oxygen is 88-92 %)
        97.3 + 0.9 * z_spo2 - 0.02 * older - 0.5 * hf,
    )
    rr = 15.0 + 1.8 * rng("rr").standard_normal(n) + 2.0 * copd + 1.0 * hf
    temp = 36.6 + 0.22 * rng("temp").standard_normal(n) + 0.1 * female - 0.005 * older
    sbp = 124.0 + 11.0 * rng("sbp").standard_normal(n) + 16.0 * htn + 0.3 * older - 4.0 * hf
    dbp = 76.0 + 7.0 * rng("dbp").standard_normal(n) + 9.0 * htn - 0.15 * older
    sbp = np.clip(sbp, 95.0, 185.0)
    dbp = np.minimum(dbp, sbp - 25.0)  # pulse pressure at least 25 mmHg
    # Activity: lognormal propensity, lower with HF and COPD and with age.
    activity = np.exp(0.45 * rng("activity").standard_normal(n)) * np.where(hf | copd, 0.7, 1.0)
    activity *= np.clip(1.0 - 0.01 * older, 0.6, 1.0)
    cadence = np.clip(100.0 + 8.0 * rng("cadence").standard_normal(n) - 0.4 * older, 70.0, 125.0)
    effort = np.clip(28.0 + 5.0 * rng("effort").standard_normal(n), 15.0, 45.0)
    bedtime = 22.75 * 60 + 50.0 * rng("bedtime").standard_normal(n) - 1.0 * older
    sleep = np.clip(7.6 * 60 + 45.0 * rng("sleep").standard_normal(n), 5.5 * 60, 10.0 * 60)

    return CohortArrays(
        ids=ids,
        age_years=age,
        female=female,
        skin_tone=skin.astype(np.int64),
        conditions=conditions,
        heart_rate_bpm=np.clip(hr, 50.0, 105.0),
        spo2_pct=np.clip(spo2, 88.0, 99.5),
        respiratory_rate_per_min=np.clip(rr, 10.0, 24.0),
        body_temperature_c=np.clip(temp, 36.0, 37.3),
        systolic_mmhg=sbp,
        diastolic_mmhg=np.clip(dbp, 55.0, 110.0),
        activity=activity,
        cadence_steps_per_min=cadence,
        effort_gain_bpm=effort,
        bedtime_min=np.mod(bedtime, 1440.0),
        sleep_min=sleep,
    )


def _unique_ids(seed: int, n: int) -> tuple[str, ...]:
    """Patient ids for indices ``0..n-1``; a (rare, 40-bit) collision is re-hashed."""
    ids: list[str] = []
    seen: set[str] = set()
    for i in range(n):
        pid = patient_id(seed, i)
        salt = 0
        while pid in seen:
            salt += 1
            pid = "pt-" + _digest(f"patient:{seed}:{i}:{salt}", 5)
        seen.add(pid)
        ids.append(pid)
    return tuple(ids)
