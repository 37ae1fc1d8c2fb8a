"""Devices: sampling rates, ranges and units, and the SpO2 skin-tone bias."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulators.cohort import DEFAULT_START_MS, MS_PER_DAY, CohortConfig, population
from simulators.deterioration import Incidence
from simulators.devices import DeviceSchedule
from kernel.vocabulary import METRICS
from tests.simulators.helpers import device_message_problems, device_messages, run

HOUR = 3_600_000
MINUTE = 60_000
WRIST_METRICS = {"heart_rate", "step_count", "oxygen_saturation", "respiratory_rate", "body_temperature"}
CUFF_METRICS = {"systolic_blood_pressure", "diastolic_blood_pressure", "heart_rate"}


def _by_device(payloads: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = defaultdict(list)
    for p in payloads:
        out[p["device_id"]].append(p)
    return out


def _is_wrist(messages: list[dict]) -> bool:
    return any(r["metric"] == "step_count" for m in messages for r in m["readings"])


@pytest.mark.parametrize(
    "schedule",
    [
        DeviceSchedule(),
        DeviceSchedule(
            heart_rate_interval_ms=15_000, oxygen_saturation_interval_ms=2 * MINUTE,
            respiratory_rate_interval_ms=5 * MINUTE, body_temperature_interval_ms=10 * MINUTE,
        ),
    ],
    ids=["default", "custom"],
)
def test_sampling_rates_match_the_schedule(schedule: DeviceSchedule) -> None:
    """Clean stream: counts per device-hour are exact for per-minute metrics and within one
    sample for slower ones (the device's phase decides whether the hour holds an extra one);
    heart-rate samples are exactly ``heart_rate_interval_ms`` apart; one message a minute."""
    hours = 3
    config = CohortConfig(patients=12, seed=21, duration_ms=hours * HOUR, devices=schedule,
                          incidence=Incidence.none())  # fmt: skip
    wrists = {d: ms for d, ms in _by_device(device_messages(run(config))).items() if _is_wrist(ms)}
    assert len(wrists) == 12
    for messages in wrists.values():
        assert [m["seq"] for m in messages] == list(range(hours * 60))  # one message per minute
        counts = Counter(r["metric"] for m in messages for r in m["readings"])
        assert set(counts) == WRIST_METRICS
        assert counts["heart_rate"] == hours * 3_600_000 // schedule.heart_rate_interval_ms
        assert counts["step_count"] == hours * 60
        for metric, interval in (
            ("oxygen_saturation", schedule.oxygen_saturation_interval_ms),
            ("respiratory_rate", schedule.respiratory_rate_interval_ms),
            ("body_temperature", schedule.body_temperature_interval_ms),
        ):
            assert abs(counts[metric] - hours * HOUR / interval) <= 1, metric
        hr_t = [r["t"] for m in messages for r in m["readings"] if r["metric"] == "heart_rate"]
        assert set(np.diff(hr_t).tolist()) == {schedule.heart_rate_interval_ms}
        for m in messages:  # readings lie in the minute the message covers
            minute = config.start_ms + m["seq"] * MINUTE
            assert all(minute <= r["t"] < minute + MINUTE for r in m["readings"])
            assert minute + MINUTE <= m["sent_at"] < minute + MINUTE + schedule.max_latency_ms


def test_blood_pressure_cuff_measures_at_the_configured_times() -> None:
    schedule = DeviceSchedule(heart_rate_interval_ms=60_000, bp_cuff_fraction=0.5,
                              bp_cuff_times_h=(7.0, 12.0, 17.0))  # fmt: skip
    days = 2  # 04:00 on day one to 20:00 on day two: all six measurements, 6 sd to spare
    config = CohortConfig(patients=24, seed=4, start_ms=DEFAULT_START_MS + 4 * HOUR,
                          duration_ms=40 * HOUR, devices=schedule, incidence=Incidence.none())  # fmt: skip
    cuffs = {d: ms for d, ms in _by_device(device_messages(run(config))).items() if not _is_wrist(ms)}
    assert 5 <= len(cuffs) <= 19  # about half the patients have a cuff
    for messages in cuffs.values():
        assert len(messages) == days * 3
        assert [m["seq"] for m in messages] == list(range(days * 3))
        for m in messages:
            assert {r["metric"] for r in m["readings"]} == CUFF_METRICS
            hour = (m["readings"][0]["t"] - DEFAULT_START_MS) % MS_PER_DAY / HOUR
            assert min(abs(hour - h) for h in (7.0, 12.0, 17.0)) < 2.5
            values = {r["metric"]: r["value"] for r in m["readings"]}
            assert values["diastolic_blood_pressure"] < values["systolic_blood_pressure"]


def test_values_are_in_range_with_the_registry_units_and_plausible() -> None:
    config = CohortConfig(patients=40, seed=13, start_ms=DEFAULT_START_MS + 6 * HOUR,
                          duration_ms=4 * HOUR, incidence=Incidence().scaled(100.0))  # fmt: skip
    values: dict[str, list[float]] = defaultdict(list)
    for payload in device_messages(run(config)):
        assert device_message_problems(payload) == []  # includes METRICS range and unit
        for r in payload["readings"]:
            assert r["unit"] == METRICS[r["metric"]].unit
            values[r["metric"]].append(r["value"])
    assert set(values) == WRIST_METRICS | CUFF_METRICS
    medians = {k: float(np.median(v)) for k, v in values.items()}
    assert 55 <= medians["heart_rate"] <= 95
    assert 92 <= medians["oxygen_saturation"] <= 99
    assert 12 <= medians["respiratory_rate"] <= 20
    assert 36.0 <= medians["body_temperature"] <= 37.5
    assert 110 <= medians["systolic_blood_pressure"] <= 160
    assert 60 <= medians["diastolic_blood_pressure"] <= 95
    assert max(values["step_count"]) > 50  # somebody walks in four waking hours
    for metric in ("heart_rate", "oxygen_saturation", "respiratory_rate", "step_count"):
        assert all(v == int(v) for v in values[metric]), metric


def test_circadian_rhythm_sleep_and_activity_show_in_the_signal() -> None:
    config = CohortConfig(patients=25, seed=17, duration_ms=MS_PER_DAY, incidence=Incidence.none(),
                          devices=DeviceSchedule(heart_rate_interval_ms=60_000))  # fmt: skip
    by_hour: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    walking_hr, resting_hr = [], []
    for payload in device_messages(run(config)):
        values = {r["metric"]: r["value"] for r in payload["readings"]}
        hour = (payload["readings"][0]["t"] - config.start_ms) // HOUR
        for metric, value in values.items():
            by_hour[metric][hour].append(value)
        if "step_count" in values:
            (walking_hr if values["step_count"] >= 60 else resting_hr).append(values["heart_rate"])
    mean = {m: {h: np.mean(v) for h, v in hours.items()} for m, hours in by_hour.items()}
    assert mean["heart_rate"][3] < mean["heart_rate"][15] - 5  # asleep at 03:00
    assert mean["body_temperature"][4] < mean["body_temperature"][17] - 0.3
    assert mean["step_count"][3] < 0.5 < mean["step_count"][11]
    assert np.mean(walking_hr) > np.mean(resting_hr) + 10
    daily_steps = sum(sum(v) for v in by_hour["step_count"].values()) / 60
    assert 1_500 < daily_steps < 8_000


def _spo2_by_patient(config: CohortConfig) -> dict[str, list[float]]:
    out: dict[str, list[float]] = defaultdict(list)
    for payload in device_messages(run(config)):
        for r in payload["readings"]:
            if r["metric"] == "oxygen_saturation":
                out[payload["patient_id"]].append(r["value"])
    return out


def test_spo2_bias_shifts_measured_spo2_for_dark_skin_only() -> None:
    base = dict(patients=80, seed=31, duration_ms=HOUR, incidence=Incidence.none(),
                devices=DeviceSchedule(heart_rate_interval_ms=60_000))  # fmt: skip
    on = run(CohortConfig(**base, spo2_skin_bias=True))
    off = run(CohortConfig(**base, spo2_skin_bias=False))
    tone = {p.patient_id: p.skin_tone for p in population(CohortConfig(**base))}
    shift: dict[int, list[float]] = defaultdict(list)
    for m_on, m_off in zip(device_messages(on), device_messages(off)):
        assert m_on["device_id"] == m_off["device_id"] and m_on["seq"] == m_off["seq"]
        for r_on, r_off in zip(m_on["readings"], m_off["readings"]):
            if r_on["metric"] != "oxygen_saturation":
                assert r_on == r_off  # nothing else changes
            else:
                shift[tone[m_on["patient_id"]]].append(r_on["value"] - r_off["value"])
    assert set(shift) == {1, 2, 3, 4, 5, 6}
    assert set(shift[1]) == set(shift[2]) == {0.0}  # I-II: identical readings
    dark = np.mean(shift[5] + shift[6])
    medium = np.mean(shift[3] + shift[4])
    assert 1.5 < dark <= 2.6  # +2.5 points, a little less where readings hit 100 %
    assert 0.6 < medium <= 1.05
    assert min(shift[5] + shift[6]) >= 0.0


@settings(max_examples=10, deadline=None)
@given(offset=st.floats(-5.0, 5.0), tone=st.integers(1, 6))
def test_the_bias_table_is_configurable(offset: float, tone: int) -> None:
    table = tuple(offset if t == tone else 0.0 for t in range(1, 7))
    base = dict(patients=12, seed=5, duration_ms=20 * MINUTE, incidence=Incidence.none(),
                devices=DeviceSchedule(heart_rate_interval_ms=60_000),
                skin_tone_weights=(1, 1, 1, 1, 1, 1))  # fmt: skip
    on = _spo2_by_patient(CohortConfig(**base, spo2_bias_by_skin_tone=table))
    off = _spo2_by_patient(CohortConfig(**base, spo2_skin_bias=False))
    for p in population(CohortConfig(**base)):
        diff = np.array(on[p.patient_id]) - np.array(off[p.patient_id])
        if p.skin_tone != tone or offset == 0.0:
            assert (diff == 0).all()
        else:
            assert abs(diff).max() <= abs(offset) + 1.0  # rounding moves a reading by at most one
            assert (diff * np.sign(offset) >= 0).all()  # never against the bias
