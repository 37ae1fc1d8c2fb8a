"""Benchmark the models: scoring and training throughput, and where an evaluate run spends its time.

No services needed::

    .venv/bin/python bench/bench_models.py                      # ~1-2 minutes
    .venv/bin/python bench/bench_models.py --patients 1000 --hours 2 --json
    .venv/bin/python bench/bench_models.py --full               # + the default evaluate run (hours here)

1. **Scoring**: feature rows from a simulated cohort (simulator -> pipeline core -> feature
   engine), scored for every condition by a trained 4-head model: ``predict_proba_one`` per row
   (what a worker does per window) and ``predict_many`` in batches of 1,000 (what ``evaluate``
   does per 5-minute hop), plus NEWS2 on the same rows.
2. **Training**: labelled windows per second through the :class:`~models.trainer.Trainer`, with
   the default negative sampling (5 %) and with every window learned.
3. **Evaluate stages**: the same cohort timed stage by stage — simulate, JSON-encode, pipeline
   core, feature engine, models (score + label + judge + learn) — and the per-patient-hour cost
   extrapolated to the default run (1,000 patients x 14 days); ``--full`` runs it for real.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from models.evaluate import EvaluateOptions, EvaluationCore, evaluate_cohort  # noqa: E402
from models.fairness import subgroups  # noqa: E402
from models.labelling import LABELS, LabelledWindow, Outcome  # noqa: E402
from models.risk import RiskModel  # noqa: E402
from models.scorer import FeatureSpace, News2RowScorer  # noqa: E402
from models.trainer import Trainer  # noqa: E402
from simulators.cohort import CohortConfig, population, simulate  # noqa: E402
from stream.features import FeatureEngine, FeatureRow  # noqa: E402
from stream.pipeline import VitalsPipeline  # noqa: E402
from stream.settings import Settings  # noqa: E402

MS_PER_HOUR = 3_600_000
DEFAULT_PATIENT_HOURS = 1_000 * 14 * 24


def stages(patients: int, hours: int, seed: int) -> tuple[dict[str, float], list[FeatureRow], list[Outcome]]:
    """Time each stage of the evaluate path separately on one cohort; return the rows too."""
    settings = Settings()
    config = CohortConfig(patients=patients, seed=seed, duration_ms=hours * MS_PER_HOUR)
    t = time.perf_counter()
    messages = list(simulate(config))
    timing = {"simulate": time.perf_counter() - t}
    t = time.perf_counter()
    raws = [(json.dumps(m.payload, separators=(",", ":")).encode(), m.sent_ms) for m in messages
            if m.kind == "reading" and not isinstance(m.payload, bytes)]
    timing["encode"] = time.perf_counter() - t
    outcomes = [Outcome.from_wire(m.payload) for m in messages if m.kind == "outcome"]  # type: ignore[arg-type]
    pipeline = VitalsPipeline.from_settings(settings)
    t = time.perf_counter()
    windows = []
    for offset, (raw, sent) in enumerate(raws):
        windows += pipeline.on_message(raw, partition=0, offset=offset, record_ts_ms=sent).windows
    windows += pipeline.close_partition(0).windows
    timing["pipeline"] = time.perf_counter() - t
    engine = FeatureEngine()
    t = time.perf_counter()
    rows: list[FeatureRow] = []
    for w in windows:
        rows += engine.on_window(w, partition=0).rows
    timing["features"] = time.perf_counter() - t
    groups = {p.patient_id: subgroups(p.sex, p.age_years, p.skin_tone) for p in population(config)}
    core = EvaluationCore(EvaluateOptions(warmup_ms=0), start_ms=config.start_ms, groups=groups)
    t = time.perf_counter()
    by_ts: dict[int, list[FeatureRow]] = {}
    for r in rows:
        by_ts.setdefault(r.ts_ms, []).append(r)
    pending = sorted(outcomes, key=lambda o: o.t_ms)
    for ts in sorted(by_ts):
        while pending and pending[0].t_ms <= ts:
            core.add_outcome(pending.pop(0))
        core.add_rows(by_ts[ts])
        core.advance(ts)
    timing["models"] = time.perf_counter() - t
    timing["rows"] = float(len(rows))
    timing["messages"] = float(len(raws))
    return timing, rows, outcomes


def scoring(rows: list[FeatureRow], repeat_rows: int) -> dict[str, float]:
    """Rows per second: predict_proba_one for all conditions, predict_many, NEWS2."""
    rng = random.Random(0)
    model = RiskModel("logreg", seed=42, negative_rate=1.0)
    for r in rows[:5_000]:
        model.learn_one(dict(r.x), {c: rng.random() < 0.05 for c in model.conditions})
    sample = (rows * (repeat_rows // max(len(rows), 1) + 1))[:repeat_rows]
    xs = [dict(r.x) for r in sample]
    t = time.perf_counter()
    for x in xs:
        model.risk_one(x)
    one = len(xs) / (time.perf_counter() - t)
    space = FeatureSpace()
    X = space.matrix([space.vector(x) for x in xs])
    model.predict_many(X[:10], space.columns)  # compile once per snapshot, as the scorer does
    t = time.perf_counter()
    for i in range(0, len(X), 1_000):
        model.predict_many(X[i:i + 1_000], space.columns)
    many = len(X) / (time.perf_counter() - t)
    news2 = News2RowScorer()
    t = time.perf_counter()
    for r in sample:
        news2.score(r.patient_id, r.ts_ms, r.x)
    n2 = len(sample) / (time.perf_counter() - t)
    return {"predict_proba_one_rows_per_s": one, "predict_many_rows_per_s": many, "news2_rows_per_s": n2}


def training(rows: list[FeatureRow], windows: int) -> dict[str, float]:
    """Labelled windows per second through the trainer."""
    rng = random.Random(1)
    sample = (rows * (windows // max(len(rows), 1) + 1))[:windows]
    labelled = [LabelledWindow(r.patient_id, r.ts_ms, {c: rng.random() < 0.005 for c in LABELS}, dict(r.x))
                for r in sample]
    out = {}
    for name, rate in (("trainer_windows_per_s_sampled_5pct", 0.05), ("trainer_windows_per_s_all", 1.0)):
        trainer: Trainer[dict[str, float]] = Trainer(RiskModel("logreg", seed=42, negative_rate=rate), name="bench",
                                                     snapshot_every=None, snapshot_every_ms=None)
        t = time.perf_counter()
        for i in range(0, len(labelled), 1_000):
            trainer.learn(labelled[i:i + 1_000], now_ms=0)
        out[name] = len(labelled) / (time.perf_counter() - t)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patients", type=int, default=200)
    parser.add_argument("--hours", type=int, default=6)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--score-rows", type=int, default=20_000)
    parser.add_argument("--train-windows", type=int, default=50_000)
    parser.add_argument("--full", action="store_true", help="also run the default evaluate (1000 x 14 days)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    timing, rows, _ = stages(args.patients, args.hours, args.seed)
    result: dict[str, Any] = {"cohort": f"{args.patients} patients x {args.hours} h", **timing}
    patient_hours = args.patients * args.hours
    per_ph = {k: timing[k] / patient_hours for k in ("simulate", "encode", "pipeline", "features", "models")}
    result["ms_per_patient_hour"] = {k: round(v * 1e3, 3) for k, v in per_ph.items()}
    result["default_evaluate_extrapolated_s"] = round(sum(per_ph.values()) * DEFAULT_PATIENT_HOURS, 0)
    result.update(scoring(rows, args.score_rows))
    result.update(training(rows, args.train_windows))
    if args.full:
        config = CohortConfig(patients=1_000, seed=42, duration_ms=14 * 24 * MS_PER_HOUR)
        t = time.perf_counter()
        evaluate_cohort(config, EvaluateOptions(), Settings())
        result["default_evaluate_s"] = time.perf_counter() - t
    if args.json:
        print(json.dumps(result, default=float))
    else:
        for k, v in result.items():
            print(f"{k:>40}: {v:,.1f}" if isinstance(v, float) else f"{k:>40}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
