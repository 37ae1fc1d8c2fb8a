"""The worker's runtime in process: a fake clock, a recording producer and an in-memory writer, no services.

Records go in through :meth:`WorkerRuntime.handle` as Faust would hand them over; the tests
check that a record is acked only once every window it fed is written (and its outputs and
state are on the broker), that a writer that fails acks nothing and loses nothing, and that the
injected clock alone decides when an idle partition's windows close and when the sink flushes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
from faust.types import Message
from prometheus_client import CollectorRegistry

from kernel.events import RiskScore, WindowFeatures
from kernel.settings import Settings
from kernel.wire import encode_device_message
from sinks.errors import SinkRejected, SinkUnavailable
from sinks.metrics import PipelineMetrics
from stream.app import WorkerRuntime
from stream.pipeline import VitalsPipeline
from stream.state import DictStore
from tests.stream.fakes import FakeClock

START_MS = 1_767_571_200_000  # 2026-01-05T00:00Z, a minute boundary
MIN = 60_000
READINGS = "test.readings"


@dataclass
class Log:
    """Everything that happened, in order: writes, drains, acks."""

    entries: list[tuple[str, object]] = field(default_factory=list)

    def of(self, kind: str) -> list[object]:
        return [what for k, what in self.entries if k == kind]


@dataclass
class RecordingProducer:
    """Keeps what was sent; a drain puts it 'on the broker'."""

    log: Log
    pending: list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]] | None]] = field(default_factory=list)
    delivered: list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]] | None]] = field(default_factory=list)

    async def send(self, topic: str, key: bytes | None, value: bytes,
                   headers: list[tuple[str, bytes]] | None) -> None:
        self.pending.append((topic, key, value, headers))

    async def drain(self) -> None:
        self.delivered += self.pending
        self.pending = []
        self.log.entries.append(("drain", len(self.delivered)))

    def topics(self) -> list[str]:
        return [topic for topic, *_ in self.delivered]


@dataclass
class MemoryWriter:
    """An idempotent in-memory sink: rows keyed as the database keys them; may fail or refuse."""

    log: Log
    windows: dict[tuple[str, int], WindowFeatures] = field(default_factory=dict)
    scores: dict[tuple[str, int, str], RiskScore] = field(default_factory=dict)
    failures: int = 0  # the next this many writes fail (the database is down)
    refuse: set[str] = field(default_factory=set)  # patients whose rows the database refuses
    calls: int = 0

    async def write_many(self, windows: Sequence[WindowFeatures], scores: Sequence[RiskScore]) -> int:
        self.calls += 1
        await asyncio.sleep(0)  # a real write yields to the loop
        if self.failures:
            self.failures -= 1
            raise SinkUnavailable("the database is down (test)")
        if any(item.patient_id in self.refuse for item in (*windows, *scores)):
            raise SinkRejected("new row violates check constraint (test)")
        before = len(self.windows) + len(self.scores)
        self.windows.update({(w.patient_id, w.start_ms): w for w in windows})
        self.scores.update({(s.patient_id, s.window_start_ms, s.model_name): s for s in scores})
        self.log.entries.append(("write", sorted({w.start_ms for w in windows})))
        return len(self.windows) + len(self.scores) - before


class Event:
    """A record as Faust's agent hands it over: a message and an ack."""

    def __init__(self, log: Log, partition: int, offset: int, value: bytes, key: bytes, timestamp_s: float) -> None:
        self.message = Message(READINGS, partition, offset, timestamp_s, 1, [], key, value, None)
        self._log = log
        self.acked = 0

    def ack(self) -> bool:
        self.acked += 1
        self._log.entries.append(("ack", (self.message.partition, self.message.offset)))
        return True


@dataclass
class Rig:
    runtime: WorkerRuntime
    clock: FakeClock
    producer: RecordingProducer
    writer: MemoryWriter
    store: DictStore
    log: Log
    events: list[Event] = field(default_factory=list)

    async def read(self, partition: int, patient: str, minute: int) -> Event:
        """One device message per minute, at the next offset: a full set of vitals, scored by NEWS2."""
        offset = sum(1 for e in self.events if e.message.partition == partition)
        t = START_MS + minute * MIN
        raw = encode_device_message(device_id=f"dev-{patient}", patient_id=patient, seq=minute, sent_at=t,
                                    readings=[("heart_rate", t, 70.0 + minute), ("respiratory_rate", t, 16.0),
                                              ("oxygen_saturation", t, 97.0), ("body_temperature", t, 37.0),
                                              ("systolic_blood_pressure", t, 120.0)])
        event = Event(self.log, partition, offset, raw, patient.encode(), (START_MS + minute * MIN) / 1000 + 0.5)
        self.events.append(event)
        await self.runtime.handle(event)  # shaped like Faust's event
        return event


def rig(**overrides: float) -> Rig:
    settings = Settings(**{"readings_topic": READINGS, "window_ms": MIN, "grace_ms": 30_000, "idle_timeout_s": 30.0,
                           "sink_flush_s": 1.0, "sink_batch_rows": 1_000, **overrides})
    log, store = Log(), DictStore()
    clock = FakeClock(wall_s=START_MS / 1000 + 86_400.0)  # a day after the readings: none is in the future
    producer, writer = RecordingProducer(log), MemoryWriter(log)
    runtime = WorkerRuntime(settings, pipeline=VitalsPipeline.from_settings(settings, store=store), writer=writer,
                            producer=producer, metrics=PipelineMetrics(CollectorRegistry()), clock=clock)
    return Rig(runtime, clock, producer, writer, store, log)


def acks(r: Rig) -> list[tuple[int, int]]:
    return [what for what in r.log.of("ack")]


def test_records_are_acked_only_after_the_windows_they_fed_are_written_and_their_outputs_drained() -> None:
    async def run() -> Rig:
        r = rig()
        for minute in range(4):  # the watermark (newest minus 30 s grace) closes minutes 0 and 1
            await r.read(0, "pt-1", minute)
        assert r.log.entries == [] and r.producer.pending  # scores and features sent, nothing acked
        await r.runtime.flush()
        return r

    r = asyncio.run(run())
    assert sorted(start for _, start in r.writer.windows) == [START_MS, START_MS + MIN]
    assert acks(r) == [(0, 0), (0, 1)]  # offsets 2 and 3 still feed open windows
    # Rows, then the outputs, then (after the state is saved) the changelog, then the acks.
    assert [kind for kind, _ in r.log.entries] == ["write", "drain", "drain", "ack", "ack"]
    settings = r.runtime.settings
    assert set(r.producer.topics()) == {settings.scores_topic} and not r.producer.pending
    assert sorted(start for _, start, _ in r.writer.scores) == [START_MS, START_MS + MIN]
    assert "w:0" in r.store.data and "p:pt-1" in r.store.data  # the state that produced the rows, saved after them
    assert all(e.acked <= 1 for e in r.events)


def test_a_writer_that_fails_acks_nothing_saves_no_state_and_the_next_flush_writes_and_acks_it_all() -> None:
    async def run() -> Rig:
        r = rig()
        for minute in range(4):
            await r.read(0, "pt-1", minute)
        r.writer.failures = 2
        for _ in range(2):
            with pytest.raises(SinkUnavailable):
                await r.runtime.flush()
            assert acks(r) == [] and r.writer.windows == {} and r.store.data == {}
        await r.read(0, "pt-1", 4)  # a record read between the failures closes minute 2 too
        await r.runtime.flush()
        return r

    r = asyncio.run(run())
    assert r.writer.calls == 3
    assert sorted(start for _, start in r.writer.windows) == [START_MS, START_MS + MIN, START_MS + 2 * MIN]
    assert acks(r) == [(0, 0), (0, 1), (0, 2)]  # in offset order, each once
    assert all(e.acked <= 1 for e in r.events) and "w:0" in r.store.data


def test_a_flush_that_fails_while_records_keep_coming_keeps_them_all_in_order() -> None:
    async def run() -> Rig:
        r = rig()
        for minute in range(3):
            await r.read(0, "pt-1", minute)
        r.writer.failures = 1
        flush = asyncio.get_running_loop().create_task(r.runtime.flush())
        await asyncio.sleep(0)  # the flush has taken its batch and is writing
        for minute in range(3, 6):
            await r.read(0, "pt-1", minute)
        with pytest.raises(SinkUnavailable):
            await flush
        assert acks(r) == []
        await r.runtime.flush()
        return r

    r = asyncio.run(run())
    assert acks(r) == [(0, o) for o in range(4)]  # minutes 0-3 closed; 4 and 5 still open


def test_an_idle_partition_closes_its_windows_when_the_injected_clock_says_so_and_only_if_caught_up() -> None:
    async def run() -> Rig:
        r = rig()
        await r.read(0, "pt-1", 0)
        await r.read(0, "pt-1", 1)  # watermark 30 s: nothing closed
        r.clock.advance(29.0)
        await r.runtime.tick(lambda partition: True)
        assert r.writer.windows == {} and acks(r) == []  # flushed (sink_flush_s passed): nothing to write or ack
        r.clock.advance(1.0)
        await r.runtime.tick(lambda partition: False)  # idle, but the consumer is behind: not silence
        assert r.writer.windows == {}
        r.clock.advance(1.0)
        await r.runtime.tick(lambda partition: True)
        return r

    r = asyncio.run(run())
    assert sorted(start for _, start in r.writer.windows) == [START_MS, START_MS + MIN]
    assert acks(r) == [(0, 0), (0, 1)]


def test_the_sink_flushes_when_the_injected_clock_passes_sink_flush_s() -> None:
    async def run() -> Rig:
        r = rig(sink_flush_s=5.0)
        for minute in range(3):
            await r.read(0, "pt-1", minute)
        r.clock.advance(4.0)
        await r.runtime.tick()
        assert r.writer.calls == 0
        r.clock.advance(1.0)
        await r.runtime.tick()
        return r

    r = asyncio.run(run())
    assert r.writer.calls == 1 and acks(r) == [(0, 0)]


def test_a_revoked_partition_is_forgotten_unacked_and_its_next_assignment_starts_afresh() -> None:
    async def run() -> Rig:
        r = rig()
        for minute in range(3):
            await r.read(0, "pt-1", minute)
        r.runtime.revoke({0})
        await r.runtime.flush()
        assert acks(r) == [] and r.runtime.held_offset(0) is None
        await r.read(0, "pt-1", 1)  # assigned here again: its consumer resumes at the committed offset
        return r

    r = asyncio.run(run())
    assert acks(r) == []  # the window already buffered is written (idempotent), its records replayed unacked
    assert r.runtime.held_offset(0) == 3


def test_rows_the_database_refuses_are_quarantined_as_dead_letters_and_the_rest_acked() -> None:
    async def run() -> Rig:
        r = rig()
        for minute in range(3):
            await r.read(0, "pt-1", minute)
            await r.read(1, "pt-bad", minute)
        r.writer.refuse = {"pt-bad"}
        await r.runtime.flush()
        return r

    r = asyncio.run(run())
    assert {k[0] for k in r.writer.windows} == {"pt-1"}
    quarantined = [(key, headers) for topic, key, _, headers in r.producer.delivered
                   if topic == r.runtime.settings.deadletter_topic]
    assert quarantined and all(key == b"pt-bad" for key, _ in quarantined)
    assert sorted(acks(r)) == [(0, 0), (1, 0)]
