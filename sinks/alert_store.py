"""PostgreSQL I/O of the alerting service (tables of ``sinks/sql/0010_alerts.sql``).

One batch — patients' state snapshots, the episodes they touched, their history and the pages
they issued — commits in one transaction (:meth:`AlertStore.persist`); only then does the
alerter ack the Kafka records behind it and hand the *new* pages to delivery. Pages stay in the
``alert_notifications`` outbox, so a page whose delivery a crash interrupted is found again by
:meth:`AlertStore.pending_deliveries` at the next start. Every write is keyed (patient,
episode id, (episode, event), notification id): a replayed batch adds nothing twice.

The store also serves acknowledgements and silences (the alerter's HTTP API and the CLI write
them; the alerter polls them) and the webhook audit (:class:`sinks.webhook.DeliveryAudit`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

import psycopg
from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool

from kernel.alerts import AlertEvent, AlertState, Evidence, Page, PatientAlerts, Phase, Silence
from kernel.backoff import Backoff
from kernel.errors import (AlertNotFiring, AlertStoreUnavailable, InvalidRequest, SilenceEnded, UnknownAlert,
                           UnknownSilence)
from sinks.rows import utc
from sinks.timescale import FIRST_BACKOFF_S, MAX_BACKOFF_S
from sinks.webhook import Attempt, Delivery

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Longest a staff name may be (the tables' CHECK says the same).
MAX_NAME = 100
MAX_REASON = 500


def ts(ms: int | None) -> datetime | None:
    """Epoch ms as an aware UTC datetime (``None`` stays ``None``).

    >>> ts(1_767_571_200_000).isoformat()
    '2026-01-05T00:00:00+00:00'
    """
    return None if ms is None else utc(ms)


def ms(when: datetime | None) -> int | None:
    """An aware datetime as epoch ms."""
    return None if when is None else int(round(when.timestamp() * 1000))


@dataclass(frozen=True, slots=True)
class AlertRow:
    """One episode as the ``alerts`` table holds it."""

    patient_id: str
    state: AlertState
    severity: str
    evidence: Evidence | None

    def values(self) -> tuple[object, ...]:
        s = self.state
        ev = self.evidence
        return (s.alert_id, self.patient_id, s.kind, s.episode, self.severity, s.phase.value, ts(s.since_ms),
                ts(s.fired_ms), ts(s.resolved_ms), s.acknowledged_by, ts(s.acknowledged_ms), ts(s.escalated_ms),
                ts(s.notified_ms), ts(s.last_notified_ms), s.peak, ev.model_name if ev else None,
                ev.model_version if ev else None, s.group_id)


@dataclass(slots=True)
class Batch:
    """What one flush writes: state snapshots, episodes, history, pages (with their receivers)."""

    states: dict[str, tuple[int, PatientAlerts]] = field(default_factory=dict)
    alerts: dict[str, AlertRow] = field(default_factory=dict)
    events: list[AlertEvent] = field(default_factory=list)
    pages: list[tuple[Page, tuple[str, ...], int | None]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.states or self.alerts or self.events or self.pages)


@dataclass(frozen=True, slots=True)
class PendingDelivery:
    """A page not yet delivered to (nor dead-lettered for) one of its receivers."""

    page: Page
    receiver: str
    source_ts_ms: int | None


_UPSERT_STATE = """
INSERT INTO alert_state (patient_id, kafka_partition, state, updated_at) VALUES (%s, %s, %s, now())
ON CONFLICT (patient_id) DO UPDATE
SET kafka_partition = EXCLUDED.kafka_partition, state = EXCLUDED.state, updated_at = now()
"""

_UPSERT_ALERT = """
INSERT INTO alerts (alert_id, patient_id, kind, episode, severity, state, started_at, fired_at, resolved_at,
                    acknowledged_by, acknowledged_at, escalated_at, notified_at, last_notified_at, peak,
                    model_name, model_version, group_id, updated_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now())
ON CONFLICT (alert_id) DO UPDATE
SET state = EXCLUDED.state, fired_at = EXCLUDED.fired_at, resolved_at = EXCLUDED.resolved_at,
    acknowledged_by = coalesce(alerts.acknowledged_by, EXCLUDED.acknowledged_by),
    acknowledged_at = coalesce(alerts.acknowledged_at, EXCLUDED.acknowledged_at),
    escalated_at = EXCLUDED.escalated_at, notified_at = EXCLUDED.notified_at,
    last_notified_at = EXCLUDED.last_notified_at, peak = EXCLUDED.peak, model_name = EXCLUDED.model_name,
    model_version = EXCLUDED.model_version, updated_at = now()
"""

_INSERT_EVENT = """
INSERT INTO alert_events (alert_id, event, patient_id, kind, from_state, to_state, event_time, at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING
"""

_INSERT_PAGE = """
INSERT INTO alert_notifications (notification_id, alert_id, action, patient_id, kind, severity, receivers, page,
                                 source_ts)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING notification_id
"""

_PENDING = """
SELECT n.page, r.receiver, n.source_ts
FROM alert_notifications n CROSS JOIN LATERAL unnest(n.receivers) AS r(receiver)
WHERE n.created_at > now() - make_interval(secs => %s)
  AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.notification_id = n.notification_id
                  AND d.receiver = r.receiver AND d.outcome = 'delivered')
  AND NOT EXISTS (SELECT 1 FROM webhook_deadletters x WHERE x.notification_id = n.notification_id
                  AND x.receiver = r.receiver)
ORDER BY n.created_at, n.notification_id
"""


class AlertStore:
    """Async access to the alert tables through a small connection pool.

    Use as ``async with AlertStore(url) as store``. Writes retry a lost database on the
    writer's schedule (:data:`sinks.timescale.FIRST_BACKOFF_S` doubling to
    :data:`~sinks.timescale.MAX_BACKOFF_S`, :class:`kernel.backoff.Backoff`) for ``retry_for_s``
    (``None``: for ever), the backpressure that keeps Kafka offsets behind the database; then
    raise :class:`AlertStoreUnavailable`. ``rng`` is the jitter source (seed it in tests).
    """

    def __init__(self, url: str, *, max_size: int = 8, connect_timeout_s: float = 5.0,
                 retry_for_s: float | None = None, rng: random.Random | None = None) -> None:
        self.url = url
        self.retry_for_s = retry_for_s
        self.backoff = Backoff(FIRST_BACKOFF_S, MAX_BACKOFF_S, give_up_s=retry_for_s)
        self._rng = rng or random.Random()  # noqa: S311 - retry jitter, not cryptography
        self.connect_timeout_s = connect_timeout_s
        self._pool = AsyncConnectionPool(url, min_size=1, max_size=max_size, open=False, timeout=connect_timeout_s,
                                         kwargs={"connect_timeout": max(1, int(connect_timeout_s)),
                                                 "application_name": "vitalrisk-alerter"})

    async def __aenter__(self) -> AlertStore:
        await self.open()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def open(self) -> None:
        try:
            await self._pool.open(wait=True, timeout=self.connect_timeout_s)
        except psycopg.OperationalError as exc:
            raise AlertStoreUnavailable(f"alert database unreachable: {exc}".strip()) from exc
        except Exception as exc:  # psycopg_pool.PoolTimeout
            raise AlertStoreUnavailable(f"alert database unreachable: {exc}".strip()) from exc

    async def close(self) -> None:
        await self._pool.close()

    async def _retrying(self, what: str, work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]) -> T:
        """Run ``work`` on a pooled connection, retrying a lost database on :attr:`backoff`."""
        loop = asyncio.get_running_loop()
        retries = self.backoff.start(now_s=loop.time(), rng=self._rng)
        while True:
            try:
                async with self._pool.connection() as conn:
                    return await work(conn)
            except psycopg.OperationalError as exc:
                delay = retries.next_delay(now_s=loop.time())
                if delay is None:
                    raise AlertStoreUnavailable(f"{what}: database unreachable: {exc}".strip()) from exc
                logger.warning("%s failed (%s); retrying in %.1f s", what, type(exc).__name__, delay)
                await asyncio.sleep(delay)

    # -- the engine's state ----------------------------------------------------------------------

    async def load_states(self, partitions: Iterable[int]) -> list[tuple[int, PatientAlerts]]:
        """Snapshots of the patients last seen on ``partitions``."""
        wanted = sorted(set(partitions))

        async def work(conn: psycopg.AsyncConnection[Any]) -> list[tuple[int, PatientAlerts]]:
            cur = await conn.execute("SELECT kafka_partition, state FROM alert_state WHERE kafka_partition = ANY(%s)",
                                     (wanted,))
            return [(int(p), PatientAlerts.from_json(s)) for p, s in await cur.fetchall()]

        return await self._retrying("loading alert state", work)

    async def persist(self, batch: Batch) -> set[str]:
        """Commit a batch in one transaction; return the notification ids that are new."""
        states = [(pid, part, json.dumps(st.to_json())) for pid, (part, st) in batch.states.items()]
        alerts = [row.values() for row in batch.alerts.values()]
        events = [(e.alert_id, e.event, e.patient_id, e.kind, e.from_phase, e.to_phase, ts(e.event_ms), ts(e.at_ms))
                  for e in batch.events]
        pages = [(p.notification_id, p.alert_id, p.action, p.patient_id, p.kind, p.severity, list(receivers),
                  json.dumps(p.to_json()), ts(source)) for p, receivers, source in batch.pages]

        async def work(conn: psycopg.AsyncConnection[Any]) -> set[str]:
            new: set[str] = set()
            async with conn.transaction():
                async with conn.cursor() as cur:
                    if states:
                        await cur.executemany(_UPSERT_STATE, states)
                    if alerts:
                        await cur.executemany(_UPSERT_ALERT, alerts)
                    if events:
                        await cur.executemany(_INSERT_EVENT, events)
                    if pages:
                        await cur.executemany(_INSERT_PAGE, pages, returning=True)
                        while True:
                            row = await cur.fetchone()
                            if row is not None:
                                new.add(str(row[0]))
                            if not cur.nextset():
                                break
            return new

        return await self._retrying("persisting alerts", work)

    # -- delivery --------------------------------------------------------------------------------

    async def pending_deliveries(self, *, within_s: float) -> list[PendingDelivery]:
        """Pages of the last ``within_s`` seconds not delivered to, nor dead-lettered for, a receiver."""
        async def work(conn: psycopg.AsyncConnection[Any]) -> list[PendingDelivery]:
            cur = await conn.execute(_PENDING, (within_s,))
            return [PendingDelivery(Page.from_json(page), str(receiver), ms(source))
                    for page, receiver, source in await cur.fetchall()]

        return await self._retrying("reading the page outbox", work)

    async def record_attempt(self, attempt: Attempt) -> None:
        """Audit one webhook attempt (``webhook_deliveries``)."""
        async def work(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(
                "INSERT INTO webhook_deliveries (notification_id, receiver, attempt, outcome, status_code, error, "
                "duration_ms) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (attempt.notification_id, attempt.receiver, attempt.attempt, attempt.outcome, attempt.status_code,
                 attempt.error, attempt.duration_ms))
            await conn.commit()

        await self._retrying("auditing a webhook attempt", work)

    async def record_attempts(self, attempts: Sequence[Attempt]) -> None:
        """Audit many webhook attempts in one round trip."""
        rows = [(a.notification_id, a.receiver, a.attempt, a.outcome, a.status_code, a.error, a.duration_ms)
                for a in attempts]

        async def work(conn: psycopg.AsyncConnection[Any]) -> None:
            async with conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO webhook_deliveries (notification_id, receiver, attempt, outcome, status_code, error, "
                    "duration_ms) VALUES (%s, %s, %s, %s, %s, %s, %s)", rows)
            await conn.commit()

        await self._retrying("auditing webhook attempts", work)

    async def dead_letter(self, delivery: Delivery, attempts: int, last_status: int | None, detail: str) -> None:
        """Keep a page given up on, whole (``webhook_deadletters``)."""
        async def work(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(
                "INSERT INTO webhook_deadletters (notification_id, receiver, attempts, last_status, last_error, body) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (delivery.notification_id, delivery.receiver, attempts, last_status, detail[:1000],
                 delivery.body.decode()))
            await conn.commit()

        await self._retrying("dead-lettering a webhook", work)

    # -- acknowledgements and silences -------------------------------------------------------------

    async def acknowledge(self, alert_id: str, *, by: str, via: str) -> tuple[str, int]:
        """Record an acknowledgement of a firing alert; return ``(by, at_ms)`` of the one in force.

        The ``alerts`` row shows it at once; the alerter owning the patient applies it to the
        engine (stopping re-notification and escalation) at its next poll.

        Raises
        ------
        UnknownAlert
            No such alert.
        AlertNotFiring
            The alert is resolved.
        InvalidRequest
            ``by`` empty or longer than 100 characters, ``via`` not ``http``/``cli``.
        """
        _check_name("by", by)
        if via not in ("http", "cli"):
            raise InvalidRequest(f"via must be 'http' or 'cli', got {via!r}")

        async def work(conn: psycopg.AsyncConnection[Any]) -> tuple[str, int]:
            async with conn.transaction():
                cur = await conn.execute("SELECT state FROM alerts WHERE alert_id = %s", (alert_id,))
                row = await cur.fetchone()
                if row is None:
                    raise UnknownAlert(f"no alert {alert_id!r}")
                if row[0] != "firing":
                    raise AlertNotFiring(f"alert {alert_id} is {row[0]}, not firing")
                cur = await conn.execute("SELECT acknowledged_by, acknowledged_at FROM acknowledgements "
                                         "WHERE alert_id = %s ORDER BY ack_id LIMIT 1", (alert_id,))
                first = await cur.fetchone()
                if first is not None:
                    return str(first[0]), int(ms(first[1]) or 0)
                cur = await conn.execute("INSERT INTO acknowledgements (alert_id, acknowledged_by, via) "
                                         "VALUES (%s, %s, %s) RETURNING acknowledged_at", (alert_id, by, via))
                inserted = await cur.fetchone()
                assert inserted is not None  # noqa: S101 - RETURNING of an INSERT
                await conn.execute("UPDATE alerts SET acknowledged_by = %s, acknowledged_at = %s, updated_at = now() "
                                   "WHERE alert_id = %s AND acknowledged_by IS NULL", (by, inserted[0], alert_id))
                return by, int(ms(inserted[0]) or 0)

        return await self._retrying("recording an acknowledgement", work)

    async def acknowledgements_for(self, alert_ids: Sequence[str]) -> list[tuple[str, str, int]]:
        """``(alert_id, by, at_ms)`` of the first acknowledgement of each of ``alert_ids`` that has one."""
        if not alert_ids:
            return []

        async def work(conn: psycopg.AsyncConnection[Any]) -> list[tuple[str, str, int]]:
            cur = await conn.execute(
                "SELECT DISTINCT ON (alert_id) alert_id, acknowledged_by, acknowledged_at FROM acknowledgements "
                "WHERE alert_id = ANY(%s) ORDER BY alert_id, ack_id", (list(alert_ids),))
            return [(str(a), str(b), int(ms(t) or 0)) for a, b, t in await cur.fetchall()]

        return await self._retrying("reading acknowledgements", work)

    async def add_silence(self, *, patient_id: str | None, kind: str | None, minutes: float, by: str,
                          reason: str) -> Silence:
        """Create a silence from now for ``minutes``; return it.

        Raises
        ------
        InvalidRequest
            ``minutes`` not in (0, 10080] (a week), ``by`` or ``reason`` empty or too long.
        """
        if not 0 < minutes <= 7 * 24 * 60:
            raise InvalidRequest(f"a silence lasts more than 0 and at most 10080 minutes (a week), got {minutes:g}")
        _check_name("by", by)
        if not reason.strip() or len(reason) > MAX_REASON:
            raise InvalidRequest(f"reason must be 1 to {MAX_REASON} characters")
        silence_id = f"si-{uuid.uuid4().hex[:16]}"

        async def work(conn: psycopg.AsyncConnection[Any]) -> Silence:
            cur = await conn.execute(
                "INSERT INTO silences (silence_id, patient_id, kind, starts_at, ends_at, created_by, reason) "
                "VALUES (%s, %s, %s, now(), now() + make_interval(secs => %s), %s, %s) "
                "RETURNING starts_at, ends_at", (silence_id, patient_id, kind, minutes * 60, by, reason))
            row = await cur.fetchone()
            await conn.commit()
            assert row is not None  # noqa: S101 - RETURNING of an INSERT
            return Silence(silence_id, patient_id, kind, int(ms(row[0]) or 0), int(ms(row[1]) or 0), by, reason)

        return await self._retrying("creating a silence", work)

    async def end_silence(self, silence_id: str, *, by: str) -> Silence:
        """End a silence now, recording who ended it; return it as it now stands.

        Raises
        ------
        UnknownSilence
            No such silence.
        SilenceEnded
            It had already ended.
        InvalidRequest
            ``by`` empty or longer than 100 characters.
        """
        _check_name("by", by)

        async def work(conn: psycopg.AsyncConnection[Any]) -> Silence:
            async with conn.transaction():
                # The owner's function (migration 0013): no role may UPDATE silences itself.
                cur = await conn.execute("SELECT * FROM end_silence(%s, %s)", (silence_id, by))
                row = await cur.fetchone()
                if row is None:
                    cur = await conn.execute("SELECT 1 FROM silences WHERE silence_id = %s", (silence_id,))
                    if await cur.fetchone() is None:
                        raise UnknownSilence(f"no silence {silence_id!r}")
                    raise SilenceEnded(f"silence {silence_id} has already ended")
            i, p, k, s, e, b, r = row
            return Silence(str(i), p, k, int(ms(s) or 0), int(ms(e) or 0), str(b), str(r))

        return await self._retrying("ending a silence", work)

    async def active_silences(self) -> list[Silence]:
        """Silences that have not ended yet (including ones that start later)."""
        async def work(conn: psycopg.AsyncConnection[Any]) -> list[Silence]:
            cur = await conn.execute("SELECT silence_id, patient_id, kind, starts_at, ends_at, created_by, reason "
                                     "FROM silences WHERE ends_at > now()")
            return [Silence(str(i), p, k, int(ms(s) or 0), int(ms(e) or 0), str(b), str(r))
                    for i, p, k, s, e, b, r in await cur.fetchall()]

        return await self._retrying("reading silences", work)

    async def list_alerts(self, *, state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Recent episodes that paged, newest first, as JSON-ready dicts (ids and times only).

        A model-risk group is one entry, its ``heads`` the kinds that joined it; the heads' own rows
        (``group_id`` set) are not listed apart, as they never paged on their own.
        """
        async def work(conn: psycopg.AsyncConnection[Any]) -> list[dict[str, Any]]:
            async with conn.cursor(row_factory=tuple_row) as cur:
                await cur.execute(
                    "SELECT alert_id, patient_id, kind, severity, state, started_at, fired_at, resolved_at, "
                    "acknowledged_by, acknowledged_at, escalated_at, "
                    "(SELECT array_agg(m.kind ORDER BY m.kind) FROM alerts m WHERE m.group_id = a.alert_id) AS heads "
                    "FROM alerts a WHERE a.group_id IS NULL AND (%(state)s::text IS NULL OR a.state = %(state)s) "
                    "ORDER BY started_at DESC LIMIT %(limit)s",
                    {"state": state, "limit": limit})
                names = [d.name for d in cur.description or ()]
                return [{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in zip(names, row, strict=True)}
                        for row in await cur.fetchall()]

        return await self._retrying("listing alerts", work)


def _check_name(what: str, value: str) -> None:
    if not value.strip() or len(value) > MAX_NAME or any(c in value for c in "\r\n\t"):
        raise InvalidRequest(f"{what} must be 1 to {MAX_NAME} characters on one line, got {value!r}")


def alert_row(patient: PatientAlerts, kind: str, severity: str) -> AlertRow | None:
    """The ``alerts`` row of the patient's current episode of ``kind``, if it ever fired."""
    state = patient.alert(kind)
    if state.alert_id is None or state.fired_ms is None or state.phase not in (Phase.FIRING, Phase.RESOLVED):
        return None
    return AlertRow(patient.patient_id, state, severity, patient.evidence)


class AuditBuffer:
    """A :class:`sinks.webhook.DeliveryAudit` that writes attempts in batches.

    One insert per attempt would cost a database round trip per page on the delivery path;
    here attempts are written every ``interval_s`` (and at :meth:`flush`). Dead letters, rare
    and important, are written at once. A crash loses at most ``interval_s`` of audit rows; a
    page whose "delivered" row is lost is re-sent at the next start and dropped by the receiver
    as a duplicate (same ``Idempotency-Key``).
    """

    def __init__(self, store: AlertStore, *, interval_s: float = 0.2) -> None:
        self.store = store
        self.interval_s = interval_s
        self._pending: list[Attempt] = []

    async def record_attempt(self, attempt: Attempt) -> None:
        self._pending.append(attempt)

    async def dead_letter(self, delivery: Delivery, attempts: int, last_status: int | None, detail: str) -> None:
        await self.flush()
        await self.store.dead_letter(delivery, attempts, last_status, detail)

    async def flush(self) -> None:
        attempts, self._pending = self._pending, []
        if attempts:
            try:
                await self.store.record_attempts(attempts)
            except BaseException:
                self._pending = attempts + self._pending
                raise

    async def run(self) -> None:
        """Flush every ``interval_s`` until cancelled."""
        while True:
            await asyncio.sleep(self.interval_s)
            await self.flush()
