"""The gateway's Kafka producer: aiokafka with ``acks="all"`` and idempotence.

:meth:`KafkaRecords.submit` hands one record to the producer and returns the future of its
acknowledgement (all in-sync replicas have it); :class:`gateway.service.Gateway` waits on an
upload's futures for ``VITALS_GATEWAY_PRODUCE_TIMEOUT_S`` and answers 202 only when all resolved.

With idempotence on, aiokafka retries a batch until the broker takes it (it never expires one:
a retry cannot duplicate it), so a record handed over while the broker is down reaches the topic
once the broker is back, even after its upload was answered 503. The gateway therefore keeps
such records in flight and lets the device's retry wait on them (see :mod:`gateway.service`).
The producer buffers one batch per partition; when that is full, :meth:`~KafkaRecords.submit`
waits at most the produce timeout and then raises :class:`~gateway.service.ProduceFailed`, with
nothing handed over: what is in flight stays bounded by the producer's buffer.
"""

from __future__ import annotations

import asyncio
import logging
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from gateway.service import RECEIVED_HEADER, ProduceFailed, Record
from kernel.errors import first_line
from kernel.kafka_security import aiokafka_options
from kernel.settings import Settings

logger = logging.getLogger(__name__)

#: How long the producer gathers records from concurrent uploads into one batch, ms.
LINGER_MS = 2
#: Between two tries of a batch while the broker is away, ms (aiokafka's 100 ms logs ten errors a second).
RETRY_BACKOFF_MS = 500
#: How long a stopping gateway waits for the broker to take what the producer still buffers, seconds.
STOP_TIMEOUT_S = 10.0


class KafkaRecords:
    """Produce device messages to ``settings.readings_topic``; use as ``async with``."""

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.readings_topic
        self.timeout_s = settings.gateway_produce_timeout_s
        self._producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap, client_id="vitalrisk-gateway", acks="all",
            enable_idempotence=True, linger_ms=LINGER_MS, compression_type="lz4", retry_backoff_ms=RETRY_BACKOFF_MS,
            request_timeout_ms=int(self.timeout_s * 1000),
            max_request_size=max(1_048_576, settings.limit_message_bytes + 65_536), **aiokafka_options(settings))

    async def __aenter__(self) -> KafkaRecords:
        try:
            await self._producer.start()
        except KafkaError as exc:
            await self._producer.stop()
            raise ProduceFailed(f"the producer could not start: {first_line(exc)}") from None
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        # stop() waits until every buffered record is delivered, which an idempotent producer
        # keeps retrying while the broker is down: bound it, those records were never acknowledged.
        try:
            await asyncio.wait_for(self._producer.stop(), timeout=STOP_TIMEOUT_S)
        except TimeoutError:
            logger.warning("the broker did not take the last buffered records within %g s; they were "
                           "answered 503, so their devices send them again", STOP_TIMEOUT_S)

    async def submit(self, record: Record, *, received_ms: int) -> asyncio.Future[object]:
        """Hand ``record``, stamped with ``received_ms``, to the producer; see the module docstring.

        Raises
        ------
        ProduceFailed
            The producer did not take the record within the produce timeout, or refused it.
        """
        headers = [(RECEIVED_HEADER, str(received_ms).encode())]
        try:
            async with asyncio.timeout(self.timeout_s):
                future: asyncio.Future[object] = await self._producer.send(
                    self.topic, value=record.value, key=record.key, headers=headers, timestamp_ms=received_ms)
        except TimeoutError:
            raise ProduceFailed(f"the producer's buffer stayed full for {self.timeout_s:g} s") from None
        except KafkaError as exc:
            raise ProduceFailed(first_line(exc)) from None
        return future
