"""Recording replay: CSV parsing, batching, pacing, the heartpy recording, and Kafka end to end."""

from __future__ import annotations

import io
import json
import statistics
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulators.recordings import heart_rate_from_ppg, load_heartpy_ppg, write_heartpy_recording
from simulators.replay import (
    MIN_EPOCH_MS,
    DeviceMessage,
    InvalidRecording,
    RecordedReading,
    batch_readings,
    check_recording,
    format_timestamp,
    parse_recording,
    publish_messages,
    read_recording,
    replay_device_id,
    run_replay,
    write_recording,
)
from stream.cli import main
from kernel.settings import Settings
from kernel.vocabulary import METRICS
from kernel.wire import MAX_READINGS_PER_MESSAGE, decode_device_message

HEADER = "timestamp,metric,value"
T0 = 1_767_571_200_000  # 2026-01-05T00:00:00Z


def parse(*rows: str) -> list[RecordedReading]:
    return list(parse_recording([HEADER, *rows]))


# --- parsing ---------------------------------------------------------------------------------


def test_timestamps_in_every_accepted_spelling() -> None:
    rows = parse(
        "2026-01-05T00:00:01Z,heart_rate,70",
        "2026-01-05T01:00:02+01:00,heart_rate,71",  # the same instant plus a second
        "2026-01-05 00:00:03.250,heart_rate,72",  # no offset: UTC
        "2026-01-05T00:00:04.123456Z,heart_rate,73",  # below a millisecond: dropped
        f"{T0 + 5_000},heart_rate,74",
    )
    assert [r.t_ms - T0 for r in rows] == [1_000, 2_000, 3_250, 4_123, 5_000]
    assert [r.value for r in rows] == [70.0, 71.0, 72.0, 73.0, 74.0]


def test_header_blank_lines_spaces_and_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("\ufeff Timestamp , Metric , Value \n\n"
                    f"{T0}, oxygen_saturation , 96\n\n{T0 + 60_000},body_temperature,36.85\n", encoding="utf-8")
    assert list(read_recording(path)) == [
        RecordedReading(T0, "oxygen_saturation", 96.0), RecordedReading(T0 + 60_000, "body_temperature", 36.85),
    ]


@pytest.mark.parametrize(
    ("lines", "line", "rule"),
    [
        ([], 1, "the header must be timestamp,metric,value, got an empty file"),
        (["t,metric,value"], 1, "the header must be timestamp,metric,value, got 't,metric,value'"),
        ([HEADER, f"{T0},heart_rate"], 2, "expected 3 fields (timestamp,metric,value), got 2"),
        ([HEADER, f"{T0},heart_rate,70", f"{T0},heart_rate,70,x"], 3, "expected 3 fields"),
        ([HEADER, "yesterday,heart_rate,70"], 2, "'yesterday' is neither ISO-8601 nor integer epoch milliseconds"),
        ([HEADER, "1767571200,heart_rate,70"], 2, "epoch seconds?"),
        ([HEADER, f"{T0},hr,70"], 2, "metric 'hr' is not in the registry"),
        ([HEADER, f"{T0},heart_rate,seventy"], 2, "value of heart_rate must be a number, got 'seventy'"),
        ([HEADER, f"{T0},heart_rate,nan"], 2, "heart_rate must lie in [20, 300] beats/min, got nan"),
        ([HEADER, f"{T0},heart_rate,400"], 2, "heart_rate must lie in [20, 300] beats/min, got 400"),
        ([HEADER, f"{T0},oxygen_saturation,101"], 2, "oxygen_saturation must lie in [50, 100] %"),
        ([HEADER, "", f"{T0 + 1},heart_rate,70", f"{T0},heart_rate,70"], 4, "earlier than the row before"),
        ([HEADER, f"{T0},heart_rate,70", f"{T0},heart_rate,{'7' * 200_000}"], 3, "not readable as CSV"),
    ],
)
def test_a_bad_row_names_its_line(lines: list[str], line: int, rule: str) -> None:
    with pytest.raises(InvalidRecording) as caught:
        list(parse_recording(lines))
    assert caught.value.line == line
    assert str(caught.value).startswith(f"line {line}: ") and rule in str(caught.value)


def test_good_rows_before_a_bad_one_are_read_lazily() -> None:
    rows = parse_recording([HEADER, f"{T0},heart_rate,70", f"{T0},heart_rate,-1"])
    assert next(rows) == RecordedReading(T0, "heart_rate", 70.0)
    with pytest.raises(InvalidRecording, match="line 3"):
        next(rows)


readings_st = st.lists(
    st.sampled_from(sorted(METRICS)).flatmap(lambda name: st.tuples(
        st.integers(MIN_EPOCH_MS, 4_102_444_800_000),  # up to 2100
        st.just(name),
        st.floats(METRICS[name].lowest, METRICS[name].highest, allow_nan=False),
    )),
    max_size=60,
).map(lambda rows: [RecordedReading(t, m, v) for t, m, v in sorted(rows, key=lambda r: r[0])])


@given(readings_st)
def test_write_then_parse_round_trips(readings: list[RecordedReading]) -> None:
    buf = io.StringIO()
    assert write_recording(readings, buf) == len(readings)
    assert list(parse_recording(io.StringIO(buf.getvalue()))) == readings
    # The same rows with epoch-ms timestamps read back the same.
    epoch = [HEADER] + [f"{r.t_ms},{r.metric},{r.value!r}" for r in readings]
    assert list(parse_recording(epoch)) == readings


@given(st.integers(1, 4_102_444_800_000))
def test_format_timestamp_is_iso_8601_utc_to_the_millisecond(t_ms: int) -> None:
    text = format_timestamp(t_ms)
    assert text.endswith("Z") and len(text) == 24
    assert parse(f"{text},heart_rate,70")[0].t_ms == t_ms


# --- batching --------------------------------------------------------------------------------


@settings(max_examples=60)
@given(readings_st, st.sampled_from([1_000, 5_000, 60_000, 300_000]), st.integers(0, 10**12))
def test_batches_are_valid_device_messages_holding_every_reading(readings: list[RecordedReading],
                                                                 batch_ms: int, shift_ms: int) -> None:
    messages = list(batch_readings(readings, patient_id="pt-r1", device_id="dev-r1", batch_ms=batch_ms,
                                   shift_ms=shift_ms))
    decoded = [decode_device_message(m.encode(), reference_ms=m.sent_ms, max_future_ms=0) for m in messages]
    assert all(not d.rejected and d.patient_id == "pt-r1" and d.device_id == "dev-r1" for d in decoded)
    assert [(r.ts_ms, r.metric, r.value) for d in decoded for r in d.readings] == [
        (r.t_ms + shift_ms, r.metric, r.value) for r in readings
    ]
    for m in messages:
        assert m.sent_ms % batch_ms == 0
        assert all(m.sent_ms - batch_ms <= r.t_ms < m.sent_ms for r in m.readings)
    # seq is the interval's number since the epoch: increasing, one message per interval.
    assert [m.seq for m in messages] == [m.sent_ms // batch_ms - 1 for m in messages]
    assert all(a.seq < b.seq for a, b in zip(messages, messages[1:]))


def test_more_readings_in_one_interval_than_a_message_holds_is_refused(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    crowded = [RecordedReading(T0 + i * 5, "step_count", 1.0) for i in range(MAX_READINGS_PER_MESSAGE + 1)]
    with pytest.raises(ValueError, match="10001 readings fall in the 60-s batch from 2026-01-05T00:00:00.000Z"):
        list(batch_readings(crowded, patient_id="pt-1", device_id="dev-1"))
    assert len(list(batch_readings(crowded, patient_id="pt-1", device_id="dev-1", batch_ms=30_000))) == 2
    path = tmp_path / "crowded.csv"
    with open(path, "w") as f:
        write_recording(crowded, f)
    assert main(["replay", str(path), "--patient", "pt-1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "use a shorter --batch-seconds" in err
    assert check_recording(path, batch_ms=50_000).rows == MAX_READINGS_PER_MESSAGE + 1  # fits in 50-s batches


# --- publishing ------------------------------------------------------------------------------


class FakeProducer:
    """Records sends; stands in for kafka-python's producer."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.flushed = False

    def send(self, topic: str, *, key: bytes, value: bytes, timestamp_ms: int) -> Any:
        self.sent.append({"topic": topic, "key": key, "value": value, "timestamp_ms": timestamp_ms})
        producer = self

        class Future:
            def add_errback(self, _: Any) -> Any:
                return producer

        return Future()

    def flush(self) -> None:
        self.flushed = True

    def close(self) -> None:
        pass


def test_pacing_follows_the_send_times_at_the_given_speed() -> None:
    now = [100.0]
    sleeps: list[float] = []

    def sleep(s: float) -> None:
        sleeps.append(s)
        now[0] += s

    messages = [DeviceMessage("pt-1", "dev-1", i, T0 + 60_000 * (i + 1), (RecordedReading(T0 + 60_000 * i, "heart_rate",
                                                                                          70.0),))
                for i in range(4)]
    producer = FakeProducer()
    report = publish_messages(messages, settings=Settings(readings_topic="r"), producer=producer, speed=2.0,
                              origin_ms=T0, clock=lambda: now[0], sleep=sleep)
    # A message leaves (sent_ms - origin) / speed after the start: 30 s, 60 s, 90 s, 120 s.
    assert sleeps == [30.0, 30.0, 30.0, 30.0]
    assert report.messages == 4 and report.readings == 4 and producer.flushed
    assert [s["timestamp_ms"] for s in producer.sent] == [m.sent_ms for m in messages]
    assert {s["topic"] for s in producer.sent} == {"r"} and {s["key"] for s in producer.sent} == {b"pt-1"}


def test_flat_out_without_speed() -> None:
    messages = list(batch_readings(parse(f"{T0},heart_rate,70", f"{T0 + 90_000},heart_rate,71"),
                                   patient_id="pt-1", device_id="dev-1"))
    report = publish_messages(messages, settings=Settings(), producer=FakeProducer(),
                              sleep=lambda s: pytest.fail("slept without --speed"))
    assert report.messages == 2


def write_csv(path: Path, *rows: str) -> Path:
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    return path


def test_run_replay_publishes_and_can_shift_the_recording_to_now(tmp_path: Path) -> None:
    import time

    csv_path = write_csv(tmp_path / "r.csv", f"{T0},heart_rate,70", f"{T0 + 61_000},heart_rate,72")
    out, err, producer = io.StringIO(), io.StringIO(), FakeProducer()
    before = int(time.time() * 1000)
    status = run_replay(Settings(readings_topic="r"), csv_path, patient_id="pt-a1", shift_to_now=True,
                        producer=producer, stdout=out, stderr=err)
    assert status == 0, err.getvalue()
    batches = [decode_device_message(s["value"]) for s in producer.sent]
    times = [r.ts_ms for b in batches for r in b.readings]
    # Moved by whole minutes: the first reading falls in the current minute, at its old second.
    assert before - 60_000 < times[0] <= int(time.time() * 1000) and times[0] % 60_000 == 0
    assert times[1] - times[0] == 61_000
    assert {b.device_id for b in batches} == {replay_device_id("pt-a1")}
    assert "replayed 2 readings" in out.getvalue()


@pytest.mark.parametrize(
    ("rows", "args", "message"),
    [
        ((f"{T0},heart_rate,70", "oops,heart_rate,70"), [], "r.csv: line 3: timestamp 'oops' is neither"),
        ((), [], "r.csv: line 1: the recording has a header but no readings"),
        ((f"{T0},heart_rate,70",), ["--patient", "Jane Doe"], "--patient must be a pseudonym"),
        ((f"{T0},heart_rate,70",), ["--device", "my watch"], "--device must be a pseudonym"),
        ((f"{T0},heart_rate,70",), ["--speed", "0"], "expected a positive number"),
        ((f"{T0},heart_rate,70",), ["--batch-seconds", "0.0001"], "--batch-seconds must be at least 0.001"),
    ],
)
def test_cli_bad_input_ends_in_one_line_before_anything_is_sent(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                rows: tuple[str, ...], args: list[str],
                                                                message: str) -> None:
    csv_path = write_csv(tmp_path / "r.csv", *rows)
    try:
        # An unreachable broker: the checks must fail first, without trying to connect.
        status = main(["replay", str(csv_path), "--patient", "pt-1", *args])
    except SystemExit as exc:
        status = exc.code
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and message in err, err


def test_cli_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", str(tmp_path / "nope.csv"), "--patient", "pt-1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot read" in err and "No such file" in err


# --- the heartpy recording -------------------------------------------------------------------


@pytest.fixture(scope="module")
def heartpy_rows(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[RecordedReading], int]:
    path = tmp_path_factory.mktemp("heartpy") / "heartpy-hr.csv"
    with open(path, "w", newline="") as f:
        derived = write_heartpy_recording(f)
    return path, derived.readings, derived.segments


def test_heartpy_heart_rate_is_plausible_every_five_seconds(
        heartpy_rows: tuple[Path, list[RecordedReading], int]) -> None:
    path, readings, segments = heartpy_rows
    ppg = load_heartpy_ppg(2)
    duration_s = (ppg.t_ms[-1] - ppg.t_ms[0]) / 1000
    assert 680 < duration_s < 685 and 99 < ppg.sample_rate_hz < 101  # 11.4 min at about 100 Hz
    # 10-s segments every 5 s over the recording; heartpy rejects none of this clean recording.
    assert segments == int((duration_s - 10) // 5) + 1 == 135
    assert len(readings) == segments
    assert all(r.metric == "heart_rate" and 40 <= r.value <= 180 for r in readings)
    assert 85 <= statistics.median(r.value for r in readings) <= 110
    gaps = [(b.t_ms - a.t_ms) / 1000 for a, b in zip(readings, readings[1:])]
    assert all(4.9 <= g <= 5.1 for g in gaps)
    assert ppg.t_ms[0] + 9_900 <= readings[0].t_ms <= ppg.t_ms[0] + 10_100
    assert format_timestamp(readings[0].t_ms).startswith("2016-11-24T13:59:0")
    assert list(read_recording(path)) == readings


def test_a_noisy_heartpy_recording_loses_rejected_segments() -> None:
    derived = heart_rate_from_ppg(load_heartpy_ppg(1))
    assert 0 < len(derived.readings) < derived.segments


# --- end to end --------------------------------------------------------------------------------


@pytest.mark.integration
def test_heartpy_recording_replays_through_kafka_into_the_pipeline(
        isolated: Settings, heartpy_rows: tuple[Path, list[RecordedReading], int]) -> None:
    from kafka import KafkaConsumer

    from stream.pipeline import VitalsPipeline

    path, readings, _ = heartpy_rows
    out, err = io.StringIO(), io.StringIO()
    assert run_replay(isolated, path, patient_id="pt-heartpy01", stdout=out, stderr=err) == 0, err.getvalue()
    expected_messages = len({r.t_ms // 60_000 for r in readings})  # one per minute with data

    consumer = KafkaConsumer(isolated.readings_topic, bootstrap_servers=isolated.kafka_bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=10_000, group_id=None)
    records = list(consumer)
    consumer.close()
    assert len(records) == expected_messages == 12
    assert {r.key for r in records} == {b"pt-heartpy01"} and len({r.partition for r in records}) == 1

    batches = [decode_device_message(r.value, reference_ms=r.timestamp) for r in records]
    assert all(not b.rejected and b.device_id == replay_device_id("pt-heartpy01") for b in batches)
    assert [(x.ts_ms, x.metric, x.value) for b in batches for x in b.readings] == [
        (r.t_ms, r.metric, r.value) for r in readings
    ]
    # minute numbers of the send time (the record time is the broker's: the topic uses LogAppendTime)
    assert [b.seq for b in batches] == [json.loads(r.value)["sent_at"] // 60_000 - 1 for r in records]

    # The same records through the worker's pure core: one closed window per minute with data.
    core = VitalsPipeline.from_settings(isolated)
    windows = []
    for r in sorted(records, key=lambda r: r.offset):
        step = core.on_message(r.value, partition=r.partition, offset=r.offset, record_ts_ms=r.timestamp)
        assert not step.dead_letters and step.readings == len(decode_device_message(r.value).readings)
        windows += step.windows
    windows += core.close_partition(records[0].partition).windows
    assert len(windows) == 12 and {w.patient_id for w in windows} == {"pt-heartpy01"}
    assert sum(w.metrics["heart_rate"].count for w in windows) == len(readings)
    assert all(80 <= w.metrics["heart_rate"].mean <= 135 for w in windows)
