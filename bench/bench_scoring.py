"""Scores/s per worker and trainer examples/s, beside the raw consume rate of the same records.

Run: ``.venv/bin/python bench/bench_scoring.py [--patients 60] [--hours 24]``

Feature rows come from the real core (simulator -> :class:`stream.pipeline.VitalsPipeline`), so
their shape is the worker's. Then:

1. *worker scoring*: :class:`stream.model_scoring.ModelScoring` (model risk per condition, NEWS2
   of the row, top contributing features, the accountable score) with a trained snapshot;
2. *trainer, in process*: :meth:`models.online.OnlineLearner.offer` on the rows and outcomes
   (score, label, judge, learn, snapshot);
3. *trainer service on Kafka*: the rows and outcomes published to fresh topics, read and learned
   by :class:`models.trainer_service.TrainerService`, beside kafka-python reading the same
   topic with no processing (the limit).

It starts the local Kafka and PostgreSQL if they are not running (and stops them after).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pydantic import SecretStr

from models.labelling import Outcome
from models.online import OnlineLearner
from models.risk import RiskModel
from models.snapshots import Snapshot
from simulators.cohort import CohortConfig, simulate
from simulators.deterioration import Incidence
from kernel.events import FeatureRow
from stream.model_scoring import ModelScoring
from models.scorer import Scorer
from stream.pipeline import VitalsPipeline
from kernel.kafka_security import kafka_python_options
from kernel.settings import Settings
from kernel.wire import encode_feature_row
from infra.kafka import LocalKafka
from infra.postgres import LocalPostgres
from models.trainer_service import TrainerService
from sinks.migrations import migrate

HOUR_MS = 3_600_000
HORIZON_MS = 2 * HOUR_MS


def cohort(patients: int, hours: int) -> tuple[list[FeatureRow], list[tuple[int, Outcome]]]:
    """Feature rows from the real core, and outcomes with their send times, for a cohort."""
    config = CohortConfig(patients=patients, seed=42, duration_ms=hours * HOUR_MS, incidence=Incidence().scaled(20))
    pipeline = VitalsPipeline.from_settings(Settings())
    rows: list[FeatureRow] = []
    outcomes: list[tuple[int, Outcome]] = []
    for offset, message in enumerate(simulate(config)):
        if message.kind == "outcome":
            outcomes.append((message.sent_ms, Outcome.from_wire(message.payload)))
            continue
        step = pipeline.on_message(json.dumps(message.payload).encode(), partition=0, offset=offset,
                                   record_ts_ms=message.sent_ms)
        rows.extend(step.features)
    rows.extend(pipeline.close_partition(0).features)
    return rows, outcomes


def learner() -> OnlineLearner:
    return OnlineLearner(RiskModel("logreg", 42), name="risk-logreg", horizon_ms=HORIZON_MS, outcome_grace_ms=0,
                         snapshot_every=5_000, snapshot_every_ms=HOUR_MS)


def trainer_rate(rows: list[FeatureRow], outcomes: list[tuple[int, Outcome]]) -> tuple[float, OnlineLearner]:
    """Labelled windows learned per second of the pure loop (scoring, labelling, judging, learning)."""
    online = learner()
    pending = sorted(outcomes, key=lambda o: o[0])
    started = time.process_time()
    i = 0
    for offset, row in enumerate(rows):
        while i < len(pending) and pending[i][0] <= row.ts_ms:
            online.on_outcome(pending[i][1])
            i += 1
        online.offer(row, partition=0, offset=offset)
    online.advance(rows[-1].ts_ms + HORIZON_MS + 1)
    return online.trainer.examples_seen / (time.process_time() - started), online


def scoring_rate(rows: list[FeatureRow], model: RiskModel) -> float:
    """Accountable scores per second of CPU, with a trained model."""
    scoring = ModelScoring(Scorer(Snapshot("risk-logreg", 1, 0, 0, {}, model)))
    started = time.process_time()
    for i in range(0, len(rows), 50):  # the worker scores the rows one record produced
        scoring.score_rows(rows[i:i + 50])
    return len(rows) / (time.process_time() - started)


def kafka_rates(rows: list[FeatureRow], outcomes: list[tuple[int, Outcome]], base: Settings) -> tuple[float, float]:
    """(raw consume records/s, trainer service examples/s) on fresh topics of the local broker."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    tag = uuid.uuid4().hex[:8]
    settings = base.model_copy(update={
        "features_topic": f"bench-{tag}.features", "outcomes_topic": f"bench-{tag}.outcomes",
        "snapshots_topic": f"bench-{tag}.snapshots", "readings_topic": f"bench-{tag}.readings",
        "patients_topic": f"bench-{tag}.patients",
        "deadletter_topic": f"bench-{tag}.dl", "scores_topic": f"bench-{tag}.scores",
        "snapshot_key": SecretStr("b" * 40), "label_horizon_ms": HORIZON_MS, "outcome_grace_ms": 0,
        "snapshot_every_ms": HOUR_MS})
    LocalKafka(settings).create_topics()
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=20,
                             compression_type="lz4", **kafka_python_options(settings))
    for row in rows:
        producer.send(settings.features_topic, key=row.patient_id.encode(), value=encode_feature_row(row))
    for _, outcome in outcomes:
        producer.send(settings.outcomes_topic, key=outcome.patient_id.encode(), value=json.dumps({
            "schema": "vitalrisk.outcome/1", "patient_id": outcome.patient_id, "kind": outcome.kind,
            "onset": outcome.onset_ms, "t": outcome.t_ms}).encode())
    producer.flush()
    producer.close()

    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None, enable_auto_commit=False,
                             max_poll_records=1_000, **kafka_python_options(settings))
    tps = [TopicPartition(settings.features_topic, p) for p in consumer.partitions_for_topic(settings.features_topic)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    count, first = 0, None
    while count < len(rows):
        for records in consumer.poll(timeout_ms=1000).values():
            first = first or time.perf_counter()
            count += len(records)
    raw = count / (time.perf_counter() - first)
    consumer.close()

    service = TrainerService(settings)
    service.start()  # restores (nothing here) and reads the outcomes
    started = time.perf_counter()
    while service.learner.rows_scored + service.learner.rows_skipped < len(rows):
        service.step(timeout_ms=200)
    seconds = time.perf_counter() - started
    service.close()
    return raw, service.learner.rows_scored / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=60)
    parser.add_argument("--hours", type=int, default=24)
    parser.add_argument("--no-kafka", action="store_true", help="only the in-process stages")
    args = parser.parse_args()

    started = time.perf_counter()
    rows, outcomes = cohort(args.patients, args.hours)
    print(f"{len(rows):,} feature rows, {len(outcomes)} outcomes from {args.patients} patients x {args.hours} h "
          f"({time.perf_counter() - started:.0f} s to simulate)")
    learn_rate, online = trainer_rate(rows, outcomes)
    print(f"trainer, in process: {learn_rate:,.0f} labelled windows learned/s (CPU), "
          f"{online.trainer.examples_seen:,} learned, {online.trainer.version} snapshots")
    print(f"worker scoring: {scoring_rate(rows, online.model):,.0f} accountable scores/s (CPU)")
    if args.no_kafka:
        return 0
    import psycopg
    from psycopg import sql

    base = Settings()
    postgres = LocalPostgres(base)
    services = [svc for svc in (postgres, LocalKafka(base)) if not svc.healthy()]
    for svc in services:
        svc.start()
    admin = postgres.superuser_url.rsplit("/", 1)[0]
    dbname = f"bench_{uuid.uuid4().hex[:8]}"  # a fresh registry: nothing to resume from
    try:
        with psycopg.connect(f"{admin}/postgres", autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        migrate(f"{admin}/{dbname}")
        base = base.model_copy(update={
            "database_url": f"postgresql://vitalrisk_writer@127.0.0.1:{postgres.target.port}/{dbname}"})
        raw, service_rate = kafka_rates(rows, outcomes, base)
        print(f"raw kafka-python consume of the feature rows (the limit): {raw:,.0f} records/s")
        print(f"trainer service on Kafka: {service_rate:,.0f} rows/s scored, labelled and learned "
              f"({service_rate / raw:.3f} of the limit)")
    finally:
        with psycopg.connect(f"{admin}/postgres", autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
        for svc in services:
            svc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
