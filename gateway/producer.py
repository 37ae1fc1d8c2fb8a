"""The gateway's Kafka producer: aiokafka with ``acks="all"`` and idempotence.

:meth:`KafkaRecords.submit` hands an upload's records to the producer and returns the future of
each one's acknowledgement (all in-sync replicas have it); :class:`gateway.service.Gateway`
gives the handing over and the acknowledgements one deadline, ``VITALS_GATEWAY_PRODUCE_TIMEOUT_S``
from the start, and answers 202 only when all resolved.

With idempotence on, aiokafka retries a batch until the broker takes it (it never expires one:
a retry cannot duplicate it), so a record handed over while the broker is down reaches the topic
once the broker is back, even after its upload was answered 503. The gateway therefore keeps
such records in flight and lets the device's retry wait on them (see :mod:`gateway.service`).
The producer buffers one batch per partition (:data:`MAX_BATCH_BYTES`); when that is full,
:meth:`~KafkaRecords.submit` waits, at most until the upload's deadline, and then raises
:class:`~gateway.service.ProduceFailed` naming the records it did hand over: what is in flight
stays bounded by the producer's buffer.

An upload's records go to the partition aiokafka's default partitioner gives their key (the
patient), as every other producer of the topic does, computed once per key and upload rather
than once per record (murmur2 in Python costs a few microseconds a record).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from gateway.service import RECEIVED_HEADER, ProduceFailed, Record
from kernel.errors import first_line
from kernel.kafka_security import aiokafka_options
from kernel.settings import Settings

logger = logging.getLogger(__name__)

#: How long the producer gathers records from concurrent uploads into one batch, ms.
LINGER_MS = 2
#: Bytes of one batch per partition (aiokafka's default is 16 KiB: a 100-message upload filled
#: eight, each waiting for the one before to drain, and the gateway idled at 0.75 cores).
MAX_BATCH_BYTES = 512 * 1024
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
            request_timeout_ms=int(self.timeout_s * 1000), max_batch_size=MAX_BATCH_BYTES,
            max_request_size=max(1_048_576, settings.limit_message_bytes + 65_536), **aiokafka_options(settings))
        self._partitioner = DefaultPartitioner()

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

    async def submit(self, records: Sequence[Record], *, received_ms: int,
                     timeout_s: float) -> list[asyncio.Future[object]]:
        """Hand ``records``, stamped with ``received_ms``, to the producer within ``timeout_s``; see the module docstring.

        Raises
        ------
        ProduceFailed
            The producer did not take every record in time, or refused one; ``taken`` are the
            futures of those it took.
        """
        headers = [(RECEIVED_HEADER, str(received_ms).encode())]
        futures: list[asyncio.Future[object]] = []
        try:
            async with asyncio.timeout(timeout_s):
                partitions = sorted(await self._producer.partitions_for(self.topic))
                chosen: dict[bytes, int] = {}
                for record in records:
                    partition = chosen.get(record.key)
                    if partition is None:
                        partition = chosen[record.key] = self._partitioner(record.key, partitions, partitions)
                    futures.append(await self._producer.send(self.topic, value=record.value, key=record.key,
                                                             partition=partition, headers=headers,
                                                             timestamp_ms=received_ms))
        except TimeoutError:
            raise ProduceFailed(f"the producer's buffer stayed full for {timeout_s:g} s", futures) from None
        except KafkaError as exc:
            raise ProduceFailed(first_line(exc), futures) from None
        return futures
