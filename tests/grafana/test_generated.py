"""The committed Grafana/Prometheus files are exactly what grafana/build.py generates.

Boards and rules have one source, the Python in ``grafana/``; a hand edit of a generated file,
or a Python change without regenerating, fails here. The generator's doctests run here too,
because ``grafana/`` is outside the default doctest paths.
"""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

from grafana import build
from tests.grafana.artefacts import GRAFANA_DIR

MODULES = ("grafana.datasources", "grafana.dashboard", "grafana.rules", "grafana.build",
           "grafana.boards", "grafana.boards.clinical", "grafana.boards.ops", "grafana.boards.care",
           "grafana.boards.patient", "grafana.boards.model")


def test_committed_files_equal_the_generator_output() -> None:
    stale = build.stale(GRAFANA_DIR)
    assert not stale, ("generated files differ from grafana/build.py (run `python -m grafana.build`): "
                       + ", ".join(str(p.relative_to(GRAFANA_DIR)) for p in stale))


def test_check_mode_catches_a_hand_edit_and_a_stray_file(tmp_path: Path) -> None:
    build.write(tmp_path)
    assert build.stale(tmp_path) == []
    board = tmp_path / "dashboards" / "ops.json"
    board.write_text(board.read_text().replace("Readings/s now", "Readings/s (edited)"))
    stray = tmp_path / "dashboards" / "old-board.json"
    stray.write_text("{}")
    assert build.stale(tmp_path) == sorted([board, stray])
    assert build.write(tmp_path) == [board]


def test_generation_is_deterministic() -> None:
    assert build.outputs(GRAFANA_DIR) == build.outputs(GRAFANA_DIR)


@pytest.mark.parametrize("module", MODULES)
def test_doctests(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {module}"
