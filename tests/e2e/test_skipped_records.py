"""Records the Faust consumer skipped, read back from the real broker in offset order and acked through Faust."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest
from kafka import KafkaAdminClient, KafkaProducer, TopicPartition

from stream.skipped import SkippedRecords
from kernel.settings import Settings

pytestmark = pytest.mark.integration


class _AckLog:
    """Stands in for Faust's consumer as the target of acks only; the records come from the broker."""

    def __init__(self) -> None:
        self.acked: list[tuple[str, int, int]] = []

    def ack(self, message) -> bool:
        self.acked.append((message.tp.topic, message.tp.partition, message.offset))
        return True


def test_skipped_offsets_are_read_in_order_with_their_values_and_acked_through_the_consumer(
        isolated: Settings) -> None:
    producer = KafkaProducer(bootstrap_servers=isolated.kafka_bootstrap)
    sent_s = time.time()
    for i in range(12):
        producer.send(isolated.readings_topic, key=b"pt-1", value=f"record-{i}".encode(), partition=1,
                      timestamp_ms=1_767_571_200_000 + i)
    producer.flush()
    producer.close()
    acks = _AckLog()
    reader = SkippedRecords(isolated, SimpleNamespace(consumer=acks))

    async def read() -> list:
        try:
            first = await reader.read(isolated.readings_topic, 1, range(3, 7))
            again = await reader.read(isolated.readings_topic, 1, range(10, 11))  # the same reader, re-seeked
            return first + again
        finally:
            await reader.close()

    events = asyncio.run(read())
    assert [(e.message.offset, e.message.value) for e in events] == [
        (o, f"record-{o}".encode()) for o in (3, 4, 5, 6, 10)]
    # The readings topic keeps the broker's append time, not the sender's (LogAppendTime).
    assert sent_s - 5 <= events[0].message.timestamp <= time.time() + 5
    for event in events:
        event.ack()
    assert acks.acked == [(isolated.readings_topic, 1, o) for o in (3, 4, 5, 6, 10)]


def test_offsets_before_the_start_of_the_log_are_not_read(isolated: Settings) -> None:
    """A new group reads from the log's start; records retention deleted before it were not skipped."""
    producer = KafkaProducer(bootstrap_servers=isolated.kafka_bootstrap)
    for i in range(6):
        producer.send(isolated.readings_topic, key=b"pt-1", value=f"record-{i}".encode(), partition=0)
    producer.flush()
    producer.close()
    admin = KafkaAdminClient(bootstrap_servers=isolated.kafka_bootstrap)
    admin.delete_records({TopicPartition(isolated.readings_topic, 0): 4})  # the log starts at offset 4
    admin.close()
    reader = SkippedRecords(isolated, SimpleNamespace(consumer=_AckLog()))

    async def read() -> list:
        try:
            return await reader.read(isolated.readings_topic, 0, range(0, 5))
        finally:
            await reader.close()

    assert [e.message.offset for e in asyncio.run(read())] == [4]


def test_offsets_the_log_does_not_hold_are_an_error_not_a_silent_gap(isolated: Settings) -> None:
    reader = SkippedRecords(isolated, SimpleNamespace(consumer=_AckLog()))
    reader.TIMEOUT_S = 3.0

    async def read() -> None:
        try:
            await reader.read(isolated.readings_topic, 2, range(0, 2))  # nothing was ever written there
        finally:
            await reader.close()

    with pytest.raises(RuntimeError, match="could not read skipped offsets"):
        asyncio.run(read())
