"""Every Prometheus metric vitalrisk exports, in one place, on an injected registry.

Labels are low-cardinality codes (reason, table); never a patient or device id.
Dashboards and alert rules in ``grafana/`` use only the names defined here.

Examples
--------
>>> from prometheus_client import CollectorRegistry
>>> registry = CollectorRegistry()
>>> metrics = PipelineMetrics(registry)
>>> metrics.readings.inc(3)
>>> registry.get_sample_value("vitals_readings_total")
3.0
"""

from __future__ import annotations

import urllib.request

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.parser import text_string_to_metric_families

#: Sink flush latency buckets, seconds: a COPY of thousands of rows takes tens of milliseconds.
FLUSH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Per-message processing buckets, seconds.
PROCESSING_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1)


class PipelineMetrics:
    """The worker's metrics: what came in, what was rejected, what was emitted and written."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.messages = Counter("vitals_messages", "Device messages consumed", registry=registry)
        self.readings = Counter("vitals_readings", "Valid readings accepted into windows", registry=registry)
        self.deadletters = Counter("vitals_deadletters", "Messages or readings sent to the dead-letter topic",
                                   ["reason"], registry=registry)
        self.late_readings = Counter("vitals_late_readings",
                                     "Readings that arrived after their window closed", registry=registry)
        self.windows = Counter("vitals_windows_emitted", "Patient windows closed and emitted", registry=registry)
        self.scores = Counter("vitals_scores", "Risk scores emitted", ["model"], registry=registry)
        self.processing_seconds = Histogram("vitals_processing_seconds",
                                            "Time to validate and window one device message",
                                            buckets=PROCESSING_BUCKETS, registry=registry)
        self.open_windows = Gauge("vitals_open_windows", "Windows currently open in this worker",
                                  registry=registry)
        self.sink_rows = Counter("vitals_sink_rows", "Rows committed to the database", ["table"],
                                 registry=registry)
        self.sink_flush_seconds = Histogram("vitals_sink_flush_seconds", "Time to commit one sink batch",
                                            buckets=FLUSH_BUCKETS, registry=registry)
        self.sink_errors = Counter("vitals_sink_errors", "Sink batches that failed and were retried",
                                   registry=registry)


def scrape(url: str, name: str, labels: dict[str, str] | None = None, *, timeout_s: float = 5.0) -> float:
    """One sample's value from a Prometheus text endpoint (summed over matching label sets).

    Used by the demo and the tests to watch a worker from outside; 0 when the sample is absent.
    """
    with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - our own endpoint
        text = response.read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                total += float(sample.value)
    return total
