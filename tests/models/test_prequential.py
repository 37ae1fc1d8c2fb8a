"""Prequential evaluation: metric sketches against direct computation, River parity, drift."""

from __future__ import annotations

import datetime as dt
import math
import random

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from river import evaluate, metrics
from scipy.stats import binomtest

from models.prequential import PrequentialEvaluator, RollingSketch, ScoreSketch, wilson_interval
from models.labelling import DelayedLabeller, Outcome
from models.risk import RiskModel, make_risk_model
from models.scorer import Scorer
from models.trainer import Trainer

H = 3_600_000
HOP = 5 * 60_000


def _exact_auroc(y: np.ndarray, p: np.ndarray) -> float:
    pos, neg = p[y], p[~y]
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def _exact_ap(y: np.ndarray, p: np.ndarray) -> float:
    order = np.argsort(-p, kind="stable")
    y_sorted = y[order]
    tp = np.cumsum(y_sorted)
    precision = tp / np.arange(1, len(y) + 1)
    return float(np.sum(precision[y_sorted]) / y.sum())


@pytest.fixture()
def scored() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    y = rng.random(3_000) < 0.05
    logit = -3.0 + 2.0 * y + rng.normal(0, 1.2, y.size)
    return y, 1 / (1 + np.exp(-logit))


def test_sketch_metrics_match_direct_computation(scored: tuple[np.ndarray, np.ndarray]) -> None:
    y, p = scored
    sketch = ScoreSketch()
    sketch.update_many(y, p)
    assert sketch.auroc() == pytest.approx(_exact_auroc(y, p), abs=2e-3)
    assert sketch.auprc() == pytest.approx(_exact_ap(y, p), abs=5e-3)
    assert sketch.brier() == pytest.approx(float(np.mean((p - y) ** 2)), rel=1e-12)
    bins = np.minimum((p * 10).astype(int), 9)
    ece = sum(abs(p[bins == b].sum() - y[bins == b].sum()) for b in range(10)) / y.size
    assert sketch.ece() == pytest.approx(ece, rel=1e-12)
    assert sketch.mean_score() == pytest.approx(float(p.mean()))


def test_sketch_auroc_is_exact_for_news2_levels() -> None:
    rng = np.random.default_rng(3)
    y = rng.random(2_000) < 0.1
    p = np.minimum(rng.integers(0, 6, y.size) + 3 * y, 20) / 20
    sketch = ScoreSketch()
    sketch.update_many(y, p)
    assert sketch.auroc() == pytest.approx(_exact_auroc(y, p), abs=1e-12)


def test_sketch_roc_auc_river_equals_river(scored: tuple[np.ndarray, np.ndarray]) -> None:
    y, p = scored
    for n in (10, 50):
        river_metric = metrics.ROCAUC(n_thresholds=n)
        for yi, pi in zip(y.tolist(), p.tolist(), strict=True):
            river_metric.update(yi, {False: 1 - pi, True: pi})
        sketch = ScoreSketch(river_thresholds=n)
        sketch.update_many(y, p)
        assert sketch.roc_auc_river() == pytest.approx(river_metric.get(), abs=1e-12)


def test_sketches_add_up(scored: tuple[np.ndarray, np.ndarray]) -> None:
    y, p = scored
    whole, a, b = ScoreSketch(), ScoreSketch(), ScoreSketch()
    whole.update_many(y, p)
    a.update_many(y[:1000], p[:1000])
    b.update_many(y[1000:], p[1000:])
    a += b
    assert a.auroc() == pytest.approx(whole.auroc()) and a.brier() == pytest.approx(whole.brier())


def test_rolling_window_forgets_old_buckets() -> None:
    rolling = RollingSketch(ScoreSketch(), window_ms=24 * H, bucket_ms=6 * H)
    rolling.update_many(0, np.array([True, False]), np.array([0.9, 0.1]))
    rolling.update_many(20 * H, np.array([True]), np.array([0.5]))
    assert rolling.total().n == 3
    rolling.update_many(25 * H, np.array([False]), np.array([0.5]))
    assert rolling.total().n == 2  # the bucket at 0 h left the 24-h window


def test_scores_outside_0_1_are_refused() -> None:
    with pytest.raises(ValueError, match="probabilities"):
        ScoreSketch().update_many(np.array([True]), np.array([1.5]))


def _patient_stream(seed: int) -> tuple[list[tuple[str, int, dict[str, float]]], list[Outcome]]:
    """Rows every 5 minutes for 6 patients over 3 days, a deterioration drift before each onset."""
    rng = random.Random(seed)
    onsets = {"pt-0": 30 * H, "pt-2": 50 * H, "pt-4": 20 * H, "pt-5": 60 * H}
    rows = []
    for t in range(0, 72 * H, HOP):
        for i in range(6):
            pid = f"pt-{i}"
            onset = onsets.get(pid)
            drift = 0.0 if onset is None or not 0 < onset - t <= 12 * H else 2.0 * (1 - (onset - t) / (12 * H))
            rows.append((pid, t, {"hr_z": rng.gauss(drift, 1.0), "rr_z": rng.gauss(drift / 2, 1.0),
                                  "spo2_z": rng.gauss(-drift / 2, 1.0)}))
    outcomes = [Outcome(pid, "infection", onset_ms=t, t_ms=t) for pid, t in onsets.items()]
    return rows, outcomes


def test_prequential_auroc_equals_river_progressive_val_score() -> None:
    """The pipeline's loop (score with the scorer's snapshot, hold in the delayed labeller, judge,
    learn in release order) gives exactly River's ROCAUC from progressive_val_score with the same
    labelling delay, on the same labelled stream."""
    horizon, grace = 12 * H, 10 * 60_000
    rows, outcomes = _patient_stream(seed=11)
    episode = {"infection": 24 * H}

    # Ours: labeller -> evaluator -> trainer -> snapshot -> scorer, as the evaluate run does.
    labeller: DelayedLabeller[dict[str, float]] = DelayedLabeller(horizon_ms=horizon, outcome_grace_ms=grace,
                                                                  episode_ms=episode, hop_ms=HOP)
    model = RiskModel("logreg", seed=5, conditions=("any",), negative_rate=0.3)
    trainer: Trainer[dict[str, float]] = Trainer(model, name="risk-logreg", snapshot_every=1,
                                                 snapshot_every_ms=None)
    scorer = Scorer(trainer.snapshot(0))
    evaluator = PrequentialEvaluator(("model",), ("any",), learned=())
    held: dict[tuple[str, int], float] = {}
    labelled: list[tuple[dict[str, float], bool, int]] = []  # the labelled stream, in scoring order
    pending_outcomes = sorted(outcomes, key=lambda o: o.t_ms)

    def release(now: int) -> None:
        done = labeller.advance(now)
        if done:
            evaluator.update_many(now, {"any": np.array([w.labels["any"] for w in done])},
                                  {"model": {"any": np.array([held.pop((w.patient_id, w.ts_ms)) for w in done])}})
            snapshot = trainer.learn(done, now_ms=now)
            if snapshot is not None:
                scorer.swap(snapshot)

    for pid, t, x in rows:
        while pending_outcomes and pending_outcomes[0].t_ms <= t:
            labeller.on_outcome(pending_outcomes.pop(0))
        release(t)
        if labeller.add(pid, t, x):
            held[(pid, t)] = scorer.score(x)["any"]
    release(10_000 * H)

    # River: the labels the labeller gave, revealed after the same constant delay.
    label_of = {(pid, t): any(o.patient_id == pid and t < o.onset_ms <= t + horizon for o in outcomes)
                for pid, t, _ in rows}
    excluded = {(pid, t) for pid, t, _ in rows
                for o in outcomes if o.patient_id == pid and o.onset_ms <= t < o.onset_ms + episode["infection"]}
    times: dict[int, int] = {}
    dataset = []
    for pid, t, x in rows:
        if (pid, t) in excluded:
            continue
        times[id(x)] = t
        dataset.append((x, label_of[(pid, t)]))
        labelled.append((x, label_of[(pid, t)], t))
    river_metric = metrics.ROCAUC()
    evaluate.progressive_val_score(
        dataset, make_risk_model("logreg", seed=5, negative_rate=0.3), river_metric,
        moment=lambda x: dt.datetime.fromtimestamp(times[id(x)] / 1000, dt.UTC),
        delay=dt.timedelta(milliseconds=horizon + grace + 1))  # final once now > ts + horizon + grace

    ours = evaluator.metrics("model", "any")
    assert ours.n == len(labelled) and ours.positives == sum(y for _, y, _ in labelled)
    assert 0.0 < river_metric.get() < 1.0
    assert ours.roc_auc_river == pytest.approx(river_metric.get(), abs=1e-12)
    assert ours.auroc > 0.6  # the drift is learnable, so the comparison is not between two coin flips


def test_adwin_raises_a_drift_event_when_the_loss_changes() -> None:
    rng = np.random.default_rng(0)
    ev = PrequentialEvaluator(("model",), ("any",))
    y = rng.random(4_000) < 0.3
    good = np.where(y, 0.8, 0.2)
    assert ev.update_many(0, {"any": y[:2000]}, {"model": {"any": good[:2000]}}) == []
    bad = np.where(y, 0.2, 0.8)  # the relationship flips
    events = ev.update_many(H, {"any": y[2000:]}, {"model": {"any": bad[2000:]}})
    assert events and events[0].kind == "drift" and events[0].subject == "model"
    assert ev.drift_events == events


def test_no_drift_on_a_stationary_stream() -> None:
    rng = np.random.default_rng(1)
    ev = PrequentialEvaluator(("model",), ("any",))
    for hour in range(10):
        y = rng.random(1_000) < 0.05
        p = np.clip(np.where(y, 0.3, 0.04) + rng.normal(0, 0.02, y.size), 0, 1)
        assert ev.update_many(hour * H, {"any": y}, {"model": {"any": p}}) == []


def test_metrics_are_nan_until_both_classes_are_seen() -> None:
    ev = PrequentialEvaluator(("model",), ("any",))
    ev.update(0, {"any": False}, {"model": {"any": 0.1}})
    m = ev.metrics("model", "any")
    assert math.isnan(m.auroc) and m.n == 1 and m.as_dict()["auroc"] is None


def test_metrics_are_published_on_the_model_gauges() -> None:
    from prometheus_client import CollectorRegistry

    from models.fairness import FairnessMonitor
    from sinks.metrics import ModelMetrics

    registry = CollectorRegistry()
    gauges = ModelMetrics(registry)
    rng = np.random.default_rng(4)
    y = rng.random(2_000) < 0.2
    p = np.clip(np.where(y, 0.6, 0.2) + rng.normal(0, 0.1, y.size), 0, 1)
    ev = PrequentialEvaluator(("model",), ("any",))
    ev.update_many(0, {"any": y}, {"model": {"any": p}})
    ev.publish(gauges)
    assert registry.get_sample_value("vitals_model_auroc", {"model": "model", "condition": "any"}) == \
        pytest.approx(ev.metrics("model", "any", rolling=True).auroc)
    groups = {f"pt-{i}": {"sex": "F" if i % 2 else "M", "age_band": "75+", "skin_tone": "I-II"} for i in range(10)}
    mon = FairnessMonitor(groups, ("model",), {"model": 0.5})
    mon.update_many([f"pt-{i % 10}" for i in range(y.size)], y, {"model": p})
    mon.publish(gauges)
    assert registry.get_sample_value("vitals_subgroup_auroc",
                                     {"model": "model", "attribute": "sex", "group": "F"}) is not None


@given(st.integers(1, 2_000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_interval_matches_scipy_and_holds_the_estimate(counts: tuple[int, int]) -> None:
    k, n = counts
    lo, hi = wilson_interval(k, n)
    ref = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert (lo, hi) == (pytest.approx(ref.low, abs=1e-9), pytest.approx(ref.high, abs=1e-9))
    assert 0.0 <= lo <= k / n <= hi <= 1.0


def test_wilson_interval_without_trials_is_undefined_and_rejects_impossible_counts() -> None:
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    with pytest.raises(ValueError, match="within 0..5"):
        wilson_interval(6, 5)
