"""Webhook bodies, signatures, retries and dead letters (local HTTP servers, no broker)."""

from __future__ import annotations

import asyncio
import json
import random
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp import web
from hypothesis import given, strategies as st
from prometheus_client import CollectorRegistry

from kernel.alerts import Page
from kernel.backoff import Backoff
from kernel.errors import AlertDeliveryFailed, InvalidPolicy, SignatureInvalid
from sinks.alertmanager import alertmanager_body, encode_body
from sinks.metrics import AlertMetrics
from sinks.signing import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign, verify
from sinks.webhook import Attempt, Delivery, WebhookSender, receiver_tls
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
    header = sign(SECRET, body, 1_000, "al-1:firing")
    assert verify([SECRET], body, header, "1000", "al-1:firing", now_s=1_100) == 1_000
    assert verify([b"old", SECRET], body, header, "1000", "al-1:firing", now_s=1_100) == 1_000  # rotation
    assert verify([SECRET], body, f"{header},v2={'0' * 64}", "1000", "al-1:firing", now_s=1_000) == 1_000
    cases = {"missing": (None, "1000", "al-1:firing"), "no key": (header, "1000", None),
             "malformed": ("v2=abc", "1000", "al-1:firing")}
    for reason, (sig, ts, key) in cases.items():
        with pytest.raises(SignatureInvalid) as err:
            verify([SECRET], body, sig, ts, key, now_s=1_000)
        assert err.value.reason == reason.replace("no key", "missing")
    with pytest.raises(SignatureInvalid, match="malformed"):
        verify([SECRET], body, header, "999", "al-1:firing", now_s=1_000)  # timestamp header disagrees with t=
    with pytest.raises(SignatureInvalid, match="stale"):
        verify([SECRET], body, header, "1000", "al-1:firing", now_s=1_301)
    with pytest.raises(SignatureInvalid, match="mismatch"):
        verify([b"other"], body, header, "1000", "al-1:firing", now_s=1_000)
    with pytest.raises(SignatureInvalid, match="mismatch"):  # a replay under a fresh key pages no one
        verify([SECRET], body, header, "1000", "al-1:firing-again", now_s=1_000)
    v1_only = header.replace("v2=", "v1=")  # the old scheme signed the body alone
    with pytest.raises(SignatureInvalid, match="malformed"):
        verify([SECRET], body, v1_only, "1000", "al-1:firing", now_s=1_000)


@given(st.binary(max_size=512), st.integers(0, 2 ** 33), st.binary(min_size=1, max_size=64),
       st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=80))
def test_any_body_signed_verifies_and_any_change_does_not(body: bytes, t: int, secret: bytes, key: str) -> None:
    header = sign(secret, body, t, key)
    assert verify([secret], body, header, str(t), key, now_s=t) == t
    with pytest.raises(SignatureInvalid):
        verify([secret], body + b"!", header, str(t), key, now_s=t)
    with pytest.raises(SignatureInvalid):
        verify([secret], body, header, str(t), key + "!", now_s=t)


@given(st.text(max_size=200), st.text(max_size=40), st.text(max_size=120))
def test_any_header_values_are_refused_as_signature_invalid_never_another_error(
        signature: str, timestamp: str, key: str) -> None:
    """Whatever a sender puts in the three headers (non-ASCII, huge numbers, empty parts), the
    answer is SignatureInvalid: the pager's 401, never a 500."""
    with pytest.raises(SignatureInvalid):
        verify([SECRET], b"{}", signature, timestamp, key, now_s=1_000)


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
                                 request.headers.get(TIMESTAMP_HEADER), request.headers.get(IDEMPOTENCY_HEADER),
                                 now_s=clock[0])})
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


def test_https_receivers_are_verified_against_the_configured_ca(tmp_path: Path) -> None:
    """A receiver with a private CA's certificate: delivered with VITALS_WEBHOOK_CA_FILE, refused without."""
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_tls)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    received: list[bytes] = []

    async def handler(request: web.Request) -> web.Response:
        received.append(await request.read())
        return web.Response(status=200)

    async def main() -> tuple[Attempt, Attempt]:
        app = web.Application()
        app.router.add_post("/hook", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port, ssl_context=server_tls).start()
        url = f"https://127.0.0.1:{port}/hook"
        try:
            async with WebhookSender(SECRET, audit=ListAudit(), ca_file=ca_file) as trusted:
                good = await trusted.attempt(Delivery("al-4:firing", "al-4", "pager", url, b"{}"), 1)
            async with WebhookSender(SECRET, audit=ListAudit()) as untrusting:  # the system's CAs only
                bad = await untrusting.attempt(Delivery("al-5:firing", "al-5", "pager", url, b"{}"), 1)
        finally:
            await runner.cleanup()
        return good, bad

    good, bad = asyncio.run(main())
    assert (good.outcome, good.status_code) == ("delivered", 200)
    assert bad.outcome == "retry" and bad.status_code is None and "certificate verify failed" in (bad.error or "")
    assert received == [b"{}"], "nothing reached the receiver over an unverified connection"
    with pytest.raises(InvalidPolicy, match="VITALS_WEBHOOK_CA_FILE"):
        receiver_tls(tmp_path / "missing.pem")
