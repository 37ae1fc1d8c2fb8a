"""The ack ledger: no record acked before the commit that covers it, each acked once after it, order kept."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.ledger import AckLedger, Claim
from stream.offsets import OffsetSequencer

PARTITIONS = (0, 1, 2)


@dataclass
class World:
    """What the commits made durable, and every ack in the order it came."""

    committed: set[Record] = field(default_factory=set)
    acks: list[Record] = field(default_factory=list)


@dataclass(frozen=True, eq=False)  # by identity: after a re-assignment the same offset is read again
class Record:
    world: World
    partition: int
    offset: int
    assignment: int  # which assignment of the partition read it

    def ack(self) -> bool:
        assert self in self.world.committed, f"{self.partition}@{self.offset} acked before its commit"
        self.world.acks.append(self)
        return True


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_acks_follow_commits_exactly_once_in_order_whatever_fails_or_moves(data: st.DataObject) -> None:
    """Records are read, claimed for commits that succeed or fail (several may be under way at
    once, settled in any order), and partitions are revoked and assigned again; a model of what
    each partition must hold checks every claim."""
    world = World()
    ledger: AckLedger[Record] = AckLedger()
    held: dict[int, tuple[int, list[Record]]] = {}  # the model: partition -> (assignment, held records in order)
    assignments = 0
    next_offset = dict.fromkeys(PARTITIONS, 0)
    claims: list[tuple[Claim[Record], list[Record]]] = []  # commits under way
    created: list[Record] = []
    dropped: set[Record] = set()  # never to be acked: their partition went to its next owner
    for _ in range(data.draw(st.integers(0, 60), label="steps")):
        step = data.draw(st.sampled_from(["read", "read", "read", "take", "commit", "fail", "revoke"]))
        if step == "read":
            partition = data.draw(st.sampled_from(PARTITIONS))
            if partition not in ledger:
                ledger.assign(partition)
                assignments += 1
                held[partition] = (assignments, [])
            next_offset[partition] += data.draw(st.integers(1, 3), label="gap")  # rising, not always by 1
            record = Record(world, partition, next_offset[partition], held[partition][0])
            ledger.hold(partition, record.offset, record)
            held[partition][1].append(record)
            created.append(record)
            assert ledger.last_offset(partition) == record.offset
        elif step == "take":
            lows = {p: data.draw(st.none() | st.integers(0, next_offset[p] + 1), label=f"low of {p}") for p in held}
            claim = ledger.take(before=lows.get)
            expected: list[Record] = []
            for partition, (assignment, records) in held.items():
                low = lows[partition]
                covered = [r for r in records if low is None or r.offset < low]
                assert claim.offsets(partition) == [r.offset for r in covered]  # the front, in offset order
                held[partition] = (assignment, records[len(covered):])
                expected.extend(covered)
            assert list(claim) == expected and len(claim) == len(expected)
            claims.append((claim, expected))
        elif step in ("commit", "fail") and claims:
            claim, records = claims.pop(data.draw(st.integers(0, len(claims) - 1), label="which commit ends"))
            acked_before = len(world.acks)
            if step == "commit":
                world.committed.update(records)
                claim.ack()
                # each once, in the claim's order; none of a partition released since (its next owner replays them)
                kept = [r for r in records if held.get(r.partition, (None, []))[0] == r.assignment]
                assert world.acks[acked_before:] == kept
                dropped.update(r for r in records if r not in kept)
            else:
                claim.restore()
                assert len(world.acks) == acked_before  # a failed commit acks nothing...
                for record in records:  # ...and keeps its records for the retry, in offset order
                    assignment, now_held = held.get(record.partition, (None, []))
                    if assignment == record.assignment:
                        now_held.append(record)
                        now_held.sort(key=lambda r: r.offset)
                    else:  # released since: replayed by the partition's next owner, not here
                        dropped.add(record)
            with pytest.raises(ValueError, match="settled once"):
                claim.restore()
        elif step == "revoke" and held:
            partition = data.draw(st.sampled_from(sorted(held)))
            ledger.release(partition)
            dropped.update(held.pop(partition)[1])
            next_offset[partition] = data.draw(st.integers(0, next_offset[partition]), label="next owner from")
        for partition in PARTITIONS:
            assert ledger.held(partition) == len(held.get(partition, (0, []))[1])
    # The commits under way go through, then one that covers everything still held.
    for claim, records in claims:
        world.committed.update(records)
        claim.ack()
        dropped.update(r for r in records if held.get(r.partition, (None, []))[0] != r.assignment)
    last = ledger.take()
    remaining = [r for _, records in held.values() for r in records]
    assert list(last) == remaining
    world.committed.update(remaining)
    last.ack()
    assert sorted(map(id, world.acks)) == sorted(id(r) for r in created if r not in dropped)  # each once


@settings(max_examples=300, deadline=None)
@given(end=st.integers(1, 40), committed=st.integers(0, 20), data=st.data())
def test_with_the_sequencer_acks_are_an_unbroken_run_so_committed_offsets_follow_the_database(
        end: int, committed: int, data: st.DataObject) -> None:
    """A lossy consumer (as in test_offsets) feeds the sequencer, the ledger holds what it admits,
    and commits of what the open windows no longer need run one at a time and sometimes fail.
    Faust commits an unbroken run of acked offsets, so the acks must always be one: then the
    committed offset is exactly what the database holds, and at the end every record is acked once."""
    committed = min(committed, end - 1)
    world = World()
    seq = OffsetSequencer()
    seq.assigned(0, committed=committed)
    ledger: AckLedger[Record] = AckLedger()
    ledger.assign(0)

    def admit(offset: int) -> None:
        missed = seq.admit(0, offset)
        for o in [] if missed is None else [*missed, offset]:
            ledger.hold(0, o, Record(world, 0, o, 1))

    def commit(low: int | None, *, fails: bool) -> None:
        claim = ledger.take(before=lambda partition: low)
        if fails:
            claim.restore()
        else:
            world.committed.update(claim)
            claim.ack()
        assert [r.offset for r in world.acks] == list(range(committed, committed + len(world.acks)))

    offset = committed
    while offset < end:
        event = data.draw(st.integers(0, 19), label="0-3 drop, 4 re-read, 5-7 commit, else deliver")
        if event < 4 and offset < end - 1:
            offset += 1
            continue
        if 5 <= event <= 7:
            low = data.draw(st.none() | st.integers(committed, end), label="lowest offset an open window needs")
            commit(low, fails=data.draw(st.booleans(), label="commit fails"))
            continue
        admit(offset)
        if event == 4:
            offset = data.draw(st.integers(committed, offset), label="re-read from")
        else:
            offset += 1
    commit(None, fails=False)
    assert [r.offset for r in world.acks] == list(range(committed, end))


def test_records_must_come_in_offset_order_into_an_assigned_partition() -> None:
    world = World()
    ledger: AckLedger[Record] = AckLedger()
    with pytest.raises(ValueError, match="not assigned"):
        ledger.hold(0, 5, Record(world, 0, 5, 1))
    ledger.assign(0)
    with pytest.raises(ValueError, match="assigned already"):
        ledger.assign(0)
    ledger.hold(0, 5, Record(world, 0, 5, 1))
    ledger.take().restore()
    with pytest.raises(ValueError, match="increasing offset order"):
        ledger.hold(0, 5, Record(world, 0, 5, 1))
    assert ledger.held(0) == 1 and ledger.last_offset(0) == 5 and ledger.partitions() == [0]
    ledger.release(0)
    assert 0 not in ledger and ledger.last_offset(0) is None and ledger.held(0) == 0
    ledger.assign(0)
    ledger.hold(0, 3, Record(world, 0, 3, 2))  # a new assignment starts where its consumer resumes


def test_a_claim_of_a_partition_released_meanwhile_is_neither_acked_nor_restored() -> None:
    world = World()
    ledger: AckLedger[Record] = AckLedger()
    ledger.assign(0)
    old = [Record(world, 0, o, 1) for o in (4, 5)]
    for r in old:
        ledger.hold(0, r.offset, r)
    failed, succeeded = ledger.take(), None
    ledger.release(0)
    ledger.assign(0)  # assigned here again: consumption resumes at the committed offset
    new = Record(world, 0, 4, 2)
    ledger.hold(0, 4, new)
    failed.restore()
    assert ledger.held(0) == 1  # only the new assignment's record
    succeeded = ledger.take()
    ledger.release(0)
    world.committed.add(new)
    succeeded.ack()
    assert world.acks == []  # the consumer forgot the partition: its next owner replays the record
