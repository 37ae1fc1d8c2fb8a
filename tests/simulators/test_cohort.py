"""The stream as a whole: determinism, order, wire validity, configuration, laziness."""

from __future__ import annotations

import itertools
import time
import tracemalloc
from collections import defaultdict

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulators.cohort import (
    DEFAULT_START_MS,
    MS_PER_DAY,
    CohortConfig,
    SimulatedMessage,
    episodes,
    population,
    simulate,
)
from simulators.deterioration import Incidence
from simulators.devices import DeviceSchedule
from simulators.faults import FaultRates
from tests.simulators.helpers import (
    device_message_problems,
    outcome_problems,
    raw_is_valid,
    run,
)

HOUR = 3_600_000
MINUTE = 60_000


def test_default_start_is_monday_2026_01_05_utc() -> None:
    assert DEFAULT_START_MS == 1_767_571_200_000
    assert CohortConfig().start_ms == DEFAULT_START_MS


def test_same_seed_same_stream_different_seed_different_stream() -> None:
    config = CohortConfig(
        patients=25, seed=11, duration_ms=90 * MINUTE, faults=FaultRates.typical(),
        incidence=Incidence().scaled(200.0),
    )  # fmt: skip
    first, again = run(config), run(config)
    assert first == again
    other = run(CohortConfig(
        patients=25, seed=12, duration_ms=90 * MINUTE, faults=FaultRates.typical(),
        incidence=Incidence().scaled(200.0),
    ))  # fmt: skip
    assert first != other
    assert {m.key for m in first}.isdisjoint({m.key for m in other})
    assert population(config) == population(config)
    assert episodes(config) == episodes(config)


def test_messages_are_in_nondecreasing_sent_order_with_every_fault_on() -> None:
    faults = FaultRates(
        dropout_prob=0.05, duplicate_prob=0.1, out_of_order_prob=0.1, late_prob=0.05,
        malformed_prob=0.05, clock_skew_device_fraction=0.5, silences_per_device_day=10.0,
        silence_mean_min=10.0, device_swaps_per_patient_year=5000.0, motion_artefact_prob=0.1,
        late_delay_min=(5.0, 30.0),
    )  # fmt: skip
    config = CohortConfig(
        patients=40, seed=5, duration_ms=2 * HOUR, faults=faults,
        incidence=Incidence().scaled(300.0), outcome_delay_ms=7 * MINUTE,
    )  # fmt: skip
    messages = run(config)
    sent = [m.sent_ms for m in messages]
    assert sent == sorted(sent)
    assert {m.kind for m in messages} == {"reading", "outcome"}
    # Late messages go out after the period ends, and the stream waits for them.
    assert max(sent) > config.start_ms + config.duration_ms + MINUTE


def test_every_dict_payload_is_valid_and_every_bytes_payload_is_not() -> None:
    config = CohortConfig(
        patients=30, seed=8, start_ms=DEFAULT_START_MS + 7 * HOUR, duration_ms=2 * HOUR,
        faults=FaultRates(malformed_prob=0.2, duplicate_prob=0.1),
        incidence=Incidence().scaled(300.0),
    )  # fmt: skip
    messages = run(config)
    ids = {p.patient_id for p in population(config)}
    raw = 0
    for m in messages:
        assert m.key in ids
        if m.kind == "outcome":
            assert isinstance(m.payload, dict)
            assert outcome_problems(m.payload) == []
            assert m.payload["patient_id"] == m.key
        elif isinstance(m.payload, bytes):
            raw += 1
            assert not raw_is_valid(m.payload), m.payload
        else:
            assert device_message_problems(m.payload) == [], m.payload
            assert m.payload["patient_id"] == m.key
    assert raw > 0


def test_stream_is_lazy_and_memory_stays_bounded() -> None:
    # A year for 1,000 patients: the first minute's messages come at once.
    started = time.perf_counter()
    year = simulate(CohortConfig(patients=1_000, seed=1, duration_ms=365 * MS_PER_DAY))
    first = list(itertools.islice(year, 1_000))
    assert len(first) == 1_000
    assert time.perf_counter() - started < 10.0

    # Peak memory does not grow with the length of the run.
    def peak(hours: int) -> int:
        config = CohortConfig(
            patients=30, seed=2, duration_ms=hours * HOUR,
            devices=DeviceSchedule(heart_rate_interval_ms=60_000),
            faults=FaultRates(late_prob=0.01, duplicate_prob=0.01),
        )  # fmt: skip
        tracemalloc.start()
        try:
            for _ in simulate(config):
                pass
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    assert peak(3) < 1.5 * peak(1)


@pytest.mark.parametrize(
    ("kwargs", "rule"),
    [
        ({"patients": 0}, "patients must be at least 1"),
        ({"seed": -1}, "seed must be a non-negative"),
        ({"start_ms": 1_000}, "start_ms must be .* whole minute"),
        ({"duration_ms": 0}, "duration_ms must be a positive whole number of minutes"),
        ({"duration_ms": 61_000}, "got 61000"),
        ({"outcome_delay_ms": -5}, "outcome_delay_ms must be >= 0"),
        ({"spo2_bias_by_skin_tone": (0.0, 1.0)}, "six offsets"),
        ({"skin_tone_weights": (1, 1, 1, 1, 1, -1)}, "non-negative weights"),
    ],
)
def test_bad_config_raises_value_error_naming_rule_and_value(kwargs: dict, rule: str) -> None:
    with pytest.raises(ValueError, match=rule):
        CohortConfig(**kwargs)


@pytest.mark.parametrize(
    ("factory", "rule"),
    [
        (lambda: Incidence(hf_decompensation=float("nan")), "hf_decompensation must be a finite rate"),
        (lambda: Incidence(self_resolving_fraction=1.5), "self_resolving_fraction must be in"),
        (lambda: FaultRates(duplicate_prob=-0.1), "duplicate_prob is a probability"),
        (lambda: FaultRates(late_delay_min=(1.0, 2.0)), "late_delay_min"),
        (lambda: FaultRates(silence_mean_min=0.0), "silence_mean_min must be > 0"),
        (lambda: DeviceSchedule(body_temperature_interval_ms=90_000), "whole number of minutes"),
        (lambda: DeviceSchedule(max_latency_ms=60_000), "max_latency_ms"),
        (lambda: DeviceSchedule(bp_cuff_fraction=2.0), "bp_cuff_fraction"),
        (lambda: DeviceSchedule(bp_cuff_times_h=(25.0,)), "bp_cuff_times_h"),
    ],
)
def test_bad_parts_raise_value_error(factory, rule: str) -> None:
    with pytest.raises(ValueError, match=rule):
        factory()


def test_non_int_patients_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="patients must be an int"):
        CohortConfig(patients=2.5)


def test_config_is_frozen_and_hashable() -> None:
    config = CohortConfig()
    with pytest.raises(AttributeError):
        config.patients = 3
    assert hash(config) == hash(CohortConfig())


def _check_invariants(config: CohortConfig, messages: list[SimulatedMessage]) -> None:
    sent = [m.sent_ms for m in messages]
    assert sent == sorted(sent)
    seen: dict[tuple[str, int], dict] = {}
    devices_of: dict[str, set[str]] = defaultdict(set)
    for m in messages:
        if m.kind == "outcome":
            assert outcome_problems(m.payload) == []
            continue
        if isinstance(m.payload, bytes):
            assert not raw_is_valid(m.payload)
            continue
        payload = m.payload
        assert device_message_problems(payload) == []
        key = (payload["device_id"], payload["seq"])
        if key in seen:  # only a duplicate may repeat device and seq, and it is identical
            assert seen[key] == payload
        seen[key] = payload
        devices_of[payload["device_id"]].add(payload["patient_id"])
        skew = config.faults.clock_skew_max_ms if config.faults.clock_skew_device_fraction else 0
        for r in payload["readings"]:
            assert config.start_ms - skew <= r["t"] < config.start_ms + config.duration_ms + skew
            assert r["t"] <= payload["sent_at"]
    assert all(len(p) == 1 for p in devices_of.values())  # a device belongs to one patient


fault_rates = st.builds(
    FaultRates,
    dropout_prob=st.floats(0, 0.5),
    silences_per_device_day=st.floats(0, 50),
    silence_mean_min=st.floats(1, 30),
    motion_artefact_prob=st.floats(0, 1),
    duplicate_prob=st.floats(0, 0.5),
    out_of_order_prob=st.floats(0, 0.5),
    late_prob=st.floats(0, 0.5),
    late_delay_min=st.tuples(st.floats(3, 10), st.floats(10, 20)),
    clock_skew_device_fraction=st.floats(0, 1),
    clock_skew_max_ms=st.integers(0, 600_000),
    device_swaps_per_patient_year=st.floats(0, 100_000),
    malformed_prob=st.floats(0, 0.5),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    patients=st.integers(1, 6),
    seed=st.integers(0, 2**32),
    start_minute=st.integers(0, 3 * 1440),
    minutes=st.integers(1, 40),
    hr_interval=st.sampled_from([1_000, 5_000, 15_000, 60_000]),
    faults=fault_rates,
    bias=st.booleans(),
)
def test_any_small_configuration_gives_a_well_formed_stream(
    patients: int, seed: int, start_minute: int, minutes: int, hr_interval: int,
    faults: FaultRates, bias: bool,
) -> None:  # fmt: skip
    config = CohortConfig(
        patients=patients, seed=seed, start_ms=DEFAULT_START_MS + start_minute * MINUTE,
        duration_ms=minutes * MINUTE, faults=faults, spo2_skin_bias=bias,
        devices=DeviceSchedule(heart_rate_interval_ms=hr_interval, bp_cuff_times_h=(0.0, 12.0)),
        incidence=Incidence().scaled(2_000.0),
    )  # fmt: skip
    messages = run(config)
    _check_invariants(config, messages)
    assert messages == run(config)
