"""The per-device token bucket: never more than burst + rate * t uploads in t seconds, bounded memory."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from gateway.ratelimit import MIN_PRUNE_SIZE, RateLimiter, retry_after_s


@given(rate=st.floats(0.1, 100.0), burst=st.integers(1, 50),
       gaps=st.lists(st.floats(0.0, 2.0), min_size=1, max_size=300))
def test_admitted_uploads_never_exceed_burst_plus_rate_times_elapsed(rate: float, burst: int,
                                                                     gaps: list[float]) -> None:
    limiter = RateLimiter(rate=rate, burst=burst)
    now, admitted = 0.0, 0
    for gap in gaps:
        now += gap
        wait = limiter.acquire("dev-1", now)
        if wait == 0.0:
            admitted += 1
        else:
            assert 0 < wait <= 1 / rate + 1e-9
        assert admitted <= burst + rate * now + 1e-6


@given(rate=st.floats(0.1, 100.0), burst=st.integers(1, 50), drain=st.integers(0, 60))
def test_waiting_retry_after_is_always_enough(rate: float, burst: int, drain: int) -> None:
    limiter = RateLimiter(rate=rate, burst=burst)
    waits = [limiter.acquire("d", 0.0) for _ in range(drain)]
    wait = limiter.acquire("d", 0.0)
    if wait:
        assert limiter.acquire("d", wait + 1e-9) == 0.0
        assert retry_after_s(wait) >= wait
    assert waits.count(0.0) == min(drain, burst)


def test_a_refused_try_does_not_push_the_device_further_back() -> None:
    limiter = RateLimiter(rate=1.0, burst=1)
    assert limiter.acquire("d", 0.0) == 0.0
    assert limiter.acquire("d", 0.2) == pytest.approx(0.8)
    assert limiter.acquire("d", 0.5) == pytest.approx(0.5)  # not 1.3: the refusal spent nothing
    assert limiter.acquire("d", 1.0) == 0.0


def test_memory_is_bounded_by_recently_active_devices() -> None:
    limiter = RateLimiter(rate=10.0, burst=5)  # a bucket refills within 0.5 s
    for i in range(50_000):
        limiter.acquire(f"dev-{i}", i * 0.01)  # 100 new devices a second
    assert len(limiter) <= max(MIN_PRUNE_SIZE, 2 * 100)


def test_bad_parameters_are_refused() -> None:
    for rate, burst in ((0.0, 1), (float("inf"), 1), (float("nan"), 1), (1.0, 0)):
        with pytest.raises(ValueError):
            RateLimiter(rate=rate, burst=burst)
