"""Several ``vitalrisk worker`` processes in one consumer group share the partitions, and write what one writes.

One seeded cohort is published once; one uninterrupted worker drains it into its own database and
output topics (the reference). Each test then runs the same topic again, under a consumer group,
database and output topics of its own, with two workers: from the start, the second joining
mid-stream, or one of the two SIGKILLed mid-stream. Every window, feature row and score must come
out once (the database's keys) with the reference's values; replays by a partition's new owner may
send a feature row to the features topic again, always with the same values; and the group's
offsets must end committed to the end of every partition.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.request import urlopen

import psycopg
import pytest
from psycopg import sql

from kernel.settings import WORKER_ROLE, Settings
from simulators.cohort import CohortConfig, simulate
from simulators.kafka_publisher import make_producer, publish
from sinks.migrations import migrate
from tests.conftest import Services, WorkerProcess, _spawner, committed_to_end
from tests.e2e.test_crash_recovery import _feature_topic, _rows  # the same rows and topic, compared the same way
from infra.kafka import LocalKafka

pytestmark = [
    pytest.mark.integration,
    # Quarantined from `make test` until they are deterministic: the cohort is published before the
    # workers start, so whether a worker joins or dies mid-stream depends on the machine's speed
    # (fast: it all was read already; loaded: timeouts). Run with VITALS_SLOW_TESTS=1.
    pytest.mark.skipif(os.environ.get("VITALS_SLOW_TESTS") != "1",
                       reason="scale-out e2e: timing-dependent until the stream is live; set VITALS_SLOW_TESTS=1"),
]

PATIENTS = 36
HOURS = 3
PARTITIONS = 6

Rows = tuple[list[tuple[object, ...]], list[tuple[object, ...]]]
TopicRows = dict[tuple[str, int], dict[str, float]]


@dataclass(frozen=True)
class Cohort:
    """The published cohort and what the uninterrupted single worker made of it."""

    settings: Settings
    superuser_url: str
    device_messages: int
    rows: Rows
    feature_topic: TopicRows


def _run(base: Settings, superuser_url: str, name: str) -> Settings:
    """``base``'s readings topic under a consumer group, output topics and database of the run's own."""
    tag = f"{name}-{uuid.uuid4().hex[:6]}"
    admin = superuser_url.rsplit("/", 1)[0]
    dbname = f"test_{tag.replace('-', '_')}"
    with psycopg.connect(f"{admin}/postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    migrate(f"{admin}/{dbname}", timescale=base.sink_timescale)
    settings = base.model_copy(update={
        "app_id": f"{base.app_id}-{tag}", "database_url": base.database_url.rsplit("/", 1)[0] + f"/{dbname}",
        "admin_database_url": f"{admin}/{dbname}", "scores_topic": f"{base.scores_topic}-{tag}",
        "features_topic": f"{base.features_topic}-{tag}", "deadletter_topic": f"{base.deadletter_topic}-{tag}"})
    LocalKafka(settings).create_topics()
    return settings


def _worker_settings(settings: Settings, worker: int) -> Settings:
    """One worker's own state folder: Faust's is per process on a shared machine."""
    return settings.model_copy(update={"data_dir": settings.data_dir.with_name(f"{settings.data_dir.name}-w{worker}")})


def _owned(worker: WorkerProcess) -> set[str]:
    """The partitions a worker reports lag for: those it owns and has read from."""
    with urlopen(f"http://127.0.0.1:{worker.metrics_port}/metrics", timeout=5) as page:  # noqa: S310 - our own test worker
        text = page.read().decode()
    return {line.split('partition="', 1)[1].split('"', 1)[0] for line in text.splitlines()
            if line.startswith("vitals_consumer_lag{")}


def _assert_same_as_the_reference(settings: Settings, cohort: Cohort, *, timeout_s: float = 90) -> None:
    """Wait until the run's tables hold the reference's rows, then check them, the topic and the offsets."""
    deadline = time.monotonic() + timeout_s
    got = _rows(settings)
    while got != cohort.rows and time.monotonic() < deadline:
        time.sleep(1)
        got = _rows(settings)
    expected_features, expected_scores = cohort.rows
    features, scores = got
    missing, extra = sorted(set(expected_features) - set(features)), sorted(set(features) - set(expected_features))
    assert not missing and not extra, (f"{len(missing)} rows missing, e.g. {missing[:4]}; "
                                       f"{len(extra)} extra, e.g. {extra[:4]}")
    assert features == expected_features and len(features) > 0
    assert scores == expected_scores and len(scores) > 0
    assert _feature_topic(settings) == cohort.feature_topic
    deadline = time.monotonic() + 30
    while not committed_to_end(settings, settings.readings_topic, settings.app_id):
        assert time.monotonic() < deadline, "the group's offsets never reached the end of the topic"
        time.sleep(1)


@pytest.fixture(scope="module")
def cohort(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cohort]:
    """The cohort on a readings topic of its own, and the reference run of one uninterrupted worker."""
    tag = uuid.uuid4().hex[:8]
    base = services.settings(
        app_id=f"vitalrisk-scale-{tag}", readings_topic=f"s{tag}.readings", deadletter_topic=f"s{tag}.deadletter",
        outcomes_topic=f"s{tag}.outcomes", scores_topic=f"s{tag}.scores", features_topic=f"s{tag}.features",
        snapshots_topic=f"s{tag}.snapshots", patients_topic=f"s{tag}.patients", partitions=PARTITIONS,
        data_dir=services.base.state_dir / f"faust-scale-{tag}", idle_timeout_s=2.0, sink_flush_s=0.5,
        session_timeout_s=6.0)
    reference = _run(base, services.superuser_url, "ref")
    producer = make_producer(reference)
    report = publish(simulate(CohortConfig(patients=PATIENTS, seed=11, duration_ms=HOURS * 3_600_000)),
                     settings=reference, producer=producer)
    producer.close()
    device_messages = report.messages - report.outcomes
    spawn = _spawner(tmp_path_factory.mktemp("scaleout-reference"), "worker", WORKER_ROLE)
    start = next(spawn)
    try:
        worker = start(reference)
        worker.wait_metric("vitals_messages_total", lambda v: v >= device_messages, timeout_s=180)
        worker.wait_metric("vitals_open_windows", lambda v: v == 0, timeout_s=60)
        deadline = time.monotonic() + 30
        while not committed_to_end(reference, reference.readings_topic, reference.app_id):
            assert time.monotonic() < deadline, "the reference never committed to the end"
            time.sleep(0.5)
        assert worker.stop() == 0
    finally:
        next(spawn, None)  # SIGKILLs a worker left running
    rows = _rows(reference)
    assert rows[0] and rows[1]
    yield Cohort(base, services.superuser_url, device_messages, rows, _feature_topic(reference))


Start = Callable[[Settings], WorkerProcess]


def test_two_workers_from_the_start_share_the_partitions_and_write_what_one_writes(cohort: Cohort,
                                                                                   start_worker: Start) -> None:
    settings = _run(cohort.settings, cohort.superuser_url, "two")
    first, second = start_worker(_worker_settings(settings, 1)), start_worker(_worker_settings(settings, 2))
    _assert_same_as_the_reference(settings, cohort)
    owned = [_owned(first), _owned(second)]
    assert owned[0] and owned[1], f"one worker owned nothing: {owned}"
    assert not owned[0] & owned[1], f"both workers report partitions {owned[0] & owned[1]}"
    assert first.metric("vitals_messages_total") + second.metric("vitals_messages_total") >= cohort.device_messages
    assert first.stop() == 0 and second.stop() == 0


def test_a_second_worker_joining_mid_stream_takes_partitions_with_their_state(cohort: Cohort,
                                                                              start_worker: Start) -> None:
    settings = _run(cohort.settings, cohort.superuser_url, "join")
    first = start_worker(_worker_settings(settings, 1))
    first.wait_metric("vitals_sink_rows_total", lambda v: v > 0, labels={"table": "features"}, timeout_s=120)
    second = start_worker(_worker_settings(settings, 2))
    second.wait_metric("vitals_messages_total", lambda v: v > 0, timeout_s=120)
    if first.metric("vitals_messages_total") >= cohort.device_messages:
        # The cohort is published before the workers start: a busy machine can let the first drain
        # it while the second starts, and then nothing moved mid-stream. Publishing in two halves
        # would change when idle windows close, so the rows would no longer be the reference's.
        first.stop()
        second.stop()
        pytest.skip("the first worker read the whole cohort before the second joined: nothing to prove")
    _assert_same_as_the_reference(settings, cohort)
    assert not _owned(first) & _owned(second)
    assert first.stop() == 0 and second.stop() == 0


def test_a_worker_sigkilled_mid_stream_hands_its_partitions_to_the_other(cohort: Cohort,
                                                                         start_worker: Start) -> None:
    settings = _run(cohort.settings, cohort.superuser_url, "kill")
    survivor, victim = start_worker(_worker_settings(settings, 1)), start_worker(_worker_settings(settings, 2))
    victim.wait_metric("vitals_sink_rows_total", lambda v: v > 0, labels={"table": "features"}, timeout_s=120)
    survivor.wait_metric("vitals_messages_total", lambda v: v > 0, timeout_s=60)
    read = survivor.metric("vitals_messages_total") + victim.metric("vitals_messages_total")
    if read >= cohort.device_messages:  # as in the joining test: the cohort was read before the kill
        survivor.stop()
        victim.stop()
        pytest.skip("the workers read the whole cohort before the kill: nothing to prove")
    owned_before = _owned(survivor)
    victim.stop(signal.SIGKILL)
    _assert_same_as_the_reference(settings, cohort)
    assert _owned(survivor) > owned_before, "the survivor never took the dead worker's partitions"
    assert survivor.stop() == 0
