"""Durability settings, the topics they make, what differs in existing ones; the cluster's shape (no broker needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from infra.kafka import LocalKafka
from infra.services import run_infra
from infra.topics import TopicState, differences, faust_topics, pipeline_topics
from kernel.errors import ConfigurationError
from kernel.settings import Settings


def test_every_topic_takes_the_durability_settings() -> None:
    settings = Settings(replication_factor=3, min_insync_replicas=2, partitions=12)
    specs = [*pipeline_topics(settings), *faust_topics(settings)]
    assert {(s.replication_factor, s.configs["min.insync.replicas"]) for s in specs} == {(3, "2")}
    assert {s.name: s.partitions for s in specs if s.partitions != 12} == {"models.snapshots": 1}
    compacted = {s.name for s in specs if s.configs["cleanup.policy"] == "compact"}
    assert compacted == {"models.snapshots", "vitals.patients", "vitalrisk-state-changelog"}


def test_min_insync_above_the_replication_factor_is_refused() -> None:
    with pytest.raises(ValidationError, match="VITALS_MIN_INSYNC_REPLICAS=2 exceeds VITALS_REPLICATION_FACTOR=1"):
        Settings(min_insync_replicas=2)


@pytest.mark.parametrize(("state", "fatal", "says"), [
    (TopicState(6, 3, {"cleanup.policy": "compact", "min.insync.replicas": "2"}), False, None),
    (TopicState(6, 2, {"cleanup.policy": "compact", "min.insync.replicas": "2"}), False,
     "replication factor 2 (settings: 3)"),
    (TopicState(6, 3, {"cleanup.policy": "compact", "min.insync.replicas": "1"}), False,
     "min.insync.replicas 1 (settings: 2)"),
    (TopicState(6, 3, {"cleanup.policy": "delete", "min.insync.replicas": "2"}), True,
     "cleanup.policy delete (settings: compact)"),
    (TopicState(3, 3, {"cleanup.policy": "compact", "min.insync.replicas": "2"}), True, "3 partitions (settings: 6)"),
    (TopicState(6, 1, {"cleanup.policy": "compact", "min.insync.replicas": "2"}), True,
     "min.insync.replicas 2 above its replication factor 1"),
])
def test_what_differs_is_one_line_and_fatal_where_running_would_be_wrong(state: TopicState, fatal: bool,
                                                                          says: str | None) -> None:
    spec = pipeline_topics(Settings(replication_factor=3, min_insync_replicas=2))[-1]  # the patients topic
    found = differences(spec, state)
    if says is None:
        assert found is None
        return
    assert found is not None and found.fatal is fatal
    assert found.line.startswith("topic vitals.patients: ") and says in found.line and "\n" not in found.line


def test_cluster_nodes_take_two_ports_each_from_the_bootstrap_port(tmp_path: Path) -> None:
    cluster = LocalKafka(Settings(state_dir=tmp_path, kafka_bootstrap="127.0.0.1:19600"), brokers=3)
    assert cluster.bootstrap == "127.0.0.1:19600,127.0.0.1:19602,127.0.0.1:19604"
    assert [port for _, port in cluster.ports()] == list(range(19600, 19606))
    assert cluster.ports(2) == [("Kafka node 2", 19602), ("Kafka node 2's controller", 19603)]
    assert "(VITALS_KAFKA_BOOTSTRAP=127.0.0.1:19600,127.0.0.1:19602,127.0.0.1:19604): stopped" in cluster.status()
    # The cluster creates with RF 3 and min.insync 2 what the settings leave unset; what they set stands.
    assert (cluster.topic_settings().replication_factor, cluster.topic_settings().min_insync_replicas) == (3, 2)
    pinned = LocalKafka(Settings(state_dir=tmp_path, kafka_bootstrap="127.0.0.1:19600", replication_factor=2),
                        brokers=3)
    assert (pinned.topic_settings().replication_factor, pinned.topic_settings().min_insync_replicas) == (2, 2)
    single = LocalKafka(Settings(state_dir=tmp_path, kafka_bootstrap="127.0.0.1:19600"))
    assert single.brokers == 1 and single.topic_settings().replication_factor == 1


def test_cluster_arguments_that_cannot_work_are_one_line_errors(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, kafka_bootstrap="127.0.0.1:19600")
    with pytest.raises(ConfigurationError, match="--secure with --brokers 3 is not supported"):
        LocalKafka(settings, secure=True, brokers=3)
    with pytest.raises(ConfigurationError, match="no Kafka node 2: .* has one node"):
        LocalKafka(settings).node(2)
    with pytest.raises(ConfigurationError, match="--node goes with"):
        run_infra(settings, "status", "kafka", node=2)
    with pytest.raises(ConfigurationError, match="--brokers goes with"):
        run_infra(settings, "stop", "kafka", brokers=3)
