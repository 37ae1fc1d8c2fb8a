"""The four vitalrisk boards, each a function returning a :class:`~grafana.dashboard.Dashboard`.

Examples
--------
>>> sorted(BOARDS)
['care.json', 'model.json', 'ops.json', 'patient.json']
"""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType
from collections.abc import Mapping

from grafana.boards.care import care_board
from grafana.boards.model import model_board
from grafana.boards.ops import ops_board
from grafana.boards.patient import patient_board
from grafana.dashboard import Dashboard

#: File name under grafana/dashboards -> the function that builds that board.
BOARDS: Mapping[str, Callable[[], Dashboard]] = MappingProxyType({
    "ops.json": ops_board,
    "care.json": care_board,
    "patient.json": patient_board,
    "model.json": model_board,
})
