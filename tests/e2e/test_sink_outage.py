"""Backpressure end to end: a database outage stops consumption, loses nothing and duplicates nothing.

Two outages, each with a real worker process consuming a real stream:

* PostgreSQL itself stops for 20 s (the session's test cluster, restarted in ``finally``): the
  worker stops consuming, commits no Kafka offset past what is in the database, and carries on
  by itself when PostgreSQL is back. (The cluster is shared: if another test session starts it
  again early, only the samples taken while it was down are checked, with a warning.)
* The worker's database refuses connections and the worker is SIGKILLed meanwhile: a new worker
  in the same consumer group restarts from the committed offsets and the database ends up
  exactly as if nothing had happened, so no offset was committed ahead of its rows.
"""

from __future__ import annotations

from collections.abc import Callable

import signal
import time
import warnings

import psycopg
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from infra.postgres import LocalPostgres
from kernel.settings import Settings
from tests.conftest import WorkerProcess
from tests.conftest import Services
from tests.e2e.streams import Stream, assert_features_equal, count, feature_rows, score_keys, wait_until

pytestmark = pytest.mark.integration

OUTAGE_S = 20.0


def _end_offsets(settings: Settings) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    try:
        partitions = [TopicPartition(settings.readings_topic, p)
                      for p in sorted(consumer.partitions_for_topic(settings.readings_topic) or ())]
        return {tp.partition: int(offset) for tp, offset in consumer.end_offsets(partitions).items()}
    finally:
        consumer.close()


def _committed(settings: Settings) -> dict[int, int]:
    """The worker's committed offsets on the readings topic (Faust's consumer group is the app id)."""
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    try:
        offsets = admin.list_group_offsets({settings.app_id: None}).get(settings.app_id, {})
    finally:
        admin.close()
    return {tp.partition: int(meta.offset) for tp, meta in offsets.items()
            if tp.topic == settings.readings_topic and meta.offset >= 0}


def _assert_no_offset_beyond(committed: dict[int, int], limit: dict[int, int]) -> None:
    for partition, offset in committed.items():
        assert offset <= limit.get(partition, 0), (
            f"partition {partition}: offset {offset} committed while the database could hold only "
            f"records before {limit.get(partition, 0)}")


def _assert_exact(settings: Settings, stream: Stream) -> None:
    assert_features_equal(feature_rows(settings), stream.expected_features())
    keys = score_keys(settings)
    assert len(keys) == len(set(keys)) == stream.windows, "every score once"


def _complete_windows(settings: Settings, stream: Stream, minutes: int) -> bool:
    return count(settings, "features") >= minutes * stream.patients * 5


def test_postgres_down_20s_stops_consumption_then_loses_and_duplicates_nothing(
        services: Services, isolated: Settings, start_worker: Callable[[Settings], WorkerProcess]) -> None:
    # Small batches: a closed window is flushed at once, so the outage blocks the agent at once.
    settings = isolated.model_copy(update={"sink_batch_rows": 5})
    stream = Stream(patients=5, minutes=10)
    worker = start_worker(settings)
    sent = stream.publish(settings, range(4))
    worker.wait_metric("vitals_messages_total", lambda v: v >= sent)
    wait_until(lambda: _complete_windows(settings, stream, 3), timeout_s=60, what="minutes 0-2 in the database")
    wait_until(lambda: bool(_committed(settings)), timeout_s=30, what="offsets committed before the outage")
    before_outage = _end_offsets(settings)

    postgres = LocalPostgres(services.base)
    postgres.stop()
    samples: list[tuple[float, dict[int, int]]] = []  # (records consumed, offsets committed) while down
    restarted_by_another_session = False
    try:
        down_at = time.monotonic()
        sent += stream.publish(settings, range(4, 10))
        while time.monotonic() - down_at < OUTAGE_S:
            time.sleep(1.0)
            sample = (worker.metric("vitals_messages_total"), _committed(settings))
            if postgres.healthy():  # the cluster is shared: another test session may start it
                restarted_by_another_session = True
                break
            samples.append(sample)
        assert worker.proc.poll() is None, "the worker waits for the database instead of dying"
    finally:
        postgres.start()

    for _, committed in samples:
        _assert_no_offset_beyond(committed, before_outage)
    consumed = [n for n, _ in samples]  # sampled once a second while PostgreSQL was down
    if restarted_by_another_session:
        warnings.warn(f"PostgreSQL was restarted by another process after {len(samples)} s of the outage",
                      stacklevel=1)
    else:
        assert len(consumed) >= OUTAGE_S - 3
    if len(consumed) >= 5:
        assert consumed[-1] == consumed[-3] < sent, f"consumption stopped while the database was down: {consumed}"

    worker.wait_metric("vitals_messages_total", lambda v: v >= sent, timeout_s=120)
    worker.wait_metric("vitals_sink_rows_total", lambda v: v >= stream.windows, labels={"table": "risk_scores"},
                       timeout_s=90)
    wait_until(lambda: count(settings, "risk_scores") >= stream.windows, timeout_s=30,
               what="every window scored and written after the outage", log=worker.log)
    worker.wait_metric("vitals_open_windows", lambda v: v == 0)
    _assert_exact(settings, stream)
    assert worker.stop() == 0


def _block(services: Services, settings: Settings) -> None:
    """An outage of this test's database only: refuse connections and end the open ones."""
    dbname = str(conninfo_to_dict(settings.database_url)["dbname"])
    admin = services.superuser_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(
            sql.Identifier(dbname), sql.SQL("false")))
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (dbname,))


def _unblock(services: Services, settings: Settings) -> None:
    dbname = str(conninfo_to_dict(settings.database_url)["dbname"])
    admin = services.superuser_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(sql.Identifier(dbname)))


def test_worker_killed_while_the_database_is_down_resumes_from_committed_offsets(
        services: Services, isolated: Settings, start_worker: Callable[[Settings], WorkerProcess]) -> None:
    settings = isolated.model_copy(update={"sink_batch_rows": 5})
    stream = Stream(patients=5, minutes=8)
    worker = start_worker(settings)
    sent_before = stream.publish(settings, range(4))
    worker.wait_metric("vitals_messages_total", lambda v: v >= sent_before)
    wait_until(lambda: _complete_windows(settings, stream, 3), timeout_s=60, what="minutes 0-2 in the database")
    wait_until(lambda: bool(_committed(settings)), timeout_s=30, what="offsets committed before the outage")
    before_outage = _end_offsets(settings)

    _block(services, settings)
    try:
        sent = sent_before + stream.publish(settings, range(4, 8))
        worker.wait_metric("vitals_messages_total", lambda v: v > sent_before)  # it read into the outage
        time.sleep(4)  # longer than Faust's commit interval: whatever it would commit, it has
        consumed = worker.metric("vitals_messages_total")
        time.sleep(2)
        assert worker.metric("vitals_messages_total") == consumed < sent, "consumption stopped"
        _assert_no_offset_beyond(_committed(settings), before_outage)
        worker.stop(signal.SIGKILL)
    finally:
        _unblock(services, settings)

    successor = start_worker(settings)  # same consumer group: resumes from the committed offsets
    successor.wait_metric("vitals_messages_total", lambda v: v >= 1)
    try:
        wait_until(lambda: count(settings, "risk_scores") >= stream.windows, timeout_s=90,
                   what="every window written by the successor", log=successor.log)
    except AssertionError:
        _assert_exact(settings, stream)  # names the missing rows
        raise
    successor.wait_metric("vitals_open_windows", lambda v: v == 0)
    _assert_exact(settings, stream)
    assert sent == stream.patients * stream.minutes
