"""``vitalrisk evaluate`` end to end on a tiny cohort: the report, the JSON, the plots."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from models.evaluate import EvaluateOptions, EvaluationCore, reliability, roc_curve, run_evaluate
from models.evaluation import ScoreSketch
from models.labelling import Outcome
from stream.features import FeatureRow
from stream.settings import Settings

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
    assert {(r["attribute"], r["group"]) for r in summary["subgroups"]} >= {("skin_tone", "V-VI"), ("sex", "F")}
    assert "%" in err.getvalue()  # the progress bar went to stderr
    assert all(Path(p).exists() for p in summary["plots"])


def test_run_evaluate_text_report(tmp_path: Path) -> None:
    out = io.StringIO()
    assert run_evaluate(Settings(), 5, 0.1, 1, "logreg", False, None, stdout=out, stderr=io.StringIO()) == 0
    text = out.getvalue()
    assert "AUROC" in text and "alert burden" in text and "not clinical validity" in text


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
            rows.append(FeatureRow(pid, t, {"heart_rate_z_60m": float(rng.normal(drift, 1)),
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
