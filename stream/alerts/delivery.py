"""Hands pages to :class:`sinks.webhook.WebhookSender`, one task per page and receiver.

Pages of one alert reach one receiver in the order they were issued (firing before resolved):
each (receiver, alert) pair has a FIFO lock. Pages of different alerts go out concurrently, so a
slow receiver or a long retry never holds another patient's page back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

from kernel.alerts import Page
from kernel.errors import AlertDeliveryFailed
from sinks.alertmanager import alertmanager_body, encode_body
from sinks.metrics import AlertMetrics
from sinks.webhook import Delivery, WebhookSender

logger = logging.getLogger(__name__)


class Dispatcher:
    """Delivers pages in the background; :meth:`submit` never blocks on HTTP.

    Parameters
    ----------
    sender
        An open :class:`~sinks.webhook.WebhookSender`.
    receivers
        Receiver name to URL.
    grafana_url, external_url
        Links the page body carries.
    metrics
        ``vitals_pages_total``, ``vitals_webhook_*``.
    clock
        Wall clock in seconds (for the score-to-acknowledged latency).
    """

    def __init__(self, sender: WebhookSender, *, receivers: Mapping[str, str], grafana_url: str, external_url: str,
                 metrics: AlertMetrics, clock: Callable[[], float] = time.time) -> None:
        self.sender = sender
        self.receivers = dict(receivers)
        self.grafana_url = grafana_url
        self.external_url = external_url
        self.metrics = metrics
        self._clock = clock
        self._locks: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}  # (receiver, alert) -> lock, users
        self._tasks: set[asyncio.Task[None]] = set()
        self._queued: set[tuple[str, str]] = set()

    def submit(self, page: Page, receivers: tuple[str, ...], *, source_ts_ms: int | None) -> None:
        """Start delivering ``page`` to each receiver (skipping pairs already in flight)."""
        for name in receivers:
            key = (page.notification_id, name)
            if key in self._queued:
                continue
            url = self.receivers.get(name)
            if url is None:
                logger.error("page %s routed to unknown receiver %r; not sent", page.notification_id, name)
                continue
            self._queued.add(key)
            self.metrics.pages.labels(name, page.severity).inc()
            body = encode_body(alertmanager_body(page, receiver=name, grafana_url=self.grafana_url,
                                                 external_url=self.external_url))
            delivery = Delivery(page.notification_id, page.alert_id, name, url, body)
            lock, users = self._locks.get((name, page.alert_id), (asyncio.Lock(), 0))
            self._locks[(name, page.alert_id)] = (lock, users + 1)
            task = asyncio.get_running_loop().create_task(self._deliver(delivery, lock, source_ts_ms, page))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _deliver(self, delivery: Delivery, lock: asyncio.Lock, source_ts_ms: int | None, page: Page) -> None:
        try:
            async with lock:
                try:
                    result = await self.sender.deliver(delivery)
                except AlertDeliveryFailed as exc:
                    self.metrics.deliveries.labels(delivery.receiver, "failed").inc()
                    self.metrics.failures.labels(delivery.receiver).inc()
                    logger.error("%s (patient %s, alert %s)", exc, page.patient_id, page.alert_id)
                    return
                self.metrics.deliveries.labels(delivery.receiver, "delivered").inc()
                if result.attempt > 1:
                    self.metrics.retries.labels(delivery.receiver).inc()
                if source_ts_ms is not None and page.action == "firing":
                    self.metrics.delivery_seconds.labels(delivery.receiver).observe(
                        max(0.0, self._clock() - source_ts_ms / 1000))
                logger.info("page %s (%s, patient %s) delivered to %s on attempt %d", delivery.notification_id,
                            page.kind, page.patient_id, delivery.receiver, result.attempt)
        finally:
            self._queued.discard((delivery.notification_id, delivery.receiver))
            key = (delivery.receiver, delivery.alert_id)
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def close(self, *, grace_s: float = 2.0) -> None:
        """Give in-flight deliveries ``grace_s`` to finish, then cancel them (the outbox keeps them)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace_s)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
