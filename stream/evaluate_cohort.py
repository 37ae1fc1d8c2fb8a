"""A simulated cohort through the pipeline core and the model loop, in one process, no Kafka.

:func:`evaluate_cohort` drives :class:`stream.evaluate_loop.EvaluationCore` from a simulated
cohort. A cohort without faults (the default) takes the array path: the simulator's per-minute
arrays become the pipeline's 1-minute window statistics and feature rows with numpy
(:mod:`stream.cohort_features`, :mod:`stream.batch_features`; the same rows the pipeline
computes, tested), in worker processes by patient shard, merged hop by hop in (time, patient)
order into one model loop, so the result does not depend on the number of processes. A cohort
with faults goes, as wire bytes, through the same pure core the worker runs
(:class:`stream.pipeline.VitalsPipeline`: validation, de-duplication and event-time windows; one
partition, offsets a counter, record time the send time), then through the feature engine
(:class:`stream.features.FeatureEngine`: a row per patient every 5 minutes of event time).
Outcome events reach the loop when the simulator sends them.
"""

from __future__ import annotations

import gc
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import replace

import numpy as np

from kernel.events import FeatureRow, WindowFeatures
from kernel.settings import Settings
from models.fairness import patient_record
from models.labelling import Outcome
from models.patient_context import PatientContext, patient_columns, patient_matrix
from simulators.cohort import CohortConfig, episodes, population, simulate
from stream.alert_tuning import Candidate
from stream.cohort_features import cohort_hops, feature_columns, supports
from stream.evaluate_loop import EvaluateOptions, EvaluationCore
from stream.evaluate_report import EvaluationResult
from stream.features import FeatureEngine
from stream.pipeline import VitalsPipeline

#: ``progress(fraction_done, rows_scored)``.
Progress = Callable[[float, int], None]
#: The model's heads -> the candidate alert policies a cohort replays (:func:`stream.alert_tuning.candidate_grid`).
Grid = Callable[[Sequence[str]], Sequence[Candidate]]


def evaluate_cohort(config: CohortConfig, options: EvaluateOptions, settings: Settings, *,
                    progress: Progress | None = None, processes: int | None = None,
                    candidates: Sequence[Candidate] = ()) -> EvaluationResult:
    """Run the cohort of ``config`` through everything.

    A cohort without faults takes the array path: feature rows straight from the simulator's
    arrays (:mod:`stream.cohort_features`, the rows the pipeline would compute), in
    ``processes`` worker processes (``0``: in this process; ``None``: one per spare core),
    merged hop by hop in (time, patient) order into the one model loop, so the result does not
    depend on ``processes``. A cohort with faults goes through the pipeline core as wire
    messages (validation, de-duplication, late readings), one process.

    ``progress(fraction_done, rows_scored)`` is called about twice a second. The result's
    ``tallies`` hold every one of ``candidates`` (alert policies replayed per patient, for
    :mod:`stream.alert_tuning`) besides the default policy.
    """

    with _few_collections():
        if supports(config):
            return _evaluate_arrays(config, options, settings, progress=progress,
                                    processes=default_processes() if processes is None else processes,
                                    candidates=candidates)
        return evaluate_messages(config, options, settings, progress=progress, candidates=candidates)


def evaluate_cohorts(configs: Sequence[CohortConfig], options: EvaluateOptions, settings: Settings, *,
                     grid: Grid | None = None, jobs: int | None = None,
                     done: Callable[[EvaluationResult], None] | None = None) -> list[EvaluationResult]:
    """Several cohorts through :func:`evaluate_cohort`, ``jobs`` at a time in worker processes.

    Each cohort runs in one process (its features computed in that process, so ``jobs``
    cohorts use about ``jobs`` cores; default: one per core, at most one per cohort), and
    sends back its result without the plots' data (the score sketches and trajectories): its
    summary and its per-patient tallies of the candidate policies ``grid(options.conditions)``
    (a module-level function, e.g. :func:`stream.alert_tuning.candidate_grid`: a worker builds the
    policies itself), small beside the scores it replayed.
    ``jobs=1`` runs them one after the other in this process, each with the default feature
    processes. Results in the order of ``configs``; ``done(result)`` is called as each finishes.
    """

    n = len(configs)
    workers = max(1, min(n, jobs if jobs is not None else (os.cpu_count() or 1)))
    results: dict[int, EvaluationResult] = {}
    if workers == 1:
        candidates = grid(options.conditions) if grid is not None else ()
        for i, config in enumerate(configs):
            results[i] = _lean(evaluate_cohort(config, options, settings, candidates=candidates))
            if done is not None:
                done(results[i])
        return [results[i] for i in range(n)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(_evaluate_lean, config, options, settings, grid): i
                   for i, config in enumerate(configs)}
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            if done is not None:
                done(results[futures[future]])
    return [results[i] for i in range(n)]


def _evaluate_lean(config: CohortConfig, options: EvaluateOptions, settings: Settings,
                   grid: Grid | None) -> EvaluationResult:
    """One cohort in a worker process of :func:`evaluate_cohorts`: features in this process."""
    candidates = grid(options.conditions) if grid is not None else ()
    return _lean(evaluate_cohort(config, options, settings, processes=0, candidates=candidates))


def _lean(result: EvaluationResult) -> EvaluationResult:
    """``result`` without what only the plots read."""
    return replace(result, sketches={}, examples=[])


@contextmanager
def _few_collections() -> Iterator[None]:
    """Run with Python's cyclic garbage collector mostly idle, then restore its thresholds.

    A run holds about a million small tracked objects (held windows, their labels); every full
    collection walks all of them, and at the default thresholds that costs 10-15 % of the run.
    The run makes almost no reference cycles (a few dozen objects over a whole run).
    """
    before = gc.get_threshold()
    gc.set_threshold(200_000, 100, 100)
    try:
        yield
    finally:
        gc.set_threshold(*before)


def default_processes() -> int:
    """Feature worker processes by default: one per core beside the model loop's (at least one).

    >>> default_processes() >= 1
    True
    """
    return max(1, (os.cpu_count() or 1) - 1)


def _evaluate_arrays(config: CohortConfig, options: EvaluateOptions, settings: Settings, *,
                     progress: Progress | None, processes: int, candidates: Sequence[Candidate]) -> EvaluationResult:
    """The array path: feature rows from the simulator's arrays, a hop of every patient at a time."""
    started = time.monotonic()
    patients = population(config)
    records = [patient_record(p) for p in patients]
    groups = {r.patient_id: r.groups for r in records}
    core = EvaluationCore(options, start_ms=config.start_ms, groups=groups, news2_carry_ms=settings.news2_carry_ms)
    end_ms = config.start_ms + config.duration_ms
    columns: tuple[str, ...] = feature_columns()
    inputs = None
    if options.patient_inputs:
        inputs = patient_matrix(records, options.patient_inputs)
        columns = (*columns, *patient_columns(options.patient_inputs))
    # Outcome events in the order simulate() sends them (by send time; ties in plan order).
    sent = sorted(((e.onset_ms + config.outcome_delay_ms, i, Outcome.from_wire(out))
                   for i, e in enumerate(episodes(config)) if (out := e.outcome()) is not None),
                  key=lambda item: item[:2])
    outcomes = [(at, outcome) for at, _, outcome in sent]
    next_outcome = 0
    rows = np.arange(len(patients), dtype=np.int64)
    last_report = 0.0
    for ts, X in cohort_hops(config, processes=processes):
        # A hop's rows exist once its last minute's window has closed: about a minute after ts,
        # when the next minute's messages arrive; outcomes sent before then are known first.
        while next_outcome < len(outcomes) and outcomes[next_outcome][0] <= ts + settings.window_ms:
            core.add_outcome(outcomes[next_outcome][1])
            next_outcome += 1
        core.add_hop(ts, rows, X if inputs is None else np.hstack([X, inputs]), columns)
        if progress is not None:
            now = time.monotonic()
            if now - last_report >= 0.5:
                last_report = now
                progress(min(1.0, (ts - config.start_ms) / config.duration_ms), core.windows_scored)
    for _, outcome in outcomes[next_outcome:]:
        core.add_outcome(outcome)
    if progress is not None:
        progress(1.0, core.windows_scored)
    return core.finish(end_ms=end_ms, seconds=time.monotonic() - started, patients=len(patients), seed=config.seed,
                       candidates=candidates)


def evaluate_messages(config: CohortConfig, options: EvaluateOptions, settings: Settings, *,
                      progress: Progress | None, candidates: Sequence[Candidate] = ()) -> EvaluationResult:
    """The message path: wire bytes through :class:`~stream.pipeline.VitalsPipeline`, then the feature engine.

    :func:`evaluate_cohort` takes it for a cohort with faults; any cohort can take it (the tests
    compare it with the array path).
    """

    started = time.monotonic()
    patients = population(config)
    records = [patient_record(p) for p in patients]
    groups = {r.patient_id: r.groups for r in records}
    context = PatientContext(options.patient_inputs)
    for record in records:
        context.update(record)
    core = EvaluationCore(options, start_ms=config.start_ms, groups=groups, news2_carry_ms=settings.news2_carry_ms,
                          context=context)
    pipeline = VitalsPipeline.from_settings(settings)
    engine = FeatureEngine()
    end_ms = config.start_ms + config.duration_ms
    buffer: list[FeatureRow] = []
    last_report = 0.0

    def flush() -> None:
        if buffer:
            core.add_rows(buffer)
            core.advance(max(r.ts_ms for r in buffer))
            buffer.clear()

    def take(windows: Iterable[WindowFeatures]) -> None:
        for window in windows:
            buffer.extend(engine.on_window(window, partition=0).rows)

    for offset, message in enumerate(simulate(config)):
        payload = message.payload
        if message.kind == "outcome":
            flush()
            core.add_outcome(Outcome.from_wire(json.loads(payload) if isinstance(payload, bytes) else payload))
            continue
        raw = payload if isinstance(payload, bytes) else json.dumps(payload, separators=(",", ":")).encode()
        step = pipeline.on_message(raw, partition=0, offset=offset, record_ts_ms=message.sent_ms)
        if step.windows:
            take(step.windows)
            if len(buffer) >= 1024:
                flush()
        if progress is not None and offset % 2048 == 0:
            now = time.monotonic()
            if now - last_report >= 0.5:
                last_report = now
                progress(min(1.0, (message.sent_ms - config.start_ms) / config.duration_ms), core.windows_scored)
    take(pipeline.close_partition(0).windows)
    flush()
    if progress is not None:
        progress(1.0, core.windows_scored)
    return core.finish(end_ms=end_ms, seconds=time.monotonic() - started, patients=len(patients), seed=config.seed,
                       candidates=candidates)
