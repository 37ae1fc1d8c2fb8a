"""Prometheus for vitalrisk: scrape configuration, recording rules and ops alerting rules.

The thresholds below are the single definition of "too much": the alerting rules fire on them
and the Ops board draws them on its panels, so a line on a graph and a page never disagree.
These rules are Prometheus' own view of the pipeline's health; paging people through Grafana
alerting (contact points, policies) is provisioned separately in ``grafana/provisioning/alerting``.

Every expression here uses only metrics defined in :mod:`sinks.metrics`, ``up`` and the
recording rules defined in this module; ``tests/grafana`` checks that with promtool and
against the metric catalogue, and unit-tests each alert with ``promtool test rules``.

Examples
--------
>>> [rule.alert for rule in alerting_rules()][:2]
['VitalsWorkerDown', 'VitalsNoWorkerUp']
>>> prometheus_config()["scrape_configs"][0]["job_name"]
'vitalrisk-worker'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from kernel.settings import Settings

#: Scrape job of the Faust workers; dashboards select ``up{job="vitalrisk-worker"}``.
WORKER_JOB = "vitalrisk-worker"
#: Compose service name and metrics port of the workers (``VITALS_METRICS_PORT``).
WORKER_SERVICE = "worker"
WORKER_METRICS_PORT = 9108
#: Scrape job of the alerter (``vitalrisk alerter``): the Ops board's *Paging* row reads its metrics.
ALERTER_JOB = "vitalrisk-alerter"
#: Compose service name and metrics port of the alerter (its ``VITALS_METRICS_PORT``).
ALERTER_SERVICE = "alerter"
ALERTER_METRICS_PORT = 9109
TRAINER_JOB = "vitalrisk-trainer"
TRAINER_SERVICE = "trainer"
TRAINER_METRICS_PORT = 9110
#: Scrape job of the ingest gateway (``vitalrisk gateway``): the Ops board's *Ingest gateway* row.
GATEWAY_JOB = "vitalrisk-gateway"
#: Compose service name of the gateway; it serves ``/metrics`` beside its API, on ``VITALS_GATEWAY_PORT``.
GATEWAY_SERVICE = "gateway"
#: The Compose stack's CA, in the certs volume every TLS client mounts at /certs (infra/compose.py).
COMPOSE_CA_FILE = "/certs/ca.pem"
GATEWAY_PORT: int = Settings.model_fields["gateway_port"].default
SCRAPE_INTERVAL = "15s"
#: Rule files, relative to prometheus.yml (docker-compose mounts grafana/prometheus at /etc/prometheus).
RULE_FILES = "rules/*.yml"
#: Where the Ops board lives, for alert annotations.
OPS_BOARD_URL = "/d/vitalrisk-ops"

# --- thresholds shared by the alerting rules and the Ops board --------------------------------

#: Records behind the end of one input partition before lag is "high"; the same level as the
#: Grafana paging rule "Consumer lag high" (grafana/provisioning/alerting). It suits replay and
#: large wards; on a small ward late scores show first in the watermark lag, alerted below.
CONSUMER_LAG_HIGH_RECORDS = 10_000
#: Wall-clock minus watermark before scores are "late", seconds (window 60 s + grace 30 s + slack).
WATERMARK_LAG_HIGH_S = 300
#: Share of readings and messages dead-lettered before the input is "broken".
DEADLETTER_RATIO_HIGH = 0.05
#: Reference p99 latencies, seconds, drawn on the latency panels (not paged on).
PROCESSING_P99_REFERENCE_S = 0.01
SCORING_P99_REFERENCE_S = 0.01
SINK_FLUSH_P99_REFERENCE_S = 1.0
#: Reference p99 of the gateway's produce latency (records handed to the producer to the broker's
#: acks), seconds: the gateway's target is a p99 of 100 ms from upload to 202, most of it producing.
GATEWAY_PRODUCE_P99_REFERENCE_S = 0.1
#: The gateway's refusal reasons answered 503 (retry later): Kafka did not acknowledge the records,
#: or the device table could not be read to check the token.
GATEWAY_UNAVAILABLE_REASONS = ("broker_unavailable", "auth_unavailable")
#: The label matcher selecting those refusals of ``vitals_gateway_rejections_total``.
GATEWAY_UNAVAILABLE_MATCHER = f'reason=~"{"|".join(GATEWAY_UNAVAILABLE_REASONS)}"'
#: Minutes VitalsGatewayUnavailable waits from the first 503 while 503s go on (some in every
#: minute, so an outage of two minutes or more): a broker failover or restart takes seconds.
GATEWAY_UNAVAILABLE_MINUTES = 3

Severity = Literal["critical", "warning"]


@dataclass(frozen=True, slots=True)
class RecordingRule:
    """A precomputed series, named ``level:metric:operations`` after Prometheus' convention."""

    record: str
    expr: str

    def document(self) -> dict[str, Any]:
        return {"record": self.record, "expr": self.expr}


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertingRule:
    """An ops alert: fires when ``expr`` has had a value for ``for_``."""

    alert: str
    expr: str
    for_: str
    severity: Severity
    summary: str
    description: str

    def document(self) -> dict[str, Any]:
        return {"alert": self.alert, "expr": self.expr, "for": self.for_,
                "labels": {"severity": self.severity, "system": "vitalrisk"},
                "annotations": {"summary": self.summary, "description": self.description,
                                "dashboard": OPS_BOARD_URL}}


def _p(quantile: float, metric: str, window: str) -> str:
    """A per-job quantile of a histogram over ``window``.

    >>> _p(0.99, "vitals_scoring_seconds", "5m")
    'histogram_quantile(0.99, sum by (job, le) (rate(vitals_scoring_seconds_bucket[5m])))'
    """
    return f"histogram_quantile({quantile}, sum by (job, le) (rate({metric}_bucket[{window}])))"


def recording_rules() -> list[RecordingRule]:
    """Rates, ratios and p50/p99 latencies per job, evaluated every scrape interval."""
    rules = [
        RecordingRule("job:vitals_readings:rate1m", "sum by (job) (rate(vitals_readings_total[1m]))"),
        RecordingRule("job:vitals_messages:rate1m", "sum by (job) (rate(vitals_messages_total[1m]))"),
        RecordingRule("job:vitals_windows_emitted:rate5m", "sum by (job) (rate(vitals_windows_emitted_total[5m]))"),
        RecordingRule("job:vitals_sink_rows:rate5m", "sum by (job) (rate(vitals_sink_rows_total[5m]))"),
        RecordingRule("job_reason:vitals_deadletters:rate5m",
                      "sum by (job, reason) (rate(vitals_deadletters_total[5m]))"),
        RecordingRule("job:vitals_deadletter_ratio:rate5m",
                      "sum by (job) (rate(vitals_deadletters_total[5m]))\n"
                      "/\n"
                      "(\n"
                      "  sum by (job) (rate(vitals_readings_total[5m]))\n"
                      "  + sum by (job) (rate(vitals_deadletters_total[5m]))\n"
                      ")"),
        RecordingRule("job:vitals_consumer_lag:max", "max by (job) (vitals_consumer_lag)"),
        RecordingRule("job:vitals_watermark_lag_seconds:max", "max by (job) (vitals_watermark_lag_seconds)"),
    ]
    for metric in ("vitals_processing_seconds", "vitals_scoring_seconds", "vitals_sink_flush_seconds",
                   "vitals_gateway_produce_seconds"):
        for quantile, name in ((0.5, "p50"), (0.99, "p99")):
            rules.append(RecordingRule(f"job:{metric}:{name}_5m", _p(quantile, metric, "5m")))
    return rules


def alerting_rules() -> list[AlertingRule]:
    """What Prometheus reports as broken in the pipeline; grafana/README.md explains each."""
    job = f'job="{WORKER_JOB}"'
    return [
        AlertingRule(
            alert="VitalsWorkerDown", expr=f"up{{{job}}} == 0", for_="1m", severity="critical",
            summary="vitalrisk worker {{ $labels.instance }} is down",
            description="Prometheus has not scraped the worker for a minute. Its partitions move to the "
                        "other workers; if it was the only one, no vitals are scored."),
        AlertingRule(
            alert="VitalsNoWorkerUp", expr=f"absent(up{{{job}}} == 1)", for_="2m", severity="critical",
            summary="No vitalrisk worker is up",
            description="No worker target is up, or none is discovered: no vitals are windowed or scored."),
        AlertingRule(
            alert="VitalsPipelineStalled", expr="sum by (job) (rate(vitals_messages_total[5m])) == 0",
            for_="2m", severity="critical",
            summary="No device messages consumed for 7 minutes",
            description="Workers are up but consume nothing. High consumer lag: the workers are stuck; "
                        "zero lag: devices or the gateway stopped publishing."),
        AlertingRule(
            alert="VitalsNothingWritten",
            expr="sum by (job) (rate(vitals_messages_total[5m])) > 0\n"
                 "unless on (job)\n"
                 "sum by (job) (rate(vitals_sink_rows_total[10m])) > 0",
            for_="5m", severity="critical",
            summary="Messages are consumed but no rows reach the database",
            description="No feature or score rows committed for 10 minutes while messages are consumed: "
                        "windows do not close, everything is dead-lettered, or the sink fails."),
        AlertingRule(
            alert="VitalsConsumerLagHigh",
            expr=f"max by (job, partition) (vitals_consumer_lag) > {CONSUMER_LAG_HIGH_RECORDS}",
            for_="5m", severity="warning",
            summary="Partition {{ $labels.partition }} is {{ $value | humanize }} records behind",
            description="The workers do not keep up with the input; scores arrive late. Add workers (up "
                        "to the partition count) or look for slow sink flushes."),
        AlertingRule(
            alert="VitalsWatermarkLagHigh",
            expr=f"max by (job, partition) (vitals_watermark_lag_seconds) > {WATERMARK_LAG_HIGH_S}",
            for_="5m", severity="warning",
            summary="Partition {{ $labels.partition }} watermark is {{ $value | humanizeDuration }} behind",
            description="Windows on this partition close late, so scores reach the care board late: the "
                        "consumer lags or devices deliver old readings."),
        AlertingRule(
            alert="VitalsDeadLetterRateHigh",
            expr=f"job:vitals_deadletter_ratio:rate5m > {DEADLETTER_RATIO_HIGH}",
            for_="10m", severity="warning",
            summary="{{ $value | humanizePercentage }} of input is dead-lettered",
            description="Over 5% of readings and messages are rejected. Dead letters by reason on the Ops "
                        "board show which; a device firmware or schema change is the usual cause."),
        AlertingRule(
            alert="VitalsScoresDeadLettered",
            expr="sum by (job, reason) (increase(vitals_alerter_deadletters_total[10m])) > 0",
            for_="0m", severity="warning",
            summary="The alerter refused {{ $value | humanize }} score records ({{ $labels.reason }}) in 10 minutes",
            description="Scores come only from vitalrisk workers, so a refused one means a worker bug or a "
                        "writer that should not reach the scores topic. Pages for its patient may be missing: "
                        "`vitalrisk deadletters list --json` shows the records."),
        AlertingRule(
            alert="VitalsSinkDown", expr="min by (job, instance) (vitals_sink_up) == 0", for_="2m",
            severity="critical",
            summary="Worker {{ $labels.instance }} cannot write to the database",
            description="The sink reports the database as not accepting writes. Offsets wait and writes are "
                        "retried, so nothing is lost, but no new scores appear until it recovers."),
        AlertingRule(
            alert="VitalsGatewayUnavailable",
            expr=f"sum by (job, reason) (rate(vitals_gateway_rejections_total{{{GATEWAY_UNAVAILABLE_MATCHER}}}[1m]))"
                 " > 0",
            for_=f"{GATEWAY_UNAVAILABLE_MINUTES}m", severity="critical",
            summary=f"The ingest gateway has answered uploads 503 ({{{{ $labels.reason }}}}) for "
                    f"{GATEWAY_UNAVAILABLE_MINUTES} minutes",
            description="Devices are told to retry later, so their readings wait on the devices. "
                        "broker_unavailable: Kafka does not acknowledge the gateway's records (the broker, its "
                        "disk, the readings topic); auth_unavailable: the device table in PostgreSQL cannot be "
                        "read. Nothing answered 503 was acknowledged: devices resend it and it is kept once."),
    ]


def rules_document() -> dict[str, Any]:
    """``grafana/prometheus/rules/vitalrisk.yml``; groups run at the global evaluation interval."""
    return {"groups": [
        {"name": "vitalrisk.recording", "rules": [rule.document() for rule in recording_rules()]},
        {"name": "vitalrisk.alerts", "rules": [rule.document() for rule in alerting_rules()]},
    ]}


def prometheus_config() -> dict[str, Any]:
    """``grafana/prometheus/prometheus.yml``.

    Workers, alerters, the trainer and the gateway are found by DNS: a compose service name resolves to
    every replica, so each process is its own target and ``up{job="vitalrisk-worker"}`` counts the workers.

    >>> [job["job_name"] for job in prometheus_config()["scrape_configs"]]
    ['vitalrisk-worker', 'vitalrisk-alerter', 'vitalrisk-trainer', 'vitalrisk-gateway', 'prometheus']
    """
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "rule_files": [RULE_FILES],
        "scrape_configs": [
            {"job_name": WORKER_JOB, "metrics_path": "/metrics",
             "dns_sd_configs": [{"names": [WORKER_SERVICE], "type": "A", "port": WORKER_METRICS_PORT,
                                 "refresh_interval": "30s"}]},
            {"job_name": ALERTER_JOB, "metrics_path": "/metrics",
             "dns_sd_configs": [{"names": [ALERTER_SERVICE], "type": "A", "port": ALERTER_METRICS_PORT,
                                 "refresh_interval": "30s"}]},
            {"job_name": TRAINER_JOB, "metrics_path": "/metrics",
             "dns_sd_configs": [{"names": [TRAINER_SERVICE], "type": "A", "port": TRAINER_METRICS_PORT,
                                 "refresh_interval": "30s"}]},
            # The gateway serves /metrics beside its API, over HTTPS with the stack's certificate.
            {"job_name": GATEWAY_JOB, "metrics_path": "/metrics", "scheme": "https",
             "tls_config": {"ca_file": COMPOSE_CA_FILE},
             "dns_sd_configs": [{"names": [GATEWAY_SERVICE], "type": "A", "port": GATEWAY_PORT,
                                 "refresh_interval": "30s"}]},
            {"job_name": "prometheus", "static_configs": [{"targets": ["localhost:9090"]}]},
        ],
    }
