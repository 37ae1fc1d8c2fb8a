"""Several ``vitalrisk worker`` processes in one consumer group share the partitions, and write what one writes.

One seeded cohort is cut in two at a point of its publishing order. The reference run: one
uninterrupted worker reads the first part, the second and a closing record per partition, all
published before it starts, on a readings topic, consumer group, database and output topics of
its own. Each test then publishes the same records in the same order to a topic of its own,
with two workers: both from the start; the second joining after the first read the first part;
or one of the two SIGKILLed after it wrote rows. The second part is published only after that
event has happened, so "mid-stream" does not depend on the machine's speed.

Why the rows cannot depend on the pacing: windows close by event time only. Every run's idle
timeout (wall clock) is far longer than the test, so no window closes by idleness, and a
partition's watermark is its own largest event time (:mod:`stream.windows`), so the records
of a partition, in the same order, close the same windows whoever reads them and whenever they
arrive. The closing record (one per partition, event time past the cohort's end) closes every
window of the cohort; its own window stays open, so the group's offsets end one short of the
end of every partition.

Every window, feature row and score must come out once (the database's keys) with the
reference's values; replays by a partition's new owner may send a feature row to the features
topic again, always with the same values.
"""

from __future__ import annotations

import logging
import signal
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from urllib.request import urlopen

import psycopg
import pytest
from kafka.admin import KafkaAdminClient
from kafka.partitioner.default import murmur2
from psycopg import sql

from infra.kafka import LocalKafka
from kernel.settings import WORKER_ROLE, Settings
from kernel.wire import encode_device_message
from simulators.cohort import CohortConfig, SimulatedMessage, simulate
from simulators.kafka_publisher import make_producer, publish
from sinks.migrations import migrate
from stream.features import BASELINE_MIN_MINUTES
from tests.conftest import Services, WorkerProcess, _spawner, group_offsets
from tests.e2e.streams import wait_until
from tests.e2e.test_crash_recovery import _feature_topic, _rows  # the same rows and topic, compared the same way

pytestmark = pytest.mark.integration

PATIENTS = 24
MINUTES = 150
PARTITIONS = 6
#: Far longer than any test: no window closes because a partition went quiet (wall clock).
IDLE_TIMEOUT_S = 3_600.0
#: Where the cohort is cut, as a share of its messages in publishing (send time) order.
SPLIT = 0.5

Rows = tuple[list[tuple[object, ...]], list[tuple[object, ...]]]
TopicRows = dict[tuple[str, int], dict[str, float]]
Start = Callable[[Settings], WorkerProcess]


@dataclass(frozen=True)
class Cohort:
    """The cohort cut in two, and what the uninterrupted single worker made of it."""

    settings: Settings
    superuser_url: str
    first: Sequence[SimulatedMessage]
    second: Sequence[SimulatedMessage]
    closing_ms: int  # event time of the closing records
    rows: Rows
    feature_topic: TopicRows

    @property
    def split_ms(self) -> int:
        """Send time of the second part's first message."""
        return self.second[0].sent_ms

    def publish_first(self, settings: Settings) -> None:
        _publish(settings, self.first)

    def publish_rest(self, settings: Settings) -> None:
        """The second part, then one closing record per partition."""
        _publish(settings, self.second)
        _publish_closing(settings, self.closing_ms)


def partition_of(patient_id: str) -> int:
    """The readings partition of a patient: the producer's default partitioner."""
    return (murmur2(patient_id.encode()) & 0x7FFFFFFF) % PARTITIONS


def _publish(settings: Settings, messages: Sequence[SimulatedMessage]) -> None:
    producer = make_producer(settings)
    try:
        report = publish(messages, settings=settings, producer=producer)
    finally:
        producer.close()
    assert report.messages == len(messages) and not report.errors


def _publish_closing(settings: Settings, ts_ms: int) -> None:
    """One record per partition at ``ts_ms``: its watermark closes every window before it."""
    producer = make_producer(settings)
    try:
        for partition in range(PARTITIONS):
            patient = f"pt-closing-{partition}"
            producer.send(settings.readings_topic, key=patient.encode(), partition=partition, timestamp_ms=ts_ms,
                          value=encode_device_message(device_id=f"dev-closing-{partition}", patient_id=patient,
                                                      seq=0, sent_at=ts_ms, readings=[("heart_rate", ts_ms, 70.0)]))
        producer.flush()
    finally:
        producer.close()


def _run(base: Settings, superuser_url: str, name: str) -> Settings:
    """``base`` with a readings topic, consumer group, output topics and database of the run's own."""
    tag = f"{name}-{uuid.uuid4().hex[:6]}"
    admin = superuser_url.rsplit("/", 1)[0]
    dbname = f"test_{tag.replace('-', '_')}"
    with psycopg.connect(f"{admin}/postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    migrate(f"{admin}/{dbname}", timescale=base.sink_timescale)
    settings = base.model_copy(update={
        "app_id": f"{base.app_id}-{tag}", "database_url": base.database_url.rsplit("/", 1)[0] + f"/{dbname}",
        "admin_database_url": f"{admin}/{dbname}", "readings_topic": f"{base.readings_topic}-{tag}",
        "scores_topic": f"{base.scores_topic}-{tag}", "features_topic": f"{base.features_topic}-{tag}",
        "deadletter_topic": f"{base.deadletter_topic}-{tag}",
        "data_dir": base.data_dir.with_name(f"{base.data_dir.name}-{tag}")})
    LocalKafka(settings).create_topics()
    return settings


def _worker_settings(settings: Settings, worker: int) -> Settings:
    """One worker's own state folder: Faust's is per process on a shared machine."""
    return settings.model_copy(update={"data_dir": settings.data_dir.with_name(f"{settings.data_dir.name}-w{worker}")})


def _lags(worker: WorkerProcess) -> dict[int, float]:
    """``vitals_consumer_lag`` by partition: a worker reports it for the partitions it owns and has
    read from since they were assigned."""
    try:
        with urlopen(f"http://127.0.0.1:{worker.metrics_port}/metrics", timeout=5) as page:  # noqa: S310 - our own test worker
            text = page.read().decode()
    except OSError:  # not serving yet
        return {}
    return {int(line.split('partition="', 1)[1].split('"', 1)[0]): float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line.startswith("vitals_consumer_lag{")}


def _shares(workers: Sequence[WorkerProcess], *, caught_up: bool = True) -> list[set[int]] | None:
    """Each worker's partitions, once every partition is read by exactly one of them (and, if
    ``caught_up``, none lags behind the end it knows of); ``None`` before."""
    lags = [_lags(worker) for worker in workers]
    shares = [set(lag) for lag in lags]
    if sum(map(len, shares)) != PARTITIONS or set().union(*shares) != set(range(PARTITIONS)):
        return None
    return shares if not caught_up or all(value == 0 for lag in lags for value in lag.values()) else None


def _wait_for_shares(workers: Sequence[WorkerProcess], what: str, *, caught_up: bool = True,
                     timeout_s: float = 120) -> list[set[int]]:
    """Until every worker reads partitions of its own and together they read all (see :func:`_shares`).

    After a rebalance, wait with ``caught_up=False``: Faust may drop a partition's last records
    fetched around it, which the worker reads from the broker once a later record shows the gap
    (:mod:`stream.skipped`), so a new owner can lag until the next record is published.
    """
    shares: list[set[int]] | None = None

    def settled() -> bool:
        nonlocal shares
        shares = _shares(workers, caught_up=caught_up)
        return shares is not None and all(shares)

    wait_until(settled, timeout_s=timeout_s, what=what, poll_s=0.5, log=workers[-1].log)
    assert shares is not None
    return shares


def _members(settings: Settings) -> list[set[int]]:
    """Readings partitions of each member of the run's consumer group, once the group is stable;
    ``[]`` while it rebalances."""
    # Faust's subscription metadata is its own format, which kafka-python warns it cannot decode.
    logging.getLogger("kafka.admin._groups").setLevel(logging.ERROR)
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    try:
        group = admin.describe_groups([settings.app_id])[settings.app_id]
    finally:
        admin.close()
    if group.get("group_state") != "Stable":
        return []
    return [{p for topic in (member.get("member_assignment") or {}).get("assigned_partitions", [])
             if topic["topic"] == settings.readings_topic for p in topic["partitions"]}
            for member in group.get("members", [])]


def _wait_for_members(settings: Settings, count: int, log_of: WorkerProcess) -> None:
    """Until the group is stable with ``count`` members, each assigned readings partitions."""
    wait_until(lambda: (lambda m: len(m) == count and all(m))(_members(settings)), timeout_s=120, poll_s=0.5,
               what=f"a stable group of {count} workers, each with partitions", log=log_of.log)


def _offsets(settings: Settings) -> dict[int, tuple[int | None, int]]:
    """The run's group's committed offset and the end of each readings partition."""
    return group_offsets(settings, settings.readings_topic, settings.app_id)


def _uncommitted(settings: Settings, partitions: set[int]) -> set[int]:
    """Of ``partitions``, those whose committed offset is behind the end: records read, not yet committed."""
    offsets = _offsets(settings)
    return {p for p in partitions if (offsets[p][0] or 0) < offsets[p][1]}


def _state_crossed_the_split(cohort: Cohort, settings: Settings, partitions: set[int]) -> set[str]:
    """Patients of ``partitions`` with a z-score on the features topic after the split.

    A z-score needs a baseline of ``BASELINE_MIN_MINUTES`` minutes of windows, more than there are
    after the split: each of these rows was computed from state built by reading the first part.
    """
    return {patient for (patient, t), x in _feature_topic(settings).items()
            if t > cohort.split_ms and partition_of(patient) in partitions
            and any(name.endswith("_z_60m") for name in x)}


def _assert_same_as_the_reference(settings: Settings, cohort: Cohort, *, timeout_s: float = 120) -> None:
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
    wait_until(lambda: _closed_to_the_end(settings), timeout_s=30, poll_s=0.5,
               what="the group's offsets to reach every partition's closing record")


def _closed_to_the_end(settings: Settings) -> bool:
    """Whether the group committed every record but each partition's last, the closing record."""
    return all(committed == end - 1 for committed, end in _offsets(settings).values())


@pytest.fixture(scope="module")
def cohort(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cohort]:
    """The cohort cut in two, and the reference run of one uninterrupted worker over both parts."""
    tag = uuid.uuid4().hex[:8]
    base = services.settings(
        app_id=f"vitalrisk-scale-{tag}", readings_topic=f"s{tag}.readings", deadletter_topic=f"s{tag}.deadletter",
        outcomes_topic=f"s{tag}.outcomes", scores_topic=f"s{tag}.scores", features_topic=f"s{tag}.features",
        snapshots_topic=f"s{tag}.snapshots", patients_topic=f"s{tag}.patients", partitions=PARTITIONS,
        data_dir=services.base.state_dir / f"faust-scale-{tag}", idle_timeout_s=IDLE_TIMEOUT_S, sink_flush_s=0.5,
        session_timeout_s=6.0)
    messages = list(simulate(CohortConfig(patients=PATIENTS, seed=11, duration_ms=MINUTES * 60_000)))
    assert all(m.kind == "reading" for m in messages)
    assert {partition_of(m.key) for m in messages} == set(range(PARTITIONS)), "a partition without patients"
    cut = int(len(messages) * SPLIT)
    first, second = messages[:cut], messages[cut:]
    closing_ms = max(m.sent_ms for m in messages) + base.window_ms + base.grace_ms + 60_000
    assert closing_ms - second[0].sent_ms < BASELINE_MIN_MINUTES * 60_000, \
        "the second part must be too short to warm a baseline up by itself"
    reference = _run(base, services.superuser_url, "ref")
    partial = Cohort(base, services.superuser_url, first, second, closing_ms, ([], []), {})
    partial.publish_first(reference)
    partial.publish_rest(reference)
    spawn = _spawner(tmp_path_factory.mktemp("scaleout-reference"), "worker", WORKER_ROLE)
    start = next(spawn)
    try:
        worker = start(reference)
        wait_until(lambda: worker.proc.poll() is None and _closed_to_the_end(reference), timeout_s=180, poll_s=0.5,
                   what="the reference to commit up to every partition's closing record", log=worker.log)
        assert worker.stop() == 0
    finally:
        next(spawn, None)  # SIGKILLs a worker left running
    rows = _rows(reference)
    assert rows[0] and rows[1]
    yield Cohort(base, services.superuser_url, first, second, closing_ms, rows, _feature_topic(reference))


def test_two_workers_from_the_start_share_the_partitions_and_write_what_one_writes(cohort: Cohort,
                                                                                   start_worker: Start) -> None:
    settings = _run(cohort.settings, cohort.superuser_url, "two")
    first, second = start_worker(_worker_settings(settings, 1)), start_worker(_worker_settings(settings, 2))
    _wait_for_members(settings, 2, second)  # both share the partitions before a record is there
    cohort.publish_first(settings)
    cohort.publish_rest(settings)
    _assert_same_as_the_reference(settings, cohort)
    shares = _wait_for_shares([first, second], "each partition read by one worker to its end")
    assert shares[0] and shares[1], f"one worker owned nothing: {shares}"
    assert first.metric("vitals_messages_total") > 0 and second.metric("vitals_messages_total") > 0
    assert first.stop() == 0 and second.stop() == 0


def test_a_second_worker_joining_mid_stream_takes_partitions_with_their_state(cohort: Cohort,
                                                                              start_worker: Start) -> None:
    settings = _run(cohort.settings, cohort.superuser_url, "join")
    cohort.publish_first(settings)
    first = start_worker(_worker_settings(settings, 1))
    _wait_for_shares([first], "the first worker to read the first part")
    first.wait_metric("vitals_messages_total", lambda v: v >= len(cohort.first), timeout_s=60)
    first.wait_metric("vitals_sink_rows_total", lambda v: v > 0, labels={"table": "features"}, timeout_s=60)
    wait_until(lambda: all(committed for committed, _ in _offsets(settings).values()), timeout_s=30,
               what="the first worker's first commits in every partition (its state on the changelog)")
    second = start_worker(_worker_settings(settings, 2))
    first_share, taken = _wait_for_shares([first, second], "the second worker to take partitions and read them",
                                         caught_up=False)
    # The first read every partition of the first part; the second took some of them, where the
    # first left records read and not committed (the open windows), which the second read again.
    assert taken and not first_share & taken
    assert _uncommitted(settings, taken) == taken
    cohort.publish_rest(settings)
    _assert_same_as_the_reference(settings, cohort)
    assert _state_crossed_the_split(cohort, settings, taken), "no patient of the moved partitions has a z-score " \
        "after the split: nothing shows their state moved"
    assert _shares([first, second]) == [first_share, taken], "the group rebalanced again"
    assert first.stop() == 0 and second.stop() == 0


def test_a_worker_sigkilled_mid_stream_hands_its_partitions_to_the_other(cohort: Cohort,
                                                                         start_worker: Start) -> None:
    settings = _run(cohort.settings, cohort.superuser_url, "kill")
    survivor, victim = start_worker(_worker_settings(settings, 1)), start_worker(_worker_settings(settings, 2))
    _wait_for_members(settings, 2, victim)
    cohort.publish_first(settings)
    survivor_share, victim_share = _wait_for_shares([survivor, victim], "both workers to read the first part")
    victim.wait_metric("vitals_sink_rows_total", lambda v: v > 0, labels={"table": "features"}, timeout_s=60)
    # Killed holding work: records it processed whose offsets are not committed (its open windows).
    uncommitted = _uncommitted(settings, victim_share)
    assert uncommitted == victim_share, f"the victim had committed all of partitions {victim_share - uncommitted}"
    victim.stop(signal.SIGKILL)
    (taken_over,) = _wait_for_shares([survivor], "the survivor to take the dead worker's partitions and read them",
                                     caught_up=False)
    assert taken_over == survivor_share | victim_share
    assert _uncommitted(settings, victim_share) == victim_share  # the survivor read them from where the victim committed
    cohort.publish_rest(settings)
    _assert_same_as_the_reference(settings, cohort)
    assert _state_crossed_the_split(cohort, settings, victim_share), "no patient of the dead worker's partitions " \
        "has a z-score after the split: nothing shows their state moved"
    assert survivor.stop() == 0
