"""Publish simulated device messages and outcomes to Kafka with kafka-python.

The record key is the pseudonymous patient id, so one patient's readings and outcomes share a
partition; the record timestamp is the message's (simulated) send time, so event time and
record time agree in accelerated runs.

:func:`publish` sends a simulated cohort's messages (``vitalrisk simulate``);
:class:`KafkaSender` sends the load generator's pre-encoded records
(:mod:`simulators.load`) with bounded buffering and counts what the broker acknowledged.

**Broker outage.** Nothing is dropped while the broker is away. The producer retries each
batch (idempotently, so in order and without duplicates) for :data:`DELIVERY_TIMEOUT_MS`;
:class:`Delivery`, under :func:`publish` and the replay's, holds at most ``max_pending``
messages unconfirmed — past that the producing loop blocks until the broker has them — and
sends again, with :class:`kernel.backoff.Backoff`, whatever the producer gave up on. One log
line when the outage starts, one when it ends.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from kernel.backoff import Backoff
from kernel.errors import ServiceUnavailable
from infra.preflight import require_kafka
from kernel.kafka_security import kafka_python_options
from kernel.settings import Settings
from kernel.wire import encode_patient
from models.fairness import patient_record
from sinks.metrics import KafkaHealth

logger = logging.getLogger(__name__)

#: Producer settings shared by the simulators and the producer benchmark, so that
#: ``bench/bench_producer.py`` gives Kafka's own ProducerPerformance the same ones.
LINGER_MS = 20
BATCH_SIZE_BYTES = 512 * 1024
#: Device messages the load generator may have awaiting acknowledgement (about 20 MB).
MAX_IN_FLIGHT_MESSAGES = 16_384
#: How long the producer retries a batch before handing the failure back, ms: a broker restart
#: of tens of seconds is retried inside the producer; :class:`Delivery` sends again after that.
DELIVERY_TIMEOUT_MS = 30_000
#: Device messages :func:`publish` may have unconfirmed before it blocks (bounded memory).
MAX_PENDING_MESSAGES = 16_384
#: Between attempts to resend what the producer gave up on: for ever, at most 10 s apart.
RESEND_BACKOFF = Backoff(first_s=0.5, max_s=10.0, give_up_s=None)


class BrokerUnavailable(ServiceUnavailable):
    """The Kafka broker could not be reached, or stopped acknowledging in time."""


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


def make_producer(settings: Settings, *, compression: str | None = "lz4") -> Any:
    """A kafka-python producer tuned for throughput without giving up durability (acks=all).

    Raises
    ------
    ServiceUnavailable
        If no broker in ``settings.kafka_bootstrap`` accepts a connection: checked first, since
        kafka-python retries (and logs each retry) for half a minute before it gives up.
    BrokerUnavailable
        If one accepts the connection but does not answer as a broker.
    """
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    require_kafka(settings)
    try:
        return KafkaProducer(bootstrap_servers=settings.kafka_bootstrap.split(","), acks="all",
                             linger_ms=LINGER_MS, batch_size=BATCH_SIZE_BYTES, compression_type=compression,
                             max_request_size=4 * 1024 * 1024,
                             delivery_timeout_ms=DELIVERY_TIMEOUT_MS, request_timeout_ms=DELIVERY_TIMEOUT_MS // 3,
                             client_id="vitalrisk-simulator", **kafka_python_options(settings))
    except KafkaError as exc:  # kafka-python 3: KafkaTimeoutError "Unable to bootstrap"
        raise BrokerUnavailable(f"no Kafka broker answers at {settings.kafka_bootstrap} ({exc}); "
                                "start one with: vitalrisk infra start kafka") from None


@dataclass(frozen=True, slots=True)
class _Record:
    topic: str
    key: bytes
    value: bytes
    timestamp_ms: int | None


class Delivery:
    """Every record sent reaches the broker, with memory bounded: block and resend, never drop.

    Wraps a producer (kafka-python's, or anything with ``send(...).add_errback`` and ``flush``).
    Every ``max_pending`` sends it flushes: the producing loop waits there while the broker is
    away (the producer retries meanwhile), so at most ``max_pending`` records are held. Records
    the producer gave up on come back through their errback and are sent again after a
    :data:`RESEND_BACKOFF` delay, then flushed, until none fails; an outage is logged once when it
    starts and once when it ends (:class:`sinks.metrics.KafkaHealth`). Errors a retry cannot fix
    (a record too large, no authorisation) are counted in ``errors`` and not resent.

    Records resent after an outage may follow records sent after them that got through: within
    the producer's delivery timeout (a broker restart) order is kept; past it, the worker's
    per-device sequence check and window lateness rules apply as for any late message.

    Examples
    --------
    >>> class Future:
    ...     def add_errback(self, errback): return self
    >>> class Producer:
    ...     sent = 0
    ...     def send(self, topic, *, key, value, timestamp_ms=None):
    ...         self.sent += 1
    ...         return Future()
    ...     def flush(self, timeout=None): pass
    >>> delivery = Delivery(Producer(), max_pending=2)
    >>> for i in range(5):
    ...     delivery.send("t", b"k", b"v")
    >>> delivery.flush(); delivery.producer.sent, delivery.errors, delivery.resent
    (5, 0, 0)
    """

    def __init__(self, producer: Any, *, max_pending: int = MAX_PENDING_MESSAGES, backoff: Backoff = RESEND_BACKOFF,
                 health: KafkaHealth | None = None, sleep: Callable[[float], None] = time.sleep,
                 client: str = "simulator") -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, got {max_pending}")
        self.producer = producer
        self.max_pending = max_pending
        self.backoff = backoff
        self.health = health or KafkaHealth(client, None)
        self._sleep = sleep
        self._unflushed = 0
        self._failed: deque[tuple[_Record, BaseException]] = deque()  # filled by the producer's thread
        self.errors = 0
        self.resent = 0

    def send(self, topic: str, key: bytes, value: bytes, timestamp_ms: int | None = None) -> None:
        """Hand one record to the producer; first wait for the broker if ``max_pending`` are unconfirmed."""
        if self._unflushed >= self.max_pending:
            self.flush()
        self._send(_Record(topic, key, value, timestamp_ms))

    def flush(self) -> None:
        """Return once every record sent is acknowledged (or failed for good); resend what the producer gave up on."""
        retries = None
        while True:
            self.producer.flush()
            self._unflushed = 0
            if not self._failed:
                self.health.ok()
                return
            failed = list(self._failed)
            self._failed.clear()
            exc = failed[0][1]
            self.health.failed(f"{type(exc).__name__}: {exc}".splitlines()[0][:200])
            if retries is None:
                retries = self.backoff.start(now_s=time.monotonic(), rng=random.Random())
            delay = retries.next_delay(now_s=time.monotonic())
            self._sleep(delay if delay is not None else self.backoff.max_s)
            for record, _ in failed:
                self.resent += 1
                self._send(record)

    def _send(self, record: _Record) -> None:
        from kafka.errors import KafkaError

        def on_error(exc: BaseException) -> None:
            if getattr(exc, "retriable", True):
                self._failed.append((record, exc))  # deque.append is atomic: the producer's thread calls this
            else:
                self.errors += 1
                logger.warning("send to %s failed for good: %s", record.topic, type(exc).__name__)

        try:
            future = self.producer.send(record.topic, key=record.key, value=record.value,
                                        timestamp_ms=record.timestamp_ms)
        except KafkaError as exc:  # no metadata within max_block_ms: the broker is away
            on_error(exc)
            return
        future.add_errback(on_error)
        self._unflushed += 1


def publish(messages: Iterable[Publishable], *, settings: Settings, producer: Any,
            speed: float | None = None, progress: Callable[[PublishReport], None] | None = None,
            progress_every_s: float = 1.0, delivery: Delivery | None = None) -> PublishReport:
    """Send every message; pace by ``sent_ms`` at ``speed`` × real time, or flat out if ``None``.

    Returns after the producer has flushed: every counted message was acknowledged by the broker
    (a broker outage blocks the loop and is ridden out: see :class:`Delivery`); ``errors``
    counts the messages a retry could not fix.
    """
    report = PublishReport()
    started = time.monotonic()
    first_sent_ms: int | None = None
    last_progress = started
    delivery = delivery or Delivery(producer)

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
        delivery.send(topic, message.key.encode(), value, message.sent_ms)
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
    delivery.flush()
    report.errors = delivery.errors
    report.seconds = time.monotonic() - started
    return report


class KafkaSender:
    """Send pre-encoded device messages to one topic and count what the broker acknowledged.

    The load generator's side of Kafka (see :class:`simulators.load.Sender`). Three things
    make it faster and more telling than calling ``producer.send`` directly:

    - **Bounded buffering.** kafka-python 3 buffers without limit, so a broker slower than
      the generator would only show up as growing memory. :meth:`send` blocks while
      ``max_in_flight`` messages await acknowledgement; the time blocked (``wait_s``) is
      the broker's share of a run that falls short of its target.
    - **No callbacks.** Futures are kept in send order and counted once done, by the
      caller's thread only: two callbacks per message would cost more CPU than the
      generator spends making the message.
    - **Partition per key, computed once.** The partition is the default partitioner's
      (and Java's) ``murmur2(key) % partitions``, cached per patient, instead of the
      pure-Python hash on every send.

    Parameters
    ----------
    producer
        A kafka-python ``KafkaProducer`` (see :func:`make_producer`); the caller closes it.
    topic
        Destination topic; it must exist (or the broker must create it on first use).
    max_in_flight
        Messages that may await acknowledgement before :meth:`send` blocks.

    Raises
    ------
    BrokerUnavailable
        If the broker gives no metadata for ``topic``.
    """

    def __init__(self, producer: Any, topic: str, *, max_in_flight: int = MAX_IN_FLIGHT_MESSAGES,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        from kafka.errors import KafkaError
        from kafka.partitioner.default import murmur2

        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, got {max_in_flight}")
        try:
            self._partitions = sorted(producer.partitions_for(topic))
        except KafkaError as exc:
            raise BrokerUnavailable(f"no metadata for topic {topic!r} from the broker ({exc})") from None
        self._producer = producer
        self._topic = topic
        self._max_in_flight = max_in_flight
        self._clock = clock
        self._murmur2 = murmur2
        self._partition_of: dict[bytes, int] = {}
        self._pending: deque[tuple[Any, int]] = deque()  # (future, readings) in send order
        self._acked_messages = 0
        self._acked_readings = 0
        self._errors = 0
        self.wait_s = 0.0

    @property
    def acked_messages(self) -> int:
        """Messages the broker has acknowledged (counted in send order)."""
        self._reap()
        return self._acked_messages

    @property
    def acked_readings(self) -> int:
        """Readings in the acknowledged messages."""
        self._reap()
        return self._acked_readings

    @property
    def errors(self) -> int:
        """Messages that failed for good (after the producer's retries)."""
        self._reap()
        return self._errors

    @property
    def in_flight(self) -> int:
        """Messages not yet counted as acknowledged or failed."""
        self._reap()
        return len(self._pending)

    def send(self, key: bytes, value: bytes, readings: int) -> None:
        """Hand one message to the producer; block first while too many await the broker."""
        pending = self._pending
        if len(pending) >= self._max_in_flight:
            self._reap()
            if len(pending) >= self._max_in_flight:
                self._wait_below(self._max_in_flight)
        partition = self._partition_of.get(key)
        if partition is None:
            h = self._murmur2(key) & 0x7FFFFFFF
            partition = self._partition_of[key] = self._partitions[h % len(self._partitions)]
        pending.append((self._producer.send(self._topic, key=key, value=value, partition=partition), readings))

    def flush(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for every message sent to be acknowledged or failed.

        Raises
        ------
        BrokerUnavailable
            If some are still pending after ``timeout_s``.
        """
        from kafka.errors import KafkaTimeoutError

        try:
            self._producer.flush(timeout=timeout_s)
        except KafkaTimeoutError:
            raise BrokerUnavailable(f"{self.in_flight:,} messages not acknowledged within {timeout_s:g} s") from None
        self._reap()

    def _wait_below(self, limit: int) -> None:
        started = self._clock()
        while len(self._pending) >= limit:
            time.sleep(0.0005)
            self._reap()
        self.wait_s += self._clock() - started

    def _reap(self) -> None:
        """Count the done futures at the head of the queue (a later one done early waits its turn)."""
        pending = self._pending
        while pending and pending[0][0].is_done:
            future, readings = pending.popleft()
            if future.exception is None:
                self._acked_messages += 1
                self._acked_readings += readings
            else:
                self._errors += 1
                if self._errors == 1:  # the rest are usually the same failure: counted, not logged
                    logger.warning("send to %s failed: %s: %s", self._topic,
                                   type(future.exception).__name__, future.exception)


def publish_patients(patients: Iterable[Any], *, settings: Settings, producer: Any) -> int:
    """Send each patient's record to the compacted ``patients_topic``; return how many.

    Keyed by the pseudonymous id, only coarse bands travel (sex, age band, skin-tone group:
    :func:`models.fairness.subgroups`) for the fairness monitor, and the enrolment diagnoses
    the risk model uses — no birth date, no name.
    """

    count = 0
    for patient in patients:
        producer.send(settings.patients_topic, key=patient.patient_id.encode(),
                      value=encode_patient(patient_record(patient)))
        count += 1
    producer.flush()
    return count
