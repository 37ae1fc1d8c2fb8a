"""UCUM units of the vital signs, and the conversions into the wire units that UCUM allows.

Each metric's wire unit has one UCUM code (:attr:`kernel.vocabulary.Metric.ucum`). A value in
that unit is taken as it is; a value in another unit of the same kind is converted only where the
conversion is exact and the measure is commonly sent that way:

=====================  ===========================  ==========================================
metric                 accepted UCUM codes          conversion to the wire unit
=====================  ===========================  ==========================================
body_temperature       ``Cel``, ``[degF]``, ``K``   (F - 32) x 5/9; K - 273.15
all others             their own code only          none
=====================  ===========================  ==========================================

Blood pressure is taken in ``mm[Hg]`` alone (a kPa or cm[H2O] reading would be a different
device class, and silently scaling it hides a misconfigured sender). UCUM annotations (curly
braces) do not change a unit, so ``{beats}/min`` is ``/min`` and ``{steps}`` is ``1``; a leading
``1/`` is the same as ``/``. UCUM codes are case-sensitive: ``cel`` is not ``Cel``.

A converted value is rounded to :data:`DECIMALS` places, so 98.6 [degF] is 37.0 Cel rather than
36.99999999999999, and a reading sent in Fahrenheit stores the same row as the same reading sent
in Celsius.

Examples
--------
>>> from kernel.vocabulary import METRICS
>>> to_wire(METRICS["body_temperature"], "[degF]", 98.6)
37.0
>>> to_wire(METRICS["body_temperature"], "K", 310.15)
37.0
>>> to_wire(METRICS["heart_rate"], "{beats}/min", 71.0), to_wire(METRICS["step_count"], "{steps}", 12.0)
(71.0, 12.0)
>>> to_wire(METRICS["systolic_blood_pressure"], "kPa", 16.0) is None
True
>>> accepted_codes(METRICS["body_temperature"])
('Cel', '[degF]', 'K')
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from types import MappingProxyType

from kernel.vocabulary import Metric

#: The system URI of UCUM codes in a FHIR Quantity.
UCUM_SYSTEM = "http://unitsofmeasure.org"
#: Decimal places a converted value is rounded to.
DECIMALS = 6

# A UCUM annotation: curly braces around printable ASCII other than braces (UCUM §2.1 rule "annotation").
_ANNOTATION = re.compile(r"\{[!-z|~]*\}")


def _from_fahrenheit(value: float) -> float:
    return (value - 32.0) * 5.0 / 9.0


def _from_kelvin(value: float) -> float:
    return value - 273.15


#: Wire UCUM code -> {other UCUM code: conversion into the wire code}; read-only.
CONVERSIONS: Mapping[str, Mapping[str, Callable[[float], float]]] = MappingProxyType({
    "Cel": MappingProxyType({"[degF]": _from_fahrenheit, "K": _from_kelvin}),
})


def canonical(code: str) -> str:
    """A UCUM code with its annotations dropped: what it means for comparison.

    >>> canonical("{beats}/min"), canonical("{steps}"), canonical("1/min"), canonical("mm[Hg]")
    ('/min', '1', '/min', 'mm[Hg]')
    """
    plain = _ANNOTATION.sub("", code)
    if not plain:
        return "1"  # an annotation alone stands for the unity
    return plain[1:] if plain.startswith("1/") else plain


def to_wire(metric: Metric, code: str, value: float) -> float | None:
    """``value`` given in UCUM ``code`` as ``metric``'s wire unit; ``None`` when the unit is not one it takes."""
    if canonical(code) == canonical(metric.ucum):
        return value
    convert = CONVERSIONS.get(metric.ucum, {}).get(code)
    return None if convert is None else round(convert(value), DECIMALS)


def accepted_codes(metric: Metric) -> tuple[str, ...]:
    """The UCUM codes ``metric`` is taken in, its own first (for a refusal's detail)."""
    return (metric.ucum, *CONVERSIONS.get(metric.ucum, {}))
