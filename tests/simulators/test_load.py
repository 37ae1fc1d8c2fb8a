"""The load generator: pacing, shortfall verdicts, report formats, messages, and a real broker run."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.enrolment import DeviceToken, create_tokens_file, write_tokens
from simulators.load import (
    DeviceRecord,
    LoadCohort,
    LoadReport,
    TokenBucket,
    format_report,
    progress_line,
    run_load,
)
from stream.cli import main
from stream.pipeline import VitalsPipeline
from kernel.settings import Settings
from kernel.wire import decode_device_message
from tests.simulators.helpers import device_message_problems

ROOT = Path(__file__).resolve().parents[2]


class FakeClock:
    """Seconds that move only when something takes time: a sleep, a send, a generation."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.sleeps = 0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.now += seconds


class FakeSender:
    """A sender whose every send costs ``cost_s`` of the fake clock, ``wait_s`` of it blocked."""

    def __init__(self, clock: FakeClock, *, cost_s: float = 0.0, blocked_share: float = 0.0) -> None:
        self.clock = clock
        self.cost_s = cost_s
        self.blocked_share = blocked_share
        self.sent: list[DeviceRecord] = []
        self.acked_messages = 0
        self.acked_readings = 0
        self.errors = 0
        self.wait_s = 0.0
        self.flushed = False

    def send(self, key: bytes, value: bytes, readings: int) -> None:
        self.clock.now += self.cost_s
        self.wait_s += self.cost_s * self.blocked_share
        self.sent.append(DeviceRecord(key, value, readings))
        self.acked_messages += 1
        self.acked_readings += readings

    def flush(self, timeout_s: float) -> None:
        self.flushed = True


def fixed_records(readings: int = 15) -> Iterator[DeviceRecord]:
    for i in itertools.count():
        yield DeviceRecord(b"pt-%d" % (i % 100), b"{}", readings)


def slow_records(clock: FakeClock, cost_s: float) -> Iterator[DeviceRecord]:
    for record in fixed_records():
        clock.now += cost_s
        yield record


# -- pacing ---------------------------------------------------------------------------------


def test_token_bucket_holds_the_rate_with_a_fake_clock() -> None:
    clock = FakeClock()
    bucket = TokenBucket(50_000, burst=12_500, clock=clock)
    sent = 0
    start = clock.now
    while clock.now - start < 60.0:
        wait = bucket.take(15)
        if wait >= 0.001:  # as run_load does: short waits are carried as a debt
            clock.sleep(wait)
        sent += 15
        clock.now += 0.000_005  # the send itself
    assert sent / (clock.now - start) == pytest.approx(50_000, rel=0.001)


def test_token_bucket_saves_up_at_most_its_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1_000, burst=100, clock=clock)
    clock.now += 60.0  # a long stall
    free = 0
    while bucket.take(1) == 0.0:
        free += 1
    assert free == 100


@pytest.mark.parametrize("rate", [0, -5, float("nan"), float("inf")])
def test_token_bucket_rejects_a_rate_that_is_not_positive_and_finite(rate: float) -> None:
    with pytest.raises(ValueError, match="rate must be a positive number of readings per second"):
        TokenBucket(rate, burst=1)


def test_run_load_holds_the_target_per_second_and_reports_no_shortfall() -> None:
    clock = FakeClock()
    sender = FakeSender(clock, cost_s=0.000_05)
    report = run_load(fixed_records(), sender, rate=2_000, duration_s=20, clock=clock, sleep=clock.sleep)
    assert sender.flushed
    assert report.elapsed_s == pytest.approx(20, abs=0.01)
    assert report.mean_rate == pytest.approx(2_000, rel=0.01)
    assert len(report.per_second) in (19, 20)
    assert all(abs(r - 2_000) <= 15 for r in report.steady_seconds())  # one message either way
    assert report.acked_readings == report.readings
    assert report.shortfall() is None
    assert report.idle_s > 0.9 * report.elapsed_s
    assert "cannot reach" not in format_report(report)


def test_run_load_stops_when_the_records_end() -> None:
    clock = FakeClock()
    sender = FakeSender(clock)
    report = run_load(itertools.islice(fixed_records(), 10), sender, rate=100, clock=clock, sleep=clock.sleep)
    assert report.messages == 10 and report.readings == 150 and not report.interrupted


def test_a_slow_sender_is_reported_as_producer_bound() -> None:
    clock = FakeClock()
    sender = FakeSender(clock, cost_s=0.001)  # 1,000 messages/s: 15,000 readings/s at most
    report = run_load(fixed_records(), sender, rate=50_000, duration_s=12, clock=clock, sleep=clock.sleep)
    shortfall = report.shortfall()
    assert shortfall is not None
    assert shortfall.sustained_rate == pytest.approx(15_000, rel=0.01)
    assert shortfall.bound == "producer-bound"
    assert shortfall.seconds >= 10
    last = format_report(report).splitlines()[-1]
    assert last.startswith("this machine cannot reach 50,000 readings/s: sustained 15,0")
    assert "(producer-bound: 100% of the time in producer.send" in last


def test_a_sender_blocked_on_acknowledgements_is_reported_as_broker_bound() -> None:
    clock = FakeClock()
    sender = FakeSender(clock, cost_s=0.001, blocked_share=0.9)
    report = run_load(fixed_records(), sender, rate=50_000, duration_s=12, clock=clock, sleep=clock.sleep)
    shortfall = report.shortfall()
    assert shortfall is not None and shortfall.bound == "broker-bound"
    assert shortfall.wait_share == pytest.approx(0.9, abs=0.01)


def test_a_slow_generator_is_reported_as_generator_bound() -> None:
    clock = FakeClock()
    sender = FakeSender(clock, cost_s=0.000_1)
    report = run_load(slow_records(clock, 0.001), sender, rate=50_000, duration_s=12, clock=clock,
                      sleep=clock.sleep)
    shortfall = report.shortfall()
    assert shortfall is not None and shortfall.bound == "generator-bound"
    assert shortfall.sustained_rate == pytest.approx(15 / 0.0011, rel=0.01)


def test_a_short_dip_is_not_a_shortfall() -> None:
    report = LoadReport(1_000.0, per_second=[400, 1_000, 900, 900, 900, 900, 1_000, 1_000])
    assert report.shortfall() is None  # four seconds below 95%, five make it sustained
    report.per_second.insert(5, 900)
    report.generate_per_second = [0.1] * 9
    report.send_per_second = [0.2] * 9
    report.wait_per_second = [0.0] * 9
    assert report.shortfall() is not None


def test_unpaced_runs_have_no_target_and_no_shortfall() -> None:
    clock = FakeClock()
    sender = FakeSender(clock, cost_s=0.001)
    report = run_load(fixed_records(), sender, rate=None, duration_s=3, clock=clock, sleep=clock.sleep)
    assert report.mean_rate == pytest.approx(15_000, rel=0.01)
    assert report.shortfall() is None and clock.sleeps == 0
    assert "target rate         unpaced" in format_report(report)


def test_ctrl_c_ends_the_run_with_a_report_and_a_flush() -> None:
    clock = FakeClock()
    sender = FakeSender(clock)

    def interrupted() -> Iterator[DeviceRecord]:
        yield from itertools.islice(fixed_records(), 50)
        raise KeyboardInterrupt

    report = run_load(interrupted(), sender, rate=1_000, clock=clock, sleep=clock.sleep)
    assert report.interrupted and report.messages == 50 and sender.flushed
    assert "(interrupted)" in format_report(report)


# -- formats --------------------------------------------------------------------------------


def test_progress_line_shows_rate_counts_errors_and_elapsed() -> None:
    report = LoadReport(50_000.0, messages=32_868, readings=499_624, acked_messages=32_000, errors=3,
                        elapsed_s=10.02, per_second=[49_900] * 10)
    line = progress_line(report)
    assert line == ("  10.0 s  49,900 readings/s (target 50,000)  sent 32,868 messages, 499,624 readings  "
                    "acked 32,000  errors 3")
    assert "\n" not in line


def test_final_report_has_every_figure() -> None:
    report = LoadReport(50_000.0, messages=3_300, readings=50_160, acked_messages=3_290, acked_readings=50_008,
                        errors=10, elapsed_s=1.0, generate_s=0.1, send_s=0.5, broker_wait_s=0.05, idle_s=0.4,
                        per_second=[50_160])
    text = format_report(report, patients=100_000)
    for expected in ("patients            100,000", "target rate         50,000 readings/s",
                     "sent                3,300 messages, 50,160 readings",
                     "acknowledged        3,290 messages, 50,008 readings", "errors              10",
                     "achieved rate       50,160 readings/s mean (100.3% of target)",
                     "generating 10%, in producer.send 50% (waiting for acks 5%), pacing 40%"):
        assert expected in text
    assert "per-second rate" not in text  # one second is all warm-up: no percentiles yet


# -- command line ---------------------------------------------------------------------------


@pytest.mark.parametrize(("argv", "message"), [
    (["--rate", "0"], "argument --rate: expected a positive number, got 0"),
    (["--rate", "-50000"], "argument --rate: expected a positive number, got -50000"),
    (["--rate", "fast"], "argument --rate: expected a positive number, got 'fast'"),
    (["--rate", "1000", "--speed", "2"], "argument --speed: not allowed with argument --rate"),
    (["--rate", "1000", "--duration", "0"], "argument --duration: expected a positive number, got 0"),
    (["--duration", "5"], "--duration needs --rate"),
    (["--rate", "inf"], "--rate must be a finite number of readings/s"),
    (["--rate", "1000", "--seed", "-1"], "--seed must be a non-negative integer, got -1"),
    (["--start-now"], "--start-now needs --speed 1 or lower"),
    (["--start-now", "--speed", "60"], "--start-now needs --speed 1 or lower"),
    (["--via-gateway", "http://127.0.0.1:9"], "--via-gateway needs --rate"),
    (["--rate", "100", "--via-gateway", "http://127.0.0.1:9"], "--via-gateway needs --tokens FILE"),
    (["--rate", "100", "--tokens", "tokens.jsonl"], "--tokens goes with --via-gateway URL"),
    (["--rate", "100", "--via-gateway", "http://127.0.0.1:9", "--tokens", "/nonexistent/tokens.jsonl"],
     "cannot read the tokens file /nonexistent/tokens.jsonl: No such file or directory"),
])
def test_bad_arguments_end_in_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    status: int | str | None
    try:
        status = main(["simulate", *argv])
    except SystemExit as exc:  # argparse's own checks exit; ours return
        status = exc.code
    assert status == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def _tokens_file(path: Path, cohort: LoadCohort, *, drop: int = 0) -> Path:
    with create_tokens_file(path) as handle:
        write_tokens(handle, [DeviceToken(device, patient, f"vrd1.{i:012x}.{'A' * 43}")
                              for i, (device, patient) in enumerate(cohort.devices[drop:])])
    return path


def test_a_device_without_a_token_or_a_bad_url_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cohort = LoadCohort(3, seed=5)
    tokens = _tokens_file(tmp_path / "tokens.jsonl", cohort, drop=1)
    run = ["simulate", "--patients", "3", "--seed", "5", "--rate", "100", "--tokens", str(tokens)]
    assert main([*run, "--via-gateway", "http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    device, patient = cohort.devices[0]
    assert err.startswith(f"vitalrisk: {tokens} has no token for device {device} of patient {patient}")
    assert "--cohort 3 --seed SEED" in err and err.count("\n") == 1
    assert main([*run[:4], "4", *run[5:], "--via-gateway", "http://127.0.0.1:9"]) == 2  # another seed: other ids
    assert "has no token for device" in capsys.readouterr().err
    tokens = _tokens_file(tmp_path / "all.jsonl", cohort)
    assert main([*run[:-1], str(tokens), "--via-gateway", "ftp://127.0.0.1:9"]) == 2
    assert capsys.readouterr().err == "vitalrisk: --via-gateway must be an http:// or https:// URL, got 'ftp://127.0.0.1:9'\n"


@pytest.mark.parametrize(("argv", "message"), [
    (["--cohort", "3"], "--cohort needs --out FILE"),
    (["--cohort", "3", "--device", "dev-1", "--out", "t.jsonl"], "--device goes with --patient"),
    (["--patient", "pt-1", "--seed", "3"], "--seed goes with --cohort N"),
    (["--cohort", "3", "--seed", "-1", "--out", "t.jsonl"], "--seed must be a non-negative integer, got -1"),
    (["--cohort", "3", "--patient", "pt-1"], "argument --patient: not allowed with argument --cohort"),
    (["--cohort", "0", "--out", "t.jsonl"], "argument --cohort: expected a positive integer, got 0"),
])
def test_bad_cohort_enrolment_arguments_end_in_one_line(argv: list[str], message: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    status: int | str | None
    try:
        status = main(["devices", "enroll", *argv])
    except SystemExit as exc:
        status = exc.code
    assert status == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


# -- messages -------------------------------------------------------------------------------


class FakeWall:
    """Epoch ms that a test moves forward, as sending would."""

    def __init__(self, start_ms: int = 1_767_571_200_000) -> None:
        self.ms = start_ms

    def __call__(self) -> int:
        return self.ms


def test_messages_are_valid_device_messages_with_current_timestamps() -> None:
    wall = FakeWall()
    cohort = LoadCohort(300, seed=7, wall_ms=wall, chunk=64)
    seen_seq: dict[str, list[int]] = defaultdict(list)
    last_t: dict[str, int] = {}
    count = 0
    for record in cohort.records(rate=1_000, minutes=6):
        wall.ms += 15  # about 1,000 readings/s
        body = json.loads(record.value)
        assert device_message_problems(body) == []
        assert record.key == body["patient_id"].encode()
        assert len(body["readings"]) == record.readings
        batch = decode_device_message(record.value, reference_ms=wall.ms, max_future_ms=0)
        assert batch.rejected == [] and len(batch.readings) == record.readings
        times = [r["t"] for r in body["readings"]]
        assert max(times) <= body["sent_at"] <= wall.ms
        device = body["device_id"]
        assert min(times) >= last_t.get(device, 0)  # a device's event time never goes back
        last_t[device] = max(times)
        seen_seq[device].append(body["seq"])
        count += 1
    assert count == 300 * 6
    assert all(seqs == list(range(6)) for seqs in seen_seq.values()) and len(seen_seq) == 300


def test_the_same_seed_gives_the_same_patients_and_values() -> None:
    def values(seed: int) -> list[object]:
        cohort = LoadCohort(20, seed=seed, wall_ms=FakeWall())
        return [[r["value"] for r in json.loads(rec.value)["readings"]] for rec in cohort.records(minutes=2)]

    assert values(3) == values(3) != values(4)
    from simulators.cohort import CohortConfig, population

    assert list(LoadCohort(5, seed=3).patient_ids) == [p.patient_id for p in population(CohortConfig(patients=5, seed=3))]


def test_encoding_is_byte_for_byte_what_json_dumps_writes() -> None:
    cohort = LoadCohort(50, seed=2, wall_ms=FakeWall())
    temperatures = 0
    for record in cohort.records(minutes=10):
        body = json.loads(record.value)
        assert json.dumps(body, separators=(",", ":")).encode() == record.value
        temperatures += sum(r["metric"] == "body_temperature" for r in body["readings"])
    assert temperatures == 100  # every fifth minute


@pytest.mark.parametrize(("patients", "rate", "minutes"), [(10, 500.0, 400), (200, 200.0, 8), (200, 30.0, 8)])
def test_the_pipeline_accepts_every_reading_none_late(patients: int, rate: float, minutes: int) -> None:
    """Squeezed (500/s for 10 patients is 200x real time, 200/s for 200 is 4x) or stretched
    (30/s for 200 is 0.6x), no reading is late, in the future or a duplicate, even with every
    patient on one partition; windows close as event time passes."""
    wall = FakeWall()
    cohort = LoadCohort(patients, seed=5, wall_ms=wall)
    pipeline = VitalsPipeline.from_settings(Settings())
    windows = readings = 0
    for offset, record in enumerate(cohort.records(rate=rate, minutes=minutes)):
        wall.ms += round(1000 * record.readings / rate)
        step = pipeline.on_message(record.value, partition=0, offset=offset, record_ts_ms=wall.ms)
        assert step.dead_letters == [] and step.late == 0 and step.duplicates == 0
        readings += step.readings
        windows += len(step.windows)
    assert readings == pytest.approx(patients * minutes * cohort.readings_per_message, rel=0.02)
    assert windows > 0


def test_bad_cohort_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="patients must be at least 1, got 0"):
        LoadCohort(0)
    with pytest.raises(ValueError, match="seed must be a non-negative integer, got -1"):
        LoadCohort(1, seed=-1)
    with pytest.raises(ValueError, match="minutes must be at least 1, got 0"):
        LoadCohort(1).records(minutes=0)


# -- against the real broker ----------------------------------------------------------------


def _consume(settings: Settings, expected: int) -> list[tuple[int, bytes, bytes]]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(settings.readings_topic, bootstrap_servers=settings.kafka_bootstrap,
                             auto_offset_reset="earliest", enable_auto_commit=False, consumer_timeout_ms=10_000)
    try:
        out = []
        for record in consumer:
            out.append((record.timestamp, record.key, record.value))
            if len(out) >= expected:
                break
        return out
    finally:
        consumer.close()


@pytest.mark.integration
def test_the_generator_holds_a_modest_rate_into_kafka(isolated: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    from simulators.run import run_rate

    status = run_rate(isolated, patients=500, rate=2_000, seed=3, duration_s=3.5)
    out = capsys.readouterr().out
    assert status == 0, out
    assert "this machine cannot reach" not in out
    sent = int(out.split("sent", 1)[1].split("messages")[0].replace(",", ""))
    acked = int(out.split("acknowledged", 1)[1].split("messages")[0].replace(",", ""))
    rate = float(out.split("achieved rate", 1)[1].split("readings/s")[0].replace(",", ""))
    assert acked == sent > 0
    assert rate == pytest.approx(2_000, rel=0.05)

    records = _consume(isolated, sent)
    assert len(records) == sent
    readings = 0
    for timestamp_ms, key, value in records:
        batch = decode_device_message(value, reference_ms=timestamp_ms)
        assert batch.rejected == [] and key == batch.patient_id.encode()
        readings += len(batch.readings)
    assert readings / 3.5 == pytest.approx(2_000, rel=0.05)


@pytest.mark.integration
def test_ctrl_c_prints_the_report_and_exits_130(isolated: Settings) -> None:
    from infra.processes import child_env

    # SIGINT as a terminal sends it (a background child would inherit SIGINT ignored)
    proc = subprocess.Popen([sys.executable, "-m", "stream.cli", "simulate", "--patients", "100", "--rate", "1000"],
                            cwd=ROOT, env=child_env(isolated), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert proc.stderr is not None
        seen = b""
        deadline = time.monotonic() + 60
        while b"(target 1,000)" not in seen and time.monotonic() < deadline:  # the first progress line
            chunk = os.read(proc.stderr.fileno(), 4096)
            if not chunk:
                break
            seen += chunk
        assert b"(target 1,000)" in seen, seen.decode()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, (seen + err).decode()
    text = out.decode()
    assert "load generator report" in text and "(interrupted)" in text
    assert "acknowledged" in text and "Traceback" not in (seen + err).decode()
