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
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg
from psycopg import sql

from infra.kafka import LocalKafka
from infra.postgres import LocalPostgres
from infra.processes import child_env, free_port, read_pid
from simulators.cohort import CohortConfig, simulate
from simulators.kafka_publisher import make_producer, publish
from sinks.metrics import scrape
from sinks.migrations import migrate
from kernel.settings import Settings

POLL_S = 0.25  # a scrape renders every metric under the worker's GIL: four a second cost it little
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Services:
    """The pids whose CPU the benchmark accounts for besides the workers'."""

    broker: int
    postmaster: int


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process so far (0 once it has gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def children(parent: int) -> list[int]:
    """The pids whose parent is ``parent`` (PostgreSQL's backends, checkpointer, ... of its postmaster)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == parent:
                    out.append(int(entry.name))
            except OSError:
                continue
    return out


def cpu_by_role(workers: list[int], services: Services) -> dict[str, float]:
    """CPU seconds so far of the workers, the broker, and PostgreSQL (postmaster and its children).

    A backend that exited between two snapshots takes its CPU with it: PostgreSQL's share is a
    lower bound (the workers keep their connections, so few backends come and go mid-run).
    """
    return {"workers": sum(cpu_seconds(p) for p in workers), "broker": cpu_seconds(services.broker),
            "postgres": sum(cpu_seconds(p) for p in (services.postmaster, *children(services.postmaster)))}


@dataclass(frozen=True)
class GroupRun:
    """What one phase measured: its steady rate, the workers' shares and the cores each role used meanwhile."""

    rate: float
    shares: list[float]
    cores: dict[str, float]


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


def group_rate(settings: Settings, workers: int, expected: int, logs: Path, services: Services) -> GroupRun:
    """Messages/s of ``workers`` processes in one group, each worker's share, and the cores used meanwhile."""
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
        cpu: list[dict[str, float]] = []
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
            cpu.append(cpu_by_role([proc.pid for proc, _ in procs], services))
            if sum(seen) >= expected:
                break
            time.sleep(POLL_S)
        else:
            raise RuntimeError("the workers did not finish within 900 s")
        first, last = _steady_window(samples)
        (t0, seen0), (t1, seen1) = samples[first], samples[last]
        cores = {role: (cpu[last][role] - cpu[first][role]) / (t1 - t0) for role in cpu[first]}
        return GroupRun((sum(seen1) - sum(seen0)) / (t1 - t0), [s / sum(seen1) for s in seen1], cores)
    finally:
        for proc, _ in procs:
            proc.send_signal(signal.SIGTERM)
        for proc, _ in procs:
            proc.wait(60)


def _steady_window(samples: list[tuple[float, list[float]]]) -> tuple[int, int]:
    """The first sample where every worker has records and the last where every one still reads.

    >>> _steady_window([(0.0, [0, 0]), (1.0, [10, 0]), (2.0, [20, 5]), (3.0, [30, 15]), (4.0, [35, 25]),
    ...                 (5.0, [35, 30])])
    (2, 4)
    """
    first = next(i for i, (_, seen) in enumerate(samples) if all(seen))
    last = first
    for i in range(first + 1, len(samples)):
        if all(now > before for now, before in zip(samples[i][1], samples[i - 1][1])):
            last = i
    if last == first:
        raise RuntimeError("the workers finished between two scrapes: benchmark more messages")
    return first, last


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
            "patients_topic": f"bench-{tag}.patients", "snapshots_topic": f"bench-{tag}.snapshots",
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
        broker, postmaster = read_pid(kafka.nodes[0].paths.pid), read_pid(postgres.pid_file)
        if broker is None or postmaster is None:
            raise RuntimeError("the broker's or PostgreSQL's pid file names no running process")
        services = Services(broker, postmaster)
        load = os.getloadavg()[0]
        single = group_rate(one, 1, len(messages), base.state_dir, services)
        two, two_db = _run_settings(base, admin, "two")
        databases.append(two_db)
        pair = group_rate(two, 2, len(messages), base.state_dir, services)

        print(f"scale-out benchmark: {args.patients} patients x {args.hours} h = {len(messages):,} messages, "
              f"{readings:,} readings ({per_message:.1f} per message), {args.partitions} partitions, "
              f"{os.cpu_count()} cores, load average {load:.1f} at the start")
        print(f"  {'workers':<10}{'readings/s':>12}{'vs one':>8}   cores used: workers / broker / postgres"
              "   shares of the messages read")
        for n, run in ((1, single), (2, pair)):
            cores = " / ".join(f"{run.cores[role]:.2f}" for role in ("workers", "broker", "postgres"))
            shares = " / ".join(f"{s:.0%}" for s in run.shares) if n > 1 else ""
            print(f"  {n:<10}{run.rate * per_message:>12,.0f}{run.rate / single.rate:>8.2f}   {cores:<38}{shares}")
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
