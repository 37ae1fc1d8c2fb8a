"""End to end on the real broker and database: a deterioration's scores in, one signed page out.

The real ``alerter`` process consumes the isolated scores topic; the real ``pager`` process
verifies and records what arrives over HTTP.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import psycopg
import pytest
from kafka import KafkaProducer

from sinks.signing import signed_headers
from kernel.events import RiskScore
from kernel.settings import Settings
from kernel.wire import encode_score
from tests.alerts.conftest import SECRET, AlertingStack, news2_score, read_jsonl, wait_for

pytestmark = pytest.mark.integration

PATIENT = "pt-e2e0001"


def produce(settings: Settings, scores: list[RiskScore]) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    for score in scores:
        producer.send(settings.scores_topic, key=score.patient_id.encode(), value=encode_score(score))
    producer.flush()
    producer.close()


def pages_for(stack: AlertingStack, patient: str) -> list[dict]:
    return [r for r in read_jsonl(stack.record)
            if r["body"]["alerts"][0]["labels"]["patient_id"] == patient]


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - local test servers
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def query(settings: Settings, sql: str, *args: object) -> list[tuple]:
    with psycopg.connect(settings.database_url) as conn:
        return conn.execute(sql, args).fetchall()


def test_deterioration_pages_once_signed_acknowledged_and_resolved(alerting: AlertingStack) -> None:
    settings = alerting.settings
    pager = alerting.start_pager()
    alerter = alerting.start_alerter()
    procs = (pager, alerter)

    # minutes 1-5: NEWS2 climbs to 7 and 8 with a red respiratory rate; both kinds breach at minute 4
    produce(settings, [news2_score(PATIENT, m, n, red=n >= 7) for m, n in [(1, 2), (2, 3), (3, 5), (4, 7), (5, 8)]])
    first = wait_for("the firing page", lambda: pages_for(alerting, PATIENT), timeout_s=60, procs=procs)
    assert len(first) == 1, first
    body = first[0]["body"]
    alert = body["alerts"][0]
    assert body["version"] == "4" and body["status"] == "firing" and body["receiver"] == "pager"
    assert set(body) >= {"groupKey", "groupLabels", "commonLabels", "commonAnnotations", "externalURL",
                         "truncatedAlerts"}
    assert alert["labels"]["kind"] == "news2_high" and alert["labels"]["severity"] == "critical"
    annotations = alert["annotations"]
    assert annotations["news2_total"] == "8"
    assert annotations["model_version"] == "rcp-2017-scale1"
    assert annotations["top_features"].startswith("respiratory_rate=3")
    assert annotations["dashboard_url"] == f"http://grafana.test/d/vitalrisk-patient?var-patient={PATIENT}"
    assert alert["startsAt"] == "2026-01-05T00:05:00Z" and alert["endsAt"] == "0001-01-01T00:00:00Z"
    alert_id = alert["labels"]["alert_id"]
    assert first[0]["idempotency_key"] == f"{alert_id}:firing" and not first[0]["duplicate"]

    # the red-parameter alert fired too, silently: inhibited by news2_high
    events = {(k, e) for k, e in query(settings, "SELECT kind, event FROM alert_events WHERE patient_id = %s",
                                       PATIENT)}
    assert {("news2_high", "pending"), ("news2_high", "firing"), ("news2_red_parameter", "inhibited")} <= events

    # acknowledged over the alerter's HTTP API, recorded with who and when
    status, answer = post(alerting.api(f"/alerts/{alert_id}/ack"), json.dumps({"by": "rn-ward-3"}).encode(),
                          {"Content-Type": "application/json"})
    assert status == 200 and answer["acknowledged_by"] == "rn-ward-3", answer
    assert query(settings, "SELECT acknowledged_by FROM alerts WHERE alert_id = %s", alert_id) == [("rn-ward-3",)]
    wait_for("the alerter to apply the acknowledgement", lambda: query(
        settings, "SELECT 1 FROM alert_events WHERE alert_id = %s AND event = 'acknowledged'", alert_id),
        timeout_s=10, procs=procs)
    assert post(alerting.api("/alerts/al-nope/ack"), b'{"by": "x"}', {"Content-Type": "application/json"})[0] == 404
    assert post(alerting.api("/alerts/al-nope/ack"), b'{"by": "x"}', {})[0] == 415, "JSON only: no form posts"

    # minutes 6-10: recovery; the alert resolves after two minutes at or below the exit threshold
    produce(settings, [news2_score(PATIENT, m, n) for m, n in [(6, 8), (7, 1), (8, 1), (9, 1), (10, 1)]])
    wait_for("the resolved page", lambda: len(pages_for(alerting, PATIENT)) >= 2, timeout_s=30, procs=procs)
    time.sleep(1.0)  # anything further (a duplicate, a stray page) would arrive now
    pages = pages_for(alerting, PATIENT)
    assert [p["body"]["status"] for p in pages] == ["firing", "resolved"], pages
    resolved = pages[1]["body"]["alerts"][0]
    assert resolved["endsAt"] == "2026-01-05T00:09:00Z"
    assert resolved["annotations"]["acknowledged_by"] == "rn-ward-3"
    assert query(settings, "SELECT state FROM alerts WHERE alert_id = %s", alert_id) == [("resolved",)]
    outcomes = query(settings, "SELECT outcome, count(*) FROM webhook_deliveries GROUP BY outcome")
    assert outcomes == [("delivered", 2)]

    # the pager rejects unsigned, forged and stale requests with 401
    url = f"http://127.0.0.1:{alerting.pager_port}/webhook"
    raw = json.dumps(body).encode()
    good = signed_headers(SECRET.encode(), raw, "forged-1", now_s=time.time())
    assert post(url, raw, {"Content-Type": "application/json"})[0] == 401
    assert post(url, raw, signed_headers(b"wrong-secret", raw, "forged-2", now_s=time.time()))[0] == 401
    assert post(url, raw + b" ", good)[0] == 401
    assert post(url, raw, signed_headers(SECRET.encode(), raw, "old", now_s=time.time() - 3600))[0] == 401
    assert post(url, raw, good)[0] == 200
    assert alerter.stop() == 0
