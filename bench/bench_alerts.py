"""Benchmark: from the score that crosses the threshold (produced to Kafka) to the signed webhook
received by the pager, over many alert episodes.

Runs the real ``alerter`` and ``pager`` processes against a running Kafka broker and PostgreSQL
(by default the test services on 29092/25432: ``VITALS_KEEP_TEST_SERVICES=1 pytest`` or
``vitalrisk infra start`` for the local ones), in a throwaway database and topic of its own::

    .venv/bin/python bench/bench_alerts.py --episodes 200 --rate 20

Each episode is one patient whose NEWS2 score jumps to 9; the benchmark timestamps the produce
call of that score and the pager stamps its arrival (same host clock). The alert policy pages on
the first breaching score here (``alert_for_s=0``); with a minimum duration the latency runs from
the score that completes it, and is the same. Prints p50/p90/p99/max and checks every episode
paged exactly once.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg
from kafka import KafkaProducer
from psycopg import sql

from kernel.events import RiskScore
from kernel.kafka_security import kafka_python_options
from kernel.settings import Settings
from kernel.wire import encode_score
from infra.kafka import LocalKafka
from infra.postgres import LocalPostgres
from infra.processes import free_port
from sinks.migrations import migrate

SECRET = "bench-secret"
START_MS = 1_767_571_200_000


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of ``values`` (``q`` in [0, 100]).

    >>> percentile([1.0, 2.0, 3.0, 4.0], 50), percentile([1.0, 2.0, 3.0, 4.0], 99)
    (2.0, 4.0)
    """
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def score(patient: str, minute: int, total: int) -> RiskScore:
    subscores = {"respiratory_rate": min(total, 3), "heart_rate": min(max(total - 3, 0), 3),
                 "spo2": max(total - 6, 0)}
    return RiskScore(patient_id=patient, window_start_ms=START_MS + (minute - 1) * 60_000, window_end_ms=START_MS + minute * 60_000, model_name="news2",
                     model_version="rcp-2017-scale1", score=total / 20, news2_total=total, news2_band="high" if total >= 7 else "low", inputs={},
                     contributions={k: float(v) for k, v in subscores.items() if v}, news2_subscores=subscores)


def records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait(what: str, check: Any, timeout_s: float, procs: list[subprocess.Popen[bytes]], logs: list[Path]) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            raise SystemExit(f"a process died waiting for {what}:\n" + "\n".join(log.read_text()[-2000:] for log in logs))
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}:\n" + "\n".join(log.read_text()[-2000:] for log in logs))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20.0, help="episodes per second (0: one at a time)")
    parser.add_argument("--bootstrap", default="127.0.0.1:29092")
    parser.add_argument("--pg-port", type=int, default=25432)
    parser.add_argument("--state-dir", type=Path, default=ROOT / ".local" / "test")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--keep-db", action="store_true", help="keep the benchmark database for inspection")
    args = parser.parse_args()

    tag = uuid.uuid4().hex[:8]
    base = Settings(state_dir=args.state_dir, kafka_bootstrap=args.bootstrap, partitions=args.partitions,
                    database_url=f"postgresql://vitalrisk_writer@127.0.0.1:{args.pg_port}/vitalrisk")
    admin = LocalPostgres(base).superuser_url.rsplit("/", 1)[0] + "/postgres"
    dbname = f"bench_alerts_{tag}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    owner_url = f"{admin.rsplit('/', 1)[0]}/{dbname}"
    migrate(owner_url)
    pager_port = free_port()
    settings = base.model_copy(update={
        "app_id": f"bench-{tag}", "scores_topic": f"b{tag}.scores", "readings_topic": f"b{tag}.readings",
        "deadletter_topic": f"b{tag}.deadletter", "outcomes_topic": f"b{tag}.outcomes",
        "features_topic": f"b{tag}.features",
        "database_url": f"postgresql://vitalrisk_writer@127.0.0.1:{args.pg_port}/{dbname}",
        "data_dir": args.state_dir / f"faust-bench-{tag}", "alerter_port": free_port(), "metrics_port": free_port(),
        "webhook_receivers": f"pager=http://127.0.0.1:{pager_port}/webhook", "alert_for_s": 0.0,
        "alert_data_stopped_s": 0.0, "alerter_flush_s": 0.1})
    LocalKafka(settings).create_topics()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VITALS_")}
    env.update(settings.as_env())
    env["VITALS_WEBHOOK_SECRET"] = SECRET
    tmp = Path(tempfile.mkdtemp(prefix="bench-alerts-"))
    record = tmp / "pages.jsonl"
    logs = [tmp / "pager.log", tmp / "alerter.log"]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with open(logs[0], "wb") as out:
            procs.append(subprocess.Popen([sys.executable, "-m", "stream.alerts", "pager", "--port", str(pager_port),
                                           "--record", str(record)], cwd=ROOT, env=env, stdout=out,
                                          stderr=subprocess.STDOUT))
        with open(logs[1], "wb") as out:
            procs.append(subprocess.Popen([sys.executable, "-m", "stream.alerts", "alerter"], cwd=ROOT, env=env,
                                          stdout=out, stderr=subprocess.STDOUT))
        producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=0,
                                 **kafka_python_options(settings))

        # warm-up: one episode, so the consumer group has formed and every connection is open
        producer.send(settings.scores_topic, key=b"pt-warmup", value=encode_score(score("pt-warmup", 1, 9)))
        producer.flush()
        wait("the warm-up page", lambda: records(record), 120, procs, logs)

        sent: dict[str, float] = {}
        patients = [f"pt-bench{i:05d}" for i in range(args.episodes)]
        started = time.monotonic()
        for i, patient in enumerate(patients):
            if args.rate > 0:
                time.sleep(max(0.0, started + i / args.rate - time.monotonic()))
            value = encode_score(score(patient, 1, 9))
            sent[patient] = time.time()
            producer.send(settings.scores_topic, key=patient.encode(), value=value)
            producer.flush()
            if args.rate == 0:
                wait(f"page {i}", lambda p=patient: any(r["body"]["alerts"][0]["labels"]["patient_id"] == p
                                                      for r in records(record)), 30, procs, logs)
        wait("every page", lambda: len(records(record)) >= args.episodes + 1, 120, procs, logs)
        time.sleep(1.0)
        got = [r for r in records(record) if r["body"]["alerts"][0]["labels"]["patient_id"] != "pt-warmup"]
        per_patient: dict[str, list[dict[str, Any]]] = {}
        for r in got:
            per_patient.setdefault(r["body"]["alerts"][0]["labels"]["patient_id"], []).append(r)
        latencies = [per_patient[p][0]["received_at"] - sent[p] for p in patients if p in per_patient]
        exactly_once = all(len(per_patient.get(p, [])) == 1 for p in patients)
        duplicates = sum(1 for r in got if r["duplicate"])
        ms = [x * 1000 for x in latencies]
        print(f"alert benchmark: {args.episodes} episodes at {args.rate:g}/s ({'sequential' if not args.rate else 'paced'}), "
              f"{args.partitions} partitions")
        print(f"  pages received {len(got)}, every episode exactly once: {exactly_once}, duplicates: {duplicates}")
        print(f"  score produced -> webhook received (ms): p50 {percentile(ms, 50):.1f}  p90 {percentile(ms, 90):.1f}  "
              f"p99 {percentile(ms, 99):.1f}  max {max(ms):.1f}  mean {statistics.fmean(ms):.1f}")
        target = percentile(ms, 99) <= 1000 and exactly_once
        print(f"  target p99 <= 1000 ms and exactly once: {'met' if target else 'NOT met'}")
        return 0 if target else 1
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        if args.keep_db:
            print(f"  kept database {owner_url}; logs in {tmp}")
        else:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
        from kafka.admin import KafkaAdminClient

        client = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, **kafka_python_options(settings))
        try:
            client.delete_topics([t for t in client.list_topics() if t.startswith(f"b{tag}.")])
        finally:
            client.close()


if __name__ == "__main__":
    sys.exit(main())
