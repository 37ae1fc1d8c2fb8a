"""The Ops board: is the pipeline keeping up, losing anything, or broken?

For the people who run vitalrisk. Every panel reads Prometheus; thresholds drawn on the panels
are the ones the Prometheus alerting rules fire on (:mod:`grafana.rules`).

Examples
--------
>>> board = ops_board()
>>> [row.title for row in board.rows]
['Throughput', 'Lag', 'Latency', 'Dead letters', 'Sink', 'Workers', 'Paging', 'Ingest gateway']
"""

from __future__ import annotations

from grafana import rules
from grafana.dashboard import (Dashboard, Panel, PromQL, Row, Step, bargauge, by_name, stat, state_timeline, table,
                               timeseries, value_text)

RATE = "$__rate_interval"
UP_DOWN = value_text({"0": ("down", "red"), "1": ("up", "green")})
#: The gateway's upload routes (``route`` is the route's pattern); /metrics, /healthz and
#: /openapi.json are left out, and so are the 404s of paths it does not serve (``unmatched``).
UPLOAD_ROUTES = ("/v1/uploads", "/fhir/Observation", "/fhir")
#: HTTP status classes of the gateway's answers, each a line on the requests panel.
STATUS_CLASSES = ("2", "4", "5")


def _quantile(quantile: float, metric: str) -> PromQL:
    """One quantile of a histogram over all workers, legend ``p50``/``p99``.

    >>> _quantile(0.99, "vitals_sink_flush_seconds").expr
    'histogram_quantile(0.99, sum by (le) (rate(vitals_sink_flush_seconds_bucket[$__rate_interval])))'
    """
    return PromQL(f"histogram_quantile({quantile}, sum by (le) (rate({metric}_bucket[{RATE}])))",
                  legend=f"p{quantile * 100:g}")


def _quantiles(metric: str) -> tuple[PromQL, PromQL]:
    """p50 and p99 of a histogram over all workers."""
    return _quantile(0.5, metric), _quantile(0.99, metric)


def _latency(title: str, metric: str, reference_s: float, what: str) -> Panel:
    return timeseries(
        title, f"{what} p50 and p99 across all workers. The dashed line is the reference p99 "
               f"({reference_s * 1000:g} ms): sustained p99 above it means the workers will fall behind.",
        *_quantiles(metric), unit="s", min=0, width=8,
        thresholds=(Step("green"), Step("red", reference_s)), thresholds_style="dashed")


def _gateway_row() -> Row:
    """The ingest gateway (``vitalrisk gateway``): what devices upload, what is refused and why, 503s."""
    job = f'job="{rules.GATEWAY_JOB}"'
    uploads = f'route=~"{"|".join(UPLOAD_ROUTES)}"'
    unavailable = rules.GATEWAY_UNAVAILABLE_MATCHER
    return Row("Ingest gateway", (
        stat("Gateway readings/s now", "Readings the gateway produced to the readings topic and the broker "
             "acknowledged, per second (answered 202).",
             PromQL(f"sum(rate(vitals_gateway_readings_total[{RATE}]))", legend="readings/s"),
             sparkline=True, unit="short", decimals=1, thresholds=(Step("blue"),)),
        stat("Uploads/s now", "Upload requests answered per second, whatever the answer (202 or a refusal).",
             PromQL(f"sum(rate(vitals_gateway_requests_total{{{uploads}}}[{RATE}]))", legend="uploads/s"),
             sparkline=True, unit="short", decimals=1, thresholds=(Step("blue"),)),
        stat("Gateway 503s in range", "Uploads answered 503 (retry later) over the selected range: the broker "
             "did not acknowledge, or the device table could not be read. Devices resend them; "
             f"VitalsGatewayUnavailable fires after {rules.GATEWAY_UNAVAILABLE_MINUTES} minutes of 503s.",
             PromQL(f"sum(increase(vitals_gateway_rejections_total{{{unavailable}}}[$__range]))", legend="503",
                    instant=True),
             unit="short", decimals=0, thresholds=(Step("green"), Step("red", 1))),
        stat("Gateways up", "Gateway processes Prometheus scrapes successfully (job vitalrisk-gateway).",
             PromQL(f"sum(up{{{job}}})", legend="up"), background=True, unit="short", decimals=0,
             thresholds=(Step("red"), Step("green", 1))),
        timeseries("Upload requests per second by route and status class", "Upload requests answered per "
                   "second, per route, as 2xx (accepted), 4xx (refused: the device must fix the upload, or "
                   "wait after 429) and 5xx (503: retry later; 500: a gateway bug).",
                   *(PromQL(f'sum by (route) (rate(vitals_gateway_requests_total{{{uploads}, status=~"{c}.."}}'
                            f"[{RATE}]))", legend=f"{{{{route}}}} {c}xx") for c in STATUS_CLASSES),
                   unit="reqps", min=0),
        timeseries("Readings and messages accepted per second", "Readings produced and acknowledged per "
                   "second by upload format (native, FHIR, Open mHealth); and device messages by outcome: "
                   "produced, or duplicate (a retried upload already acknowledged, accepted once and not "
                   "produced again).",
                   PromQL(f"sum by (format) (rate(vitals_gateway_readings_total[{RATE}]))",
                          legend="readings {{format}}"),
                   PromQL(f"sum by (outcome) (rate(vitals_gateway_messages_total[{RATE}]))",
                          legend="messages {{outcome}}"),
                   unit="short", min=0),
        timeseries("Upload refusals per second by reason", "Uploads refused, by reason: the body "
                   "(too_large, not_json, unsupported_media_type, ...), the content (malformed_fhir, "
                   "unknown_loinc, wrong_unit, impossible_value, ...), the device (unauthorized, "
                   "patient_mismatch, device_mismatch, rate_limited) and the service (broker_unavailable, "
                   "auth_unavailable). Nothing refused reaches the readings topic.",
                   PromQL(f"sum by (reason) (rate(vitals_gateway_rejections_total[{RATE}]))", legend="{{reason}}"),
                   bars=True, stacked=True, unit="short", min=0, width=8),
        timeseries("Authentication failures per second by cause", "Uploads refused 401, by cause: missing "
                   "(no bearer token), malformed (not a device token), unknown (no such token id), mismatch "
                   "(a known id with the wrong secret) and revoked. A burst of unknown or mismatch is someone "
                   "guessing tokens; revoked is a device still sending after `vitalrisk devices revoke`.",
                   PromQL(f"sum by (reason) (rate(vitals_gateway_auth_failures_total[{RATE}]))",
                          legend="{{reason}}"),
                   bars=True, stacked=True, unit="short", min=0, width=8),
        timeseries("Produce latency", "From an upload's records handed to the producer to the broker's "
                   "acknowledgement of them all, p50 and p99 over all gateways. The dashed line is the "
                   f"reference p99 ({rules.GATEWAY_PRODUCE_P99_REFERENCE_S * 1000:g} ms): above it devices "
                   "wait longer for their 202, and a broker slower still answers 503.",
                   *_quantiles("vitals_gateway_produce_seconds"), unit="s", min=0, width=8,
                   thresholds=(Step("green"), Step("red", rules.GATEWAY_PRODUCE_P99_REFERENCE_S)),
                   thresholds_style="dashed"),
        timeseries("Uploads answered 503 per second", "Uploads the gateway told to retry later: "
                   "broker_unavailable (Kafka did not acknowledge every record in time: nothing of the upload "
                   "is acknowledged, the device resends it and it is kept once) or auth_unavailable (the "
                   "device table could not be read). 503s for "
                   f"{rules.GATEWAY_UNAVAILABLE_MINUTES} minutes fire VitalsGatewayUnavailable.",
                   PromQL(f"sum by (reason) (rate(vitals_gateway_rejections_total{{{unavailable}}}[{RATE}]))",
                          legend="{{reason}}"),
                   bars=True, stacked=True, unit="short", min=0),
        timeseries("Upload keys remembered", "Acknowledged messages the gateway remembers, per gateway, so "
                   "that a retried upload is accepted once: about the message rate times "
                   "VITALS_GATEWAY_IDEMPOTENCY_S, at most VITALS_GATEWAY_IDEMPOTENCY_KEYS.",
                   PromQL("sum by (instance) (vitals_gateway_idempotency_keys)", legend="{{instance}}"),
                   unit="short", min=0),
    ))


def ops_board() -> Dashboard:
    """Throughput, lag, latency, dead letters, sink health, workers, paging and the ingest gateway."""
    job = f'job="{rules.WORKER_JOB}"'
    throughput = Row("Throughput", (
        stat("Readings/s now", "Valid readings accepted into windows per second, all workers.",
             PromQL(f"sum(rate(vitals_readings_total[{RATE}]))", legend="readings/s"),
             sparkline=True, unit="short", decimals=0, thresholds=(Step("blue"),)),
        stat("Device messages/s now", "Device messages consumed from Kafka per second, all workers.",
             PromQL(f"sum(rate(vitals_messages_total[{RATE}]))", legend="messages/s"),
             sparkline=True, unit="short", decimals=1, thresholds=(Step("blue"),)),
        stat("Scores/s now", "Risk scores written per second (one per patient window and model).",
             PromQL(f"sum(rate(vitals_scores_total[{RATE}]))", legend="scores/s"),
             sparkline=True, unit="short", decimals=1, thresholds=(Step("blue"),)),
        stat("Late readings in range", "Readings that arrived after their window had closed (they are "
             "dead-lettered as `late`, never merged). A rise means devices deliver with long delays.",
             PromQL("sum(increase(vitals_late_readings_total[$__range]))", legend="late", instant=True),
             unit="short", decimals=0, thresholds=(Step("green"), Step("orange", 1))),
        timeseries("Readings per second by worker", "Are readings flowing, and is the load spread over the "
                   "workers? Stacked, so the top line is the total.",
                   PromQL(f"sum by (instance) (rate(vitals_readings_total[{RATE}]))", legend="{{instance}}"),
                   stacked=True, unit="short", min=0),
        timeseries("Device messages per second by worker", "Kafka records consumed per second; a reading "
                   "count per message far from the usual means devices changed how they batch.",
                   PromQL(f"sum by (instance) (rate(vitals_messages_total[{RATE}]))", legend="{{instance}}"),
                   stacked=True, unit="short", min=0),
        timeseries("Windows, features and scores per second", "The output side: windows closed, hopping-window "
                   "feature rows and scores emitted per second. Flat while readings flow means windows are "
                   "not closing (watermark stuck).",
                   PromQL(f"sum(rate(vitals_windows_emitted_total[{RATE}]))", legend="windows"),
                   PromQL(f"sum(rate(vitals_feature_rows_total[{RATE}]))", legend="feature rows"),
                   PromQL(f"sum by (model) (rate(vitals_scores_total[{RATE}]))", legend="scores {{model}}"),
                   unit="short", min=0),
        timeseries("Rows written per second by table", "Rows committed to PostgreSQL/TimescaleDB per second "
                   "(idempotent writes: a replay counts again but adds no rows).",
                   PromQL(f"sum by (table) (rate(vitals_sink_rows_total[{RATE}]))", legend="{{table}}"),
                   unit="short", min=0),
        timeseries("Resent messages and silent patients", "Device messages dropped as resends of a (device, "
                   "seq) already seen, per second; and patients whose data stopped arriving, per minute. A "
                   "burst of silent patients at once points at the gateway or the network, not the patients.",
                   PromQL(f"sum(rate(vitals_duplicate_messages_total[{RATE}]))", legend="resent messages/s"),
                   PromQL(f"sum(rate(vitals_data_stopped_total[{RATE}])) * 60", legend="patients gone silent/min"),
                   unit="short", min=0, width=24, height=6),
    ))
    lag = Row("Lag", (
        timeseries("Consumer lag by partition", "Records behind the end of each input partition. Above the "
                   f"dashed line ({rules.CONSUMER_LAG_HIGH_RECORDS:,} records) for 5 minutes, "
                   "VitalsConsumerLagHigh fires: the workers are not keeping up.",
                   PromQL("max by (partition) (vitals_consumer_lag)", legend="partition {{partition}}"),
                   unit="short", min=0, width=8,
                   thresholds=(Step("green"), Step("red", rules.CONSUMER_LAG_HIGH_RECORDS)),
                   thresholds_style="dashed"),
        timeseries("Watermark lag by partition", "Wall-clock time minus each partition's watermark: how "
                   "late windows close and scores appear. Above the dashed line "
                   f"({rules.WATERMARK_LAG_HIGH_S} s) for 5 minutes, VitalsWatermarkLagHigh fires.",
                   PromQL("max by (partition) (vitals_watermark_lag_seconds)", legend="partition {{partition}}"),
                   unit="s", min=0, width=8,
                   thresholds=(Step("green"), Step("red", rules.WATERMARK_LAG_HIGH_S)), thresholds_style="dashed"),
        timeseries("Open windows by worker", "Windows held in memory per worker; it should follow the "
                   "number of active patients, not grow without bound.",
                   PromQL("sum by (instance) (vitals_open_windows)", legend="{{instance}}"),
                   unit="short", min=0, width=8),
    ))
    latency = Row("Latency", (
        _latency("Message processing latency", "vitals_processing_seconds", rules.PROCESSING_P99_REFERENCE_S,
                 "Time to validate and window one device message:"),
        _latency("Model scoring latency", "vitals_scoring_seconds", rules.SCORING_P99_REFERENCE_S,
                 "Time to score one window with the learned model:"),
        _latency("Sink flush latency", "vitals_sink_flush_seconds", rules.SINK_FLUSH_P99_REFERENCE_S,
                 "Time to commit one batch to the database:"),
    ))
    deadletters = Row("Dead letters", (
        timeseries("Dead letters per second by reason", "Records or readings refused to the dead-letter "
                   "topic, by reason (not_json, missing_field, impossible_value, late, the limits too_large, "
                   "too_deep, number_too_large, string_too_long, duplicate_key, invalid_id, too_many_readings, "
                   "future_timestamp; internal_error; sink_rejected rows; alerter: score records). Nothing "
                   "refused is lost: the topic keeps each record once with its source offset "
                   "(`vitalrisk deadletters`).",
                   PromQL(f"sum by (reason) (rate(vitals_deadletters_total[{RATE}]))", legend="{{reason}}"),
                   PromQL(f"sum by (reason) (rate(vitals_alerter_deadletters_total[{RATE}]))",
                          legend="alerter {{reason}}"),
                   bars=True, stacked=True, unit="short", min=0, width=10),
        timeseries("Dead-letter share of input", "Rejected items as a share of everything read. Above the "
                   f"dashed line ({rules.DEADLETTER_RATIO_HIGH:.0%}) for 10 minutes, "
                   "VitalsDeadLetterRateHigh fires: usually a device firmware or schema change.",
                   PromQL(f"sum(rate(vitals_deadletters_total[{RATE}])) / (sum(rate(vitals_readings_total[{RATE}]))"
                          f" + sum(rate(vitals_deadletters_total[{RATE}])))", legend="dead-lettered"),
                   unit="percentunit", min=0, width=7,
                   thresholds=(Step("green"), Step("red", rules.DEADLETTER_RATIO_HIGH)), thresholds_style="dashed"),
        bargauge("Dead letters in range by reason", "Which rejection dominates over the selected time range.",
                 PromQL("sum by (reason) (increase(vitals_deadletters_total[$__range]))", legend="{{reason}}",
                        instant=True),
                 PromQL("sum by (reason) (increase(vitals_alerter_deadletters_total[$__range]))",
                        legend="alerter {{reason}}", instant=True),
                 unit="short", decimals=0, width=7, thresholds=(Step("orange"),)),
    ))
    sink = Row("Sink", (
        state_timeline("Database accepting writes", "Per worker: does the database accept its writes? Red "
                       "for 2 minutes fires VitalsSinkDown. Offsets wait for the database, so an outage "
                       "delays scores but loses nothing.",
                       PromQL("min by (instance) (vitals_sink_up)", legend="{{instance}}"),
                       mappings=(UP_DOWN,), thresholds=(Step("red"), Step("green", 1)), width=8),
        timeseries("Sink errors per second", "Batches that failed and were retried. Any sustained rate "
                   "means the database is refusing or timing out writes.",
                   PromQL(f"sum by (instance) (rate(vitals_sink_errors_total[{RATE}]))", legend="{{instance}}"),
                   unit="short", min=0, width=8, thresholds=(Step("green"), Step("red", 0.01)),
                   thresholds_style="dashed"),
        timeseries("Rows per sink batch", "Batch size p50/p99 and mean. Batches near the configured "
                   "maximum (VITALS_SINK_BATCH_ROWS) mean the sink runs flat out.",
                   *_quantiles("vitals_sink_batch_rows"),
                   PromQL(f"sum(rate(vitals_sink_batch_rows_sum[{RATE}])) / "
                          f"sum(rate(vitals_sink_batch_rows_count[{RATE}]))", legend="mean"),
                   unit="short", min=0, width=8),
    ))
    workers = Row("Workers", (
        stat("Workers up", "Worker processes Prometheus scrapes successfully. Zero fires VitalsNoWorkerUp.",
             PromQL(f"sum(up{{{job}}})", legend="up"), background=True, unit="short", decimals=0,
             thresholds=(Step("red"), Step("green", 1)), width=4, height=6),
        state_timeline("Worker scrape status", "Each worker over time: green when scraped, red when down "
                       "(VitalsWorkerDown after 1 minute).",
                       PromQL(f"up{{{job}}}", legend="{{instance}}"), mappings=(UP_DOWN,),
                       thresholds=(Step("red"), Step("green", 1)), width=10, height=6),
        table("Ops alerts firing", "Prometheus alerting rules firing now (grafana/prometheus/rules); "
              "each is described in the grafana README.",
              PromQL('sum by (alertname, severity) (ALERTS{alertstate="firing"})', instant=True, table=True),
              width=10, height=6, sort_by="alertname", descending=False,
              overrides=(by_name("Time", custom__hidden=True), by_name("Value", displayName="series")),
              ),
    ))
    paging = Row("Paging", (
        timeseries("Alerts by state", "Alert episodes in each state, from the alerter: pending (over the "
                   "threshold, not yet paged), firing, and by kind.",
                   PromQL("sum by (state, kind) (vitals_alerts)", legend="{{state}} {{kind}}"),
                   stacked=True, unit="short", min=0, decimals=0),
        timeseries("Pages per minute by severity", "Notifications handed to webhook delivery per minute.",
                   PromQL(f"sum by (severity) (rate(vitals_pages_total[{RATE}])) * 60", legend="{{severity}}"),
                   bars=True, stacked=True, unit="short", min=0),
        timeseries("Webhook deliveries per second by outcome", "Delivery attempts per receiver and outcome "
                   "(delivered, retry, failed). Retries are normal in bursts; a steady failure rate is not.",
                   PromQL(f"sum by (receiver, outcome) (rate(vitals_webhook_deliveries_total[{RATE}]))",
                          legend="{{receiver}} {{outcome}}"),
                   PromQL(f"sum by (receiver) (rate(vitals_webhook_retries_total[{RATE}]))",
                          legend="{{receiver}} retried"),
                   unit="short", min=0),
        timeseries("Score to page latency", "From the score that crossed a threshold to the receiver's "
                   "acknowledgement of the webhook, p50 and p99 over all receivers.",
                   *_quantiles("vitals_webhook_delivery_seconds"), unit="s", min=0),
        stat("Pages given up on in range", "Webhooks dead-lettered after the retry budget: each is a page "
             "that did not reach its receiver and must be resent by hand.",
             PromQL("sum by (receiver) (increase(vitals_webhook_failures_total[$__range]))", legend="{{receiver}}",
                    instant=True),
             background=True, text_mode="value_and_name", decimals=0, width=24, height=4,
             thresholds=(Step("green"), Step("red", 1))),
    ))
    return Dashboard(uid="vitalrisk-ops", title="vitalrisk · Ops",
                     description="Pipeline health: throughput, lag, latency, dead letters, sink, workers, paging and "
                                 "the ingest gateway.",
                     tags=("ops",), rows=(throughput, lag, latency, deadletters, sink, workers, paging,
                                          _gateway_row()),
                     time_from="now-3h", refresh="30s")
