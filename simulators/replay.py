"""Replay a recorded vital-sign CSV to Kafka as one device of one pseudonymous patient.

The recording is a CSV with the header ``timestamp,metric,value``, one reading a row, rows
in time order::

    timestamp,metric,value
    2016-11-24T13:59:08.081Z,heart_rate,97.3
    1479995953081,heart_rate,96.1

``timestamp`` is ISO-8601 (a time without an offset is taken as UTC; digits below the
millisecond are dropped) or integer epoch milliseconds; ``metric`` one of
:data:`kernel.vocabulary.METRICS` (values in the registry's unit, within its possible
range). A row that breaks a rule raises :class:`InvalidRecording` naming its line, and
``vitalrisk replay`` checks the whole file before it publishes anything.

Like a real device, the replay batches: the readings of each ``batch_ms`` interval of its
clock (aligned to the epoch, one minute by default, as the simulated wrist devices do) go
into one ``vitalrisk.device/1`` message (:func:`kernel.wire.encode_device_message`) sent at
the end of the interval, keyed by the patient id, with the send time as the Kafka record
time. A message's ``seq`` is its interval's number since the epoch, so replays of different
periods never share one, while re-sending a period already sent is de-duplicated by the
pipeline, as a device's resend would be.

``--shift-to-now`` moves the whole recording by whole intervals so that its first reading
falls in the current one; ``--speed X`` paces messages at X recorded seconds per real second
(with both, at ``--speed 1``, each message leaves when its send time comes).

Examples
--------
>>> rows = list(parse_recording(["timestamp,metric,value", "1767571260000,heart_rate,71",
...                              "2026-01-05T00:01:30Z,heart_rate,73.5", "1767571321000,step_count,12"]))
>>> rows[1]
RecordedReading(t_ms=1767571290000, metric='heart_rate', value=73.5)
>>> [(m.seq, format_timestamp(m.sent_ms), len(m.readings))
...  for m in batch_readings(rows, patient_id="pt-1", device_id="dev-1")]
[(29459521, '2026-01-05T00:02:00.000Z', 2), (29459522, '2026-01-05T00:03:00.000Z', 1)]
>>> list(parse_recording(["timestamp,metric,value", "1767571260000,hr,71"]))
Traceback (most recent call last):
...
simulators.replay.InvalidRecording: line 2: metric 'hr' is not in the registry (body_temperature, diastolic_blood_pressure, heart_rate, oxygen_saturation, respiratory_rate, step_count, systolic_blood_pressure)
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import math
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, UTC
from pathlib import Path
from typing import Any, TextIO

from simulators.kafka_publisher import Delivery, PublishReport, make_producer
from kernel.errors import EXIT_BAD_INPUT, VitalsError
from kernel.limits import valid_id
from kernel.settings import Settings
from kernel.vocabulary import METRICS
from kernel.wire import MAX_READINGS_PER_MESSAGE, encode_device_message
from simulators.run import progress_line

#: The CSV header a recording must start with.
HEADER = ("timestamp", "metric", "value")
#: Readings of this much device time go into one message by default, as the simulated wrist devices send.
DEFAULT_BATCH_MS = 60_000
#: Integer timestamps below this (1973-03-03) are almost surely epoch seconds, not milliseconds.
MIN_EPOCH_MS = 100_000_000_000

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
_DIGITS = re.compile(r"[0-9]+")
_METRIC_NAMES = ", ".join(sorted(METRICS))


class InvalidRecording(VitalsError, ValueError):
    """A recording row (or the header) that breaks the CSV format; the message names the line.

    Parameters
    ----------
    line
        1-based line number in the file.
    detail
        The rule and the offending value.
    """

    exit_status = EXIT_BAD_INPUT

    def __init__(self, line: int, detail: str) -> None:
        super().__init__(f"line {line}: {detail}")
        self.line = line
        self.detail = detail


@dataclass(frozen=True, slots=True)
class RecordedReading:
    """One row of a recording: epoch-ms time, registry metric name, value in the registry's unit."""

    t_ms: int
    metric: str
    value: float


def parse_timestamp(text: str) -> int:
    """Epoch milliseconds of an ISO-8601 time (UTC when it has no offset) or of integer epoch ms.

    Raises
    ------
    ValueError
        If ``text`` is neither, or is an integer too small to be epoch milliseconds.

    Examples
    --------
    >>> parse_timestamp("2016-11-24 13:58:58.081000"), parse_timestamp("2016-11-24T14:58:58.081+01:00")
    (1479995938081, 1479995938081)
    >>> parse_timestamp("1479995938081")
    1479995938081
    >>> parse_timestamp("1479995938")
    Traceback (most recent call last):
    ...
    ValueError: epoch milliseconds must be at least 100000000000 (1973-03-03), got 1479995938: epoch seconds?
    """
    text = text.strip()
    if _DIGITS.fullmatch(text):
        ms = int(text)
        if ms < MIN_EPOCH_MS:
            raise ValueError(f"epoch milliseconds must be at least {MIN_EPOCH_MS} (1973-03-03), got {ms}: "
                             "epoch seconds?")
        return ms
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"timestamp {text!r} is neither ISO-8601 nor integer epoch milliseconds") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    ms = (when - _EPOCH) // _ONE_MS
    if ms <= 0:
        raise ValueError(f"timestamp {text!r} must be after 1970-01-01T00:00:00Z")
    return ms


def format_timestamp(t_ms: int) -> str:
    """ISO-8601 UTC with milliseconds, as :func:`write_recording` writes it.

    >>> format_timestamp(1479995938081)
    '2016-11-24T13:58:58.081Z'
    """
    when = _EPOCH + t_ms * _ONE_MS
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def parse_recording(lines: Iterable[str]) -> Iterator[RecordedReading]:
    """Read a recording's rows lazily from ``lines`` (an open file or a list of lines).

    Blank lines are skipped. Each row is checked as it is read, so a bad row raises only
    when reached; read the whole file first to check it all.

    Raises
    ------
    InvalidRecording
        For a missing or wrong header, a row that is not CSV or has not three fields, a bad timestamp,
        an unknown metric, a value that is not a number within the metric's possible range,
        or a timestamp earlier than the row before.
    """
    rows = _csv_rows(lines)
    line, header = next(rows, (1, None))
    if header is None or tuple(h.strip().lower() for h in header) != HEADER:
        got = repr(",".join(header)) if header is not None else "an empty file"
        raise InvalidRecording(line, f"the header must be {','.join(HEADER)}, got {got}")
    previous = -1
    for line, row in rows:
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) != 3:
            raise InvalidRecording(line, f"expected 3 fields (timestamp,metric,value), got {len(row)}")
        stamp, name, text = (field.strip() for field in row)
        try:
            t_ms = parse_timestamp(stamp)
        except ValueError as exc:
            raise InvalidRecording(line, str(exc)) from None
        metric = METRICS.get(name)
        if metric is None:
            raise InvalidRecording(line, f"metric {name!r} is not in the registry ({_METRIC_NAMES})")
        try:
            value = float(text)
        except ValueError:
            raise InvalidRecording(line, f"value of {name} must be a number, got {text!r}") from None
        if not math.isfinite(value) or not metric.accepts(value):
            raise InvalidRecording(line, f"{name} must lie in [{metric.lowest:g}, {metric.highest:g}] "
                                         f"{metric.unit}, got {text}")
        if t_ms < previous:
            raise InvalidRecording(line, f"timestamp {stamp} is earlier than the row before; sort the file by time")
        previous = t_ms
        yield RecordedReading(t_ms, name, value)


def _csv_rows(lines: Iterable[str]) -> Iterator[tuple[int, list[str]]]:
    """``(line number, fields)`` of each CSV row; a malformed row is an :class:`InvalidRecording`."""
    reader = csv.reader(lines)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # a NUL byte, an unterminated quote at the end, ...
            raise InvalidRecording(reader.line_num, f"not readable as CSV ({exc})") from None
        yield reader.line_num, row


def read_recording(path: Path | str) -> Iterator[RecordedReading]:
    """:func:`parse_recording` over a file (UTF-8, a byte-order mark allowed); lazy, like it."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        yield from parse_recording(f)


def write_recording(readings: Iterable[RecordedReading], out: TextIO) -> int:
    """Write ``readings`` as a recording CSV (ISO-8601 UTC times); return how many rows.

    Examples
    --------
    >>> import io
    >>> buf = io.StringIO()
    >>> write_recording([RecordedReading(1479995938081, "heart_rate", 97.25)], buf)
    1
    >>> print(buf.getvalue(), end="")
    timestamp,metric,value
    2016-11-24T13:58:58.081Z,heart_rate,97.25
    """
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    n = 0
    for r in readings:
        writer.writerow((format_timestamp(r.t_ms), r.metric, repr(r.value)))
        n += 1
    return n


def replay_device_id(patient_id: str) -> str:
    """The default device id of a replayed patient: ``"dev-"`` and 12 hex digits, stable per patient.

    >>> replay_device_id("pt-replay0001")
    'dev-fc740834c605'
    """
    return "dev-" + hashlib.blake2b(f"replay:{patient_id}".encode(), digest_size=6,
                                    person=b"vitalrisk-replay").hexdigest()


def check_id(kind: str, value: str) -> str:
    """``value`` if it looks like a pseudonymous id: 1-64 letters, digits, ``.``, ``_``, ``:`` or ``-``.

    Raises
    ------
    ValueError
        Otherwise; the message states the rule.

    Examples
    --------
    >>> check_id("patient id", "pt-e4174c6515")
    'pt-e4174c6515'
    >>> check_id("patient id", "Jane Doe")
    Traceback (most recent call last):
    ...
    ValueError: patient id must be a pseudonym of 1-64 letters, digits, '.', '_', ':' or '-' (no spaces, never a name), got 'Jane Doe'
    """
    if not valid_id(value):  # the one id rule the pipeline's decoders apply (kernel.limits)
        raise ValueError(f"{kind} must be a pseudonym of 1-64 letters, digits, '.', '_', ':' or '-' "
                         f"(no spaces, never a name), got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class DeviceMessage:
    """One message of a replayed device: envelope, send time (epoch ms) and its readings."""

    patient_id: str
    device_id: str
    seq: int
    sent_ms: int
    readings: tuple[RecordedReading, ...]

    def encode(self) -> bytes:
        """The ``vitalrisk.device/1`` bytes of this message."""
        return encode_device_message(device_id=self.device_id, patient_id=self.patient_id, seq=self.seq,
                                     sent_at=self.sent_ms,
                                     readings=((r.metric, r.t_ms, r.value) for r in self.readings))


def batch_readings(readings: Iterable[RecordedReading], *, patient_id: str, device_id: str,
                   batch_ms: int = DEFAULT_BATCH_MS, shift_ms: int = 0) -> Iterator[DeviceMessage]:
    """Group time-ordered readings into device messages, one per ``batch_ms`` interval with data.

    Parameters
    ----------
    readings
        In non-decreasing time, as :func:`parse_recording` yields them.
    patient_id, device_id
        The envelope's pseudonymous ids.
    batch_ms
        Interval of device time per message, aligned to the epoch. A message is sent at its
        interval's end, and its ``seq`` is the interval's number since the epoch: unique per
        device and interval, so replays of different periods never share one, and a replay
        of a period already sent is dropped by the pipeline as a duplicate.
    shift_ms
        Added to every reading's time (``--shift-to-now``).

    Raises
    ------
    ValueError
        If ``batch_ms`` is not positive, a shifted time is not after the epoch, or more than
        :data:`~kernel.wire.MAX_READINGS_PER_MESSAGE` readings fall in one interval.
    """
    if batch_ms <= 0:
        raise ValueError(f"batch_ms must be positive, got {batch_ms}")

    def shifted() -> Iterator[RecordedReading]:
        for r in readings:
            t = r.t_ms + shift_ms
            if t <= 0:
                raise ValueError(f"shifted time {t} of {r.metric} must be after the epoch")
            yield r if shift_ms == 0 else RecordedReading(t, r.metric, r.value)

    for interval, group in itertools.groupby(shifted(), key=lambda r: r.t_ms // batch_ms):
        batch = tuple(group)
        if len(batch) > MAX_READINGS_PER_MESSAGE:
            raise ValueError(_crowded(len(batch), interval * batch_ms, batch_ms))
        yield DeviceMessage(patient_id, device_id, interval, (interval + 1) * batch_ms, batch)


def _crowded(count: int, start_ms: int, batch_ms: int) -> str:
    return (f"{count} readings fall in the {batch_ms / 1000:g}-s batch from {format_timestamp(start_ms)}, "
            f"but a device message holds at most {MAX_READINGS_PER_MESSAGE}: use a shorter --batch-seconds")


def publish_messages(messages: Iterable[DeviceMessage], *, settings: Settings, producer: Any,
                     speed: float | None = None, origin_ms: int | None = None,
                     progress: Callable[[PublishReport], None] | None = None, progress_every_s: float = 1.0,
                     clock: Callable[[], float] = time.monotonic,
                     sleep: Callable[[float], None] = time.sleep) -> PublishReport:
    """Send every message to the readings topic; pace at ``speed`` × real time, or flat out if ``None``.

    With ``speed``, a message leaves ``(sent_ms - origin_ms) / speed`` after the call began;
    ``origin_ms`` defaults to the first message's ``sent_ms`` (pass the first reading's time
    so that, at speed 1, messages leave as their send time comes). Returns after the
    producer has flushed: every counted message was acknowledged or counted as an error. A broker
    outage blocks the loop until the broker is back; nothing is dropped (see
    :class:`simulators.kafka_publisher.Delivery`).
    """
    if speed is not None and not speed > 0:
        raise ValueError(f"speed must be positive, got {speed}")
    report = PublishReport()
    started = last_progress = clock()
    delivery = Delivery(producer, sleep=sleep, client="replay")

    for message in messages:
        if speed is not None:
            if origin_ms is None:
                origin_ms = message.sent_ms
            delay = started + (message.sent_ms - origin_ms) / 1000.0 / speed - clock()
            if delay > 0:
                sleep(delay)
        delivery.send(settings.readings_topic, message.patient_id.encode(), message.encode(), message.sent_ms)
        report.messages += 1
        report.readings += len(message.readings)
        now = clock()
        if progress is not None and now - last_progress >= progress_every_s:
            report.seconds = now - started
            progress(report)
            last_progress = now
    delivery.flush()
    report.errors = delivery.errors
    report.seconds = clock() - started
    return report


@dataclass(frozen=True, slots=True)
class RecordingSummary:
    """What a whole-file check found: row count and first and last reading times (epoch ms)."""

    rows: int
    first_ms: int
    last_ms: int


def check_recording(path: Path | str, *, batch_ms: int = DEFAULT_BATCH_MS) -> RecordingSummary:
    """Read the whole recording once, so that a bad row stops the replay before anything is sent.

    Also checks that no ``batch_ms`` interval holds more readings than a message may (a
    shift by whole intervals keeps that true).

    Raises
    ------
    InvalidRecording
        At the first bad row, or if the file has no readings.
    ValueError
        If an interval holds too many readings.
    OSError
        If the file cannot be read.
    """
    rows, first, last = 0, 0, 0
    interval, in_interval = -1, 0
    for r in read_recording(path):
        if rows == 0:
            first = r.t_ms
        rows += 1
        last = r.t_ms
        k = r.t_ms // batch_ms
        in_interval = in_interval + 1 if k == interval else 1
        interval = k
        if in_interval > MAX_READINGS_PER_MESSAGE:
            raise ValueError(_crowded(in_interval, k * batch_ms, batch_ms))
    if rows == 0:
        raise InvalidRecording(1, "the recording has a header but no readings")
    return RecordingSummary(rows, first, last)


def run_replay(settings: Settings, csv_path: Path, *, patient_id: str, device_id: str | None = None,
               speed: float | None = None, shift_to_now: bool = False, batch_s: float = 60.0,
               producer: Any = None, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """``vitalrisk replay``: check the recording, then publish it; return the exit status.

    A bad argument or row ends in one line on stderr (exit 2); an unreachable broker raises
    :class:`~kernel.errors.ServiceUnavailable` (``vitalrisk`` prints one line, exit 1).
    ``producer`` replaces the Kafka producer (tests).
    """
    out, err = stdout or sys.stdout, stderr or sys.stderr
    try:
        check_id("--patient", patient_id)
        device = check_id("--device", device_id) if device_id is not None else replay_device_id(patient_id)
        batch_ms = round(batch_s * 1000)
        if batch_ms < 1:
            raise ValueError(f"--batch-seconds must be at least 0.001, got {batch_s:g}")
        if speed is not None and not speed > 0:
            raise ValueError(f"--speed must be positive, got {speed:g}")
        summary = check_recording(csv_path, batch_ms=batch_ms)
    except InvalidRecording as exc:
        err.write(f"vitalrisk: {csv_path}: {exc}\n")
        return 2
    except ValueError as exc:
        err.write(f"vitalrisk: {exc}\n")
        return 2
    except OSError as exc:
        err.write(f"vitalrisk: cannot read {csv_path}: {exc.strerror or exc}\n")
        return 2
    # The adapter reads the clock once; everything below takes the shift as an argument. Whole
    # batches keep every reading in the same place within its batch (and the check above true).
    shift_ms = (int(time.time() * 1000) - summary.first_ms) // batch_ms * batch_ms if shift_to_now else 0
    own_producer = producer is None
    if own_producer:
        producer = make_producer(settings)  # an unreachable broker: ServiceUnavailable, one line and exit 1

    messages = batch_readings(read_recording(csv_path), patient_id=patient_id, device_id=device,
                              batch_ms=batch_ms, shift_ms=shift_ms)
    try:
        def show(report: PublishReport) -> None:
            err.write("\r" + progress_line(report))

        report = publish_messages(messages, settings=settings, producer=producer, speed=speed,
                                  origin_ms=summary.first_ms + shift_ms, progress=show)
    finally:
        if own_producer:
            producer.close()
    err.write("\r" + progress_line(report) + "\n")
    span_s = (summary.last_ms - summary.first_ms) / 1000
    out.write(f"replayed {summary.rows:,} readings ({span_s:,.0f} s of recording, from "
              f"{format_timestamp(summary.first_ms + shift_ms)}) as device {device} of {patient_id} "
              f"to {settings.readings_topic} in {report.messages:,} messages, {report.seconds:.1f} s\n")
    return 1 if report.errors else 0
