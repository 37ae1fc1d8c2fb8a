"""The trainer rides out a Kafka outage in place: state kept, snapshots published once, in order.

An in-process fake stands in for the broker where the real one cannot be made to fail at the
exact step (a snapshot's acknowledgement, the end offsets between two polls); the real-broker
outage is tests/e2e/test_broker_outage.py.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from kafka.errors import KafkaTimeoutError, KafkaConnectionError
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from kernel.backoff import Backoff
from kernel.settings import Settings
from models.risk import RiskModel
from models.snapshots import Snapshot
from models.trainer_service import TrainerService
from sinks.metrics import KafkaMetrics


class FakeFuture:
    def __init__(self, outcome: BaseException | None, done: bool = True) -> None:
        self.outcome = outcome
        self.is_done = done
        self.waited = 0

    def get(self, timeout: float) -> object:
        self.waited += 1
        if not self.is_done:
            raise KafkaTimeoutError(f"Timeout after waiting for {timeout} secs.")
        if self.outcome is not None:
            raise self.outcome
        return object()


class FakeProducer:
    """Hands out the futures it is given, one per send, and records what was sent."""

    def __init__(self, futures: list[FakeFuture]) -> None:
        self.futures = futures
        self.sent: list[bytes] = []

    def send(self, topic: str, *, key: bytes, value: bytes) -> FakeFuture:
        self.sent.append(value)
        return self.futures.pop(0) if self.futures else FakeFuture(None)

    def close(self, timeout: float | None = None) -> None:
        pass


class Closeable:
    closed = True

    def close(self) -> None:
        pass


def _service(registry: CollectorRegistry, producer: Any, sleeps: list[float]) -> TrainerService:
    service = TrainerService(Settings(snapshot_key=SecretStr("k" * 40)), kafka_metrics=KafkaMetrics(registry),
                             backoff=Backoff(first_s=0.5, max_s=2.0, give_up_s=None), sleep=sleeps.append)
    service.producer = producer
    service.consumer = Closeable()
    service.db = Closeable()
    return service


def _snapshot(version: int) -> Snapshot:
    return Snapshot(name="risk-logreg", version=version, created_at_ms=version, examples_seen=10 * version,
                    metrics={}, model=RiskModel("logreg", 42))


def _sample(registry: CollectorRegistry, name: str) -> float | None:
    return registry.get_sample_value(name, {"client": "trainer"})


def test_a_snapshot_the_broker_does_not_acknowledge_waits_and_is_published_once_in_order() -> None:
    registry = CollectorRegistry()
    pending = FakeFuture(None, done=False)
    producer = FakeProducer([pending])
    service = _service(registry, producer, [])
    with pytest.raises(KafkaTimeoutError):
        service._publish(_snapshot(1))
    service._unpublished.append(_snapshot(2))  # made while v1 still waits
    assert service.snapshots == [] and service._unregistered == []
    with pytest.raises(KafkaTimeoutError):
        service._send_snapshots()  # still in flight: waited for again, not sent again
    assert len(producer.sent) == 1 and pending.waited == 2
    pending.is_done = True  # the broker is back and acknowledges it
    service._send_snapshots()
    assert service.snapshots == ["risk-logreg-v1", "risk-logreg-v2"]
    assert [s.version for s in service._unregistered] == [1, 2]
    assert len(producer.sent) == 2, "v1 sent once, then v2"


def test_a_failed_send_is_sent_again() -> None:
    registry = CollectorRegistry()
    producer = FakeProducer([FakeFuture(KafkaTimeoutError("expired"), done=True), FakeFuture(None)])
    service = _service(registry, producer, [])
    with pytest.raises(KafkaTimeoutError):
        service._publish(_snapshot(1))
    service._send_snapshots()
    assert len(producer.sent) == 2 and service.snapshots == ["risk-logreg-v1"]


def test_the_loop_retries_with_backoff_and_reports_the_outage_once(caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    sleeps: list[float] = []
    service = _service(registry, FakeProducer([]), sleeps)
    outcomes: list[BaseException | None] = [KafkaTimeoutError("end offsets"), KafkaConnectionError(),
                                            KafkaTimeoutError("end offsets"), None, None]
    up_during: list[float | None] = []

    def step() -> int:
        up_during.append(_sample(registry, "vitals_kafka_up"))
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome
        service.kafka.ok()  # a step that reached the broker
        if not outcomes:
            service.stop()
        return 0

    service.step = step  # type: ignore[method-assign]  # the loop under test, around a scripted step
    with caplog.at_level(logging.INFO):
        service.run()
    assert up_during == [1.0, 0.0, 0.0, 0.0, 1.0]
    assert _sample(registry, "vitals_kafka_outages_total") == 1.0
    assert _sample(registry, "vitals_kafka_up") == 1.0
    lines = [r.getMessage() for r in caplog.records if "Kafka" in r.getMessage()]
    assert len(lines) == 2 and "unavailable (KafkaTimeoutError" in lines[0] and "back after" in lines[1], lines
    assert "3 failed attempts" in lines[1]
    # three failures: sleeps of [0.25, 0.5], [0.5, 1], [1, 2] s, in slices of at most 0.25 s
    assert 1.75 <= sum(sleeps) <= 3.5 and max(sleeps) <= 0.25
