"""``vitalrisk evaluate``'s alert replay (stream/evaluate_burden.py ``_replay``) pages as the engine does,
grouped: the model's firing pages per patient equal :func:`stream.alerts.replay.replay_pages` over every
score, one page per group however many heads cross."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

import stream.evaluate_burden as evaluate_burden
from kernel.events import HOP_MS, RiskScore
from stream.alerts.replay import replay_pages
from stream.alerts.rules import RISK_HIGH, AlertPolicy
from stream.evaluate_report import MODEL

HEADS = ("heart_failure", "infection", "copd")
STEP = 300_000


def _cohort(patients: int = 10, steps: int = 1_500, seed: int = 7) -> evaluate_burden.SeriesStore:
    """Random-walk risks per head, correlated through a shared drift, so heads often cross together."""
    rng = np.random.default_rng(seed)
    store = evaluate_burden.SeriesStore(HEADS)
    for i in range(patients):
        shared = np.cumsum(rng.normal(0, 0.35, steps))

        def walk(drift: np.ndarray = shared) -> np.ndarray:
            return 1 / (1 + np.exp(-(drift + np.cumsum(rng.normal(0, 0.25, steps))) / 3 + 2))
        store.add([f"pt-{i}"] * steps, np.arange(1, steps + 1) * STEP, walk(), np.zeros(steps), np.zeros(steps),
                  np.zeros(steps, dtype=bool), [walk() for _ in HEADS])
    return store


def _period(store: evaluate_burden.SeriesStore) -> evaluate_burden._Period:
    return evaluate_burden._Period(store.by_patient(), {}, {}, "any", store.heads, 0, 12 * 3_600_000, 10, 5.0, "v1")


def _engine_pages(store: evaluate_burden.SeriesStore, policy: AlertPolicy) -> dict[str, list[int]]:
    """Every score of every patient through the engine; the firing model pages' event times."""
    out: dict[str, list[int]] = {}
    for pid, s in store.by_patient().items():
        risks = {"any": s.risk.tolist(), **{c: s.heads[c].tolist() for c in HEADS}}
        scores = [RiskScore(patient_id=pid, window_start_ms=t - HOP_MS, window_end_ms=t, model_name="risk",
                            model_version="v1", score=risks["any"][j], news2_total=0, news2_band="", inputs={},
                            contributions={}, risks={c: r[j] for c, r in risks.items()})
                  for j, t in enumerate(s.ts.tolist())]
        times = [p.event_ms for p in replay_pages(scores, policy) if p.action == "firing" and p.event_ms is not None
                 and p.kind.startswith(RISK_HIGH)]
        if times:
            out[pid] = times
    return out


def test_evaluate_replay_pages_like_the_engine_grouped_and_not() -> None:
    store = _cohort()
    period = _period(store)
    names = ("any", *HEADS)
    counts = {}
    for grouped in (True, False):
        policy = AlertPolicy(data_stopped_ms=None, group_model_risk=grouped)
        replayed = evaluate_burden._replay(period, policy, (MODEL,), names, in_episode=False)[MODEL]
        assert replayed == _engine_pages(store, policy)
        counts[grouped] = sum(len(v) for v in replayed.values())
    assert 0 < counts[True] < counts[False]  # heads crossing together page once when grouped


def test_the_default_policy_groups_and_a_group_is_one_page() -> None:
    policy = AlertPolicy(data_stopped_ms=None)
    assert policy.group_model_risk
    ts = np.arange(1, 40) * STEP
    high = np.where((ts > 10 * STEP) & (ts < 30 * STEP), 0.9, 0.1)
    store = evaluate_burden.SeriesStore(HEADS)
    store.add(["pt-1"] * len(ts), ts, high, np.zeros(len(ts)), np.zeros(len(ts)), np.zeros(len(ts), dtype=bool),
              [high, high, np.roll(high, 3)])
    replayed = evaluate_burden._replay(_period(store), policy, (MODEL,), ("any", *HEADS), in_episode=False)[MODEL]
    assert replayed == {"pt-1": [12 * STEP]}
    alone = evaluate_burden._replay(_period(store), replace(policy, group_model_risk=False), (MODEL,),
                                    ("any", *HEADS), in_episode=False)[MODEL]
    assert len(alone["pt-1"]) == 4
