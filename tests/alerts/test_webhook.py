"""Webhook bodies, signatures, retries and dead letters (local HTTP servers, no broker)."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from hypothesis import given, strategies as st
from prometheus_client import CollectorRegistry

from kernel.alerts import Page
from kernel.backoff import Backoff
from kernel.errors import AlertDeliveryFailed, SignatureInvalid
from sinks.alertmanager import alertmanager_body, encode_body
from sinks.metrics import AlertMetrics
from sinks.signing import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign, verify
from sinks.webhook import Attempt, Delivery, WebhookSender
from stream.alerts import AlertEngine, AlertPolicy
from stream.alerts.delivery import Dispatcher
from tests.alerts.conftest import free_port, news2_score

SECRET = b"s3cret"


def pages_of_an_episode() -> list[Page]:
    engine = AlertEngine(AlertPolicy(data_stopped_ms=None))
    out: list[Page] = []
    for minute, total in [(1, 8), (2, 9), (3, 1), (4, 1), (5, 1)]:
        out += engine.on_score(news2_score("pt-00ab", minute, total, red=total > 7), now_ms=minute * 60_000).pages
    return out


def test_the_body_is_alertmanager_version_4_with_everything_a_coordinator_needs() -> None:
    firing, resolved = pages_of_an_episode()
    body = alertmanager_body(firing, receiver="pager", grafana_url="https://grafana.ward", external_url="https://a")
    assert set(body) == {"version", "groupKey", "truncatedAlerts", "status", "receiver", "groupLabels",
                         "commonLabels", "commonAnnotations", "externalURL", "alerts"}
    (alert,) = body["alerts"]
    assert set(alert) == {"status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint"}
    assert body["groupKey"] == '{}:{alertname="VitalriskNews2High", patient_id="pt-00ab"}'
    assert alert["labels"] == {"alertname": "VitalriskNews2High", "kind": "news2_high", "patient_id": "pt-00ab",
                               "severity": "critical", "alert_id": firing.alert_id}
    ann = alert["annotations"]
    assert ann["news2_total"] == "9" and ann["risk"] == "n/a" and ann["model_version"] == "rcp-2017-scale1"
    assert ann["top_features"] == "respiratory_rate=3, heart_rate=2, spo2=2"  # top 3 of 4 parameters
    assert ann["dashboard_url"] == "https://grafana.ward/d/vitalrisk-patient?var-patient=pt-00ab"
    assert ann["ack_url"] == f"https://a/alerts/{firing.alert_id}/ack"
    assert all(isinstance(v, str) for v in ann.values())
    assert alert["endsAt"] == "0001-01-01T00:00:00Z" and alert["startsAt"].endswith("Z")
    done = alertmanager_body(resolved, receiver="pager", grafana_url="g", external_url="a")
    assert done["status"] == "resolved" and done["alerts"][0]["endsAt"] != "0001-01-01T00:00:00Z"
    assert done["alerts"][0]["fingerprint"] == alert["fingerprint"], "one alert, one fingerprint"
    assert json.loads(encode_body(body)) == body


def test_signatures_verify_and_reject_what_they_should() -> None:
    body = b'{"x":1}'
    header = sign(SECRET, body, 1_000)
    assert verify([SECRET], body, header, "1000", now_s=1_100) == 1_000
    assert verify([b"old", SECRET], body, header, "1000", now_s=1_100) == 1_000  # rotation
    assert verify([SECRET], body, f"{header},v1=00", "1000", now_s=1_000) == 1_000
    cases = {"missing": (None, "1000"), "malformed": ("v1=abc", "1000")}
    for reason, (sig, ts) in cases.items():
        with pytest.raises(SignatureInvalid) as err:
            verify([SECRET], body, sig, ts, now_s=1_000)
        assert err.value.reason == reason
    with pytest.raises(SignatureInvalid, match="malformed"):
        verify([SECRET], body, header, "999", now_s=1_000)  # timestamp header disagrees with t=
    with pytest.raises(SignatureInvalid, match="stale"):
        verify([SECRET], body, header, "1000", now_s=1_301)
    with pytest.raises(SignatureInvalid, match="mismatch"):
        verify([b"other"], body, header, "1000", now_s=1_000)


@given(st.binary(max_size=512), st.integers(0, 2 ** 33), st.binary(min_size=1, max_size=64))
def test_any_body_signed_verifies_and_any_change_does_not(body: bytes, t: int, secret: bytes) -> None:
    header = sign(secret, body, t)
    assert verify([secret], body, header, str(t), now_s=t) == t
    with pytest.raises(SignatureInvalid):
        verify([secret], body + b"!", header, str(t), now_s=t)


class ListAudit:
    def __init__(self) -> None:
        self.attempts: list[Attempt] = []
        self.dead: list[tuple[str, int, int | None, str]] = []

    async def record_attempt(self, attempt: Attempt) -> None:
        self.attempts.append(attempt)

    async def dead_letter(self, delivery: Delivery, attempts: int, last_status: int | None, detail: str) -> None:
        self.dead.append((delivery.notification_id, attempts, last_status, detail))


Handler = Callable[[web.Request], Awaitable[web.Response]]


async def serve(handler: Handler) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/hook", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}/hook"


def test_the_sender_retries_transient_failures_then_delivers_signed_with_one_key() -> None:
    seen: list[dict[str, Any]] = []
    statuses = [503, 429, 200]

    async def handler(request: web.Request) -> web.Response:
        body = await request.read()
        seen.append({"key": request.headers[IDEMPOTENCY_HEADER],
                     "t": verify([SECRET], body, request.headers.get(SIGNATURE_HEADER),
                                 request.headers.get(TIMESTAMP_HEADER), now_s=clock[0])})
        clock[0] += 1
        return web.Response(status=statuses[len(seen) - 1])

    clock = [1_800_000_000.0]

    async def main() -> Attempt:
        runner, url = await serve(handler)
        audit = ListAudit()
        try:
            async with WebhookSender(SECRET, audit=audit, backoff=Backoff(0.01, 0.02, 10),
                                     rng=random.Random(1), clock=lambda: clock[0]) as sender:
                result = await sender.deliver(Delivery("al-1:firing", "al-1", "pager", url, b'{"a":1}'))
        finally:
            await runner.cleanup()
        assert [(a.attempt, a.outcome, a.status_code) for a in audit.attempts] == [
            (1, "retry", 503), (2, "retry", 429), (3, "delivered", 200)]
        assert audit.dead == []
        return result

    assert asyncio.run(main()).attempt == 3
    assert {s["key"] for s in seen} == {"al-1:firing"}
    assert [s["t"] for s in seen] == [1_800_000_000, 1_800_000_001, 1_800_000_002], "signed afresh each attempt"


def test_a_permanent_failure_is_dead_lettered_at_once() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=401)

    async def main() -> ListAudit:
        runner, url = await serve(handler)
        audit = ListAudit()
        try:
            async with WebhookSender(SECRET, audit=audit, backoff=Backoff(0.01, 0.02, 10)) as sender:
                with pytest.raises(AlertDeliveryFailed) as err:
                    await sender.deliver(Delivery("al-2:firing", "al-2", "pager", url, b"{}"))
                assert err.value.attempts == 1 and err.value.receiver == "pager"
        finally:
            await runner.cleanup()
        return audit

    audit = asyncio.run(main())
    assert [(a.outcome, a.status_code) for a in audit.attempts] == [("failed", 401)]
    assert audit.dead == [("al-2:firing", 1, 401, "HTTP 401")]


def test_an_unreachable_receiver_is_retried_until_the_budget_is_spent() -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens

    async def main() -> ListAudit:
        audit = ListAudit()
        async with WebhookSender(SECRET, audit=audit, backoff=Backoff(0.01, 0.05, 0.3), timeout_s=0.5) as sender:
            with pytest.raises(AlertDeliveryFailed):
                await sender.deliver(Delivery("al-3:firing", "al-3", "pager", url, b"{}"))
        return audit

    audit = asyncio.run(main())
    outcomes = [a.outcome for a in audit.attempts]
    assert len(outcomes) >= 3 and set(outcomes[:-1]) == {"retry"} and outcomes[-1] == "failed"
    assert len(audit.dead) == 1 and "gave up" in audit.dead[0][3]


def test_the_dispatcher_keeps_an_alerts_pages_in_order_and_counts_them() -> None:
    firing, resolved = pages_of_an_episode()
    arrivals: list[str] = []
    fail_first = [True]

    async def handler(request: web.Request) -> web.Response:
        key = request.headers[IDEMPOTENCY_HEADER]
        if fail_first[0]:
            fail_first[0] = False
            return web.Response(status=502)
        arrivals.append(key)
        return web.Response(status=200)

    registry = CollectorRegistry()

    async def main() -> None:
        runner, url = await serve(handler)
        try:
            async with WebhookSender(SECRET, audit=ListAudit(), backoff=Backoff(0.05, 0.1, 10)) as sender:
                dispatcher = Dispatcher(sender, receivers={"pager": url}, grafana_url="g", external_url="a",
                                        metrics=AlertMetrics(registry), clock=lambda: 100.0)
                dispatcher.submit(firing, ("pager",), source_ts_ms=99_500)
                dispatcher.submit(firing, ("pager",), source_ts_ms=99_500)  # already in flight: ignored
                dispatcher.submit(resolved, ("pager",), source_ts_ms=None)
                await dispatcher.close(grace_s=5)
        finally:
            await runner.cleanup()

    asyncio.run(main())
    assert arrivals == [firing.notification_id, resolved.notification_id]
    assert registry.get_sample_value("vitals_webhook_deliveries_total",
                                     {"receiver": "pager", "outcome": "delivered"}) == 2
    assert registry.get_sample_value("vitals_webhook_retries_total", {"receiver": "pager"}) == 1
    assert registry.get_sample_value("vitals_pages_total", {"receiver": "pager", "severity": "critical"}) == 2
    assert registry.get_sample_value("vitals_webhook_delivery_seconds_sum", {"receiver": "pager"}) == 0.5
