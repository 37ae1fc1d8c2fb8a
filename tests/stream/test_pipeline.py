"""The pipeline's core (stream/pipeline.py), property-tested: arrival order, duplicates, lateness,
restarts and checkpoints cut short; and any bytes in, dead letters bounded, clocks and devices a
sender invents kept in check."""

from __future__ import annotations

import struct
from collections import OrderedDict

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from kernel.limits import Limits
from kernel.wire import encode_device_message
from stream.deadletters import MAX_HEADER_BYTES, DeadLetterRecord, deadletter_headers
from stream.pipeline import SEQ_MEMORY, VitalsPipeline, _first_time
from stream.state import DictStore
from tests.kernel.hostile_records import records
from tests.stream.reading_streams import (GRACE, MINUTE, START, new_pipeline, readings,
                                         stream_of_150_minutes)


def _arrival_within_grace(data: st.DataObject, events: list[tuple[str, str, int, float]]) -> list:
    """Any order in which no reading arrives more than the grace period behind the newest one."""
    delays = [data.draw(st.integers(0, GRACE - 1)) for _ in events]
    return [e for _, e in sorted(zip((e[2] + d for e, d in zip(events, delays)), events), key=lambda p: p[0])]


def _feed(pipeline: VitalsPipeline, events: list, *, seqs: list[int] | None = None) -> dict:
    """One message per reading; returns windows by (patient, start) and the total late count."""
    windows, late = {}, 0
    for offset, (patient, metric, t, value) in enumerate(events):
        seq = offset if seqs is None else seqs[offset]
        raw = encode_device_message(device_id=f"dev-{patient}", patient_id=patient, seq=seq, sent_at=t,
                                    readings=[(metric, t, value)])
        step = pipeline.on_message(raw, partition=0, offset=offset, record_ts_ms=t)
        late += step.late
        windows.update({(w.patient_id, w.start_ms): w for w in step.windows})
    windows.update({(w.patient_id, w.start_ms): w for w in pipeline.close_partition(0).windows})
    return {"windows": windows, "late": late}


def _expected_stats(points: list[tuple[int, float]]) -> dict[str, float]:
    points = sorted(points)
    t = np.array([p[0] for p in points], dtype=float)
    v = np.array([p[1] for p in points])
    minutes = (t - t[0]) / MINUTE
    slope = float(np.polyfit(minutes, v, 1)[0]) if len(set(minutes)) > 1 else 0.0
    rmssd = float(np.sqrt(np.mean(np.diff(v) ** 2))) if len(v) > 1 else 0.0
    return {"count": len(v), "mean": float(v.mean()), "min": float(v.min()), "max": float(v.max()),
            "std": float(v.std()), "last": float(v[-1]), "slope": slope, "rmssd": rmssd}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=readings(), data=st.data())
def test_any_arrival_order_within_grace_gives_the_batch_result(events, data) -> None:
    arrived = _arrival_within_grace(data, events)
    result = _feed(new_pipeline(), arrived)
    assert result["late"] == 0
    batch: dict[tuple[str, int], dict[str, list[tuple[int, float]]]] = {}
    for patient, metric, t, value in events:
        batch.setdefault((patient, t - t % MINUTE), {}).setdefault(metric, []).append((t, value))
    assert set(result["windows"]) == set(batch)
    for key, metrics in batch.items():
        got = result["windows"][key].metrics
        assert set(got) == set(metrics)
        for metric, points in metrics.items():
            expected = _expected_stats(points)
            s = got[metric]
            assert (s.count, s.min, s.max, s.last) == (expected["count"], expected["min"], expected["max"],
                                                       expected["last"])
            for name, value in (("mean", s.mean), ("std", s.std), ("slope", s.slope_per_min),
                                ("rmssd", s.rmssd)):
                assert value == pytest.approx(expected[name], rel=1e-9, abs=1e-9), (key, metric, name)


@settings(max_examples=100, deadline=None)
@given(events=readings(), data=st.data())
def test_duplicates_never_change_a_result(events, data) -> None:
    clean = _feed(new_pipeline(), events)
    picks = data.draw(st.lists(st.integers(0, len(events) - 1), max_size=10))
    # a resend repeats the message (same device and seq) somewhere after the original
    with_dups = list(events)
    seqs = list(range(len(events)))
    where = list(range(len(events)))  # each original's index in with_dups, as resends shift it
    for i in picks:
        position = data.draw(st.integers(where[i] + 1, len(with_dups)))
        with_dups.insert(position, events[i])
        seqs.insert(position, i)
        where = [w + 1 if w >= position else w for w in where]
    duplicated = _feed(new_pipeline(), with_dups, seqs=seqs)
    assert duplicated["windows"] == clean["windows"]


@settings(max_examples=100, deadline=None)
@given(events=readings(), lateness=st.integers(GRACE + MINUTE, 10 * MINUTE))
def test_readings_later_than_grace_are_counted_never_merged(events, lateness) -> None:
    events = sorted(events, key=lambda e: e[2])
    newest = events[-1][2]
    straggler = ("pt-a", "heart_rate", newest - lateness, 99.0)
    pipeline = new_pipeline()
    with_straggler = _feed(pipeline, events + [straggler])
    clean = _feed(new_pipeline(), events)
    closed_before = pipeline._partitions[0].windows.closed_before_ms  # the property's premise
    if straggler[2] - straggler[2] % MINUTE + MINUTE <= newest - GRACE:
        assert with_straggler["late"] == 1
        assert with_straggler["windows"] == clean["windows"]
    assert closed_before is not None


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), data=st.data())
def test_restart_from_a_checkpoint_and_replay_equals_an_uninterrupted_run(seed: int, data) -> None:
    """Kill after any flush, restart from the saved state and an older committed offset: same outputs."""
    events = stream_of_150_minutes(seed)

    def run(pipeline: VitalsPipeline, start: int, stop: int, on_flush=None):
        windows, rows = {}, {}
        for offset in range(start, stop):
            patient, metric, t, value = events[offset]
            raw = encode_device_message(device_id="d", patient_id=patient, seq=offset, sent_at=t,
                                        readings=[(metric, t, value)])
            step = pipeline.on_message(raw, partition=0, offset=offset, record_ts_ms=t)
            windows.update({w.start_ms: w for w in step.windows})
            rows.update({r.ts_ms: r.x for r in step.features})
            if on_flush is not None and offset % 7 == 0:
                on_flush(offset, pipeline)
        return windows, rows

    reference = run(new_pipeline(), 0, len(events))
    crash_at = data.draw(st.integers(1, len(events) - 1))
    store = DictStore()
    flushes: list[tuple[int, int | None]] = []

    def flush(offset: int, pipeline: VitalsPipeline) -> None:
        pipeline.save(0, pipeline.checkpoint(0))
        flushes.append((offset, pipeline.low_offset(0)))

    before = run(new_pipeline(store), 0, crash_at, on_flush=flush)
    committed = 0
    if len(flushes) >= 2:  # Kafka commits lag the last flush: resume from an earlier one's low offset
        offset, low = flushes[-2]
        committed = low if low is not None else offset + 1
    saved_through = flushes[-1][0] if flushes else -1
    after = run(new_pipeline(store if flushes else DictStore()), committed, len(events))
    # Outputs that reached the sink before the crash (up to the last flush) plus the restarted run's.
    windows = {k: w for k, w in before[0].items() if w.end_ms <= _closed_before(store)} | after[0]
    rows = {k: x for k, x in before[1].items() if k <= _closed_before(store)} | after[1]
    assert saved_through < len(events)
    assert windows == reference[0]
    assert rows == reference[1]


def _closed_before(store: DictStore) -> int:
    saved = store.get("w:0")
    if saved is None:
        return -(2**63)
    return struct.unpack("<qqq", saved)[1]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), data=st.data())
def test_a_checkpoint_cut_short_before_its_watermark_replays_to_the_same_outputs(seed: int, data) -> None:
    """Killed while saving a checkpoint: some patients' new states reached the store, the
    partition's watermark record (written last) did not. The replay from the older watermark
    closes again windows those states already hold; outputs must still equal an uninterrupted run."""
    events = sorted(stream_of_150_minutes(seed) + [("pt-b", m, t + 7, v) for _, m, t, v in stream_of_150_minutes(seed + 1)],
                    key=lambda e: e[2])

    def step(pipeline: VitalsPipeline, offset: int, windows: dict, rows: dict) -> None:
        patient, metric, t, value = events[offset]
        raw = encode_device_message(device_id=f"d-{patient}", patient_id=patient, seq=offset, sent_at=t,
                                    readings=[(metric, t, value)])
        out = pipeline.on_message(raw, partition=0, offset=offset, record_ts_ms=t)
        windows.update({(w.patient_id, w.start_ms): w for w in out.windows})
        rows.update({(r.patient_id, r.ts_ms): r.x for r in out.features})

    reference: tuple[dict, dict] = ({}, {})
    reference_pipeline = new_pipeline()
    for offset in range(len(events)):
        step(reference_pipeline, offset, *reference)

    flush_at = list(range(6, len(events), 7))
    crash = data.draw(st.integers(0, len(flush_at) - 1), label="flush cut short")
    store = DictStore()
    pipeline = new_pipeline(store)
    durable: tuple[dict, dict] = ({}, {})  # a flush's outputs are durable before its state is saved
    committed = 0
    for offset in range(flush_at[crash] + 1):
        step(pipeline, offset, *durable)
        if offset in flush_at:
            writes = pipeline.checkpoint(0)
            assert writes[-1][0] == "w:0", "the watermark record is written last"
            if offset == flush_at[crash]:
                pipeline.save(0, writes[:data.draw(st.integers(0, len(writes) - 1), label="writes saved")])
            else:
                low = pipeline.low_offset(0)
                committed = low if low is not None else offset + 1
                pipeline.save(0, writes)

    after: tuple[dict, dict] = ({}, {})
    restarted = new_pipeline(store)
    for offset in range(committed, len(events)):
        step(restarted, offset, *after)
    assert durable[0] | after[0] == reference[0]
    assert durable[1] | after[1] == reference[1]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raws=st.lists(records, min_size=1, max_size=6))
def test_the_core_takes_anything_and_bounds_its_dead_letters(raws: list[bytes]) -> None:
    core = VitalsPipeline(window_ms=60_000, grace_ms=0, max_future_ms=60_000, carry_ms=3_600_000)
    for offset, raw in enumerate(raws):
        step = core.on_message(raw, partition=0, offset=offset, record_ts_ms=START, now_ms=START)
        assert len(step.dead_letters) <= 1, "one dead letter per record"
        for letter in step.dead_letters:
            assert letter.payload == raw, "the record's own bytes, once"
            headers = deadletter_headers(letter, topic="vitals.readings", partition=0, offset=offset,
                                         record_ts_ms=START)
            extra = sum(len(k) + len(v) for k, v in headers)
            assert extra <= MAX_HEADER_BYTES
            back = DeadLetterRecord.from_kafka(0, offset, START, None, letter.payload, headers)
            assert back.reason == letter.reason and back.counts == letter.counts


def test_a_thousand_bad_readings_make_one_dead_letter_no_bigger_than_their_message() -> None:
    raw = encode_device_message(device_id="dev-1", patient_id="pt-" + "a" * 61, seq=1, sent_at=START,
                                readings=[("heart_rate", START, 999.0)] * 1_000)
    core = VitalsPipeline(window_ms=60_000, grace_ms=0, max_future_ms=60_000, carry_ms=3_600_000)
    letter, = core.on_message(raw, partition=0, offset=0, record_ts_ms=START).dead_letters
    assert letter.counts == {"impossible_value": 1_000} and letter.payload == raw
    headers = deadletter_headers(letter, topic="t", partition=0, offset=0, record_ts_ms=START)
    assert len(letter.payload) + sum(len(k) + len(v) for k, v in headers) <= len(raw) + MAX_HEADER_BYTES


def test_a_fast_clock_is_refused_alone_and_moves_no_watermark() -> None:
    core = VitalsPipeline(window_ms=60_000, grace_ms=0, max_future_ms=60_000, carry_ms=3_600_000)
    now = START + 10 * 60_000
    forged = encode_device_message(device_id="dev-fast", patient_id="pt-fast", seq=1, sent_at=now + 3_900_000,
                                   readings=[("heart_rate", now + 3_900_000, 70.0)])
    # the sender set its record time an hour ahead too; the worker's clock still bounds it
    step = core.on_message(forged, partition=0, offset=0, record_ts_ms=now + 3_900_000, now_ms=now)
    assert [d.reason for d in step.dead_letters] == ["future_timestamp"]
    assert core.watermark_ms(0) is None
    honest = encode_device_message(device_id="dev-1", patient_id="pt-1", seq=1, sent_at=now,
                                   readings=[("heart_rate", now - 30_000, 70.0)])
    step = core.on_message(honest, partition=0, offset=1, record_ts_ms=now, now_ms=now)
    assert not step.dead_letters and step.readings == 1


def test_invented_devices_are_forgotten_least_recently_seen_first() -> None:
    core = VitalsPipeline(window_ms=60_000, grace_ms=0, max_future_ms=60_000, carry_ms=3_600_000,
                          limits=Limits(max_devices=100))
    forgotten = 0
    for i in range(1_000):
        raw = encode_device_message(device_id=f"dev-{i}", patient_id="pt-1", seq=1, sent_at=START,
                                    readings=[("heart_rate", START, 70.0)])
        forgotten += core.on_message(raw, partition=0, offset=i, record_ts_ms=START).devices_forgotten
    assert forgotten == 900 and len(core._partitions[0].seqs) == 100


def test_a_device_seen_again_is_remembered_over_quieter_ones() -> None:
    core = VitalsPipeline(window_ms=60_000, grace_ms=0, max_future_ms=60_000, carry_ms=3_600_000,
                          limits=Limits(max_devices=2))

    def send(device: str, seq: int) -> tuple[int, int]:
        raw = encode_device_message(device_id=device, patient_id="pt-1", seq=seq, sent_at=START,
                                    readings=[("heart_rate", START, 70.0)])
        step = core.on_message(raw, partition=0, offset=0, record_ts_ms=START)
        return step.duplicates, step.devices_forgotten

    assert [send("dev-a", 1), send("dev-b", 1), send("dev-a", 2)] == [(0, 0), (0, 0), (0, 0)]
    assert send("dev-c", 1) == (0, 1), "dev-b was seen least recently"
    assert send("dev-a", 2) == (1, 0), "dev-a is remembered: its resend is a duplicate"
    assert send("dev-b", 1) == (0, 1), "dev-b was forgotten: its resend counts as new"


@settings(max_examples=300, deadline=None)
@given(seqs=st.lists(st.integers(0, 3 * SEQ_MEMORY), max_size=80))
@example(seqs=[300, 300 - SEQ_MEMORY, 300 - SEQ_MEMORY, 300 - SEQ_MEMORY + 1, 300 - SEQ_MEMORY + 1])  # the edge
def test_a_sequence_number_is_a_duplicate_exactly_when_seen_among_the_recent_ones(seqs: list[int]) -> None:
    """The bitmask of recent sequence numbers against a plain set of every number seen."""
    remembered: OrderedDict[str, tuple[int, int]] = OrderedDict()
    seen: set[int] = set()
    for seq in seqs:
        top = max(seen, default=None)
        recent = top is not None and top - seq < SEQ_MEMORY
        assert _first_time(remembered, "dev-1", seq) == (seq not in seen or not recent), (seq, top)
        seen.add(seq)


def test_a_patient_silent_for_data_stopped_ms_is_reported_once() -> None:
    core = VitalsPipeline(window_ms=MINUTE, grace_ms=0, max_future_ms=MINUTE, carry_ms=3_600_000,
                          data_stopped_ms=10 * MINUTE)
    stopped = []
    for minute in range(30):
        patients = ["pt-a", "pt-b"] if minute < 2 else ["pt-b"]
        for patient in patients:
            t = START + minute * MINUTE
            raw = encode_device_message(device_id=f"dev-{patient}", patient_id=patient, seq=minute, sent_at=t,
                                        readings=[("heart_rate", t, 70.0)])
            stopped += core.on_message(raw, partition=0, offset=minute, record_ts_ms=t).stopped
    assert stopped == [("pt-a", START + 2 * MINUTE)]
