"""``vitalrisk evaluate`` end to end on a tiny cohort: the report, the JSON, the plots."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

import stream.evaluate_burden as evaluate_burden
from kernel.events import FeatureRow
from kernel.settings import Settings
from models.labelling import Outcome
from models.prequential import ScoreSketch
from simulators.cohort import CohortConfig
from simulators.deterioration import Incidence
from stream.evaluate import run_evaluate
from stream.evaluate_cohort import evaluate_cohort, evaluate_messages
from stream.evaluate_loop import EvaluateOptions, EvaluationCore
from stream.evaluate_plots import reliability, roc_curve
from stream.evaluate_report import EvaluationResult

H = 3_600_000


def test_run_evaluate_json_has_the_promised_keys(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    status = run_evaluate(Settings(), patients=12, days=0.25, seed=42, model="logreg", as_json=True,
                          out_dir=tmp_path, stdout=out, stderr=err)
    assert status == 0
    summary = json.loads(out.getvalue())
    for key in ("auroc_model", "auroc_news2", "brier_model", "ece_model", "subgroups", "alert_burden",
                "fairness_flags", "drift_events", "metrics"):
        assert key in summary
    assert summary["windows_scored"] > 0 and summary["patients"] == 12
    assert all("by_kind" in b and "ppv_ci95" in b and "sensitivity_ci95" in b for b in summary["alert_burden"])
    assert {(r["attribute"], r["group"]) for r in summary["subgroups"]} >= {("skin_tone", "V-VI"), ("sex", "F")}
    assert "%" in err.getvalue()  # the progress bar went to stderr
    assert all(Path(p).exists() for p in summary["plots"])


def test_run_evaluate_text_report(tmp_path: Path) -> None:
    out = io.StringIO()
    assert run_evaluate(Settings(), 5, 0.1, 1, "logreg", False, None, stdout=out, stderr=io.StringIO()) == 0
    text = out.getvalue()
    assert "AUROC" in text and "alert burden" in text and "95% CI" in text and "not clinical validity" in text


def test_bad_arguments_exit_2() -> None:
    err = io.StringIO()
    assert run_evaluate(Settings(), 0, 1.0, 1, "logreg", True, None, stdout=io.StringIO(), stderr=err) == 2
    assert err.getvalue().count("\n") == 1


def test_core_learns_and_beats_chance_on_a_learnable_stream() -> None:
    """The core, fed rows directly: a drift before each onset is learned prequentially."""
    rng = np.random.default_rng(0)
    groups = {f"pt-{i}": {"sex": "F" if i % 2 else "M", "age_band": "75+", "skin_tone": "I-II"} for i in range(40)}
    core = EvaluationCore(EvaluateOptions(warmup_ms=24 * H, negative_rate=0.2, snapshot_every_ms=H),
                          start_ms=0, groups=groups)
    onsets = {f"pt-{i}": int(rng.integers(30, 140)) * H for i in range(0, 40, 3)}
    for t in range(0, 160 * H, 5 * 60_000):
        for pid, onset in onsets.items():
            if t - 5 * 60_000 < onset <= t:
                core.add_outcome(Outcome(pid, "infection", onset_ms=onset, t_ms=onset))
        rows = []
        for i in range(40):
            pid = f"pt-{i}"
            lead = onsets.get(pid, -1) - t
            drift = 3.0 * (1 - lead / (12 * H)) if 0 < lead <= 12 * H else 0.0
            rows.append(FeatureRow(patient_id=pid, ts_ms=t, x={"heart_rate_z_60m": float(rng.normal(drift, 1)),
                                            "heart_rate_mean_15m": float(75 + 5 * drift + rng.normal(0, 3)),
                                            "respiratory_rate_mean_15m": 16.0, "oxygen_saturation_mean_15m": 96.0}))
        core.add_rows(rows)
        core.advance(t)
    result = core.finish(end_ms=160 * H, seconds=0.0, patients=40)
    model, news2 = result.metrics["model"]["any"], result.metrics["news2"]["any"]
    assert model.positives > 0 and model.auroc > 0.8 and model.auroc > news2.auroc
    assert result.labeller["excluded"] > 0  # windows after each onset were excluded


def test_roc_and_reliability_curves_from_a_sketch() -> None:
    sketch = ScoreSketch()
    rng = np.random.default_rng(2)
    y = rng.random(5_000) < 0.1
    p = np.clip(np.where(y, 0.3, 0.05) + rng.normal(0, 0.03, y.size), 0, 1)
    sketch.update_many(y, p)
    fpr, tpr = roc_curve(sketch)
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == pytest.approx(1) and tpr[-1] == pytest.approx(1)
    assert float(np.trapezoid(tpr, fpr)) == pytest.approx(sketch.auroc(), abs=1e-3)
    predicted, observed, counts = reliability(sketch)
    assert counts.sum() == pytest.approx(5_000) and np.all(np.diff(predicted) > 0)


def _summary_without_time(result: EvaluationResult) -> str:
    summary = result.summary()
    summary.pop("seconds")
    return json.dumps(summary, sort_keys=True)


def test_results_do_not_depend_on_the_number_of_feature_processes() -> None:
    """The trainer sees the same (time, patient) order however the feature rows were computed."""
    config = CohortConfig(patients=24, seed=5, duration_ms=int(1.5 * 24 * H), incidence=Incidence().scaled(20))
    options = EvaluateOptions(warmup_ms=12 * H)
    runs = {n: _summary_without_time(evaluate_cohort(config, options, Settings(), processes=n)) for n in (0, 1, 2)}
    assert runs[1] == runs[0] and runs[2] == runs[0]
    assert json.loads(runs[0])["windows_labelled"] > 0


def test_array_path_scores_like_the_message_path() -> None:
    """Same windows, labels and NEWS2; the model differs only by when snapshots swap within a hop."""
    config = CohortConfig(patients=10, seed=8, duration_ms=30 * H, incidence=Incidence().scaled(30))
    options = EvaluateOptions(warmup_ms=8 * H)
    arrays = evaluate_cohort(config, options, Settings(), processes=0).summary()
    messages = evaluate_messages(config, options, Settings(), progress=None).summary()
    for key in ("windows_scored", "windows_labelled", "labeller", "auroc_news2", "auprc_news2", "brier_news2"):
        assert arrays[key] == messages[key], key
    assert arrays["metrics"]["news2"] == messages["metrics"]["news2"]
    assert arrays["brier_model"] == pytest.approx(messages["brier_model"], rel=0.05)


def test_alert_replay_of_state_changes_only_pages_like_a_full_replay(monkeypatch: pytest.MonkeyPatch) -> None:
    """The burden replays only the scores that change an alert's state (of any risk head); replaying all gives
    the same pages."""
    rng = np.random.default_rng(4)
    groups = {f"pt-{i}": {"sex": "F", "age_band": "75+", "skin_tone": "I-II"} for i in range(12)}
    core = EvaluationCore(EvaluateOptions(warmup_ms=0, burden_thresholds=(0.3, 0.1)), start_ms=0, groups=groups)
    steps = 2_000
    for i, pid in enumerate(groups):
        risk = 1 / (1 + np.exp(-np.cumsum(rng.normal(0, 0.4, steps)) / 3 + 2))
        total = np.clip(np.round(np.cumsum(rng.normal(0, 0.6, steps)) / 4 + 3), 0, 20)
        red = np.clip(np.round(total / 3 + rng.normal(0, 0.7, steps)), 0, 3)
        heads = [1 / (1 + np.exp(-np.cumsum(rng.normal(0, 0.4, steps)) / 3 + 2)) for _ in core.series.heads]
        core.series.add([pid] * steps, np.arange(1, steps + 1) * 300_000, risk, total, red, rng.random(steps) < 0.02,
                        heads)
        if i % 3 == 0:
            core.outcomes.append(Outcome(pid, "infection", onset_ms=int(rng.integers(100, steps)) * 300_000, t_ms=0))
    end = (steps + 1) * 300_000
    filtered = core.alert_burden(12, end / 86_400_000, end)
    monkeypatch.setattr(evaluate_burden, "_transitions", lambda ts, value, threshold: np.ones(len(ts), dtype=bool))
    full = core.alert_burden(12, end / 86_400_000, end)
    assert [b.as_dict() for b in filtered] == [b.as_dict() for b in full]
    assert sum(b.pages for b in full) > 20
    by_scorer = {b.scorer: b for b in full}
    assert by_scorer["model"].pages > by_scorer["model:any"].pages > 0  # the condition heads page too


def test_alert_burden_by_outcome_kind_counts_heads_and_late_pages_apart() -> None:
    """Per kind: a page before onset detects; a page only after onset is late, never a detection."""
    groups = {p: {"sex": "F", "age_band": "75+", "skin_tone": "I-II"} for p in ("pt-inf", "pt-af", "pt-hf")}
    core = EvaluationCore(EvaluateOptions(warmup_ms=0, burden_thresholds=()), start_ms=0, groups=groups)
    step, steps = 300_000, 24 * 12  # one day of 5-minute scores
    ts = np.arange(1, steps + 1) * step
    onset = 12 * H
    after = ts >= onset
    low = np.full(steps, 0.05)
    rising = np.where((ts >= onset - 6 * H) & (ts < onset), 0.9, 0.05)  # 6 h before onset
    sudden = np.where((ts >= onset + H) & (ts < onset + 2 * H), 0.95, 0.05)  # 1 h after onset
    zeros = np.zeros(steps)
    # (patient, kind, "any" head, hf head, in episode after onset?)
    for pid, kind, any_risk, hf_risk in (("pt-inf", "infection", rising, low), ("pt-af", "af_episode", sudden, low),
                                         ("pt-hf", "hf_decompensation", low, rising)):
        core.series.add([pid] * steps, ts, any_risk, zeros, zeros, after, [hf_risk, low, low, low])
        core.outcomes.append(Outcome(pid, kind, onset_ms=onset, t_ms=onset))
    end = int(ts[-1]) + step
    burden = {b.scorer: b for b in core.alert_burden(3, end / 86_400_000, end)}

    every_head, any_head = burden["model"], burden["model:any"]
    assert every_head.kinds == ("risk_high:any", "risk_high:hf_decompensation", "risk_high:copd_exacerbation",
                                "risk_high:infection", "risk_high:af_episode")
    assert (every_head.pages, every_head.detected, every_head.outcomes) == (2, 2, 3)
    assert every_head.true_pages == 2 and every_head.ppv == 1.0
    summary = every_head.as_dict()  # the report carries 95 % Wilson intervals of its two proportions
    assert summary["ppv_ci95"] == [pytest.approx(0.342, abs=1e-3), pytest.approx(1.0)]
    assert summary["sensitivity_ci95"] == [pytest.approx(0.208, abs=1e-3), pytest.approx(0.939, abs=1e-3)]
    kinds = every_head.as_dict()["by_kind"]
    assert set(kinds) == {"infection", "af_episode", "hf_decompensation"}
    # the alert enters at the first score >= 0.6 and fires at the next (held for 2 min): 6 h - 5 min
    assert kinds["infection"] == {"outcomes": 1, "detected": 1, "sensitivity": 1.0,
                                  "median_lead_h": pytest.approx(6.0 - 5 / 60),
                                  "late_detected": 0, "median_delay_h": None, "in_episode": 0}
    # AF: no page before onset; the page 1 h after it (in the episode) is late, not a detection
    assert kinds["af_episode"]["detected"] == 0 and kinds["af_episode"]["sensitivity"] == 0.0
    assert kinds["af_episode"]["late_detected"] == 1
    assert kinds["af_episode"]["median_delay_h"] == pytest.approx(1.0 + 5 / 60)
    assert every_head.sensitivity == pytest.approx(2 / 3) and every_head.sensitivity_without("af_episode") == 1.0
    # The heart-failure head alone saw the HF onset: the "any" head misses it
    assert any_head.by_kind["hf_decompensation"]["detected"] == 0
    assert any_head.by_kind["infection"]["detected"] == 1 and any_head.pages == 1
    assert {b.scorer for b in burden.values()} == {"model", "model:any", "news2"}


def test_an_onset_whose_horizon_lies_inside_an_earlier_episode_is_counted_apart() -> None:
    """Every score before the second onset is the first episode's aftermath: no scorer could warn of it."""
    groups = {"pt-hf": {"sex": "M", "age_band": "75+", "skin_tone": "III-IV"}}
    core = EvaluationCore(EvaluateOptions(warmup_ms=0, burden_thresholds=()), start_ms=0, groups=groups)
    step, steps = 300_000, 2 * 24 * 12  # two days of 5-minute scores
    ts = np.arange(1, steps + 1) * step
    first, second = 12 * H, 24 * H  # the second inside the first's 5-day heart-failure episode
    rising = np.where((ts >= first - 6 * H) & (ts < first), 0.9, 0.05)
    low, zeros = np.full(steps, 0.05), np.zeros(steps)
    core.series.add(["pt-hf"] * steps, ts, rising, zeros, zeros, ts >= first, [low, low, low, low])
    for onset in (first, second):
        core.add_outcome(Outcome("pt-hf", "hf_decompensation", onset_ms=onset, t_ms=onset))
    core.labeller.add("pt-hf", second + 6 * 24 * H, None)  # a window after both episodes: the labeller forgets them
    end = int(ts[-1]) + step
    model = next(b for b in core.alert_burden(1, end / 86_400_000, end) if b.scorer == "model")
    assert (model.outcomes, model.detected, model.in_episode, model.sensitivity) == (1, 1, 1, 1.0)
    assert model.by_kind["hf_decompensation"]["in_episode"] == 1
    assert model.as_dict()["in_episode"] == 1
