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

import logging
import time
import urllib.request
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from kernel.errors import listen_failed
from kernel.settings import Settings

logger = logging.getLogger(__name__)

#: Sink flush latency buckets, seconds: a COPY of thousands of rows takes tens of milliseconds.
FLUSH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Rows per sink batch.
BATCH_BUCKETS = (1, 10, 100, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000)
#: End-to-end latencies, seconds (scoring, webhook delivery).
LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Per-message processing buckets, seconds.
PROCESSING_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1)


class KafkaMetrics:
    """Whether a process reaches Kafka: ``vitals_kafka_up`` (1/0) and ``vitals_kafka_outages_total``.

    ``client`` names the process's Kafka client (``worker``, ``trainer``, ``alerter``,
    ``simulator``, ...), never a host or a credential. Kept current by :class:`KafkaHealth`.
    One per process, beside its other metrics (the worker's, the alerter's, the trainer's).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.up = Gauge("vitals_kafka_up", "1 while this client reaches the Kafka broker, 0 during an outage",
                        ["client"], registry=registry)
        self.outages = Counter("vitals_kafka_outages", "Kafka outages this client rode out or is riding out",
                               ["client"], registry=registry)


class KafkaHealth:
    """One client's view of the broker: one log line when an outage starts, one when it ends.

    A retry loop calls :meth:`failed` after every failed Kafka call and :meth:`ok` after every
    call that worked; only the transitions log and count, so an outage of a thousand retries is
    two log lines, one more ``vitals_kafka_outages_total`` and ``vitals_kafka_up`` 0 meanwhile.

    Parameters
    ----------
    client
        The ``client`` label (low-cardinality: a role, not a host).
    metrics
        Where to record it, if anywhere.

    Examples
    --------
    >>> registry = CollectorRegistry()
    >>> health = KafkaHealth("trainer", KafkaMetrics(registry), clock=iter([10.0, 10.5, 31.0]).__next__)
    >>> health.ok()
    >>> health.failed("KafkaTimeoutError"), health.failed("KafkaTimeoutError"), health.down
    (True, False, True)
    >>> health.ok(); health.down
    False
    >>> registry.get_sample_value("vitals_kafka_outages_total", {"client": "trainer"})
    1.0
    >>> registry.get_sample_value("vitals_kafka_up", {"client": "trainer"})
    1.0
    """

    def __init__(self, client: str, metrics: KafkaMetrics | None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.metrics = metrics
        self._clock = clock
        self._down_since: float | None = None
        self._failures = 0
        if metrics is not None:
            metrics.up.labels(client).set(1)
            metrics.outages.labels(client)  # exported as 0 before the first outage

    @property
    def down(self) -> bool:
        """Whether the last Kafka call failed."""
        return self._down_since is not None

    def failed(self, reason: str) -> bool:
        """Count a failed call (``reason``: an exception's name or first line, no secret); ``True``
        if it starts an outage."""
        self._failures += 1
        if self._down_since is not None:
            return False
        self._down_since = self._clock()
        logger.warning("%s: Kafka unavailable (%s); retrying until it is back", self.client, reason)
        if self.metrics is not None:
            self.metrics.up.labels(self.client).set(0)
            self.metrics.outages.labels(self.client).inc()
        return True

    def ok(self) -> None:
        """Record a call that worked; ends the outage (and logs its length) if one was on."""
        if self._down_since is None:
            return
        logger.warning("%s: Kafka back after %.1f s (%d failed attempts)", self.client,
                       self._clock() - self._down_since, self._failures)
        self._down_since = None
        self._failures = 0
        if self.metrics is not None:
            self.metrics.up.labels(self.client).set(1)


class PipelineMetrics:
    """The worker's metrics: what came in, what was rejected, what was emitted and written."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.messages = Counter("vitals_messages", "Device messages consumed", registry=registry)
        self.readings = Counter("vitals_readings", "Valid readings accepted into windows", registry=registry)
        self.deadletters = Counter("vitals_deadletters",
                                   "Refusals by reason: whole records, or readings of a record (one dead-letter "
                                   "record per refused record)", ["reason"], registry=registry)
        self.devices_forgotten = Counter("vitals_devices_forgotten",
                                         "Devices whose sequence numbers a partition dropped to stay within "
                                         "VITALS_LIMIT_DEVICES_PER_PARTITION (least recently seen first)",
                                         registry=registry)
        self.duplicates = Counter("vitals_duplicate_messages",
                                  "Device messages dropped as resends of a (device, seq) already seen",
                                  registry=registry)
        self.skipped_records = Counter("vitals_consumer_skipped_records",
                                       "Records the Faust consumer skipped, read straight from the broker instead",
                                       ["partition"], registry=registry)
        self.stalls = Counter("vitals_consumer_stalls",
                              "Partitions restarted after delivering no record while records waited: by "
                              "remedy (resume: fetching resumed; seek: the fetcher sent back to records Faust "
                              "dropped)", ["remedy"], registry=registry)
        self.feature_rows = Counter("vitals_feature_rows", "Hopping-window feature rows emitted",
                                    registry=registry)
        self.data_stopped = Counter("vitals_data_stopped", "Patients whose data stopped arriving",
                                    registry=registry)
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
        self.sink_batch_rows = Histogram("vitals_sink_batch_rows", "Rows per committed sink batch",
                                         buckets=BATCH_BUCKETS, registry=registry)
        self.sink_up = Gauge("vitals_sink_up", "1 while the database accepts writes, 0 while it does not",
                             registry=registry)
        self.consumer_lag = Gauge("vitals_consumer_lag", "Records behind the end of each input partition",
                                  ["partition"], registry=registry)
        self.watermark_lag_seconds = Gauge("vitals_watermark_lag_seconds",
                                           "Wall-clock time minus the partition watermark's event time",
                                           ["partition"], registry=registry)



class ModelMetrics:
    """Online models: version in use, live prequential quality, drift and fairness.

    ``condition`` is one of the model's targets (``any``, ``hf_decompensation``, ...);
    ``attribute``/``group`` a fairness subgroup (``sex``/``female``, ``age_band``/``75+``,
    ``skin_tone``/``V-VI``) — all low-cardinality.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.scoring_seconds = Histogram("vitals_scoring_seconds", "Time to score one window with the model",
                                         buckets=PROCESSING_BUCKETS, registry=registry)
        self.model_version = Gauge("vitals_model_version", "Snapshot version each scorer is using",
                                   ["model"], registry=registry)
        self.trainer_examples = Counter("vitals_trainer_examples", "Labelled windows the trainer learned from",
                                        ["model"], registry=registry)
        self.pending_labels = Gauge("vitals_pending_label_windows", "Scored windows waiting for their label",
                                    registry=registry)
        self.auroc = Gauge("vitals_model_auroc", "Rolling prequential AUROC", ["model", "condition"],
                           registry=registry)
        self.auprc = Gauge("vitals_model_auprc", "Rolling prequential AUPRC", ["model", "condition"],
                           registry=registry)
        self.brier = Gauge("vitals_model_brier", "Rolling prequential Brier score", ["model", "condition"],
                           registry=registry)
        self.ece = Gauge("vitals_model_ece", "Rolling expected calibration error", ["model", "condition"],
                         registry=registry)
        self.subgroup_auroc = Gauge("vitals_subgroup_auroc", "Rolling AUROC per patient subgroup",
                                    ["model", "attribute", "group"], registry=registry)
        self.fairness_gap = Gauge("vitals_fairness_gap", "Largest gap of a metric between subgroups",
                                  ["model", "metric", "attribute"], registry=registry)
        self.drift_events = Counter("vitals_drift_events", "Drift detected on the model's loss (ADWIN)",
                                    ["model"], registry=registry)
        self.ops_events = Counter("vitals_ops_events", "Operational events raised (drift, fairness, data stopped)",
                                  ["kind"], registry=registry)


class AlertMetrics:
    """Alert engine and webhook delivery: states, pages, attempts, retries, failures, latency."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.alerts = Gauge("vitals_alerts", "Alerts currently in each state", ["kind", "state"],
                            registry=registry)
        self.transitions = Counter("vitals_alert_transitions", "Alert state changes", ["kind", "to_state"],
                                   registry=registry)
        self.deadletters = Counter("vitals_alerter_deadletters",
                                   "Score records the alerter refused, by reason, sent to the dead-letter topic",
                                   ["reason"], registry=registry)
        self.skipped_records = Counter("vitals_alerter_skipped_records",
                                       "Scores the Faust consumer skipped, read straight from the broker instead",
                                       ["partition"], registry=registry)
        self.pages = Counter("vitals_pages", "Notifications handed to delivery", ["receiver", "severity"],
                             registry=registry)
        self.deliveries = Counter("vitals_webhook_deliveries", "Webhook delivery attempts by outcome",
                                  ["receiver", "outcome"], registry=registry)
        self.retries = Counter("vitals_webhook_retries", "Webhook deliveries retried", ["receiver"],
                               registry=registry)
        self.failures = Counter("vitals_webhook_failures", "Webhooks given up on and dead-lettered",
                                ["receiver"], registry=registry)
        self.delivery_seconds = Histogram("vitals_webhook_delivery_seconds",
                                          "From threshold-crossing score to webhook acknowledged",
                                          ["receiver"], buckets=LATENCY_BUCKETS, registry=registry)


#: Upload -> broker acknowledgement, seconds: one produce round trip with acks=all is milliseconds.
PRODUCE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class GatewayMetrics:
    """The ingest gateway: uploads by route and status, what was accepted, refused and produced.

    ``route`` is the route's pattern (``/v1/uploads``), never the path a client sent; ``reason``
    a refusal code (``too_large``, ``rate_limited``, ``wrong_unit``, ...). No token, device or
    patient id is ever a label.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter("vitals_gateway_requests", "HTTP requests answered, by route and status",
                                ["route", "status"], registry=registry)
        self.messages = Counter("vitals_gateway_messages",
                                "Device messages of accepted uploads: produced, or duplicate (already acknowledged)",
                                ["format", "outcome"], registry=registry)
        self.readings = Counter("vitals_gateway_readings", "Readings produced to the readings topic and acknowledged",
                                ["format"], registry=registry)
        self.rejections = Counter("vitals_gateway_rejections", "Uploads refused, by reason", ["reason"],
                                  registry=registry)
        self.auth_failures = Counter("vitals_gateway_auth_failures",
                                     "Uploads refused 401: missing, malformed, unknown, revoked or wrong token",
                                     ["reason"], registry=registry)
        self.produce_seconds = Histogram("vitals_gateway_produce_seconds",
                                         "From an upload's records handed to the producer to the broker's acks",
                                         buckets=PRODUCE_BUCKETS, registry=registry)
        self.idempotency_keys = Gauge("vitals_gateway_idempotency_keys",
                                      "Acknowledged messages remembered to accept their retries once",
                                      registry=registry)


def serve_metrics(settings: Settings, registry: CollectorRegistry) -> bool:
    """Serve ``registry`` on ``/metrics`` at ``metrics_host:metrics_port`` (a daemon thread); ``False`` if port 0.

    Raises
    ------
    PortInUse
        If another process listens on the port.
    ConfigurationError
        If the address cannot be bound for another reason (``VITALS_METRICS_HOST``).
    """
    if not settings.metrics_port:
        return False
    try:
        start_http_server(settings.metrics_port, addr=settings.metrics_host, registry=registry)
    except OSError as exc:
        raise listen_failed(exc, what="the metrics endpoint", host=settings.metrics_host, port=settings.metrics_port,
                            setting="VITALS_METRICS_PORT") from None
    return True


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
