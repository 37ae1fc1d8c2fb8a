"""The ordered intake (stream/skipped.py): records the consumer skipped are read from the log and handed
over before the record that showed them; no reader wired is an error, not a silent gap."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace

import pytest

from stream.skipped import OrderedIntake, committed_offset


def _event(offset: int, partition: int = 2) -> SimpleNamespace:
    return SimpleNamespace(message=SimpleNamespace(topic="t", partition=partition, offset=offset))


def test_the_intake_hands_over_skipped_records_read_from_the_log_before_the_record_that_showed_them() -> None:
    reads: list[tuple[str, int, range]] = []
    skipped: list[tuple[int, int]] = []

    async def read(topic: str, partition: int, offsets: range) -> list[SimpleNamespace]:
        reads.append((topic, partition, offsets))
        return [_event(o) for o in offsets]

    intake = OrderedIntake(committed=lambda partition: 8, read_skipped=read,
                           on_skipped=lambda partition, n: skipped.append((partition, n)))
    intake.assigned(2)

    async def offsets(offset: int) -> list[int]:
        return [e.message.offset for e in await intake.events(_event(offset))]

    async def run() -> list[list[int]]:
        return [await offsets(o) for o in (11, 12, 9, 13)]

    assert asyncio.run(run()) == [[8, 9, 10, 11], [12], [], [13]]
    assert reads == [("t", 2, range(8, 11))] and skipped == [(2, 3)]


def test_a_skip_with_no_reader_wired_is_an_error_naming_the_offsets() -> None:
    intake = OrderedIntake(committed=lambda partition: 4)
    intake.assigned(0)
    with pytest.raises(RuntimeError, match="offsets 4-6 were skipped"):
        asyncio.run(intake.events(_event(7, partition=0)))


def test_a_revoked_partition_resumes_at_its_committed_offset_when_assigned_again() -> None:
    committed = {1: None}
    intake = OrderedIntake(committed=lambda partition: committed[partition])
    intake.assigned(1)

    def offsets(offset: int) -> list[int]:
        return [e.message.offset for e in asyncio.run(intake.events(_event(offset, partition=1)))]

    assert offsets(30) == [30], "committed offset unknown: the first record is taken as it comes"
    assert offsets(31) == [31] and offsets(30) == []
    intake.forget(1)
    committed[1] = 31
    intake.assigned(1)
    assert offsets(31) == [31], "the record at the committed offset is processed again after the move"


@pytest.mark.parametrize("offsets,expected", [({"tp": 5}, 5), ({"tp": 0}, 0), ({"tp": None}, 0), ({}, 0),
                                              ({"tp": "5"}, None), (None, None)])
def test_the_committed_offset_is_read_from_faust_when_it_holds_one(offsets: dict[str, object] | None,
                                                          expected: int | None) -> None:
    consumer = SimpleNamespace() if offsets is None else SimpleNamespace(_committed_offset=offsets)
    assert committed_offset(consumer, "tp") == expected


def test_nothing_committed_means_the_first_record_is_the_log_s_first() -> None:
    """A new group reads from the log's start (auto_offset_reset earliest): a first record past it shows
    records the consumer skipped (seen with two workers starting together: one got offset 17 first)."""
    reads: list[range] = []

    async def read(topic: str, partition: int, offsets: range) -> list[SimpleNamespace]:
        reads.append(offsets)
        return [_event(o) for o in offsets]

    faust_consumer = SimpleNamespace(_committed_offset=defaultdict(lambda: None))  # Faust's, for a new group
    intake = OrderedIntake(committed=lambda partition: committed_offset(faust_consumer, "tp"), read_skipped=read)
    intake.assigned(2)
    assert [e.message.offset for e in asyncio.run(intake.events(_event(3)))] == [0, 1, 2, 3]
    assert reads == [range(0, 3)]


def test_records_the_log_no_longer_holds_are_not_counted_as_skipped() -> None:
    """Retention moved the log's start to 5: offsets below it were deleted, not skipped."""
    skipped: list[tuple[int, int]] = []

    async def read(topic: str, partition: int, offsets: range) -> list[SimpleNamespace]:
        return [_event(o) for o in offsets if o >= 5]

    intake = OrderedIntake(committed=lambda partition: 0, read_skipped=read,
                           on_skipped=lambda partition, n: skipped.append((partition, n)))
    intake.assigned(2)
    assert [e.message.offset for e in asyncio.run(intake.events(_event(5)))] == [5]
    assert skipped == []
