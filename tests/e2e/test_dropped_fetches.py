"""Records Faust fetched and threw away at a partition's end still reach the database, exactly once.

Seen with two workers of a new group starting together over records already published: Faust's
fetcher returns records of a partition it paused for a rebalance's table recovery, and Faust
drops them. Its position is then at the partition's end; no later record shows the gap to the
ordered intake, and the partition waits forever for records the fetcher thinks it delivered.
The race is Faust's and rare, so ``tests/e2e/dropping_worker.py`` runs the real worker with
the drop made certain: the last records of one partition are thrown away once each, as Faust
throws them. The worker must notice the stall and seek the fetcher back (``stream/stall.py``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition

from infra.processes import child_env, free_port
from kernel.settings import WORKER_ROLE, Settings
from sinks.metrics import scrape
from tests.conftest import ROOT, as_service
from tests.e2e.streams import (Stream, assert_features_equal, count, feature_rows, score_keys,
                               wait_until)

pytestmark = pytest.mark.integration

DROPPED = 4  # the last records of the partition, thrown away once each


def _end_offsets(settings: Settings) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    try:
        tps = [TopicPartition(settings.readings_topic, p) for p in consumer.partitions_for_topic(settings.readings_topic)]
        return {tp.partition: offset for tp, offset in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


def test_records_faust_dropped_at_a_partitions_end_are_fetched_again_and_written_once(
        isolated: Settings, tmp_path: Path) -> None:
    stream = Stream(patients=5, minutes=12)
    stream.publish(isolated, range(stream.minutes))  # all before the worker starts: nothing committed
    ends = _end_offsets(isolated)
    partition = max(ends, key=ends.__getitem__)
    assert ends[partition] > DROPPED
    port = free_port()
    log = tmp_path / "dropping-worker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tests.e2e.dropping_worker", str(partition),
                                 str(ends[partition] - DROPPED)], cwd=ROOT,
                                env=child_env(as_service(isolated, WORKER_ROLE), VITALS_METRICS_PORT=str(port)),
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        expected = stream.expected_features()
        wait_until(lambda: proc.poll() is not None or set(feature_rows(isolated)) >= set(expected), timeout_s=90,
                   what="every feature row of the stream", log=log)
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
        text = log.read_text(errors="replace")
        assert text.count("dropped ") == DROPPED, "the drop this test is about did not happen"
        assert f"partition {partition}: no record delivered" in text and "seeking the fetcher back" in text
        assert scrape(f"http://127.0.0.1:{port}/metrics", "vitals_consumer_stalls_total", {"remedy": "seek"}) >= 1
        assert_features_equal(feature_rows(isolated), expected)
        keys = score_keys(isolated)
        assert len(keys) == len(set(keys)) == count(isolated, "risk_scores")
        assert {(patient, start) for patient, _, start in keys} == {
            (patient, start) for patient, _, start in expected}
    finally:
        proc.terminate()
        proc.wait(30)
