"""Every PromQL expression parses (promtool) and reads only metrics the code exports; the
alerting rules pass their ``promtool test rules`` unit tests.

Debian's promtool (2.42) has no query-parsing command, so each dashboard expression, with
Grafana's variables replaced, becomes a recording rule in a generated file that
``promtool check rules`` parses. Metric names are compared with the catalogue: the names that
the ``*Metrics`` classes of :mod:`sinks.metrics` register on a fresh registry (with the
series suffixes their types export), ``up``, ``ALERTS`` (Prometheus' own series of its alerting
rules) and, for rules, the recording rules defined next to them. Label names too: an expression
on our metrics matches and groups only on the labels those metrics define, the target labels
``job`` and ``instance``, and ``le`` of a histogram's buckets.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

import sinks.metrics
from kernel.settings import Settings
from grafana.build import yaml_text
from tests.grafana.artefacts import (COMPOSE_FILE, PROMETHEUS_DIR, PROMTOOL_TESTS_DIR, RULES_DIR, BoardQuery,
                                     all_queries, dashboards, load_yaml)
from tests.grafana.promql import LABEL_VALUES, interpolate, label_names, metric_names

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
#: Series suffixes each metric type exports (``_created`` series are not for dashboards).
SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum"),
            "summary": ("", "_count", "_sum"), "info": ("_info",)}
#: Series that exist without our code exporting them: scrape health and Prometheus' alert state.
PROMETHEUS_SERIES = {"up", "ALERTS"}
#: Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"job", "instance"}
RULE_FILES = sorted(RULES_DIR.glob("*.yml"))

needs_promtool = pytest.mark.skipif(not Path(PROMTOOL).is_file(),
                                    reason="promtool not installed (Debian package prometheus; make system-deps)")


def _metrics_classes() -> list[type]:
    """The ``*Metrics`` classes of sinks/metrics.py."""
    classes = [obj for name, obj in vars(sinks.metrics).items()
               if isinstance(obj, type) and name.endswith("Metrics") and obj.__module__ == sinks.metrics.__name__]
    assert classes, "no *Metrics classes found in sinks/metrics.py"
    return classes


def exported_metric_names() -> set[str]:
    """Series names of every metric in sinks/metrics.py, registered on a fresh registry."""
    registry = CollectorRegistry()
    for cls in _metrics_classes():
        cls(registry)
    return {family.name + suffix for family in registry.collect() for suffix in SUFFIXES[family.type]}


def exported_metric_labels() -> dict[str, set[str]]:
    """Series name -> the label names it carries, for every metric in sinks/metrics.py."""
    registry = CollectorRegistry()
    labels: dict[str, set[str]] = {}
    for cls in _metrics_classes():
        for metric in vars(cls(registry)).values():
            if isinstance(metric, MetricWrapperBase):
                for suffix in SUFFIXES[metric._type]:
                    labels[metric._name + suffix] = set(metric._labelnames) | ({"le"} if suffix == "_bucket" else set())
    return labels


def unknown_labels(expr: str, catalogue: dict[str, set[str]]) -> set[str]:
    """Labels ``expr`` uses that none of its metrics has (only for expressions on our metrics alone)."""
    names = metric_names(expr)
    if not names or not names <= set(catalogue):
        return set()
    return label_names(expr) - set().union(*(catalogue[name] for name in names)) - TARGET_LABELS


def _promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *map(str, args)], capture_output=True, text=True, timeout=60)


def _rules() -> list[dict[str, str]]:
    return [rule for path in RULE_FILES for group in load_yaml(path)["groups"] for rule in group["rules"]]


def _prometheus_variables(board: str) -> dict[str, str]:
    """A regex that matches anything for each Prometheus variable of a board (as "All" does)."""
    return {v["name"]: ".*" for v in dashboards()[board]["templating"]["list"]
            if v["datasource"]["type"] == "prometheus"}


def _expression(query: BoardQuery) -> str:
    """The PromQL a query sends to Prometheus (a variable's label_values selector on its own)."""
    text = query.text
    if query.language == "prometheus-variable":
        match = LABEL_VALUES.match(text)
        assert match, f"{query.label}: only label_values(<selector>, <label>) variables are expected: {text!r}"
        text = match.group(1)
    return interpolate(text, _prometheus_variables(query.board))


PROMQL_QUERIES = [q for q in all_queries() if q.language in ("promql", "prometheus-variable")]


def test_the_boards_have_promql_to_check() -> None:
    assert len(PROMQL_QUERIES) > 30


@needs_promtool
def test_prometheus_config_and_rule_files_pass_promtool_check() -> None:
    config = _promtool("check", "config", PROMETHEUS_DIR / "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr
    assert RULE_FILES, "no rule files in grafana/prometheus/rules"
    checked = _promtool("check", "rules", *RULE_FILES)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@needs_promtool
def test_every_dashboard_expression_parses(tmp_path: Path) -> None:
    groups = [{"name": f"q{i}", "rules": [{"record": f"dashboard_check:q{i}", "expr": _expression(q)}]}
              for i, q in enumerate(PROMQL_QUERIES)]
    rules_file = tmp_path / "dashboard-expressions.yml"
    rules_file.write_text(yaml_text({"groups": groups}))
    checked = _promtool("check", "rules", rules_file)
    if checked.returncode != 0:
        failing = {int(i) for i in re.findall(r'group "q(\d+)"', checked.stdout + checked.stderr)}
        labels = [PROMQL_QUERIES[i].label for i in sorted(failing)]
        pytest.fail(f"promtool rejects {labels or 'the generated file'}:\n{checked.stdout}{checked.stderr}")
    assert f"SUCCESS: {len(groups)} rules found" in checked.stdout


@pytest.mark.parametrize("query", PROMQL_QUERIES, ids=lambda q: q.label)
def test_dashboard_expressions_name_only_exported_metrics(query: BoardQuery) -> None:
    unknown = metric_names(_expression(query)) - exported_metric_names() - PROMETHEUS_SERIES
    assert not unknown, f"{query.label} reads {unknown}, which sinks/metrics.py does not export"


def test_expressions_use_only_the_labels_their_metrics_define() -> None:
    catalogue = exported_metric_labels()
    assert exported_metric_names() == set(catalogue)
    expressions = [(q.label, _expression(q)) for q in PROMQL_QUERIES]
    expressions += [(rule.get("alert") or rule["record"], rule["expr"]) for rule in _rules()]
    wrong = {label: unknown_labels(expr, catalogue) for label, expr in expressions}
    assert not {label: names for label, names in wrong.items() if names}


def test_the_label_check_can_fail() -> None:
    catalogue = exported_metric_labels()
    assert catalogue["vitals_gateway_requests_total"] == {"route", "status"}
    assert catalogue["vitals_gateway_produce_seconds_bucket"] == {"le"}
    assert unknown_labels('sum by (cause) (rate(vitals_gateway_auth_failures_total{code="5"}[5m]))',
                          catalogue) == {"cause", "code"}
    assert unknown_labels('sum by (reason, job) (rate(vitals_gateway_auth_failures_total[5m]))', catalogue) == set()


def test_rule_expressions_name_only_exported_or_recorded_metrics() -> None:
    rules = _rules()
    recorded = {rule["record"] for rule in rules if "record" in rule}
    allowed = exported_metric_names() | PROMETHEUS_SERIES | recorded
    for rule in rules:
        unknown = metric_names(rule["expr"]) - allowed
        assert not unknown, f"rule {rule.get('record') or rule.get('alert')} reads unknown {unknown}"
        if "record" in rule:
            assert re.fullmatch(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", rule["record"]), \
                f"recording rule names follow level:metric:operations: {rule['record']}"


def test_the_catalogue_check_can_fail() -> None:
    names = exported_metric_names()
    assert {"vitals_messages_total", "vitals_sink_flush_seconds_bucket", "vitals_sink_up",
            "vitals_model_auroc"} <= names
    assert "vitals_messages" not in names and "vitals_sink_up_total" not in names
    assert metric_names("rate(vitals_mesages_total[5m])") - names == {"vitals_mesages_total"}


def test_alerting_rules_cover_the_ops_failures() -> None:
    alerts = {rule["alert"]: rule for rule in _rules() if "alert" in rule}
    assert {"VitalsPipelineStalled", "VitalsConsumerLagHigh", "VitalsDeadLetterRateHigh", "VitalsSinkDown",
            "VitalsWorkerDown"} <= set(alerts)
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name


@needs_promtool
def test_promtool_unit_tests_pass_and_cover_every_alert() -> None:
    test_files = sorted(PROMTOOL_TESTS_DIR.glob("*.yml"))
    assert test_files, "no promtool tests in grafana/prometheus/tests"
    done = _promtool("test", "rules", *test_files)
    assert done.returncode == 0, done.stdout + done.stderr
    tested = {case["alertname"] for path in test_files for test in load_yaml(path)["tests"]
              for case in test.get("alert_rule_test", []) if case.get("exp_alerts")}
    alerts = {rule["alert"] for rule in _rules() if "alert" in rule}
    assert alerts <= tested, f"alerts without a firing unit test: {sorted(alerts - tested)}"


def test_scrape_config_matches_the_boards_and_compose() -> None:
    config = load_yaml(PROMETHEUS_DIR / "prometheus.yml")
    (worker_job,) = [job for job in config["scrape_configs"] if job["job_name"] == "vitalrisk-worker"]
    (sd,) = worker_job["dns_sd_configs"]
    compose = load_yaml(COMPOSE_FILE)["services"]
    assert sd["names"] == ["worker"] and "worker" in compose
    assert str(sd["port"]) == str(compose["worker"]["environment"]["VITALS_METRICS_PORT"])
    prometheus = compose["prometheus"]
    assert "./grafana/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    assert config["rule_files"] == ["rules/*.yml"], "relative to prometheus.yml, so it works mounted and here"
    uses = {query.text for query in all_queries() if 'job="vitalrisk-worker"' in query.text}
    assert uses, "the Ops board selects the worker job by name"


def test_alerter_scrape_job_matches_compose() -> None:
    config = load_yaml(PROMETHEUS_DIR / "prometheus.yml")
    (alerter_job,) = [job for job in config["scrape_configs"] if job["job_name"] == "vitalrisk-alerter"]
    (sd,) = alerter_job["dns_sd_configs"]
    compose = load_yaml(COMPOSE_FILE)["services"]
    assert sd["names"] == ["alerter"] and compose["alerter"]["command"] == ["alerter"]
    environment = compose["alerter"]["environment"]
    assert str(sd["port"]) == str(environment["VITALS_METRICS_PORT"]) != "0"
    assert str(sd["port"]) != str(environment["VITALS_ALERTER_PORT"]), "metrics and the HTTP API need two ports"


def test_gateway_scrape_job_is_the_gateways_own_port() -> None:
    """The gateway serves /metrics beside its API, on VITALS_GATEWAY_PORT (no separate metrics port)."""
    config = load_yaml(PROMETHEUS_DIR / "prometheus.yml")
    (gateway_job,) = [job for job in config["scrape_configs"] if job["job_name"] == "vitalrisk-gateway"]
    (sd,) = gateway_job["dns_sd_configs"]
    assert sd["names"] == ["gateway"] and gateway_job["metrics_path"] == "/metrics"
    port = str(Settings.model_fields["gateway_port"].default)
    gateway = load_yaml(COMPOSE_FILE)["services"].get("gateway")
    if gateway is not None:  # docker-compose runs it as the service "gateway", with its port set or the default
        port = str(gateway.get("environment", {}).get("VITALS_GATEWAY_PORT", port))
    assert str(sd["port"]) == port
    uses = {query.text for query in all_queries() if 'job="vitalrisk-gateway"' in query.text}
    assert uses, "the Ops board selects the gateway job by name"


def _metrics_host(service: str) -> str:
    environment = load_yaml(COMPOSE_FILE)["services"][service]["environment"]
    return str(environment.get("VITALS_METRICS_HOST", Settings.model_fields["metrics_host"].default))


@pytest.mark.parametrize("service", ["worker", "alerter"])
def test_compose_services_serve_metrics_to_other_containers(service: str) -> None:
    host = _metrics_host(service)
    assert host not in ("127.0.0.1", "localhost", "::1"), f"the {service}'s /metrics binds {host} inside its container"
    assert host == "0.0.0.0"


def test_the_metrics_host_check_can_fail() -> None:
    # The default binds loopback only: a service that does not set VITALS_METRICS_HOST is unreachable.
    assert Settings.model_fields["metrics_host"].default in ("127.0.0.1", "localhost", "::1")
