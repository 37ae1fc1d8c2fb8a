"""Each partition's records in unbroken offset order: what Faust skips is read straight from the broker.

Faust delivers records at most once around a restart or a rebalance: a record fetched while
the consumer's flow is suspended can be dropped with its offset marked as read, and Faust then
commits past it once later offsets are acknowledged (seen here: a worker restarted after a
SIGKILL received offset 9 of a partition whose committed offset was 8; asking Faust to seek
back did not bring 8 again). For a pipeline whose windows must hold every reading, a record the
agent never saw is silent data loss. :class:`OffsetSequencer` checks each record against the
offset that must come next — the committed offset for the first record after an assignment,
the previous record's offset + 1 after that — and :meth:`~OffsetSequencer.admit` answers with
the offsets skipped before it (usually none), which the worker reads itself and processes
first, or ``None`` for a record already processed.

Examples
--------
>>> seq = OffsetSequencer()
>>> seq.assigned(0, committed=8)
>>> seq.admit(0, 9)
range(8, 9)
>>> seq.admit(0, 10), seq.admit(0, 9)
(range(10, 10), None)
"""

from __future__ import annotations


class OffsetSequencer:
    """Per partition: the offset that must come next."""

    def __init__(self) -> None:
        self._next: dict[int, int] = {}

    def assigned(self, partition: int, *, committed: int | None) -> None:
        """The partition was (re)assigned; consumption resumes at ``committed`` (``None``: unknown,
        so the first record is taken as it comes)."""
        if committed is None:
            self._next.pop(partition, None)
        else:
            self._next[partition] = committed

    def forget(self, partition: int) -> None:
        """The partition was revoked."""
        self._next.pop(partition, None)

    def admit(self, partition: int, offset: int) -> range | None:
        """The offsets skipped before ``offset``, to process before it (an empty range when none
        were); ``None`` when ``offset`` was processed already."""
        expected = self._next.get(partition, offset)
        if offset < expected:
            return None
        self._next[partition] = offset + 1
        return range(expected, offset)
