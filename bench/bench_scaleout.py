"""Readings per second of one worker and of two workers in one consumer group, on the same 12-partition topic.

Run: ``.venv/bin/python bench/bench_scaleout.py [--patients 300] [--hours 2] [--partitions 12]``

One seeded cohort is published once; then, in the same run, one real ``vitalrisk worker`` drains it
under a consumer group of its own, and two workers drain it again under another (fresh output
topics and database each time, so the second run writes everything again). Each rate is taken
between two scrapes of the workers' ``vitals_messages_total`` made mid-stream: from the first scrape
at which every worker of the run has records (after the group's last rebalance) to the last one at
which every worker still reads, so start-up, rebalance and the tail where one worker has finished
its share cost nothing. A partition's new owner replays it from the committed offset after the
rebalance; those records are processed again and counted.

It starts the local Kafka and PostgreSQL if they are not running (and stops them after).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg
from psycopg import sql

from infra.kafka import LocalKafka
from infra.postgres import LocalPostgres
from infra.processes import child_env, free_port
from simulators.cohort import CohortConfig, simulate
from simulators.kafka_publisher import make_producer, publish
from sinks.metrics import scrape
from sinks.migrations import migrate
from kernel.settings import Settings

POLL_S = 0.25  # a scrape renders every metric under the worker's GIL: four a second cost it little


def _run_settings(base: Settings, admin: str, name: str) -> tuple[Settings, str]:
    """``base``'s readings topic under a group, output topics and database of their own: (settings, dbname)."""
    tag = f"{name}-{uuid.uuid4().hex[:6]}"
    dbname = f"bench_{tag.replace('-', '_')}"
    with psycopg.connect(f"{admin}/postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    migrate(f"{admin}/{dbname}")
    settings = base.model_copy(update={
        "app_id": f"{base.app_id}-{tag}", "deadletter_topic": f"{base.deadletter_topic}-{tag}",
        "scores_topic": f"{base.scores_topic}-{tag}", "features_topic": f"{base.features_topic}-{tag}",
        "database_url": base.database_url.rsplit("/", 1)[0] + f"/{dbname}"})
    LocalKafka(settings).create_topics()
    return settings, dbname


def group_rate(settings: Settings, workers: int, expected: int, logs: Path) -> tuple[float, list[float]]:
    """(messages/s of ``workers`` processes in one group, each worker's share of the messages read)."""
    procs: list[tuple[subprocess.Popen[bytes], str]] = []
    for n in range(workers):
        port = free_port()
        own = settings.model_copy(update={"data_dir": settings.data_dir.with_name(f"{settings.data_dir.name}-w{n}")})
        with open(logs / f"bench-scaleout-{settings.app_id}-{n}.log", "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "stream.cli", "worker"], cwd=ROOT,
                                    env=child_env(own, VITALS_METRICS_PORT=str(port)),
                                    stdout=out, stderr=subprocess.STDOUT)
        procs.append((proc, f"http://127.0.0.1:{port}/metrics"))
    try:
        samples: list[tuple[float, list[float]]] = []
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            seen = []
            for proc, url in procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"a worker exited with {proc.returncode}; see {logs}")
                try:
                    seen.append(scrape(url, "vitals_messages_total"))
                except OSError:
                    seen.append(0.0)
            samples.append((time.perf_counter(), seen))
            if sum(seen) >= expected:
                break
            time.sleep(POLL_S)
        else:
            raise RuntimeError("the workers did not finish within 900 s")
        return _steady_rate(samples), [s / sum(samples[-1][1]) for s in samples[-1][1]]
    finally:
        for proc, _ in procs:
            proc.send_signal(signal.SIGTERM)
        for proc, _ in procs:
            proc.wait(60)


def _steady_rate(samples: list[tuple[float, list[float]]]) -> float:
    """Messages/s from the first sample where every worker has records to the last where every one still reads.

    >>> _steady_rate([(0.0, [0, 0]), (1.0, [10, 0]), (2.0, [20, 5]), (3.0, [30, 15]), (4.0, [35, 25]),
    ...               (5.0, [35, 30])])
    17.5
    """
    first = next(i for i, (_, seen) in enumerate(samples) if all(seen))
    last = first
    for i in range(first + 1, len(samples)):
        if all(now > before for now, before in zip(samples[i][1], samples[i - 1][1])):
            last = i
    if last == first:
        raise RuntimeError("the workers finished between two scrapes: benchmark more messages")
    (t0, seen0), (t1, seen1) = samples[first], samples[last]
    return (sum(seen1) - sum(seen0)) / (t1 - t0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=300)
    parser.add_argument("--hours", type=int, default=2)
    parser.add_argument("--partitions", type=int, default=12)
    args = parser.parse_args()

    base = Settings()
    postgres, kafka = LocalPostgres(base), LocalKafka(base)
    started = [svc for svc in (postgres, kafka) if not svc.healthy()]
    postgres.start()
    kafka.start()
    tag = uuid.uuid4().hex[:8]
    admin = postgres.superuser_url.rsplit("/", 1)[0]
    databases: list[str] = []
    try:
        base = base.model_copy(update={
            "app_id": f"bench-{tag}", "readings_topic": f"bench-{tag}.readings",
            "deadletter_topic": f"bench-{tag}.deadletter", "scores_topic": f"bench-{tag}.scores",
            "features_topic": f"bench-{tag}.features", "outcomes_topic": f"bench-{tag}.outcomes",
            "database_url": f"postgresql://vitalrisk_writer@127.0.0.1:{postgres.target.port}/vitalrisk",
            "data_dir": base.state_dir / "faust" / f"bench-{tag}", "idle_timeout_s": 2.0,
            "partitions": args.partitions})
        config = CohortConfig(patients=args.patients, seed=11, duration_ms=args.hours * 3_600_000)
        messages = [m for m in simulate(config) if m.kind == "reading"]
        readings = sum(len(m.payload["readings"]) for m in messages)
        per_message = readings / len(messages)
        one, one_db = _run_settings(base, admin, "one")
        databases.append(one_db)
        producer = make_producer(one)
        publish(messages, settings=one, producer=producer)
        producer.close()
        rate_one, _ = group_rate(one, 1, len(messages), base.state_dir)
        two, two_db = _run_settings(base, admin, "two")
        databases.append(two_db)
        rate_two, shares = group_rate(two, 2, len(messages), base.state_dir)

        print(f"scale-out benchmark: {args.patients} patients x {args.hours} h = {len(messages):,} messages, "
              f"{readings:,} readings ({per_message:.1f} per message), {args.partitions} partitions, "
              f"{os.cpu_count()} cores")
        print(f"  {'workers':<10}{'readings/s':>12}{'vs one':>8}   shares of the messages read")
        print(f"  {'1':<10}{rate_one * per_message:>12,.0f}{1.0:>8.2f}")
        print(f"  {'2':<10}{rate_two * per_message:>12,.0f}{rate_two / rate_one:>8.2f}   "
              + " / ".join(f"{s:.0%}" for s in shares))
        print("  goal: two workers >= 1.7 x one")
        return 0
    finally:
        with psycopg.connect(f"{admin}/postgres", autocommit=True) as conn:
            for dbname in databases:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
        for svc in reversed(started):
            svc.stop()


if __name__ == "__main__":
    sys.exit(main())
