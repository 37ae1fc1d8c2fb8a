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
