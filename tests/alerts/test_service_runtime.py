"""The alerter's runtime in process: a fake clock, store and dispatcher, no services.

Scores go in through :meth:`AlerterRuntime.handle` as Faust would hand them over; a record is
acked only once the batch it changed is committed, and its pages reach delivery only then; a
store that fails acks nothing and loses nothing; the injected clock alone decides when the
batch flushes and when acknowledgements are polled.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
from faust.types import Message
from prometheus_client import CollectorRegistry

from kernel.alerts import Page, PatientAlerts, Silence
from kernel.errors import AlertStoreUnavailable
from kernel.events import RiskScore
from kernel.settings import Settings
from kernel.wire import encode_score
from sinks.metrics import AlertMetrics
from stream.alerts.engine import AlertEngine
from stream.alerts.service import AlerterRuntime, policy_from_settings
from tests.alerts.conftest import START_MS, news2_score
from tests.stream.fakes import FakeClock

SCORES = "test.scores"


@dataclass
class FakeStore:
    """Commits batches in memory (or fails), logging each commit."""

    log: list[tuple[str, object]]
    failures: int = 0
    batches: list[Any] = field(default_factory=list)
    polls: int = 0

    async def persist(self, batch: Any) -> set[str]:
        await asyncio.sleep(0)
        if self.failures:
            self.failures -= 1
            raise AlertStoreUnavailable("the database is down (test)")
        self.batches.append(batch)
        self.log.append(("persist", len(batch.states)))
        return {page.notification_id for page, _, _ in batch.pages}

    async def load_states(self, partitions: Any) -> list[tuple[int, PatientAlerts]]:
        return []

    async def active_silences(self) -> list[Silence]:
        self.polls += 1
        return []

    async def acknowledgements_for(self, alert_ids: Any) -> list[tuple[str, str, int]]:
        return []


@dataclass
class FakeDispatcher:
    log: list[tuple[str, object]]

    def submit(self, page: Page, receivers: tuple[str, ...], *, source_ts_ms: int | None) -> None:
        self.log.append(("page", (page.kind, page.action, receivers)))


class FakeRouter:
    def receivers_for(self, severity: str, *, escalate: bool = False) -> tuple[str, ...]:
        return ("pager",)


class Event:
    def __init__(self, log: list[tuple[str, object]], partition: int, offset: int, value: bytes, key: bytes) -> None:
        self.message = Message(SCORES, partition, offset, START_MS / 1000, 1, [], key, value, None)
        self._log = log

    def ack(self) -> bool:
        self._log.append(("ack", (self.message.partition, self.message.offset)))
        return True


@dataclass
class Rig:
    runtime: AlerterRuntime
    clock: FakeClock
    store: FakeStore
    log: list[tuple[str, object]]
    dead_letters: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]]
    offsets: dict[int, int] = field(default_factory=dict)

    async def read(self, score: RiskScore | bytes, partition: int = 0) -> None:
        offset = self.offsets[partition] = self.offsets.get(partition, -1) + 1
        value = score if isinstance(score, bytes) else encode_score(score)
        key = b"pt-x" if isinstance(score, bytes) else score.patient_id.encode()
        await self.runtime.handle(Event(self.log, partition, offset, value, key))

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.log]

    def acks(self) -> list[object]:
        return [what for kind, what in self.log if kind == "ack"]


def rig() -> Rig:
    settings = Settings(scores_topic=SCORES, alerter_flush_s=0.5)
    log: list[tuple[str, object]] = []
    clock, store, dead_letters = FakeClock(wall_s=START_MS / 1000 + 120.0), FakeStore(log), []

    async def send_deadletter(key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        dead_letters.append((key, value, headers))

    runtime = AlerterRuntime(settings, engine=AlertEngine(policy_from_settings(settings)), store=store,
                             dispatcher=FakeDispatcher(log), router=FakeRouter(),
                             metrics=AlertMetrics(CollectorRegistry()), clock=clock, send_deadletter=send_deadletter)
    return Rig(runtime, clock, store, log, dead_letters)


def test_scores_are_acked_only_after_their_batch_is_committed_and_pages_go_to_delivery_after_the_commit() -> None:
    async def run() -> Rig:
        r = rig()
        await r.read(news2_score("pt-1", 1, 7))  # pending
        await r.read(news2_score("pt-1", 2, 8))  # held a minute: firing, a page
        await r.read(news2_score("pt-2", 2, 1), partition=1)
        assert r.log == []
        await r.runtime.flush()
        return r

    r = asyncio.run(run())
    assert r.kinds() == ["persist", "page", "ack", "ack", "ack"]
    assert r.log[1] == ("page", ("news2_high", "firing", ("pager",)))
    assert r.acks() == [(0, 0), (0, 1), (1, 0)]
    assert set(r.store.batches[0].states) == {"pt-1", "pt-2"}


def test_a_store_that_fails_acks_nothing_delivers_nothing_and_the_next_flush_commits_it_all() -> None:
    async def run() -> Rig:
        r = rig()
        await r.read(news2_score("pt-1", 1, 7))
        await r.read(news2_score("pt-1", 2, 8))
        r.store.failures = 1
        with pytest.raises(AlertStoreUnavailable):
            await r.runtime.flush()
        assert r.log == []  # no ack, no page
        await r.read(news2_score("pt-2", 2, 1))  # read after the failure: behind the held ones
        await r.runtime.flush()
        return r

    r = asyncio.run(run())
    assert r.kinds() == ["persist", "page", "ack", "ack", "ack"]
    assert r.acks() == [(0, 0), (0, 1), (0, 2)]
    assert set(r.store.batches[0].states) == {"pt-1", "pt-2"} and len(r.store.batches[0].pages) == 1


def test_a_failed_background_flush_stops_the_agent_with_the_store_error() -> None:
    async def run() -> Rig:
        r = rig()
        r.store.failures = 1
        flusher = asyncio.get_running_loop().create_task(r.runtime.run_flusher())
        await r.read(news2_score("pt-1", 1, 7))
        await r.read(news2_score("pt-1", 2, 8))  # a page wakes the flusher
        await asyncio.wait_for(flusher, 5)
        with pytest.raises(AlertStoreUnavailable, match="alert flush failed"):
            await r.read(news2_score("pt-1", 3, 8))
        return r

    r = asyncio.run(run())
    assert r.acks() == []


def test_the_injected_clock_decides_when_the_batch_flushes_and_acknowledgements_are_polled() -> None:
    async def run() -> Rig:
        r = rig()
        await r.read(news2_score("pt-1", 1, 3))
        await r.runtime.tick()  # the first tick polls at once; the flush is not due yet
        assert r.store.polls == 1 and r.log == []
        r.clock.advance(0.4)
        await r.runtime.tick()
        assert r.store.polls == 1 and r.log == []
        r.clock.advance(0.1)  # alerter_flush_s
        await r.runtime.tick()
        assert r.kinds() == ["persist", "ack"] and r.store.polls == 1
        r.clock.advance(0.5)  # POLL_S since the first poll
        await r.runtime.tick()
        return r

    r = asyncio.run(run())
    assert r.store.polls == 2


def test_an_unreadable_score_is_dead_lettered_and_acked_with_the_next_flush() -> None:
    async def run() -> Rig:
        r = rig()
        await r.read(b"{not json")
        assert len(r.dead_letters) == 1 and r.log == []
        await r.runtime.flush()  # nothing to commit: the record is acked all the same
        return r

    r = asyncio.run(run())
    assert r.log == [("ack", (0, 0))]
    assert r.dead_letters[0][:2] == (b"pt-x", b"{not json")


def test_a_revoked_partition_is_committed_first_and_its_next_records_start_a_new_assignment() -> None:
    async def run() -> Rig:
        r = rig()
        await r.read(news2_score("pt-1", 1, 3))
        await r.runtime.revoke({0})
        assert r.kinds() == ["persist", "ack"]
        await r.read(news2_score("pt-1", 2, 3))  # the partition came back
        await r.runtime.flush()
        return r

    r = asyncio.run(run())
    assert r.acks() == [(0, 0), (0, 1)]
