"""NEWS2 scores for closed windows, carrying each vital forward until it grows stale.

Wearables measure vitals at different rates: heart rate every few seconds, blood pressure a
few times a day. A window rarely holds all five NEWS2 vitals, so each patient's latest window
mean per vital is kept and used while it is no older than ``carry_ms`` (the one carry-forward
rule, :mod:`models.carry_forward`).

A window is scored when the wearable's continuous vitals (heart rate, respiratory rate, SpO2)
are known. Temperature and blood pressure, measured rarely, may be missing: they then score 0,
which can only *under*-state risk, and the score lists them in ``missing_inputs`` so that no
reader mistakes a partial NEWS2 for a complete one. ``inputs`` shows every value used, so a
carried-forward blood pressure is visible in the row.

Examples
--------
>>> window = WindowFeatures(patient_id="pt-1", start_ms=60_000, end_ms=120_000, metrics={})
>>> known = {"systolic_blood_pressure": (60_000, 118.0), "heart_rate": (120_000, 96.0),
...          "respiratory_rate": (120_000, 22.0), "oxygen_saturation": (120_000, 95.0),
...          "body_temperature": (120_000, 38.4)}
>>> s = news2_for_window(window, known, carry_ms=3_600_000)
>>> s.news2_total, s.news2_band, s.inputs["systolic_blood_pressure"], s.missing_inputs
(5, 'medium', 118.0, ())
>>> del known["body_temperature"], known["systolic_blood_pressure"]
>>> known["heart_rate"] = (120_000, 135.0)
>>> partial = news2_for_window(window, known, carry_ms=3_600_000)
>>> partial.news2_total, partial.missing_inputs
(6, ('body_temperature', 'systolic_blood_pressure'))
>>> known["heart_rate"] = (0, 135.0)  # last heard an hour before the window: too old
>>> news2_for_window(window, known, carry_ms=60_000) is None
True
"""

from __future__ import annotations

from collections.abc import Mapping

from kernel.events import RiskScore, WindowFeatures
from models.carry_forward import carried
from models.news2 import MAX_TOTAL, News2Scorer

MODEL_NAME = "news2"
MODEL_VERSION = "rcp-2017-scale1"

#: Wire metric name -> keyword of :func:`models.news2.news2_score`.
NEWS2_INPUTS = {
    "respiratory_rate": "respiratory_rate",
    "oxygen_saturation": "spo2",
    "systolic_blood_pressure": "systolic_bp",
    "heart_rate": "heart_rate",
    "body_temperature": "temperature",
}
#: Vitals a window cannot be scored without: the ones a wearable measures continuously.
REQUIRED_INPUTS = ("heart_rate", "respiratory_rate", "oxygen_saturation")
#: NEWS2 subscore name -> the wire metric it scores.
_SUBSCORE_METRIC = {kw: metric for metric, kw in NEWS2_INPUTS.items()}
_REQUIRED = frozenset(REQUIRED_INPUTS)
_INPUTS_SORTED = tuple(sorted(NEWS2_INPUTS))


def news2_for_window(window: WindowFeatures, known: Mapping[str, tuple[int, float]], *,
                     carry_ms: int) -> RiskScore | None:
    """NEWS2 for a closed window from the patient's last known vitals.

    Parameters
    ----------
    window
        The closed window being scored.
    known
        Metric -> (end of the window it was last measured in, its mean), including this window.
    carry_ms
        Oldest measurement, relative to the window's end, that may stand in for a missing vital.
    """
    end_ms = window.end_ms
    inputs = {metric: value for metric in NEWS2_INPUTS
              if (value := carried(known.get(metric), end_ms, carry_ms=carry_ms)) is not None}
    if not inputs.keys() >= _REQUIRED:
        return None
    news2 = _NEWS2.score_one({NEWS2_INPUTS[m]: v for m, v in inputs.items()})
    subscores, total = news2.subscores, news2.total  # computed on each access: once each
    contributions = {_SUBSCORE_METRIC.get(name, name): float(points) for name, points in subscores.items() if points}
    missing = tuple(m for m in _INPUTS_SORTED if m not in inputs)
    return RiskScore(patient_id=window.patient_id, window_start_ms=window.start_ms, window_end_ms=window.end_ms, model_name=MODEL_NAME, model_version=MODEL_VERSION,
                     score=total / MAX_TOTAL, news2_total=total, news2_band=news2.band, inputs=inputs, contributions=contributions, missing_inputs=missing,
                     news2_subscores=subscores)


_NEWS2 = News2Scorer()
