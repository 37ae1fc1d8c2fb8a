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
from kernel.settings import Settings

logger = logging.getLogger(__name__)

#: How long the producer gathers records from concurrent uploads into one batch, ms.
LINGER_MS = 2


class KafkaRecords:
    """Produce device messages to ``settings.readings_topic``; use as ``async with``."""

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.readings_topic
        self.timeout_s = settings.gateway_produce_timeout_s
        self._producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap, client_id="vitalrisk-gateway", acks="all",
            enable_idempotence=True, linger_ms=LINGER_MS, compression_type="lz4",
            request_timeout_ms=int(self.timeout_s * 1000),
            max_request_size=max(1_048_576, settings.limit_message_bytes + 65_536))

    async def __aenter__(self) -> KafkaRecords:
        try:
            await self._producer.start()
        except KafkaError as exc:
            await self._producer.stop()
            raise ProduceFailed(f"the producer could not start: {first_line(exc)}") from None
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._producer.stop()

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
