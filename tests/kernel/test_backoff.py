"""The one retry schedule (kernel.backoff): bounds, growth, cap and budget, as properties."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, strategies as st

from kernel.backoff import Backoff
from kernel.errors import ConfigurationError

firsts = st.floats(0.001, 5.0)
caps = st.floats(5.0, 120.0)
attempts = st.integers(1, 10 ** 6)
seeds = st.integers(0, 2 ** 32)


@given(firsts, caps, attempts, seeds)
def test_each_delay_is_within_half_to_all_of_its_ceiling(first: float, cap: float, n: int, seed: int) -> None:
    b = Backoff(first, cap, None)
    assert b.ceiling(n) / 2 <= b.delay(n, random.Random(seed)) <= b.ceiling(n)


@given(firsts, caps, attempts)
def test_ceilings_start_at_first_double_and_stop_at_the_cap(first: float, cap: float, n: int) -> None:
    b = Backoff(first, cap, 900)
    assert b.ceiling(1) == first
    assert b.ceiling(n) <= b.ceiling(n + 1) <= cap
    assert b.ceiling(n + 1) == min(cap, 2 * b.ceiling(n)) or b.ceiling(n) == cap


@given(firsts, caps, seeds)
def test_the_same_seed_gives_the_same_delays(first: float, cap: float, seed: int) -> None:
    def run() -> list[float | None]:
        retries = Backoff(first, cap, None).start(now_s=0.0, rng=random.Random(seed))
        return [retries.next_delay(now_s=0.0) for _ in range(20)]

    assert run() == run()


@given(firsts, caps, st.floats(0.0, 600.0), seeds)
def test_a_loop_never_sleeps_past_its_budget_and_gives_up_only_when_it_would(
        first: float, cap: float, budget: float, seed: int) -> None:
    retries = Backoff(first, cap, budget).start(now_s=1_000.0, rng=random.Random(seed))
    now = 1_000.0
    while (delay := retries.next_delay(now_s=now)) is not None:
        assert delay > 0
        now += delay
        assert now <= 1_000.0 + budget
    assert retries.failures >= 1
    assert retries.deadline_s == 1_000.0 + budget


def test_without_a_budget_a_loop_retries_for_ever_at_the_cap() -> None:
    retries = Backoff(0.2, 5.0, None).start(now_s=0.0, rng=random.Random(1))
    delays = [retries.next_delay(now_s=1e9) for _ in range(5_000)]
    assert None not in delays and max(d for d in delays if d is not None) <= 5.0
    assert min(d for d in delays[10:] if d is not None) >= 2.5


def test_a_zero_budget_gives_up_at_the_first_failure() -> None:
    assert Backoff(0.2, 5.0, 0.0).start(now_s=5.0, rng=random.Random(1)).next_delay(now_s=5.0) is None


@pytest.mark.parametrize(("first", "cap", "budget"), [(0.0, 1.0, 1.0), (2.0, 1.0, 1.0), (0.1, 1.0, -1.0)])
def test_a_schedule_that_cannot_work_is_refused(first: float, cap: float, budget: float) -> None:
    with pytest.raises(ConfigurationError, match="0 < first_s <= max_s"):
        Backoff(first, cap, budget)


def test_attempts_count_from_one() -> None:
    with pytest.raises(ValueError, match="from 1"):
        Backoff().ceiling(0)
