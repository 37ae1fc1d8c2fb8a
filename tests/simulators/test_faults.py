"""Faults: each appears at its configured rate, and a clean stream has none."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulators.cohort import DEFAULT_START_MS, CohortConfig, SimulatedMessage, population, simulate
from simulators.deterioration import Incidence
from simulators.devices import DeviceSchedule
from simulators.faults import FaultRates, MINUTES_PER_YEAR, malformed_payload, plan_delivery
from tests.simulators.helpers import DEVICE_ID, device_message_problems, raw_is_valid, within

MINUTE = 60_000
HOUR = 60 * MINUTE
# Fast streams for counting: one heart-rate reading a minute, no cuffs, no episodes.
FAST = DeviceSchedule(heart_rate_interval_ms=60_000, bp_cuff_fraction=0.0)


def _config(patients: int, minutes: int, faults: FaultRates, seed: int = 1) -> CohortConfig:
    return CohortConfig(patients=patients, seed=seed, duration_ms=minutes * MINUTE, devices=FAST,
                        faults=faults, incidence=Incidence.none())  # fmt: skip


def _minute_of(payload: dict) -> int:
    """Start of the minute a wrist message covers (from its step-count reading)."""
    return next(r["t"] for r in payload["readings"] if r["metric"] == "step_count")


def test_the_default_stream_is_clean() -> None:
    config = _config(50, 60, FaultRates())
    messages = list(simulate(config))
    assert all(isinstance(m.payload, dict) for m in messages)
    keys = [(m.payload["device_id"], m.payload["seq"]) for m in messages]
    assert len(keys) == len(set(keys)) == 50 * 60
    for m in messages:
        assert device_message_problems(m.payload) == []
        assert m.sent_ms - MINUTE - _minute_of(m.payload) < 2_000  # sent at once
        assert m.payload["sent_at"] == m.sent_ms  # no clock skew


def test_delivery_fault_rates_match_configuration() -> None:
    """Dropout, duplicates, malformed, late and out-of-order rates, each within five binomial
    standard deviations of its configured probability (300 devices x 2 h = 36,000 messages)."""
    rates = FaultRates(dropout_prob=0.03, duplicate_prob=0.03, malformed_prob=0.02, late_prob=0.02,
                       out_of_order_prob=0.03, late_delay_min=(5.0, 30.0))  # fmt: skip
    patients, minutes = 300, 120
    created = patients * minutes
    valid: list[tuple[SimulatedMessage, dict]] = []
    raw = 0
    for m in simulate(_config(patients, minutes, rates, seed=3)):
        if isinstance(m.payload, bytes):
            raw += 1
            assert not raw_is_valid(m.payload)
        else:
            valid.append((m, m.payload))
    copies = Counter((p["device_id"], p["seq"]) for _, p in valid)
    distinct = len(copies)
    d, mal, dup = rates.dropout_prob, rates.malformed_prob, rates.duplicate_prob
    kept = created * (1 - d)
    assert within(distinct, kept * (1 - mal), d + mal)  # dropped: lost for good
    assert within(raw, kept * mal * (1 + dup), mal)  # malformed (and their resends)
    assert within(sum(c - 1 for c in copies.values()), distinct * dup, dup)
    assert all(c <= 2 for c in copies.values())

    delays = {}
    for message, p in valid:
        delays.setdefault((p["device_id"], p["seq"]), message.sent_ms - _minute_of(p) - MINUTE)
    late = sum(delay >= 5 * MINUTE for delay in delays.values())
    out_of_order = sum(MINUTE <= delay < 3 * MINUTE + 2_000 for delay in delays.values())
    assert within(late, distinct * rates.late_prob, rates.late_prob)
    ooo = rates.out_of_order_prob * (1 - rates.late_prob)
    assert within(out_of_order, distinct * ooo, ooo)

    # Late messages carry the real (late) send time; readings keep their own time. A resend
    # repeats the first copy's bytes, so its sent_at is the first send's.
    first_copy: set[tuple[str, int]] = set()
    for message, p in valid:
        key = (p["device_id"], p["seq"])
        if key in first_copy:
            assert p["sent_at"] < message.sent_ms
        else:
            assert p["sent_at"] == message.sent_ms
            first_copy.add(key)
        assert max(r["t"] for r in p["readings"]) < message.sent_ms
    # Out-of-order: some messages arrive after the same device's higher seq.
    last_seq: dict[str, int] = {}
    overtaken = 0
    for _, p in valid:
        overtaken += p["seq"] < last_seq.get(p["device_id"], -1)
        last_seq[p["device_id"]] = max(p["seq"], last_seq.get(p["device_id"], -1))
    assert overtaken > 0


def test_duplicates_are_identical_resends() -> None:
    seen: dict[tuple[str, int], SimulatedMessage] = {}
    pairs = 0
    for m in simulate(_config(50, 60, FaultRates(duplicate_prob=0.2), seed=2)):
        key = (m.payload["device_id"], m.payload["seq"])
        if key in seen:
            first = seen[key]
            assert m.payload == first.payload and m.payload is not first.payload
            assert 500 <= m.sent_ms - first.sent_ms <= 30_000
            pairs += 1
        seen[key] = m
    assert pairs > 300


def test_silent_periods_leave_gaps_without_seq_numbers() -> None:
    rates = FaultRates(silences_per_device_day=12.0, silence_mean_min=20.0)
    patients, minutes = 200, 180
    minutes_of: dict[str, list[int]] = defaultdict(list)
    for m in simulate(_config(patients, minutes, rates, seed=4)):
        p = m.payload
        assert [p["seq"]] == [len(minutes_of[p["device_id"]])]  # seq counts sent messages only
        minutes_of[p["device_id"]].append(_minute_of(p))
    runs = 0  # maximal runs of silent minutes: one per silent period (adjacent ones merge)
    silent_minutes = 0
    for sent in minutes_of.values():
        on = {(t - DEFAULT_START_MS) // MINUTE for t in sent}
        missing = [i for i in range(minutes) if i not in on]
        runs += sum(1 for j, i in enumerate(missing) if j == 0 or missing[j - 1] != i - 1)
        silent_minutes += len(missing)
    # A silence may start in any minute the device would be on: 12 per device-day.
    chances = patients * minutes - silent_minutes + runs
    expected = chances * 12.0 / 1440
    assert within(runs, expected, 0.0, sds=6.0), (runs, expected)
    assert 0.05 < silent_minutes / (patients * minutes) < 0.25


def test_device_swaps_give_a_new_device_id_whose_seq_starts_at_zero() -> None:
    per_year = 0.01 * MINUTES_PER_YEAR  # one swap per 100 patient-minutes
    patients, minutes = 100, 120
    config = _config(patients, minutes, FaultRates(device_swaps_per_patient_year=per_year), seed=6)
    devices: dict[str, list[str]] = defaultdict(list)
    seqs: dict[str, list[int]] = defaultdict(list)
    for m in simulate(config):
        p = m.payload
        if not devices[p["patient_id"]] or devices[p["patient_id"]][-1] != p["device_id"]:
            devices[p["patient_id"]].append(p["device_id"])
        seqs[p["device_id"]].append(p["seq"])
    swaps = sum(len(d) - 1 for d in devices.values())
    assert within(swaps, patients * minutes * 0.01, 0.01)
    all_ids = [d for ds in devices.values() for d in ds]
    assert len(all_ids) == len(set(all_ids)) and all(DEVICE_ID.match(d) for d in all_ids)
    for s in seqs.values():
        assert s == list(range(len(s)))
    assert set(devices) == {p.patient_id for p in population(config)}


def test_clock_skew_shifts_a_share_of_devices_clocks() -> None:
    rates = FaultRates(clock_skew_device_fraction=0.3, clock_skew_max_ms=120_000)
    patients = 400
    skew: dict[str, int] = {}
    for m in simulate(_config(patients, 5, rates, seed=7)):
        p = m.payload
        offset = _minute_of(p) - (DEFAULT_START_MS + p["seq"] * MINUTE)  # seq counts minutes here
        assert p["sent_at"] - m.sent_ms == offset  # the device's clock stamps both
        assert skew.setdefault(p["device_id"], offset) == offset  # constant per device
    offsets = np.array(list(skew.values()))
    assert np.abs(offsets).max() <= 120_000
    assert within((offsets != 0).sum(), 0.3 * patients, 0.3)


def test_motion_artefacts_spike_heart_rate_at_the_configured_rate() -> None:
    """Paired runs with and without artefacts: everything else is identical."""
    prob = 0.05
    sched = DeviceSchedule(bp_cuff_fraction=0.0)  # 12 heart-rate readings a minute

    def stream(p: float) -> list[dict]:
        config = CohortConfig(patients=100, seed=8, duration_ms=30 * MINUTE, devices=sched,
                              faults=FaultRates(motion_artefact_prob=p), incidence=Incidence.none())  # fmt: skip
        return [m.payload for m in simulate(config)]

    hit = 0
    clean, spiky = stream(0.0), stream(prob)
    for a, b in zip(clean, spiky):
        diffs = [(ra["value"], rb["value"]) for ra, rb in zip(a["readings"], b["readings"]) if ra != rb]
        if diffs:
            hit += 1
            assert all(ra["metric"] == "heart_rate" for ra, rb in zip(a["readings"], b["readings"]) if ra != rb)
            assert 1 <= len(diffs) <= 4
            assert all(vb >= va + 35 or vb <= va * 0.5 + 3 for va, vb in diffs)
    assert within(hit, len(clean) * prob, prob)


def test_malformed_payloads_are_never_valid_messages() -> None:
    payload = {"schema": "vitalrisk.device/1", "device_id": "dev-0123456789ab",
               "patient_id": "pt-0123456789", "seq": 3, "sent_at": 1_000,
               "readings": [{"metric": "heart_rate", "t": 900, "value": 70.0, "unit": "beats/min"}]}  # fmt: skip
    assert device_message_problems(payload) == []
    rng = np.random.default_rng(0)
    kinds = set()
    for _ in range(400):
        raw = malformed_payload(payload, rng)
        assert isinstance(raw, bytes) and not raw_is_valid(raw)
        kinds.add(raw[:12])
    assert len(kinds) > 8  # many different kinds of garbage
    assert device_message_problems(payload) == []  # the original is untouched


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(0, 2_000),
    late=st.floats(0, 1),
    ooo=st.floats(0, 1),
    dup=st.floats(0, 1),
    seed=st.integers(0, 2**32),
)
def test_delivery_plan_respects_its_bounds(n: int, late: float, ooo: float, dup: float, seed: int) -> None:
    rates = FaultRates(late_prob=late, out_of_order_prob=ooo, duplicate_prob=dup)
    plan = plan_delivery(n, rates, np.random.default_rng(seed))
    delay = plan.delay_ms
    assert ((delay == 0) | ((delay >= MINUTE) & (delay <= 3 * MINUTE)) | ((delay >= 5 * MINUTE) & (delay <= 120 * MINUTE))).all()
    dup_after = plan.duplicate_after_ms
    assert ((dup_after == -1) | ((dup_after >= 500) & (dup_after <= 30_000))).all()
    if late == 0 and ooo == 0:
        assert (delay == 0).all()


def test_typical_profile_turns_every_fault_on() -> None:
    typical = FaultRates.typical()
    assert typical.enabled and typical.delivery_faults
    assert not FaultRates().enabled
    with pytest.raises(ValueError, match="clock_skew_max_ms"):
        FaultRates(clock_skew_max_ms=-1)
