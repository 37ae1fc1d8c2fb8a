"""The one retry schedule: capped exponential backoff with equal jitter, within a time budget.

Every retry loop in vitalrisk — the database writer, the alert store, the webhook sender — asks
this module how long to wait after a failure, and whether to wait at all. The loops keep what
differs (what counts as transient, what they record, what they raise when they give up); the
schedule is here, once.

After the ``n``-th failure the *ceiling* is ``min(max_s, first_s * 2**(n-1))`` and the delay a
uniform draw in ``[ceiling/2, ceiling]`` ("equal jitter"). The upper half spreads many clients
that failed together (workers reconnecting to a restarted database, one alerter retrying many
pages to a receiver that came back), so they do not retry in lockstep; the lower bound keeps
every wait at least half the ceiling, so a retry is never a hot loop against a server that is
starting up or answering 429. Full jitter (``[0, ceiling]``) spreads a little more but may retry
at once; decorrelated jitter depends on the previous draw, which makes the bounds a caller can
rely on (and test) looser.

A loop gives up when sleeping the next delay would overrun ``give_up_s`` from its first attempt
(``None``: never, which is what a sink wants: its caller stops consuming until the database is
back). Time and randomness come in as arguments: the schedule is pure and a seeded
:class:`random.Random` makes it deterministic.

Examples
--------
>>> b = Backoff(first_s=0.5, max_s=4.0, give_up_s=60.0)
>>> [b.ceiling(n) for n in range(1, 6)]
[0.5, 1.0, 2.0, 4.0, 4.0]
>>> 0.25 <= b.delay(1, random.Random(7)) <= 0.5
True

A loop keeps its progress in :class:`Retries`: after each failure, the delay to sleep, or
``None`` once the budget is spent:

>>> retries = b.start(now_s=100.0, rng=random.Random(7))
>>> 0.25 <= retries.next_delay(now_s=100.1) <= 0.5
True
>>> retries.next_delay(now_s=159.9) is None, retries.failures
(True, 2)
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from kernel.errors import ConfigurationError

#: Past this many doublings every ceiling is ``max_s`` (and ``2.0 ** n`` would overflow).
_MAX_DOUBLINGS = 1000


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff with equal jitter, bounded by a total time budget.

    Parameters
    ----------
    first_s
        Ceiling of the first delay, seconds (> 0).
    max_s
        Largest ceiling, seconds (>= ``first_s``).
    give_up_s
        Budget from the first attempt, seconds (>= 0); ``None`` retries for ever.

    Raises
    ------
    ConfigurationError
        ``first_s`` not in ``(0, max_s]``, or a negative ``give_up_s``.
    """

    first_s: float = 0.5
    max_s: float = 30.0
    give_up_s: float | None = 900.0

    def __post_init__(self) -> None:
        if not 0 < self.first_s <= self.max_s or (self.give_up_s is not None and self.give_up_s < 0):
            raise ConfigurationError(f"a backoff needs 0 < first_s <= max_s and give_up_s >= 0 (or none), got "
                                     f"{self.first_s:g}, {self.max_s:g}, {self.give_up_s}")

    def ceiling(self, attempt: int) -> float:
        """Largest delay after the ``attempt``-th failure (1-based): ``first_s`` doubled, at most ``max_s``."""
        if attempt < 1:
            raise ValueError(f"attempt counts failures from 1, got {attempt}")
        return min(self.max_s, self.first_s * 2.0 ** min(attempt - 1, _MAX_DOUBLINGS))

    def delay(self, attempt: int, rng: random.Random) -> float:
        """A jittered delay in ``[ceiling/2, ceiling]`` after the ``attempt``-th failure."""
        ceiling = self.ceiling(attempt)
        return rng.uniform(ceiling / 2, ceiling)

    def start(self, *, now_s: float, rng: random.Random) -> Retries:
        """The progress of one retry loop whose first attempt is at ``now_s`` (any monotonic clock)."""
        return Retries(self, now_s=now_s, rng=rng)


class Retries:
    """One retry loop's way through a :class:`Backoff`: failures so far and the deadline.

    Made by :meth:`Backoff.start`; not shared between loops.
    """

    __slots__ = ("backoff", "deadline_s", "failures", "_rng")

    def __init__(self, backoff: Backoff, *, now_s: float, rng: random.Random) -> None:
        self.backoff = backoff
        self.deadline_s = None if backoff.give_up_s is None else now_s + backoff.give_up_s
        self.failures = 0
        self._rng = rng

    def next_delay(self, *, now_s: float) -> float | None:
        """Count a failure at ``now_s``; the delay to sleep before the next attempt, or ``None``
        when sleeping it would end past the deadline (give up now)."""
        self.failures += 1
        delay = self.backoff.delay(self.failures, self._rng)
        if self.deadline_s is not None and now_s + delay > self.deadline_s:
            return None
        return delay
