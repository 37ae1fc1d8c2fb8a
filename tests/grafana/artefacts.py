"""The committed Grafana and Prometheus files as the tests read them: boards, their queries, YAML.

Tests read the files Grafana and Prometheus read (``grafana/dashboards/*.json`` and the YAML
next to them), not the generator's objects; ``test_generated.py`` ties the two together.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

ROOT = Path(__file__).resolve().parents[2]
GRAFANA_DIR = ROOT / "grafana"
DASHBOARD_DIR = GRAFANA_DIR / "dashboards"
DATASOURCES_FILE = GRAFANA_DIR / "provisioning" / "datasources" / "vitalrisk.yaml"
PROVIDERS_FILE = GRAFANA_DIR / "provisioning" / "dashboards" / "vitalrisk.yaml"
PROMETHEUS_DIR = GRAFANA_DIR / "prometheus"
RULES_DIR = PROMETHEUS_DIR / "rules"
PROMTOOL_TESTS_DIR = PROMETHEUS_DIR / "tests"
COMPOSE_FILE = ROOT / "docker-compose.yml"

Json = dict[str, Any]
Language = Literal["sql", "promql", "prometheus-variable"]


@dataclass(frozen=True, slots=True)
class BoardQuery:
    """One query of a board: a panel target, a variable's query or an annotation's query."""

    board: str
    where: str
    language: Language
    text: str
    format: str

    @property
    def label(self) -> str:
        """Readable id, e.g. ``patient.json: panel 'NEWS2 total' A``."""
        return f"{self.board}: {self.where}"


def dashboards() -> dict[str, Json]:
    """Every committed board, by file name."""
    return {path.name: json.loads(path.read_text(encoding="utf-8"))
            for path in sorted(DASHBOARD_DIR.glob("*.json"))}


def panels(board: Json) -> Iterator[Json]:
    """Every panel, including those nested in collapsed rows."""
    for panel in board.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def queries(name: str, board: Json) -> list[BoardQuery]:
    """Every query of a board, in panel order, then variables, then annotations."""
    found: list[BoardQuery] = []
    for panel in panels(board):
        for target in panel.get("targets", []):
            where = f"panel {panel['title']!r} {target.get('refId')}"
            if "rawSql" in target:
                found.append(BoardQuery(name, where, "sql", target["rawSql"], target.get("format", "time_series")))
            elif "expr" in target:
                found.append(BoardQuery(name, where, "promql", target["expr"],
                                        target.get("format", "time_series")))
    for variable in board.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable["query"] if isinstance(variable["query"], str) else variable["query"].get("query", "")
        language: Language = "sql" if variable["datasource"]["type"] != "prometheus" else "prometheus-variable"
        found.append(BoardQuery(name, f"variable {variable['name']}", language, query, "table"))
    for annotation in board.get("annotations", {}).get("list", []):
        if annotation.get("builtIn"):
            continue
        target = annotation.get("target", {})
        if "rawSql" in target:
            found.append(BoardQuery(name, f"annotation {annotation['name']!r}", "sql", target["rawSql"], "table"))
        elif annotation.get("expr"):
            found.append(BoardQuery(name, f"annotation {annotation['name']!r}", "promql", annotation["expr"],
                                    "time_series"))
    return found


def all_queries() -> list[BoardQuery]:
    """Every query of every committed board."""
    return [query for name, board in dashboards().items() for query in queries(name, board)]


def load_yaml(path: Path) -> Any:
    """Parse a YAML file with PyYAML's safe loader (what the tests compare, not our writer)."""
    return yaml.safe_load(path.read_text(encoding="utf-8"))
