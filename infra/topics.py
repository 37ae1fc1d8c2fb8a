"""The pipeline's topics as the settings want them, and what differs in the ones that exist.

Every topic vitalrisk creates takes its partitions (``VITALS_PARTITIONS``), replication factor
(``VITALS_REPLICATION_FACTOR``) and ``min.insync.replicas`` (``VITALS_MIN_INSYNC_REPLICAS``) from
the settings. A topic that already exists is never changed; :func:`differences` says, in one line
per topic, where it departs from the settings, and whether running on it would be wrong:

- **fatal** (:class:`~infra.errors.TopicsMismatch`, nothing starts): another partition count (keys
  would map to other partitions than the state that was kept for them, and Faust's changelog must
  have as many partitions as the topic it follows), another ``cleanup.policy`` (a compacted topic
  deleting old records loses snapshots or patients; a compacted readings topic loses readings), or
  ``min.insync.replicas`` above the topic's replication factor (no ``acks=all`` write could succeed);
- **a warning**, logged: a replication factor or ``min.insync.replicas`` other than the settings' (the
  pipeline runs, less or more durable than asked; ``kafka-reassign-partitions`` and
  ``kafka-configs --alter`` change them in place).

Faust's changelog topic (``<app id>-state-changelog``) is created by the worker itself, with the same
settings; it is checked here when it exists.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.protocol.metadata import MetadataRequest

from infra.errors import TopicsMismatch
from kernel.settings import Settings
from kernel.wire import SNAPSHOT_TOPIC

logger = logging.getLogger(__name__)

#: How long topic creation waits for the new topics to show in the cluster's metadata.
CREATE_WAIT_S = 10.0
#: The topic configs that are compared: the durability settings and the retention model.
CHECKED_CONFIGS = ("min.insync.replicas", "cleanup.policy")


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One topic as the settings want it."""

    name: str
    partitions: int
    replication_factor: int
    configs: Mapping[str, str] = field(default_factory=dict)

    def new_topic(self) -> NewTopic:
        return NewTopic(self.name, num_partitions=self.partitions, replication_factor=self.replication_factor,
                        topic_configs=dict(self.configs))


@dataclass(frozen=True, slots=True)
class TopicState:
    """One existing topic as the cluster describes it: the fewest replicas of any partition, the effective configs."""

    partitions: int
    replication_factor: int
    configs: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Difference:
    """What differs in one topic, as one line; ``fatal`` if running on it would be wrong."""

    line: str
    fatal: bool


def durability(settings: Settings) -> dict[str, str]:
    """The topic config every topic vitalrisk creates carries for ``acks=all`` writes.

    >>> durability(Settings(replication_factor=3, min_insync_replicas=2))
    {'min.insync.replicas': '2'}
    """
    return {"min.insync.replicas": str(settings.min_insync_replicas)}


def pipeline_topics(settings: Settings) -> list[TopicSpec]:
    """The topics ``vitalrisk infra`` creates: five append-only topics, then the two compacted ones.

    The readings topic stamps each record with the broker's time (``LogAppendTime``): the worker
    bounds event time by it, so a sender cannot move a watermark ahead by forging its record time.
    The model snapshots' topic has one partition, compacted: its newest record per model name is
    what every scorer and a restarted trainer start from. The patients topic is compacted too: the
    latest record per patient is what counts.

    >>> [(t.name, t.partitions, t.configs["cleanup.policy"]) for t in pipeline_topics(Settings())][-3:]
    [('vitals.features', 6, 'delete'), ('models.snapshots', 1, 'compact'), ('vitals.patients', 6, 'compact')]
    """
    s, rf, durable = settings, settings.replication_factor, durability(settings)
    append_only = [s.readings_topic, s.deadletter_topic, s.outcomes_topic, s.scores_topic, s.features_topic]
    specs = [TopicSpec(t, s.partitions, rf, {"cleanup.policy": "delete", "retention.ms": "-1", **durable,
                                              **_timestamps(t, s)})
             for t in append_only]
    specs.append(TopicSpec(s.snapshots_topic, SNAPSHOT_TOPIC["num_partitions"], rf,
                           {**SNAPSHOT_TOPIC["topic_configs"], **durable}))
    specs.append(TopicSpec(s.patients_topic, s.partitions, rf,
                           {"cleanup.policy": "compact", "retention.ms": "-1", **durable}))
    return specs


def faust_topics(settings: Settings) -> list[TopicSpec]:
    """The topics the worker's Faust app creates with the same settings: its table's changelog.

    >>> [t.name for t in faust_topics(Settings())]
    ['vitalrisk-state-changelog']
    """
    return [TopicSpec(f"{settings.app_id}-state-changelog", settings.partitions, settings.replication_factor,
                      {"cleanup.policy": "compact", **durability(settings)})]


def differences(spec: TopicSpec, state: TopicState) -> Difference | None:
    """What differs between the topic ``spec`` wants and the one that exists, or ``None``.

    Examples
    --------
    >>> want = TopicSpec("vitals.readings", 6, 3, {"cleanup.policy": "delete", "min.insync.replicas": "2"})
    >>> print(differences(want, TopicState(6, 3, {"cleanup.policy": "delete", "min.insync.replicas": "2"})))
    None
    >>> differences(want, TopicState(6, 1, {"cleanup.policy": "delete", "min.insync.replicas": "1"}))
    Difference(line='topic vitals.readings: replication factor 1 (settings: 3), min.insync.replicas 1 (settings: 2)', fatal=False)
    >>> differences(want, TopicState(12, 3, {"cleanup.policy": "compact", "min.insync.replicas": "2"})).fatal
    True
    >>> differences(want, TopicState(6, 1, {"cleanup.policy": "delete", "min.insync.replicas": "2"})).line
    'topic vitals.readings: replication factor 1 (settings: 3), min.insync.replicas 2 above its replication factor 1: no acks=all write can succeed'
    """
    parts: list[str] = []
    fatal = False
    if state.partitions != spec.partitions:
        parts.append(f"{state.partitions} partitions (settings: {spec.partitions})")
        fatal = True
    if state.replication_factor != spec.replication_factor:
        parts.append(f"replication factor {state.replication_factor} (settings: {spec.replication_factor})")
    for name in CHECKED_CONFIGS:
        wanted, actual = spec.configs.get(name), state.configs.get(name)
        if wanted is None or actual is None:
            continue
        if name == "min.insync.replicas" and int(actual) > state.replication_factor:
            parts.append(f"min.insync.replicas {actual} above its replication factor {state.replication_factor}: "
                         "no acks=all write can succeed")
            fatal = True
        elif actual != wanted:
            parts.append(f"{name} {actual} (settings: {wanted})")
            fatal = fatal or name == "cleanup.policy"
    return Difference(f"topic {spec.name}: {', '.join(parts)}", fatal) if parts else None


def describe(admin: KafkaAdminClient, names: Iterable[str]) -> dict[str, TopicState]:
    """The state of each topic among ``names`` that exists."""
    wanted = set(names)
    existing = sorted(wanted & set(admin.list_topics()))
    if not existing:
        return {}
    configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name) for name in existing],
                                     config_filter="all")
    by_name = {name: {key: entry["value"] for key, entry in values.items() if key in CHECKED_CONFIGS}
               for kind in configs.values() for name, values in kind.items()}
    states = {}
    for topic in admin.describe_topics(existing):
        partitions = topic["partitions"]
        replicas = min((len(p["replica_nodes"]) for p in partitions), default=0)
        states[topic["name"]] = TopicState(len(partitions), replicas, by_name.get(topic["name"], {}))
    return states


def ensure_topics(admin: KafkaAdminClient, create: list[TopicSpec], check: Iterable[TopicSpec] = ()) -> list[str]:
    """Create each topic of ``create`` that is missing; check the existing ones, and those of ``check``.

    Returns the warnings (each also logged). The replication factor is checked against the brokers
    first: Kafka would refuse the topic with a less readable message.

    Raises
    ------
    TopicsMismatch
        If an existing topic differs in a way the pipeline cannot run on, or the cluster has fewer
        brokers than the replication factor asks for.
    """
    checked = [*create, *check]
    states = describe(admin, [spec.name for spec in checked])
    missing = [spec for spec in create if spec.name not in states]
    if missing:
        brokers = len(admin.describe_cluster()["brokers"])
        factor = max(spec.replication_factor for spec in missing)
        if factor > brokers:
            raise TopicsMismatch(f"VITALS_REPLICATION_FACTOR={factor} but the cluster has {brokers} "
                                 f"broker{'s' if brokers != 1 else ''} up: lower it, or start the brokers "
                                 f"(`vitalrisk infra start kafka --brokers 3` for a local cluster)")
        try:
            admin.create_topics([spec.new_topic() for spec in missing])
        except TopicAlreadyExistsError:  # another process made one meanwhile: checked at its next start
            pass
        _wait_listed(admin, {spec.name for spec in missing})
    found = [d for spec in checked if spec.name in states if (d := differences(spec, states[spec.name]))]
    fatal = [d.line for d in found if d.fatal]
    warnings = [d.line for d in found if not d.fatal]
    for line in warnings:
        logger.warning("%s", line)
    if fatal:
        for line in fatal[1:]:
            logger.error("%s", line)
        more = f" (and {len(fatal) - 1} more, logged above)" if len(fatal) > 1 else ""
        raise TopicsMismatch(f"{fatal[0]}{more}: the pipeline cannot run on it as it is; delete and recreate "
                             "the topic or change the settings to match")
    return warnings


def _wait_listed(admin: KafkaAdminClient, names: set[str], timeout_s: float = CREATE_WAIT_S) -> None:
    """Wait until every broker of the cluster lists ``names``.

    A new topic reaches each broker's metadata a moment after the controller made it; a client that
    asks another broker in that moment would be told the topic does not exist.
    """
    deadline = time.monotonic() + timeout_s
    nodes = [broker["broker_id"] for broker in admin.describe_cluster()["brokers"]]
    waiting = set(nodes)
    while waiting and time.monotonic() < deadline:
        waiting = {node for node in waiting if (listed := _listed_by(admin, node)) is not None and not names <= listed}
        if waiting:
            time.sleep(0.1)


def _listed_by(admin: KafkaAdminClient, node_id: int) -> set[str] | None:
    """The topics one broker lists, or None if it cannot be asked now (the others decide).

    kafka-python's admin asks whichever broker is least loaded, so this talks to its connection manager.
    """
    manager = admin._manager  # noqa: SLF001 -- the public calls cannot name a broker
    async def ask() -> set[str]:
        response = await manager.send(MetadataRequest(topics=None, allow_auto_topic_creation=False),
                                             node_id=node_id)
        return {topic.name for topic in response.topics if topic.error_code == 0}
    try:
        listed: set[str] = manager.run(ask)
        return listed
    except KafkaError:
        return None


def _timestamps(topic: str, settings: Settings) -> dict[str, str]:
    """Topic configs for record times: the broker's own on the readings topic, senders' elsewhere.

    >>> _timestamps("vitals.readings", Settings()), _timestamps("risk.scores", Settings())
    ({'message.timestamp.type': 'LogAppendTime'}, {})
    """
    return {"message.timestamp.type": "LogAppendTime"} if topic == settings.readings_topic else {}
