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

Each metric also names its UCUM code (how FHIR writes the wire unit) and any other LOINC codes
that mean the same measure; :data:`LOINC` finds a metric by any of its codes, and :data:`PANELS`
holds the observations that carry several metrics (the blood-pressure panel):

>>> METRICS["body_temperature"].ucum, LOINC["2708-6"].name
('Cel', 'oxygen_saturation')
>>> PANELS["85354-9"].metrics
('systolic_blood_pressure', 'diastolic_blood_pressure')
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
    ucum
        The wire unit as a UCUM code (what a FHIR ``valueQuantity.code`` holds).
    also_loinc
        Other LOINC codes of the same measure (FHIR's oxygen-saturation profile asks for
        2708-6 beside the pulse-oximetry code 59408-5).
    """

    name: str
    unit: str
    loinc: str
    lowest: float
    highest: float
    ucum: str
    also_loinc: tuple[str, ...] = ()

    def accepts(self, value: float) -> bool:
        """Whether ``value`` lies within the metric's possible range (inclusive)."""
        return self.lowest <= value <= self.highest


_ALL = (
    Metric("heart_rate", "beats/min", "8867-4", 20.0, 300.0, ucum="/min"),
    Metric("oxygen_saturation", "%", "59408-5", 50.0, 100.0, ucum="%", also_loinc=("2708-6",)),
    Metric("respiratory_rate", "breaths/min", "9279-1", 2.0, 80.0, ucum="/min"),
    Metric("body_temperature", "C", "8310-5", 25.0, 45.0, ucum="Cel"),
    Metric("systolic_blood_pressure", "mmHg", "8480-6", 40.0, 300.0, ucum="mm[Hg]"),
    Metric("diastolic_blood_pressure", "mmHg", "8462-4", 20.0, 200.0, ucum="mm[Hg]"),
    Metric("step_count", "steps", "55423-8", 0.0, 1000.0, ucum="{steps}"),
)

#: Metric name -> :class:`Metric`; read-only.
METRICS: Mapping[str, Metric] = MappingProxyType({m.name: m for m in _ALL})

#: LOINC code (a metric's own or one of its ``also_loinc``) -> :class:`Metric`; read-only.
LOINC: Mapping[str, Metric] = MappingProxyType({code: m for m in _ALL for code in (m.loinc, *m.also_loinc)})


@dataclass(frozen=True, slots=True)
class Panel:
    """An observation that carries several metrics as its components.

    Parameters
    ----------
    name
        Name of the panel (Open mHealth writes it with hyphens: ``blood-pressure``).
    loinc
        LOINC code of the panel.
    metrics
        The wire names of its components, in the order a reader reports them.
    """

    name: str
    loinc: str
    metrics: tuple[str, ...]


#: Panel LOINC code -> :class:`Panel`; read-only.
PANELS: Mapping[str, Panel] = MappingProxyType({p.loinc: p for p in (
    Panel("blood_pressure", "85354-9", ("systolic_blood_pressure", "diastolic_blood_pressure")),
)})
