"""Publish simulated device messages and outcomes to Kafka with kafka-python.

The record key is the pseudonymous patient id, so one patient's readings and outcomes share a
partition; the record timestamp is the message's (simulated) send time, so event time and
record time agree in accelerated runs.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from stream.settings import Settings

logger = logging.getLogger(__name__)


class Publishable(Protocol):
    """What the publisher needs of a simulated message (see :mod:`simulators.cohort`)."""

    @property
    def kind(self) -> str: ...  # "reading" or "outcome"
    @property
    def key(self) -> str: ...
    @property
    def sent_ms(self) -> int: ...
    @property
    def payload(self) -> dict[str, Any] | bytes: ...


@dataclass(slots=True)
class PublishReport:
    """Counts of one publishing run."""

    messages: int = 0
    readings: int = 0
    outcomes: int = 0
    errors: int = 0
    seconds: float = 0.0

    @property
    def readings_per_s(self) -> float:
        return self.readings / self.seconds if self.seconds > 0 else 0.0


def make_producer(settings: Settings, *, compression: str | None = "gzip") -> Any:
    """A kafka-python producer tuned for throughput without giving up durability (acks=all)."""
    from kafka import KafkaProducer

    return KafkaProducer(bootstrap_servers=settings.kafka_bootstrap.split(","), acks="all",
                         linger_ms=20, batch_size=512 * 1024, compression_type=compression,
                         max_request_size=4 * 1024 * 1024,
                         retries=5, client_id="vitalrisk-simulator")


def publish(messages: Iterable[Publishable], *, settings: Settings, producer: Any,
            speed: float | None = None, progress: Callable[[PublishReport], None] | None = None,
            progress_every_s: float = 1.0) -> PublishReport:
    """Send every message; pace by ``sent_ms`` at ``speed`` × real time, or flat out if ``None``.

    Returns after the producer has flushed: every counted message was acknowledged by the broker.
    """
    report = PublishReport()
    started = time.monotonic()
    first_sent_ms: int | None = None
    last_progress = started

    def on_error(exc: BaseException) -> None:
        report.errors += 1
        logger.warning("send failed: %s", type(exc).__name__)

    for message in messages:
        if speed is not None:
            if first_sent_ms is None:
                first_sent_ms = message.sent_ms
            due = started + (message.sent_ms - first_sent_ms) / 1000.0 / speed
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        payload = message.payload
        value = payload if isinstance(payload, bytes) else json.dumps(payload, separators=(",", ":")).encode()
        topic = settings.outcomes_topic if message.kind == "outcome" else settings.readings_topic
        producer.send(topic, key=message.key.encode(), value=value,
                      timestamp_ms=message.sent_ms).add_errback(on_error)
        report.messages += 1
        if message.kind == "outcome":
            report.outcomes += 1
        elif isinstance(payload, dict):
            report.readings += len(payload.get("readings", ()))
        now = time.monotonic()
        if progress is not None and now - last_progress >= progress_every_s:
            report.seconds = now - started
            progress(report)
            last_progress = now
    producer.flush()
    report.seconds = time.monotonic() - started
    return report
