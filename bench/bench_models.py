"""Benchmark the models: scoring and training throughput, and where an evaluate run spends its time.

No services needed::

    .venv/bin/python bench/bench_models.py                      # ~1 minute
    .venv/bin/python bench/bench_models.py --patients 1000 --hours 24 --json
    .venv/bin/python bench/bench_models.py --message-path       # + the old wire-format path, for comparison
    .venv/bin/python bench/bench_models.py --full               # + the default evaluate run (~4 minutes)

1. **Evaluate stages** (the array path ``vitalrisk evaluate`` takes for a cohort without faults),
   timed one by one on one cohort in this process: simulate (:func:`simulators.cohort.minute_frames`),
   1-minute window statistics (:func:`stream.cohort_features.frame_metrics`), hopping features
   (:class:`stream.batch_features.BatchFeatureEngine`), and the model loop (score, label, judge,
   learn, alert replay: :meth:`stream.evaluate_loop.EvaluationCore.add_hop` and ``finish``), in ms
   per patient-hour; with ``--message-path`` also the old path (JSON, pipeline core,
   :class:`~stream.features.FeatureEngine`) on the same cohort.
2. **Scoring**: rows per second for ``predict_proba_one`` per row, ``predict_many`` in batches
   of 1,000, and NEWS2.
3. **Training**: labelled windows per second through the :class:`~models.trainer.Trainer`.
4. ``--full``: the default ``evaluate`` (1,000 patients x 14 days, seed 42) for real, wall time
   and CPU time of this process and its feature workers, against the 300-second target.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np

from stream.cohort_features import frame_metrics
from stream.evaluate_cohort import default_processes, evaluate_cohort
from stream.evaluate_loop import EvaluateOptions, EvaluationCore
from models.fairness import subgroups
from models.labelling import LABELS, LabelledWindow, Outcome
from models.risk import RiskModel
from models.scorer import FeatureSpace, News2RowScorer
from models.trainer import Trainer
from simulators.cohort import CohortConfig, episodes, minute_frames, population, simulate
from stream.batch_features import BatchFeatureEngine, feature_columns, row_dict
from kernel.events import FeatureRow
from stream.features import FeatureEngine
from stream.pipeline import VitalsPipeline
from kernel.settings import Settings

MS_PER_HOUR = 3_600_000
DEFAULT_PATIENT_HOURS = 1_000 * 14 * 24


def stages(patients: int, hours: int, seed: int) -> tuple[dict[str, float], list[FeatureRow]]:
    """Time each stage of the array path on one cohort; return the feature rows too."""
    settings = Settings()
    config = CohortConfig(patients=patients, seed=seed, duration_ms=hours * MS_PER_HOUR)
    t = time.perf_counter()
    frames = list(minute_frames(config))
    timing = {"simulate": time.perf_counter() - t}
    interval = config.devices.heart_rate_interval_ms
    t = time.perf_counter()
    minutes = [(f.t0_ms, frame_metrics(f, 0, patients, interval)) for f in frames]
    timing["windows"] = time.perf_counter() - t
    engine = BatchFeatureEngine(patients)
    t = time.perf_counter()
    hops = [hop for start, metrics in minutes for hop in engine.add_minute(start, metrics)]
    timing["features"] = time.perf_counter() - t
    people = population(config)
    groups = {p.patient_id: subgroups(p.sex, p.age_years, p.skin_tone) for p in people}
    outcomes = sorted((Outcome.from_wire(out) for e in episodes(config) if (out := e.outcome()) is not None),
                      key=lambda o: o.t_ms)
    core = EvaluationCore(EvaluateOptions(warmup_ms=0), start_ms=config.start_ms, groups=groups)
    rows_index = np.arange(patients)
    columns = feature_columns()
    t = time.perf_counter()
    for ts, x in hops:
        while outcomes and outcomes[0].t_ms <= ts + settings.window_ms:
            core.add_outcome(outcomes.pop(0))
        core.add_hop(ts, rows_index, x, columns)
    core.finish(end_ms=config.start_ms + config.duration_ms, seconds=0.0, patients=patients)
    timing["models"] = time.perf_counter() - t
    ids = [p.patient_id for p in people]
    rows = [FeatureRow(patient_id=ids[i], ts_ms=ts, x=row_dict(columns, x[i])) for ts, x in hops for i in range(patients)]
    timing["rows"] = float(len(rows))
    return timing, rows


def message_stages(patients: int, hours: int, seed: int) -> dict[str, float]:
    """The old path on the same cohort: simulate messages, JSON-encode, pipeline core, feature engine."""
    settings = Settings()
    config = CohortConfig(patients=patients, seed=seed, duration_ms=hours * MS_PER_HOUR)
    t = time.perf_counter()
    messages = list(simulate(config))
    timing = {"simulate_messages": time.perf_counter() - t}
    t = time.perf_counter()
    raws = [(json.dumps(m.payload, separators=(",", ":")).encode(), m.sent_ms) for m in messages
            if m.kind == "reading" and not isinstance(m.payload, bytes)]
    timing["encode"] = time.perf_counter() - t
    pipeline = VitalsPipeline.from_settings(settings)
    t = time.perf_counter()
    windows = []
    for offset, (raw, sent) in enumerate(raws):
        windows += pipeline.on_message(raw, partition=0, offset=offset, record_ts_ms=sent).windows
    windows += pipeline.close_partition(0).windows
    timing["pipeline_core"] = time.perf_counter() - t
    engine = FeatureEngine()
    t = time.perf_counter()
    for w in windows:
        engine.on_window(w, partition=0)
    timing["feature_engine"] = time.perf_counter() - t
    return timing


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


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patients", type=int, default=200)
    parser.add_argument("--hours", type=int, default=6)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--score-rows", type=int, default=20_000)
    parser.add_argument("--train-windows", type=int, default=50_000)
    parser.add_argument("--full", action="store_true", help="also run the default evaluate (1000 x 14 days)")
    parser.add_argument("--message-path", action="store_true", help="also time the old wire-format path")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    timing, rows = stages(args.patients, args.hours, args.seed)
    result: dict[str, Any] = {"cohort": f"{args.patients} patients x {args.hours} h", **timing}
    patient_hours = args.patients * args.hours
    names = ("simulate", "windows", "features", "models")
    per_ph = {k: timing[k] / patient_hours for k in names}
    result["ms_per_patient_hour"] = {k: round(v * 1e3, 3) for k, v in per_ph.items()}
    # One core runs the model loop, the other the feature workers: the slower side bounds the run.
    feature_side = sum(per_ph[k] for k in ("simulate", "windows", "features"))
    result["default_evaluate_extrapolated_s"] = round(max(per_ph["models"], feature_side) * DEFAULT_PATIENT_HOURS, 0)
    if args.message_path:
        old = message_stages(args.patients, args.hours, args.seed)
        result["message_path_ms_per_patient_hour"] = {k: round(v / patient_hours * 1e3, 3) for k, v in old.items()}
    result.update(scoring(rows, args.score_rows))
    result.update(training(rows, args.train_windows))
    if args.full:
        config = CohortConfig(patients=1_000, seed=42, duration_ms=14 * 24 * MS_PER_HOUR)
        processes = default_processes()
        t, cpu, children = time.perf_counter(), time.process_time(), _children_cpu()
        evaluate_cohort(config, EvaluateOptions(), Settings(), processes=processes)
        result["default_evaluate_s"] = round(time.perf_counter() - t, 1)
        result["default_evaluate_cpu_s"] = {"model_loop": round(time.process_time() - cpu, 1),
                                            "feature_workers": round(_children_cpu() - children, 1)}
        result["default_evaluate_processes"] = processes
        result["load_average"] = [round(v, 2) for v in os.getloadavg()]
    if args.json:
        print(json.dumps(result, default=float))
    else:
        for k, v in result.items():
            print(f"{k:>40}: {v:,.1f}" if isinstance(v, float) else f"{k:>40}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
