"""Devices: what they sample, how they mis-measure, and the messages they send.

Every patient wears a **wrist wearable** and most also have a **blood-pressure cuff**:

===============  =========================================  ==========================
device           metrics                                    default sampling
===============  =========================================  ==========================
wrist            ``heart_rate``                             every 5 s
                 ``step_count`` (steps in one minute)       every minute
                 ``oxygen_saturation``                      every minute
                 ``respiratory_rate``                       every minute
                 ``body_temperature`` (core estimate)       every 5 minutes
bp_cuff          ``systolic_blood_pressure``,               at about 08:00 and 20:00
                 ``diastolic_blood_pressure``, ``heart_rate``
===============  =========================================  ==========================

A device sends one message per minute of simulated time holding that minute's readings
(the cuff only in minutes it measures); each device numbers its messages with ``seq``
0, 1, 2, ... A message is a dict ready for ``json.dumps``::

    {"schema": "vitalrisk.device/1", "device_id": "dev-...", "patient_id": "pt-...",
     "seq": 17, "sent_at": 1767571260123,
     "readings": [{"metric": "heart_rate", "t": 1767571200480, "value": 72.0,
                   "unit": "beats/min"}, ...]}

Metric names and units come from :data:`kernel.vocabulary.METRICS`, and every value is
clipped to the metric's possible range. Heart rate, SpO2, respiratory rate, step count and
blood pressure are whole numbers (as devices report them), temperature has two decimals.
Times are the device's clock in epoch ms; ``step_count``'s ``t`` is the start of its minute.

**Known bias.** Pulse oximeters over-read SpO2 in darker skin, hiding hypoxaemia
(Sjoding et al., NEJM 2020: occult hypoxaemia nearly three times as frequent in Black as
in White patients; Fawzy et al., JAMA Intern Med 2022). With ``spo2_skin_bias`` on, the
measured SpO2 adds a per-Fitzpatrick-type offset (default +0 for I–II, +1 for III–IV, +2.5
percentage points for V–VI) to the true value plus noise, before rounding and clipping at
100 %. The *true* SpO2 drives the physiology and the outcomes; only the measurement is
biased, so fairness monitoring can be tested against a known truth. (The ceiling at 100 %
makes the mean shift of high readings smaller than the offset.)

Examples
--------
>>> device_id(42, 0, "wrist", 0)
'dev-4e704b7c03a2'
>>> DeviceSchedule().wrist_readings_per_hour()
912.0
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from kernel.vocabulary import METRICS

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: ``schema`` of a device message on the wire.
DEVICE_SCHEMA = "vitalrisk.device/1"

#: Kinds of device a patient may carry.
DeviceKind = Literal["wrist", "bp_cuff"]

#: Default SpO2 over-reading in percentage points for Fitzpatrick types I–VI.
DEFAULT_SPO2_BIAS_BY_SKIN_TONE: tuple[float, ...] = (0.0, 0.0, 1.0, 1.0, 2.5, 2.5)

MS_PER_MINUTE = 60_000

HEART_RATE = METRICS["heart_rate"]
SPO2 = METRICS["oxygen_saturation"]
RESPIRATORY_RATE = METRICS["respiratory_rate"]
BODY_TEMPERATURE = METRICS["body_temperature"]
SYSTOLIC = METRICS["systolic_blood_pressure"]
DIASTOLIC = METRICS["diastolic_blood_pressure"]
STEP_COUNT = METRICS["step_count"]

# Measurement noise (standard deviation of one reading around the true value).
_NOISE_HR_BPM = 2.0
_NOISE_SPO2_PCT = 1.0
_NOISE_RR_PER_MIN = 1.0
_NOISE_TEMP_C = 0.1
_NOISE_SBP_MMHG = 5.0
_NOISE_DBP_MMHG = 4.0


@dataclass(frozen=True, slots=True)
class DeviceSchedule:
    """What the devices sample and how often.

    Parameters
    ----------
    heart_rate_interval_ms
        Wrist heart-rate sampling interval; must divide one minute (60,000 ms).
    oxygen_saturation_interval_ms, respiratory_rate_interval_ms, body_temperature_interval_ms
        Wrist sampling intervals of these metrics; whole minutes. Step count is always
        reported per minute.
    bp_cuff_fraction
        Share of patients who also have a blood-pressure cuff, 0–1.
    bp_cuff_times_h
        Nominal local hours of the day of the cuff's measurements; each is jittered by
        about ±30 minutes every day.
    max_latency_ms
        Transmission delay from the end of a minute to sending, uniform in
        ``[0, max_latency_ms)``; below one minute.

    Examples
    --------
    >>> DeviceSchedule(heart_rate_interval_ms=7_000)
    Traceback (most recent call last):
    ...
    ValueError: heart_rate_interval_ms must be a positive divisor of 60000 ms, got 7000
    """

    heart_rate_interval_ms: int = 5_000
    oxygen_saturation_interval_ms: int = 60_000
    respiratory_rate_interval_ms: int = 60_000
    body_temperature_interval_ms: int = 300_000
    bp_cuff_fraction: float = 1.0
    bp_cuff_times_h: tuple[float, ...] = (8.0, 20.0)
    max_latency_ms: int = 2_000

    def __post_init__(self) -> None:
        hr = self.heart_rate_interval_ms
        if hr <= 0 or MS_PER_MINUTE % hr:
            raise ValueError(f"heart_rate_interval_ms must be a positive divisor of 60000 ms, got {hr}")
        for name in ("oxygen_saturation_interval_ms", "respiratory_rate_interval_ms",
                     "body_temperature_interval_ms"):  # fmt: skip
            value = getattr(self, name)
            if value <= 0 or value % MS_PER_MINUTE:
                raise ValueError(f"{name} must be a positive whole number of minutes in ms, got {value}")
        if not 0.0 <= self.bp_cuff_fraction <= 1.0:
            raise ValueError(f"bp_cuff_fraction must be in [0, 1], got {self.bp_cuff_fraction}")
        if len(self.bp_cuff_times_h) > 24 or any(not 0.0 <= h < 24.0 for h in self.bp_cuff_times_h):
            raise ValueError(
                "bp_cuff_times_h must be at most 24 hours of the day in [0, 24), "
                f"got {self.bp_cuff_times_h!r}"
            )
        if not 0 <= self.max_latency_ms < MS_PER_MINUTE:
            raise ValueError(f"max_latency_ms must be in [0, 60000), got {self.max_latency_ms}")

    @property
    def heart_rate_per_minute(self) -> int:
        """Heart-rate readings per wrist message."""
        return MS_PER_MINUTE // self.heart_rate_interval_ms

    def wrist_readings_per_hour(self) -> float:
        """Readings one wrist device produces in an hour without faults."""
        per_min = self.heart_rate_per_minute + 1.0  # + step count
        for interval in (self.oxygen_saturation_interval_ms, self.respiratory_rate_interval_ms,
                         self.body_temperature_interval_ms):  # fmt: skip
            per_min += MS_PER_MINUTE / interval
        return 60.0 * per_min


def device_id(seed: int, patient_index: int, kind: DeviceKind, generation: int) -> str:
    """Pseudonymous id of a patient's device: ``"dev-"`` and 12 hex digits.

    ``generation`` counts device swaps: the replacement of a wrist device gets the next
    generation and so a new id.

    Examples
    --------
    >>> device_id(42, 0, "wrist", 0) != device_id(42, 0, "wrist", 1)
    True
    >>> from kernel.limits import valid_id
    >>> valid_id(device_id(42, 0, "wrist", 0))  # the rule every decoder applies
    True
    """
    text = f"device:{seed}:{patient_index}:{kind}:{generation}"
    return "dev-" + hashlib.blake2b(text.encode(), digest_size=6, person=b"vitalrisk-sim").hexdigest()


def spo2_bias_pct(
    skin_tone: npt.ArrayLike, bias_by_skin_tone: tuple[float, ...], *, enabled: bool
) -> FloatArray:
    """SpO2 over-reading, percentage points, for each Fitzpatrick type 1–6.

    Examples
    --------
    >>> spo2_bias_pct([1, 3, 6], DEFAULT_SPO2_BIAS_BY_SKIN_TONE, enabled=True).tolist()
    [0.0, 1.0, 2.5]
    >>> spo2_bias_pct([6], DEFAULT_SPO2_BIAS_BY_SKIN_TONE, enabled=False).tolist()
    [0.0]
    """
    tone = np.asarray(skin_tone, dtype=np.int64)
    if not enabled:
        return np.zeros(tone.shape)
    return np.asarray(bias_by_skin_tone, dtype=np.float64)[tone - 1]


@dataclass(slots=True)
class WristMinute:
    """One minute of wrist measurements for the devices that send (rows of the arrays).

    ``heart_rate_bpm`` has one column per heart-rate sample; the other arrays hold one
    value per device, NaN where the metric is not due this minute.
    """

    heart_rate_bpm: FloatArray
    steps: FloatArray
    spo2_pct: FloatArray
    respiratory_rate_per_min: FloatArray
    body_temperature_c: FloatArray


def measure_wrist(
    rows: IntArray,
    *,
    true_hr: FloatArray,
    hr_irregularity: FloatArray,
    steps: FloatArray,
    true_spo2: FloatArray,
    spo2_bias: FloatArray,
    true_rr: FloatArray,
    true_temp: FloatArray,
    due_spo2: npt.NDArray[np.bool_],
    due_rr: npt.NDArray[np.bool_],
    due_temp: npt.NDArray[np.bool_],
    per_minute: int,
    rng: np.random.Generator,
) -> WristMinute:
    """Noisy, unrounded wrist readings for patients ``rows``.

    Every argument array is indexed by patient; the result by position in ``rows``. The
    noise drawn does not depend on which metrics are due or on the bias, so switching the
    bias on or off changes nothing but the SpO2 offset.

    Examples
    --------
    >>> one = np.array([1.0, 1.0])
    >>> m = measure_wrist(
    ...     np.array([1]), true_hr=70 * one, hr_irregularity=0 * one, steps=0 * one,
    ...     true_spo2=95 * one, spo2_bias=np.array([0.0, 2.5]), true_rr=15 * one,
    ...     true_temp=36.6 * one, due_spo2=one > 0, due_rr=one > 0, due_temp=one < 0,
    ...     per_minute=12, rng=np.random.default_rng(0))
    >>> m.heart_rate_bpm.shape, bool(np.isnan(m.body_temperature_c[0]))
    ((1, 12), True)
    """
    m = rows.size
    z = rng.standard_normal((m, per_minute + 3))
    sd = _NOISE_HR_BPM + hr_irregularity[rows]
    hr = true_hr[rows, None] + z[:, :per_minute] * sd[:, None]
    spo2 = true_spo2[rows] + _NOISE_SPO2_PCT * z[:, per_minute] + spo2_bias[rows]
    rr = true_rr[rows] + _NOISE_RR_PER_MIN * z[:, per_minute + 1]
    temp = true_temp[rows] + _NOISE_TEMP_C * z[:, per_minute + 2]
    return WristMinute(
        heart_rate_bpm=hr,
        steps=steps[rows],
        spo2_pct=np.where(due_spo2[rows], spo2, np.nan),
        respiratory_rate_per_min=np.where(due_rr[rows], rr, np.nan),
        body_temperature_c=np.where(due_temp[rows], temp, np.nan),
    )


def _whole(values: FloatArray, lo: float, hi: float) -> FloatArray:
    return _bound(np.rint(values), lo, hi)


def wrist_values(minute: WristMinute) -> WristMinute:
    """The values a wrist device reports: ``minute`` rounded as on the wire and clipped to range.

    The message path (:func:`wrist_payloads`) and the array path (:mod:`simulators.frames`)
    both use it, so they report the same numbers. NaN (not due) stays NaN.

    Examples
    --------
    >>> m = wrist_values(WristMinute(np.array([[71.6, 400.0]]), np.array([12.4]), np.array([100.7]),
    ...                              np.array([np.nan]), np.array([36.456])))
    >>> m.heart_rate_bpm.tolist(), m.spo2_pct.tolist(), m.body_temperature_c.tolist()
    ([[72.0, 300.0]], [100.0], [36.46])
    """
    return WristMinute(
        heart_rate_bpm=_whole(minute.heart_rate_bpm, HEART_RATE.lowest, HEART_RATE.highest),
        steps=_whole(minute.steps, STEP_COUNT.lowest, STEP_COUNT.highest),
        spo2_pct=_whole(minute.spo2_pct, SPO2.lowest, SPO2.highest),
        respiratory_rate_per_min=_whole(minute.respiratory_rate_per_min, RESPIRATORY_RATE.lowest,
                                        RESPIRATORY_RATE.highest),
        body_temperature_c=_bound(np.round(minute.body_temperature_c, 2), BODY_TEMPERATURE.lowest,
                                  BODY_TEMPERATURE.highest),
    )


def wrist_payloads(
    minute: WristMinute,
    *,
    t0_ms: int,
    device_ids: list[str],
    patient_ids: list[str],
    seq: IntArray,
    clock_ms: IntArray,
    phase_ms: IntArray,
    sent_ms: IntArray,
    heart_rate_interval_ms: int,
) -> list[dict[str, Any]]:
    """Wire messages for one minute of wrist data (the hot loop: one dict per reading).

    ``device_ids``, ``patient_ids`` and the arrays are aligned with ``minute``'s rows.
    ``clock_ms`` is each device's clock offset, ``phase_ms`` the offset of its first
    heart-rate sample in the minute, ``sent_ms`` the true send time.

    Examples
    --------
    >>> minute = WristMinute(heart_rate_bpm=np.array([[71.6, 73.2]]), steps=np.array([12.0]),
    ...                      spo2_pct=np.array([96.4]), respiratory_rate_per_min=np.array([np.nan]),
    ...                      body_temperature_c=np.array([np.nan]))
    >>> [msg] = wrist_payloads(minute, t0_ms=0, device_ids=["dev-000000000001"],
    ...                        patient_ids=["pt-0000000001"], seq=np.array([7]),
    ...                        clock_ms=np.array([0]), phase_ms=np.array([250]),
    ...                        sent_ms=np.array([60_400]), heart_rate_interval_ms=30_000)
    >>> msg["seq"], msg["sent_at"]
    (7, 60400)
    >>> [(r["metric"], r["t"], r["value"]) for r in msg["readings"]]
    [('heart_rate', 250, 72.0), ('heart_rate', 30250, 73.0), ('step_count', 0, 12.0), ('oxygen_saturation', 250, 96.0)]
    """
    m = len(device_ids)
    if m == 0:
        return []
    per_minute = minute.heart_rate_bpm.shape[1]
    start = t0_ms + clock_ms
    base = start + phase_ms
    hr_t = (base[:, None] + heart_rate_interval_ms * np.arange(per_minute)[None, :]).tolist()
    reported = wrist_values(minute)
    hr_v = reported.heart_rate_bpm.tolist()
    steps_v = reported.steps.tolist()
    spo2_v = reported.spo2_pct.tolist()
    rr_v = reported.respiratory_rate_per_min.tolist()
    temp_v = reported.body_temperature_c.tolist()
    start_l, base_l = start.tolist(), base.tolist()
    seq_l, sent_at_l = seq.tolist(), (sent_ms + clock_ms).tolist()

    hr_name, hr_unit = HEART_RATE.name, HEART_RATE.unit
    st_name, st_unit = STEP_COUNT.name, STEP_COUNT.unit
    sp_name, sp_unit = SPO2.name, SPO2.unit
    rr_name, rr_unit = RESPIRATORY_RATE.name, RESPIRATORY_RATE.unit
    te_name, te_unit = BODY_TEMPERATURE.name, BODY_TEMPERATURE.unit
    out: list[dict[str, Any]] = []
    for j in range(m):
        readings = [
            {"metric": hr_name, "t": t, "value": v, "unit": hr_unit} for t, v in zip(hr_t[j], hr_v[j])
        ]
        readings.append({"metric": st_name, "t": start_l[j], "value": steps_v[j], "unit": st_unit})
        t = base_l[j]
        v = spo2_v[j]
        if v == v:  # not NaN: due this minute
            readings.append({"metric": sp_name, "t": t, "value": v, "unit": sp_unit})
        v = rr_v[j]
        if v == v:
            readings.append({"metric": rr_name, "t": t, "value": v, "unit": rr_unit})
        v = temp_v[j]
        if v == v:
            readings.append({"metric": te_name, "t": t, "value": v, "unit": te_unit})
        out.append(
            {
                "schema": DEVICE_SCHEMA,
                "device_id": device_ids[j],
                "patient_id": patient_ids[j],
                "seq": seq_l[j],
                "sent_at": sent_at_l[j],
                "readings": readings,
            }
        )
    return out


@dataclass(slots=True)
class CuffMinute:
    """Blood-pressure cuff readings of one minute, as reported (rounded, clipped), by row."""

    systolic_mmhg: FloatArray
    diastolic_mmhg: FloatArray
    pulse_bpm: FloatArray


def measure_cuff(
    rows: IntArray,
    *,
    true_sbp: FloatArray,
    true_dbp: FloatArray,
    true_hr: FloatArray,
    hr_irregularity: FloatArray,
    rng: np.random.Generator,
) -> CuffMinute:
    """The values the cuffs of patients ``rows`` report (true-value arrays indexed by patient).

    Draws exactly what :func:`cuff_payloads` draws, which calls it.

    Examples
    --------
    >>> c = measure_cuff(np.array([0]), true_sbp=np.array([140.0]), true_dbp=np.array([85.0]),
    ...                  true_hr=np.array([66.0]), hr_irregularity=np.array([0.0]),
    ...                  rng=np.random.default_rng(1))
    >>> bool(c.diastolic_mmhg[0] <= c.systolic_mmhg[0] - 10), c.pulse_bpm.shape
    (True, (1,))
    """
    z = rng.standard_normal((rows.size, 3))
    sbp = true_sbp[rows] + _NOISE_SBP_MMHG * z[:, 0]
    dbp = np.minimum(true_dbp[rows] + _NOISE_DBP_MMHG * z[:, 1], sbp - 10.0)
    pulse = true_hr[rows] + (_NOISE_HR_BPM + hr_irregularity[rows]) * z[:, 2]
    return CuffMinute(
        systolic_mmhg=_whole(sbp, SYSTOLIC.lowest, SYSTOLIC.highest),
        diastolic_mmhg=_whole(dbp, DIASTOLIC.lowest, DIASTOLIC.highest),
        pulse_bpm=_whole(pulse, HEART_RATE.lowest, HEART_RATE.highest),
    )


def cuff_payloads(
    rows: IntArray,
    *,
    t_ms: IntArray,
    true_sbp: FloatArray,
    true_dbp: FloatArray,
    true_hr: FloatArray,
    hr_irregularity: FloatArray,
    device_ids: list[str],
    patient_ids: list[str],
    seq: IntArray,
    sent_at_ms: IntArray,
    rng: np.random.Generator,
) -> list[dict[str, Any]]:
    """Wire messages of blood-pressure cuff measurements for patients ``rows``.

    ``t_ms`` and ``sent_at_ms`` are device-clock times aligned with ``rows``; the other
    true-value arrays are indexed by patient. A cuff reports pulse rate as ``heart_rate``.

    Examples
    --------
    >>> [msg] = cuff_payloads(
    ...     np.array([0]), t_ms=np.array([1_000]), true_sbp=np.array([140.0]),
    ...     true_dbp=np.array([85.0]), true_hr=np.array([66.0]), hr_irregularity=np.array([0.0]),
    ...     device_ids=["dev-000000000002"], patient_ids=["pt-0000000001"], seq=np.array([0]),
    ...     sent_at_ms=np.array([61_000]), rng=np.random.default_rng(1))
    >>> [r["metric"] for r in msg["readings"]]
    ['systolic_blood_pressure', 'diastolic_blood_pressure', 'heart_rate']
    """
    if rows.size == 0:
        return []
    cuff = measure_cuff(rows, true_sbp=true_sbp, true_dbp=true_dbp, true_hr=true_hr,
                        hr_irregularity=hr_irregularity, rng=rng)
    return cuff_messages(cuff, t_ms=t_ms, device_ids=device_ids, patient_ids=patient_ids, seq=seq,
                         sent_at_ms=sent_at_ms)


def cuff_messages(
    cuff: CuffMinute,
    *,
    t_ms: IntArray,
    device_ids: list[str],
    patient_ids: list[str],
    seq: IntArray,
    sent_at_ms: IntArray,
) -> list[dict[str, Any]]:
    """Wire messages of cuff readings already measured (:func:`measure_cuff`), aligned by row."""
    m = len(device_ids)
    sbp_l, dbp_l, hr_l = cuff.systolic_mmhg.tolist(), cuff.diastolic_mmhg.tolist(), cuff.pulse_bpm.tolist()
    t_l, seq_l, sent_l = t_ms.tolist(), seq.tolist(), sent_at_ms.tolist()
    out: list[dict[str, Any]] = []
    for j in range(m):
        t = t_l[j]
        out.append(
            {
                "schema": DEVICE_SCHEMA,
                "device_id": device_ids[j],
                "patient_id": patient_ids[j],
                "seq": seq_l[j],
                "sent_at": sent_l[j],
                "readings": [
                    {"metric": SYSTOLIC.name, "t": t, "value": sbp_l[j], "unit": SYSTOLIC.unit},
                    {"metric": DIASTOLIC.name, "t": t, "value": dbp_l[j], "unit": DIASTOLIC.unit},
                    {"metric": HEART_RATE.name, "t": t, "value": hr_l[j], "unit": HEART_RATE.unit},
                ],
            }
        )
    return out


def _bound(values: npt.NDArray[np.float64], lo: float, hi: float) -> npt.NDArray[np.float64]:
    """``np.clip`` without its Python-level dispatch (called many times a simulated minute)."""
    return np.minimum(np.maximum(values, lo), hi)
