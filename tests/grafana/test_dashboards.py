"""Every board loads and is structurally valid for Grafana 11, and provisioning matches compose.

Checked on the committed JSON and YAML (what Grafana reads): unique uids and titles, data
source references that exist in the provisioned data sources (same uid and type), unique panel
ids, panels on the 24-column grid without overlaps, well-formed targets, variables and
annotations, every ``$variable`` a query uses defined on its board, links to boards that exist,
and grafana/README.md describing every board, panel and alert. The provisioning files must fit
docker-compose.yml: the environment variables they expand are given to the Grafana container and
the dashboards path is where the boards are mounted.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.grafana.artefacts import (COMPOSE_FILE, DATASOURCES_FILE, GRAFANA_DIR, PROVIDERS_FILE, RULES_DIR, dashboards,
                                     load_yaml, panels, queries)

GRID_WIDTH = 24
#: Core panel types of Grafana 11 that our boards may use.
PANEL_TYPES = {"row", "timeseries", "stat", "table", "bargauge", "state-timeline", "text", "gauge", "barchart"}
#: Dashboard-level built-in data source references.
BUILTIN_SOURCES = {("grafana", "-- Grafana --")}
#: Variables Grafana defines itself.
GRAFANA_BUILTINS = {"__interval", "__interval_ms", "__rate_interval", "__range", "__range_s", "__range_ms",
                    "__from", "__to", "__dashboard", "__user", "__org", "__value", "__url_time_range",
                    "__timeFilter", "__timeFrom", "__timeTo", "__timeGroup", "__timeGroupAlias", "__time",
                    "__timeEpoch", "__unixEpochFilter", "__unixEpochFrom", "__unixEpochTo"}
_VARIABLE_USE = re.compile(r"\$\{(\w+)(?:[.:][^}]*)?\}|\$(\w+)|\[\[(\w+)")
BOARDS = dashboards()


@pytest.fixture(scope="module")
def provisioned() -> dict[str, str]:
    """Provisioned data sources: uid -> type."""
    document = load_yaml(DATASOURCES_FILE)
    assert document["apiVersion"] == 1
    return {source["uid"]: source["type"] for source in document["datasources"]}


def _ref(ref: Any) -> tuple[str, str]:
    assert isinstance(ref, dict) and set(ref) >= {"type", "uid"}, f"data source reference by uid and type: {ref!r}"
    return ref["type"], ref["uid"]


def test_the_four_boards_exist() -> None:
    assert set(BOARDS) == {"ops.json", "care.json", "patient.json", "model.json"}


def test_uids_and_titles_are_unique() -> None:
    uids = [board["uid"] for board in BOARDS.values()]
    titles = [board["title"] for board in BOARDS.values()]
    assert len(set(uids)) == len(uids), uids
    assert len(set(titles)) == len(titles), titles
    for uid in uids:
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", uid), f"Grafana uids: at most 40 of [A-Za-z0-9_-]: {uid!r}"


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_board_shape(name: str) -> None:
    board = BOARDS[name]
    assert board["schemaVersion"] >= 39, "pinned to Grafana 11 (schema 39+)"
    assert board.get("id") is None, "provisioned boards carry no database id"
    assert board["title"] and board["description"]
    assert set(board["time"]) == {"from", "to"}
    assert isinstance(board["templating"]["list"], list) and isinstance(board["annotations"]["list"], list)


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_panel_ids_are_unique_and_the_grid_is_sane(name: str) -> None:
    board = BOARDS[name]
    ids = [panel["id"] for panel in panels(board)]
    assert all(isinstance(i, int) and i > 0 for i in ids), ids
    assert len(set(ids)) == len(ids), f"duplicate panel ids in {name}"
    cells: dict[tuple[int, int], str] = {}
    for panel in panels(board):
        assert panel["type"] in PANEL_TYPES, f"{panel['title']!r}: unknown panel type {panel['type']!r}"
        pos = panel["gridPos"]
        assert all(isinstance(pos[k], int) for k in ("x", "y", "w", "h")), pos
        assert 1 <= pos["w"] <= GRID_WIDTH and pos["h"] >= 1 and pos["x"] >= 0 and pos["y"] >= 0, pos
        assert pos["x"] + pos["w"] <= GRID_WIDTH, f"{panel['title']!r} runs off the grid: {pos}"
        if panel["type"] == "row":
            assert (pos["x"], pos["w"], pos["h"]) == (0, GRID_WIDTH, 1), pos
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r} at {(x, y)}"
                cells[(x, y)] = panel["title"]


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_every_data_source_reference_is_provisioned(name: str, provisioned: dict[str, str]) -> None:
    board = BOARDS[name]
    known = {(kind, uid) for uid, kind in provisioned.items()}
    for panel in panels(board):
        if panel["type"] in ("row", "text"):
            continue
        panel_ref = _ref(panel["datasource"])
        assert panel_ref in known, f"{name} {panel['title']!r}: {panel_ref} is not provisioned"
        targets = panel["targets"]
        assert targets, f"{panel['title']!r} has no query"
        assert len({t["refId"] for t in targets}) == len(targets), f"{panel['title']!r}: duplicate refIds"
        for target in targets:
            assert _ref(target["datasource"]) == panel_ref, f"{panel['title']!r}: target and panel sources differ"
            if panel_ref[0] == "prometheus":
                assert target["expr"].strip() and target["format"] in ("time_series", "table")
            else:
                assert target["rawSql"].strip() and target["rawQuery"] is True
                assert target["format"] in ("time_series", "table"), target["format"]
    for variable in board["templating"]["list"]:
        assert _ref(variable["datasource"]) in known, f"variable {variable['name']}: unknown data source"
    for annotation in board["annotations"]["list"]:
        ref = _ref(annotation["datasource"])
        assert ref in known or (annotation.get("builtIn") and ref in BUILTIN_SOURCES), annotation["name"]


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_every_panel_says_what_it_answers(name: str) -> None:
    for panel in panels(BOARDS[name]):
        if panel["type"] != "row":
            assert panel.get("description", "").strip(), f"{name}: {panel['title']!r} has no description"


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_variables_used_are_defined(name: str) -> None:
    board = BOARDS[name]
    names = [v["name"] for v in board["templating"]["list"]]
    assert len(set(names)) == len(names), names
    for query in queries(name, board):
        for match in _VARIABLE_USE.finditer(query.text):
            used = next(g for g in match.groups() if g)
            assert used in names or used in GRAFANA_BUILTINS, f"{query.label} uses undefined ${used}"


def test_links_point_at_boards_that_exist() -> None:
    uids = {board["uid"] for board in BOARDS.values()}
    for name, board in BOARDS.items():
        for panel in panels(board):
            for override in panel.get("fieldConfig", {}).get("overrides", []):
                for prop in override["properties"]:
                    if prop["id"] == "links":
                        for link in prop["value"]:
                            target = re.match(r"/d/([\w-]+)", link["url"])
                            assert target and target.group(1) in uids, f"{name}: dead link {link['url']}"


def test_sql_and_prometheus_sources_are_what_the_brief_asks(provisioned: dict[str, str]) -> None:
    sources = {s["uid"]: s for s in load_yaml(DATASOURCES_FILE)["datasources"]}
    timescale = next(s for s in sources.values() if s["type"] == "grafana-postgresql-datasource")
    assert timescale["user"] == "vitalrisk_reader"
    assert timescale["jsonData"]["timescaledb"] is True
    assert timescale["url"] == "$VITALS_PG_HOST" and timescale["jsonData"]["database"] == "$VITALS_PG_DATABASE"
    assert timescale["secureJsonData"] == {"password": "$VITALS_READER_PASSWORD"}
    prometheus = next(s for s in sources.values() if s["type"] == "prometheus")
    assert prometheus["url"] == "$VITALS_PROMETHEUS_URL"


def _env_refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        return set().union(*(_env_refs(v) for v in node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*(_env_refs(v) for v in node)) if node else set()
    if isinstance(node, str):
        # Alert templates ({{ $values.B.Value }}, {{ $labels.x }}) are Grafana's, not environment variables.
        text = re.sub(r"\{\{.*?\}\}", "", node, flags=re.DOTALL)
        return {a or b for a, b in re.findall(r"\$\{(\w+)\}|\$(\w+)", text)}
    return set()


def test_provisioning_fits_docker_compose() -> None:
    compose = load_yaml(COMPOSE_FILE)
    grafana = compose["services"]["grafana"]
    env = grafana["environment"]
    env_names = set(env) if isinstance(env, dict) else {item.split("=", 1)[0] for item in env}
    alerting = sorted((GRAFANA_DIR / "provisioning" / "alerting").glob("*.yaml"))
    assert alerting, "no alerting provisioning files"
    for path in (DATASOURCES_FILE, PROVIDERS_FILE, *alerting):
        missing = _env_refs(load_yaml(path)) - env_names
        assert not missing, f"{path.name} expands {missing}, which docker-compose.yml does not give Grafana"
    mounts = {volume.split(":")[0]: volume.split(":")[1] for volume in grafana["volumes"]}
    (provider,) = load_yaml(PROVIDERS_FILE)["providers"]
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    assert grafana["image"].startswith("grafana/grafana:11."), "boards are written for Grafana 11"


def _option(command: list[str], flag: str) -> str | None:
    return command[command.index(flag) + 1] if flag in command else None


def test_grafana_contact_point_reaches_the_compose_pager() -> None:
    """Grafana's webhook contact point posts to the pager service, on the port it listens on,
    with the bearer token the pager is told to read (the same variable on both sides)."""
    services = load_yaml(COMPOSE_FILE)["services"]
    pager, grafana = services["pager"], services["grafana"]
    command = [str(part) for part in pager["command"]]
    port = _option(command, "--port") or "9095"  # the CLI's default
    assert _option(command, "--host") == "0.0.0.0", "the pager must listen beyond its container's loopback"
    token_env = _option(command, "--grafana-token-env")
    assert token_env, "the pager is not given Grafana's token: /grafana would reject every notification"
    assert token_env in pager["environment"] and token_env in grafana["environment"]
    assert pager["environment"][token_env] == grafana["environment"][token_env]
    document = load_yaml(GRAFANA_DIR / "provisioning" / "alerting" / "vitalrisk-contact-points.yaml")
    webhooks = [receiver for point in document["contactPoints"] for receiver in point["receivers"]
                if receiver["type"] == "webhook"]
    assert webhooks
    for receiver in webhooks:
        settings = receiver["settings"]
        assert settings["url"] == f"http://pager:{port}/grafana", settings["url"]
        assert settings["authorization_scheme"] == "Bearer"
        assert settings["authorization_credentials"] == f"${token_env}"


def test_the_readme_describes_every_board_panel_and_alert() -> None:
    readme = (GRAFANA_DIR / "README.md").read_text(encoding="utf-8")
    for name, board in BOARDS.items():
        assert f"`{board['title']}`" in readme, f"grafana/README.md does not describe {name}"
        for panel in panels(board):
            assert panel["title"] in readme, f"grafana/README.md does not describe {name}: {panel['title']!r}"
    for alert in re.findall(r"- alert: (\w+)", "".join(p.read_text() for p in RULES_DIR.glob("*.yml"))):
        assert f"`{alert}`" in readme, f"grafana/README.md does not explain {alert}"


def test_vital_zones_colour_what_the_news2_scorer_scores() -> None:
    from grafana.boards.clinical import POINT_COLORS, vital_zones
    from models.news2 import news2_score
    from stream.scoring import NEWS2_INPUTS

    normal = {"respiratory_rate": 16.0, "spo2": 97.0, "systolic_bp": 120.0, "heart_rate": 70.0, "temperature": 37.0}
    for metric, parameter in NEWS2_INPUTS.items():
        steps = vital_zones(metric)
        cuts = [step.value for step in steps[1:]]
        assert cuts == sorted(cuts), metric
        probes = [cuts[0] - 1.0] + [cut + 0.001 for cut in cuts if cut is not None]
        for step, value in zip(steps, probes):
            points = news2_score(**{**normal, parameter: value}).subscores[parameter]
            assert step.color == POINT_COLORS[points], f"{metric} = {value}: zone {step.color}, scorer {points} points"
