"""The ingest gateway's work on one upload, without HTTP: authenticate, limit, bind, de-duplicate, produce.

:class:`Gateway` takes what :mod:`gateway.app` read off the wire and either accepts the upload
(every new message acknowledged by the broker) or raises
:class:`~gateway.outcome.UploadRefused` with the HTTP status to answer:

====== ====================== =====================================================================
status reason                 when
====== ====================== =====================================================================
401    ``unauthorized``       no bearer token, or one that is malformed, unknown, revoked or wrong
429    ``rate_limited``       the device spent its token bucket (:mod:`gateway.ratelimit`), with
                              ``Retry-After``
403    ``patient_mismatch``   a message names a patient the token is not bound to
403    ``device_mismatch``    a message names a device the token is not bound to
413    ``too_large``          a message would not fit one Kafka record (``VITALS_LIMIT_MESSAGE_BYTES``)
503    ``broker_unavailable`` the broker did not acknowledge every new record in time: nothing is
                              acknowledged, retry (``Retry-After``)
503    ``auth_unavailable``   the device table could not be read: retry (``Retry-After``)
====== ====================== =====================================================================

Each accepted message becomes one ``vitalrisk.device/1`` record (:func:`kernel.wire.encode_device_message`)
keyed by patient, stamped with the gateway's receive time, both as the record time and in the
header :data:`RECEIVED_HEADER` (decimal epoch ms). The readings topic keeps the broker's append
time as record time (``LogAppendTime``), so the header is what tells the worker when the gateway
had the upload in hand: a trusted upper bound on every reading's time for the future-timestamp
check (a sender's own ``sent_at`` or ``t`` is never trusted), and the start of the
device-to-score latency.

Idempotency (:mod:`gateway.idempotency`): uploads of one device are handled one at a time, and a
message whose key was acknowledged within ``VITALS_GATEWAY_IDEMPOTENCY_S`` is counted as a
duplicate and not produced again. After a 503 the records already handed to the (idempotent)
producer stay on their way and are kept *in flight* by key: the device's retry waits for them
instead of producing them again, so a broker outage leaves each reading on the topic once.
Only a record the producer refused for good is forgotten, and produced again by the retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from prometheus_client import Counter

from gateway.idempotency import MessageKey, RecentKeys, content_digest, content_key, derived_seq, native_key
from gateway.ratelimit import RateLimiter, retry_after_s
from gateway.tokens import bearer_token, matches, token_id
from gateway.outcome import Issue, Status, refuse
from gateway.uploads import ParsedUpload, UploadRefused
from kernel.limits import Limits
from kernel.settings import Settings
from kernel.wire import encode_device_message
from sinks.devices import DeviceCredential
from sinks.errors import SinkUnavailable
from sinks.metrics import GatewayMetrics

logger = logging.getLogger(__name__)

#: Kafka header carrying the gateway's receive time of the upload, decimal epoch milliseconds.
RECEIVED_HEADER = "vitalrisk.received_ms"
#: Bytes a reading may take in an encoded message (a long metric name, a 17-digit float), and
#: the envelope's: what splits a large FHIR or Open mHealth message into records that fit.
READING_BYTES = 128
ENVELOPE_BYTES = 512
#: Most token lookups remembered at once (expired ones are dropped first).
AUTH_CACHE_ENTRIES = 100_000
#: ``Retry-After`` when the device table cannot be read, or the broker did not acknowledge, seconds.
AUTH_RETRY_S = 5
BROKER_RETRY_S = 5


class RetryLater(UploadRefused):
    """A refusal the client should retry after ``retry_after_s`` seconds (429, 503)."""

    def __init__(self, status: Status, reason: str, detail: str, *, retry_after_s: int) -> None:
        super().__init__(status, [Issue(reason, detail)])
        self.retry_after_s = retry_after_s


class Unauthorized(UploadRefused):
    """401: ``cause`` (missing, malformed, unknown, revoked, mismatch) is for metrics, never the client."""

    def __init__(self, cause: str) -> None:
        detail = ("send the device token as Authorization: Bearer <token>" if cause == "missing"
                  else "the bearer token is not valid (unknown, revoked or mistyped)")
        super().__init__(401, [Issue("unauthorized", detail)])
        self.cause = cause


class Directory(Protocol):
    """Where credentials are looked up (:class:`sinks.devices.DeviceDirectory`)."""

    async def lookup(self, token_id: str) -> DeviceCredential | None: ...
    async def touch(self, seen: Mapping[str, datetime]) -> None: ...


@dataclass(frozen=True, slots=True)
class Record:
    """One Kafka record to produce: patient key, encoded device message, readings in it."""

    key: bytes
    value: bytes
    readings: int


class ProduceFailed(Exception):
    """The producer would not take every record of an upload in time (raised by a :class:`RecordSink`).

    ``taken`` holds the acknowledgement futures of the records it did take before that, in
    order: a prefix of the records handed in, on their way like any other.
    """

    def __init__(self, message: str, taken: Sequence[asyncio.Future[object]] = ()) -> None:
        super().__init__(message)
        self.taken = list(taken)


class RecordSink(Protocol):
    """Where accepted records go (:class:`gateway.producer.KafkaRecords`)."""

    @property
    def timeout_s(self) -> float:
        """How long an upload waits for its records' acknowledgements."""
        ...

    async def submit(self, records: Sequence[Record], *, received_ms: int,
                     timeout_s: float) -> list[asyncio.Future[object]]:
        """Hand ``records`` to the producer within ``timeout_s``; one future each, resolved once the broker acknowledged it.

        A future fails if the broker refused its record for good. A future still pending when
        the upload stops waiting keeps its record on its way (an idempotent producer retries
        until the broker takes it), so the gateway keeps the future and a retry waits on it
        instead of producing the record twice. Raises :class:`ProduceFailed` if the producer
        cannot take every record in time (its buffer stays full) or refuses one: the records
        before it were handed over (``ProduceFailed.taken``), the rest not.
        """
        ...


@dataclass(frozen=True, slots=True)
class Accepted:
    """What an accepted upload came to."""

    format: str
    messages: int
    readings: int
    duplicates: int
    received_ms: int

    def body(self) -> dict[str, object]:
        """The 202 answer's JSON.

        >>> Accepted("native", 2, 30, 1, 1_767_571_200_000).body()["readings"]
        30
        """
        return {"status": "accepted", "format": self.format, "messages": self.messages,
                "readings": self.readings, "duplicates": self.duplicates, "received_ms": self.received_ms}


@dataclass(frozen=True, slots=True)
class _Planned:
    key: MessageKey
    record: Record


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class _Acknowledgements:
    """An upload's records counted down to their fates: one callback a record, where ``asyncio.wait`` adds and removes its own."""

    def __init__(self) -> None:
        self.expected = 0
        self.pending = 0
        self.failure: str | None = None
        self.all_settled: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def watch(self, future: asyncio.Future[object]) -> None:
        """Count ``future`` (a record an earlier attempt handed over) in."""
        self.expected += 1
        self.pending += 1
        future.add_done_callback(self.settled)

    def settled(self, future: asyncio.Future[object]) -> None:
        """One record's fate is known; the first failure is kept."""
        if self.failure is None and (future.cancelled() or future.exception() is not None):
            self.failure = "the producer cancelled a record" if future.cancelled() else str(future.exception())
        self.pending -= 1
        if not self.pending and not self.all_settled.done():
            self.all_settled.set_result(None)


class Gateway:
    """The upload path, with its collaborators handed in (the tests give it fakes).

    Parameters
    ----------
    directory
        Credential lookups.
    sink
        Record producer.
    metrics
        Where counts go.
    limits
        What one Kafka record may hold (the worker's limits).
    rate_limiter
        Per-device buckets.
    recent
        Acknowledged message keys.
    auth_cache_s
        How long a lookup (found or not) is reused; 0 looks up every upload.
    monotonic
        Monotonic seconds, for the rate limit, the caches and the idempotency window.
    wall_ms
        Epoch milliseconds, for the receive time.
    """

    def __init__(self, *, directory: Directory, sink: RecordSink, metrics: GatewayMetrics, limits: Limits,
                 rate_limiter: RateLimiter, recent: RecentKeys, auth_cache_s: float,
                 monotonic: Callable[[], float] = time.monotonic, wall_ms: Callable[[], int] = _wall_ms) -> None:
        self.directory = directory
        self.sink = sink
        self.metrics = metrics
        self.limits = limits
        self.rate_limiter = rate_limiter
        self.recent = recent
        self.auth_cache_s = auth_cache_s
        self.monotonic = monotonic
        self.wall_ms = wall_ms
        self._auth_cache: dict[str, tuple[DeviceCredential | None, float]] = {}
        self._seen: dict[str, datetime] = {}
        self._device_locks: dict[str, tuple[asyncio.Lock, int]] = {}
        # Records on their way to the broker, by key; bounded by what the producer buffers.
        self._in_flight: dict[MessageKey, asyncio.Future[object]] = {}
        self._produced_counters: dict[str, tuple[Counter, Counter]] = {}

    @classmethod
    def from_settings(cls, settings: Settings, *, directory: Directory, sink: RecordSink,
                      metrics: GatewayMetrics) -> Gateway:
        """A gateway with the limits, rate, window and cache that ``settings`` name."""
        return cls(directory=directory, sink=sink, metrics=metrics, limits=Limits.from_settings(settings),
                   rate_limiter=RateLimiter(rate=settings.gateway_rate_per_device, burst=settings.gateway_burst),
                   recent=RecentKeys(window_s=settings.gateway_idempotency_s,
                                     max_keys=settings.gateway_idempotency_keys),
                   auth_cache_s=settings.gateway_auth_cache_s)

    # -- authentication and admission ------------------------------------------------------

    async def authenticate(self, authorization: str | None) -> DeviceCredential:
        """The credential an ``Authorization`` header proves; :class:`Unauthorized` or 503 otherwise.

        The token itself is hashed and dropped here: it is never logged, cached or counted.
        """
        token = bearer_token(authorization)
        if token is None:
            raise self._unauthorized("missing")
        ident = token_id(token)
        if ident is None:
            raise self._unauthorized("malformed")
        credential = await self._lookup(ident)
        if credential is None:
            raise self._unauthorized("unknown")
        if not matches(token, credential.token_sha256):
            raise self._unauthorized("mismatch")
        if credential.revoked:
            raise self._unauthorized("revoked")
        self._seen[credential.token_id] = datetime.now(UTC)
        return credential

    def _unauthorized(self, cause: str) -> Unauthorized:
        self.metrics.auth_failures.labels(cause).inc()
        return Unauthorized(cause)

    async def _lookup(self, ident: str) -> DeviceCredential | None:
        now = self.monotonic()
        cached = self._auth_cache.get(ident)
        if cached is not None and cached[1] > now:
            return cached[0]
        try:
            credential = await self.directory.lookup(ident)
        except SinkUnavailable as exc:
            logger.warning("device lookup failed: %s", exc)
            raise RetryLater(503, "auth_unavailable", "device credentials cannot be checked now; retry",
                             retry_after_s=AUTH_RETRY_S) from None
        if self.auth_cache_s > 0:
            if len(self._auth_cache) >= AUTH_CACHE_ENTRIES:
                self._auth_cache = {k: v for k, v in self._auth_cache.items() if v[1] > now}
                while len(self._auth_cache) >= AUTH_CACHE_ENTRIES:
                    del self._auth_cache[next(iter(self._auth_cache))]
            self._auth_cache[ident] = (credential, now + self.auth_cache_s)
        return credential

    def admit(self, credential: DeviceCredential) -> None:
        """Spend one of the device's rate tokens; :class:`RetryLater` (429) when it has none."""
        wait_s = self.rate_limiter.acquire(credential.device_id, self.monotonic())
        if wait_s > 0:
            raise RetryLater(429, "rate_limited",
                             f"at most {self.rate_limiter.rate:g} uploads/s per device "
                             f"(bursts of {self.rate_limiter.burst:g})", retry_after_s=retry_after_s(wait_s))

    # -- accepting ---------------------------------------------------------------------------

    async def accept(self, credential: DeviceCredential, upload: ParsedUpload, *, received_ms: int) -> Accepted:
        """Produce the upload's new messages and return once the broker acknowledged them all.

        A message acknowledged before (within the window) is a duplicate and is not produced
        again; one still on its way from an earlier attempt is waited for, not produced again.

        Raises
        ------
        UploadRefused
            403 a message for another patient or device; 413 a message too large for one record;
            503 the broker did not acknowledge every message in time (the device retries; what
            was on its way is then found in flight or acknowledged, never produced twice).
        """
        planned = list(self._plan(credential, upload, received_ms))
        readings = sum(p.record.readings for p in planned)
        duplicates = 0
        async with self._device(credential.device_id):
            # One deadline for the upload: the records handed over, then all acknowledged, within the produce timeout.
            now = self.monotonic()
            deadline = now + self.sink.timeout_s
            acks = _Acknowledgements()
            new: list[_Planned] = []
            keys: set[MessageKey] = set()
            started = time.perf_counter()
            for item in planned:
                if item.key in keys or self.recent.seen(item.key, now):
                    duplicates += 1
                    keys.add(item.key)
                    continue
                keys.add(item.key)
                future = self._in_flight.get(item.key)
                if future is None:
                    new.append(item)
                else:
                    acks.watch(future)
            if new:
                try:
                    futures = await self.sink.submit([item.record for item in new], received_ms=received_ms,
                                                     timeout_s=max(0.0, deadline - self.monotonic()))
                except ProduceFailed as exc:
                    self._keep_in_flight(new, exc.taken, upload.format, None)
                    raise self._unavailable(credential, str(exc)) from None
                self._keep_in_flight(new, futures, upload.format, acks)
            if acks.expected:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, deadline - self.monotonic())):
                        await acks.all_settled
                if acks.pending or acks.failure is not None:
                    cause = (f"{acks.pending} of {acks.expected} records not acknowledged in {self.sink.timeout_s:g} s"
                             if acks.pending else acks.failure or "a record failed")
                    raise self._unavailable(credential, cause)
                self.metrics.produce_seconds.observe(time.perf_counter() - started)
        if duplicates:
            self.metrics.messages.labels(upload.format, "duplicate").inc(duplicates)
        return Accepted(upload.format, len(planned), readings, duplicates, received_ms)

    def _keep_in_flight(self, items: Sequence[_Planned], futures: Sequence[asyncio.Future[object]],
                        upload_format: str, acks: _Acknowledgements | None) -> None:
        """Keep the futures of the records handed over (the first ``len(futures)`` of ``items``) in flight.

        One callback per record settles it (:meth:`_settle`) and counts it for ``acks``, the
        upload waiting on it.
        """
        produced = self._produced(upload_format)
        for item, future in zip(items, futures):
            self._in_flight[item.key] = future
            if acks is not None:
                acks.expected += 1
                acks.pending += 1
            future.add_done_callback(functools.partial(self._settle, item, produced, acks))

    def _produced(self, upload_format: str) -> tuple[Counter, Counter]:
        """The produced-messages and readings counters of a format, labelled once per process."""
        counters = self._produced_counters.get(upload_format)
        if counters is None:
            counters = (self.metrics.messages.labels(upload_format, "produced"),
                        self.metrics.readings.labels(upload_format))
            self._produced_counters[upload_format] = counters
        return counters

    def _unavailable(self, credential: DeviceCredential, cause: str) -> RetryLater:
        logger.warning("upload of device %s not acknowledged by the broker: %s", credential.device_id, cause)
        return RetryLater(503, "broker_unavailable",
                          "the broker did not acknowledge the upload; retry (what is acknowledged is kept once)",
                          retry_after_s=BROKER_RETRY_S)

    def _settle(self, item: _Planned, produced: tuple[Counter, Counter], acks: _Acknowledgements | None,
                future: asyncio.Future[object]) -> None:
        """A record's fate is known: acknowledged (remember its key) or refused (forget it)."""
        if self._in_flight.get(item.key) is future:
            del self._in_flight[item.key]
        if acks is not None:
            acks.settled(future)
        if future.cancelled() or future.exception() is not None:
            return
        self.recent.add(item.key, self.monotonic())
        self.metrics.idempotency_keys.set(len(self.recent))
        produced[0].inc()
        produced[1].inc(item.record.readings)

    @property
    def in_flight(self) -> int:
        """Records handed to the producer and not yet acknowledged or refused."""
        return len(self._in_flight)

    def _plan(self, credential: DeviceCredential, upload: ParsedUpload, received_ms: int) -> Iterator[_Planned]:
        """The upload's records and their idempotency keys, after the binding checks (403).

        A native message keeps its own ``seq`` and is one record. Messages without one (FHIR, Open
        mHealth) that resolve to the same patient and device — a Bundle's Observations with and
        without a ``device`` reference — are merged and their readings sorted by time before they
        are cut into records: one device's readings reach the worker in time order, so none is
        dropped as late behind a later reading of the same upload.
        """
        per_record = max(1, min(self.limits.max_readings,
                                (self.limits.max_message_bytes - ENVELOPE_BYTES) // READING_BYTES))
        unnumbered: dict[tuple[str, str], list[tuple[str, int, float]]] = {}
        for number, message in enumerate(upload.messages):
            patient = message.patient_id or credential.patient_id
            device = credential.device_id if message.device_id is None else message.device_id
            if patient != credential.patient_id:
                raise refuse(403, "patient_mismatch",
                                    f"message {number}: this device's token may upload for its own patient only")
            if device != credential.device_id:
                raise refuse(403, "device_mismatch",
                                    f"message {number}: this token may upload for its own device only")
            if not message.readings:
                continue
            if message.seq is None:
                unnumbered.setdefault((patient, device), []).extend(message.readings)
                continue
            value = encode_device_message(device_id=device, patient_id=patient, seq=message.seq,
                                          sent_at=received_ms, readings=message.readings)
            if len(value) > self.limits.max_message_bytes:
                raise refuse(413, "too_large",
                                    f"message {number} encodes to {len(value)} bytes, more than one record "
                                    f"may hold ({self.limits.max_message_bytes}); send fewer readings per message")
            yield _Planned(native_key(device, message.seq), Record(patient.encode(), value, len(message.readings)))
        for (patient, device), readings in unnumbered.items():
            readings.sort(key=lambda reading: reading[1])  # stable: same-time readings keep their order
            for start in range(0, len(readings), per_record):
                chunk = readings[start:start + per_record]
                digest = content_digest(patient, device, chunk)
                value = encode_device_message(device_id=device, patient_id=patient, seq=derived_seq(chunk, digest),
                                              sent_at=received_ms, readings=chunk)
                yield _Planned(content_key(device, digest), Record(patient.encode(), value, len(chunk)))

    def _device(self, device_id: str) -> _DeviceLock:
        return _DeviceLock(self._device_locks, device_id)

    # -- last seen ---------------------------------------------------------------------------

    async def flush_seen(self) -> None:
        """Write the devices' last-seen times to the table; kept for the next flush if that fails."""
        if not self._seen:
            return
        seen, self._seen = self._seen, {}
        try:
            await self.directory.touch(seen)
        except SinkUnavailable as exc:
            logger.warning("%s; retrying at the next flush", exc)
            for ident, at in seen.items():
                self._seen.setdefault(ident, at)


class _DeviceLock:
    """``async with``: one upload of a device at a time; the lock is dropped when nobody holds or awaits it."""

    def __init__(self, locks: dict[str, tuple[asyncio.Lock, int]], device_id: str) -> None:
        self._locks = locks
        self._device_id = device_id

    async def __aenter__(self) -> None:
        lock, users = self._locks.get(self._device_id, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[self._device_id] = (lock, users + 1)
        try:
            await lock.acquire()
        except BaseException:  # cancelled while waiting: give the place back, hold nothing
            self._leave()
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        self._locks[self._device_id][0].release()
        self._leave()

    def _leave(self) -> None:
        lock, users = self._locks[self._device_id]
        if users <= 1:
            del self._locks[self._device_id]
        else:
            self._locks[self._device_id] = (lock, users - 1)
