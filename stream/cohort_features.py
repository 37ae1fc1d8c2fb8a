"""Feature rows of a simulated cohort straight from the simulator's arrays, in worker processes.

``vitalrisk evaluate`` needs the feature rows the pipeline would compute for a simulated
cohort; it does not need the wire format in between. Without faults the simulator's stream
is clean — no drops, duplicates, late or impossible readings, no clock skew or silence — so
validation and de-duplication keep every reading, and each patient's 1-minute window holds
exactly that minute's readings. This module computes those windows from
:func:`simulators.cohort.minute_frames` with numpy (:func:`~stream.batch_features.summarise_columns`,
the same sums as :func:`stream.windows.summarise`) and folds them with
:class:`~stream.batch_features.BatchFeatureEngine`: the same rows as the message path
(``tests/stream/test_cohort_features.py`` compares them), about fifty times faster.

Patients are split into contiguous shards, one per worker process. Each worker steps the
whole cohort's simulation (its random streams are drawn for all patients together, so a
shard cannot draw its own) but measures and summarises only its shard; the parent merges the
shards hop by hop into patient order. Every row is computed from its own patient's numbers
only, in a fixed order, so the merged stream is the same floats whatever the number of
processes.
"""

from __future__ import annotations

import multiprocessing as mp
import queue as queue_module
import traceback
from collections.abc import Iterator
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, TypeAlias

import numpy as np
import numpy.typing as npt

from simulators.cohort import CohortConfig, MinuteFrame, minute_frames
from simulators.devices import WristMinute, wrist_values
from stream.batch_features import BatchFeatureEngine, MetricBatch, feature_columns, summarise_columns
from stream.windows import summarise

if TYPE_CHECKING:
    from multiprocessing.queues import Queue  # generic to the type checker only (not subscriptable in 3.11)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Hops a worker sends at once (an hour): few enough messages, small enough to stream.
CHUNK_HOPS = 12
#: Chunks a worker may run ahead of the parent (bounds memory: ~4 MB each per 500 patients).
QUEUE_CHUNKS = 8
_ROWS = "rows"
_DONE = "done"
_FAILED = "failed"

#: What a worker sends: ``(_ROWS, hops)``, then ``(_DONE, None)``; or ``(_FAILED, traceback text)``.
WorkerQueue: TypeAlias = "Queue[tuple[str, list[tuple[int, FloatArray]] | str | None]]"


class UnsupportedCohort(ValueError):
    """The cohort's stream is not clean enough for the array path (faults are on)."""


def supports(config: CohortConfig) -> bool:
    """Whether :func:`cohort_hops` can run ``config``: no fault of any kind.

    >>> from simulators.faults import FaultRates
    >>> supports(CohortConfig(patients=2)), supports(CohortConfig(patients=2, faults=FaultRates.typical()))
    (True, False)
    """
    return not config.faults.enabled


def shards(patients: int, parts: int) -> list[tuple[int, int]]:
    """Contiguous ``[lo, hi)`` patient ranges, ``parts`` of them (fewer if there are fewer patients).

    >>> shards(5, 2), shards(1, 3)
    ([(0, 2), (2, 5)], [(0, 1)])
    """
    parts = max(1, min(parts, patients))
    edges = [i * patients // parts for i in range(parts + 1)]
    return [(edges[i], edges[i + 1]) for i in range(parts)]


def frame_metrics(frame: MinuteFrame, lo: int, hi: int, heart_rate_interval_ms: int) -> dict[str, MetricBatch]:
    """The 1-minute window statistics of patients ``lo .. hi - 1`` for one simulated minute.

    Rows of the batches are positions in the shard (patient index - ``lo``).

    Raises
    ------
    UnsupportedCohort
        If some wrist device is silent this minute (a silence fault).
    """
    n_sending = len(frame.wrist_rows)
    if n_sending <= hi - 1 or int(frame.wrist_rows[hi - 1]) != hi - 1:
        raise UnsupportedCohort("every wrist device must send every minute (no silence faults)")
    w = frame.wrist
    values = wrist_values(WristMinute(w.heart_rate_bpm[lo:hi], w.steps[lo:hi], w.spo2_pct[lo:hi],
                                      w.respiratory_rate_per_min[lo:hi], w.body_temperature_c[lo:hi]))
    start = frame.t0_ms + frame.wrist_clock_ms[lo:hi]
    base = start + frame.wrist_phase_ms[lo:hi]
    per_minute = values.heart_rate_bpm.shape[1]
    hr_t = base[None, :] + heart_rate_interval_ms * np.arange(per_minute, dtype=np.int64)[:, None]
    hr_v = np.ascontiguousarray(values.heart_rate_bpm.T)
    hr = summarise_columns(hr_t, hr_v)
    out: dict[str, MetricBatch] = {"step_count": MetricBatch.single(None, values.steps)}
    for name, v in (("oxygen_saturation", values.spo2_pct), ("respiratory_rate", values.respiratory_rate_per_min),
                    ("body_temperature", values.body_temperature_c)):
        due = ~np.isnan(v)
        if due.all():
            out[name] = MetricBatch.single(None, v)
        elif due.any():
            rows = np.flatnonzero(due)
            out[name] = MetricBatch.single(rows, v[rows])
    if frame.cuff is not None:
        mine = (frame.cuff_rows >= lo) & (frame.cuff_rows < hi)
        if mine.any():
            rows = frame.cuff_rows[mine] - lo
            out["systolic_blood_pressure"] = MetricBatch.single(rows, frame.cuff.systolic_mmhg[mine])
            out["diastolic_blood_pressure"] = MetricBatch.single(rows, frame.cuff.diastolic_mmhg[mine])
            # The cuff's pulse joins the wrist's heart rate in the same window: summarised like the core does.
            stats = []
            for r, t, pulse in zip(rows.tolist(), frame.cuff_t_ms[mine].tolist(), frame.cuff.pulse_bpm[mine].tolist(),
                                   strict=True):
                points = list(zip(hr_t[:, r].tolist(), hr_v[:, r].tolist(), strict=True))
                stats.append(summarise(points + [(t, pulse)]))
            hr = hr.replace_rows(rows, stats)
    out["heart_rate"] = hr
    return out


def shard_hops(config: CohortConfig, lo: int, hi: int) -> Iterator[tuple[int, FloatArray]]:
    """``(hop boundary ms, rows of patients lo .. hi - 1)`` for every hop of the run, in time order.

    Raises
    ------
    UnsupportedCohort
        If ``config`` has faults.
    """
    if not supports(config):
        raise UnsupportedCohort("the array path needs a cohort without faults; use the message path")
    engine = BatchFeatureEngine(hi - lo)
    interval = config.devices.heart_rate_interval_ms
    for frame in minute_frames(config):
        yield from engine.add_minute(frame.t0_ms, frame_metrics(frame, lo, hi, interval))


def cohort_hops(config: CohortConfig, *, processes: int = 1) -> Iterator[tuple[int, FloatArray]]:
    """Rows of every patient (cohort order, columns :func:`feature_columns`) at every hop, in time order.

    ``processes`` worker processes compute one patient shard each (``0``: all in this
    process); the stream is the same floats either way.
    """
    if processes <= 0:
        yield from shard_hops(config, 0, config.patients)
        return
    parts = shards(config.patients, processes)
    # fork where there is one: starts in milliseconds and needs no importable __main__ (a script
    # or a REPL); the workers run only numpy element-wise code and the simulator, no BLAS or threads.
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context("spawn")
    queues: list[WorkerQueue] = [ctx.Queue(maxsize=QUEUE_CHUNKS) for _ in parts]
    workers = [ctx.Process(target=_worker, args=(config, lo, hi, q), daemon=True, name=f"vitalrisk-features-{lo}")
               for (lo, hi), q in zip(parts, queues, strict=True)]
    for w in workers:
        w.start()
    try:
        while True:
            received = [_receive(q, w) for q, w in zip(queues, workers, strict=True)]
            chunks = [c for c in received if c is not None]
            if not chunks:
                return
            if len(chunks) < len(received):
                raise RuntimeError("feature workers ended out of step")
            for hop in range(len(chunks[0])):
                ts = chunks[0][hop][0]
                yield ts, np.concatenate([c[hop][1] for c in chunks])
    finally:
        for w in workers:
            if w.is_alive():
                w.terminate()
            w.join(timeout=5)
        for q in queues:
            q.close()
            q.cancel_join_thread()


def _receive(q: WorkerQueue, worker: BaseProcess) -> list[tuple[int, FloatArray]] | None:
    """A worker's next chunk of hops; ``None`` once it is done. Raises if it failed or died."""
    while True:
        try:
            kind, body = q.get(timeout=1.0)
        except queue_module.Empty:
            if not worker.is_alive():
                raise RuntimeError(f"feature worker {worker.name} died (exit code {worker.exitcode})") from None
            continue
        if kind == _ROWS and isinstance(body, list):
            return body
        if kind == _DONE:
            return None
        raise RuntimeError(f"feature worker {worker.name} failed:\n{body}")


def _worker(config: CohortConfig, lo: int, hi: int, q: WorkerQueue) -> None:
    try:
        chunk: list[tuple[int, FloatArray]] = []
        for hop in shard_hops(config, lo, hi):
            chunk.append(hop)
            if len(chunk) >= CHUNK_HOPS:
                q.put((_ROWS, chunk))
                chunk = []
        if chunk:
            q.put((_ROWS, chunk))
        q.put((_DONE, None))
    except BaseException:  # noqa: BLE001  # report anything to the parent, which would otherwise wait
        q.put((_FAILED, traceback.format_exc()))


__all__ = ["UnsupportedCohort", "cohort_hops", "feature_columns", "frame_metrics", "shard_hops", "shards",
           "supports"]
