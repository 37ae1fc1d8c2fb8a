"""Risk heads: factory, determinism, calibration under negative sampling, batch scoring, explanations."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from river import base

from models.errors import UnknownModel
from models.news2 import News2Scorer
from models.risk import (CONDITIONS, DEFAULT_CLIP_SD, HEAD_CLIP_SD, MODEL_NAMES, NegativeSampling, RiskModel,
                         correct_prior, explain, make_risk_model)


def _rare_stream(n: int, seed: int) -> list[tuple[dict[str, float], bool]]:
    """Logistic truth with ~2 % positives: logit = -4.5 + 1.5 a - 1.0 b."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        x = {"a": rng.gauss(0, 1), "b": rng.gauss(0, 1), "noise": rng.gauss(0, 1)}
        p = 1 / (1 + math.exp(-(-4.5 + 1.5 * x["a"] - 1.0 * x["b"])))
        out.append((x, rng.random() < p))
    return out


def test_every_scorer_speaks_the_river_protocol() -> None:
    for name in MODEL_NAMES:
        head = make_risk_model(name, seed=42)
        assert isinstance(head, base.Classifier)
        head.learn_one({"a": 1.0}, True)
        assert set(head.predict_proba_one({"a": 1.0})) == {False, True}
    news2 = News2Scorer()
    assert news2.learn_one({"heart_rate": 80.0}, True) is news2
    assert set(news2.predict_proba_one({"heart_rate": 80.0})) == {False, True}


def test_unknown_model_names_are_refused() -> None:
    with pytest.raises(UnknownModel, match="'forest'"):
        make_risk_model("forest")


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_same_seed_and_stream_give_the_same_model(name: str) -> None:
    stream = _rare_stream(1_500, seed=1)
    a, b = make_risk_model(name, seed=3), make_risk_model(name, seed=3)
    for x, y in stream:
        a.learn_one(x, y)
        b.learn_one(x, y)
    probe = [x for x, _ in stream[:50]]
    assert [a.predict_proba_one(x) for x in probe] == [b.predict_proba_one(x) for x in probe]


def test_negative_sampling_keeps_probabilities_calibrated() -> None:
    stream = _rare_stream(40_000, seed=2)
    sampled = make_risk_model("logreg", seed=0, negative_rate=0.05)
    for x, y in stream:
        sampled.learn_one(x, y)
    assert sampled.learned < 0.12 * len(stream)  # learned ~5 % of negatives and all positives
    test = _rare_stream(20_000, seed=3)
    mean_p = np.mean([sampled.predict_proba_one(x)[True] for x, _ in test])
    rate = np.mean([y for _, y in test])
    assert mean_p == pytest.approx(rate, rel=0.3)  # calibration-in-the-large, not 20x too high


def test_prior_correction_inverts_the_sampling_odds() -> None:
    for p in (0.01, 0.3, 0.9):
        sampled_odds = (p / (1 - p)) / 0.1
        p_sampled = sampled_odds / (1 + sampled_odds)
        assert correct_prior(p_sampled, 0.1) == pytest.approx(p)


def test_predict_many_equals_predict_proba_one() -> None:
    stream = _rare_stream(3_000, seed=4)
    model = RiskModel("logreg", seed=9, conditions=CONDITIONS, negative_rate=0.2)
    rng = random.Random(0)
    for x, y in stream:
        model.learn_one(x, {c: y and (c == "any" or rng.random() < 0.5) for c in CONDITIONS})
    columns = ["a", "b", "noise", "never_seen"]
    X = np.array([[x.get(c, np.nan) for c in columns] for x, _ in stream[:200]])
    X[::3, 1] = np.nan  # absent features
    X[::7, 3] = 4.0  # a feature the model never learned
    batch = model.predict_many(X, columns)
    for i, row in enumerate(X):
        x = {c: float(v) for c, v in zip(columns, row) if not np.isnan(v)}
        for c, p in model.risk_one(x).items():
            assert batch[c][i] == pytest.approx(p, abs=1e-12)


def test_predict_many_falls_back_for_trees() -> None:
    model = RiskModel("hat", seed=1, conditions=("any",))
    for x, y in _rare_stream(500, seed=5):
        model.learn_one(x, {"any": y})
    X = np.array([[0.5, -0.5, 0.0]])
    assert model.predict_many(X, ["a", "b", "noise"])["any"][0] == model.risk_one({"a": 0.5, "b": -0.5,
                                                                                   "noise": 0.0})["any"]


def test_linear_explanations_add_up_to_the_logit() -> None:
    head = make_risk_model("logreg", seed=0, negative_rate=1.0)
    for x, y in _rare_stream(5_000, seed=6):
        head.learn_one(x, y)
    x = {"a": 2.0, "b": -1.0, "noise": 0.3}
    contributions = explain(head, x, k=10)
    assert [name for name, _ in contributions][:2] == ["a", "b"]
    assert contributions[0][1] > 0 and contributions[1][1] > 0  # high a and low b both raise risk
    lr = head.classifier["logreg"]
    p = head.predict_proba_one(x)[True]
    assert sum(c for _, c in contributions) + lr.intercept == pytest.approx(math.log(p / (1 - p)), abs=1e-9)


def test_tree_explanations_use_occlusion() -> None:
    model = RiskModel("hat", seed=2, conditions=("any",))
    for x, y in _rare_stream(3_000, seed=7):
        model.learn_one(x, {"any": y})
    out = model.explain({"a": 3.0, "b": -2.0, "noise": 0.0}, k=2)
    assert len(out) == 2 and all(isinstance(name, str) and math.isfinite(c) for name, c in out)


def test_learn_lazy_builds_features_only_when_a_head_keeps_the_window() -> None:
    model = RiskModel("logreg", seed=0, conditions=("any", "infection"), negative_rate=0.01)
    built = 0

    def make() -> dict[str, float]:
        nonlocal built
        built += 1
        return {"a": 0.0}

    kept = sum(model.learn_lazy(make, {"any": False, "infection": False}) for _ in range(1_000))
    assert built == kept < 60 and model.examples_seen == 1_000
    assert model.learn_lazy(make, {"any": True, "infection": False})


def test_negative_rate_must_be_a_share() -> None:
    with pytest.raises(ValueError, match="negative_rate"):
        NegativeSampling(make_risk_model().classifier, negative_rate=0.0)


def _clip_of(model: RiskModel) -> dict[str, float]:
    return {c: head.classifier.steps["clip"].limit for c, head in model.heads.items()}


def test_the_af_head_keeps_far_tail_evidence_that_the_other_heads_clip() -> None:
    """Irregularity before AF sits 4-25 SD out: the AF head sees it whole, the others at most 5 SD."""
    model = RiskModel("logreg", seed=3, negative_rate=1.0)
    assert _clip_of(model) == {c: HEAD_CLIP_SD.get(c, DEFAULT_CLIP_SD) for c in CONDITIONS}
    assert _clip_of(model)["af_episode"] == 25.0 and _clip_of(model)["any"] == DEFAULT_CLIP_SD
    rng = random.Random(5)
    for _ in range(500):
        model.learn_one({"rmssd": rng.gauss(2.8, 0.2)}, {c: False for c in CONDITIONS})
    far = {"rmssd": 2.8 + 15 * 0.2}
    scaled = {c: head.classifier.steps["clip"].transform_one(head.classifier.steps["scale"].transform_one(far))["rmssd"]
              for c, head in model.heads.items()}
    assert scaled["any"] == DEFAULT_CLIP_SD and 13 < scaled["af_episode"] < 17


def test_an_explicit_clip_applies_to_every_head() -> None:
    assert set(_clip_of(RiskModel("logreg", seed=3, clip_sd=3.0)).values()) == {3.0}
