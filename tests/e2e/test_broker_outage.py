"""The single broker stopped for 20 s mid-stream: worker, trainer and alerter ride it out.

A seeded stream (tests/e2e/streams.py) is published in two phases around the outage, with the
worker, the trainer and the alerter (paging a pager) running throughout. The broker is stopped
while the worker has windows open and the alerter an episode going, kept down 20 s, and started
again; nobody is restarted. Afterwards the database holds exactly what an uninterrupted run of
the same stream holds — every feature row once with the same values (:meth:`Stream.expected_features`,
which a reference worker run reproduces: see test_walking_skeleton), every NEWS2 score once — and
every page was sent once. Each process reported the outage on ``vitals_kafka_up`` and
``vitals_kafka_outages_total`` and is still alive.
"""

from __future__ import annotations

import time

import pytest
from pydantic import SecretStr

from infra.kafka import LocalKafka
from sinks.metrics import scrape
from kernel.settings import Settings
from tests.alerts.conftest import AlertingStack, read_jsonl, wait_for
from tests.alerts.conftest import alerting as alerting_fixture
from tests.alerts.test_e2e_paging import query
from tests.conftest import Services
from tests.e2e.streams import Stream, assert_features_equal, feature_rows, score_keys

pytestmark = pytest.mark.integration

alerting = alerting_fixture  # the alerting tests' fixture: an alerter and a pager on this test's topics

OUTAGE_S = 20.0
STREAM = Stream(patients=5, minutes=10)
BEFORE, AFTER = range(0, 5), range(5, STREAM.minutes)


def _news2_keys(settings: Settings) -> list[tuple[str, str, int]]:
    return [k for k in score_keys(settings) if k[1] == "news2"]


def test_a_20s_broker_stop_mid_stream_loses_and_doubles_nothing(services: Services, alerting: AlertingStack,
                                                                 start_worker, start_trainer) -> None:
    settings = alerting.settings = alerting.settings.model_copy(update={"snapshot_key": SecretStr("k" * 40)})
    pager = alerting.start_pager()
    STREAM.publish(settings, BEFORE)
    alerter = alerting.start_alerter()
    worker = start_worker(settings)
    trainer = start_trainer(settings)
    worker.wait_metric("vitals_messages_total", lambda v: v >= STREAM.patients * len(BEFORE), timeout_s=60)
    wait_for("the worker's first scores", lambda: len(_news2_keys(settings)) >= STREAM.patients * 3, timeout_s=30)
    trainer.wait_metric("vitals_kafka_up", lambda v: v == 1, labels={"client": "trainer"}, timeout_s=30)

    kafka = LocalKafka(services.base)
    began = time.monotonic()
    kafka.stop()
    stopped = time.monotonic()
    try:
        worker.wait_metric("vitals_kafka_up", lambda v: v == 0, labels={"client": "worker"}, timeout_s=OUTAGE_S)
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped)))
        assert worker.proc.poll() is None, worker.log.read_text()[-3000:]
        assert trainer.proc.poll() is None, trainer.log.read_text()[-3000:]
        assert alerter.alive(), alerter.tail()
    finally:
        kafka.start()
    print(f"broker stopping {stopped - began:.1f} s, down {time.monotonic() - stopped:.1f} s")

    STREAM.publish(settings, AFTER)
    expected = STREAM.expected_features()
    wait_for("every feature row", lambda: len(feature_rows(settings)) >= len(expected), timeout_s=90,
             procs=(alerter, pager))
    wait_for("every score", lambda: len(_news2_keys(settings)) >= STREAM.windows, timeout_s=30)
    assert_features_equal(feature_rows(settings), expected)
    keys = _news2_keys(settings)
    assert len(keys) == len(set(keys)) == STREAM.windows, "every NEWS2 score once"

    notifications = wait_for("the alerter's pages", lambda: query(settings, "SELECT notification_id FROM "
                                                                            "alert_notifications"),
                             timeout_s=30, procs=(alerter, pager))
    wait_for("every page delivered", lambda: len(read_jsonl(alerting.record)) >= len(notifications), timeout_s=30,
             procs=(alerter, pager))
    time.sleep(2.5)  # past the backoff cap: a second copy would have come by now
    pages = [r["idempotency_key"] for r in read_jsonl(alerting.record)]
    assert sorted(pages) == sorted(str(n) for (n,) in notifications), "every page once"

    alerter_metrics = f"http://127.0.0.1:{settings.metrics_port}/metrics"
    for client, metric in (("worker", worker.metric), ("trainer", trainer.metric),
                           ("alerter", lambda name, labels: scrape(alerter_metrics, name, labels))):
        labels = {"client": client}
        wait_for(f"the {client} to see the broker back",
                 lambda metric=metric, labels=labels: metric("vitals_kafka_up", labels) == 1,
                 timeout_s=30, procs=(alerter,))
        assert metric("vitals_kafka_outages_total", labels) == 1, client
    for proc in (worker, trainer):
        assert proc.proc.poll() is None
    assert alerter.alive()
    for log, client in ((worker.log, "worker"), (trainer.log, "trainer"), (alerter.log, "alerter")):
        text = log.read_text(errors="replace")
        assert text.count(f"{client}: Kafka unavailable") == 1 and text.count(f"{client}: Kafka back after") == 1, \
            client
