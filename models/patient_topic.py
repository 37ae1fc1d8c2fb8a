"""Patient records on Kafka, for the worker's scorer: the compacted ``patients_topic``, followed.

Adapter module (Kafka I/O). At start the worker reads every partition to its end, so its first
scores already know each patient's inputs (:func:`read_patients`), then follows the tail
(:class:`PatientFeed`). No consumer group: every worker needs every patient, whatever readings
partitions it owns. The trainer reads the same topic with its own consumer and the same
:func:`apply_records`.

A broker outage pauses the feed, never ends it: aiokafka reconnects and resumes from the
feed's position, and a start or a topic look-up that fails is retried with
:data:`FEED_BACKOFF` (the worker's own probe, :mod:`stream.kafka_watch`, reports the outage).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from kernel.backoff import Backoff
from models.patient_context import PatientContext
from kernel.errors import InvalidMessage
from kernel.kafka_security import aiokafka_options, kafka_python_options
from kernel.settings import Settings
from kernel.limits import valid_id
from kernel.wire import PatientRecord, decode_patient

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Between attempts to start a feed (or look its topic up) while the broker is unavailable.
FEED_BACKOFF = Backoff(first_s=0.5, max_s=10.0, give_up_s=None)


async def start_retrying(start: Callable[[], Awaitable[T]], what: str, *, backoff: Backoff = FEED_BACKOFF) -> T:
    """Await ``start()`` until it succeeds (its result), sleeping ``backoff`` delays after Kafka errors.

    Logs the first failure and the success after it, nothing in between.
    """
    from aiokafka.errors import KafkaError as AIOKafkaError
    from kafka.errors import KafkaError

    retries = None
    while True:
        try:
            result = await start()
        except (AIOKafkaError, KafkaError, OSError) as exc:
            if retries is None:
                logger.warning("%s: Kafka unavailable (%s); retrying", what, type(exc).__name__)
                retries = backoff.start(now_s=time.monotonic(), rng=random.Random())
            delay = retries.next_delay(now_s=time.monotonic())
            await asyncio.sleep(delay if delay is not None else backoff.max_s)
            continue
        if retries is not None:
            logger.warning("%s: started after %d failed attempts", what, retries.failures)
        return result


def apply_records(records: Iterable[Any], update: Callable[[PatientRecord], None],
                  forget: Callable[[str], None]) -> None:
    """Hand each decoded patient record to ``update`` and each tombstone's patient id (the patient
    left the programme) to ``forget``; unreadable records are logged and skipped."""
    for record in records:
        if record.value is None:
            patient_id = (record.key or b"").decode("utf-8", "replace")
            if valid_id(patient_id):
                forget(patient_id)
            else:
                logger.warning("patient tombstone at offset %d has no valid patient id as its key", record.offset)
            continue
        try:
            patient = decode_patient(record.value)
        except InvalidMessage as exc:
            logger.warning("patient record at offset %d rejected: %s", record.offset, exc)
            continue
        update(patient)


def topic_partitions(settings: Settings) -> list[int]:
    """The patients topic's partitions; empty while it does not exist."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None, enable_auto_commit=False,
                             client_id="vitalrisk-patients", **kafka_python_options(settings))
    try:
        return sorted(consumer.partitions_for_topic(settings.patients_topic) or ())
    finally:
        consumer.close()


def read_patients(settings: Settings, context: PatientContext, *, timeout_s: float = 30.0) -> dict[int, int]:
    """Read the whole patients topic into ``context``; return each partition's next offset.

    A missing topic is not an error: the worker then scores from vitals alone until it appears
    (the feed picks it up).
    """
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None, enable_auto_commit=False,
                             client_id="vitalrisk-patients", **kafka_python_options(settings))
    try:
        partitions = consumer.partitions_for_topic(settings.patients_topic) or set()
        if not partitions:
            logger.warning("topic %s does not exist yet: scoring from vitals alone", settings.patients_topic)
            return {}
        tps = [TopicPartition(settings.patients_topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {settings.patients_topic} took over {timeout_s:.0f} s")
            for records in consumer.poll(timeout_ms=1000).values():
                apply_records(records, context.update, context.forget)
        logger.info("%d patients' diagnoses known", len(context))
        return {tp.partition: ends[tp] for tp in tps}
    finally:
        consumer.close()


class PatientFeed:
    """Follows the patients topic from ``start_offsets`` into ``context``, inside the worker's event loop."""

    def __init__(self, settings: Settings, context: PatientContext, *, start_offsets: dict[int, int]) -> None:
        self.settings = settings
        self.context = context
        self.start_offsets = dict(start_offsets)

    async def run(self) -> None:
        """Follow every partition until cancelled; a topic created later is read from its start."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        topic = self.settings.patients_topic
        # The partitions read at start; a topic created later is looked up (an assigned
        # consumer's own metadata never learns of a topic it does not already know).
        partitions = sorted(self.start_offsets)
        while not partitions:
            partitions = await start_retrying(lambda: asyncio.to_thread(topic_partitions, self.settings),
                                              f"patient feed ({topic})")
            if not partitions:
                await asyncio.sleep(5.0)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap, group_id=None,
                                    enable_auto_commit=False, auto_offset_reset="earliest",
                                    client_id="vitalrisk-patient-feed", **aiokafka_options(self.settings))
        await start_retrying(consumer.start, f"patient feed ({topic})")
        try:
            tps = [TopicPartition(topic, p) for p in partitions]
            consumer.assign(tps)
            for tp in tps:
                if tp.partition in self.start_offsets:
                    consumer.seek(tp, self.start_offsets[tp.partition])
                else:
                    await consumer.seek_to_beginning(tp)
            while True:
                for records in (await consumer.getmany(timeout_ms=1000)).values():
                    apply_records(records, self.context.update, self.context.forget)
        finally:
            await consumer.stop()
