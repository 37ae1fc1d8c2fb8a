"""Readings per second of CPU time through the pure core, :meth:`stream.pipeline.VitalsPipeline.on_message`.

Run: ``.venv/bin/python bench/bench_core.py [--patients 200] [--hours 2] [--runs 3] [--flush-every 0] [--profile]``

The messages are the simulated cohort's, JSON-encoded as the publisher sends them, fed as
:func:`bench.bench_stream.core_rate` does (six partitions by key, offsets in arrival order),
with no Kafka and no database. The machine is shared, so the rate is by CPU time
(``time.process_time``), best of ``--runs`` fresh pipelines. ``--flush-every N`` also takes a
checkpoint of every partition each N messages, as the worker does at each flush.
``--profile`` adds a cProfile of one more run, top 25 by own time.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from simulators.cohort import CohortConfig, simulate
from stream.pipeline import VitalsPipeline
from kernel.settings import Settings

PARTITIONS = 6


def build_messages(patients: int, hours: int) -> tuple[list[tuple[bytes, int, int]], int]:
    """``(raw, partition, record timestamp)`` per device message, and the number of readings."""
    config = CohortConfig(patients=patients, seed=11, duration_ms=hours * 3_600_000)
    messages = [m for m in simulate(config) if m.kind == "reading"]
    readings = sum(len(m.payload["readings"]) for m in messages if isinstance(m.payload, dict))
    # crc32 rather than hash(): the same partitions in every process, so runs compare.
    records = [(m.payload if isinstance(m.payload, bytes) else json.dumps(m.payload).encode(),
                zlib.crc32(m.key.encode()) % PARTITIONS, m.sent_ms) for m in messages]
    return records, readings


def run(records: list[tuple[bytes, int, int]], flush_every: int) -> float:
    """CPU seconds for one fresh pipeline to take every record."""
    pipeline = VitalsPipeline.from_settings(Settings())
    on_message = pipeline.on_message
    start = time.process_time()
    for offset, (raw, partition, ts) in enumerate(records):
        on_message(raw, partition=partition, offset=offset, record_ts_ms=ts)
        if flush_every and offset % flush_every == flush_every - 1:
            for p in range(PARTITIONS):
                pipeline.save(p, pipeline.checkpoint(p))
    return time.process_time() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=200)
    parser.add_argument("--hours", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--flush-every", type=int, default=0, help="checkpoint every N messages (0: never)")
    parser.add_argument("--profile", action="store_true", help="print a cProfile top 25 by own time")
    args = parser.parse_args()

    records, readings = build_messages(args.patients, args.hours)
    cpu = [run(records, args.flush_every) for _ in range(args.runs)]
    best = min(cpu)
    print(f"core benchmark: {args.patients} patients x {args.hours} h = {len(records):,} messages, "
          f"{readings:,} readings; flush every {args.flush_every or 'never'}")
    print(f"  CPU s per run: {', '.join(f'{s:.3f}' for s in cpu)}")
    print(f"  best: {readings / best:,.0f} readings/s ({len(records) / best:,.0f} messages/s) of CPU time")
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(run, records, args.flush_every)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    return 0


if __name__ == "__main__":
    sys.exit(main())
