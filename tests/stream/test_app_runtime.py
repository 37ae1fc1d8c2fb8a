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

    async def read(self, partition: int, patient: str, minute: int, *, offset: int | None = None) -> Event:
        """One device message per minute, at the next offset (or ``offset``): a full set of vitals, scored by
        NEWS2."""
        if offset is None:
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


def rig(store: DictStore | None = None, **overrides: float) -> Rig:
    """A runtime on ``store`` (a fresh one when omitted: pass another rig's to restore its changelog)."""
    settings = Settings(**{"readings_topic": READINGS, "window_ms": MIN, "grace_ms": 30_000, "idle_timeout_s": 30.0,
                           "sink_flush_s": 1.0, "sink_batch_rows": 1_000, **overrides})
    log, store = Log(), store if store is not None else DictStore()
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


# Rebalances: a partition revoked from one runtime mid-window and assigned to another, which
# restores the partition's state from the changelog (the first runtime's store) and replays it
# from the committed offset, must write the rows an uninterrupted runtime writes, each once.

PATIENTS = {0: "pt-1", 1: "pt-2"}  # one patient per partition


def _uninterrupted(minutes: int) -> Rig:
    async def run() -> Rig:
        r = rig()
        for minute in range(minutes):
            for partition, patient in PATIENTS.items():
                await r.read(partition, patient, minute)
        r.clock.advance(31.0)
        await r.runtime.tick()  # idle: the last windows close
        await r.runtime.flush()
        return r

    return asyncio.run(run())


def _committed(r: Rig, partition: int) -> int:
    """The offset a partition's next owner resumes at: one past the last acked (records are acked in order)."""
    return max((o for p, o in acks(r) if p == partition), default=-1) + 1


def _rows(*rigs: Rig) -> tuple[dict[tuple[str, int], WindowFeatures], dict[tuple[str, int, str], RiskScore]]:
    windows: dict[tuple[str, int], WindowFeatures] = {}
    scores: dict[tuple[str, int, str], RiskScore] = {}
    for r in rigs:
        for key, window in r.writer.windows.items():
            assert windows.setdefault(key, window) == window, f"{key} written twice with different values"
        for skey, score in r.writer.scores.items():
            assert scores.setdefault(skey, score) == score, f"{skey} scored twice with different values"
    return windows, scores


@pytest.mark.parametrize("flush_before_revoke", [True, False])
def test_a_partition_revoked_mid_window_and_restored_elsewhere_from_the_changelog_writes_the_same_rows(
        flush_before_revoke: bool) -> None:
    minutes = 8
    reference = _uninterrupted(minutes)

    async def run() -> tuple[Rig, Rig]:
        a = rig()
        for minute in range(5):
            for partition, patient in PATIENTS.items():
                await a.read(partition, patient, minute)
        if flush_before_revoke:
            await a.runtime.flush()  # minutes 0-2 written, their records acked, the state saved
        await a.runtime.on_revoked({1}, timeout_s=1.0)  # minute 4 of partition 1 is mid-window
        assert a.runtime.held_offset(1) is None and a.runtime.held_offset(0) == 4
        b = rig(store=DictStore())
        b.store.data.update(a.store.data)  # the changelog as the new owner restores it
        resume = _committed(a, 1)
        for minute in range(resume, minutes):  # offset = minute on partition 1
            await b.read(1, PATIENTS[1], minute, offset=minute)
        for minute in range(5, minutes):
            await a.read(0, PATIENTS[0], minute)
        for r in (a, b):
            r.clock.advance(31.0)
            await r.runtime.tick()
            await r.runtime.flush()
        return a, b

    a, b = asyncio.run(run())
    assert _committed(a, 1) == (3 if flush_before_revoke else 0)
    # a writes partition 1's windows it closed before the revocation (buffered ones too); b writes them
    # again from the replay, with the same values.
    assert {p for p, _ in a.writer.windows} == {"pt-1", "pt-2"}
    assert {p for p, _ in b.writer.windows} == {"pt-2"}
    assert _rows(a, b) == _rows(reference)
    assert len(_rows(reference)[0]) == len(PATIENTS) * minutes
    # Each runtime acks only what it owns, each record once: partition 1's records up to the revocation
    # by a, the rest by b.
    assert sorted(o for p, o in acks(a) if p == 0) == list(range(minutes))
    assert sorted(o for p, o in acks(a) + acks(b) if p == 1) == list(range(minutes))
    assert all(e.acked <= 1 for r in (a, b) for e in r.events)


def test_a_revocation_waits_for_the_flush_under_way_so_the_new_owner_restores_the_state_it_saved() -> None:
    async def run() -> Rig:
        r = rig()
        for minute in range(4):
            await r.read(1, "pt-2", minute)
        flush = asyncio.get_running_loop().create_task(r.runtime.flush())
        await asyncio.sleep(0)  # the flush has taken its batch and is writing
        await r.runtime.on_revoked({1}, timeout_s=5.0)
        assert flush.done() and "w:1" in r.store.data  # the state is saved before the partition leaves
        return r

    r = asyncio.run(run())
    assert acks(r) == [(1, 0), (1, 1)]


def test_a_revocation_does_not_wait_past_its_timeout_for_a_flush_that_hangs() -> None:
    async def run() -> None:
        r = rig()
        await r.read(1, "pt-2", 0)
        hang = asyncio.Event()
        r.writer.write_many = lambda windows, scores: hang.wait()  # type: ignore[method-assign,assignment,return-value]  # a database that never answers
        await r.read(1, "pt-2", 2)
        flush = asyncio.get_running_loop().create_task(r.runtime.flush())
        await asyncio.sleep(0)
        await r.runtime.on_revoked({1}, timeout_s=0.05)
        assert r.runtime.held_offset(1) is None
        flush.cancel()

    asyncio.run(run())


def test_a_worker_reports_lag_only_for_the_partitions_it_owns() -> None:
    class Consumer:
        def highwater(self, tp: object) -> int:
            return 10

    async def run() -> Rig:
        r = rig()
        await r.read(0, "pt-1", 0)
        await r.read(1, "pt-2", 0)
        r.runtime.update_lag(Consumer(), READINGS)  # type: ignore[arg-type]  # only highwater is used
        await r.runtime.on_revoked({1}, timeout_s=1.0)
        r.runtime.update_lag(Consumer(), READINGS)  # type: ignore[arg-type]  # as above
        return r

    r = asyncio.run(run())
    lag = r.runtime.metrics.consumer_lag
    samples = {s.labels["partition"]: s.value for m in lag.collect() for s in m.samples}
    assert samples == {"0": 9.0}
    watermarks = {s.labels["partition"] for m in r.runtime.metrics.watermark_lag_seconds.collect() for s in m.samples}
    assert watermarks == {"0"}
    open_windows = [s.value for m in r.runtime.metrics.open_windows.collect() for s in m.samples]
    assert open_windows == [1.0]  # partition 0's window; partition 1's went with the partition


def test_a_record_fetched_before_the_rebalance_that_took_its_partition_is_dropped_unacked() -> None:
    async def run() -> Rig:
        r = rig()
        r.runtime.on_assigned({0, 1})
        for minute in range(3):
            await r.read(1, "pt-2", minute)
        await r.runtime.on_revoked({1}, timeout_s=1.0)
        stale = await r.read(1, "pt-2", 3)  # it was in Faust's buffers when the rebalance began
        assert r.runtime.held_offset(1) is None and stale.acked == 0
        r.runtime.on_assigned({0, 1})  # given back: its consumer resumes at the committed offset, 0
        for minute in range(4):
            await r.read(1, "pt-2", minute, offset=minute)
        await r.runtime.flush()
        return r

    r = asyncio.run(run())
    assert r.runtime.held_offset(1) == 3
    assert acks(r) == [(1, 0), (1, 1)]  # the replayed records of minutes 0 and 1, once each
    assert sorted(start for _, start in r.writer.windows) == [START_MS, START_MS + MIN]
