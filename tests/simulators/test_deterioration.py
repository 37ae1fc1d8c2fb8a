"""Deterioration episodes: incidence, ground truth, outcomes and the prodrome's drift."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulators.cohort import MS_PER_DAY, CohortConfig, SimulatedMessage, episodes, population, simulate
from simulators.deterioration import (
    EPISODE_KINDS,
    MS_PER_YEAR,
    TRAJECTORIES,
    Episode,
    EpisodeEffects,
    Incidence,
    plan_episodes,
)
from simulators.devices import DeviceSchedule
from simulators.population import sample_cohort
from tests.simulators.helpers import outcome_problems, within

HOUR = 3_600_000
MINUTE = 60_000


def _expected(config: CohortConfig) -> dict[str, float]:
    """Expected episodes of each kind: patient-years at risk times the configured rate."""
    years = config.duration_ms / MS_PER_YEAR
    patients = population(config)
    out = {}
    for kind in EPISODE_KINDS:
        condition = TRAJECTORIES[kind].condition
        at_risk = sum(1 for p in patients if condition is None or p.has(condition))
        out[kind] = at_risk * years * config.incidence.rate(kind)
    return out


@pytest.mark.parametrize(
    "incidence",
    [Incidence(), Incidence(hf_decompensation=1.0, copd_exacerbation=6.0, infection=0.2,
                            af_episode=20.0, self_resolving_fraction=0.5)],  # fmt: skip
    ids=["default", "custom"],
)
def test_incidence_per_patient_year_matches_configuration(incidence: Incidence) -> None:
    """Counts are Poisson: observed within 5 standard deviations of patient-years x rate."""
    config = CohortConfig(patients=4_000, seed=23, duration_ms=365 * MS_PER_DAY, incidence=incidence)
    planned = episodes(config)
    expected = _expected(config)
    for kind in EPISODE_KINDS:
        observed = sum(e.kind == kind for e in planned)
        assert within(observed, expected[kind], 0.0), (kind, observed, expected[kind])
    resolved = sum(e.resolved_without_event for e in planned)
    f = incidence.self_resolving_fraction
    assert within(resolved, f * len(planned), f)
    start, end = config.start_ms, config.start_ms + config.duration_ms
    assert all(start <= e.onset_ms < end for e in planned)


def test_default_incidence_gives_50_to_150_episodes_in_1000_patients_over_14_days() -> None:
    for seed in range(8):
        config = CohortConfig(patients=1_000, seed=seed, duration_ms=14 * MS_PER_DAY)
        assert 50 <= len(episodes(config)) <= 150
        assert 60 < sum(_expected(config).values()) < 140


def test_episodes_are_consistent_and_only_for_patients_at_risk() -> None:
    config = CohortConfig(patients=500, seed=2, duration_ms=60 * MS_PER_DAY,
                          incidence=Incidence().scaled(5.0))  # fmt: skip
    patients = {p.patient_id: p for p in population(config)}
    planned = episodes(config)
    assert planned == sorted(planned, key=lambda e: (e.onset_ms, e.patient_id, e.kind))
    for e in planned:
        condition = TRAJECTORIES[e.kind].condition
        assert condition is None or patients[e.patient_id].has(condition)
        assert e.prodrome_start_ms < e.onset_ms <= e.recovery_start_ms < e.end_ms
        lo, hi = TRAJECTORIES[e.kind].prodrome_h
        assert lo * HOUR <= e.onset_ms - e.prodrome_start_ms <= hi * HOUR
        assert e.prodrome_start_ms <= e.onset_ms - 6 * HOUR  # at least six hours of warning
        if e.resolved_without_event:
            assert e.recovery_start_ms == e.onset_ms and e.outcome() is None
    assert any(e.resolved_without_event for e in planned)


def test_changing_one_rate_leaves_the_other_kinds_alone() -> None:
    base = CohortConfig(patients=300, seed=9, duration_ms=30 * MS_PER_DAY)
    more_af = CohortConfig(patients=300, seed=9, duration_ms=30 * MS_PER_DAY,
                           incidence=Incidence(af_episode=50.0))  # fmt: skip
    assert [e for e in episodes(base) if e.kind != "af_episode"] == [
        e for e in episodes(more_af) if e.kind != "af_episode"
    ]


Series = dict[str, dict[str, dict[int, float]]]


def _series(config: CohortConfig) -> tuple[Series, list[SimulatedMessage]]:
    """patient -> metric -> {minute start: value}, and the outcome events, of a stream.

    Consumed as it streams (keeping a few hundred thousand message dicts alive would make
    the garbage collector the slowest part of the test)."""
    out: Series = defaultdict(lambda: defaultdict(dict))
    outcomes = []
    for message in simulate(config):
        if message.kind == "outcome":
            outcomes.append(message)
            continue
        payload = message.payload
        assert isinstance(payload, dict)
        readings = payload["readings"]
        minute = next(r["t"] for r in readings if r["metric"] == "step_count")
        per_patient = out[payload["patient_id"]]
        for r in readings:
            per_patient[r["metric"]][minute] = r["value"]
    return out, outcomes


@pytest.fixture(scope="module")
def paired() -> tuple[CohortConfig, Series, Series, list[SimulatedMessage]]:
    """The same cohort with and without episodes: the same noise, so the difference is the
    episodes' effect (a counterfactual pair)."""
    kwargs = dict(patients=40, seed=4, duration_ms=36 * HOUR, spo2_skin_bias=False,
                  devices=DeviceSchedule(heart_rate_interval_ms=60_000, bp_cuff_fraction=0.0))  # fmt: skip
    with_episodes = CohortConfig(**kwargs, incidence=Incidence().scaled(100.0))
    without = CohortConfig(**kwargs, incidence=Incidence.none())
    a, outcomes = _series(with_episodes)
    b, none = _series(without)
    assert none == []
    return with_episodes, a, b, outcomes


def test_outcomes_are_published_at_onset_for_episodes_that_do_not_resolve(paired) -> None:
    config, _, _, outcomes = paired
    truth = [e for e in episodes(config) if not e.resolved_without_event]
    assert len(outcomes) == len(truth) > 10
    for message, episode in zip(sorted(outcomes, key=lambda m: (m.sent_ms, m.key)), truth):
        assert outcome_problems(message.payload) == []
        assert message.payload == episode.outcome()
        assert message.key == episode.patient_id
        assert message.sent_ms == episode.onset_ms > episode.prodrome_start_ms


def test_nothing_changes_before_the_prodrome_starts(paired) -> None:
    config, a, b, _ = paired
    first_drift: dict[str, int] = {}
    for e in episodes(config):
        first_drift[e.patient_id] = min(first_drift.get(e.patient_id, e.prodrome_start_ms), e.prodrome_start_ms)
    checked = 0
    for pid in a:
        cut = first_drift.get(pid, config.start_ms + config.duration_ms)
        for metric, values in a[pid].items():
            for minute, value in values.items():
                if minute + MINUTE <= cut:
                    assert b[pid][metric][minute] == value
                    checked += 1
    assert checked > 20_000, checked


# Which way each kind moves which measured vital before onset (+1 up, -1 down).
DIRECTIONS = {
    "hf_decompensation": {"heart_rate": +1, "respiratory_rate": +1, "oxygen_saturation": -1, "step_count": -1},
    "copd_exacerbation": {"heart_rate": +1, "respiratory_rate": +1, "oxygen_saturation": -1},
    "infection": {"heart_rate": +1, "respiratory_rate": +1, "body_temperature": +1},
    "af_episode": {"heart_rate": +1},
}


def test_vitals_drift_the_right_way_before_onset(paired) -> None:
    """In the last part of the prodrome (before onset), each kind's vitals have moved in the
    expected direction compared with the same patient and minutes without the episode."""
    config, a, b, _ = paired
    seen = defaultdict(int)
    for e in episodes(config):
        window = min(3 * HOUR, (e.onset_ms - e.prodrome_start_ms) // 2)
        lo, hi = e.onset_ms - window, e.onset_ms
        if e.resolved_without_event or lo < config.start_ms:
            continue
        for metric, sign in DIRECTIONS[e.kind].items():
            minutes = [t for t in a[e.patient_id][metric] if lo <= t < hi and t in b[e.patient_id][metric]]
            assert len(minutes) >= window // (6 * MINUTE)
            diff = np.mean([a[e.patient_id][metric][t] - b[e.patient_id][metric][t] for t in minutes])
            if metric == "step_count":
                assert diff <= 0, (e, metric, diff)  # fewer steps (or the same, asleep)
            else:
                assert sign * diff > 0.3, (e, metric, diff)
        seen[e.kind] += 1
    assert set(seen) == set(EPISODE_KINDS), seen


def test_deteriorating_patients_move_away_from_their_baseline(paired) -> None:
    config, series, _, _ = paired
    baseline = {p.patient_id: p.baseline for p in population(config)}
    checked = 0
    for e in episodes(config):
        if e.resolved_without_event or e.onset_ms - 3 * HOUR < config.start_ms:
            continue
        last = [t for t in series[e.patient_id]["body_temperature"] if e.onset_ms - 2 * HOUR <= t < e.onset_ms]
        if e.kind == "infection":
            temps = [series[e.patient_id]["body_temperature"][t] for t in last]
            assert np.mean(temps) > baseline[e.patient_id].body_temperature_c + 0.3
            checked += 1
        if e.kind == "copd_exacerbation":
            spo2 = [v for t, v in series[e.patient_id]["oxygen_saturation"].items()
                    if e.onset_ms - 3 * HOUR <= t < e.onset_ms]  # fmt: skip
            assert np.mean(spo2) < baseline[e.patient_id].spo2_pct
            checked += 1
    assert checked >= 3


def test_af_episode_makes_heart_rate_fast_and_irregular() -> None:
    config = CohortConfig(patients=1, seed=0, duration_ms=MS_PER_DAY)
    pid = population(config)[0].patient_id
    onset = config.start_ms + 12 * HOUR
    episode = Episode(pid, "af_episode", onset - 8 * HOUR, onset, onset + 4 * HOUR,
                      onset + 5 * HOUR, 1.0, False)  # fmt: skip
    walker = EpisodeEffects([episode], {pid: 0}, 1)
    before = walker.at(onset - 9 * HOUR)
    prodrome = walker.at(onset - HOUR)
    during = walker.at(onset + HOUR)
    after = walker.at(onset + 6 * HOUR)
    assert not before.any() and not after.any()
    assert 0 < prodrome[0, 0] < during[0, 0]  # heart rate up a little, then a lot
    assert during[0, 0] >= 40 and during[0, 7] >= 15  # fast and irregular


@settings(max_examples=25, deadline=None)
@given(
    kind=st.sampled_from(EPISODE_KINDS),
    prodrome_h=st.floats(1, 72),
    acute_h=st.floats(0, 48),
    severity=st.floats(0.5, 1.5),
    resolves=st.booleans(),
)
def test_effect_rises_through_the_prodrome_and_is_gone_at_the_end(
    kind: str, prodrome_h: float, acute_h: float, severity: float, resolves: bool,
) -> None:  # fmt: skip
    onset = 100 * HOUR
    acute = 0 if resolves else int(acute_h * HOUR)
    e = Episode("pt-x", kind, onset - int(prodrome_h * HOUR), onset, onset + acute,
                onset + acute + 10 * HOUR, severity, resolves)  # fmt: skip
    walker = EpisodeEffects([e], {"pt-x": 0}, 1)
    column = 0  # heart rate rises in every kind
    times = np.linspace(e.prodrome_start_ms - HOUR, e.end_ms + HOUR, 60)
    levels = [walker.at(t)[0, column] for t in times]
    rising = [lv for t, lv in zip(times, levels) if t < onset]
    assert levels[0] == 0.0 and levels[-1] == 0.0
    assert rising == sorted(rising) and rising[-1] > 0
    assert max(levels) > 0


def test_effects_walker_rejects_going_back_in_time() -> None:
    walker = EpisodeEffects([], {}, 1)
    walker.at(10.0)
    with pytest.raises(ValueError, match="non-decreasing"):
        walker.at(5.0)


def test_plan_rejects_empty_period() -> None:
    with pytest.raises(ValueError, match="duration_ms must be positive"):
        plan_episodes(sample_cohort(1, seed=0), Incidence(), seed=0, start_ms=0, duration_ms=0)


# Expected sign of each kind's drift (at onset) on HR, RR, SpO2, temperature, systolic,
# diastolic, activity loss and HR irregularity, from the clinical picture of each.
SIGNS = {
    "hf_decompensation": {0: +1, 1: +1, 2: -1, 6: +1},
    "copd_exacerbation": {1: +1, 2: -1, 0: +1, 6: +1},
    "infection": {3: +1, 0: +1, 4: -1, 5: -1, 1: +1},
    "af_episode": {0: +1, 7: +1},
}


@pytest.mark.parametrize("kind", EPISODE_KINDS)
def test_each_kind_moves_its_vitals_the_clinical_way_at_onset(kind: str) -> None:
    onset = 50 * HOUR
    e = Episode("pt-x", kind, onset - 10 * HOUR, onset, onset + 5 * HOUR, onset + 9 * HOUR,
                1.0, False)  # fmt: skip
    at_onset = EpisodeEffects([e], {"pt-x": 0}, 1).at(onset + HOUR)[0]
    for column, sign in SIGNS[kind].items():
        assert np.sign(at_onset[column]) == sign, (kind, column, at_onset[column])
