"""How many rows per second the sink writer sustains, beside a raw binary COPY of the same rows.

Run it from the repository root::

    .venv/bin/python bench/bench_sink.py [--patients 200] [--minutes 240] [--batch-windows 2500] [--repeat 3]

It uses the test PostgreSQL cluster (127.0.0.1:25432, state in ``.local/test``), starting it if
it is not running (and stopping it again only then), in a fresh database of its own that it
drops at the end. Each window carries six metrics and one score, so a window is seven rows.

* ``raw COPY`` is the limit: ``COPY ... FROM STDIN (FORMAT BINARY)`` straight into ``features``
  and ``risk_scores`` (primary keys and indexes in place), through psycopg's queued writer (a
  thread sends while Python formats, as the sink's writer does), one transaction per batch, with the
  rows prepared before the clock starts as tuples of database-ready values grouped by patient
  (as the writer sends them: ungrouped, the same COPY is ~1.6x slower).
* ``TimescaleWriter`` is the pipeline's path as a worker runs it: ``write_many(windows, scores)``
  per batch, from the pipeline's frozen dataclasses, through binary COPY into staging tables and
  ``INSERT ... ON CONFLICT DO NOTHING``, committed per batch.
* ``replay`` writes the same batches again: every row conflicts and nothing is inserted.

Tables are truncated before every timed run, and the runs alternate; the best and the median of
``--repeat`` runs are reported for each path (on a shared machine the spread is wide: the load
average is printed).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from infra.postgres import LocalPostgres
from sinks.migrations import migrate
from sinks.timescale import TimescaleWriter
from kernel.events import MetricStats, RiskScore, WindowFeatures
from kernel.settings import Settings

TEST_PG_PORT = 25432
START_MS = 1_767_571_200_000  # 2026-01-05T00:00Z
METRICS = ("heart_rate", "respiratory_rate", "oxygen_saturation", "body_temperature",
           "systolic_blood_pressure", "diastolic_blood_pressure")

Batch = tuple[list[WindowFeatures], list[RiskScore]]


@dataclass(frozen=True, slots=True)
class Result:
    path: str
    rows: int
    runs: tuple[float, ...]  # seconds

    @property
    def best(self) -> float:
        """Rows per second of the fastest run."""
        return self.rows / min(self.runs)

    @property
    def median(self) -> float:
        """Rows per second of the median run."""
        return self.rows / statistics.median(self.runs)


def make_batches(patients: int, minutes: int, batch_windows: int) -> list[Batch]:
    """Deterministic windows and NEWS2-like scores, in event-time order, cut into batches."""
    windows: list[WindowFeatures] = []
    scores: list[RiskScore] = []
    for minute in range(minutes):
        start = START_MS + minute * 60_000
        for p in range(patients):
            patient = f"pt-{p:010x}"
            base = 60.0 + (p * 7 + minute) % 40
            stats = {m: MetricStats(12, base + i, base + i - 2.5, base + i + 3.25) for i, m in enumerate(METRICS)}
            windows.append(WindowFeatures(patient_id=patient, start_ms=start, end_ms=start + 60_000, metrics=stats))
            total = (p + minute) % 8
            scores.append(RiskScore(patient_id=patient, window_start_ms=start, window_end_ms=start + 60_000, model_name="news2", model_version="rcp-2017", score=total / 20, news2_total=total,
                                    news2_band="low" if total < 5 else "medium",
                                    inputs={"heart_rate": base, "respiratory_rate": 16.0, "oxygen_saturation": 96.0},
                                    contributions={"heart_rate": 0.0, "respiratory_rate": 0.0, "oxygen_saturation": 0.0},
                                    missing_inputs=("body_temperature",) if p % 3 else ()))
    return [(windows[i:i + batch_windows], scores[i:i + batch_windows]) for i in range(0, len(windows), batch_windows)]


def rows_in(batches: list[Batch]) -> int:
    return sum(sum(len(w.metrics) for w in ws) + len(ss) for ws, ss in batches)


def _ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def raw_rows(batches: list[Batch]) -> list[tuple[list[tuple[object, ...]], list[tuple[object, ...]]]]:
    """The same rows as the final tables' binary COPY wants them (built outside the clock)."""
    from psycopg.types.json import Jsonb

    out: list[tuple[list[tuple[object, ...]], list[tuple[object, ...]]]] = []
    for windows, scores in batches:
        features: list[tuple[object, ...]] = [(w.patient_id, m, _ts(w.start_ms), _ts(w.end_ms), s.count, s.mean, s.min, s.max)
                    for w in windows for m, s in w.metrics.items()]
        score_tuples: list[tuple[object, ...]] = [(s.patient_id, _ts(s.window_start_ms), _ts(s.window_end_ms), s.model_name, s.model_version,
                         s.score, s.news2_total, s.news2_band, Jsonb(s.inputs), Jsonb(s.contributions),
                         list(s.missing_inputs)) for s in scores]
        features.sort(key=lambda r: str(r[0]))  # grouped by patient, as the writer sends them
        score_tuples.sort(key=lambda r: str(r[0]))
        out.append((features, score_tuples))
    return out


def bench_raw(url: str, prepared: list[tuple[list[tuple[object, ...]], list[tuple[object, ...]]]]) -> float:
    with psycopg.connect(url) as conn:
        started = time.perf_counter()
        for features, scores in prepared:
            with conn.transaction(), conn.cursor() as cur:
                with cur.copy("COPY features (patient_id, metric, window_start, window_end, n, mean, min, max) "
                              "FROM STDIN (FORMAT BINARY)", writer=QueuedLibpqWriter(cur)) as copy:
                    copy.set_types(["text", "text", "timestamptz", "timestamptz", "int4", "float8", "float8",
                                    "float8"])
                    for row in features:
                        copy.write_row(row)
                with cur.copy("COPY risk_scores (patient_id, window_start, window_end, model_name, model_version, "
                              "score, news2_total, news2_band, inputs, contributions, missing_inputs) "
                              "FROM STDIN (FORMAT BINARY)", writer=QueuedLibpqWriter(cur)) as copy:
                    copy.set_types(["text", "timestamptz", "timestamptz", "text", "text", "float8", "int2", "text",
                                    "jsonb", "jsonb", "text[]"])
                    for row in scores:
                        copy.write_row(row)
        return time.perf_counter() - started


async def _bench_writer(url: str, batches: list[Batch]) -> tuple[float, int]:
    async with TimescaleWriter(url, rollup_refresh_s=None) as writer:
        started = time.perf_counter()
        inserted = 0
        for windows, scores in batches:
            inserted += await writer.write_many(windows, scores)
        return time.perf_counter() - started, inserted


def bench_writer(url: str, batches: list[Batch]) -> tuple[float, int]:
    return asyncio.run(_bench_writer(url, batches))


def truncate(owner_url: str) -> None:
    with psycopg.connect(owner_url, autocommit=True) as conn:
        conn.execute("TRUNCATE features, risk_scores")
        conn.execute("VACUUM ANALYZE features, risk_scores")
        conn.execute("CHECKPOINT")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--patients", type=int, default=200)
    parser.add_argument("--minutes", type=int, default=240)
    parser.add_argument("--batch-windows", type=int, default=2_500,
                        help="windows per batch (the worker flushes at 5,000 windows + scores)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    settings = Settings(state_dir=ROOT / ".local" / "test",
                        database_url=f"postgresql://vitalrisk_writer@127.0.0.1:{TEST_PG_PORT}/vitalrisk")
    postgres = LocalPostgres(settings)
    started_here = not postgres.healthy()
    postgres.start()
    admin = postgres.superuser_url.rsplit("/", 1)[0]
    dbname = f"bench_sink_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{admin}/postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    owner_url = f"{admin}/{dbname}"
    writer_url = f"postgresql://vitalrisk_writer@127.0.0.1:{TEST_PG_PORT}/{dbname}"
    try:
        migrate(owner_url)
        batches = make_batches(args.patients, args.minutes, args.batch_windows)
        rows = rows_in(batches)
        prepared = raw_rows(batches)
        # The prepared data is millions of objects: keep the collector from rescanning them
        # whenever the writer allocates (a worker's heap holds one batch, not the whole run).
        gc.collect()
        gc.freeze()
        timings: dict[str, list[float]] = {"raw COPY (binary, final tables)": [], "TimescaleWriter.write_many": [],
                                           "TimescaleWriter replay (all conflicts)": []}
        runs: list[tuple[str, Callable[[], float]]] = [
            ("raw COPY (binary, final tables)", lambda: bench_raw(owner_url, prepared)),
            ("TimescaleWriter.write_many", lambda: _checked(bench_writer(writer_url, batches), rows)),
        ]
        for _ in range(args.repeat):
            for name, run in runs:
                truncate(owner_url)
                timings[name].append(run())
            timings["TimescaleWriter replay (all conflicts)"].append(_checked(bench_writer(writer_url, batches), 0))
        results = [Result(name, rows, tuple(t)) for name, t in timings.items()]
    finally:
        with psycopg.connect(f"{admin}/postgres", autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
        if started_here:
            postgres.stop()

    raw = results[0]
    batch_rows = rows // len(batches)
    print(f"sink benchmark: {args.patients} patients x {args.minutes} min = {rows:,} rows "
          f"({len(batches)} batches of ~{batch_rows:,} rows = {args.batch_windows:,} windows x 6 metrics + scores), "
          f"{args.repeat} runs each, PostgreSQL {postgres.bin.parent.name}, load average {os.getloadavg()[0]:.1f}")
    print(f"{'path':<40} {'best rows/s':>12} {'vs raw':>7} {'median rows/s':>14} {'vs raw':>7}")
    for r in results:
        print(f"{r.path:<40} {r.best:>12,.0f} {r.best / raw.best:>7.0%} {r.median:>14,.0f} {r.median / raw.median:>7.0%}")
    return 0


def _checked(outcome: tuple[float, int], expected_inserted: int) -> float:
    seconds, inserted = outcome
    if inserted != expected_inserted:
        raise SystemExit(f"writer inserted {inserted} rows, expected {expected_inserted}")
    return seconds


if __name__ == "__main__":
    sys.exit(main())
