"""The three-broker cluster (``vitalrisk infra start kafka --brokers 3``): replicated topics, a leader's broker lost.

Every test here shares one session-scoped cluster (``kafka_cluster`` in tests/conftest.py); its start is
the cost, printed by the fixture.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType

from infra.errors import TopicsMismatch
from infra.kafka import LocalKafka
from infra.processes import read_pid
from infra.topics import describe, pipeline_topics
from kernel.settings import Settings

pytestmark = pytest.mark.integration


def fresh(cluster: LocalKafka) -> Settings:
    """The cluster's settings with topics and a Faust app id of their own, bootstrapping from every node."""
    tag = uuid.uuid4().hex[:10]
    return cluster.settings.model_copy(update={
        "kafka_bootstrap": cluster.bootstrap, "app_id": f"vitalrisk-test-{tag}",
        "readings_topic": f"t{tag}.readings", "deadletter_topic": f"t{tag}.deadletter",
        "outcomes_topic": f"t{tag}.outcomes", "scores_topic": f"t{tag}.scores", "features_topic": f"t{tag}.features",
        "snapshots_topic": f"t{tag}.snapshots", "patients_topic": f"t{tag}.patients"})


def wait_for(check: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout_s:.0f} s")
        time.sleep(0.2)


def test_cluster_creates_every_topic_with_three_replicas_two_in_sync(kafka_cluster: LocalKafka) -> None:
    settings = fresh(kafka_cluster)
    assert LocalKafka(settings).create_topics() == []
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    try:
        names = [spec.name for spec in pipeline_topics(settings)]
        states = describe(admin, names)
        assert {n: (s.replication_factor, s.configs["min.insync.replicas"]) for n, s in states.items()} == \
            {n: (3, "2") for n in names}
        # The broker's own topics (consumer offsets, transactions) and any other are made the same way.
        broker = admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, "2")], config_filter="all")
        values = {k: v["value"] for k, v in broker["broker"]["2"].items()}
        assert {k: values[k] for k in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor",
                                       "default.replication.factor", "transaction.state.log.min.isr",
                                       "min.insync.replicas")} == {
            "offsets.topic.replication.factor": "3", "transaction.state.log.replication.factor": "3",
            "default.replication.factor": "3", "transaction.state.log.min.isr": "2", "min.insync.replicas": "2"}
    finally:
        admin.close()
    # Settings that ask for less are told what differs, one line per topic; the topics stay as they are.
    weaker = settings.model_copy(update={"replication_factor": 1, "min_insync_replicas": 1})
    warnings = LocalKafka(weaker).create_topics()
    assert warnings[0] == (f"topic {settings.readings_topic}: replication factor 3 (settings: 1), "
                           "min.insync.replicas 2 (settings: 1)")
    assert len(warnings) == len(names)
    # More replicas than brokers: one line, before Kafka's own refusal.
    with pytest.raises(TopicsMismatch, match="VITALS_REPLICATION_FACTOR=4 but the cluster has 3 brokers up"):
        LocalKafka(fresh(kafka_cluster).model_copy(update={"replication_factor": 4})).create_topics()


def test_no_acknowledged_record_is_lost_when_the_leaders_broker_is_killed(kafka_cluster: LocalKafka) -> None:
    """acks=all with min.insync 2: the producer goes on while the partitions' leader is SIGKILLed and restarted."""
    settings = fresh(kafka_cluster)
    LocalKafka(settings).create_topics()
    topic = settings.readings_topic
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    leaders = Counter(p["leader_id"] for p in admin.describe_topics([topic])[0]["partitions"])
    victim = leaders.most_common(1)[0][0]  # the broker leading the most readings partitions

    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True,
                             linger_ms=5, client_id="vitalrisk-test-cluster")
    acked: list[bytes] = []
    failed: list[tuple[bytes, Exception]] = []
    stop = threading.Event()

    def produce() -> None:
        i = 0
        while not stop.is_set():
            value = str(i).encode()
            future = producer.send(topic, key=f"pt-{i % 40:04x}".encode(), value=value)
            future.add_callback(lambda _, v=value: acked.append(v))
            future.add_errback(lambda exc, v=value: failed.append((v, exc)))
            i += 1
            time.sleep(0.002)
        producer.flush(120)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        wait_for(lambda: len(acked) >= 500, "500 acknowledged records")
        pid = read_pid(kafka_cluster.node(victim).paths.pid)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        at_kill = len(acked)
        wait_for(lambda: len(acked) >= at_kill + 500, "500 more acknowledged records with one broker dead")
        began = time.monotonic()
        kafka_cluster.start(victim)
        restart_s = time.monotonic() - began

        def all_in_sync() -> bool:
            return all(len(p["isr_nodes"]) == 3 for p in admin.describe_topics([topic])[0]["partitions"])

        wait_for(all_in_sync, "the restarted broker back in every partition's in-sync replicas")
        at_restart = len(acked)
        wait_for(lambda: len(acked) >= at_restart + 200, "200 more acknowledged records after the restart")
    finally:
        stop.set()
        thread.join(150)
        producer.close()
        admin.close()
    print(f"node {victim} killed after {at_kill} acknowledged records, restarted in {restart_s:.1f} s; "
          f"{len(acked)} acknowledged in all")

    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        consumer.seek_to_beginning()
        ends = consumer.end_offsets(tps)
        seen: Counter[bytes] = Counter()
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < ends[tp] for tp in tps) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                seen.update(r.value for r in records)
    finally:
        consumer.close()
    assert failed == []
    assert [v for v in acked if v not in seen] == []  # nothing acknowledged is lost...
    assert [v for v, n in seen.items() if n > 1] == []  # ...and the idempotent producer wrote nothing twice
