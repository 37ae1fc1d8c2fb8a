"""Idempotency keys and derived sequence numbers: bounded, expiring, and what the worker's window accepts."""

from __future__ import annotations

from collections import OrderedDict

import pytest
from hypothesis import given, strategies as st

from gateway.idempotency import (MAX_SEQ_TIME_MS, RecentKeys, content_digest, content_key, derived_seq,
                                 native_key)
from kernel.wire import MAX_INT64
from stream.pipeline import _first_time

START_MS = 1_767_571_200_000
reading = st.tuples(st.sampled_from(["heart_rate", "oxygen_saturation"]),
                    st.integers(1, 2 * MAX_SEQ_TIME_MS), st.floats(0, 300, allow_nan=False))


@given(st.lists(reading, min_size=1, max_size=20))
def test_derived_seq_is_a_valid_seq_and_stable(readings: list[tuple[str, int, float]]) -> None:
    digest = content_digest("pt-1", "dev-1", readings)
    seq = derived_seq(readings, digest)
    assert 0 <= seq <= MAX_INT64
    assert seq == derived_seq(list(reversed(readings)), content_digest("pt-1", "dev-1", reversed(readings)))


@given(st.lists(st.integers(0, 10_000_000), min_size=2, max_size=50, unique=True))
def test_later_uploads_get_larger_seqs_and_the_worker_window_accepts_each_once(offsets: list[int]) -> None:
    seqs = []
    for offset in sorted(offsets):
        readings = [("heart_rate", START_MS + offset, 70.0)]
        seqs.append(derived_seq(readings, content_digest("pt-1", "dev-1", readings)))
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    window: OrderedDict[str, tuple[int, int]] = OrderedDict()
    assert all(_first_time(window, "dev-1", s) for s in seqs)  # every new upload is accepted ...
    assert not _first_time(window, "dev-1", seqs[-1])  # ... and a copy of the latest is dropped


def test_keys_of_the_two_kinds_never_collide() -> None:
    digest = content_digest("pt-1", "dev-1", [("heart_rate", 1, 70.0)])
    assert native_key("dev-1", 1) != content_key("dev-1", digest)
    assert native_key("dev-1", 1) != native_key("dev-2", 1)


def test_recent_keys_expire_and_stay_within_their_bound() -> None:
    keys = RecentKeys(window_s=10.0, max_keys=100)
    for i in range(1_000):
        keys.add(native_key("d", i), now_s=i * 0.001)
    assert len(keys) == 100 and keys.forgotten == 900
    assert keys.seen(native_key("d", 999), now_s=5.0) and not keys.seen(native_key("d", 0), now_s=5.0)
    assert not keys.seen(native_key("d", 999), now_s=11.0)
    assert len(keys) == 0


def test_re_adding_a_key_renews_it() -> None:
    keys = RecentKeys(window_s=10.0, max_keys=2)
    keys.add(native_key("d", 1), 0.0)
    keys.add(native_key("d", 2), 1.0)
    keys.add(native_key("d", 1), 2.0)
    keys.add(native_key("d", 3), 3.0)  # the oldest now is seq 2
    assert keys.seen(native_key("d", 1), 3.0) and not keys.seen(native_key("d", 2), 3.0)


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        RecentKeys(window_s=0, max_keys=1)
    with pytest.raises(ValueError):
        RecentKeys(window_s=1, max_keys=0)
