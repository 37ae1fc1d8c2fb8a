"""Fairness: subgroup metrics, the gap gates, and the ops events they raise."""

from __future__ import annotations

import os

import numpy as np
import pytest

from models.fairness import FairnessMonitor, FairnessPolicy, age_band, skin_tone_group, subgroups
from simulators.cohort import CohortConfig, population

#: The acceptance run (issue 5): 1,000 patients x 10 days at six times the default incidence,
#: reports after a 2-day warm-up (~190 patients with an episode, ~55 of them Fitzpatrick V-VI).
FAIRNESS_PATIENTS, FAIRNESS_DAYS, FAIRNESS_INCIDENCE, FAIRNESS_WARMUP_DAYS = 1_000, 10, 6.0, 2
#: Windows per synthetic patient, and positive windows of an episode (the label horizon).
WINDOWS, HORIZON = 200, 50


def _groups(n: int) -> dict[str, dict[str, str]]:
    tones = (1, 3, 5)
    return {f"pt-{i}": subgroups("F" if (i // 9) % 2 else "M", 60 + ((i // 3) % 3) * 10, tones[i % 3])
            for i in range(n)}


def _episodes(groups: dict[str, dict[str, str]], seed: int,
              scale: dict[str, float] | None = None) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Labelled windows of patients who each have at most one episode, with a calibrated score.

    Patient risk ``q`` is logit-normal around 0.3; an episode (probability ``q``) makes the
    last ``HORIZON`` windows positive; each window scores ``q * HORIZON / WINDOWS`` (with noise),
    so expected positive windows equal observed ones. ``scale`` multiplies the scores of a
    skin-tone group: below 1 under-predicts for it (what a device over-reading SpO2 does to a
    score leaning on SpO2), above 1 over-predicts.
    """
    rng = np.random.default_rng(seed)
    pids = list(groups)
    q = 1 / (1 + np.exp(-rng.normal(np.log(0.3 / 0.7), 1.0, len(pids))))
    episode = rng.random(len(pids)) < q
    y = np.zeros((len(pids), WINDOWS), dtype=bool)
    y[episode, WINDOWS - HORIZON:] = True
    noise = rng.lognormal(-0.02, 0.2, (len(pids), WINDOWS))
    factor = np.array([(scale or {}).get(groups[pid]["skin_tone"], 1.0) for pid in pids])
    p = np.minimum((q * factor * HORIZON / WINDOWS)[:, None] * noise, 1.0)
    return [pid for pid in pids for _ in range(WINDOWS)], y.ravel(), p.ravel()


def _monitor(groups: dict[str, dict[str, str]], pids: list[str], y: np.ndarray, p: np.ndarray,
             **policy: object) -> FairnessMonitor:
    mon = FairnessMonitor(groups, ("model",), {"model": 0.1}, policy=FairnessPolicy(**policy))
    mon.update_many(pids, y, {"model": p})
    return mon


def test_subgroup_helpers() -> None:
    assert [age_band(a) for a in (40, 70, 90)] == ["<65", "65-74", "75+"]
    assert [skin_tone_group(t) for t in range(1, 7)] == ["I-II", "I-II", "III-IV", "III-IV", "V-VI", "V-VI"]
    with pytest.raises(ValueError):
        skin_tone_group(7)
    patients = population(CohortConfig(patients=50, seed=1))
    groups = {p.patient_id: subgroups(p.sex, p.age_years, p.skin_tone) for p in patients}
    assert {g["skin_tone"] for g in groups.values()} == {"I-II", "III-IV", "V-VI"}


@pytest.mark.parametrize("seed", range(10))
def test_an_under_predicted_group_is_flagged_and_a_fair_scorer_is_not(seed: int) -> None:
    """The statistic on synthetic data with a known truth, over seeds: halving one group's
    scores (about 150 patients with an episode per group) is flagged on calibration and
    episode sensitivity, naming that group and nothing else; the same cohort unbiased flags nothing."""
    groups = _groups(1_500)
    biased = _monitor(groups, *_episodes(groups, seed, {"V-VI": 0.5}))
    assert {(f["metric"], f["attribute"], f["low_group"]) for f in biased.flagged()} == {
        ("calibration", "skin_tone", "V-VI"), ("sensitivity", "skin_tone", "V-VI")}
    assert all(f["low_groups"] == ["V-VI"] for f in biased.flagged())
    fair = _monitor(groups, *_episodes(groups, seed))
    assert fair.flagged() == [] and fair.check(0) == []
    assert len(fair.gaps()) == 6  # both gates on all three attributes were evaluated


def test_events_are_raised_once_per_open_gap_and_again_when_it_names_a_new_group() -> None:
    groups = _groups(1_500)
    mon = _monitor(groups, *_episodes(groups, 1, {"V-VI": 0.5}))
    assert mon.check(100) == []  # flagged once: not yet confirmed
    events = mon.check(123)
    assert {e.kind for e in events} == {"fairness"} and len(events) == 2 and events[0].ts_ms == 123
    assert mon.check(456) == []  # still open: raised once
    pids, y, p = _episodes(groups, 8, {"III-IV": 0.3, "V-VI": 0.5})
    mon.update_many(pids, y, {"model": p})
    assert mon.check(789) == []  # III-IV flagged once: not yet confirmed
    again = mon.check(790)
    assert again and all("III-IV" in e.details["low_groups"] for e in again)
    assert mon.check(999) == []


class _Scripted(FairnessMonitor):
    """A monitor whose gaps at each check are scripted: the hysteresis alone under test."""

    script: list[list[str]] = []

    def gaps(self) -> list[dict[str, object]]:
        named = self.script.pop(0)
        return [{"scorer": "model", "metric": "calibration", "attribute": "skin_tone", "low_groups": named,
                 "flagged": bool(named)}]


@pytest.mark.parametrize(("flagged", "raised"), [
    ([["V-VI"], [], ["V-VI"], []], []),  # blips on single checks: nothing
    ([["V-VI"], ["V-VI"], ["V-VI"]], [1]),  # confirmed on the second check, raised once
    ([["V-VI"], ["V-VI", "III-IV"], ["V-VI", "III-IV"], ["III-IV"]], [1, 2]),  # a new group, once confirmed
    ([["V-VI"], ["V-VI"], [], ["V-VI"], ["V-VI"]], [1, 4]),  # closed, then opened again
])
def test_a_gap_raises_an_event_once_flagged_on_consecutive_checks(flagged: list[list[str]], raised: list[int]) -> None:
    """Hysteresis against repeated looks: a group must be flagged on ``confirm_checks`` checks in a row."""
    mon = _Scripted({}, ("model",), {"model": 0.5})
    mon.script = [list(f) for f in flagged]
    assert [t for t in range(len(flagged)) if mon.check(t)] == raised
    once = _Scripted({}, ("model",), {"model": 0.5}, policy=FairnessPolicy(confirm_checks=1))
    once.script = [["V-VI"]]
    assert len(once.check(0)) == 1
    with pytest.raises(ValueError, match="confirm_checks"):
        FairnessPolicy(confirm_checks=0)


def test_a_group_is_named_for_fewer_predicted_events_not_more() -> None:
    """Gaps are relative to the best-served group: scoring V-VI twice too high makes it the
    reference, and the others — whose events are predicted half as well — are the ones named.
    (For a ranking score, histogram-calibrated over everybody, the two are the same thing.)"""
    groups = _groups(1_500)
    mon = _monitor(groups, *_episodes(groups, 2, {"V-VI": 2.0}))
    cal = next(g for g in mon.gaps() if g["metric"] == "calibration" and g["attribute"] == "skin_tone")
    assert cal["high_group"] == "V-VI" and "V-VI" not in cal["low_groups"]
    assert all(g["low_group"] != "V-VI" for g in mon.gaps() if g["attribute"] == "skin_tone")


def test_every_affected_group_is_listed() -> None:
    groups = _groups(1_500)
    mon = _monitor(groups, *_episodes(groups, 3, {"III-IV": 0.6, "V-VI": 0.4}))
    cal = next(f for f in mon.flagged() if f["metric"] == "calibration")
    assert cal["attribute"] == "skin_tone" and cal["high_group"] == "I-II"
    assert cal["low_group"] == "V-VI" and cal["low_groups"] == ["V-VI", "III-IV"]


def test_small_groups_are_not_compared() -> None:
    groups = _groups(300)
    mon = _monitor(groups, *_episodes(groups, 3, {"V-VI": 0.5}), min_positives=10_000, min_episodes=1_000)
    assert mon.gaps() == []


def test_ranking_scores_are_histogram_calibrated_before_the_calibration_gate() -> None:
    """NEWS2-like scores are not probabilities: a score three times too high for everybody is fair,
    one that under-scores a group is not."""
    groups = _groups(1_500)
    pids, y, p = _episodes(groups, 4)
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
    pids, y, p = _episodes(groups, 5)
    mon = _monitor(groups, pids, y, p)
    rows = mon.table()
    assert {(r.attribute, r.group) for r in rows} == {
        ("sex", "F"), ("sex", "M"), ("age_band", "<65"), ("age_band", "65-74"), ("age_band", "75+"),
        ("skin_tone", "I-II"), ("skin_tone", "III-IV"), ("skin_tone", "V-VI")}
    assert sum(r.windows for r in rows if r.attribute == "sex") == 30 * WINDOWS
    episodes = {pid for pid, hit in zip(pids, y.tolist()) if hit}
    assert sum(r.episodes for r in rows if r.attribute == "sex") == len(episodes)
    detected = {pid for pid, hit, score in zip(pids, y.tolist(), p.tolist()) if hit and score >= 0.1}
    v = next(r for r in rows if r.group == "V-VI")
    in_group = {pid for pid in episodes if groups[pid]["skin_tone"] == "V-VI"}
    assert v.episode_sensitivity == pytest.approx(len(in_group & detected) / len(in_group))


def test_a_gap_from_a_handful_of_patients_is_not_credible() -> None:
    """Two patients' episodes make a hundred positive windows, but they are two observations."""
    groups = _groups(1_500)
    pids, y, p = _episodes(groups, 6, {"V-VI": 0.5})
    few = {pid for pid in groups if int(pid[3:]) >= 18}
    y = y & ~np.isin(pids, sorted(few))  # episodes of the first 18 patients only: 6 per skin tone
    policy = {"min_positives": 50, "min_episodes": 2}
    mon = _monitor(groups, pids, y, p, **policy)
    assert 0 < mon.positive_patients("skin_tone", "V-VI") <= 6
    assert mon.gaps() and not any(g["credible"] for g in mon.gaps() if g["attribute"] == "skin_tone")
    assert mon.flagged() == [] and mon.check(0) == []
    loose = _monitor(groups, pids, y, p, z=0.0, **policy)
    assert loose.flagged()  # without the credibility gate the same noise would page


def test_an_inherent_baseline_gap_is_reported_not_flagged() -> None:
    groups = _groups(1_500)
    ages = {pid: g["age_band"] for pid, g in groups.items()}
    pids, y, p = _episodes(groups, 7)
    old = np.array([ages[pid] == "65-74" for pid in pids])
    levels = np.round(np.minimum(np.where(old, p / 4, p) * 3, 1) * 20) / 20  # under-scores one age band, like NEWS2 the over-75s
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
    with pytest.raises(ValueError, match="min_episodes"):
        FairnessPolicy(min_episodes=0)


@pytest.mark.skipif(os.environ.get("VITALS_SLOW_TESTS") != "1",
                    reason="two evaluate runs of 1,000 patients x 10 days (11 min in all on 2 busy cores); "
                           "set VITALS_SLOW_TESTS=1")
@pytest.mark.timeout(1_800)
def test_simulated_spo2_overreading_is_flagged_only_when_switched_on() -> None:
    """Issue 5's acceptance: with the simulator's SpO2 over-reading in darker skin on, the
    monitor flags skin tone V-VI and raises an ops event; with it off, it flags nothing and
    raises nothing. The two runs are a paired counterfactual (same cohort, physiology and noise;
    only the measured SpO2 differs). Measured at seeds 42, 7 and 1 (docs/models.md, "Fairness",
    item 2): the flags at the end hold on all three; this test runs seed 42."""
    from stream.evaluate_cohort import evaluate_cohort
    from stream.evaluate_loop import EvaluateOptions
    from simulators.deterioration import Incidence
    from kernel.settings import Settings

    results = {}
    for bias in (True, False):
        config = CohortConfig(patients=FAIRNESS_PATIENTS, seed=42, duration_ms=FAIRNESS_DAYS * 86_400_000,
                              spo2_skin_bias=bias, incidence=Incidence().scaled(FAIRNESS_INCIDENCE))
        results[bias] = evaluate_cohort(config, EvaluateOptions(warmup_ms=FAIRNESS_WARMUP_DAYS * 86_400_000),
                                        Settings())
    on = results[True].fairness_flags
    assert any(f["scorer"] == "news2" and f["attribute"] == "skin_tone" and "V-VI" in f["low_groups"]
               for f in on)
    # Only skin tone, and only the groups the simulator biases (III-IV by 1 point, V-VI by 2.5).
    assert all(f["attribute"] == "skin_tone" and set(f["low_groups"]) <= {"III-IV", "V-VI"}
               for f in on)
    assert results[True].fairness_events
    assert results[False].fairness_flags == []
    # Each daily look tests at z = 1.96 (no correction for repeated looks), but an event needs
    # the gap on two checks in a row: on this seed no early gap lasts that long. (On seed 1 one
    # does: NEWS2 by sex, two days, in both runs, closed by the end; docs/models.md.)
    assert results[False].fairness_events == []
