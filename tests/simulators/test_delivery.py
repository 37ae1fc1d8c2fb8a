"""The simulators' delivery rides out a broker outage: blocks at its bound, resends, drops nothing.

An in-process fake producer fails the records sent while its "broker" is down, the way
kafka-python hands back a batch it gave up on after its delivery timeout.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError
from prometheus_client import CollectorRegistry

from kernel.backoff import Backoff
from simulators.kafka_publisher import Delivery
from sinks.metrics import KafkaHealth, KafkaMetrics


class Future:
    def __init__(self) -> None:
        self.errbacks: list[Callable[[BaseException], object]] = []

    def add_errback(self, errback: Callable[[BaseException], object]) -> Future:
        self.errbacks.append(errback)
        return self


class FlakyProducer:
    """Acknowledges on flush, except while ``down_flushes`` > 0: then every unflushed record fails."""

    def __init__(self, down_flushes: int, error: BaseException | None = None) -> None:
        self.down_flushes = down_flushes
        self.error = error or KafkaTimeoutError("Expiring 3 record(s): 30000 ms has passed since batch creation")
        self.unflushed: list[tuple[bytes, Future]] = []
        self.acked: list[bytes] = []
        self.flushes = 0
        self.most_unflushed = 0

    def send(self, topic: str, *, key: bytes, value: bytes, timestamp_ms: int | None = None) -> Future:
        future = Future()
        self.unflushed.append((value, future))
        self.most_unflushed = max(self.most_unflushed, len(self.unflushed))
        return future

    def flush(self, timeout: float | None = None) -> None:
        self.flushes += 1
        batch, self.unflushed = self.unflushed, []
        for value, future in batch:
            if self.down_flushes > 0:
                for errback in future.errbacks:
                    errback(self.error)
            else:
                self.acked.append(value)
        self.down_flushes = max(0, self.down_flushes - 1)


def test_an_outage_blocks_at_the_bound_and_every_record_arrives_once(caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    producer = FlakyProducer(down_flushes=0)
    sleeps: list[float] = []
    delivery = Delivery(producer, max_pending=4, backoff=Backoff(first_s=1.0, max_s=4.0, give_up_s=None),
                        health=KafkaHealth("simulator", KafkaMetrics(registry)), sleep=sleeps.append)
    with caplog.at_level(logging.INFO):
        for i in range(6):
            delivery.send("t", b"k", b"%d" % i)
        producer.down_flushes = 3  # the broker goes away: the next three flushes fail everything
        for i in range(6, 20):
            delivery.send("t", b"k", b"%d" % i)
        delivery.flush()
    assert sorted(int(v) for v in producer.acked) == list(range(20)), "none lost, none doubled"
    assert producer.most_unflushed <= 4, "bounded: the loop waited for the broker"
    assert delivery.errors == 0 and delivery.resent == 12  # 4 records in each of three failed flushes
    assert len(sleeps) == 3 and 0.5 <= sleeps[0] <= 1.0 and 1.0 <= sleeps[1] <= 2.0
    lines = [r.getMessage() for r in caplog.records if "Kafka" in r.getMessage()]
    assert len(lines) == 2 and "unavailable (KafkaTimeoutError" in lines[0] and "back after" in lines[1], lines
    assert registry.get_sample_value("vitals_kafka_outages_total", {"client": "simulator"}) == 1.0
    assert registry.get_sample_value("vitals_kafka_up", {"client": "simulator"}) == 1.0


def test_an_error_no_retry_can_fix_is_counted_not_resent() -> None:
    producer = FlakyProducer(down_flushes=1, error=MessageSizeTooLargeError("too large"))
    delivery = Delivery(producer, sleep=lambda s: None)
    delivery.send("t", b"k", b"big")
    delivery.flush()
    assert delivery.errors == 1 and delivery.resent == 0 and producer.acked == []
