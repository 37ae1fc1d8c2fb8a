"""Fairness: subgroup metrics, the gap gates, and the ops events they raise."""

from __future__ import annotations

import os

import numpy as np
import pytest

from models.fairness import FairnessMonitor, FairnessPolicy, age_band, skin_tone_group, subgroups
from simulators.cohort import CohortConfig, population


#: The acceptance run: enough episodes per skin-tone group for a credible gap, in about a minute.
FAIRNESS_PATIENTS, FAIRNESS_DAYS, FAIRNESS_INCIDENCE = 300, 6, 8.0


def _groups(n: int) -> dict[str, dict[str, str]]:
    tones = (1, 3, 5)
    return {f"pt-{i}": subgroups("F" if (i // 9) % 2 else "M", 60 + ((i // 3) % 3) * 10, tones[i % 3])
            for i in range(n)}


def _stream(n_patients: int, windows: int, seed: int, under_predict: dict[str, float] | None = None,
            groups: dict[str, dict[str, str]] | None = None) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Labelled windows with a calibrated score; ``under_predict`` divides the odds for a skin-tone group."""
    rng = np.random.default_rng(seed)
    pids = [f"pt-{i}" for i in rng.integers(0, n_patients, windows)]
    risk = 1 / (1 + np.exp(-rng.normal(-3.5, 1.2, windows)))
    y = rng.random(windows) < risk
    p = risk.copy()
    if under_predict:
        assert groups is not None
        for tone, factor in under_predict.items():
            mask = np.array([groups[pid]["skin_tone"] == tone for pid in pids])
            odds = p[mask] / (1 - p[mask]) / factor
            p[mask] = odds / (1 + odds)
    return pids, y, p


def test_subgroup_helpers() -> None:
    assert [age_band(a) for a in (40, 70, 90)] == ["<65", "65-74", "75+"]
    assert [skin_tone_group(t) for t in range(1, 7)] == ["I-II", "I-II", "III-IV", "III-IV", "V-VI", "V-VI"]
    with pytest.raises(ValueError):
        skin_tone_group(7)
    patients = population(CohortConfig(patients=50, seed=1))
    groups = {p.patient_id: subgroups(p.sex, p.age_years, p.skin_tone) for p in patients}
    assert {g["skin_tone"] for g in groups.values()} == {"I-II", "III-IV", "V-VI"}


def test_an_under_predicted_group_is_flagged_on_sensitivity_and_calibration() -> None:
    groups = _groups(300)
    pids, y, p = _stream(300, 200_000, seed=1, under_predict={"V-VI": 4.0}, groups=groups)
    mon = FairnessMonitor(groups, ("model",), {"model": 0.1},
                          policy=FairnessPolicy(min_positives=300, min_positives_sensitivity=300))
    mon.update_many(pids, y, {"model": p})
    flagged = {(f["metric"], f["attribute"], f["low_group"]) for f in mon.flagged()}
    assert flagged == {("sensitivity", "skin_tone", "V-VI"), ("calibration", "skin_tone", "V-VI")}
    events = mon.check(123)
    assert {e.kind for e in events} == {"fairness"} and len(events) == 2 and events[0].ts_ms == 123
    assert mon.check(456) == []  # still open: raised once


def test_a_fair_scorer_flags_nothing() -> None:
    groups = _groups(300)
    pids, y, p = _stream(300, 200_000, seed=2)
    mon = FairnessMonitor(groups, ("model",), {"model": 0.1})
    mon.update_many(pids, y, {"model": p})
    assert mon.flagged() == [] and mon.check(0) == []
    assert len(mon.gaps()) == 6  # both gates on all three attributes were evaluated


def test_small_groups_are_not_compared() -> None:
    groups = _groups(300)
    pids, y, p = _stream(300, 5_000, seed=3, under_predict={"V-VI": 4.0}, groups=groups)
    mon = FairnessMonitor(groups, ("model",), {"model": 0.1}, policy=FairnessPolicy(min_positives=10_000))
    mon.update_many(pids, y, {"model": p})
    assert mon.gaps() == []


def test_ranking_scores_are_histogram_calibrated_before_the_calibration_gate() -> None:
    """NEWS2-like scores are not probabilities: a score three times too high for everybody is fair,
    one that under-scores a group is not."""
    groups = _groups(300)
    pids, y, p = _stream(300, 150_000, seed=4)
    levels = np.round(np.minimum(p * 3, 1) * 20) / 20  # 21 levels, like total / 20
    mon = FairnessMonitor(groups, ("model", "news2"), {"model": 0.1, "news2": 0.25})
    mon.update_many(pids, y, {"model": p, "news2": levels})
    assert [g for g in mon.gaps() if g["metric"] == "calibration" and g["flagged"]] == []
    assert all(0.7 < v < 1.4 for v in mon.calibration("news2", "skin_tone").values())
    tones = np.array([groups[pid]["skin_tone"] for pid in pids])
    biased = np.where(tones == "V-VI", np.floor(levels * 20 / 3) / 20, levels)
    mon = FairnessMonitor(groups, ("news2",), {"news2": 0.25})
    mon.update_many(pids, y, {"news2": biased})
    flagged = [(g["attribute"], g["low_group"]) for g in mon.flagged() if g["metric"] == "calibration"]
    assert flagged == [("skin_tone", "V-VI")]


def test_per_attribute_calibration_limits() -> None:
    policy = FairnessPolicy(max_calibration_ratio_by_attribute=(("age_band", 2.5),))
    assert policy.calibration_limit("age_band") == 2.5 and policy.calibration_limit("sex") == 1.5


def test_every_scorer_needs_a_threshold() -> None:
    with pytest.raises(ValueError, match="threshold"):
        FairnessMonitor({}, ("model", "news2"), {"model": 0.1})


def test_table_rows_cover_every_group() -> None:
    groups = _groups(30)
    pids, y, p = _stream(30, 2_000, seed=5)
    mon = FairnessMonitor(groups, ("model",), {"model": 0.1})
    mon.update_many(pids, y, {"model": p})
    rows = mon.table()
    assert {(r.attribute, r.group) for r in rows} == {
        ("sex", "F"), ("sex", "M"), ("age_band", "<65"), ("age_band", "65-74"), ("age_band", "75+"),
        ("skin_tone", "I-II"), ("skin_tone", "III-IV"), ("skin_tone", "V-VI")}
    assert sum(r.windows for r in rows if r.attribute == "sex") == 2_000


def test_a_gap_from_a_handful_of_patients_is_not_credible() -> None:
    """Two patients' episodes make thousands of positive windows, but they are two observations."""
    groups = _groups(300)
    pids, y, p = _stream(300, 200_000, seed=6, under_predict={"V-VI": 4.0}, groups=groups)
    y = y & np.isin(pids, ["pt-2", "pt-5", "pt-0", "pt-1", "pt-3", "pt-4"])  # episodes of six patients only
    policy = FairnessPolicy(min_positives=50, min_positives_sensitivity=50)
    mon = FairnessMonitor(groups, ("model",), {"model": 0.1}, policy=policy)
    mon.update_many(pids, y, {"model": p})
    assert mon.positive_patients("skin_tone", "V-VI") == 2
    assert mon.gaps() and not any(g["credible"] for g in mon.gaps() if g["attribute"] == "skin_tone")
    assert mon.flagged() == [] and mon.check(0) == []
    loose = FairnessMonitor(groups, ("model",), {"model": 0.1}, policy=FairnessPolicy(
        min_positives=50, min_positives_sensitivity=50, z=0.0))
    loose.update_many(pids, y, {"model": p})
    assert loose.flagged()  # without the credibility gate the same noise would page


def test_an_inherent_baseline_gap_is_reported_not_flagged() -> None:
    groups = _groups(300)
    ages = {pid: g["age_band"] for pid, g in groups.items()}
    pids, y, p = _stream(300, 200_000, seed=7)
    old = np.array([ages[pid] == "65-74" for pid in pids])
    levels = np.round(np.where(old, p / 4, p) * 20) / 20  # under-scores one age band, like NEWS2 the over-75s
    mon = FairnessMonitor(groups, ("model", "news2"), {"model": 0.1, "news2": 0.25})
    mon.update_many(pids, y, {"model": p, "news2": levels})
    inherent = [(g["scorer"], g["attribute"], g["low_group"]) for g in mon.inherent()]
    assert ("news2", "age_band", "65-74") in inherent
    assert mon.flagged() == [] and mon.check(0) == []
    strict = FairnessMonitor(groups, ("model", "news2"), {"model": 0.1, "news2": 0.25},
                             policy=FairnessPolicy(inherent_gaps=()))
    strict.update_many(pids, y, {"model": p, "news2": levels})
    assert ("news2", "calibration", "age_band") in {(g["scorer"], g["metric"], g["attribute"]) for g in strict.flagged()}


def test_the_policy_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="z"):
        FairnessPolicy(z=-1.0)
    with pytest.raises(ValueError, match="inherent_gaps"):
        FairnessPolicy(inherent_gaps=(("news2", "height"),))


@pytest.mark.skipif(os.environ.get("VITALS_SLOW_TESTS") != "1",
                    reason="two evaluate runs (~2 min); set VITALS_SLOW_TESTS=1. Status: at 300 x 6 days "
                           "(78 outcomes) the credibility gate hides the bias-on calibration gap (NEWS2 V-VI "
                           "E/O 0.88 vs I-II 1.12) and NEWS2's window sensitivity on skin tone is flagged "
                           "with the bias off too (episode mix): the acceptance needs more episodes per group")
@pytest.mark.timeout(600)
def test_simulated_spo2_overreading_is_flagged_only_when_switched_on() -> None:
    """Issue 5's acceptance: with the simulator's SpO2 over-reading in darker skin on, the
    monitor flags skin tone V-VI; with it off, it flags nothing. The two runs are a paired
    counterfactual (same cohort, physiology and noise; only the measured SpO2 differs)."""
    from models.evaluate import EvaluateOptions, evaluate_cohort
    from simulators.deterioration import Incidence
    from stream.settings import Settings

    results = {}
    for bias in (True, False):
        config = CohortConfig(patients=FAIRNESS_PATIENTS, seed=42, duration_ms=FAIRNESS_DAYS * 86_400_000,
                              spo2_skin_bias=bias, incidence=Incidence().scaled(FAIRNESS_INCIDENCE))
        results[bias] = evaluate_cohort(config, EvaluateOptions(warmup_ms=2 * 86_400_000), Settings())
    on = [(f["scorer"], f["attribute"], f["low_group"]) for f in results[True].fairness_flags]
    assert ("news2", "skin_tone", "V-VI") in on
    assert all(attribute == "skin_tone" for _, attribute, _ in on)
    assert results[False].fairness_flags == []
    assert results[True].fairness_events and results[False].fairness_events == []
