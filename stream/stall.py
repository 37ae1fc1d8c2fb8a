"""Partitions whose records stopped reaching the agent, and what brings them back.

Faust can stop a partition's flow in two ways, both seen with two workers of a new group
starting together over records already published:

- it leaves the partition paused after a rebalance: the fetcher waits at the next record and
  fetches nothing, and resuming the partition restarts it;
- it drops records its fetcher already returned: its fetch filter races the partitions it
  pauses while a rebalance's table recovery runs, so records of a paused partition come back
  and are thrown away. The fetcher's position is then past records the agent never got.

Records after a drop show the gap to the ordered intake, which reads it from the broker
(:mod:`stream.skipped`); a drop at the partition's end has no later record, and the partition
waits forever for records the fetcher thinks it delivered. Only seeking back to the first
record the agent lacks brings those back (any it did get come again and the intake drops them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class Resume:
    """Resume fetching the partition: the fetcher is where the agent is, but fetches nothing."""

    label: ClassVar[str] = "resume"  # of vitals_consumer_stalls_total

    def __str__(self) -> str:
        return "resuming it"


@dataclass(frozen=True)
class Seek:
    """Seek the fetcher back to ``offset``: it fetched past records the agent never got."""

    offset: int
    label: ClassVar[str] = "seek"

    def __str__(self) -> str:
        return f"seeking the fetcher back to {self.offset}"


class StallWatch:
    """Per partition: since when it has records to read but delivers none.

    A partition stalls once it has delivered no record for ``stall_s`` while the log holds
    records past the next one the agent needs; it is reported again every ``stall_s`` while it
    stays so.
    """

    def __init__(self, stall_s: float) -> None:
        self.stall_s = stall_s
        self._quiet_since: dict[int, float] = {}
        self._held: dict[int, int | None] = {}  # each partition's last record at the previous check

    def reset(self) -> None:
        """Flow is stopped on purpose (a rebalance or a table recovery): quiet time starts over."""
        self._quiet_since.clear()

    def forget(self, partition: int) -> None:
        self._quiet_since.pop(partition, None)
        self._held.pop(partition, None)

    def stalled(self, partition: int, *, now: float, held: int | None, expected: int,
                highwater: int | None) -> bool:
        """Whether ``partition`` stalled: ``held`` is its last record the agent got (``None``: none
        yet), ``expected`` the next one it needs, ``highwater`` the log's end (``None``: unknown)."""
        moved = partition in self._held and held != self._held[partition]
        self._held[partition] = held
        if moved or highwater is None or expected >= highwater:
            self._quiet_since.pop(partition, None)
            return False
        since = self._quiet_since.setdefault(partition, now)
        if now - since < self.stall_s:
            return False
        self._quiet_since[partition] = now
        return True


def remedy(*, expected: int, fetched: int | None, agent_busy: bool) -> Resume | Seek | None:
    """What restarts a stalled partition whose fetcher is at ``fetched`` (``None``: unknown).

    Past ``expected`` while the agent waits for records, the fetcher's records were dropped on
    the way. While the agent is busy (a flush holding it back), records fetched past ``expected``
    may still be queued for it: nothing is done until it waits again.
    """
    if fetched is not None and fetched > expected:
        return None if agent_busy else Seek(expected)
    return Resume()
