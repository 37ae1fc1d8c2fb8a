"""Per-device rate limit: a token bucket per device that refuses, rather than delays, an upload.

Each device saves up to ``burst`` tokens, earns ``rate`` tokens a second and spends one per
upload. An upload that finds no token is refused with the seconds until the next one, which
the gateway sends as ``Retry-After`` with 429. (The load generator's
:class:`simulators.load.TokenBucket` paces a sender instead: it always succeeds and says how
long to wait. Same arithmetic, opposite use.)

Memory stays bounded by the devices active in the last ``burst / rate`` seconds: a bucket that
has refilled is the same as a new one, so it is dropped when the table grows (:meth:`prune`).
The clock is the caller's (monotonic seconds), so the limiter is plain arithmetic to test.

Examples
--------
>>> limiter = RateLimiter(rate=2.0, burst=3)
>>> [limiter.acquire("dev-1", 0.0) for _ in range(4)]
[0.0, 0.0, 0.0, 0.5]
>>> limiter.acquire("dev-2", 0.0)  # another device has its own bucket
0.0
>>> limiter.acquire("dev-1", 0.5)  # half a second earns one token
0.0
>>> limiter.acquire("dev-1", 0.5)
0.5
>>> retry_after_s(0.5), retry_after_s(2.01)
(1, 3)
"""

from __future__ import annotations

import math

#: The table is swept of refilled buckets when it holds at least this many.
MIN_PRUNE_SIZE = 1024


class RateLimiter:
    """Token buckets keyed by device id.

    Parameters
    ----------
    rate
        Tokens (uploads) earned per second, positive and finite.
    burst
        Most tokens a device saves up; a new or quiet device may make this many uploads at once.
    """

    def __init__(self, *, rate: float, burst: int) -> None:
        if not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"rate must be a positive number of uploads per second, got {rate!r}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1 upload, got {burst!r}")
        self.rate = float(rate)
        self.burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}  # device -> (tokens, at_s)
        self._prune_at = MIN_PRUNE_SIZE

    def __len__(self) -> int:
        return len(self._buckets)

    def acquire(self, key: str, now_s: float) -> float:
        """Spend one of ``key``'s tokens: 0.0 if there was one, else the seconds until there is.

        A refused upload spends nothing, so a device that keeps retrying too early is not
        pushed further back than the rate says.
        """
        tokens, at_s = self._buckets.get(key, (self.burst, now_s))
        tokens = min(self.burst, tokens + max(0.0, now_s - at_s) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now_s)
            if len(self._buckets) >= self._prune_at:
                self.prune(now_s)
            return 0.0
        self._buckets[key] = (tokens, now_s)
        return (1.0 - tokens) / self.rate

    def prune(self, now_s: float) -> int:
        """Drop the buckets that have refilled (they equal new ones); return how many.

        >>> limiter = RateLimiter(rate=1.0, burst=2)
        >>> limiter.acquire("a", 0.0), limiter.acquire("b", 5.0)
        (0.0, 0.0)
        >>> limiter.prune(5.5), len(limiter)
        (1, 1)
        """
        full = [key for key, (tokens, at_s) in self._buckets.items()
                if tokens + max(0.0, now_s - at_s) * self.rate >= self.burst]
        for key in full:
            del self._buckets[key]
        self._prune_at = max(MIN_PRUNE_SIZE, 2 * len(self._buckets))
        return len(full)


def retry_after_s(wait_s: float) -> int:
    """``Retry-After`` for a wait: whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(wait_s - 1e-9))
