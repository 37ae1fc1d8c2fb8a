"""``vitalrisk alerter``: the Faust adapter around the alert engine.

Scores come from the ``risk.scores`` topic keyed by patient, so all of one patient's scores —
and so their alert state — live with one worker; the state is loaded from ``alert_state`` when a
partition is assigned and dropped when it is revoked.

Offsets follow the database, as in :mod:`stream.app`: the agent reads with acks off, runs the
engine, and acks a record only once the state, episodes, history and pages it caused are
committed (:meth:`sinks.alert_store.AlertStore.persist`; :mod:`stream.ledger` keeps which may
be acked). Pages are then delivered from that outbox in the background
(:mod:`stream.alerts.delivery`); a crash between commit and delivery leaves them in the outbox,
where the next start finds them. A record that produced a page wakes a flusher task that
commits at once, while consumption goes on (so under load one transaction carries many pages);
everything else is flushed every ``alerter_flush_s``.

A timer (``TICK_S``) polls acknowledgements and silences from the database, runs the engine's
wall-clock timers (data stopped, re-notify, escalate) and flushes. The HTTP API
(:mod:`stream.alerts.api`) and the ``ack``/``silence`` commands only write to the database, so
any worker's API serves any alert.

:class:`AlerterRuntime` takes its clock, store, dispatcher and dead-letter sender as arguments,
so a unit test drives it with fakes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol, cast

import faust
from faust.types import TP, EventT, Message

from sinks.metrics import AlertMetrics, KafkaHealth, KafkaMetrics
from stream.kafka_watch import KafkaWatch
from kernel.backoff import Backoff
from sinks.webhook import WebhookSender, receiver_tls
from stream.alerts.routing import Router, parse_receivers
from stream.alerts.delivery import Dispatcher
from stream.alerts.engine import AlertEngine, Effects
from kernel.errors import AlertNotFiring, AlertStoreUnavailable, ConfigurationError, InvalidMessage, UnknownAlert
from stream.alerts.rules import AlertPolicy, Threshold, Timers
from sinks.alert_store import AlertStore, AuditBuffer, Batch, alert_row
from stream.deadletters import as_bytes, deadletter_headers
from kernel.events import DeadLetter
from kernel.limits import Limits
from infra.preflight import require_free_port
from kernel.kafka_security import faust_credentials
from kernel.settings import ALERTER_ROLE, Settings
from stream.skipped import IntakeEvent, OrderedIntake, ordered_intake
from kernel.wire import decode_score
from kernel.alerts import PatientAlerts, Silence
from stream.alerts.api import check_exposure, start_api
from stream.app import Clock
from stream.ledger import AckLedger
from stream.worker import serve

logger = logging.getLogger(__name__)

#: Timer period: acknowledgements, silences, wall-clock timers, flush. Seconds.
TICK_S = 0.25
#: Sends one dead letter: the refused record's key and value, and its headers.
SendDeadLetter = Callable[[bytes | None, bytes, list[tuple[str, bytes]]], Awaitable[None]]
#: Kafka group session timeout of the alerter, seconds: how long partitions of a dead alerter wait.
SESSION_TIMEOUT_S = 10.0
#: Acknowledgements and silences are read from the database this often (sooner when the API pokes). Seconds.
POLL_S = 1.0
#: The vitals_alerts gauge is recomputed (a pass over every patient) this often. Seconds.
GAUGES_S = 5.0
#: Flush after this many buffered patient states even if no page is waiting.
BATCH_PATIENTS = 2_000
#: At start, re-deliver outbox pages this recent that never reached a receiver. Seconds.
RECOVER_WITHIN_S = 24 * 3600


def policy_from_settings(settings: Settings) -> AlertPolicy:
    """The alert policy the ``VITALS_ALERT_*`` settings describe.

    >>> p = policy_from_settings(Settings(alert_for_s=30, alert_data_stopped_s=0))
    >>> p.news2_total.for_ms, p.risk.for_ms, p.data_stopped_ms
    (30000, 60000, None)
    """
    for_ms = int(settings.alert_for_s * 1000)
    clear_ms = int(settings.alert_clear_s * 1000)
    renotify_ms = int(settings.alert_renotify_s * 1000)
    escalate_ms = int(settings.alert_escalate_s * 1000)
    return AlertPolicy(
        news2_total=Threshold(7.0, 4.0, for_ms, clear_ms, "critical"),
        news2_parameter=Threshold(3.0, 1.0, for_ms, clear_ms, "warning"),
        risk=Threshold(settings.alert_risk_enter, settings.alert_risk_exit, 2 * for_ms, clear_ms, "warning"),
        data_stopped_ms=int(settings.alert_data_stopped_s * 1000) or None,
        timers_by_severity={"critical": Timers(renotify_ms, escalate_ms),
                            "warning": Timers(4 * renotify_ms, 3 * escalate_ms),
                            "info": Timers(None, None)},
    )


def webhook_secret(settings: Settings) -> bytes:
    """The signing key; :class:`~kernel.errors.ConfigurationError` when it is unset or empty."""
    if settings.webhook_secret is None or not settings.webhook_secret.get_secret_value():
        raise ConfigurationError("VITALS_WEBHOOK_SECRET must be set: every page is signed")
    return settings.webhook_secret.get_secret_value().encode()


class Store(Protocol):
    """What the runtime needs of the alert store (:class:`~sinks.alert_store.AlertStore`)."""

    async def persist(self, batch: Batch) -> set[str]:
        """Commit ``batch`` in one transaction; the notification ids of its pages that are new."""
        ...

    async def load_states(self, partitions: Iterable[int]) -> list[tuple[int, PatientAlerts]]:
        """The saved alert state of every patient of ``partitions``, with each one's partition."""
        ...

    async def active_silences(self) -> list[Silence]:
        """The silences in force now."""
        ...

    async def acknowledgements_for(self, alert_ids: Sequence[str]) -> list[tuple[str, str, int]]:
        """``(alert id, by, at ms)`` of those of ``alert_ids`` acknowledged."""
        ...


class AlerterRuntime:
    """State of one alerter between Faust and the engine: held records, the batch, the outbox feed.

    Parameters
    ----------
    store
        Commits the batches and reads acknowledgements, silences and saved states.
    clock
        Wall-clock time for the engine, monotonic time for the poll, flush and gauge intervals;
        the :mod:`time` module.
    send_deadletter
        Sends an unreadable score to the dead-letter topic (none: only counted).
    """

    def __init__(self, settings: Settings, *, engine: AlertEngine, store: Store, dispatcher: Dispatcher,
                 router: Router, metrics: AlertMetrics, clock: Clock = time,
                 intake: OrderedIntake | None = None, send_deadletter: SendDeadLetter | None = None) -> None:
        self.settings = settings
        self.limits = Limits.from_settings(settings)
        self._send_deadletter = send_deadletter  # (key, value, headers) to the dead-letter topic
        self.intake = intake or OrderedIntake()  # scores in unbroken offset order (see stream.offsets)
        self.engine = engine
        self.store = store
        self.dispatcher = dispatcher
        self.router = router
        self.metrics = metrics
        self._clock = clock
        self._ledger: AckLedger[IntakeEvent] = AckLedger()  # read, not yet acked: until their batch is committed
        self._batch = Batch()
        self._partition_of: dict[str, int] = {}
        self._loaded: set[int] = set()
        self._last_flush = clock.monotonic()
        self._last_poll = 0.0
        self._last_gauges = 0.0
        self._poll_now = asyncio.Event()
        self._wake = asyncio.Event()
        self._failed: Exception | None = None
        self._lock = asyncio.Lock()  # one flush at a time

    def now_ms(self) -> int:
        return int(self._clock.time() * 1000)

    # -- records ---------------------------------------------------------------------------------

    async def handle(self, event: EventT[bytes]) -> None:
        """Run one ``risk.scores`` record (and any the consumer skipped before it) through the engine."""
        self._raise_if_failed()
        message = event.message
        if message.partition not in self._ledger:  # the first record since the partition was assigned
            self._ledger.assign(message.partition)
            self.intake.assigned(message.partition)
        for each in await self.intake.events(event):
            await self._handle_one(each)

    async def _handle_one(self, event: IntakeEvent) -> None:
        """Run one record through the engine; a page wakes the flusher."""
        message = event.message
        self._ledger.hold(message.partition, message.offset, event)
        source_ms = int(message.timestamp * 1000) if message.timestamp else None
        try:
            score = decode_score(message.value, limits=self.limits)  # None (a tombstone): InvalidMessage "empty"
            outcome = self.engine.on_score(score, now_ms=self.now_ms())
        except InvalidMessage as exc:
            logger.warning("unreadable score at %s[%d]@%d dead-lettered: %s", message.topic, message.partition,
                           message.offset, exc.reason)
            await self._dead_letter(DeadLetter(reason=exc.reason, detail=exc.detail, payload=as_bytes(message.value)), message, source_ms)
            return
        except Exception as exc:  # noqa: BLE001 - a bug of ours must cost one record, never the partition
            # The exception's type and place only: its message may quote the record's values.
            logger.error("internal error (%s) on %s[%d]@%d: dead-lettered", type(exc).__name__, message.topic,
                         message.partition, message.offset)
            logger.debug("internal error on %s[%d]@%d", message.topic, message.partition, message.offset,
                         exc_info=True)
            await self._dead_letter(DeadLetter(reason="internal_error", detail=f"{type(exc).__name__} in the alert engine",
                                               payload=as_bytes(message.value)), message, source_ms)
            return
        self._partition_of[score.patient_id] = message.partition
        self._absorb(outcome, source_ms)
        if len(self._batch.states) >= BATCH_PATIENTS:
            await self.flush()  # backpressure: stop consuming until the database has caught up
        elif outcome.pages:
            self._wake.set()  # the flusher commits it (with whatever else arrives meanwhile) right away

    async def run_flusher(self) -> None:
        """Commit batches with pages as soon as they exist, coalescing records that arrive meanwhile.

        Consumption goes on while a batch commits, so under load one transaction carries many
        pages; when idle a page is committed and sent within milliseconds.
        """
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
            except Exception as exc:  # noqa: BLE001 - surfaced to the agent, which crashes the worker
                logger.exception("alert flush failed")
                self._failed = exc
                return

    async def tick(self) -> None:
        """Apply acknowledgements and silences, run the timers, flush when due."""
        self._raise_if_failed()
        if self._poll_now.is_set() or self._clock.monotonic() - self._last_poll >= POLL_S:
            await self._poll_acks_and_silences()
        outcome = self.engine.tick(now_ms=self.now_ms())
        if outcome.storm:
            logger.warning("%d patients went quiet at once: no data_stopped pages (pipeline stalled?)", outcome.storm)
        self._absorb(outcome, None)
        if outcome.pages or self._clock.monotonic() - self._last_flush >= self.settings.alerter_flush_s:
            await self.flush()
        if self._clock.monotonic() - self._last_gauges >= GAUGES_S:
            self._update_gauges()

    def poke(self) -> None:
        """Make the next tick poll acknowledgements even if nothing else is due (the API calls it)."""
        self._poll_now.set()

    async def flush(self) -> None:
        """Commit the batch, ack the records behind it, hand its new pages to delivery."""
        async with self._lock:
            batch, self._batch = self._batch, Batch()
            covered = self._ledger.take()  # every record read so far: its effects are all in the batch
            if batch:
                try:
                    new = await self.store.persist(batch)
                except BaseException:
                    self._batch = _merge(batch, self._batch)
                    covered.restore()
                    raise
                for page, receivers, source_ms in batch.pages:
                    if page.notification_id in new:
                        self.dispatcher.submit(page, receivers, source_ts_ms=source_ms)
            covered.ack()
            self._last_flush = self._clock.monotonic()

    # -- rebalancing -----------------------------------------------------------------------------

    async def assign(self, partitions: set[int]) -> None:
        """Load the alert state of patients on newly assigned partitions."""
        new = partitions - self._loaded
        if not new:
            return
        rows = await self.store.load_states(new)
        self.engine.restore((state for _, state in rows), resume_at_ms=self.now_ms())
        for partition, state in rows:
            self._partition_of[state.patient_id] = partition
        self._loaded |= new
        logger.info("alert state of %d patients loaded for partitions %s", len(rows), sorted(new))

    async def revoke(self, partitions: set[int]) -> None:
        """Persist what we have, then forget the patients of partitions handed to another worker."""
        await self.flush()
        gone = [pid for pid, p in self._partition_of.items() if p in partitions]
        self.engine.forget(gone)
        for pid in gone:
            self._partition_of.pop(pid, None)
        for partition in partitions:
            self._ledger.release(partition)
            self.intake.forget(partition)
        self._loaded -= partitions

    # -- internals -------------------------------------------------------------------------------

    async def _dead_letter(self, letter: DeadLetter, message: Message, source_ms: int | None) -> None:
        self.metrics.deadletters.labels(letter.reason).inc()
        if self._send_deadletter is not None:
            await self._send_deadletter(message.key, letter.payload, deadletter_headers(
                letter, topic=message.topic, partition=message.partition, offset=message.offset,
                record_ts_ms=source_ms))

    def _raise_if_failed(self) -> None:
        if self._failed is not None:
            raise AlertStoreUnavailable(f"alert flush failed: {self._failed}") from self._failed

    def _absorb(self, outcome: Effects, source_ms: int | None) -> None:
        batch = self._batch
        for pid in outcome.changed:
            snapshot = self.engine.snapshot(pid)
            if snapshot is not None and pid in self._partition_of:
                batch.states[pid] = (self._partition_of[pid], snapshot)
        for event in outcome.events:
            batch.events.append(event)
            if event.from_phase != event.to_phase:
                self.metrics.transitions.labels(event.kind, event.to_phase).inc()
            snapshot = self.engine.snapshot(event.patient_id)
            if snapshot is None:
                continue
            row = alert_row(snapshot, event.kind, self.engine.policy.severity(event.kind))
            if row is not None and row.state.alert_id == event.alert_id:
                batch.alerts[event.alert_id] = row
        for page in outcome.pages:
            receivers = self.router.receivers_for(page.severity, escalate=page.action == "escalate")
            batch.pages.append((page, receivers, source_ms))
            snapshot = self.engine.snapshot(page.patient_id)
            if snapshot is not None:
                row = alert_row(snapshot, page.kind, page.severity)
                if row is not None and row.state.alert_id == page.alert_id:
                    batch.alerts[page.alert_id] = row

    async def _poll_acks_and_silences(self) -> None:
        self._poll_now.clear()
        self._last_poll = self._clock.monotonic()
        self.engine.set_silences(await self.store.active_silences())
        waiting = [a.alert_id for _, a in self.engine.firing() if not a.acknowledged and a.alert_id]
        for alert_id, by, at_ms in await self.store.acknowledgements_for(waiting):
            try:
                outcome = self.engine.acknowledge(alert_id, by=by, at_ms=at_ms)
            except (UnknownAlert, AlertNotFiring):
                continue
            logger.info("alert %s acknowledged", alert_id)
            self._absorb(outcome, None)

    def _update_gauges(self) -> None:
        self._last_gauges = self._clock.monotonic()
        self.metrics.alerts.clear()
        for (kind, phase), count in self.engine.counts().items():
            self.metrics.alerts.labels(kind, phase).set(count)


def _merge(first: Batch, later: Batch) -> Batch:
    merged = Batch(dict(first.states), dict(first.alerts), list(first.events), list(first.pages))
    merged.states.update(later.states)
    merged.alerts.update(later.alerts)
    merged.events.extend(later.events)
    merged.pages.extend(later.pages)
    return merged


def create_alerter_app(settings: Settings, *, metrics: AlertMetrics,
                       kafka_metrics: KafkaMetrics | None = None) -> faust.App:
    """Build the alerter's Faust app: its own consumer group on the scores topic, a timer, the API.

    Nothing connects until the worker starts; the runtime is built on the worker's loop.
    """
    secret = webhook_secret(settings)
    policy = policy_from_settings(settings)
    receivers = parse_receivers(settings.webhook_receivers, require_https=settings.webhook_require_https)
    router = Router.parse(settings.webhook_routes, frozenset(receivers))
    datadir = settings.data_dir / "alerter"
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        f"{settings.app_id}-alerter",
        broker=[f"kafka://{server}" for server in settings.kafka_bootstrap.split(",")],
        broker_credentials=faust_credentials(settings),
        datadir=str(datadir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,  # Faust's internal (leader) topic
        web_enabled=False,
        stream_wait_empty=False,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,  # dead letters: acks=all (no idempotence without exactly_once; see stream.app)
        # A crashed alerter's partitions must move within seconds, not the default minute:
        # until the broker gives up on the dead member, nobody pages for its patients.
        broker_session_timeout=SESSION_TIMEOUT_S,
        broker_heartbeat_interval=SESSION_TIMEOUT_S / 5,
    )
    scores = app.topic(settings.scores_topic, key_type=bytes, value_type=bytes, key_serializer="raw",
                       value_serializer="raw", partitions=settings.partitions)
    holder: dict[str, Any] = {}
    started = asyncio.Lock()

    async def runtime() -> AlerterRuntime:
        async with started:
            if "runtime" not in holder:
                store = AlertStore(settings.database_url)
                await store.open()
                audit = AuditBuffer(store)
                sender = WebhookSender(secret, audit=audit,
                                       backoff=Backoff(settings.webhook_backoff_s, settings.webhook_backoff_max_s,
                                                       settings.webhook_give_up_s),
                                       timeout_s=settings.webhook_timeout_s, ca_file=settings.webhook_ca_file)
                await sender.__aenter__()
                dispatcher = Dispatcher(sender, receivers=receivers, grafana_url=settings.alert_grafana_url,
                                        external_url=settings.alert_external_url, metrics=metrics)
                intake, skipped = ordered_intake(settings, app, settings.scores_topic, metrics.skipped_records)

                async def send_deadletter(key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]) -> None:
                    await app.producer.send(settings.deadletter_topic, key, value, None, None, headers)

                rt = AlerterRuntime(settings, engine=AlertEngine(policy), store=store, dispatcher=dispatcher,
                                    router=router, metrics=metrics, intake=intake, send_deadletter=send_deadletter)
                loop = asyncio.get_running_loop()
                holder.update(runtime=rt, store=store, sender=sender, audit=audit, skipped=skipped,
                              flusher=loop.create_task(rt.run_flusher()), auditor=loop.create_task(audit.run()))
                for pending in await store.pending_deliveries(within_s=RECOVER_WITHIN_S):
                    dispatcher.submit(pending.page, (pending.receiver,), source_ts_ms=pending.source_ts_ms)
                if settings.alerter_port:
                    holder["api"] = await start_api(store, settings, on_change=rt.poke)
            result: AlerterRuntime = holder["runtime"]
            return result

    app.alerter_runtime = runtime  # type: ignore[attr-defined]  # for tests
    app.task(KafkaWatch(settings, KafkaHealth("alerter", kafka_metrics)).run)  # vitals_kafka_up{client="alerter"}

    @app.agent(scores, name="alerts")
    async def evaluate_scores(stream: faust.StreamT[bytes]) -> None:
        # An agent is an asynchronous function processing a stream: scores in, acks only after
        # the alert state they changed is committed (see module docstring).
        rt = await runtime()
        # (Faust hands an agent a Stream; its StreamT type lacks noack.)
        async for event in cast(faust.Stream[bytes], stream).noack().events():
            await rt.handle(event)

    async def tick() -> None:
        rt = await runtime()
        await rt.tick()

    app.timer(interval=TICK_S)(tick)  # by call: as a decorator (untyped) it would untype the function

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]  # mypy matches no function to mode's SignalHandlerT, even one of its exact shape
    async def on_assigned(app: faust.App, assigned: set[TP], **_: Any) -> None:
        rt = await runtime()
        await rt.assign({tp.partition for tp in assigned if tp.topic == settings.scores_topic})

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]  # as on_assigned
    async def on_revoked(app: faust.App, revoked: set[TP], **_: Any) -> None:
        if "runtime" in holder:
            await holder["runtime"].revoke({tp.partition for tp in revoked if tp.topic == settings.scores_topic})

    @app.on_before_shutdown.connect  # type: ignore[arg-type]  # as on_assigned
    async def on_shutdown(app: faust.App, **_: Any) -> None:
        if "runtime" not in holder:
            return
        rt = holder["runtime"]
        holder["flusher"].cancel()
        await rt.flush()
        if "api" in holder:
            await holder["api"].cleanup()
        await rt.dispatcher.close()
        holder["auditor"].cancel()
        await holder["audit"].flush()
        await holder["sender"].close()
        await holder["store"].close()
        await holder["skipped"].close()

    return app


def run_alerter(settings: Settings) -> int:
    """Block running one alerter process until SIGTERM or SIGINT; return its exit status.

    Raises
    ------
    ConfigurationError
        No webhook secret.
    InvalidPolicy
        Thresholds that cannot work (exit above enter), routes naming unknown receivers.
    PortInUse
        The API port is taken: checked here, since the API starts inside the running worker.
    ServiceUnavailable
        Kafka or PostgreSQL does not answer (see :func:`stream.worker.serve`).
    """

    settings = settings.for_service(ALERTER_ROLE)
    webhook_secret(settings)
    policy_from_settings(settings)
    Router.parse(settings.webhook_routes, frozenset(parse_receivers(settings.webhook_receivers,
                                                                    require_https=settings.webhook_require_https)))
    check_exposure(settings)
    receiver_tls(settings.webhook_ca_file)
    if settings.alerter_port:
        require_free_port(settings.alerter_host, settings.alerter_port, what="the alerter API",
                          setting="VITALS_ALERTER_PORT")
    return serve(settings, lambda registry: create_alerter_app(settings, metrics=AlertMetrics(registry),
                                                               kafka_metrics=KafkaMetrics(registry)))
