"""Records taken in batches give what records taken one at a time give (stream.app handle_batch).

The same records, split into batches of any sizes, must produce the same rows, the same
records on the broker (dead letters included, in the same order), the same saved state and the
same acks as feeding them one by one: a batch changes when the outputs are sent, never what
they are.
"""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from kernel.wire import encode_device_message
from tests.stream.test_app_runtime import MIN, START_MS, Event, Rig, acks, rig


def _records(r: Rig, plan: list[tuple[int, int, int]]) -> list[Event]:
    """One record per ``(partition, patient, minute)`` of ``plan``, at each partition's next offset; every
    fifth a record that is not JSON (a dead letter)."""
    events: list[Event] = []
    offsets: dict[int, int] = {}
    for index, (partition, patient, minute) in enumerate(plan):
        offset = offsets.get(partition, 0)
        offsets[partition] = offset + 1
        t = START_MS + minute * MIN
        raw = b"not json" if index % 5 == 4 else encode_device_message(
            device_id=f"dev-{patient}", patient_id=f"pt-{patient}", seq=index, sent_at=t,
            readings=[("heart_rate", t + 1_000, 70.0 + minute), ("respiratory_rate", t + 2_000, 16.0 + patient),
                      ("oxygen_saturation", t, 97.0), ("body_temperature", t, 37.0),
                      ("systolic_blood_pressure", t, 120.0)])
        events.append(Event(r.log, partition, offset, raw, f"pt-{patient}".encode(), t / 1000 + 0.5))
    return events


async def _run(plan: list[tuple[int, int, int]], sizes: list[int]) -> Rig:
    r = rig()
    events = _records(r, plan)
    at, turn = 0, 0
    while at < len(events):
        size = sizes[turn % len(sizes)] if sizes else 1
        await r.runtime.handle_batch(events[at:at + size])
        at, turn = at + size, turn + 1
    await r.runtime.flush()
    return r


plans = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 3), st.integers(0, 12)), min_size=1, max_size=40).map(
    lambda plan: sorted(plan, key=lambda p: p[2]))  # minutes mostly in order; grace takes the rest


@settings(max_examples=60, deadline=None)
@given(plan=plans, sizes=st.lists(st.integers(1, 17), min_size=1, max_size=5))
def test_batch_sizes_never_change_rows_outputs_state_or_acks(plan, sizes) -> None:
    one = asyncio.run(_run(plan, []))
    batched = asyncio.run(_run(plan, sizes))
    assert batched.writer.windows == one.writer.windows
    assert batched.writer.scores == one.writer.scores
    assert batched.producer.delivered == one.producer.delivered
    assert batched.store.data == one.store.data
    assert acks(batched) == acks(one)
    assert all(e.acked <= 1 for e in batched.events)


def test_a_batch_holds_records_of_a_partition_taken_away_unprocessed() -> None:
    async def run() -> Rig:
        r = rig()
        events = _records(r, [(0, 1, 0), (1, 2, 0), (0, 1, 1), (1, 2, 1)])
        r.runtime.on_assigned({0})  # partition 1 went to another worker before the batch arrived
        await r.runtime.handle_batch(events)
        await r.runtime.flush()
        return r

    r = asyncio.run(run())
    assert r.runtime.held_offset(0) == 1 and r.runtime.held_offset(1) is None
    assert all(w.patient_id == "pt-1" for w in r.writer.windows.values())


def test_a_buffer_twice_full_stops_the_batch_until_its_flush_went_through() -> None:
    async def run() -> tuple[Rig, Exception | None]:
        r = rig(sink_batch_rows=2)
        events = _records(r, [(0, 1, minute) for minute in range(12)])
        r.writer.failures = 1  # the database is down for the first flush
        try:
            await r.runtime.handle_batch(events)
        except Exception as exc:  # noqa: BLE001 - the test looks at which
            return r, exc
        return r, None

    r, error = asyncio.run(run())
    assert type(error).__name__ == "SinkUnavailable"
    held = r.runtime.held_offset(0)
    assert held is not None and held < 11  # the records after the backpressure point were not taken
    assert acks(r) == []
