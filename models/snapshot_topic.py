"""Model snapshots on Kafka: a compacted topic, one partition, keyed by model name.

Adapter module (Kafka I/O). The trainer appends each signed snapshot (:meth:`Snapshot.to_bytes`);
compaction keeps at least the newest record per model name, so a worker or trainer that starts
reads the partition from its beginning and takes the highest version of its model
(:func:`read_latest`), then a worker follows the tail to hot-swap (:class:`SnapshotFeed`).

Every record is verified (HMAC-SHA256 with ``VITALS_SNAPSHOT_KEY``) before it is unpickled; a
record that fails — written without the key, altered, or not a snapshot — is logged, counted
and skipped, never loaded: anyone who can write to the topic without the key cannot make a
scorer run their code.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from models.errors import SnapshotRejected
from models.patient_topic import start_retrying
from models.snapshots import Snapshot, signing_key
from kernel.kafka_security import aiokafka_options, kafka_python_options
from kernel.settings import Settings
from kernel.wire import SNAPSHOT_TOPIC

logger = logging.getLogger(__name__)

#: Largest snapshot record accepted (a River model with its scaler is tens of kB; trees grow).
MAX_SNAPSHOT_BYTES = 16 * 1024 * 1024


def model_name(settings: Settings) -> str:
    """The snapshot name of the configured model, e.g. ``risk-logreg``.

    >>> model_name(Settings(model="hat"))
    'risk-hat'
    """
    return f"risk-{settings.model}"


def ensure_topic(settings: Settings) -> None:
    """Create the compacted snapshots topic if it does not exist, replicated as the settings say."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, client_id="vitalrisk-snapshots",
                             **kafka_python_options(settings))
    try:
        if settings.snapshots_topic not in set(admin.list_topics()):
            try:
                configs = {**SNAPSHOT_TOPIC["topic_configs"], "min.insync.replicas": str(settings.min_insync_replicas)}
                admin.create_topics([NewTopic(settings.snapshots_topic, num_partitions=SNAPSHOT_TOPIC["num_partitions"],
                                              replication_factor=settings.replication_factor,
                                              topic_configs=configs)])
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()


def verified(raw: bytes | None, key: Any, name: str, *, on_reject: Callable[[str], None] | None = None,
             ) -> Snapshot | None:
    """The snapshot in ``raw`` if it verifies and is of model ``name``; ``None`` otherwise."""
    if raw is None:
        return None
    try:
        snapshot = Snapshot.from_bytes(raw, key)
    except SnapshotRejected as exc:
        logger.warning("snapshot record rejected, not loaded: %s", exc)
        if on_reject is not None:
            on_reject(str(exc))
        return None
    return snapshot if snapshot.name == name else None


def read_latest(settings: Settings, name: str, *, timeout_s: float = 30.0) -> tuple[Snapshot | None, int]:
    """The newest verified snapshot of ``name`` on the topic, and the offset after the last record read."""
    from kafka import KafkaConsumer, TopicPartition

    key = signing_key(settings.snapshot_key)
    ensure_topic(settings)
    tp = TopicPartition(settings.snapshots_topic, 0)
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None, enable_auto_commit=False,
                             client_id="vitalrisk-snapshots", fetch_max_bytes=MAX_SNAPSHOT_BYTES,
                             max_partition_fetch_bytes=MAX_SNAPSHOT_BYTES, **kafka_python_options(settings))
    try:
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        end = consumer.end_offsets([tp])[tp]
        latest: Snapshot | None = None
        deadline = time.monotonic() + timeout_s
        while consumer.position(tp) < end:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {settings.snapshots_topic} took over {timeout_s:.0f} s")
            for records in consumer.poll(timeout_ms=1000).values():
                for record in records:
                    snapshot = verified(record.value, key, name)
                    if snapshot is not None and (latest is None or snapshot.version > latest.version):
                        latest = snapshot
        return latest, end
    finally:
        consumer.close()


class SnapshotFeed:
    """Follows the snapshots topic from ``start_offset`` and hands each newer snapshot to ``swap``.

    Runs inside the worker's event loop (aiokafka). No consumer group: every worker reads the
    whole partition, so every scorer sees every snapshot.
    """

    def __init__(self, settings: Settings, name: str, swap: Callable[[Snapshot], bool], *, start_offset: int,
                 on_reject: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.name = name
        self.swap = swap
        self.start_offset = start_offset
        self.on_reject = on_reject
        self._key = signing_key(settings.snapshot_key)

    async def run(self) -> None:
        """Follow the topic until cancelled; reconnects are aiokafka's, a failed start is retried."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        tp = TopicPartition(self.settings.snapshots_topic, 0)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap, group_id=None,
                                    enable_auto_commit=False, client_id="vitalrisk-snapshot-feed",
                                    fetch_max_bytes=MAX_SNAPSHOT_BYTES,
                                    max_partition_fetch_bytes=MAX_SNAPSHOT_BYTES,
                                    **aiokafka_options(self.settings))
        await start_retrying(consumer.start, f"snapshot feed ({self.settings.snapshots_topic})")
        try:
            consumer.assign([tp])
            consumer.seek(tp, self.start_offset)
            while True:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                for record in batch.get(tp, []):
                    snapshot = verified(record.value, self._key, self.name, on_reject=self.on_reject)
                    if snapshot is not None and self.swap(snapshot):
                        logger.info("scoring with %s (%d examples seen)", snapshot.label, snapshot.examples_seen)
        finally:
            await consumer.stop()
