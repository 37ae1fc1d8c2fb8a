"""A real worker on the three-broker cluster while the readings partitions' leader is SIGKILLed and restarted.

Checked against an uninterrupted run of the same seeded cohort on the same cluster: every window,
feature row and score, exactly once, with the same values.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Callable

import pytest
from kafka import KafkaAdminClient

from infra.kafka import LocalKafka
from infra.processes import read_pid
from kernel.settings import Settings
from simulators.cohort import CohortConfig, simulate
from simulators.kafka_publisher import make_producer, publish
from tests.conftest import Services, WorkerProcess
from tests.e2e.test_crash_recovery import _rows, _second_run, _wait_until_equal

pytestmark = pytest.mark.integration

HOURS = 2
PATIENTS = 20


def test_worker_rides_out_the_leaders_broker_killed_mid_stream(
        services: Services, isolated: Settings, kafka_cluster: LocalKafka,
        start_worker: Callable[[Settings], WorkerProcess]) -> None:
    settings = isolated.model_copy(update={
        "kafka_bootstrap": kafka_cluster.bootstrap, "state_dir": kafka_cluster.settings.state_dir,
        "replication_factor": 3, "min_insync_replicas": 2})
    LocalKafka(settings).create_topics()
    producer = make_producer(settings)
    report = publish(simulate(CohortConfig(patients=PATIENTS, seed=11, duration_ms=HOURS * 3_600_000)),
                     settings=settings, producer=producer)
    producer.close()
    device_messages = report.messages - report.outcomes

    reference = start_worker(settings)
    reference.wait_metric("vitals_messages_total", lambda v: v >= device_messages, timeout_s=180)
    reference.wait_metric("vitals_open_windows", lambda v: v == 0, timeout_s=60)
    assert reference.stop() == 0

    faulted = _second_run(settings, services.superuser_url)
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    try:
        partitions = admin.describe_topics([settings.readings_topic])[0]["partitions"]
    finally:
        admin.close()
    victim = Counter(p["leader_id"] for p in partitions).most_common(1)[0][0]
    worker = start_worker(faulted)
    worker.wait_metric("vitals_sink_rows_total", lambda v: v >= 500, labels={"table": "features"}, timeout_s=120)
    assert worker.metric("vitals_messages_total") < device_messages, "killed too late to prove anything"
    pid = read_pid(kafka_cluster.node(victim).paths.pid)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    time.sleep(5)  # mid-stream with one broker gone: leaders move to the other two
    kafka_cluster.start(victim)
    print(f"node {victim} down for {time.monotonic() - killed_at:.1f} s")
    worker.wait_metric("vitals_messages_total", lambda v: v >= device_messages, timeout_s=180)
    worker.wait_metric("vitals_open_windows", lambda v: v == 0, timeout_s=120)
    _wait_until_equal(lambda: _rows(faulted), _rows(settings))

    expected_features, expected_scores = _rows(settings)
    got_features, got_scores = _rows(faulted)
    assert len(got_features) == len(expected_features) > 0
    assert got_features == expected_features
    assert got_scores == expected_scores
    assert worker.stop() == 0
