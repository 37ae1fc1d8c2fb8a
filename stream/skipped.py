"""Records the Faust consumer skipped, read straight from the broker (see :mod:`stream.offsets`).

Both Faust apps (the worker and the alerter) check their records' offsets with an
:class:`~stream.offsets.OffsetSequencer`; the offsets it reports skipped are read here, with an
aiokafka consumer of this module's own (assigned, no consumer group), and handed back shaped
like Faust's events, whose ``ack`` goes to Faust's consumer so its commits stay an unbroken run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from stream.offsets import OffsetSequencer
from kernel.kafka_security import aiokafka_options
from kernel.settings import Settings

if TYPE_CHECKING:  # Faust is imported where an app is built: the CLI's other commands stay light
    import faust
    from faust.types import TP, Message


logger = logging.getLogger(__name__)


class IntakeEvent(Protocol):
    """What the intake hands on: a Faust event, or a record read back from the broker, each
    with its message and an ack that goes to the app's consumer."""

    @property
    def message(self) -> Message: ...

    def ack(self) -> bool: ...


class OrderedIntake:
    """A Faust app's records in unbroken offset order per partition: the sequencer, where each
    partition's consumption resumed, and the reader of records the consumer skipped.

    Parameters
    ----------
    committed
        A partition's committed offset (``None`` when unknown).
    read_skipped
        Reads the given offsets of a partition from the broker (:meth:`SkippedRecords.read`).
    on_skipped
        Called with the partition and how many records were skipped (a metric).
    """

    def __init__(self, *, committed: Callable[[int], int | None] = lambda partition: None,
                 read_skipped: Callable[[str, int, range], Awaitable[list[IntakeEvent]]] | None = None,
                 on_skipped: Callable[[int, int], None] = lambda partition, n: None) -> None:
        self.sequencer = OffsetSequencer()
        self._committed = committed
        self._read_skipped = read_skipped or cannot_read
        self._on_skipped = on_skipped

    def assigned(self, partition: int) -> None:
        """Call before the first record of a partition since it was assigned."""
        self.sequencer.assigned(partition, committed=self._committed(partition))

    def forget(self, partition: int) -> None:
        self.sequencer.forget(partition)

    async def events(self, event: IntakeEvent) -> list[IntakeEvent]:
        """The events to process for ``event``: any the consumer skipped before it, read from the
        broker, then itself; none when it is a re-read of one already processed."""
        message = event.message
        missed = self.sequencer.admit(message.partition, message.offset)
        if missed is None:
            return []
        if not missed:
            return [event]
        read = await self._read_skipped(message.topic, message.partition, missed)
        if read:  # none: the offsets are before the log's start (retention deleted them), not skipped
            logger.warning("%s partition %d: the consumer skipped offsets %d-%d; read them from the broker",
                           message.topic, message.partition, read[0].message.offset, missed.stop - 1)
            self._on_skipped(message.partition, len(read))
        return [*read, event]


async def cannot_read(topic: str, partition: int, offsets: range) -> list[IntakeEvent]:
    raise RuntimeError(f"{topic}/{partition}: offsets {offsets.start}-{offsets.stop - 1} were skipped by the "
                       "consumer and no reader of skipped records is wired")


class SkippedRecords:
    """Reads records the Faust consumer skipped straight from the broker, with an aiokafka
    consumer of its own (assigned, no group), as events whose ack goes to Faust's consumer —
    so its commits stay an unbroken run of offsets."""

    TIMEOUT_S = 30.0

    def __init__(self, settings: Settings, app: faust.App) -> None:
        self.settings = settings
        self.app = app
        self._consumer: Any = None

    async def read(self, topic: str, partition: int, offsets: range) -> list[IntakeEvent]:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        if self._consumer is None:
            self._consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap,
                                              enable_auto_commit=False, client_id=f"{self.settings.app_id}-refetch",
                                              **aiokafka_options(self.settings))
            await self._consumer.start()
        tp = TopicPartition(topic, partition)
        self._consumer.assign([tp])
        # Offsets before the log's start were deleted by retention, not skipped: a new group's
        # consumer starts there (auto_offset_reset earliest).
        offsets = range(max(offsets.start, (await self._consumer.beginning_offsets([tp]))[tp]), offsets.stop)
        if not offsets:
            return []
        self._consumer.seek(tp, offsets.start)
        records: dict[int, Any] = {}
        deadline = time.monotonic() + self.TIMEOUT_S
        while len(records) < len(offsets):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{topic}/{partition}: could not read skipped offsets "
                                   f"{offsets.start}-{offsets.stop - 1} within {self.TIMEOUT_S:.0f} s")
            batch = await self._consumer.getmany(tp, timeout_ms=500, max_records=len(offsets))
            for record in batch.get(tp, []):
                if record.offset in offsets:
                    records[record.offset] = record
                elif record.offset >= offsets.stop and len(records) < len(offsets):
                    missing = sorted(set(offsets) - set(records))
                    raise RuntimeError(f"{topic}/{partition}: offsets {missing} are gone from the log")
        return [_SkippedEvent(self.app.consumer, records[o]) for o in offsets]

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()


class _SkippedEvent:
    """A record read by :class:`SkippedRecords`, shaped like the Faust event the runtime holds."""

    __slots__ = ("message", "_consumer")

    def __init__(self, consumer: Any, record: Any) -> None:
        from faust.types import TP, Message

        tp = TP(record.topic, record.partition)
        self.message = Message(record.topic, record.partition, record.offset, record.timestamp / 1000,
                               record.timestamp_type, record.headers, record.key, record.value, record.checksum,
                               tp=tp)
        self._consumer = consumer

    def ack(self) -> bool:
        return bool(self._consumer.ack(self.message))


def committed_offset(consumer: Any, tp: TP) -> int | None:
    """The offset ``tp``'s consumption resumed at, as Faust read it from the broker when the
    partition was assigned: 0 when nothing was committed, since both Faust apps then read from the
    log's start (``consumer_auto_offset_reset="earliest"``; :meth:`SkippedRecords.read` starts at
    the log's first offset). Faust keeps it in a private mapping; without it (``None``) the
    sequencer takes the first record as it comes."""
    offsets = getattr(consumer, "_committed_offset", None)
    if offsets is None:
        return None
    offset = offsets.get(tp)
    if offset is None:
        return 0
    return offset if isinstance(offset, int) and offset >= 0 else None


def ordered_intake(settings: Settings, app: faust.App, topic: str,
                   skipped_counter: Any) -> tuple[OrderedIntake, SkippedRecords]:
    """The intake of ``topic``'s records in a Faust ``app``, resuming at Faust's committed offsets,
    counting skipped records per partition in ``skipped_counter`` (a Prometheus counter labelled
    by partition); close the returned reader at shutdown."""
    from faust.types import TP

    reader = SkippedRecords(settings, app)
    intake = OrderedIntake(committed=lambda partition: committed_offset(app.consumer, TP(topic, partition)),
                           read_skipped=reader.read,
                           on_skipped=lambda partition, n: skipped_counter.labels(str(partition)).inc(n))
    return intake, reader
