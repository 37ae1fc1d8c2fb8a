"""What the Care and Patient boards share: NEWS2 colours and zones, units, the model variable.

NEWS2 zones are read from :mod:`models.news2` (the chart the scorer uses) and units and metric
names from :mod:`kernel.vocabulary`, so a board never spells a cut point or a unit again.

Examples
--------
>>> [(s.color, s.value) for s in vital_zones("heart_rate")]
[('red', None), ('yellow', 40.5), ('green', 50.5), ('yellow', 90.5), ('orange', 110.5), ('red', 130.5)]
>>> grafana_unit("oxygen_saturation"), grafana_unit("respiratory_rate")
('percent', 'suffix: breaths/min')
"""

from __future__ import annotations

from models import news2
from stream.scoring import MODEL_NAME as NEWS2_MODEL
from stream.scoring import NEWS2_INPUTS
from kernel.vocabulary import METRICS

from grafana.dashboard import QueryVariable, Step, value_text
from grafana.datasources import TIMESCALEDB

#: Colour of 0, 1, 2 and 3 NEWS2 points.
POINT_COLORS = ("green", "yellow", "orange", "red")
#: NEWS2 totals: 0-4 low, 5-6 medium (urgent review), 7+ high (emergency response).
NEWS2_TOTAL_STEPS = (Step("green"), Step("orange", 5), Step("red", 7))
#: Clinical-risk bands as the scorer writes them, with their colours.
BAND_MAPPING = value_text({"low": ("low", "green"), "low-medium": ("low-medium (a 3 in one vital)", "yellow"),
                           "medium": ("medium", "orange"), "high": ("high", "red")})
#: Risk-score colours (probability of deterioration), for the learned model and NEWS2/20 alike.
RISK_STEPS = (Step("green"), Step("orange", 0.25), Step("red", 0.35))
#: Vitals in the order a chart lists them.
VITALS = ("respiratory_rate", "oxygen_saturation", "systolic_blood_pressure", "heart_rate", "body_temperature")
#: Grafana units for the wire units that Grafana knows.
_UNITS = {"%": "percent", "C": "celsius"}


def grafana_unit(metric: str) -> str:
    """Grafana's unit id for a metric's wire unit (a ``suffix:`` unit when Grafana has none)."""
    unit = METRICS[metric].unit
    return _UNITS.get(unit, f"suffix: {unit}")


def _scales() -> dict[str, news2._Scale]:
    """The scorer's NEWS2 chart rows, by :data:`stream.scoring.NEWS2_INPUTS` parameter name.

    models/news2.py keeps its chart rows private (``_Scale`` constants); reading them here, rather
    than copying the cut points, keeps the board's zones equal to what the scorer scores. A rename
    there fails :func:`vital_zones`' doctest, not silently.
    """
    return {obj.parameter: obj for obj in vars(news2).values() if isinstance(obj, news2._Scale)}  # noqa: SLF001 - draws NEWS2's own scale tables


def vital_zones(metric: str) -> tuple[Step, ...]:
    """Threshold steps colouring a vital's NEWS2 chart zones (empty for vitals NEWS2 ignores)."""
    parameter = NEWS2_INPUTS.get(metric)
    if parameter is None:
        return ()
    scale = _scales()[parameter]
    steps = [Step(POINT_COLORS[scale.points[0]])]
    steps += [Step(POINT_COLORS[points], cut) for cut, points in zip(scale.cuts, scale.points[1:])]
    return tuple(steps)


def model_variable() -> QueryVariable:
    """``$model``: which scorer's rows the board shows (NEWS2 until a learned model writes scores)."""
    return QueryVariable(
        name="model", label="Model", datasource=TIMESCALEDB, default=NEWS2_MODEL,
        description="Scorer whose risk the board shows; every row also carries NEWS2.",
        query="SELECT DISTINCT model_name FROM risk_scores WHERE $__timeFilter(window_start) ORDER BY 1")

