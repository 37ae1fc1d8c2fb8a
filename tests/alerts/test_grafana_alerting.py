"""Grafana alerting provisioning (``grafana/provisioning/alerting``): structure, data sources, queries.

YAML is parsed by the system Python's PyYAML (Debian's python3-yaml, which comes with
docker-compose); the project itself does not depend on PyYAML. PromQL is checked by promtool and
against the metric catalogue of :mod:`sinks.metrics`; the SQL runs on a migrated database as the
read-only role Grafana uses.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client import CollectorRegistry

from sinks.metrics import AlertMetrics, ModelMetrics, PipelineMetrics
from kernel.alerts import SEVERITIES
from kernel.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
ALERTING = ROOT / "grafana" / "provisioning" / "alerting"
DATASOURCES = ROOT / "grafana" / "provisioning" / "datasources"
UIDS = {"vitalrisk-timescaledb", "vitalrisk-prometheus"}
EXPR = "__expr__"
DURATION = re.compile(r"^(0|[0-9]+(ms|s|m|h|d|w))+$")
SYSTEM_PYTHON = "/usr/bin/python3"


@functools.lru_cache(maxsize=16)
def _load(path: Path) -> str:
    if not Path(SYSTEM_PYTHON).exists():
        pytest.skip(f"{SYSTEM_PYTHON} not found to parse YAML")
    done = subprocess.run([SYSTEM_PYTHON, "-c", "import json, sys, yaml; print(json.dumps(yaml.safe_load("
                           "open(sys.argv[1]))))", str(path)], capture_output=True, text=True, timeout=30)
    if "No module named 'yaml'" in done.stderr:
        pytest.skip("no YAML parser: install Debian's python3-yaml (comes with docker-compose)")
    assert done.returncode == 0, f"{path} is not valid YAML:\n{done.stderr}"
    return done.stdout


def load(name: str) -> Any:
    return json.loads(_load(ALERTING / name))


def rules() -> list[dict[str, Any]]:
    return [rule for group in load("vitalrisk-rules.yaml")["groups"] for rule in group["rules"]]


def queries(datasource: str) -> list[dict[str, Any]]:
    return [q for rule in rules() for q in rule["data"] if q["datasourceUid"] == datasource]


def metric_catalogue() -> set[str]:
    registry = CollectorRegistry()
    PipelineMetrics(registry), ModelMetrics(registry), AlertMetrics(registry)
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    return {family.name + suffix for family in registry.collect() for suffix in suffixes.get(family.type, ("",))}


def test_every_file_is_provisioning_version_1() -> None:
    names = sorted(p.name for p in ALERTING.glob("*.yaml"))
    assert names == ["vitalrisk-contact-points.yaml", "vitalrisk-policies.yaml", "vitalrisk-rules.yaml"]
    for name in names:
        assert load(name)["apiVersion"] == 1


def test_rules_are_well_formed() -> None:
    groups = load("vitalrisk-rules.yaml")["groups"]
    assert {g["name"] for g in groups} == {"vitalrisk-patients", "vitalrisk-pipeline"}
    for group in groups:
        assert group["orgId"] == 1 and group["folder"] == "vitalrisk" and DURATION.match(group["interval"])
    all_rules = rules()
    uids = [r["uid"] for r in all_rules]
    assert len(set(uids)) == len(uids) and all(re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", u) for u in uids)
    assert {r["title"] for r in all_rules} == {"High-risk patients", "Pipeline stalled", "Consumer lag high",
                                               "Dead-letter rate high", "Pages failing"}
    for rule in all_rules:
        refs = [q["refId"] for q in rule["data"]]
        assert len(set(refs)) == len(refs) and rule["condition"] in refs, rule["uid"]
        for i, query in enumerate(rule["data"]):
            assert query["model"]["refId"] == query["refId"]
            if query["datasourceUid"] == EXPR:
                assert query["model"]["type"] in ("reduce", "threshold", "math")
                assert query["model"]["expression"] in refs[:i], "expressions use earlier queries"
            else:
                assert query["datasourceUid"] in UIDS
                assert query["relativeTimeRange"]["from"] > query["relativeTimeRange"]["to"] == 0
        assert DURATION.match(rule["for"]), rule["for"]
        assert rule["noDataState"] in ("Alerting", "NoData", "OK", "KeepLast")
        assert rule["execErrState"] in ("Alerting", "Error", "OK", "KeepLast")
        assert rule["labels"]["severity"] in SEVERITIES
        assert rule["annotations"]["summary"]


def test_data_source_uids_are_the_provisioned_ones() -> None:
    used = {q["datasourceUid"] for rule in rules() for q in rule["data"]} - {EXPR}
    assert used == UIDS
    files = sorted(DATASOURCES.glob("*.yaml"))
    if not files:
        pytest.skip("grafana/provisioning/datasources not written yet")
    provisioned = {ds["uid"]: ds["type"] for f in files
                   for ds in json.loads(_load(f)).get("datasources", [])}
    assert provisioned.get("vitalrisk-prometheus") == "prometheus"
    assert provisioned.get("vitalrisk-timescaledb") in ("grafana-postgresql-datasource", "postgres")


def test_promql_uses_only_catalogued_metrics_and_parses() -> None:
    catalogue = metric_catalogue()
    exprs = [q["model"]["expr"] for q in queries("vitalrisk-prometheus")]
    assert len(exprs) == 4
    for expr in exprs:
        names = set(re.findall(r"\bvitals_[a-z0-9_]+", expr))
        assert names and names <= catalogue, names - catalogue


def test_promql_is_valid_for_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian's prometheus package)")
    lines = ["groups:", "  - name: check", "    rules:"]
    for i, query in enumerate(queries("vitalrisk-prometheus")):
        lines += [f"      - alert: Check{i}", f"        expr: {json.dumps(query['model']['expr'])}"]
    path = tmp_path / "rules.yml"
    path.write_text("\n".join(lines) + "\n")
    done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr


def test_contact_point_and_policy_route_every_severity_to_the_pager() -> None:
    (point,) = load("vitalrisk-contact-points.yaml")["contactPoints"]
    (receiver,) = point["receivers"]
    assert receiver["type"] == "webhook" and receiver["settings"]["url"].endswith("/grafana")
    assert receiver["settings"]["authorization_credentials"].startswith("$"), "no secret in the file"
    (policy,) = load("vitalrisk-policies.yaml")["policies"]
    names = {point["name"]}
    assert policy["receiver"] in names
    routed = set()
    for route in policy["routes"]:
        assert route["receiver"] in names
        for label, op, value in route["object_matchers"]:
            assert (label, op) == ("severity", "=") and value in SEVERITIES
            routed.add(value)
    assert {r["labels"]["severity"] for r in rules()} <= routed


@pytest.mark.integration
def test_the_sql_rule_runs_as_grafanas_read_only_role(isolated: Settings) -> None:
    (query,) = queries("vitalrisk-timescaledb")
    reader = isolated.database_url.replace("vitalrisk_writer@", "vitalrisk_reader@")
    with psycopg.connect(reader) as conn:
        rows = conn.execute(query["model"]["rawSql"]).fetchall()
    assert rows == [(0,)]
