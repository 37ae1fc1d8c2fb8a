"""The one registry of vital-sign metrics: wire names, units, LOINC codes and hard limits.

Metric names and units follow Open mHealth / IEEE 1752 (``heart_rate`` in beats/min,
``oxygen_saturation`` in %, ...). Every other module (validation, simulators, schema,
dashboards) looks metrics up here instead of spelling units or codes again.

The limits are *physically impossible* bounds used to reject readings, not clinical alarm
limits: a heart rate of 250 beats/min is alarming but possible; 400 is a broken sensor.

Examples
--------
>>> METRICS["heart_rate"].unit
'beats/min'
>>> METRICS["oxygen_saturation"].loinc
'59408-5'
>>> METRICS["body_temperature"].accepts(37.2)
True
>>> METRICS["body_temperature"].accepts(52.0)
False
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from collections.abc import Mapping


@dataclass(frozen=True, slots=True)
class Metric:
    """One vital-sign metric as it travels on the wire.

    Parameters
    ----------
    name
        Wire name (Open mHealth schema name).
    unit
        The only unit accepted on the wire for this metric.
    loinc
        LOINC code of the observation.
    lowest, highest
        Inclusive bounds outside which a value is physically impossible.
    """

    name: str
    unit: str
    loinc: str
    lowest: float
    highest: float

    def accepts(self, value: float) -> bool:
        """Whether ``value`` lies within the metric's possible range (inclusive)."""
        return self.lowest <= value <= self.highest


_ALL = (
    Metric("heart_rate", "beats/min", "8867-4", 20.0, 300.0),
    Metric("oxygen_saturation", "%", "59408-5", 50.0, 100.0),
    Metric("respiratory_rate", "breaths/min", "9279-1", 2.0, 80.0),
    Metric("body_temperature", "C", "8310-5", 25.0, 45.0),
    Metric("systolic_blood_pressure", "mmHg", "8480-6", 40.0, 300.0),
    Metric("diastolic_blood_pressure", "mmHg", "8462-4", 20.0, 200.0),
    Metric("step_count", "steps", "55423-8", 0.0, 1000.0),
)

#: Metric name -> :class:`Metric`; read-only.
METRICS: Mapping[str, Metric] = MappingProxyType({m.name: m for m in _ALL})
