"""The synthetic cohort: ids, demographics, conditions and baselines."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulators.cohort import CohortConfig, population
from simulators.population import (
    CONDITIONS,
    DEFAULT_SKIN_TONE_WEIGHTS,
    Patient,
    prevalence,
    sample_cohort,
)
from tests.simulators.helpers import PATIENT_ID


@pytest.fixture(scope="module")
def big() -> object:
    return sample_cohort(20_000, seed=7)


def test_patients_carry_pseudonymous_ids_and_no_personal_text() -> None:
    patients = population(CohortConfig(patients=500, seed=3))
    assert all(PATIENT_ID.match(p.patient_id) for p in patients)
    assert len({p.patient_id for p in patients}) == 500
    assert [f.name for f in dataclasses.fields(Patient)] == [
        "patient_id", "age_years", "sex", "skin_tone", "conditions", "baseline",
    ]  # fmt: skip
    other = population(CohortConfig(patients=500, seed=4))
    assert {p.patient_id for p in patients}.isdisjoint(p.patient_id for p in other)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**40), n=st.integers(1, 60), extra=st.integers(1, 60))
def test_a_cohort_is_a_prefix_of_any_larger_one_with_the_same_seed(seed: int, n: int, extra: int) -> None:
    small = sample_cohort(n, seed=seed).patients()
    large = sample_cohort(n + extra, seed=seed).patients()
    assert large[:n] == small


def test_ages_are_adult_and_skewed_older(big) -> None:
    age = big.age_years
    assert age.min() >= 40 and age.max() <= 95
    assert 66 <= np.median(age) <= 76
    assert (age >= 65).mean() > (age < 55).mean()


def test_sex_and_skin_tone_follow_their_shares(big) -> None:
    n = len(big)
    assert abs(big.female.mean() - 0.5) < 5 * np.sqrt(0.25 / n)
    observed = np.bincount(big.skin_tone, minlength=7)[1:] / n
    expected = np.array(DEFAULT_SKIN_TONE_WEIGHTS) / sum(DEFAULT_SKIN_TONE_WEIGHTS)
    assert np.all(np.abs(observed - expected) < 5 * np.sqrt(expected * (1 - expected) / n))
    only_dark = sample_cohort(200, seed=1, skin_tone_weights=(0, 0, 0, 0, 1, 1))
    assert set(only_dark.skin_tone.tolist()) == {5, 6}


@pytest.mark.parametrize("condition", CONDITIONS)
def test_prevalence_matches_the_age_curve_and_rises_with_age(big, condition) -> None:
    has = big.has(condition)
    expected = prevalence(condition, big.age_years).sum()
    assert abs(has.sum() - expected) < 5 * np.sqrt(expected)
    young, old = big.age_years < 55, big.age_years >= 80
    if condition != "type2_diabetes":  # diabetes prevalence peaks around 70
        assert has[old].mean() > has[young].mean()


def test_baselines_differ_between_patients_and_by_condition(big) -> None:
    copd, htn = big.has("copd"), big.has("hypertension")
    assert big.spo2_pct[copd].mean() < big.spo2_pct[~copd].mean() - 2.5
    assert big.systolic_mmhg[htn].mean() > big.systolic_mmhg[~htn].mean() + 10
    assert big.diastolic_mmhg[htn].mean() > big.diastolic_mmhg[~htn].mean() + 5
    assert 5 < big.heart_rate_bpm.std() < 12
    assert 60 < big.heart_rate_bpm.mean() < 80
    assert 36.3 < big.body_temperature_c.mean() < 36.9
    assert 13 < big.respiratory_rate_per_min.mean() < 18
    assert (big.diastolic_mmhg < big.systolic_mmhg - 20).all()


def test_patient_records_match_the_arrays() -> None:
    cohort = sample_cohort(50, seed=9)
    for i, p in enumerate(cohort.patients()):
        assert p.age_years == cohort.age_years[i]
        assert p.skin_tone == cohort.skin_tone[i]
        assert p.sex == ("F" if cohort.female[i] else "M")
        assert all(p.has(c) == bool(cohort.has(c)[i]) for c in CONDITIONS)
        assert p.baseline.spo2_pct == pytest.approx(cohort.spo2_pct[i], abs=0.05)


def test_bad_population_arguments() -> None:
    with pytest.raises(ValueError, match="at least 1 patient"):
        sample_cohort(0, seed=1)
    with pytest.raises(ValueError, match="condition must be one of"):
        prevalence("gout", 60)
