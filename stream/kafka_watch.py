"""Whether a Faust service reaches its broker: a light probe behind ``vitals_kafka_up``.

Faust and aiokafka ride out a broker restart by themselves (they reconnect, the consumer
resumes from its committed offsets, the producer retries): what they do not do is say so in
one line or in a metric. :class:`KafkaWatch` runs inside the worker's and the alerter's event
loop and asks the broker for its metadata every few seconds with a client of its own; a failed
or slow answer starts an outage (logged once, ``vitals_kafka_up{client}`` 0, one more
``vitals_kafka_outages_total``), the next answer ends it (:class:`sinks.metrics.KafkaHealth`).
"""

from __future__ import annotations

import asyncio
import logging

from kernel.kafka_security import aiokafka_options
from kernel.settings import Settings
from sinks.metrics import KafkaHealth

logger = logging.getLogger(__name__)

#: Between two probes, seconds.
PROBE_EVERY_S = 2.0
#: A probe not answered within this long counts as a failure, seconds.
PROBE_TIMEOUT_S = 5.0


class KafkaWatch:
    """Probe the broker every :data:`PROBE_EVERY_S` until cancelled, reporting to ``health``."""

    def __init__(self, settings: Settings, health: KafkaHealth, *, every_s: float = PROBE_EVERY_S,
                 timeout_s: float = PROBE_TIMEOUT_S) -> None:
        self.settings = settings
        self.health = health
        self.every_s = every_s
        self.timeout_s = timeout_s

    async def run(self) -> None:
        """Probe until cancelled; never raises for the broker's sake."""
        from aiokafka import AIOKafkaClient
        from aiokafka.errors import KafkaError

        client = AIOKafkaClient(bootstrap_servers=self.settings.kafka_bootstrap,
                                client_id=f"vitalrisk-{self.health.client}-probe", request_timeout_ms=5_000,
                                **aiokafka_options(self.settings))
        started = False
        try:
            while True:
                try:
                    if not started:
                        await asyncio.wait_for(client.bootstrap(), self.timeout_s)
                        started = True
                    await asyncio.wait_for(client.fetch_all_metadata(), self.timeout_s)
                except (TimeoutError, KafkaError, OSError) as exc:
                    self.health.failed(type(exc).__name__)
                else:
                    self.health.ok()
                await asyncio.sleep(self.every_s)
        finally:
            await client.close()
