"""The load generator: a cohort's device messages at a target rate of readings per second.

``vitalrisk simulate --patients 100000 --rate 50000`` keeps 50,000 readings/s flowing into
Kafka for as long as it runs. Three parts, each testable alone:

- :class:`LoadCohort` makes the messages: one wrist-device message per patient per *round*
  (a simulated minute, about 15 readings), with the cohort simulator's physiology,
  deterioration episodes and measurement noise, encoded straight to JSON bytes.
- :class:`TokenBucket` paces them: a reading costs a token, tokens accrue at the target rate
  and at most ``burst_s`` seconds of them are saved up, so a stall is caught up briefly but
  never turns into a long burst.
- :func:`run_load` drives both against a :class:`Sender` and measures, second by second,
  the achieved rate and where the time went (generating, sending, waiting for the pacer),
  so :meth:`LoadReport.shortfall` can say whether a machine that misses the target is
  *generator-bound*, *producer-bound* (kafka-python's own work) or *broker-bound*
  (*gateway-bound* through the ingest gateway).

**Time.** Simulated time runs at whatever speed the target needs (``rate /
natural_rate``), so every timestamp is mapped onto the wall clock, one round at a time: the
round's simulated minute is squeezed (or stretched) into the span ``E`` just before its
messages start to go out, where ``E`` is how long the previous round took to send, at most
``max_span_ms`` (the pipeline's grace period). So readings are at most ``E`` old when sent,
never in the future, a device's event time never goes backwards, and no reading arrives after
its window has closed. ``sent_at`` is the wall-clock time the message is encoded; ``seq``
is the round number.

**Memory.** The cohort is numpy arrays and one ``bytes`` envelope prefix per patient (about
400 bytes per patient); a round's numbers are drawn for everybody (tens of ms for 100,000
patients) but measured and encoded ``chunk`` patients at a time, as they are sent. Nothing
holds a round's messages, unlike :func:`simulators.cohort.simulate`, which builds a whole
minute of message dicts (about 1 GB for 100,000 patients): ``vitalrisk simulate --patients
100000 --rate 50000`` runs in about 150 MB.

**Speed.** Encoding fills one ``%``-template per combination of due metrics from an integer
matrix, about 6 µs a message against about 45 µs for the message dicts and ``json.dumps`` of
the simulator's path; with the physiology, about 10 µs a message, over a million readings/s
on one core. kafka-python spends several times that per message (its per-record Python, the
compression and CRC-32C checksums: ``lz4`` and ``crc32c`` are installed for them), so it is
what limits a run (see BENCHMARKS.md).

Wrist devices only: no blood-pressure cuffs and no faults, so every message is valid and
every message has the same shape as a healthy device's.

Examples
--------
>>> clock = iter(range(1_767_571_200_000, 1_767_571_300_000, 7)).__next__
>>> cohort = LoadCohort(3, seed=1, wall_ms=clock)
>>> records = list(cohort.records(minutes=2))
>>> len(records), sorted({r.key for r in records}) == sorted(p.encode() for p in cohort.patient_ids)
(6, True)
>>> from kernel.wire import decode_device_message
>>> batch = decode_device_message(records[0].value)
>>> len(batch.readings) == records[0].readings, batch.rejected
(True, [])
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, Protocol

import numpy as np
import numpy.typing as npt

from simulators.deterioration import Episode, EpisodeEffects, Incidence, plan_episodes
from simulators.devices import (
    BODY_TEMPERATURE,
    DEFAULT_SPO2_BIAS_BY_SKIN_TONE,
    DEVICE_SCHEMA,
    HEART_RATE,
    RESPIRATORY_RATE,
    SPO2,
    STEP_COUNT,
    DeviceSchedule,
    device_id,
    measure_wrist,
    spo2_bias_pct,
)
from simulators.physiology import MINUTES_PER_DAY, PhysiologyState, Vitals, advance
from simulators.population import sample_cohort, seeded_rng
from kernel.errors import VitalsError
from kernel.vocabulary import Metric

MS_PER_MINUTE = 60_000
#: A run below this share of its target rate is short of it.
SHORTFALL_FRACTION = 0.95
#: Consecutive whole seconds below :data:`SHORTFALL_FRACTION` that make a shortfall sustained.
SUSTAINED_S = 5
#: Tokens the pacer saves up, in seconds of the target rate.
BURST_S = 0.25
#: Shorter waits are not slept but carried as a debt: a sleep costs a system call and
#: overshoots by tens of microseconds, and the bucket repays the debt at the next longer wait.
MIN_SLEEP_S = 0.001
#: Patients measured and encoded at once.
CHUNK_PATIENTS = 512
#: Episodes are planned a week of simulated time at a time.
HORIZON_MS = 7 * MINUTES_PER_DAY * MS_PER_MINUTE

Bound = Literal["generator-bound", "producer-bound", "broker-bound", "gateway-bound"]

_LOAD_DOMAIN = 0x4C4F4144  # "LOAD": random streams apart from the cohort simulator's
_RNG_PHYSIOLOGY = 1
_RNG_WRIST_NOISE = 2
_RNG_DEVICES = 3


class DeviceRecord(NamedTuple):
    """One encoded device message: the Kafka key (patient id), value, and its readings."""

    key: bytes
    value: bytes
    readings: int


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _reading_template(metric: Metric, value: str) -> str:
    """``%``-template of one reading; the unit is JSON-quoted and ``%``-escaped (SpO2 is ``"%"``)."""
    unit = json.dumps(metric.unit).replace("%", "%%")
    return f'{{"metric":{json.dumps(metric.name)},"t":%d,"value":{value},"unit":{unit}}}'


class LoadCohort:
    """Device messages of ``patients`` wrist devices, a round (simulated minute) at a time.

    Parameters
    ----------
    patients
        Number of patients (one wrist device each), at least 1.
    seed
        Non-negative seed: the same seed gives the same patients (the same ids as
        :func:`simulators.cohort.population`) and the same values; timestamps follow the clock.
    schedule
        Sampling schedule; its latency and cuff settings do not apply.
    incidence
        Deterioration episode rates, planned :data:`HORIZON_MS` of simulated time at a time.
    spo2_skin_bias
        Whether pulse oximetry over-reads SpO2 by skin tone, as in the cohort simulator.
    max_span_ms
        Most wall-clock time one round's readings are spread over; at most the pipeline's
        grace period, so that no reading arrives after its window closed.
    chunk
        Patients measured and encoded at once.
    wall_ms
        The wall clock, epoch ms (injectable for tests).

    Raises
    ------
    ValueError
        If a value breaks its rule; the message names the rule and the value.

    Examples
    --------
    >>> cohort = LoadCohort(1_000, seed=42)
    >>> round(cohort.readings_per_message, 1), round(cohort.natural_rate)  # readings/s in real time
    (15.2, 253)
    >>> LoadCohort(0)
    Traceback (most recent call last):
    ...
    ValueError: patients must be at least 1, got 0
    """

    def __init__(self, patients: int, *, seed: int = 42, schedule: DeviceSchedule | None = None,
                 incidence: Incidence | None = None, spo2_skin_bias: bool = True,
                 max_span_ms: int = 30_000, chunk: int = CHUNK_PATIENTS,
                 wall_ms: Callable[[], int] = _wall_ms) -> None:
        if patients < 1:
            raise ValueError(f"patients must be at least 1, got {patients}")
        if seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed}")
        if max_span_ms < 1:
            raise ValueError(f"max_span_ms must be at least 1, got {max_span_ms}")
        if chunk < 1:
            raise ValueError(f"chunk must be at least 1, got {chunk}")
        self.patients = patients
        self.seed = seed
        self.schedule = schedule or DeviceSchedule()
        self.incidence = incidence or Incidence()
        self.max_span_ms = max_span_ms
        self.chunk = chunk
        self._wall_ms = wall_ms
        self.cohort = sample_cohort(patients, seed=seed)
        self._bias = spo2_bias_pct(self.cohort.skin_tone, DEFAULT_SPO2_BIAS_BY_SKIN_TONE,
                                   enabled=spo2_skin_bias)
        self._keys = [pid.encode() for pid in self.cohort.ids]
        self.device_ids = tuple(device_id(seed, i, "wrist", 0) for i in range(patients))
        # Everything before the seq is fixed per device: encoded once, not once a message.
        self._prefixes = [
            f'{{"schema":{json.dumps(DEVICE_SCHEMA)},"device_id":"{device}","patient_id":"{pid}","seq":'.encode()
            for device, pid in zip(self.device_ids, self.cohort.ids)
        ]
        self._per_minute = self.schedule.heart_rate_per_minute
        self._every_min = tuple(interval // MS_PER_MINUTE for interval in (
            self.schedule.oxygen_saturation_interval_ms, self.schedule.respiratory_rate_interval_ms,
            self.schedule.body_temperature_interval_ms))  # fmt: skip
        self._templates = self._make_templates()

    @property
    def patient_ids(self) -> tuple[str, ...]:
        """The patients' ids, in index order."""
        return self.cohort.ids

    @property
    def devices(self) -> list[tuple[str, str]]:
        """``(device_id, patient_id)`` of every wrist device, in index order: what
        ``vitalrisk devices enroll --cohort`` enrols for a run through the gateway.

        >>> cohort = LoadCohort(2, seed=7)
        >>> [patient for _, patient in cohort.devices] == list(cohort.patient_ids)
        True
        """
        return list(zip(self.device_ids, self.cohort.ids))

    @property
    def readings_per_message(self) -> float:
        """Mean readings per device message without faults."""
        return self.schedule.wrist_readings_per_hour() / 60.0

    @property
    def natural_rate(self) -> float:
        """Readings/s the cohort produces in real time; a target above it speeds simulated time up."""
        return self.patients * self.readings_per_message / 60.0

    def records(self, *, rate: float | None = None, minutes: int | None = None) -> Iterator[DeviceRecord]:
        """Every device's message, round after round, encoded as it is asked for.

        The set-up (random streams, the first horizons of episodes) happens here, not at the
        first message, so that a paced run does not start behind.

        Parameters
        ----------
        rate
            The target readings/s, used only to size the first round's time span (later
            rounds take the span the previous one took); ``None`` when unpaced.
        minutes
            Rounds (simulated minutes) to yield; ``None`` for no end.
        """
        if minutes is not None and minutes < 1:
            raise ValueError(f"minutes must be at least 1, got {minutes}")
        n = self.patients
        cohort = self.cohort
        phys_rng = seeded_rng(self.seed, _LOAD_DOMAIN, _RNG_PHYSIOLOGY)
        wrist_rng = seeded_rng(self.seed, _LOAD_DOMAIN, _RNG_WRIST_NOISE)
        dev_rng = seeded_rng(self.seed, _LOAD_DOMAIN, _RNG_DEVICES)
        phase = dev_rng.integers(0, self.schedule.heart_rate_interval_ms, n)
        minute_phase = dev_rng.integers(0, 1 << 30, n)
        # Simulated time starts at the current minute, so day and night match the wall clock.
        start_ms = self._wall_ms() // MS_PER_MINUTE * MS_PER_MINUTE
        state = PhysiologyState.start(cohort, phys_rng, int(start_ms // MS_PER_MINUTE % MINUTES_PER_DAY))
        episodes = _EpisodePlan(self, start_ms)
        if rate is not None:
            first_span_ms = min(float(self.max_span_ms), 1000.0 * n * self.readings_per_message / rate)
        else:
            first_span_ms = min(float(self.max_span_ms), 1000.0)

        def rounds() -> Iterator[DeviceRecord]:
            span_ms = first_span_ms
            previous_ms: int | None = None
            k = 0
            while minutes is None or k < minutes:
                t0 = start_ms + k * MS_PER_MINUTE
                minute_of_day = int(t0 // MS_PER_MINUTE % MINUTES_PER_DAY)
                if k and minute_of_day == 0:
                    state.new_day(phys_rng)
                vitals = advance(state, cohort, minute_of_day=minute_of_day,
                                 effects=episodes.effects_at(t0 + MS_PER_MINUTE // 2), rng=phys_rng)
                abs_minute = t0 // MS_PER_MINUTE + minute_phase
                due = [(abs_minute % every == 0) for every in self._every_min]
                now = self._wall_ms()
                if previous_ms is not None:
                    span_ms = float(min(self.max_span_ms, max(1, now - previous_ms)))
                previous_ms = now
                # This round's minute maps onto [now - span, now]: a reading's offset in the
                # minute is scaled by span / minute.
                scale = span_ms / MS_PER_MINUTE
                origin = now - round(span_ms)
                for lo in range(0, n, self.chunk):
                    yield from self._encode(np.arange(lo, min(lo + self.chunk, n)), k, vitals, due, phase,
                                            origin, scale, wrist_rng)
                k += 1

        return rounds()

    def _encode(self, rows: npt.NDArray[np.int64], seq: int, vitals: Vitals,
                due: list[npt.NDArray[np.bool_]], phase: npt.NDArray[np.int64], origin: int, scale: float,
                rng: np.random.Generator) -> Iterator[DeviceRecord]:
        """Measure and encode one chunk of patients' messages for one round."""
        due_spo2, due_rr, due_temp = due
        pm = self._per_minute
        w = measure_wrist(
            rows, true_hr=vitals.heart_rate_bpm, hr_irregularity=vitals.hr_irregularity_bpm,
            steps=vitals.steps_per_min, true_spo2=vitals.spo2_pct, spo2_bias=self._bias,
            true_rr=vitals.respiratory_rate_per_min, true_temp=vitals.body_temperature_c,
            due_spo2=due_spo2, due_rr=due_rr, due_temp=due_temp, per_minute=pm, rng=rng)
        m = rows.size
        ph = phase[rows]
        mat = np.empty((m, 2 * pm + 12), dtype=np.int64)
        mat[:, 0] = seq
        mat[:, 1] = self._wall_ms()
        steps = self.schedule.heart_rate_interval_ms * np.arange(pm)
        mat[:, 2:2 + 2 * pm:2] = origin + np.rint((ph[:, None] + steps[None, :]) * scale)
        mat[:, 3:3 + 2 * pm:2] = _whole(w.heart_rate_bpm, HEART_RATE)
        c = 2 + 2 * pm
        base = origin + np.rint(ph * scale)
        mat[:, c] = origin
        mat[:, c + 1] = _whole(w.steps, STEP_COUNT)
        mat[:, c + 2] = base
        mat[:, c + 3] = _whole(w.spo2_pct, SPO2)
        mat[:, c + 4] = base
        mat[:, c + 5] = _whole(w.respiratory_rate_per_min, RESPIRATORY_RATE)
        mat[:, c + 6] = base
        centi = np.rint(100.0 * _bounded(w.body_temperature_c, BODY_TEMPERATURE))
        mat[:, c + 7], mat[:, c + 8] = np.divmod(np.nan_to_num(centi).astype(np.int64), 100)
        mat[:, c + 9] = mat[:, c + 8] // 10
        temp = due_temp[rows]
        code = (due_spo2[rows].astype(np.int64) | due_rr[rows] << 1 | temp << 2
                | (temp & (mat[:, c + 8] % 10 == 0)) << 3)
        keys, prefixes = self._keys, self._prefixes
        for combo in np.unique(code).tolist():
            cols, template, readings = self._templates[combo]
            sel = np.flatnonzero(code == combo)
            values = mat[sel][:, cols].tolist()
            for i, row in zip(rows[sel].tolist(), values):
                yield DeviceRecord(keys[i], prefixes[i] + template % tuple(row), readings)

    def _make_templates(self) -> list[tuple[npt.NDArray[np.int64], bytes, int]]:
        """Per combination of due metrics (bit 0 SpO2, 1 respiratory rate, 2 temperature, 3 a
        temperature with one decimal): the matrix columns, the ``%``-template after the prefix,
        and the readings count. Bit 3 makes 36.5 come out as ``36.5``, not ``36.50``: the
        bytes are exactly what ``json.dumps`` writes for the same message."""
        pm = self._per_minute
        c = 2 + 2 * pm
        whole = "%d.0"  # values are whole numbers; JSON floats like json.dumps writes them
        fixed = [_reading_template(HEART_RATE, whole)] * pm + [_reading_template(STEP_COUNT, whole)]
        optional = [
            ([c + 2, c + 3], _reading_template(SPO2, whole)),
            ([c + 4, c + 5], _reading_template(RESPIRATORY_RATE, whole)),
            ([c + 6, c + 7, c + 8], _reading_template(BODY_TEMPERATURE, "%d.%02d")),
        ]
        one_decimal = ([c + 6, c + 7, c + 9], _reading_template(BODY_TEMPERATURE, "%d.%d"))
        out = []
        for combo in range(16):
            cols = list(range(c + 2))
            parts = list(fixed)
            for bit, (more, part) in enumerate(optional):
                if combo >> bit & 1:
                    if bit == 2 and combo & 8:
                        more, part = one_decimal
                    cols += more
                    parts.append(part)
            template = '%d,"sent_at":%d,"readings":[' + ",".join(parts) + "]}"
            out.append((np.array(cols), template.encode(), len(parts)))
        return out


def _bounded(values: npt.NDArray[np.float64], metric: Metric) -> npt.NDArray[np.float64]:
    return np.minimum(np.maximum(values, metric.lowest), metric.highest)


def _whole(values: npt.NDArray[np.float64], metric: Metric) -> npt.NDArray[np.int64]:
    """Rounded, bounded values as integers; NaN (metric not due) becomes 0 and is not sent."""
    return np.nan_to_num(_bounded(np.rint(values), metric)).astype(np.int64)


class _EpisodePlan:
    """Deterioration effects over an unbounded run, planning a horizon of episodes at a time.

    The walker at any time holds the episodes of the previous, current and next horizon, so
    a prodrome that starts before its onset's horizon and an episode that outlasts its own
    are both played out.
    """

    def __init__(self, load: LoadCohort, start_ms: int) -> None:
        self._load = load
        self._start_ms = start_ms
        self._index = {pid: i for i, pid in enumerate(load.patient_ids)}
        self._plans: dict[int, list[Episode]] = {}
        self._horizon = 0
        self._walker = self._walk(0, start_ms)

    def effects_at(self, t_ms: int) -> npt.NDArray[np.float64]:
        """The ``(patients, N_EFFECTS)`` effects at ``t_ms``; times must not decrease."""
        h = (t_ms - self._start_ms) // HORIZON_MS
        if h != self._horizon:
            self._walker = self._walk(h, t_ms)
            self._horizon = h
        return self._walker.at(t_ms)

    def _walk(self, h: int, t_ms: int) -> EpisodeEffects:
        episodes = [e for j in (h - 1, h, h + 1) for e in self._plan(j) if e.end_ms > t_ms]
        self._plans = {j: p for j, p in self._plans.items() if j >= h - 1}
        return EpisodeEffects(episodes, self._index, self._load.patients)

    def _plan(self, h: int) -> list[Episode]:
        if h not in self._plans:
            load = self._load
            # Horizon 0 draws with the cohort's seed; the others with seeds of their own.
            seed = load.seed if h == 0 else (h + 1) << 64 | load.seed
            self._plans[h] = plan_episodes(load.cohort, load.incidence, seed=seed,
                                           start_ms=self._start_ms + h * HORIZON_MS, duration_ms=HORIZON_MS)
        return self._plans[h]


class TokenBucket:
    """Paces sends to ``rate`` tokens per second, saving up at most ``burst`` tokens.

    :meth:`take` always succeeds and returns how long the caller should wait before the
    send it pays for: the balance may go negative, and the debt is repaid as tokens accrue.
    Waiting out every debt holds the mean rate at ``rate`` exactly; the cap on savings means
    a stalled caller catches up by at most ``burst`` tokens.

    Parameters
    ----------
    rate
        Tokens (readings) per second, positive.
    burst
        Most tokens saved up; positive.
    clock
        Monotonic seconds (injectable for tests).

    Examples
    --------
    >>> now = [0.0]
    >>> bucket = TokenBucket(100.0, burst=10.0, clock=lambda: now[0])
    >>> bucket.take(15)  # starts empty: 15 tokens take 0.15 s
    0.15
    >>> now[0] = 10.0    # idle for 10 s saves up only 10 tokens (the debt of 15 is repaid first)
    >>> bucket.take(15)
    0.05
    >>> TokenBucket(0, burst=1)
    Traceback (most recent call last):
    ...
    ValueError: rate must be a positive number of readings per second, got 0
    """

    def __init__(self, rate: float, *, burst: float, clock: Callable[[], float] = time.perf_counter) -> None:
        if not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"rate must be a positive number of readings per second, got {rate:g}")
        if not burst > 0:
            raise ValueError(f"burst must be positive, got {burst:g}")
        self.rate = float(rate)
        self.burst = float(burst)
        self._clock = clock
        self._tokens = 0.0
        self._last = clock()

    def take(self, tokens: float) -> float:
        """Spend ``tokens``; return the seconds to wait before acting on them (0.0 if none)."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate) - tokens
        self._last = now
        return -self._tokens / self.rate if self._tokens < 0 else 0.0


class Sender(Protocol):
    """Where :func:`run_load` sends records (:class:`simulators.kafka_publisher.KafkaSender`)."""

    @property
    def acked_messages(self) -> int: ...
    @property
    def acked_readings(self) -> int: ...
    @property
    def errors(self) -> int: ...
    @property
    def wait_s(self) -> float: ...  # time send() spent blocked waiting for the broker's acks

    def send(self, key: bytes, value: bytes, readings: int) -> None: ...
    def flush(self, timeout_s: float) -> None: ...  # raises a VitalsError when acks are missing


@dataclass(frozen=True, slots=True)
class Shortfall:
    """A sustained miss of the target rate, and which part of the generator held it back.

    The shares are of the wall time in the shortfall's seconds.
    """

    target_rate: float
    sustained_rate: float
    seconds: int
    bound: Bound
    generate_share: float
    send_share: float  # inside Sender.send, waiting for acks included
    wait_share: float  # of which blocked waiting for the broker's acknowledgements (the gateway's answers)

    def line(self) -> str:
        """The one line that says so.

        >>> Shortfall(50_000, 31_200, 12, "producer-bound", 0.21, 0.74, 0.02).line()
        'this machine cannot reach 50,000 readings/s: sustained 31,200 (producer-bound: 74% of the time in producer.send, 2% waiting for acks; 21% generating)'
        >>> Shortfall(50_000, 14_000, 12, "gateway-bound", 0.02, 0.9, 0.89).line()
        'this machine cannot reach 50,000 readings/s: sustained 14,000 (gateway-bound: 90% of the time in send, 89% waiting for the gateway; 2% generating)'
        """
        send, waiting = ("send", "the gateway") if self.bound == "gateway-bound" else ("producer.send", "acks")
        return (f"this machine cannot reach {self.target_rate:,.0f} readings/s: sustained "
                f"{self.sustained_rate:,.0f} ({self.bound}: {self.send_share:.0%} of the time in "
                f"{send}, {self.wait_share:.0%} waiting for {waiting}; {self.generate_share:.0%} generating)")


@dataclass(slots=True)
class LoadReport:
    """What a load run sent, what the broker acknowledged, and where the time went.

    ``per_second`` holds the readings sent in each whole second of the run (the last,
    partial second is left out); ``generate_per_second``, ``send_per_second`` and
    ``wait_per_second`` the seconds spent generating, inside ``Sender.send``, and blocked
    in it waiting for acknowledgements, in each of them.
    """

    target_rate: float | None
    via_gateway: bool = False  # sent through the ingest gateway: its answers are the acknowledgements
    messages: int = 0
    readings: int = 0
    acked_messages: int = 0
    acked_readings: int = 0
    errors: int = 0
    elapsed_s: float = 0.0
    generate_s: float = 0.0
    send_s: float = 0.0
    broker_wait_s: float = 0.0
    idle_s: float = 0.0
    cpu_s: float = 0.0  # CPU time of the whole process (every thread) while sending
    per_second: list[int] = field(default_factory=list)
    generate_per_second: list[float] = field(default_factory=list)
    send_per_second: list[float] = field(default_factory=list)
    wait_per_second: list[float] = field(default_factory=list)
    interrupted: bool = False
    flush_error: str | None = None

    @property
    def mean_rate(self) -> float:
        """Readings/s from the first send to the last."""
        return self.readings / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def steady_seconds(self) -> list[int]:
        """Readings sent per whole second, without the first (connecting, first round)."""
        return self.per_second[1:]

    def rate_percentile(self, q: float) -> float | None:
        """Nearest-rank percentile ``q`` (0-100) of the per-second rate; ``None`` under 2 s.

        >>> LoadReport(None, per_second=[5, 10, 20, 30, 40]).rate_percentile(50)
        20.0
        """
        return _percentile(self.steady_seconds(), q)

    def shortfall(self, *, sustain_s: int = SUSTAINED_S, fraction: float = SHORTFALL_FRACTION) -> Shortfall | None:
        """The longest run of at least ``sustain_s`` whole seconds below ``fraction`` of the
        target (the first second, connecting, aside), or ``None``; always ``None`` unpaced.

        The bound is where those seconds went: more of them generating messages than inside
        ``producer.send`` is *generator-bound*; otherwise *broker-bound* (*gateway-bound* for a
        report ``via_gateway``) when ``send`` was mostly blocked waiting for acknowledgements
        (the gateway's answers), and *producer-bound* when it was mostly
        the client's own work (kafka-python's per-record Python, competing with its I/O
        thread's compression and checksums for the interpreter).

        >>> r = LoadReport(100.0, per_second=[50, 60, 60, 60, 99, 99],
        ...                generate_per_second=[0.0, 0.25, 0.25, 0.25, 0.0, 0.0],
        ...                send_per_second=[0.0, 0.75, 0.75, 0.75, 0.0, 0.0],
        ...                wait_per_second=[0.0, 0.5, 0.5, 0.5, 0.0, 0.0])
        >>> r.shortfall(sustain_s=3)
        Shortfall(target_rate=100.0, sustained_rate=60.0, seconds=3, bound='broker-bound', generate_share=0.25, send_share=0.75, wait_share=0.5)
        >>> r.shortfall(sustain_s=4) is None
        True
        """
        if self.target_rate is None:
            return None
        limit = fraction * self.target_rate
        best: tuple[int, int] = (0, 0)  # (length, end) of the longest streak, seconds from 1
        streak = 0
        for s, readings in enumerate(self.per_second[1:], start=1):
            streak = streak + 1 if readings < limit else 0
            if streak > best[0]:
                best = (streak, s + 1)
        length, end = best
        if length < max(1, sustain_s):
            return None
        span = slice(end - length, end)
        gen = sum(self.generate_per_second[span])
        send = sum(self.send_per_second[span])
        wait = sum(self.wait_per_second[span])
        waiting: Bound = "gateway-bound" if self.via_gateway else "broker-bound"
        bound: Bound = ("generator-bound" if gen > send else waiting if wait > send - wait else "producer-bound")
        return Shortfall(self.target_rate, sum(self.per_second[span]) / length, length, bound,
                         gen / length, send / length, wait / length)


def _percentile(values: list[int], q: float) -> float | None:
    if len(values) < 1:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return float(ordered[min(rank, len(ordered)) - 1])


def run_load(records: Iterable[DeviceRecord], sender: Sender, *, rate: float | None,
             duration_s: float | None = None, burst_s: float = BURST_S, flush_timeout_s: float = 30.0,
             progress: Callable[[LoadReport], None] | None = None, progress_every_s: float = 1.0,
             clock: Callable[[], float] = time.perf_counter,
             sleep: Callable[[float], None] = time.sleep,
             cpu_clock: Callable[[], float] = time.process_time, via_gateway: bool = False) -> LoadReport:
    """Send ``records`` at ``rate`` readings/s (``None``: as fast as possible), then flush.

    Stops when ``records`` ends, after ``duration_s`` seconds, or at Ctrl-C (the report
    says ``interrupted``); then waits up to ``flush_timeout_s`` for the acknowledgements.

    Parameters
    ----------
    records
        Encoded messages, e.g. :meth:`LoadCohort.records`.
    sender
        Where they go.
    rate
        Target readings per second, or ``None`` for unpaced.
    duration_s
        Wall-clock seconds to run; ``None`` for no limit.
    burst_s
        Seconds of the target rate the pacer may save up to catch up after a stall.
    progress
        Called with the report about every ``progress_every_s`` seconds.
    clock, sleep, cpu_clock
        Monotonic seconds, a sleep, and the process's CPU seconds (injectable for tests).
    via_gateway
        ``sender`` posts to the ingest gateway: the report says *gateway-bound*, not *broker-bound*.

    Returns
    -------
    LoadReport
        Counts, acknowledgements, and time per second.
    """
    if duration_s is not None and not duration_s > 0:
        raise ValueError(f"duration_s must be positive, got {duration_s:g}")
    report = LoadReport(target_rate=rate, via_gateway=via_gateway)
    bucket = None if rate is None else TokenBucket(rate, burst=max(rate * burst_s, 1.0), clock=clock)
    cpu_start = cpu_clock()
    start = clock()
    deadline = math.inf if duration_s is None else start + duration_s
    next_progress = start + progress_every_s
    second_end = start + 1.0  # end of the second being counted
    sec_readings, sec_gen, sec_send, sec_wait_from = 0, 0.0, 0.0, sender.wait_s
    end = start
    it = iter(records)
    try:
        while True:
            t0 = clock()
            if t0 >= deadline:
                break
            record = next(it, None)
            t1 = clock()
            report.generate_s += t1 - t0
            sec_gen += t1 - t0
            if record is None:
                break
            if bucket is not None:
                wait = bucket.take(record.readings)
                if wait >= MIN_SLEEP_S:
                    sleep(wait)
            t2 = clock()
            report.idle_s += t2 - t1
            sender.send(record.key, record.value, record.readings)
            t3 = end = clock()
            report.send_s += t3 - t2
            report.messages += 1
            report.readings += record.readings
            while t3 >= second_end:  # close the finished second(s); a stall leaves zeros
                waited = sender.wait_s
                report.per_second.append(sec_readings)
                report.generate_per_second.append(sec_gen)
                report.send_per_second.append(sec_send)
                report.wait_per_second.append(waited - sec_wait_from)
                sec_readings, sec_gen, sec_send, sec_wait_from = 0, 0.0, 0.0, waited
                second_end += 1.0
            sec_readings += record.readings
            sec_send += t3 - t2
            if progress is not None and t3 >= next_progress:
                _update(report, sender, end - start)
                progress(report)
                next_progress = t3 + progress_every_s
    except KeyboardInterrupt:
        report.interrupted = True
    report.cpu_s = cpu_clock() - cpu_start
    _update(report, sender, end - start)
    try:
        sender.flush(flush_timeout_s)
    except VitalsError as exc:  # reported, not raised: the counts are still worth printing
        report.flush_error = str(exc)
    _update(report, sender, end - start)
    return report


def _update(report: LoadReport, sender: Sender, elapsed_s: float) -> None:
    report.elapsed_s = elapsed_s
    report.acked_messages = sender.acked_messages
    report.acked_readings = sender.acked_readings
    report.errors = sender.errors
    report.broker_wait_s = sender.wait_s


def progress_line(report: LoadReport) -> str:
    """The live status line: elapsed, last whole second's rate, counts and errors.

    >>> r = LoadReport(50_000.0, messages=6_600, readings=100_320, acked_messages=6_000,
    ...                elapsed_s=2.01, per_second=[48_000, 50_100])
    >>> progress_line(r)
    '   2.0 s  50,100 readings/s (target 50,000)  sent 6,600 messages, 100,320 readings  acked 6,000  errors 0'
    """
    current = report.per_second[-1] if report.per_second else report.mean_rate
    target = f" (target {report.target_rate:,.0f})" if report.target_rate is not None else ""
    return (f"{report.elapsed_s:6.1f} s  {current:,.0f} readings/s{target}  sent {report.messages:,} messages, "
            f"{report.readings:,} readings  acked {report.acked_messages:,}  errors {report.errors:,}")


def format_report(report: LoadReport, *, patients: int | None = None) -> str:
    """The final report: sent, acknowledged, errors, rates, the time split, and the verdict.

    >>> r = LoadReport(2_000.0, messages=400, readings=6_080, acked_messages=400, acked_readings=6_080,
    ...                elapsed_s=3.04, generate_s=0.01, send_s=0.04, idle_s=2.99,
    ...                per_second=[2_010, 1_990, 2_005])
    >>> print(format_report(r, patients=100))
    load generator report
      patients            100
      target rate         2,000 readings/s
      elapsed             3.0 s
      sent                400 messages, 6,080 readings
      acknowledged        400 messages, 6,080 readings
      errors              0
      achieved rate       2,000 readings/s mean (100.0% of target)
      per-second rate     p1 1,990, p50 1,990, p99 2,005 readings/s
      time                generating 0%, in producer.send 1% (waiting for acks 0%), pacing 98%
      CPU                 0.00 cores (all threads)
    """
    elapsed = report.elapsed_s or 1e-9
    rows: list[tuple[str, str]] = []
    if patients is not None:
        rows.append(("patients", f"{patients:,}"))
    target = report.target_rate
    rows += [
        ("target rate", "unpaced" if target is None else f"{target:,.0f} readings/s"),
        ("elapsed", f"{report.elapsed_s:.1f} s" + (" (interrupted)" if report.interrupted else "")),
        ("sent", f"{report.messages:,} messages, {report.readings:,} readings"),
        ("acknowledged", f"{report.acked_messages:,} messages, {report.acked_readings:,} readings"),
        ("errors", f"{report.errors:,}"),
        ("achieved rate", f"{report.mean_rate:,.0f} readings/s mean"
         + ("" if target is None else f" ({report.mean_rate / target:.1%} of target)")),
    ]
    p1, p50, p99 = (report.rate_percentile(q) for q in (1, 50, 99))
    if p1 is not None and p50 is not None and p99 is not None:
        rows.append(("per-second rate", f"p1 {p1:,.0f}, p50 {p50:,.0f}, p99 {p99:,.0f} readings/s"))
    send, waiting = ("send", "the gateway") if report.via_gateway else ("producer.send", "acks")
    rows.append(("time", f"generating {report.generate_s / elapsed:.0%}, in {send} "
                         f"{report.send_s / elapsed:.0%} (waiting for {waiting} {report.broker_wait_s / elapsed:.0%}), "
                         f"pacing {report.idle_s / elapsed:.0%}"))
    # Unpaced or short of the target, well under one core means other processes had the CPU.
    rows.append(("CPU", f"{report.cpu_s / elapsed:.2f} cores (all threads)"))
    if report.flush_error is not None:
        rows.append(("not acknowledged", report.flush_error))
    lines = ["load generator report", *(f"  {label:<20}{text}" for label, text in rows)]
    shortfall = report.shortfall()
    if shortfall is not None:
        lines.append(shortfall.line())
    return "\n".join(lines)
