"""The stall watch: when a partition counts as stalled, and which remedy restarts it."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from stream.stall import Resume, Seek, StallWatch, remedy


def test_a_partition_that_delivers_nothing_while_records_wait_stalls_after_the_stall_time() -> None:
    watch = StallWatch(5.0)
    assert not watch.stalled(3, now=0.0, held=9, expected=10, highwater=40)
    assert not watch.stalled(3, now=4.9, held=9, expected=10, highwater=40)
    assert watch.stalled(3, now=5.0, held=9, expected=10, highwater=40)
    # Reported again only after another stall time, while it stays stalled.
    assert not watch.stalled(3, now=6.0, held=9, expected=10, highwater=40)
    assert watch.stalled(3, now=10.0, held=9, expected=10, highwater=40)


def test_a_partition_that_never_delivered_a_record_stalls_too() -> None:
    watch = StallWatch(5.0)
    assert not watch.stalled(0, now=0.0, held=None, expected=0, highwater=2_400)
    assert watch.stalled(0, now=5.0, held=None, expected=0, highwater=2_400)


def test_a_record_delivered_starts_the_quiet_time_over() -> None:
    watch = StallWatch(5.0)
    watch.stalled(1, now=0.0, held=9, expected=10, highwater=40)
    assert not watch.stalled(1, now=4.0, held=12, expected=13, highwater=40)  # moved: quiet from the next check
    assert not watch.stalled(1, now=8.0, held=12, expected=13, highwater=40)
    assert not watch.stalled(1, now=12.9, held=12, expected=13, highwater=40)
    assert watch.stalled(1, now=13.0, held=12, expected=13, highwater=40)


def test_a_partition_read_to_its_end_or_of_unknown_end_never_stalls() -> None:
    watch = StallWatch(5.0)
    for now in (0.0, 5.0, 10.0):
        assert not watch.stalled(1, now=now, held=39, expected=40, highwater=40)
        assert not watch.stalled(2, now=now, held=None, expected=0, highwater=None)


def test_flow_stopped_on_purpose_starts_every_quiet_time_over() -> None:
    watch = StallWatch(5.0)
    watch.stalled(1, now=0.0, held=9, expected=10, highwater=40)
    watch.reset()
    assert not watch.stalled(1, now=5.0, held=9, expected=10, highwater=40)
    assert watch.stalled(1, now=10.0, held=9, expected=10, highwater=40)


def test_a_forgotten_partition_starts_over() -> None:
    watch = StallWatch(5.0)
    watch.stalled(1, now=0.0, held=9, expected=10, highwater=40)
    watch.forget(1)
    assert not watch.stalled(1, now=5.0, held=9, expected=10, highwater=40)


def test_a_fetcher_past_the_records_the_agent_lacks_is_sent_back_to_them() -> None:
    # The stall seen with two workers starting together: fetched to the end, nothing delivered.
    assert remedy(expected=0, fetched=2_400, agent_busy=False) == Seek(0)
    assert remedy(expected=57, fetched=58, agent_busy=False) == Seek(57)


def test_a_fetcher_where_the_agent_is_is_resumed() -> None:
    assert remedy(expected=57, fetched=57, agent_busy=False) == Resume()
    assert remedy(expected=57, fetched=None, agent_busy=False) == Resume()
    assert remedy(expected=57, fetched=57, agent_busy=True) == Resume()


def test_records_fetched_while_the_agent_is_busy_may_still_be_queued_for_it() -> None:
    assert remedy(expected=57, fetched=400, agent_busy=True) is None


@given(expected=st.integers(0, 10_000), fetched=st.none() | st.integers(0, 10_000), busy=st.booleans())
def test_a_seek_never_goes_past_the_first_record_the_agent_lacks(expected: int, fetched: int | None,
                                                                 busy: bool) -> None:
    action = remedy(expected=expected, fetched=fetched, agent_busy=busy)
    if isinstance(action, Seek):
        assert action.offset == expected and fetched is not None and fetched > expected and not busy
    elif action is None:
        assert busy and fetched is not None and fetched > expected
