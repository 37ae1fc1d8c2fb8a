"""The Faust worker: a thin adapter that feeds Kafka records to the pure core and writes out.

The agent decodes nothing itself. For every record it calls :class:`~stream.pipeline.VitalsPipeline`,
sends dead letters to their topic, and buffers closed windows and scores for the sink.

Offsets follow the sink, not the consumer: the agent reads with acks disabled and holds each
event until every window it fed is committed to the database; only then is it acked, and Faust
commits only an unbroken run of acked offsets. A worker that dies — even by SIGKILL — therefore
restarts from an offset whose windows are not yet in the database, replays them, and the
idempotent writes make the replay add nothing twice.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import faust
from faust.types import TP, EventT

from sinks.metrics import PipelineMetrics
from sinks.timescale import TimescaleWriter
from stream.events import DeadLetter, RiskScore, WindowFeatures
from stream.pipeline import StepResult, VitalsPipeline
from stream.settings import Settings
from stream.wire import encode_score

logger = logging.getLogger(__name__)

#: How often the worker checks for idle partitions and due flushes, seconds.
TICK_S = 0.5


def deadletter_record(letter: DeadLetter, *, topic: str, partition: int, offset: int) -> bytes:
    """The dead-letter topic's JSON record: reason, detail, source position and the payload.

    >>> rec = deadletter_record(DeadLetter("not_json", "bad", b"\\xff"), topic="t", partition=1, offset=9)
    >>> json.loads(rec)["payload_base64"]
    '/w=='
    """
    body: dict[str, Any] = {"schema": "vitalrisk.deadletter/1", "reason": letter.reason, "detail": letter.detail,
                            "source": {"topic": topic, "partition": partition, "offset": offset}}
    try:
        body["payload"] = letter.payload.decode()
    except UnicodeDecodeError:
        body["payload_base64"] = base64.b64encode(letter.payload).decode()
    return json.dumps(body, separators=(",", ":")).encode()


@dataclass(slots=True)
class _Held:
    """Events read from one partition whose windows are not yet committed, in offset order."""

    events: deque[EventT] = field(default_factory=deque)
    last_seen: float = 0.0  # monotonic seconds of the last record


class WorkerRuntime:
    """State of one worker process between Faust and the core: held events and the sink buffer."""

    def __init__(self, settings: Settings, *, pipeline: VitalsPipeline, writer: TimescaleWriter,
                 deadletters: faust.TopicT, scores: faust.TopicT, metrics: PipelineMetrics) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.writer = writer
        self.deadletters = deadletters
        self.scores_topic = scores
        self.metrics = metrics
        self._held: dict[int, _Held] = {}
        self._windows: list[WindowFeatures] = []
        self._scores: list[RiskScore] = []
        self._last_flush = time.monotonic()

    async def handle(self, event: EventT) -> None:
        """Process one record; flush when the buffer is full."""
        message = event.message
        started = time.perf_counter()
        timestamp_ms = int(message.timestamp * 1000) if message.timestamp else None
        step = self.pipeline.on_message(message.value, partition=message.partition, offset=message.offset,
                                        record_ts_ms=timestamp_ms)
        self.metrics.processing_seconds.observe(time.perf_counter() - started)
        held = self._held.setdefault(message.partition, _Held())
        held.events.append(event)
        held.last_seen = time.monotonic()
        self.metrics.messages.inc()
        await self._absorb(step, message.topic, message.partition, message.offset)
        if len(self._windows) + len(self._scores) >= self.settings.sink_batch_rows:
            await self.flush()

    async def tick(self) -> None:
        """Close idle partitions' windows and flush when the flush interval has passed."""
        now = time.monotonic()
        for partition, held in self._held.items():
            if now - held.last_seen >= self.settings.idle_timeout_s and self.pipeline.low_offset(partition) is not None:
                logger.info("partition %d idle for %.0f s: closing its windows", partition, now - held.last_seen)
                await self._absorb(self.pipeline.close_partition(partition), "", partition, -1)
        if now - self._last_flush >= self.settings.sink_flush_s:
            await self.flush()

    async def flush(self) -> None:
        """Commit the buffered rows, then ack every event no open window still needs."""
        windows, scores = self._windows, self._scores
        self._windows, self._scores = [], []
        if windows or scores:
            started = time.perf_counter()
            try:
                inserted = await self.writer.write_many(windows, scores)
            except BaseException:
                self._windows, self._scores = windows + self._windows, scores + self._scores
                self.metrics.sink_errors.inc()
                raise
            self.metrics.sink_flush_seconds.observe(time.perf_counter() - started)
            self.metrics.sink_rows.labels("features").inc(sum(len(w.metrics) for w in windows))
            self.metrics.sink_rows.labels("risk_scores").inc(len(scores))
            logger.debug("sink committed %d windows, %d scores (%d new rows)", len(windows), len(scores), inserted)
        # Dead letters and scores must be on the broker before their source offsets may be committed.
        await self.deadletters.app.producer.flush()
        for partition, held in self._held.items():
            low = self.pipeline.low_offset(partition)
            while held.events and (low is None or held.events[0].message.offset < low):
                held.events.popleft().ack()
        self.metrics.open_windows.set(self.pipeline.open_windows)
        self._last_flush = time.monotonic()

    def revoke(self, partitions: set[int]) -> None:
        """Forget partitions handed to another worker, without acking: their new owner replays them."""
        for partition in partitions:
            self.pipeline.drop_partition(partition)
            self._held.pop(partition, None)

    async def _absorb(self, step: StepResult, topic: str, partition: int, offset: int) -> None:
        self.metrics.readings.inc(step.readings)
        self.metrics.late_readings.inc(step.late)
        for letter in step.dead_letters:
            self.metrics.deadletters.labels(letter.reason).inc()
            await self.deadletters.send(value=deadletter_record(letter, topic=topic, partition=partition,
                                                               offset=offset))
        if step.windows:
            self.metrics.windows.inc(len(step.windows))
            self._windows.extend(step.windows)
        for score in step.scores:
            self.metrics.scores.labels(score.model_name).inc()
            await self.scores_topic.send(key=score.patient_id.encode(), value=encode_score(score))
        self._scores.extend(step.scores)


def create_app(settings: Settings, *, metrics: PipelineMetrics) -> faust.App:
    """Build the Faust app, its topics, agent and timer; nothing connects until the worker starts."""
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{server}" for server in settings.kafka_bootstrap.split(",")],
        datadir=str(settings.data_dir),
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        web_enabled=False,
        stream_wait_empty=False,  # held events are replayed by the partition's next owner, never awaited
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
    )
    readings = app.topic(settings.readings_topic, key_type=bytes, value_type=bytes,
                         key_serializer="raw", value_serializer="raw", partitions=settings.partitions)
    deadletters = app.topic(settings.deadletter_topic, value_type=bytes, value_serializer="raw",
                            partitions=settings.partitions)
    scores = app.topic(settings.scores_topic, key_type=bytes, value_type=bytes, key_serializer="raw",
                       value_serializer="raw", partitions=settings.partitions)
    writer = TimescaleWriter(settings.database_url)
    runtime = WorkerRuntime(settings, pipeline=VitalsPipeline.from_settings(settings), writer=writer,
                            deadletters=deadletters, scores=scores, metrics=metrics)
    app.runtime = runtime  # type: ignore[attr-defined]  # for tests and the CLI

    @app.agent(readings, name="vitals-windows")
    async def window_readings(stream: faust.StreamT[bytes]) -> None:
        # An agent is an asynchronous function processing a stream: here, records in; acks
        # are manual because they wait for the database (see module docstring).
        async for event in stream.noack().events():
            await runtime.handle(event)

    @app.timer(interval=TICK_S)
    async def close_idle_and_flush() -> None:
        await runtime.tick()

    @app.on_partitions_revoked.connect
    async def on_revoked(app: faust.App, revoked: set[TP], **_: Any) -> None:
        runtime.revoke({tp.partition for tp in revoked if tp.topic == settings.readings_topic})

    @app.on_before_shutdown.connect
    async def on_shutdown(app: faust.App, **_: Any) -> None:
        await runtime.flush()
        await writer.close()

    return app
