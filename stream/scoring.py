"""NEWS2 scores for closed windows, carrying each vital forward until it grows stale.

Wearables measure vitals at different rates: heart rate every few seconds, blood pressure a
few times a day. A window rarely holds all five NEWS2 vitals, so each patient's latest window
mean per vital is kept and used while it is younger than ``carry_ms``.

A window is scored when the wearable's continuous vitals (heart rate, respiratory rate, SpO2)
are known. Temperature and blood pressure, measured rarely, may be missing: they then score 0,
which can only *under*-state risk, and the score lists them in ``missing_inputs`` so that no
reader mistakes a partial NEWS2 for a complete one. ``inputs`` shows every value used, so a
carried-forward blood pressure is visible in the row.

Examples
--------
>>> from stream.events import MetricStats
>>> scorer = News2WindowScorer(carry_ms=3_600_000)
>>> def stats(v): return MetricStats(1, v, v, v)
>>> first = WindowFeatures("pt-1", 0, 60_000, {"systolic_blood_pressure": stats(118.0)})
>>> scorer.score(first) is None
True
>>> second = WindowFeatures("pt-1", 60_000, 120_000, {
...     "heart_rate": stats(96.0), "respiratory_rate": stats(22.0), "oxygen_saturation": stats(95.0),
...     "body_temperature": stats(38.4)})
>>> s = scorer.score(second)
>>> s.news2_total, s.news2_band, s.inputs["systolic_blood_pressure"], s.missing_inputs
(5, 'medium', 118.0, ())
>>> other = WindowFeatures("pt-2", 0, 60_000, {
...     "heart_rate": stats(135.0), "respiratory_rate": stats(16.0), "oxygen_saturation": stats(97.0)})
>>> partial = scorer.score(other)
>>> partial.news2_total, partial.missing_inputs
(3, ('body_temperature', 'systolic_blood_pressure'))
"""

from __future__ import annotations

from stream.events import RiskScore, WindowFeatures
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


class News2WindowScorer:
    """NEWS2 per closed window, with last-value-carried-forward per patient and vital.

    Parameters
    ----------
    carry_ms
        Oldest window end, relative to the window being scored, whose mean may stand in
        for a vital missing from that window.
    """

    def __init__(self, *, carry_ms: int) -> None:
        if carry_ms < 0:
            raise ValueError(f"carry_ms must be zero or more, got {carry_ms}")
        self.carry_ms = carry_ms
        self._last: dict[str, dict[str, tuple[int, float]]] = {}
        self._news2 = News2Scorer()

    def __len__(self) -> int:
        return len(self._last)

    def score(self, window: WindowFeatures) -> RiskScore | None:
        """Remember the window's means; score it if every NEWS2 vital is fresh enough."""
        known = self._last.setdefault(window.patient_id, {})
        for metric, stats in window.metrics.items():
            if metric in NEWS2_INPUTS:
                seen = known.get(metric)
                if seen is None or seen[0] <= window.end_ms:
                    known[metric] = (window.end_ms, stats.mean)
        oldest_allowed = window.end_ms - self.carry_ms
        inputs = {metric: seen[1] for metric in NEWS2_INPUTS
                  if (seen := known.get(metric)) is not None and seen[0] >= oldest_allowed}
        if any(metric not in inputs for metric in REQUIRED_INPUTS):
            return None
        news2 = self._news2.score_one({NEWS2_INPUTS[m]: v for m, v in inputs.items()})
        contributions = {_SUBSCORE_METRIC.get(name, name): float(points)
                         for name, points in news2.subscores.items() if points}
        missing = tuple(m for m in sorted(NEWS2_INPUTS) if m not in inputs)
        return RiskScore(window.patient_id, window.start_ms, window.end_ms, MODEL_NAME, MODEL_VERSION,
                         news2.total / MAX_TOTAL, news2.total, news2.band, inputs, contributions, missing,
                         news2_subscores=news2.subscores)

    def forget(self, patient_id: str) -> None:
        """Drop a patient's carried values (patient moved to another worker, or expired)."""
        self._last.pop(patient_id, None)
