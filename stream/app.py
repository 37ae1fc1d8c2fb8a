"""The Faust worker: a thin adapter that feeds Kafka records to the pure core and writes out.

The agent decodes nothing itself. For every record it calls :class:`~stream.pipeline.VitalsPipeline`,
sends dead letters, scores and feature rows to their topics, and buffers closed windows and
scores for the database.

Offsets follow the sink, not the consumer: the agent reads with acks disabled and holds each
event until every window it fed is committed to the database; only then is it acked, and Faust
commits only an unbroken run of acked offsets. After the database commit the core's state —
each patient's baseline and panes, each partition's watermark — goes to a Faust table whose
changelog topic restores it on restart and moves it with its partition on rebalance. A worker
that dies, even by SIGKILL, restarts from an offset whose windows are not yet written, with the
state that produced the windows that are; the replay rebuilds the rest and the idempotent
writes add nothing twice. Records reach the core in unbroken offset order per partition:
what Faust's consumer skips around a restart is read from the broker first
(:mod:`stream.skipped`), and which records may be acked is kept by :mod:`stream.ledger`.

:class:`WorkerRuntime` takes its clock, producer and writer as arguments (:class:`Clock`,
:class:`Producer`, :class:`Writer`): :func:`create_app` passes the real ones, a unit test a fake
clock, a recording producer and an in-memory writer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast

import faust
from aiokafka.errors import KafkaError
from faust.types import TP, ConsumerT, ProducerT
from faust.types.tables import TableT

from models.scorer import Scorer
from models.patient_context import PatientContext, parse_inputs
from models.patient_topic import PatientFeed, read_patients
from models.snapshot_topic import SnapshotFeed, model_name, read_latest
from models.snapshots import Snapshot
from sinks.errors import SinkRejected
from sinks.metrics import KafkaHealth, KafkaMetrics, ModelMetrics, PipelineMetrics
from stream.kafka_watch import KafkaWatch
from sinks.timescale import TimescaleWriter
from stream.deadletters import DETAIL_CHARS, SINK_SOURCE_PREFIX, as_bytes, deadletter_headers, replay_of
from kernel.events import DeadLetter, RiskScore, WindowFeatures
from stream.ledger import AckLedger
from stream.model_scoring import ModelScoring
from stream.stall import Seek, StallWatch, remedy
from stream.skipped import IntakeEvent, OrderedIntake, committed_offset, ordered_intake
from stream.pipeline import StepResult, VitalsPipeline
from kernel.kafka_security import faust_credentials
from kernel.settings import Settings
from kernel.wire import encode_feature_row, encode_score, encode_window

logger = logging.getLogger(__name__)

#: How often the worker checks for idle partitions, due flushes and lag, seconds.
TICK_S = 0.5
#: Most records the agent takes from the stream at a time, and how long it waits for them, seconds.
TAKE_RECORDS = 500
TAKE_WITHIN_S = 0.05
#: How long an assigned partition with records to read may deliver none before its fetching is resumed, seconds.
STALL_S = 5.0


class FaustTableStore:
    """The core's :class:`~stream.state.StateStore` on a Faust table with a changelog topic.

    Writes go to the table's local store and, with the partition named explicitly, to its
    changelog, so they can be made from the timer as well as from the agent.
    """

    def __init__(self, table: TableT[bytes, bytes]) -> None:
        self.table = table

    def get(self, key: str) -> bytes | None:
        value = self.table.data.get(key.encode())
        return None if value is None else bytes(value)

    def put(self, partition: int, key: str, value: bytes) -> None:
        raw_key = key.encode()
        self.table.data[raw_key] = value
        self.table.send_changelog(partition, raw_key, value)

    def delete(self, partition: int, key: str) -> None:
        raw_key = key.encode()
        self.table.data.pop(raw_key, None)
        self.table.send_changelog(partition, raw_key, None, value_serializer="raw")


class Clock(Protocol):
    """Where a runtime reads the time: the :mod:`time` module itself, or a test's fake."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary start, never going back: idle timeouts and flush intervals."""
        ...

    def time(self) -> float:
        """Wall-clock seconds since the epoch: how far ahead of now a reading may be, lag."""
        ...


class Producer(Protocol):
    """Where the worker sends its dead letters, scores and feature rows (:class:`FaustProducer`)."""

    async def send(self, topic: str, key: bytes | None, value: bytes,
                   headers: list[tuple[str, bytes]] | None) -> None:
        """Queue one record for ``topic``."""
        ...

    async def drain(self) -> None:
        """Return once every record sent so far is on the broker."""
        ...


class Writer(Protocol):
    """Where the worker commits its batches (:class:`~sinks.timescale.TimescaleWriter`)."""

    async def write_many(self, windows: Sequence[WindowFeatures], scores: Sequence[RiskScore]) -> int:
        """Commit ``windows`` and ``scores`` in one transaction; the rows newly inserted.

        Raises :class:`~sinks.errors.SinkRejected` when the database refuses a row of the batch.
        """
        ...


class FaustProducer:
    """A Faust app's transport producer as the worker's :class:`Producer`.

    The transport producer directly: ``Topic.send``'s channel machinery costs more per record
    than the core does, and these records need no codec.
    """

    def __init__(self, producer: ProducerT) -> None:
        self._producer = producer

    async def send(self, topic: str, key: bytes | None, value: bytes,
                   headers: list[tuple[str, bytes]] | None) -> None:
        await self._producer.send(topic, key, value, None, None, headers)

    async def drain(self) -> None:
        # Faust's buffer flush gives up after 0.1 s without progress, so drain it until it is empty.
        while self._producer.buffer.size:
            await self._producer.flush()
        await self._producer.flush()


class WorkerRuntime:
    """State of one worker process between Faust and the core: held events and the sink buffer.

    A lock serialises the agent and the timer around the core, so the state checkpointed with a
    batch is exactly the state that produced the batch's rows (see :meth:`flush`).

    Parameters
    ----------
    writer
        Commits the batches of windows and scores.
    producer
        Takes the dead letters, scores and feature rows, to the topics the settings name.
    clock
        Idle timeouts, flush intervals and the bound on future readings; the :mod:`time` module.
    """

    def __init__(self, settings: Settings, *, pipeline: VitalsPipeline, writer: Writer, producer: Producer,
                 metrics: PipelineMetrics, scoring: ModelScoring | None = None,
                 model_metrics: ModelMetrics | None = None, intake: OrderedIntake | None = None,
                 clock: Clock = time) -> None:
        self.settings = settings
        self.intake = intake or OrderedIntake()  # records in unbroken offset order (stream.offsets)
        self.pipeline = pipeline
        self.scoring = scoring
        self.model_metrics = model_metrics
        self.writer = writer
        self._producer = producer
        self._clock = clock
        self._deadletter_topic = settings.deadletter_topic
        self._scores_topic = settings.scores_topic
        self._features_topic = settings.features_topic
        self.metrics = metrics
        self._ledger: AckLedger[IntakeEvent] = AckLedger()  # read, not yet acked: until their windows are committed
        self._last_seen: dict[int, float] = {}  # clock.monotonic() of each partition's last record
        self._owned: set[int] | None = None  # the partitions assigned to this worker; None: not told (all)
        self._handling = 0  # batches being handled (the agent is busy, not waiting for records)
        self._windows: list[WindowFeatures] = []
        self._scores: list[RiskScore] = []
        self._last_flush = clock.monotonic()
        self._lock = asyncio.Lock()  # the core and the buffers: one record (or idle close) at a time
        self._flush_lock = asyncio.Lock()  # one flush at a time
        self._flush_task: asyncio.Task[None] | None = None

    async def handle(self, event: IntakeEvent) -> None:
        """Process one record: :meth:`handle_batch` of one."""
        await self.handle_batch((event,))

    async def handle_batch(self, events: Sequence[IntakeEvent]) -> None:
        """Process records taken together from the stream, in the order given; flush a full buffer
        beside them, and wait for the flush when twice full (backpressure).

        The core sees each record on its own, in offset order per partition, exactly as one
        record at a time would feed it: a batch's size never changes a window, a score or a
        dead letter. What a batch saves is the rest: the lock, the metrics and the sends are
        taken once per batch, and the outputs are queued on the producer together, after the
        core, under the same lock (so a flush's checkpoint never covers a record whose outputs
        are not queued). No send waits for the broker; :meth:`flush` drains them all before the
        state and the acks that depend on them. A buffer twice full stops the batch where it
        stands, as it would stop a next record: the rest waits for that flush.
        """
        self._handling += 1
        try:
            await self._handle_batch(events)
        finally:
            self._handling -= 1

    @property
    def busy(self) -> bool:
        """Whether the agent is handling records (or waiting for a flush), not waiting for more."""
        return self._handling > 0

    async def _handle_batch(self, events: Sequence[IntakeEvent]) -> None:
        limit = self.settings.sink_batch_rows
        at = 0
        while at < len(events):
            async with self._lock:
                out = _Outputs()
                # The clock once per batch: a batch is taken within TAKE_WITHIN_S.
                now_ms, seen_at = int(self._clock.time() * 1000), self._clock.monotonic()
                while at < len(events):
                    event = events[at]
                    at += 1
                    message = event.message
                    partition = message.partition
                    if self._owned is not None and partition not in self._owned:
                        logger.debug("%s[%d]@%d: fetched before the rebalance that took the partition; its owner "
                                     "replays it", message.topic, partition, message.offset)
                        continue
                    if partition not in self._ledger:  # the first record since the partition was assigned
                        self._ledger.assign(partition)
                        self.intake.assigned(partition)
                    admitted = await self.intake.events(event)
                    for each in admitted:
                        self._process(each, out, now_ms=now_ms)
                    if admitted:
                        self._last_seen[partition] = seen_at
                    if len(self._windows) + len(self._scores) >= 2 * limit:
                        break  # the rest of the batch waits for the flush below, as a next record would
                await self._emit(out)
                buffered = len(self._windows) + len(self._scores)
            if buffered >= limit:
                self._flush_soon()
                if buffered >= 2 * limit:
                    # Backpressure: the database is not keeping up (or is down), so stop consuming
                    # until a flush has gone through.
                    await self.flush()

    def _process(self, event: IntakeEvent, out: _Outputs, *, now_ms: int) -> None:
        """Feed one record to the core, hold it until its windows are committed and collect its
        outputs in ``out`` (under the lock)."""
        message = event.message
        started = time.perf_counter()
        timestamp_ms = int(message.timestamp * 1000) if message.timestamp else None
        try:
            # The readings topic stamps records with the broker's time (LogAppendTime); the
            # worker's own clock bounds it too, for a topic created otherwise.
            step = self.pipeline.on_message(message.value,  # None (a tombstone) is dead-lettered as "empty"
                                            partition=message.partition, offset=message.offset,
                                            record_ts_ms=timestamp_ms, now_ms=now_ms)
        except Exception as exc:  # noqa: BLE001 - a bug of ours must cost one record, never the partition
            # The exception's type and place only: its message may quote the record's values.
            logger.error("internal error (%s) on %s[%d]@%d: dead-lettered", type(exc).__name__, message.topic,
                         message.partition, message.offset)
            logger.debug("internal error on %s[%d]@%d", message.topic, message.partition, message.offset,
                         exc_info=True)
            step = StepResult(dead_letters=[DeadLetter(reason="internal_error", detail=f"{type(exc).__name__} in the core",
                                                       payload=as_bytes(message.value))])
        self.metrics.processing_seconds.observe(time.perf_counter() - started)
        self._ledger.hold(message.partition, message.offset, event)
        out.messages += 1
        self._absorb(step, out, message.topic, message.partition, message.offset, key=message.key,
                     record_ts_ms=timestamp_ms, replay_of=replay_of(message.headers) if step.dead_letters else None)

    def _flush_soon(self) -> None:
        """Start a flush beside the agent, unless one is running: records keep being processed
        while the database and the broker take the batch."""
        if self._flush_task is None or self._flush_task.done():
            self._flush_task = asyncio.get_running_loop().create_task(self._flush_logged())

    async def _flush_logged(self) -> None:
        try:
            await self.flush()
        except Exception:  # the batch went back to the buffer; the next flush retries it
            logger.exception("sink flush failed; its rows stay buffered")

    async def tick(self, caught_up: Callable[[int], bool] = lambda partition: True) -> None:
        """Close idle partitions' windows and flush when due.

        A partition is idle when no record arrived for the idle timeout *and* the consumer has
        read to its end: a consumer that is behind, paused by a rebalance or still recovering
        is not the same as devices gone silent, and closing windows then would cut them short.
        """
        async with self._lock:
            now = self._clock.monotonic()
            for partition in self._ledger.partitions():
                idle_s = now - self._last_seen.get(partition, 0.0)
                if idle_s >= self.settings.idle_timeout_s and \
                        self.pipeline.low_offset(partition) is not None and caught_up(partition):
                    logger.info("partition %d idle for %.0f s: closing its windows", partition, idle_s)
                    out = _Outputs()
                    self._absorb(self.pipeline.close_partition(partition), out, "", partition, -1)
                    await self._emit(out)
        if self._clock.monotonic() - self._last_flush >= self.settings.sink_flush_s:
            await self.flush()

    def held_offset(self, partition: int) -> int | None:
        """Offset of the last record read from ``partition``, ``None`` before the first."""
        return self._ledger.last_offset(partition)

    def update_lag(self, consumer: ConsumerT, topic: str) -> None:
        """Records behind the end of each owned partition, and event-time lag of its watermark."""
        now_ms = self._clock.time() * 1000
        for partition in self._ledger.partitions():
            highwater = consumer.highwater(TP(topic, partition))
            last_offset = self._ledger.last_offset(partition)
            if highwater is not None and last_offset is not None:
                self.metrics.consumer_lag.labels(str(partition)).set(max(0, highwater - last_offset - 1))
            watermark = self.pipeline.watermark_ms(partition)
            if watermark is not None:
                self.metrics.watermark_lag_seconds.labels(str(partition)).set(max(0.0, (now_ms - watermark) / 1000))

    async def flush(self) -> None:
        """Commit the buffered rows, then save the state that produced them, then ack their records.

        The buffer, the state checkpoint and the records to ack are taken together under the
        processing lock; the slow part (database, broker) runs outside it, so records keep
        flowing meanwhile. One flush at a time: a record that fills the buffer while a flush
        is running waits for it, which is what stops consumption while the database is down.
        """
        async with self._flush_lock:
            self._last_flush = self._clock.monotonic()
            async with self._lock:
                windows, scores = self._windows, self._scores
                self._windows, self._scores = [], []
                checkpoints = {p: self.pipeline.checkpoint(p) for p in self._ledger.partitions()}
                # The records whose windows are all in this batch (or an earlier one).
                to_ack = self._ledger.take(before=self.pipeline.low_offset)
                open_windows = self.pipeline.open_windows
            if windows or scores:
                started = time.perf_counter()
                try:
                    try:
                        inserted = await self.writer.write_many(windows, scores)
                    except SinkRejected as exc:
                        # The database refuses something in the batch that retrying cannot fix
                        # (a check, a bad value): find those rows, quarantine them, commit the rest.
                        logger.warning("sink refused a batch of %d windows and %d scores (%s): bisecting",
                                       len(windows), len(scores), str(exc).splitlines()[0][:200])
                        inserted, refused = await self._write_bisecting([*windows, *scores])
                        await self._quarantine(refused)
                except BaseException:
                    # Undo the swap, so nothing taken for this batch is lost or acked: the rows
                    # go back in front of the buffer, the state is marked unsaved again and the
                    # records are held again.
                    self.metrics.sink_errors.inc()
                    async with self._lock:
                        self._windows[:0], self._scores[:0] = windows, scores
                        for partition, writes in checkpoints.items():
                            self.pipeline.unsave(partition, writes)
                        to_ack.restore()
                    raise
                rows = sum(len(w.metrics) for w in windows)
                self.metrics.sink_flush_seconds.observe(time.perf_counter() - started)
                self.metrics.sink_batch_rows.observe(rows + len(scores))
                self.metrics.sink_rows.labels("features").inc(rows)
                self.metrics.sink_rows.labels("risk_scores").inc(len(scores))
                logger.debug("sink committed %d windows, %d scores (%d new rows)", len(windows), len(scores),
                             inserted)
            # The scores, features and dead letters of the batch go on the broker before the
            # state that produced them: a restart that restores a patient's newer state skips
            # the windows it holds, so their outputs must not be lost with the process.
            await self._producer.drain()
            for partition, writes in checkpoints.items():
                self.pipeline.save(partition, writes)
            if to_ack:
                # The changelog must be on the broker before the offsets of the records that
                # caused it may be committed.
                await self._producer.drain()
                to_ack.ack()
            self.metrics.open_windows.set(open_windows)

    async def _write_bisecting(self, items: list[WindowFeatures | RiskScore]
                               ) -> tuple[int, list[tuple[WindowFeatures | RiskScore, str]]]:
        """Write ``items`` in halves until each refused one stands alone: ``(rows inserted,
        [(refused item, the database's error)])``. Writes are idempotent, so halves that went in
        before a failure elsewhere are harmless to write again. Costs about 2 log2(n) batches per
        refused row."""
        windows = [i for i in items if isinstance(i, WindowFeatures)]
        scores = [i for i in items if isinstance(i, RiskScore)]
        try:
            return await self.writer.write_many(windows, scores), []
        except SinkRejected as exc:
            if len(items) == 1:
                return 0, [(items[0], str(exc).splitlines()[0][:DETAIL_CHARS] if str(exc) else "refused")]
        middle = len(items) // 2
        first, first_refused = await self._write_bisecting(items[:middle])
        second, second_refused = await self._write_bisecting(items[middle:])
        return first + second, first_refused + second_refused

    async def _quarantine(self, refused: list[tuple[WindowFeatures | RiskScore, str]]) -> None:
        """Rows the database refused, each as a dead letter (``sink_rejected``, source ``sink:<table>``)."""
        for item, error in refused:
            if isinstance(item, RiskScore):
                table, payload = "risk_scores", encode_score(item)
            else:
                table, payload = "features", encode_window(item)
            letter = DeadLetter(reason="sink_rejected", detail=error, payload=payload, patient_id=item.patient_id)
            self.metrics.deadletters.labels(letter.reason).inc()
            logger.warning("quarantined a %s row of %s the database refused", table, item.patient_id)
            await self._producer.send(self._deadletter_topic, item.patient_id.encode(), payload,
                                      deadletter_headers(letter, topic=SINK_SOURCE_PREFIX + table, partition=0,
                                                         offset=0, record_ts_ms=None))

    def on_assigned(self, partitions: set[int]) -> None:
        """A rebalance gave this worker ``partitions`` (its whole assignment): records of any other
        partition that still reach :meth:`handle`, fetched before the rebalance, are not its own
        to process (their owner replays them) and are dropped unacked."""
        self._owned = set(partitions)

    def owns(self, partition: int) -> bool:
        """Whether the last rebalance gave ``partition`` to this worker (or none was told)."""
        return self._owned is None or partition in self._owned

    async def on_revoked(self, partitions: set[int], *, timeout_s: float) -> None:
        """A rebalance takes ``partitions`` away: let a flush under way finish, then :meth:`revoke` them.

        The partitions' new owner restores their state from the changelog once every member of
        the group has given its partitions up, so a flush's state writes must be on the broker
        before this returns: the new owner then restores the state that produced the rows
        already written. Waits at most ``timeout_s`` (a database that is down must not hold the
        whole group's rebalance); past it, the new owner restores an older state and replays
        from an older offset, which rewrites the same rows. The partitions are forgotten
        between two records, never in the middle of one.
        """
        if self._owned is not None:
            self._owned -= partitions
        # The wait runs as a task of its own: cancelling this call (or timing it out) can then
        # never leave the flush lock taken.
        waited = asyncio.ensure_future(self._after_flush())
        done, _ = await asyncio.wait({waited}, timeout=timeout_s)
        if not done:
            waited.cancel()
            logger.warning("a sink flush still running after %.0f s: giving up partitions %s without it",
                           timeout_s, sorted(partitions))
        async with self._lock:
            self.revoke(partitions)

    async def _after_flush(self) -> None:
        async with self._flush_lock:
            pass

    def revoke(self, partitions: set[int]) -> None:
        """Forget partitions handed to another worker, without acking: their new owner replays them.

        Their per-partition gauges go too: a worker reports lag only for what it owns.
        """
        for partition in partitions:
            self.pipeline.drop_partition(partition)
            self._ledger.release(partition)
            self._last_seen.pop(partition, None)
            self.intake.forget(partition)
            for gauge in (self.metrics.consumer_lag, self.metrics.watermark_lag_seconds):
                try:
                    gauge.remove(str(partition))
                except KeyError:  # never set for this partition
                    pass
        if partitions:
            self.metrics.open_windows.set(self.pipeline.open_windows)

    def _absorb(self, step: StepResult, out: _Outputs, topic: str, partition: int, offset: int, *,
                key: bytes | None = None, record_ts_ms: int | None = None, replay_of: bytes | None = None) -> None:
        """Buffer a step's windows and scores for the database, and collect its counts and its
        records for the broker in ``out`` (sent by :meth:`_emit`)."""
        out.readings += step.readings
        out.late += step.late
        out.duplicates += step.duplicates
        out.devices_forgotten += step.devices_forgotten
        sends = out.sends
        for letter in step.dead_letters:
            for reason, count in letter.counts.items():
                out.deadletters[reason] += count
            # The refused record itself, once, under its own key; why in the headers (stream.deadletters).
            sends.append((self._deadletter_topic, key, letter.payload,
                          deadletter_headers(letter, topic=topic, partition=partition, offset=offset,
                                             record_ts_ms=record_ts_ms, replay_of=replay_of)))
        if step.windows:
            out.windows += len(step.windows)
            self._windows.extend(step.windows)
        scores = step.scores
        if self.scoring is not None and step.features:
            model_scores = self.scoring.score_rows(step.features)
            if model_scores:
                scores = [*scores, *model_scores]
                if self.model_metrics is not None:
                    self.model_metrics.scoring_seconds.observe(self.scoring.seconds / len(model_scores))
        scores_topic = self._scores_topic
        for score in scores:
            out.scores[score.model_name] += 1
            sends.append((scores_topic, score.patient_id.encode(), encode_score(score), None))
        self._scores.extend(scores)
        features_topic = self._features_topic
        for row in step.features:
            sends.append((features_topic, row.patient_id.encode(), encode_feature_row(row), None))
        out.feature_rows += len(step.features)
        for patient_id, last_ms in step.stopped:
            out.stopped += 1
            logger.info("data stopped: patient %s silent since %d (event time)", patient_id, last_ms)

    async def _emit(self, out: _Outputs) -> None:
        """Count what :meth:`_absorb` collected, once, and queue its records on the producer
        (under the lock: see :meth:`handle_batch`)."""
        m = self.metrics
        for counter, count in ((m.messages, out.messages), (m.readings, out.readings), (m.late_readings, out.late),
                               (m.duplicates, out.duplicates), (m.devices_forgotten, out.devices_forgotten),
                               (m.windows, out.windows), (m.feature_rows, out.feature_rows),
                               (m.data_stopped, out.stopped)):
            if count:
                counter.inc(count)
        for reason, count in out.deadletters.items():
            m.deadletters.labels(reason).inc(count)
        for model, count in out.scores.items():
            m.scores.labels(model).inc(count)
        send = self._producer.send
        for topic, key, value, headers in out.sends:
            await send(topic, key, value, headers)


class _Outputs:
    """What a batch of records produced beyond the database rows: counts for the metrics and
    records for the broker, collected by :meth:`WorkerRuntime._absorb` and sent by
    :meth:`WorkerRuntime._emit` once per batch."""

    __slots__ = ("messages", "readings", "late", "duplicates", "devices_forgotten", "windows", "feature_rows",
                 "stopped", "deadletters", "scores", "sends")

    def __init__(self) -> None:
        self.messages = self.readings = self.late = self.duplicates = self.devices_forgotten = 0
        self.windows = self.feature_rows = self.stopped = 0
        self.deadletters: Counter[str] = Counter()  # reason -> dead-lettered messages and readings
        self.scores: Counter[str] = Counter()  # model name -> scores
        self.sends: list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]] | None]] = []


def model_scoring(settings: Settings, model_metrics: ModelMetrics | None
                  ) -> tuple[ModelScoring | None, list[SnapshotFeed | PatientFeed]]:
    """The worker's model scoring, on the newest snapshot from the topic and the patients'
    diagnoses, and the feeds that keep both current.

    Without ``VITALS_SNAPSHOT_KEY`` no snapshot can be verified, so none is loaded: the worker
    scores NEWS2 only, and says so.
    """
    if settings.snapshot_key is None:
        logger.warning("VITALS_SNAPSHOT_KEY is not set: no model snapshots can be verified; scoring NEWS2 only")
        return None, []
    name = model_name(settings)
    latest, next_offset = read_latest(settings, name)
    context = PatientContext(parse_inputs(settings.model_patient_inputs))
    patient_offsets = read_patients(settings, context)
    scoring = ModelScoring(Scorer(top_features=5), news2_carry_ms=settings.news2_carry_ms, context=context)

    def swap(snapshot: Snapshot) -> bool:
        swapped = scoring.swap(snapshot)
        if swapped and model_metrics is not None:
            model_metrics.model_version.labels(snapshot.name).set(snapshot.version)
        return swapped

    if latest is not None:
        swap(latest)
        logger.info("scoring with %s (%d examples seen)", latest.label, latest.examples_seen)
    else:
        logger.info("no snapshot of %s yet: model scores start with the trainer's first", name)

    def rejected(reason: str) -> None:
        if model_metrics is not None:
            model_metrics.ops_events.labels("snapshot_rejected").inc()

    return scoring, [SnapshotFeed(settings, name, swap, start_offset=next_offset, on_reject=rejected),
                     PatientFeed(settings, context, start_offsets=patient_offsets)]


def create_app(settings: Settings, *, metrics: PipelineMetrics, model_metrics: ModelMetrics | None = None,
               kafka_metrics: KafkaMetrics | None = None) -> faust.App:
    """Build the Faust app, its topics, state table, agent and timer; nothing connects until it starts."""
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{server}" for server in settings.kafka_bootstrap.split(",")],
        broker_credentials=faust_credentials(settings),
        datadir=str(settings.data_dir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,  # the changelog's, and Faust's internal topics'
        web_enabled=False,
        stream_wait_empty=False,  # held events are replayed by the partition's next owner, never awaited
        consumer_auto_offset_reset="earliest",
        # acks=all: a score, feature or changelog record is acknowledged once min.insync.replicas hold
        # it. faust-streaming turns producer idempotence on only with exactly_once, which we leave
        # off: a retried send may repeat a record, and every effect downstream is idempotent.
        producer_acks=-1,
        producer_linger_ms=20,  # batch the many small score, feature and changelog records
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.session_timeout_s / 4,
    )

    def raw_topic(name: str) -> faust.TopicT:
        return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
                         partitions=settings.partitions)

    readings = raw_topic(settings.readings_topic)
    table = app.Table("state", key_type=bytes, value_type=bytes,  # bytes: raw serializers
                      partitions=settings.partitions,
                      extra_topic_configs={"min.insync.replicas": str(settings.min_insync_replicas)})
    pipeline = VitalsPipeline.from_settings(settings, store=FaustTableStore(table))
    writer = TimescaleWriter.from_settings(settings, metrics=metrics)
    scoring, feeds = model_scoring(settings, model_metrics)
    intake, skipped_reader = ordered_intake(settings, app, settings.readings_topic, metrics.skipped_records)
    runtime = WorkerRuntime(settings, pipeline=pipeline, writer=writer, producer=FaustProducer(app.producer),
                            metrics=metrics, scoring=scoring, model_metrics=model_metrics, intake=intake)
    app.runtime = runtime  # type: ignore[attr-defined]  # for tests and the CLI

    app.task(KafkaWatch(settings, KafkaHealth("worker", kafka_metrics)).run)  # vitals_kafka_up{client="worker"}
    for feed in feeds:
        # Every worker reads the whole snapshots and patients topics (no consumer group), so
        # every scorer hot-swaps to every new version and knows every patient.
        app.task(feed.run)

    @app.agent(readings, name="vitals-windows")
    async def window_readings(stream: faust.StreamT[bytes]) -> None:
        # An agent is an asynchronous function processing a stream: here, records in; acks
        # are manual because they wait for the database (see module docstring).
        # (Faust hands an agent a Stream; its StreamT type lacks noack and noack_take.)
        # Records come in batches (Faust's noack_take: up to TAKE_RECORDS, or what came within
        # TAKE_WITHIN_S), each its own Faust event, acked by the runtime once committed.
        manual = cast(faust.Stream[bytes], cast(faust.Stream[bytes], stream).noack())
        async for events in manual.noack_take(TAKE_RECORDS, within=TAKE_WITHIN_S):
            await runtime.handle_batch(cast(Sequence[IntakeEvent], events))  # noack_take yields events, typed as values

    def caught_up(partition: int) -> bool:
        tp = TP(settings.readings_topic, partition)
        if tp not in app.consumer.assignment():
            return False
        highwater = app.consumer.highwater(tp)
        held = runtime.held_offset(partition)
        return highwater is not None and held is not None and held + 1 >= highwater

    stalls = StallWatch(STALL_S)

    async def restart_stalled() -> None:
        """Restart a partition assigned here that has records to read and delivered none for
        STALL_S (:mod:`stream.stall`): resume its fetching, or seek its fetcher back to the first
        record the agent lacks when Faust dropped records it had fetched."""
        consumer = app.consumer
        recovery = getattr(app.tables, "recovery", None)  # Faust's TableManagerT does not declare it
        if not getattr(consumer, "flow_active", True) or recovery is None or not recovery.completed.is_set():
            stalls.reset()  # paused on purpose: a rebalance or a table recovery is under way
            return
        now = time.monotonic()
        for tp in consumer.assignment():
            if tp.topic != settings.readings_topic:
                continue
            held = runtime.held_offset(tp.partition)
            expected = held + 1 if held is not None else (committed_offset(consumer, tp) or 0)
            highwater = consumer.highwater(tp)
            if not stalls.stalled(tp.partition, now=now, held=held, expected=expected, highwater=highwater):
                continue
            try:
                fetched: int | None = await asyncio.wait_for(consumer.position(tp), timeout=TICK_S)
            except (TimeoutError, KafkaError):
                fetched = None
            action = remedy(expected=expected, fetched=fetched, agent_busy=runtime.busy)
            if action is None:
                continue
            logger.warning("%s partition %d: no record delivered for %.0f s at offset %d (highwater %s, fetcher at "
                           "%s): %s", tp.topic, tp.partition, STALL_S, expected, highwater, fetched, action)
            logger.debug("%s partition %d stalled: %s", tp.topic, tp.partition, fetch_state(consumer, tp, runtime))
            metrics.stalls.labels(action.label).inc()
            if isinstance(action, Seek):
                await consumer.seek_wait({tp: action.offset})
            consumer.resume_partitions({tp})

    async def close_idle_and_flush() -> None:
        await runtime.tick(caught_up)
        runtime.update_lag(app.consumer, settings.readings_topic)
        await restart_stalled()

    app.timer(interval=TICK_S)(close_idle_and_flush)  # by call: as a decorator (untyped) it would untype the function

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]  # mypy matches no function to mode's SignalHandlerT, even one of its exact shape
    async def on_revoked(app: faust.App, revoked: set[TP], **_: Any) -> None:
        partitions = {tp.partition for tp in revoked if tp.topic == settings.readings_topic}
        for partition in partitions:
            stalls.forget(partition)
        await runtime.on_revoked(partitions, timeout_s=settings.session_timeout_s / 2)

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]  # as on_revoked
    async def on_assigned(app: faust.App, assigned: set[TP], **_: Any) -> None:
        runtime.on_assigned({tp.partition for tp in assigned if tp.topic == settings.readings_topic})

    @app.on_before_shutdown.connect  # type: ignore[arg-type]  # as on_revoked
    async def on_shutdown(app: faust.App, **_: Any) -> None:
        await runtime.flush()
        await writer.close()
        await skipped_reader.close()

    return app


def fetch_state(consumer: Any, tp: TP, runtime: WorkerRuntime) -> str:
    """Where ``tp``'s records stop, for the stall log: Faust's and aiokafka's private state."""
    parts = [f"owned {runtime.owns(tp.partition)}",
             f"faust active {tp in (getattr(consumer, '_active_partitions', None) or ())}",
             f"buffered {tp in getattr(consumer, '_buffered_partitions', ())}",
             f"read offset {getattr(consumer, '_read_offset', {}).get(tp)}",
             f"committed {getattr(consumer, '_committed_offset', {}).get(tp)}",
             f"flow {getattr(consumer, 'flow_active', None)}"]
    try:
        kafka = consumer._thread._consumer  # noqa: SLF001 - diagnostics only
        assignment = kafka._subscription.subscription.assignment  # noqa: SLF001
        state = assignment.state_value(tp)
        fetcher = kafka._fetcher  # noqa: SLF001
        parts += [f"aiokafka position {state.position if state.has_valid_position else None}",
                  f"paused {state.paused}", f"awaiting reset {state.awaiting_reset}",
                  f"prefetched {tp in fetcher._records}", f"in flight {sorted(fetcher._in_flight)}"]  # noqa: SLF001
    except Exception as exc:  # noqa: BLE001 - a diagnostic never breaks the worker
        parts.append(f"aiokafka state unknown ({type(exc).__name__})")
    return ", ".join(parts)
