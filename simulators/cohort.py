"""The simulated cohort: one seeded, deterministic stream of device messages and outcomes.

:func:`simulate` runs the whole simulation a minute at a time, vectorised across patients
with numpy, and yields :class:`SimulatedMessage` events in non-decreasing ``sent_ms`` order:
device messages (``kind="reading"``, payload a wire dict, or ``bytes`` when malformed) and
outcome events (``kind="outcome"``). :func:`population` and :func:`episodes` give the
patients and the ground-truth episodes of the same configuration without running the
stream. It does no I/O and reads no clock; a publisher puts ``payload`` on Kafka with
``key``, and "real time" is the caller sleeping until each ``sent_ms``.

Memory stays bounded however long the run: the stream is produced minute by minute, and
only delayed messages (late delivery, duplicates) and the episode plan are kept.

Speed: one core generates about 370,000 readings/s (25,000 messages/s) for 10,000 patients
(measured on a shared two-core machine; 300,000 with :meth:`FaultRates.typical`). Building the message
dicts dominates, and about a third of it is Python's cyclic garbage collector walking those
dicts: a load generator that raises the collector's threshold (``gc.set_threshold(100_000,
50, 1000)``, its own process-wide choice) gets about 540,000 readings/s.

Determinism: the same :class:`CohortConfig` always yields the same stream, in any process.
Parts draw from independent random streams, so changing one part leaves the others alone:
faults, the SpO2 bias and the incidence never change the cohort or its true physiology;
without faults, two runs that differ only in the bias (or only in the incidence) see the
same measurement noise, a paired counterfactual.

The blood-pressure cuff is a separate device: a wrist device's silence, swap or clock skew
does not affect it.

Examples
--------
>>> config = CohortConfig(patients=2, seed=7, duration_ms=2 * 60_000)
>>> messages = list(simulate(config))
>>> len(messages), {m.kind for m in messages}, {m.key for m in messages} == {
...     p.patient_id for p in population(config)}
(4, {'reading'}, True)
>>> first = messages[0].payload
>>> first["schema"], first["seq"], first["sent_at"] >= config.start_ms + 60_000
('vitalrisk.device/1', 0, True)
>>> sorted({r["metric"] for r in first["readings"]})
['body_temperature', 'heart_rate', 'oxygen_saturation', 'respiratory_rate', 'step_count']
"""

from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Literal
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt

from simulators.deterioration import Episode, EpisodeEffects, Incidence, plan_episodes
from simulators.devices import (
    DEFAULT_SPO2_BIAS_BY_SKIN_TONE,
    MS_PER_MINUTE,
    CuffMinute,
    DeviceSchedule,
    WristMinute,
    cuff_messages,
    device_id,
    measure_cuff,
    measure_wrist,
    spo2_bias_pct,
    wrist_payloads,
)
from simulators.faults import (
    MINUTES_PER_YEAR,
    FaultRates,
    add_motion_artefacts,
    malformed_payload,
    plan_delivery,
)
from simulators.physiology import MINUTES_PER_DAY, PhysiologyState, advance
from simulators.population import (
    DEFAULT_SKIN_TONE_WEIGHTS,
    CohortArrays,
    Patient,
    sample_cohort,
    seeded_rng,
)

#: Default start of the simulated period: Monday 2026-01-05T00:00:00Z, epoch ms.
DEFAULT_START_MS = 1_767_571_200_000
MS_PER_DAY = MINUTES_PER_DAY * MS_PER_MINUTE

MessageKind = Literal["reading", "outcome"]

_SIM_DOMAIN = 0x53494D  # "SIM"
_RNG_PHYSIOLOGY = 1
_RNG_WRIST_NOISE = 2
_RNG_CUFF_NOISE = 3
_RNG_DEVICES = 4
_RNG_DELIVERY = 5
_RNG_MALFORMED = 6
_RNG_ARTEFACTS = 7
_RNG_SILENCE = 8
_RNG_SWAPS = 9
_RNG_SKEW = 10
_RNG_CUFF_SCHEDULE = 11
_CUFF_JITTER_MIN = 30.0


@dataclass(frozen=True, slots=True, kw_only=True)
class CohortConfig:
    """Everything that determines a simulated stream. Immutable; validated on creation.

    Parameters
    ----------
    patients
        Number of patients, at least 1.
    seed
        Non-negative integer; the same configuration and seed give the same stream.
    start_ms
        Start of the simulated period, epoch ms, on a whole minute.
    duration_ms
        Length of the simulated period, a positive whole number of minutes in ms.
    incidence
        Rates of deterioration episodes, see :class:`~simulators.deterioration.Incidence`.
    faults
        Fault rates, all zero by default; :meth:`FaultRates.typical` turns them on.
    devices
        Sampling schedule of the devices.
    spo2_skin_bias
        Whether pulse oximetry over-reads SpO2 by skin tone (``spo2_bias_by_skin_tone``).
    spo2_bias_by_skin_tone
        Over-reading in percentage points for Fitzpatrick types I–VI.
    skin_tone_weights
        Share of Fitzpatrick types I–VI in the cohort.
    outcome_delay_ms
        How long after onset an outcome is published (its ``t`` stays the onset).

    Raises
    ------
    ValueError
        If a value breaks its rule; the message names the rule and the value.

    Examples
    --------
    >>> CohortConfig(patients=10).duration_ms
    86400000
    >>> CohortConfig(duration_ms=90_000)
    Traceback (most recent call last):
    ...
    ValueError: duration_ms must be a positive whole number of minutes (multiple of 60000), got 90000
    """

    patients: int = 100
    seed: int = 42
    start_ms: int = DEFAULT_START_MS
    duration_ms: int = MS_PER_DAY
    incidence: Incidence = field(default_factory=Incidence)
    faults: FaultRates = field(default_factory=FaultRates)
    devices: DeviceSchedule = field(default_factory=DeviceSchedule)
    spo2_skin_bias: bool = True
    spo2_bias_by_skin_tone: tuple[float, ...] = DEFAULT_SPO2_BIAS_BY_SKIN_TONE
    skin_tone_weights: tuple[float, ...] = DEFAULT_SKIN_TONE_WEIGHTS
    outcome_delay_ms: int = 0

    def __post_init__(self) -> None:
        for name in ("patients", "seed", "start_ms", "duration_ms", "outcome_delay_ms"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if self.patients < 1:
            raise ValueError(f"patients must be at least 1, got {self.patients}")
        if self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed}")
        if self.start_ms < 0 or self.start_ms % MS_PER_MINUTE:
            raise ValueError(
                f"start_ms must be a non-negative epoch ms on a whole minute, got {self.start_ms}"
            )
        if self.duration_ms <= 0 or self.duration_ms % MS_PER_MINUTE:
            raise ValueError(
                "duration_ms must be a positive whole number of minutes (multiple of 60000), "
                f"got {self.duration_ms}"
            )
        if self.outcome_delay_ms < 0:
            raise ValueError(f"outcome_delay_ms must be >= 0, got {self.outcome_delay_ms}")
        bias = self.spo2_bias_by_skin_tone
        if len(bias) != 6 or not all(math.isfinite(b) and -10.0 <= b <= 10.0 for b in bias):
            raise ValueError(
                "spo2_bias_by_skin_tone must be six offsets (Fitzpatrick I-VI) within ±10 points, "
                f"got {bias!r}"
            )
        weights = self.skin_tone_weights
        if len(weights) != 6 or any(not w >= 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(
                "skin_tone_weights must be six non-negative weights (Fitzpatrick I-VI) with a "
                f"positive sum, got {weights!r}"
            )


@dataclass(frozen=True, slots=True)
class SimulatedMessage:
    """One event of the simulated stream.

    ``kind`` is ``"reading"`` for a device message and ``"outcome"`` for an outcome event;
    ``key`` is the patient id (the Kafka key); ``sent_ms`` the true time it is sent, epoch
    ms; ``payload`` the wire dict, or ``bytes`` for a malformed device message.
    """

    kind: MessageKind
    key: str
    sent_ms: int
    payload: dict[str, Any] | bytes


def population(config: CohortConfig) -> list[Patient]:
    """The patients of ``config``'s cohort, in index order.

    Examples
    --------
    >>> patients = population(CohortConfig(patients=3, seed=42))
    >>> [p.patient_id for p in patients]
    ['pt-e4174c6515', 'pt-dd69913cf7', 'pt-686b509647']
    """
    return _cohort(config).patients()


def episodes(config: CohortConfig) -> list[Episode]:
    """The ground-truth deterioration episodes of ``config``, sorted by onset.

    Exactly the episodes :func:`simulate` plays out: every one that does not resolve on its
    own yields one outcome event at its onset.

    Examples
    --------
    >>> eps = episodes(CohortConfig(patients=200, seed=1, duration_ms=14 * MS_PER_DAY))
    >>> len(eps) > 0, all(e.prodrome_start_ms < e.onset_ms for e in eps)
    (True, True)
    """
    return plan_episodes(
        _cohort(config),
        config.incidence,
        seed=config.seed,
        start_ms=config.start_ms,
        duration_ms=config.duration_ms,
    )


def _cohort(config: CohortConfig) -> CohortArrays:
    return sample_cohort(config.patients, seed=config.seed, skin_tone_weights=config.skin_tone_weights)


def simulate(config: CohortConfig) -> Iterator[SimulatedMessage]:
    """Simulate ``config``'s cohort and yield its events in non-decreasing ``sent_ms``.

    Each wrist device sends one message per minute of simulated time, shortly after the
    minute ends; the cuff sends one per measurement. Outcomes are sent at onset plus
    ``outcome_delay_ms``. Messages delayed by faults may be sent after the simulated period
    ends; the stream ends when they have been.

    Parameters
    ----------
    config
        The cohort, period, incidence, faults and devices.

    Yields
    ------
    SimulatedMessage
        Device messages and outcome events, ordered by ``sent_ms`` (ties in a fixed order).

    Examples
    --------
    >>> stream = simulate(CohortConfig(patients=1, seed=3, duration_ms=60_000))
    >>> first = next(stream)
    >>> first.kind, first.payload["seq"], len(first.payload["readings"])
    ('reading', 0, 15)
    >>> first.sent_ms - 1_767_571_200_000 >= 60_000
    True
    """
    cohort = _cohort(config)
    plan = episodes(config)
    return _run(config, cohort, plan)


@dataclass(frozen=True, slots=True)
class MinuteFrame:
    """One simulated minute of device measurements as arrays, before any message is built.

    What :func:`simulate` turns into wire messages, and what :func:`minute_frames` yields for
    in-process consumers that need no wire format (``vitalrisk evaluate``). Rows are patient
    indices in cohort order (:func:`population`).

    Parameters
    ----------
    t0_ms
        Start of the minute (true time), epoch ms.
    wrist_rows
        Patients whose wrist device sends this minute (not silent), ascending.
    wrist
        Their measurements, unrounded (:func:`~simulators.devices.wrist_values` gives what
        the device reports), aligned with ``wrist_rows``.
    wrist_clock_ms, wrist_phase_ms, wrist_sent_ms
        Device clock offset, offset of the first heart-rate sample in the minute, and true
        send time, aligned with ``wrist_rows``.
    cuff_rows
        Patients whose cuff measures this minute (empty most minutes).
    cuff
        Their reported readings, ``None`` when no cuff measures.
    cuff_t_ms, cuff_sent_ms
        Device-clock time of each cuff measurement and true send time, aligned with ``cuff_rows``.
    """

    t0_ms: int
    wrist_rows: npt.NDArray[np.int64]
    wrist: WristMinute
    wrist_clock_ms: npt.NDArray[np.int64]
    wrist_phase_ms: npt.NDArray[np.int64]
    wrist_sent_ms: npt.NDArray[np.int64]
    cuff_rows: npt.NDArray[np.int64]
    cuff: CuffMinute | None
    cuff_t_ms: npt.NDArray[np.int64]
    cuff_sent_ms: npt.NDArray[np.int64]


def minute_frames(config: CohortConfig) -> Iterator[MinuteFrame]:
    """The measurements of ``config``'s cohort, one :class:`MinuteFrame` per simulated minute.

    Exactly the readings :func:`simulate` sends (same random streams, same order), without
    building a message: about twenty times cheaper. Delivery faults (drops, delays,
    duplicates, malformed messages) act on messages and so do not show here; device faults
    (silences, swaps, clock skew, motion artefacts) do.

    Examples
    --------
    >>> config = CohortConfig(patients=2, seed=7, duration_ms=2 * 60_000)
    >>> frames = list(minute_frames(config))
    >>> [f.t0_ms - config.start_ms for f in frames], frames[0].wrist_rows.tolist()
    ([0, 60000], [0, 1])
    >>> frames[0].wrist.heart_rate_bpm.shape
    (2, 12)
    """
    sim = _Simulation(config, _cohort(config), episodes(config))
    for m in range(config.duration_ms // MS_PER_MINUTE):
        yield sim.minute(m)


class _Simulation:
    """The state of one run: random streams, physiology and devices, advanced a minute at a time.

    One independent stream per part, so that switching one part changes no other's numbers.
    Both the message path (:func:`_run`) and :func:`minute_frames` step it, so they draw the
    same numbers in the same order.
    """

    def __init__(self, config: CohortConfig, cohort: CohortArrays, plan: list[Episode]) -> None:
        n = len(cohort)
        seed = config.seed
        self.config, self.cohort, self.n = config, cohort, n
        sched, faults = config.devices, config.faults

        def rng(key: int) -> np.random.Generator:
            return seeded_rng(seed, _SIM_DOMAIN, key)

        self.phys_rng = rng(_RNG_PHYSIOLOGY)
        self.wrist_rng = rng(_RNG_WRIST_NOISE)
        self.cuff_rng = rng(_RNG_CUFF_NOISE)
        self.dev_rng = rng(_RNG_DEVICES)
        self.delivery_rng = rng(_RNG_DELIVERY)
        self.malformed_rng = rng(_RNG_MALFORMED)
        self.artefact_rng = rng(_RNG_ARTEFACTS)
        self.silence_rng = rng(_RNG_SILENCE)
        self.swap_rng = rng(_RNG_SWAPS)
        self.skew_rng = rng(_RNG_SKEW)
        self.cuff_sched_rng = rng(_RNG_CUFF_SCHEDULE)

        self.ids = list(cohort.ids)
        self.walker = EpisodeEffects(plan, {pid: i for i, pid in enumerate(self.ids)}, n)
        first_minute = config.start_ms // MS_PER_MINUTE
        self.state = PhysiologyState.start(cohort, self.phys_rng, int(first_minute % MINUTES_PER_DAY))
        self.bias = spo2_bias_pct(cohort.skin_tone, config.spo2_bias_by_skin_tone, enabled=config.spo2_skin_bias)

        # Wrist devices, one per patient; a swap replaces one with the next generation.
        self.hr_interval = sched.heart_rate_interval_ms
        self.per_minute = sched.heart_rate_per_minute
        self.wrist_gen = np.zeros(n, dtype=np.int64)
        self.wrist_ids = [device_id(seed, i, "wrist", 0) for i in range(n)]
        self.wrist_seq = np.zeros(n, dtype=np.int64)
        self.wrist_skew = self.skews(n)
        self.wrist_phase = self.dev_rng.integers(0, self.hr_interval, n)
        self.minute_phase = self.dev_rng.integers(0, 1 << 30, n)
        self.silent_until = np.full(n, -1, dtype=np.int64)
        self.every = {
            "spo2": sched.oxygen_saturation_interval_ms // MS_PER_MINUTE,
            "rr": sched.respiratory_rate_interval_ms // MS_PER_MINUTE,
            "temp": sched.body_temperature_interval_ms // MS_PER_MINUTE,
        }
        # Blood-pressure cuffs.
        has_cuff = self.dev_rng.random(n) < sched.bp_cuff_fraction
        self.cuff_ids = [device_id(seed, i, "bp_cuff", 0) for i in range(n)]
        self.cuff_seq = np.zeros(n, dtype=np.int64)
        self.cuff_skew = self.skews(n)
        self.cuff_rows_all = np.flatnonzero(has_cuff)
        self.cuff_today: dict[int, tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]] = {}

        self.p_silence = faults.silences_per_device_day / MINUTES_PER_DAY
        self.p_swap = faults.device_swaps_per_patient_year / MINUTES_PER_YEAR
        self.silence_mean_ms = faults.silence_mean_min * MS_PER_MINUTE
        self.current_day = -1

    def skews(self, count: int) -> npt.NDArray[np.int64]:
        faults = self.config.faults
        if faults.clock_skew_device_fraction <= 0 or faults.clock_skew_max_ms <= 0:
            return np.zeros(count, dtype=np.int64)
        u = self.skew_rng.random((count, 2))
        offset = (2.0 * u[:, 1] - 1.0) * faults.clock_skew_max_ms
        return np.where(u[:, 0] < faults.clock_skew_device_fraction, offset, 0.0).astype(np.int64)

    def latency(self, count: int) -> npt.NDArray[np.int64]:
        if self.config.devices.max_latency_ms == 0:
            return np.zeros(count, dtype=np.int64)
        return self.dev_rng.integers(0, self.config.devices.max_latency_ms, count)

    def minute(self, m: int) -> MinuteFrame:
        """Advance to minute ``m`` of the run (called with 0, 1, 2, ...) and measure it."""
        config, cohort, n = self.config, self.cohort, self.n
        sched, faults = config.devices, config.faults
        t0 = config.start_ms + m * MS_PER_MINUTE
        abs_minute = t0 // MS_PER_MINUTE
        minute_of_day = int(abs_minute % MINUTES_PER_DAY)
        day = int(abs_minute // MINUTES_PER_DAY)
        if day != self.current_day:
            if self.current_day >= 0:
                self.state.new_day(self.phys_rng)
            self.current_day = day
            self.cuff_today = _cuff_schedule(self.cuff_rows_all, sched.bp_cuff_times_h, self.cuff_sched_rng)

        effects = self.walker.at(t0 + MS_PER_MINUTE // 2)
        vitals = advance(self.state, cohort, minute_of_day=minute_of_day, effects=effects, rng=self.phys_rng)

        # Device-level faults: swaps and silent periods.
        if self.p_swap > 0:
            for i in np.flatnonzero(self.swap_rng.random(n) < self.p_swap).tolist():
                self.wrist_gen[i] += 1
                self.wrist_ids[i] = device_id(config.seed, i, "wrist", int(self.wrist_gen[i]))
                self.wrist_seq[i] = 0
                self.wrist_skew[i] = self.skews(1)[0]
                self.wrist_phase[i] = self.dev_rng.integers(0, self.hr_interval)
        if self.p_silence > 0:
            starts = (self.silence_rng.random(n) < self.p_silence) & (self.silent_until <= t0)
            k = int(starts.sum())
            if k:
                length = np.maximum(self.silence_rng.exponential(self.silence_mean_ms, k), MS_PER_MINUTE)
                self.silent_until[starts] = t0 + length.astype(np.int64)
        rows = np.flatnonzero(self.silent_until <= t0)

        phase_min = abs_minute + self.minute_phase
        every = self.every
        wrist = measure_wrist(
            rows,
            true_hr=vitals.heart_rate_bpm,
            hr_irregularity=vitals.hr_irregularity_bpm,
            steps=vitals.steps_per_min,
            true_spo2=vitals.spo2_pct,
            spo2_bias=self.bias,
            true_rr=vitals.respiratory_rate_per_min,
            true_temp=vitals.body_temperature_c,
            due_spo2=phase_min % every["spo2"] == 0,
            due_rr=phase_min % every["rr"] == 0,
            due_temp=phase_min % every["temp"] == 0,
            per_minute=self.per_minute,
            rng=self.wrist_rng,
        )
        if faults.motion_artefact_prob > 0:
            add_motion_artefacts(wrist.heart_rate_bpm, faults.motion_artefact_prob, self.artefact_rng)
        wrist_sent = t0 + MS_PER_MINUTE + self.latency(rows.size)

        empty = np.zeros(0, dtype=np.int64)
        crows, cuff_t, cuff_sent, cuff = empty, empty, empty, None
        today = self.cuff_today.get(minute_of_day)
        if today is not None:
            crows, offset_ms = today
            cuff_sent = t0 + MS_PER_MINUTE + self.latency(crows.size)
            cuff_t = t0 + offset_ms + self.cuff_skew[crows]
            cuff = measure_cuff(crows, true_sbp=vitals.systolic_mmhg, true_dbp=vitals.diastolic_mmhg,
                                true_hr=vitals.heart_rate_bpm, hr_irregularity=vitals.hr_irregularity_bpm,
                                rng=self.cuff_rng)
        return MinuteFrame(t0, rows, wrist, self.wrist_skew[rows], self.wrist_phase[rows], wrist_sent,
                           crows, cuff, cuff_t, cuff_sent)


def _run(config: CohortConfig, cohort: CohortArrays, plan: list[Episode]) -> Iterator[SimulatedMessage]:
    sim = _Simulation(config, cohort, plan)
    faults = config.faults
    ids = sim.ids

    outcome_events = sorted(
        (
            SimulatedMessage("outcome", e.patient_id, e.onset_ms + config.outcome_delay_ms, out)
            for e in plan
            if (out := e.outcome()) is not None
        ),
        key=lambda msg: msg.sent_ms,
    )
    next_outcome = 0
    pending: list[tuple[int, int, SimulatedMessage]] = []  # heap of delayed messages
    tie = itertools.count()

    for m in range(config.duration_ms // MS_PER_MINUTE):
        frame = sim.minute(m)
        t0, rows = frame.t0_ms, frame.wrist_rows
        row_list = rows.tolist()
        payloads = wrist_payloads(
            frame.wrist,
            t0_ms=t0,
            device_ids=[sim.wrist_ids[i] for i in row_list],
            patient_ids=[ids[i] for i in row_list],
            seq=sim.wrist_seq[rows],
            clock_ms=frame.wrist_clock_ms,
            phase_ms=frame.wrist_phase_ms,
            sent_ms=frame.wrist_sent_ms,
            heart_rate_interval_ms=sim.hr_interval,
        )
        sim.wrist_seq[rows] += 1
        keys = [ids[i] for i in row_list]
        sent = frame.wrist_sent_ms
        clocks = frame.wrist_clock_ms

        if frame.cuff is not None:
            crows = frame.cuff_rows
            crow_list = crows.tolist()
            payloads += cuff_messages(
                frame.cuff,
                t_ms=frame.cuff_t_ms,
                device_ids=[sim.cuff_ids[i] for i in crow_list],
                patient_ids=[ids[i] for i in crow_list],
                seq=sim.cuff_seq[crows],
                sent_at_ms=frame.cuff_sent_ms + sim.cuff_skew[crows],
            )
            sim.cuff_seq[crows] += 1
            keys += [ids[i] for i in crow_list]
            sent = np.concatenate([sent, frame.cuff_sent_ms])
            clocks = np.concatenate([clocks, sim.cuff_skew[crows]])

        cutoff = t0 + 2 * MS_PER_MINUTE  # the next minute's messages are sent at or after this
        order = np.argsort(sent, kind="stable")
        if faults.delivery_faults:
            # Messages hit by a delivery fault go through the heap; the rest are sent as usual.
            hit = _deliver(payloads, keys, sent, clocks, faults, rngs=(sim.delivery_rng, sim.malformed_rng),
                           tie=tie, pending=pending)  # fmt: skip
            order = order[~hit[order]]
        sent_l = sent.tolist()
        ready = [SimulatedMessage("reading", keys[j], sent_l[j], payloads[j]) for j in order.tolist()]
        while next_outcome < len(outcome_events) and outcome_events[next_outcome].sent_ms < cutoff:
            event = outcome_events[next_outcome]
            heapq.heappush(pending, (event.sent_ms, next(tie), event))
            next_outcome += 1
        if pending and pending[0][0] < cutoff:
            due = []
            while pending and pending[0][0] < cutoff:
                due.append(heapq.heappop(pending)[2])
            # Both lists are sorted by sent_ms; on a tie the pending (earlier-made) one goes first.
            yield from heapq.merge(due, ready, key=_sent_ms)
        else:
            yield from ready

    for event in outcome_events[next_outcome:]:
        heapq.heappush(pending, (event.sent_ms, next(tie), event))
    while pending:
        yield heapq.heappop(pending)[2]


def _sent_ms(message: SimulatedMessage) -> int:
    return message.sent_ms


def _cuff_schedule(
    rows: npt.NDArray[np.int64], times_h: tuple[float, ...], rng: np.random.Generator
) -> dict[int, tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]]:
    """One day's cuff measurements: minute of the day -> (patient rows, ms into the minute).

    A patient measures at most once a minute: a second measurement drawn into a minute
    already taken moves to the nearest free minute.
    """
    by_minute: dict[int, tuple[list[int], list[int]]] = {}
    taken: set[tuple[int, int]] = set()
    for hour in times_h:
        jitter = _CUFF_JITTER_MIN * rng.standard_normal(rows.size)
        minute = np.clip(np.rint(hour * 60.0 + jitter), 0, MINUTES_PER_DAY - 1).astype(np.int64)
        offset = rng.integers(0, MS_PER_MINUTE, rows.size)
        for row, mi, off in zip(rows.tolist(), minute.tolist(), offset.tolist()):
            step = 0
            while (row, mi) in taken:  # only when two nominal times lie within the jitter
                step += 1
                mi = min(max(mi + (step if step % 2 else -step), 0), MINUTES_PER_DAY - 1)
            taken.add((row, mi))
            entry = by_minute.setdefault(mi, ([], []))
            entry[0].append(row)
            entry[1].append(off)
    return {
        minute: (np.array(rows_, dtype=np.int64), np.array(offsets, dtype=np.int64))
        for minute, (rows_, offsets) in sorted(by_minute.items())
    }


def _deliver(
    payloads: list[dict[str, Any]],
    keys: list[str],
    sent: npt.NDArray[np.int64],
    clocks: npt.NDArray[np.int64],
    faults: FaultRates,
    *,
    rngs: tuple[np.random.Generator, np.random.Generator],
    tie: Iterator[int],
    pending: list[tuple[int, int, SimulatedMessage]],
) -> npt.NDArray[np.bool_]:
    """Apply delivery faults to a minute's messages.

    Every message hit by a fault is dropped or pushed, as sent, onto the ``pending`` heap
    (with its duplicate, if any). Returns the mask of the messages hit; the others are
    sent normally by the caller. ``rngs`` are the delivery and malformed-payload streams.
    """
    delivery_rng, malformed_rng = rngs
    plan = plan_delivery(len(payloads), faults, delivery_rng)
    hit = plan.dropped | plan.malformed | (plan.delay_ms > 0) | (plan.duplicate_after_ms >= 0)
    for j in np.flatnonzero(hit).tolist():
        if plan.dropped[j]:
            continue
        payload = payloads[j]
        delay = int(plan.delay_ms[j])
        at = int(sent[j]) + delay
        if delay:
            payload["sent_at"] = at + int(clocks[j])  # stored and forwarded: sent later
        body: dict[str, Any] | bytes = payload
        if plan.malformed[j]:
            body = malformed_payload(payload, malformed_rng)
        heapq.heappush(pending, (at, next(tie), SimulatedMessage("reading", keys[j], at, body)))
        dup_after = int(plan.duplicate_after_ms[j])
        if dup_after >= 0:
            again = at + dup_after
            resent = body if isinstance(body, bytes) else _copy(body)
            heapq.heappush(pending, (again, next(tie), SimulatedMessage("reading", keys[j], again, resent)))
    return hit


def _copy(payload: dict[str, Any]) -> dict[str, Any]:
    """An equal, independent copy of a device message (a resent duplicate)."""
    return {**payload, "readings": [dict(r) for r in payload["readings"]]}
