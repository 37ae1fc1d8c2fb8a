"""The honest protocol: the candidate grid, the selection rule, the intervals, the subgroup split, end to end."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel.settings import Settings
from models.labelling import Outcome
from models.risk import CONDITIONS
from stream.alert_tuning import (Candidate, CohortTallies, PatientTally, Target, candidate_grid, check_seeds,
                                 operating_point, run_protocol, select_policy, subgroup_burden)
from stream.alerts.rules import AlertPolicy
from stream.cli import main
from stream.evaluate import run_protocol_evaluate
from stream.evaluate_loop import DEFAULT_CANDIDATE, EvaluateOptions, EvaluationCore

GRID = candidate_grid(CONDITIONS)
SEXES, AGES, TONES = ("F", "M"), ("<65", "65-74", "75+"), ("I-II", "III-IV", "V-VI")


def _cohort(seed: int, rng: np.random.Generator, n: int, candidates: tuple[Candidate, ...] = GRID) -> CohortTallies:
    """A synthetic cohort: each candidate's tally drawn at random (a lower entry: more pages, more detections)."""
    onsets = rng.poisson(0.3, n)
    by_candidate = {}
    for c in candidates:
        pages = rng.poisson(rng.uniform(0.05, 1.5), n)
        by_candidate[c.name] = PatientTally.of(pages=pages, true_pages=rng.binomial(pages, rng.uniform(0.2, 0.8)),
                                               onsets=onsets, detected=rng.binomial(onsets, rng.uniform(0.4, 1.0)),
                                               leads_h=rng.uniform(0, 12, int(onsets.sum())).tolist())
    groups = {"sex": tuple(rng.choice(SEXES, n)), "age_band": tuple(rng.choice(AGES, n)),
              "skin_tone": tuple(rng.choice(TONES, n))}
    return CohortTallies(seed, tuple(f"pt-{seed}-{i}" for i in range(n)), 10.0, groups, by_candidate)


def test_the_grid_holds_real_alert_policies_and_the_default_one() -> None:
    assert len({c.name for c in GRID}) == len(GRID) >= 24
    assert all(isinstance(c.policy, AlertPolicy) and c.policy.data_stopped_ms is None for c in GRID)
    default = next(c for c in GRID if c.name.startswith("base0.6-slow0.6-for2"))
    assert all(default.policy.threshold(f"risk_high:{h}") == AlertPolicy().risk for h in CONDITIONS)
    assert default.heads == CONDITIONS
    silent = next(c for c in GRID if "slowoff" in c.name)
    assert silent.heads == ("any", "af_episode")
    slow = next(c for c in GRID if c.name.startswith("base0.5-slow0.8-for10"))
    assert slow.policy.threshold("risk_high:infection").enter == 0.8
    assert slow.policy.threshold("risk_high:any").for_ms == 600_000
    assert slow.policy.threshold("risk_high:any").exit == pytest.approx(0.4)


def test_the_rule_takes_the_most_sensitive_candidate_that_meets_ppv_and_the_page_budget() -> None:
    def tally(pages: int, true: int, detected: int) -> PatientTally:
        return PatientTally.of(pages=[pages], true_pages=[true], onsets=[10], detected=[detected])

    grid = GRID[:4]
    # PPV 0.6/sens 0.7; PPV 0.55/sens 0.9; PPV 0.4/sens 1.0 (below target); PPV 0.55/sens 0.9 but fewer pages
    values = (tally(10, 6, 7), tally(20, 11, 9), tally(30, 12, 10), tally(18, 10, 9))
    cohort = CohortTallies(1, ("a",), 100.0, {}, dict(zip((c.name for c in grid), values, strict=True)))
    chosen = select_policy([cohort], grid)
    assert chosen.feasible and chosen.chosen == grid[3]  # same sensitivity, higher PPV (0.556 > 0.55)
    # a page budget excludes the busy ones
    tight = select_policy([cohort], grid, Target(pages_per_patient_day=0.15))
    assert tight.chosen == grid[0]
    # nobody reaches PPV 0.7: the nearest to the target, min(PPV / 0.7, sens / 0.8)
    near = select_policy([cohort], grid, Target(ppv=0.7))
    assert not near.feasible and near.chosen == grid[0]  # min(0.857, 0.875) beats min(0.79, 1.12)
    with pytest.raises(ValueError, match="tuning cohort"):
        select_policy([], grid)
    with pytest.raises(ValueError, match="candidate"):
        select_policy([cohort], [])


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 3), st.integers(1, 3))
def test_the_choice_never_depends_on_a_test_cohort(seed: int, n_tune: int, n_test: int) -> None:
    """Shuffling the test cohorts' patients, or replacing their data altogether, never changes the choice."""
    rng = np.random.default_rng(seed)
    grid = GRID[:8]
    tune = [_cohort(s, rng, 30, grid) for s in range(n_tune)]
    test = [_cohort(100 + s, rng, 30, grid) for s in range(n_test)]
    other = [_cohort(100 + s, rng, 30, grid) for s in range(n_test)]
    base = run_protocol(tune, test, grid, resamples=0)
    assert base.selection.chosen == select_policy(tune, grid).chosen
    for testing in ([c.permuted(rng) for c in test], other, test[::-1]):
        again = run_protocol(tune, testing, grid, resamples=0)
        assert again.selection.chosen == base.selection.chosen
        assert [p.as_dict() for p in again.selection.tuning] == [p.as_dict() for p in base.selection.tuning]
    # the report is on the test cohorts: their own counts, not the tuning cohorts'
    name = base.selection.chosen.name
    assert base.test_pooled.pages == sum(int(c.by_candidate[name].pages.sum()) for c in test)
    assert base.test_pooled.seeds == tuple(c.seed for c in test)
    assert [p.seeds for p in base.test_per_seed] == [(c.seed,) for c in test]
    summary = base.as_dict()
    assert summary["tune_seeds"] == list(range(n_tune)) and summary["test_seeds"] == [100 + s for s in range(n_test)]


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 60), st.integers(1, 3))
def test_each_attributes_groups_split_the_total(seed: int, n: int, cohorts: int) -> None:
    rng = np.random.default_rng(seed)
    grid = GRID[:1]
    pool = [_cohort(s, rng, n, grid) for s in range(cohorts)]
    total = operating_point(pool, grid[0].name, resamples=0)
    rows = subgroup_burden(pool, grid[0].name, resamples=0)
    assert {r.attribute for r in rows} == {"sex", "age_band", "skin_tone"}
    for attribute in ("sex", "age_band", "skin_tone"):
        parts = [r.point for r in rows if r.attribute == attribute]
        for key in ("patients", "pages", "true_pages", "onsets", "detected"):
            assert sum(getattr(p, key) for p in parts) == getattr(total, key)
        assert sum(p.patient_days for p in parts) == pytest.approx(total.patient_days)


def test_bootstrap_intervals_over_patients_cover_the_truth() -> None:
    """Patients of unequal page rates (pages cluster in patients): the 95 % intervals of pages per patient-day,
    PPV and sensitivity each cover the true value in about 95 % of synthetic cohorts."""
    rng = np.random.default_rng(7)
    true_rate, true_ppv, true_sens = 0.3 * 2.0 / 10.0, 0.4, 0.7  # gamma mean 0.6 pages over 10 days
    hits = np.zeros(3)
    reps = 200
    for rep in range(reps):
        n = 150
        lam = rng.gamma(0.5, 1.2, n)  # very unequal patients: a few page a lot
        pages = rng.poisson(lam * 10 * 0.1)
        onsets = rng.poisson(0.4, n)
        tally = PatientTally.of(pages=pages, true_pages=rng.binomial(pages, true_ppv), onsets=onsets,
                                detected=rng.binomial(onsets, true_sens))
        cohort = CohortTallies(rep, tuple(str(i) for i in range(n)), 10.0, {}, {"c": tally})
        p = operating_point([cohort], "c", resamples=400, rng_seed=rep)
        for i, (est, truth) in enumerate(((p.pages_per_patient_day, true_rate), (p.ppv, true_ppv),
                                          (p.sensitivity, true_sens))):
            hits[i] += est.low <= truth <= est.high
    coverage = hits / reps
    assert ((coverage >= 0.88) & (coverage <= 0.99)).all(), coverage


def test_an_interval_is_nan_when_its_rate_is_undefined() -> None:
    tally = PatientTally.of(pages=[0, 0], true_pages=[0, 0], onsets=[0, 0], detected=[0, 0])
    p = operating_point([CohortTallies(1, ("a", "b"), 1.0, {}, {"c": tally})], "c", resamples=50)
    assert math.isnan(p.ppv.value) and math.isnan(p.ppv.low) and p.ppv.as_dict() == {"value": None,
                                                                                     "ci95": [None, None]}
    assert p.pages_per_patient_day.value == 0.0
    with pytest.raises(ValueError, match="no tally"):
        operating_point([CohortTallies(1, ("a", "b"), 1.0, {}, {"c": tally})], "other")
    with pytest.raises(ValueError, match="true_pages <= pages"):
        PatientTally.of(pages=[1], true_pages=[2], onsets=[0], detected=[0])


@pytest.mark.parametrize(("tune", "test", "message"), [
    ((), (3,), "--tune-seeds needs at least one seed"),
    ((1,), (), "--test-seeds needs at least one seed"),
    ((1, -2), (3,), "--tune-seeds takes seeds >= 0, got -2"),
    ((1, 1), (3,), "--tune-seeds repeats a seed: 1, 1"),
    ((1, 2), (2, 3), "share seed 2"),
])
def test_bad_seed_lists_are_refused(tune: tuple[int, ...], test: tuple[int, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_seeds(tune, test)
    err = io.StringIO()
    assert run_protocol_evaluate(Settings(), 10, 1.0, tune, test, "logreg", True, stdout=io.StringIO(),
                                 stderr=err) == 2
    assert err.getvalue().startswith("vitalrisk: evaluate: ") and err.getvalue().count("\n") == 1


@pytest.mark.parametrize("argv", [
    ["evaluate", "--tune-seeds", "1", "--test-seeds", "3", "--seed", "4"],
    ["evaluate", "--tune-seeds", "1,x", "--test-seeds", "3"],
    ["evaluate", "--test-seeds", "3"],
])
def test_bad_protocol_arguments_are_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        raise SystemExit(main(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("vitalrisk: ") and err.count("\n") == 1 and "Traceback" not in err


def _random_core(seed: int) -> tuple[EvaluationCore, int]:
    """A core whose score series are random walks and a third of whose patients have an onset."""
    rng = np.random.default_rng(seed)
    groups = {f"pt-{i}": {"sex": SEXES[i % 2], "age_band": AGES[i % 3], "skin_tone": TONES[(i // 2) % 3]}
              for i in range(12)}
    core = EvaluationCore(EvaluateOptions(warmup_ms=0, burden_thresholds=()), start_ms=0, groups=groups)
    steps = 2_000
    for i, pid in enumerate(groups):
        if i == 11:
            continue  # a patient with no score at all still counts in patient-days
        walk = [1 / (1 + np.exp(-np.cumsum(rng.normal(0, 0.4, steps)) / 3 + 2)) for _ in range(5)]
        core.series.add([pid] * steps, np.arange(1, steps + 1) * 300_000, walk[0], np.zeros(steps), np.zeros(steps),
                        rng.random(steps) < 0.02, walk[1:])
        if i % 3 == 0:
            core.outcomes.append(Outcome(pid, "infection", onset_ms=int(rng.integers(100, steps)) * 300_000, t_ms=0))
    return core, (steps + 1) * 300_000


def test_patient_tallies_add_up_to_the_alert_burden() -> None:
    """The default policy's per-patient tallies sum to the burden report's model row; so does the grid's copy."""
    core, end = _random_core(4)
    default_grid = next(c for c in GRID if c.name.startswith("base0.6-slow0.6-for2"))
    tallies = core.tallies((core.default_candidate(), default_grid), seed=9, end_ms=end)
    model = next(b for b in core.alert_burden(12, end / 86_400_000, end) if b.scorer == "model")
    assert len(tallies.patient_ids) == 12 and tallies.seed == 9
    for name in (DEFAULT_CANDIDATE, default_grid.name):
        p = operating_point([tallies], name, resamples=0)
        assert (p.pages, p.true_pages, p.onsets, p.detected) == (model.pages, model.true_pages, model.outcomes,
                                                                   model.detected)
        assert p.pages_per_patient_day.value == pytest.approx(model.pages_per_patient_day)
        assert p.median_lead_h == pytest.approx(model.median_lead_h, nan_ok=True)
    assert model.pages > 10
    assert tallies.groups["sex"][:2] == ("F", "M")


def test_the_protocol_end_to_end_through_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--tune-seeds", "1,2", "--test-seeds", "3", "--patients", "60", "--days", "2",
                 "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    protocol = report["protocol"]
    assert protocol["tune_seeds"] == [1, 2] and protocol["test_seeds"] == [3]
    assert [(c["seed"], c["role"]) for c in report["cohorts"]] == [(1, "tune"), (2, "tune"), (3, "test")]
    assert protocol["test_pooled"]["seeds"] == [3] and protocol["tuning_chosen"]["seeds"] == [1, 2]
    assert protocol["chosen"]["name"] in {c.name for c in GRID}
    assert len(protocol["tuning_candidates"]) == len(GRID)
    assert {(r["attribute"], r["group"]) for r in protocol["test_subgroups"]} >= {("sex", "F"), ("skin_tone", "V-VI")}
    assert sum(r["patients"] for r in protocol["test_subgroups"] if r["attribute"] == "sex") == 60
    assert all("alert_burden_by_subgroup" in c["summary"] for c in report["cohorts"])
    assert "cohort seed 3 done" in captured.err
