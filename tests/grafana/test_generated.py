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
import yaml

from grafana import build, datasources, rules
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


def test_every_yaml_file_reads_back_as_the_document_built() -> None:
    """The YAML writer changes layout only: parsed, each file is exactly what the Python built."""
    files = build.outputs(GRAFANA_DIR)
    built = {"provisioning/datasources/vitalrisk.yaml": datasources.datasources_document(),
             "provisioning/dashboards/vitalrisk.yaml": datasources.dashboards_document(),
             "prometheus/prometheus.yml": rules.prometheus_config(),
             "prometheus/rules/vitalrisk.yml": rules.rules_document()}
    for name, document in built.items():
        assert yaml.safe_load(files[GRAFANA_DIR / name]) == document, name


@pytest.mark.parametrize("value", ["on", "No", "~", "10", "0.5", "1e3", "15s", "a: b", "it's", "#x", "$VITALS_PG_HOST",
                                   "{{ $labels.instance }}", "", " lead", "two\nlines", "two\nlines\n", "a\n\n",
                                   "trailing \nspace", " indented\nblock", "tab\there", "é · ≥"])
def test_yaml_strings_survive_the_round_trip(value: str) -> None:
    text = build.yaml_text({"key": value, "list": [value]})
    assert yaml.safe_load(text) == {"key": value, "list": [value]}, text


@pytest.mark.parametrize("module", MODULES)
def test_doctests(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {module}"
