"""The offset sequencer: whatever a lossy consumer skips, the agent processes every record once, in order."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from stream.offsets import OffsetSequencer


@settings(max_examples=300, deadline=None)
@given(end=st.integers(1, 40), committed=st.integers(0, 20), data=st.data())
def test_every_record_is_processed_once_in_order_whatever_the_consumer_skips(end: int, committed: int,
                                                                            data: st.DataObject) -> None:
    """A consumer hands over a partition's records, dropping some and repeating some (a re-read
    after a rebalance); what it skipped is read from the log when a later record shows the gap."""
    committed = min(committed, end - 1)
    seq = OffsetSequencer()
    seq.assigned(0, committed=committed)
    processed: list[int] = []
    offset = committed
    while offset < end:
        event = data.draw(st.integers(0, 19), label="0-3 drop, 4 re-read, else deliver")
        # A skip shows when a later record comes, so the last is never dropped here (a live
        # stream always has a later record).
        if event < 4 and offset < end - 1:
            offset += 1
            continue
        missed = seq.admit(0, offset)
        if missed is not None:
            processed.extend(missed)  # read straight from the log
            processed.append(offset)
        if event == 4:
            offset = data.draw(st.integers(committed, offset), label="re-read from")
        else:
            offset += 1
    assert processed == list(range(committed, end))


def test_a_record_already_processed_is_dropped_and_an_unknown_start_takes_the_first_record() -> None:
    seq = OffsetSequencer()
    seq.assigned(3, committed=None)
    assert [seq.admit(3, o) for o in (17, 18, 18, 16, 19)] == [range(17, 17), range(18, 18), None, None,
                                                                range(19, 19)]
    seq.forget(3)
    seq.assigned(3, committed=5)
    assert seq.admit(3, 7) == range(5, 7)


def test_the_intake_hands_over_skipped_records_read_from_the_log_before_the_record_that_showed_them() -> None:
    import asyncio
    from types import SimpleNamespace

    from stream.skipped import OrderedIntake

    def event(offset: int) -> SimpleNamespace:
        return SimpleNamespace(message=SimpleNamespace(topic="t", partition=2, offset=offset))

    reads: list[tuple[str, int, range]] = []
    skipped: list[tuple[int, int]] = []

    async def read(topic: str, partition: int, offsets: range) -> list[SimpleNamespace]:
        reads.append((topic, partition, offsets))
        return [event(o) for o in offsets]

    intake = OrderedIntake(committed=lambda partition: 8, read_skipped=read,
                           on_skipped=lambda partition, n: skipped.append((partition, n)))
    intake.assigned(2)

    async def offsets(offset: int) -> list[int]:
        return [e.message.offset for e in await intake.events(event(offset))]

    async def run() -> list[list[int]]:
        return [await offsets(o) for o in (11, 12, 9, 13)]

    assert asyncio.run(run()) == [[8, 9, 10, 11], [12], [], [13]]
    assert reads == [("t", 2, range(8, 11))] and skipped == [(2, 3)]
