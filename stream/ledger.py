"""Hold → commit → ack: a record is acked only once the database commit that covers it went through.

Both Faust services read with acks off and commit what their records caused to PostgreSQL in
batches (:mod:`stream.app`, :mod:`stream.alerts.service`); Faust commits a partition's offsets
only up to an unbroken run of acked records, so acking after the database commit makes the
offsets follow the database. This module is that bookkeeping, once.

:meth:`AckLedger.hold` keeps each partition's records in offset order — the order
:class:`stream.skipped.OrderedIntake` hands them over, with nothing skipped (:mod:`stream.offsets`).
Before a commit, :meth:`AckLedger.take` claims from the front of each partition the records the
commit covers: all of them, or those before the lowest offset whose effects are not in the
batch yet (the worker's open windows). Once the commit went through, :meth:`Claim.ack` acks
them, in order, each once; when it failed, :meth:`Claim.restore` puts them back in front of
their partition, where the next commit takes them again. Records held while a commit runs stay
behind the claimed ones; claims restored in any order leave every partition in offset order.
A partition handed to another worker is :meth:`released <AckLedger.release>` without acking
its held records: its next owner replays them. A claim settled after the release acks none of
the partition's records either: the consumer forgot the partition's offsets when it gave it up,
and an ack reaching it then would open a second, stale run of offsets that its commits could
never get past once the partition came back.

Nothing here knows Kafka, Faust or the database: a record is anything with an ``ack()``.

Examples
--------
>>> class Record:
...     def __init__(self, offset: int) -> None:
...         self.offset = offset
...     def ack(self) -> None:
...         print("ack", self.offset)
>>> ledger = AckLedger()
>>> ledger.assign(0)
>>> for offset in (7, 8, 9):
...     ledger.hold(0, offset, Record(offset))
>>> claim = ledger.take(before=lambda partition: 9)  # offset 9 still feeds an open window
>>> claim.restore()  # the commit failed: nothing is acked, 7 and 8 are held again
>>> claim = ledger.take(before=lambda partition: 9)
>>> claim.ack()  # the commit went through
ack 7
ack 8
>>> ledger.held(0), ledger.last_offset(0)
(1, 9)
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterator
from itertools import count
from operator import itemgetter
from typing import Generic, Protocol, TypeVar


class Ackable(Protocol):
    """A record the ledger holds: acking it lets the consumer commit its offset."""

    def ack(self) -> object:
        """Mark the record done (Faust's ``Event.ack``); what it returns is ignored."""
        ...


R = TypeVar("R", bound=Ackable)
#: What a claim took: partition -> (the partition's incarnation, its ``(offset, record)`` pairs in order).
_Taken = dict[int, tuple[int, list[tuple[int, R]]]]


class _Partition(Generic[R]):
    """One assigned partition: its held ``(offset, record)`` pairs in offset order."""

    __slots__ = ("incarnation", "records", "last_offset")

    def __init__(self, incarnation: int) -> None:
        self.incarnation = incarnation  # tells a re-assignment from the assignment a claim was taken in
        self.records: deque[tuple[int, R]] = deque()
        self.last_offset: int | None = None


class Claim(Generic[R]):
    """The records :meth:`AckLedger.take` took for one commit, per partition in offset order.

    Settle it once: :meth:`ack` after the commit went through, or :meth:`restore` after it
    failed. A claim never settled (the process is going down) acks nothing.
    """

    __slots__ = ("_taken", "_put_back", "_current", "_settled")

    def __init__(self, taken: _Taken[R], put_back: Callable[[_Taken[R]], None],
                 current: Callable[[int], int | None]) -> None:
        self._taken = taken
        self._put_back = put_back  # the ledger's, for restore
        self._current = current  # a partition's incarnation in the ledger now (None: released)
        self._settled = False

    def __len__(self) -> int:
        return sum(len(pairs) for _, pairs in self._taken.values())

    def __iter__(self) -> Iterator[R]:
        """The records, partition by partition, each partition's in offset order."""
        for _, pairs in self._taken.values():
            for _, record in pairs:
                yield record

    def offsets(self, partition: int) -> list[int]:
        """The offsets taken from ``partition``, in order."""
        taken = self._taken.get(partition)
        return [] if taken is None else [offset for offset, _ in taken[1]]

    def ack(self) -> None:
        """Ack every record, in order: call it once the commit that covers them went through.

        Records of a partition released since (even when assigned here again) are not acked:
        their effects are committed, and the partition's next owner replays them, which
        rewrites the same rows.

        Raises
        ------
        ValueError
            The claim was settled already (acked, or restored).
        """
        self._settle()
        for partition, (incarnation, pairs) in self._taken.items():
            if self._current(partition) == incarnation:
                for _, record in pairs:
                    record.ack()

    def restore(self) -> None:
        """Hold the records again, in front of their partitions: the commit failed.

        Nothing is acked. Records of a partition released since are dropped (its next owner
        replays them), even when the partition was assigned here again.

        Raises
        ------
        ValueError
            The claim was settled already (acked, or restored).
        """
        self._settle()
        self._put_back(self._taken)

    def _settle(self) -> None:
        if self._settled:
            raise ValueError("a claim is settled once: it was acked or restored already")
        self._settled = True


class AckLedger(Generic[R]):
    """Per assigned partition, the records read and not yet acked, in offset order."""

    def __init__(self) -> None:
        self._partitions: dict[int, _Partition[R]] = {}
        self._incarnations = count()

    def __contains__(self, partition: object) -> bool:
        return partition in self._partitions

    def partitions(self) -> list[int]:
        """The assigned partitions, in the order they were assigned."""
        return list(self._partitions)

    def assign(self, partition: int) -> None:
        """Start holding ``partition``'s records (before its first record since it was assigned).

        Raises
        ------
        ValueError
            The partition is assigned already.
        """
        if partition in self._partitions:
            raise ValueError(f"partition {partition} is assigned already: release it first")
        self._partitions[partition] = _Partition(next(self._incarnations))

    def release(self, partition: int) -> None:
        """Forget a partition handed to another worker, without acking: its next owner replays it.

        A claim taken before keeps its records: acked if its commit goes through, dropped if
        it is restored.
        """
        self._partitions.pop(partition, None)

    def hold(self, partition: int, offset: int, record: R) -> None:
        """Hold ``record``, read at ``offset`` of ``partition``, until a commit covers it.

        Raises
        ------
        ValueError
            The partition is not assigned, or ``offset`` is not above the last one held in it
            (records must come in offset order, as :class:`stream.skipped.OrderedIntake`
            hands them over).
        """
        part = self._partitions.get(partition)
        if part is None:
            raise ValueError(f"partition {partition} is not assigned: assign it before holding its records")
        if part.last_offset is not None and offset <= part.last_offset:
            raise ValueError(f"partition {partition}: offset {offset} held after offset {part.last_offset}; "
                             "records must be held in increasing offset order")
        part.records.append((offset, record))
        part.last_offset = offset

    def held(self, partition: int) -> int:
        """How many of ``partition``'s records are held (not taken by a claim)."""
        part = self._partitions.get(partition)
        return 0 if part is None else len(part.records)

    def last_offset(self, partition: int) -> int | None:
        """Offset of the last record held from ``partition`` since it was assigned, ``None`` before the first."""
        part = self._partitions.get(partition)
        return None if part is None else part.last_offset

    def take(self, before: Callable[[int], int | None] | None = None) -> Claim[R]:
        """Claim the records a commit about to start covers.

        Parameters
        ----------
        before
            A partition's lowest offset whose effects are not in the commit yet (``None``: no
            such offset). The records before it are taken; without it, every held record is.
        """
        taken: _Taken[R] = {}
        for partition, part in self._partitions.items():
            records = part.records
            low = None if before is None else before(partition)
            if low is None:
                pairs = list(records)
                records.clear()
            else:
                pairs = []
                while records and records[0][0] < low:
                    pairs.append(records.popleft())
            if pairs:
                taken[partition] = (part.incarnation, pairs)
        return Claim(taken, self._put_back, self._incarnation)

    def _incarnation(self, partition: int) -> int | None:
        part = self._partitions.get(partition)
        return None if part is None else part.incarnation

    def _put_back(self, taken: _Taken[R]) -> None:
        for partition, (incarnation, pairs) in taken.items():
            part = self._partitions.get(partition)
            if part is None or part.incarnation != incarnation:
                continue
            records = part.records
            if not records or pairs[-1][0] < records[0][0]:
                records.extendleft(reversed(pairs))  # the usual case: one claim at a time
            else:  # a claim taken after this one was restored first: merge, to keep offset order
                part.records = deque(heapq.merge(pairs, records, key=itemgetter(0)))
