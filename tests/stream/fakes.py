"""Fakes of the services' seams, for driving their runtimes in process."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FakeClock:
    """A :class:`stream.app.Clock` whose time moves only when a test says so.

    >>> clock = FakeClock(wall_s=1_767_571_200.0)
    >>> clock.advance(1.5)
    >>> clock.monotonic(), clock.time()
    (1001.5, 1767571201.5)
    """

    wall_s: float  # epoch seconds
    now_s: float = 1_000.0  # monotonic seconds

    def monotonic(self) -> float:
        return self.now_s

    def time(self) -> float:
        return self.wall_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds
        self.wall_s += seconds
