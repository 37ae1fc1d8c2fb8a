"""Webhook delivery of pages: each attempt signed afresh, retried with backoff, audited.

Delivery
    2xx is delivered. 408, 425, 429, 5xx, timeouts and connection errors are retried on the
    shared schedule, :class:`kernel.backoff.Backoff` (capped exponential, each delay a uniform
    draw in ``[ceiling/2, ceiling]``), until ``give_up_s`` has passed; other statuses fail at
    once. Each attempt is recorded through a :class:`DeliveryAudit`; a page given up on is
    dead-lettered there and raises :class:`~kernel.errors.AlertDeliveryFailed`.

The body comes encoded (:mod:`sinks.alertmanager`); every attempt carries fresh signature headers
(:mod:`sinks.signing`) and the same ``Idempotency-Key``. Which receivers get a page is alert
policy, decided before a delivery is made (:mod:`stream.alerts.routing`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol

import aiohttp

from kernel.backoff import Backoff
from kernel.errors import AlertDeliveryFailed, InvalidPolicy
from sinks.signing import signed_headers

logger = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 425, 429})


@dataclass(frozen=True, slots=True)
class Delivery:
    """One page for one receiver: the signed-per-attempt body and where it goes."""

    notification_id: str
    alert_id: str
    receiver: str
    url: str
    body: bytes


@dataclass(frozen=True, slots=True)
class Attempt:
    """The record of one HTTP attempt (one row of the ``webhook_deliveries`` audit table)."""

    notification_id: str
    receiver: str
    attempt: int
    outcome: str               # delivered | retry | failed
    status_code: int | None
    error: str | None
    duration_ms: float


class DeliveryAudit(Protocol):
    """Where attempts and dead letters are recorded (the database in the alerter, a list in tests)."""

    async def record_attempt(self, attempt: Attempt) -> None: ...

    async def dead_letter(self, delivery: Delivery, attempts: int, last_status: int | None, detail: str) -> None: ...


def classify(status: int) -> str:
    """``delivered``, ``retry`` or ``failed`` for an HTTP status.

    >>> [classify(s) for s in (200, 204, 429, 503, 400, 401)]
    ['delivered', 'delivered', 'retry', 'retry', 'failed', 'failed']
    """
    if 200 <= status < 300:
        return "delivered"
    if status in RETRY_STATUSES or status >= 500:
        return "retry"
    return "failed"


def receiver_tls(ca_file: Path | None) -> ssl.SSLContext:
    """The TLS context that verifies ``https://`` receivers: against ``ca_file``'s CAs, or the system's.

    Raises
    ------
    InvalidPolicy
        ``ca_file`` cannot be read or holds no certificate.
    """
    try:
        return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise InvalidPolicy(f"VITALS_WEBHOOK_CA_FILE: no CA certificate could be read from {ca_file}: "
                            f"{exc.strerror or exc}") from None


class WebhookSender:
    """Signs and posts deliveries with retries; use as ``async with WebhookSender(...) as s``.

    Parameters
    ----------
    secret
        The HMAC-SHA256 key.
    audit
        Records every attempt and every dead letter.
    backoff
        Retry schedule and budget (:class:`kernel.backoff.Backoff`; its defaults if ``None``).
    timeout_s
        Timeout of one attempt (connect + response).
    rng
        Jitter source (seed it in tests).
    clock
        Unix-seconds clock used for the signature timestamp (inject in tests).
    ca_file
        PEM bundle of the CAs an ``https://`` receiver's certificate must chain to; ``None``: the
        system's. The host name is always checked.
    """

    def __init__(self, secret: bytes, *, audit: DeliveryAudit, backoff: Backoff | None = None,
                 timeout_s: float = 5.0, rng: random.Random | None = None,
                 clock: Callable[[], float] = time.time, ca_file: Path | None = None) -> None:
        if not secret:
            raise InvalidPolicy("a webhook secret is required: pages are always signed")
        self._secret = secret
        self.audit = audit
        self.backoff = backoff or Backoff()
        self.timeout_s = timeout_s
        self._rng = rng or random.Random()  # noqa: S311 - retry jitter, not cryptography
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._tls = receiver_tls(ca_file)

    async def __aenter__(self) -> WebhookSender:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                                              connector=aiohttp.TCPConnector(ssl=self._tls))
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def attempt(self, delivery: Delivery, number: int) -> Attempt:
        """One signed POST; never raises for HTTP or network trouble, returns the outcome."""
        if self._session is None:
            raise RuntimeError("use WebhookSender as an async context manager")
        headers = signed_headers(self._secret, delivery.body, delivery.notification_id, now_s=self._clock())
        started = time.perf_counter()
        status: int | None = None
        error: str | None = None
        try:
            async with self._session.post(delivery.url, data=delivery.body, headers=headers) as response:
                status = response.status
                await response.read()
            outcome = classify(status)
            if outcome != "delivered":
                error = f"HTTP {status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            outcome = "retry"
            error = f"{type(exc).__name__}: {exc}".strip()[:300]
        return Attempt(delivery.notification_id, delivery.receiver, number, outcome, status, error,
                       (time.perf_counter() - started) * 1000)

    async def deliver(self, delivery: Delivery) -> Attempt:
        """Post until delivered, a permanent failure, or the budget runs out; audit every attempt.

        Returns
        -------
        Attempt
            The successful attempt.

        Raises
        ------
        AlertDeliveryFailed
            After dead-lettering the delivery.
        """
        loop = asyncio.get_running_loop()
        retries = self.backoff.start(now_s=loop.time(), rng=self._rng)
        number = 0
        while True:
            number += 1
            result = await self.attempt(delivery, number)
            delay = retries.next_delay(now_s=loop.time()) if result.outcome == "retry" else None
            if result.outcome == "retry" and delay is None:
                result = Attempt(result.notification_id, result.receiver, result.attempt, "failed",
                                 result.status_code, f"gave up after {self.backoff.give_up_s:g} s: {result.error}",
                                 result.duration_ms)
            await self.audit.record_attempt(result)
            if result.outcome == "delivered":
                return result
            if delay is None:
                detail = result.error or "failed"
                await self.audit.dead_letter(delivery, number, result.status_code, detail)
                raise AlertDeliveryFailed(delivery.notification_id, delivery.receiver, number, detail)
            logger.warning("webhook %s to %s: attempt %d failed (%s); retrying in %.1f s",
                           delivery.notification_id, delivery.receiver, number, result.error, delay)
            await asyncio.sleep(delay)
