"""Device and transport faults, at configurable rates; all off by default.

What each fault looks like in the stream:

dropout (``dropout_prob``)
    A message is lost in transit: a gap in the device's ``seq``.
silent period (``silences_per_device_day``, ``silence_mean_min``)
    A wrist device is off, charging or off-wrist: no messages and no ``seq`` numbers for an
    exponentially distributed time (mean ``silence_mean_min`` minutes, at least one).
motion artefact (``motion_artefact_prob``)
    1–4 of a minute's heart-rate readings spike by 40–90 beats/min or halve; still within
    the possible range, so only a plausibility check catches them.
duplicate (``duplicate_prob``)
    The same message is sent again 0.5–30 s later: same device, ``seq`` and payload, so
    the resend's ``sent_at`` is the first send's.
out of order (``out_of_order_prob``)
    A message is held back 1–3 minutes and arrives after the device's next ones.
late (``late_prob``)
    Store and forward: a message is sent ``late_delay_min`` minutes (default 5–120) after
    its minute ends; its ``sent_at`` is the real, late send time.
clock skew (``clock_skew_device_fraction``, ``clock_skew_max_ms``)
    That share of devices runs a clock offset drawn uniformly within
    ±``clock_skew_max_ms``; readings' ``t`` and the ``sent_at`` carry it.
device swap (``device_swaps_per_patient_year``)
    A patient's wrist device is replaced: a new ``device_id`` whose ``seq`` restarts at 0.
malformed (``malformed_prob``)
    A message's bytes are garbage and the event's payload is ``bytes``: truncated or
    invalid JSON, not UTF-8, empty, wrong schema version, a field missing or of the wrong
    type, a wrong unit, a value that is not a number.

Probabilities are per message unless the name says otherwise. Dropout, malformed, duplicate
and delay are decided independently per message; a message both late and out of order is
late.

Examples
--------
>>> FaultRates().enabled
False
>>> FaultRates.typical().duplicate_prob
0.005
>>> FaultRates(late_prob=1.5)
Traceback (most recent call last):
...
ValueError: late_prob is a probability and must be in [0, 1], got 1.5
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt

MS_PER_MINUTE = 60_000
MINUTES_PER_YEAR = 365.25 * 24 * 60

_PROBABILITIES = (
    "dropout_prob", "motion_artefact_prob", "duplicate_prob", "out_of_order_prob", "late_prob",
    "malformed_prob", "clock_skew_device_fraction",
)  # fmt: skip
_OUT_OF_ORDER_DELAY_MS = (60_000, 180_000)
_DUPLICATE_DELAY_MS = (500, 30_000)


@dataclass(frozen=True, slots=True)
class FaultRates:
    """Rates of every fault; zero (a clean stream) unless set. See the module docstring."""

    dropout_prob: float = 0.0
    silences_per_device_day: float = 0.0
    silence_mean_min: float = 90.0
    motion_artefact_prob: float = 0.0
    duplicate_prob: float = 0.0
    out_of_order_prob: float = 0.0
    late_prob: float = 0.0
    late_delay_min: tuple[float, float] = (5.0, 120.0)
    clock_skew_device_fraction: float = 0.0
    clock_skew_max_ms: int = 300_000
    device_swaps_per_patient_year: float = 0.0
    malformed_prob: float = 0.0

    def __post_init__(self) -> None:
        for name in _PROBABILITIES:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} is a probability and must be in [0, 1], got {value}")
        for name in ("silences_per_device_day", "device_swaps_per_patient_year"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite rate >= 0, got {value}")
        if not self.silence_mean_min > 0:
            raise ValueError(f"silence_mean_min must be > 0, got {self.silence_mean_min}")
        lo, hi = self.late_delay_min
        if not 3.0 <= lo <= hi:
            raise ValueError(
                "late_delay_min must be (low, high) minutes with 3 <= low <= high, "
                f"got {self.late_delay_min!r}"
            )
        if self.clock_skew_max_ms < 0:
            raise ValueError(f"clock_skew_max_ms must be >= 0, got {self.clock_skew_max_ms}")

    @classmethod
    def typical(cls) -> FaultRates:
        """A realistic faults profile: everything on, at rates seen with consumer wearables."""
        return cls(
            dropout_prob=0.01,
            silences_per_device_day=0.5,
            silence_mean_min=60.0,
            motion_artefact_prob=0.02,
            duplicate_prob=0.005,
            out_of_order_prob=0.01,
            late_prob=0.005,
            clock_skew_device_fraction=0.05,
            clock_skew_max_ms=300_000,
            device_swaps_per_patient_year=6.0,
            malformed_prob=0.001,
        )

    @property
    def enabled(self) -> bool:
        """Whether any fault is switched on."""
        return any(
            getattr(self, f.name) > 0
            for f in fields(self)
            if f.name not in ("silence_mean_min", "late_delay_min", "clock_skew_max_ms")
        )

    @property
    def delivery_faults(self) -> bool:
        """Whether any per-message delivery fault (dropout .. malformed) is on."""
        return any(
            getattr(self, name) > 0
            for name in ("dropout_prob", "duplicate_prob", "out_of_order_prob", "late_prob", "malformed_prob")
        )


@dataclass(frozen=True, slots=True)
class DeliveryFaults:
    """What happens to each of a minute's messages (arrays aligned with the messages).

    ``delay_ms`` is added to the normal send time; ``duplicate_after_ms`` is the resend's
    delay after the (possibly delayed) first send, or -1 for no duplicate.
    """

    dropped: npt.NDArray[np.bool_]
    malformed: npt.NDArray[np.bool_]
    delay_ms: npt.NDArray[np.int64]
    duplicate_after_ms: npt.NDArray[np.int64]


def plan_delivery(n: int, rates: FaultRates, rng: np.random.Generator) -> DeliveryFaults:
    """Decide the delivery faults of ``n`` messages.

    Examples
    --------
    >>> d = plan_delivery(3, FaultRates(), np.random.default_rng(0))
    >>> d.dropped.tolist(), d.delay_ms.tolist(), d.duplicate_after_ms.tolist()
    ([False, False, False], [0, 0, 0], [-1, -1, -1])
    >>> d = plan_delivery(1000, FaultRates(late_prob=1.0), np.random.default_rng(0))
    >>> bool((d.delay_ms >= 5 * 60_000).all())
    True
    """
    if not rates.delivery_faults:
        no = np.zeros(n, dtype=np.bool_)
        return DeliveryFaults(no, no, np.zeros(n, dtype=np.int64), np.full(n, -1, dtype=np.int64))
    u = rng.random((n, 7))
    dropped = u[:, 0] < rates.dropout_prob
    malformed = u[:, 1] < rates.malformed_prob
    late = u[:, 2] < rates.late_prob
    ooo = (u[:, 3] < rates.out_of_order_prob) & ~late
    lo, hi = rates.late_delay_min
    late_ms = (lo + (hi - lo) * u[:, 4]) * MS_PER_MINUTE
    ooo_ms = _OUT_OF_ORDER_DELAY_MS[0] + (_OUT_OF_ORDER_DELAY_MS[1] - _OUT_OF_ORDER_DELAY_MS[0]) * u[:, 4]
    delay = np.where(late, late_ms, np.where(ooo, ooo_ms, 0.0)).astype(np.int64)
    dup_ms = _DUPLICATE_DELAY_MS[0] + (_DUPLICATE_DELAY_MS[1] - _DUPLICATE_DELAY_MS[0]) * u[:, 6]
    duplicate = np.where(u[:, 5] < rates.duplicate_prob, dup_ms, -1.0).astype(np.int64)
    return DeliveryFaults(dropped, malformed, delay, duplicate)


def add_motion_artefacts(
    heart_rate_bpm: npt.NDArray[np.float64], prob: float, rng: np.random.Generator
) -> int:
    """Spike some of the minute's heart-rate readings in place; returns the rows hit.

    Each row (one device's minute) is hit with probability ``prob``; in a hit row 1–4
    readings jump up by 40–90 beats/min or (one time in four) halve, as when an optical
    sensor locks onto arm movement or loses the pulse.

    Examples
    --------
    >>> hr = np.full((2, 12), 70.0)
    >>> add_motion_artefacts(hr, 1.0, np.random.default_rng(1))
    2
    >>> bool((hr != 70.0).any(axis=1).all())
    True
    """
    if prob <= 0 or heart_rate_bpm.size == 0:
        return 0
    m, k = heart_rate_bpm.shape
    hit = np.flatnonzero(rng.random(m) < prob)
    for row in hit.tolist():
        cols = rng.choice(k, size=int(rng.integers(1, min(4, k) + 1)), replace=False)
        if rng.random() < 0.25:
            heart_rate_bpm[row, cols] *= 0.5
        else:
            heart_rate_bpm[row, cols] += rng.uniform(40.0, 90.0, size=cols.size)
    return int(hit.size)


def malformed_payload(payload: dict[str, Any], rng: np.random.Generator) -> bytes:
    """Garbage bytes in place of ``payload``: never a valid device message.

    One of: truncated JSON, bytes that are not UTF-8, plain text, empty, a JSON value
    that is not an object, a required field missing, a field of the wrong type, an unknown
    schema version, a wrong unit, or a value that is not a number.

    Examples
    --------
    >>> msg = {"schema": "vitalrisk.device/1", "device_id": "dev-1", "patient_id": "pt-1",
    ...        "seq": 0, "sent_at": 0, "readings": [
    ...            {"metric": "heart_rate", "t": 0, "value": 70.0, "unit": "beats/min"}]}
    >>> raw = malformed_payload(msg, np.random.default_rng(3))
    >>> isinstance(raw, bytes)
    True
    """
    variant = int(rng.integers(10))
    text = json.dumps(payload, separators=(",", ":"))
    if variant == 0:  # truncated: any proper prefix of a JSON object is invalid JSON
        return text[: int(rng.integers(0, len(text)))].encode()
    if variant == 1:
        return b"\xff\xfe" + rng.bytes(int(rng.integers(4, 64)))
    if variant == 2:
        return f"HR={payload.get('seq', 0)};SPO2=??".encode()
    if variant == 3:
        return b""
    if variant == 4:
        return json.dumps([payload]).encode()
    broken = json.loads(text)
    if variant == 5:
        del broken[str(rng.choice(["device_id", "patient_id", "seq", "sent_at", "readings"]))]
    elif variant == 6:
        broken["seq"] = str(broken["seq"])
    elif variant == 7:
        broken["schema"] = "vitalrisk.device/0"
    elif variant == 8:
        broken["readings"][0]["unit"] = "bpm" if broken["readings"][0]["unit"] != "bpm" else "Hz"
    else:
        broken["readings"][0]["value"] = "NaN"
    return json.dumps(broken, separators=(",", ":")).encode()
