"""``vitalrisk evaluate``: simulator -> pipeline core -> features -> models, in one process, no Kafka.

The live system's loop, run as fast as it goes on a simulated cohort, and judged. The job is
split by module:

- :mod:`stream.evaluate_cohort` drives a simulated cohort through the pipeline core's feature
  rows (the array path, or wire bytes through :class:`~stream.pipeline.VitalsPipeline` for a
  cohort with faults) into the model loop;
- :mod:`stream.evaluate_loop` is that loop (:class:`~stream.evaluate_loop.EvaluationCore`) and
  its options: each row scored by the current model snapshot and by NEWS2 on the same row, held
  by the :class:`~models.labelling.DelayedLabeller` until the outcomes label it, then judged
  (prequential) and learned by the trainer, whose hourly snapshots the scorer swaps to;
- :mod:`stream.evaluate_burden` replays the default alert policy over the scores: pages per
  patient-day, page PPV, episode sensitivity and lead time, per outcome kind;
- :mod:`stream.evaluate_report` holds what a run measured, as one JSON object (``--json``) or
  as the text report;
- :mod:`stream.alert_tuning` is the honest protocol of ``--tune-seeds``/``--test-seeds``: the
  alert policy chosen on some cohorts by a rule in code, then frozen and reported on others;
- :mod:`stream.evaluate_plots` draws ROC, calibration and example trajectories to ``--out``
  when matplotlib is installed.

The report covers windows scored after a warm-up (default 3 days, while the model is young):
AUROC, AUPRC, Brier score and ECE of the model and NEWS2 per condition; the subgroup table and
fairness flags; ADWIN drift events; and the alert burden.

Simulated cohorts prove the machinery, not clinical validity: the simulator's physiology and
its deteriorations are ours, so a model that beats NEWS2 here has learned our simulator.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import TextIO

import psycopg

from kernel.events import OpsEvent
from kernel.settings import TRAINER_ROLE, Settings
from models.labelling import MS_PER_DAY
from models.patient_context import parse_inputs
from simulators.cohort import CohortConfig
from sinks.timescale import write_ops_events
from stream.alert_tuning import Protocol, candidate_grid, check_seeds, operating_point, run_protocol
from stream.evaluate_cohort import Progress, evaluate_cohort, evaluate_cohorts
from stream.evaluate_loop import DEFAULT_CANDIDATE, EvaluateOptions
from stream.evaluate_plots import write_plots
from stream.evaluate_report import EvaluationResult, JsonValue, burden_event, format_protocol, format_report

#: Default directory of the plots.
DEFAULT_OUT_DIR = Path("docs/img")


def _progress_bar(stream: TextIO) -> Progress:
    started = time.monotonic()

    def show(fraction: float, rows: int) -> None:
        elapsed = time.monotonic() - started
        eta = elapsed / fraction - elapsed if fraction > 0.001 else math.nan
        filled = int(30 * fraction)
        eta_text = "--:--" if math.isnan(eta) else f"{int(eta // 60):02d}:{int(eta % 60):02d}"
        stream.write(f"\r[{'#' * filled}{' ' * (30 - filled)}] {100 * fraction:5.1f}%  {rows:,} rows scored  "
                     f"elapsed {int(elapsed // 60):02d}:{int(elapsed % 60):02d}  eta {eta_text} ")
        stream.flush()
    return show


def run_evaluate(settings: Settings, patients: int, days: float, seed: int, model: str, as_json: bool,
                 out_dir: Path | str | None = DEFAULT_OUT_DIR, *, store: bool = False, stdout: TextIO | None = None,
                 stderr: TextIO | None = None) -> int:
    """``vitalrisk evaluate``: run, print the report (or one JSON object), write plots; exit status.

    A bad argument, a plot folder that cannot be made, or (``store``) a database that cannot be
    reached ends in one line on stderr (exit 2) before the run, not after minutes of it. With
    ``store`` the default policy's alert burden, overall and per subgroup, is recorded for the
    Model board (:func:`store_burden`).
    """

    out, err = stdout or sys.stdout, stderr or sys.stderr
    if patients < 1 or days <= 0:
        err.write("vitalrisk: evaluate needs --patients >= 1 and --days > 0\n")
        return 2
    if store and not _database_reachable(settings, err):
        return 2
    if out_dir is not None:
        try:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            err.write(f"vitalrisk: cannot make the plot folder --out {out_dir}: {exc.strerror or exc}\n")
            return 2
    config, options = _cohort(settings, patients, days, seed, model)
    result = evaluate_cohort(config, options, settings, progress=_progress_bar(err))
    err.write("\n")
    paths = write_plots(result, Path(out_dir)) if out_dir is not None else []
    if out_dir is not None and not paths:
        err.write("vitalrisk: matplotlib is not installed: no plots written\n")
    if as_json:
        summary = result.summary()
        plots: list[JsonValue] = [str(p) for p in paths]
        summary["plots"] = plots
        out.write(json.dumps(summary, separators=(",", ":")) + "\n")
    else:
        out.write(format_report(result) + "\n")
        for p in paths:
            out.write(f"  plot: {p}\n")
    if store and result.tallies is not None:
        overall = operating_point([result.tallies], DEFAULT_CANDIDATE)
        event = burden_event(ts_ms=int(time.time() * 1000), model=model, policy=DEFAULT_CANDIDATE, tune_seeds=(),
                             test_seeds=(seed,), patients=patients, days=days, overall=overall,
                             subgroups=result.subgroup_burden)
        return store_burden(settings, event, err)
    return 0


def _database_reachable(settings: Settings, err: TextIO) -> bool:
    try:
        with psycopg.connect(settings.for_service(TRAINER_ROLE).database_url, connect_timeout=10):
            return True
    except psycopg.Error as exc:
        err.write(f"vitalrisk: evaluate --store: cannot reach the database: {_first_line(exc)}\n")
        return False


def store_burden(settings: Settings, event: OpsEvent, err: TextIO) -> int:
    """Record a run's alert burden (:func:`stream.evaluate_report.burden_event`) in ``ops_events``; exit status.

    As the trainer's role (``VITALS_DATABASE_URL``'s server, user ``vitalrisk_trainer``), which
    records the model's other quality events (drift, fairness gaps) there: the Model board's
    "Alert burden by subgroup" table reads the newest one. Stored in ``ops_events`` rather than a
    table of its own because it is one such event per run, kept for audit, and needs no new
    role or grant. A database error ends in one line (exit 1); the report was printed before.
    """
    try:
        with psycopg.connect(settings.for_service(TRAINER_ROLE).database_url, connect_timeout=10) as conn:
            write_ops_events(conn, [event])
    except psycopg.Error as exc:
        err.write(f"vitalrisk: evaluate --store: the burden was not stored: {_first_line(exc)}\n")
        return 1
    subgroups = event.details.get("subgroups")
    err.write(f"vitalrisk: evaluate --store: alert burden recorded ({event.subject}, "
              f"{len(subgroups) if isinstance(subgroups, list) else 0} subgroups)\n")
    return 0


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _cohort(settings: Settings, patients: int, days: float, seed: int, model: str) -> tuple[CohortConfig,
                                                                                            EvaluateOptions]:
    duration_ms = int(round(days * MS_PER_DAY / 60_000)) * 60_000
    config = CohortConfig(patients=patients, seed=seed, duration_ms=duration_ms)
    options = EvaluateOptions(model=model, warmup_ms=min(3 * MS_PER_DAY, duration_ms // 2),
                              patient_inputs=parse_inputs(settings.model_patient_inputs))
    return config, options


def run_protocol_evaluate(settings: Settings, patients: int, days: float, tune_seeds: tuple[int, ...],
                          test_seeds: tuple[int, ...], model: str, as_json: bool, *, jobs: int | None = None,
                          store: bool = False, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """``vitalrisk evaluate --tune-seeds ... --test-seeds ...``: choose on some cohorts, report on others.

    Every cohort (``patients`` x ``days``, one per seed) runs, ``jobs`` at a time
    (:func:`stream.evaluate_cohort.evaluate_cohorts`), each replaying every candidate policy of
    :func:`stream.alert_tuning.candidate_grid`; the policy is chosen from the tuning cohorts'
    tallies alone and reported on the test cohorts (:func:`stream.alert_tuning.run_protocol`).
    Prints the protocol's report, or one JSON object: ``protocol`` (which seeds did what, the
    rule, the choice, its test results) and ``cohorts`` (each cohort's role and summary). No plots.
    Bad seeds end in one line on stderr (exit 2) before any cohort runs.
    """
    out, err = stdout or sys.stdout, stderr or sys.stderr
    try:
        check_seeds(tune_seeds, test_seeds)
    except ValueError as exc:
        err.write(f"vitalrisk: evaluate: {exc}\n")
        return 2
    if patients < 1 or days <= 0:
        err.write("vitalrisk: evaluate needs --patients >= 1 and --days > 0\n")
        return 2
    if store and not _database_reachable(settings, err):
        return 2
    seeds = (*tune_seeds, *test_seeds)
    pairs = [_cohort(settings, patients, days, s, model) for s in seeds]
    options = pairs[0][1]
    candidates = candidate_grid(options.conditions)
    err.write(f"vitalrisk evaluate: {len(seeds)} cohorts of {patients} patients x {days:g} days, "
              f"{len(candidates)} candidate policies each\n")

    def done(result: EvaluationResult) -> None:
        seed = result.tallies.seed if result.tallies is not None else "?"
        err.write(f"  cohort seed {seed} done in {result.seconds:.0f} s\n")
        err.flush()

    started = time.monotonic()
    results = evaluate_cohorts([c for c, _ in pairs], options, settings, grid=candidate_grid, jobs=jobs, done=done)
    tallies = [r.tallies for r in results]
    if any(t is None for t in tallies):
        raise RuntimeError("evaluate_cohort returned a result without tallies")  # finish() always sets them
    k = len(tune_seeds)
    protocol = run_protocol([t for t in tallies[:k] if t is not None], [t for t in tallies[k:] if t is not None],
                            candidates)
    seconds = time.monotonic() - started
    if as_json:
        cohorts: list[JsonValue] = [{"seed": s, "role": "tune" if i < k else "test", "summary": r.summary()}
                                    for i, (s, r) in enumerate(zip(seeds, results, strict=True))]
        report: dict[str, JsonValue] = {"patients": patients, "days": days, "protocol": _protocol_json(protocol),
                                        "cohorts": cohorts, "seconds": round(seconds, 1)}
        out.write(json.dumps(report, separators=(",", ":")) + "\n")
    else:
        out.write(format_protocol(protocol, patients=patients, days=days, seconds=seconds) + "\n")
    if store:
        event = burden_event(ts_ms=int(time.time() * 1000), model=model, policy=protocol.selection.chosen.name,
                             tune_seeds=tune_seeds, test_seeds=test_seeds, patients=patients, days=days,
                             overall=protocol.test_pooled, subgroups=protocol.test_subgroups)
        return store_burden(settings, event, err)
    return 0


def _protocol_json(protocol: Protocol) -> JsonValue:
    value: JsonValue = protocol.as_dict()  # the tuning module's JSON values are this report's
    return value
