"""The gateway's HTTP app and upload path with a fake device table and a fake broker (no services).

What the real broker and PostgreSQL add is in ``test_service_e2e.py``; here every refusal, the
idempotency and the in-flight bookkeeping across a 503 are checked deterministically.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import ClientResponse, ClientSession, web
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from gateway.app import BodyLimits, build_app, make_runner
from gateway.service import Gateway, Record
from gateway.tokens import IssuedToken, issue_token
from gateway.uploads import parse_upload
from infra.processes import free_port
from kernel.settings import Settings
from kernel.vocabulary import METRICS
from kernel.wire import decode_device_message, encode_device_message
from sinks.devices import DeviceCredential
from sinks.errors import SinkUnavailable
from sinks.metrics import GatewayMetrics
from tests.gateway.resources import single_readings

START_MS = 1_767_571_200_000


@dataclass
class FakeDirectory:
    credentials: dict[str, DeviceCredential] = field(default_factory=dict)
    lookups: int = 0
    down: bool = False
    touched: dict[str, datetime] = field(default_factory=dict)

    def enroll(self, patient: str, device: str, *, revoked: bool = False) -> IssuedToken:
        issued = issue_token()
        self.credentials[issued.token_id] = DeviceCredential(issued.token_id, device, patient, issued.digest, revoked)
        return issued

    async def lookup(self, token_id: str) -> DeviceCredential | None:
        self.lookups += 1
        if self.down:
            raise SinkUnavailable("device lookup failed: connection refused")
        return self.credentials.get(token_id)

    async def touch(self, seen: Mapping[str, datetime]) -> None:
        self.touched.update(seen)


@dataclass
class FakeBroker:
    """Acknowledges at once, or holds every record while ``down`` (as an idempotent producer does)."""

    timeout_s: float = 0.2
    down: bool = False
    topic: list[tuple[bytes, bytes, int]] = field(default_factory=list)
    held: list[tuple[Record, int, asyncio.Future[object]]] = field(default_factory=list)

    async def submit(self, records: Sequence[Record], *, received_ms: int,
                     timeout_s: float) -> list[asyncio.Future[object]]:
        assert 0 <= timeout_s <= self.timeout_s + 1e-9, "one deadline per upload, none per record"
        futures: list[asyncio.Future[object]] = []
        for record in records:
            future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
            if self.down:
                self.held.append((record, received_ms, future))
            else:
                self.topic.append((record.key, record.value, received_ms))
                future.set_result(None)
            futures.append(future)
        return futures

    def recover(self) -> None:
        """The broker is back: the producer's retries deliver what it held, once."""
        self.down = False
        for record, received_ms, future in self.held:
            self.topic.append((record.key, record.value, received_ms))
            future.set_result(None)
        self.held.clear()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def native(patient: str = "pt-1", device: str = "dev-1", seq: int = 1, n: int = 3) -> bytes:
    return encode_device_message(device_id=device, patient_id=patient, seq=seq, sent_at=START_MS,
                                 readings=[("heart_rate", START_MS + i * 1000, 70.0 + i) for i in range(n)])


Scenario = Callable[["Harness"], Awaitable[None]]


@dataclass
class Harness:
    session: ClientSession
    base: str
    directory: FakeDirectory
    broker: FakeBroker
    gateway: Gateway
    registry: CollectorRegistry
    clock: Clock

    async def post(self, body: bytes, token: str | None, *, path: str = "/v1/uploads",
                   headers: dict[str, str] | None = None) -> tuple[ClientResponse, Any]:
        sent = {"Content-Type": "application/json", **(headers or {})}
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        async with self.session.post(self.base + path, data=body, headers=sent) as response:
            text = await response.read()
            return response, json.loads(text) if text else None

    def sample(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


def run(scenario: Scenario, **overrides: Any) -> None:
    settings = Settings(gateway_rate_per_device=overrides.pop("rate", 100.0), gateway_burst=overrides.pop("burst", 100),
                        gateway_auth_cache_s=overrides.pop("auth_cache_s", 2.0), **overrides)

    async def main() -> None:
        directory, broker, clock, registry = FakeDirectory(), FakeBroker(), Clock(), CollectorRegistry()
        gateway = Gateway.from_settings(settings, directory=directory, sink=broker, metrics=GatewayMetrics(registry))
        gateway.monotonic = clock
        gateway.wall_ms = lambda: START_MS + 60_000
        app = build_app(gateway, registry, body_limits=BodyLimits(settings.gateway_max_body_bytes,
                                                                  settings.gateway_max_decompressed_bytes))
        runner = make_runner(app)  # the gateway's own runner: no auto-decompression, no access log
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            async with ClientSession(auto_decompress=False) as session:
                await scenario(Harness(session, f"http://127.0.0.1:{port}", directory, broker, gateway, registry,
                                       clock))
        finally:
            await runner.cleanup()

    asyncio.run(main())


def test_a_native_upload_is_produced_keyed_by_patient_and_stamped() -> None:
    async def scenario(h: Harness) -> None:
        token = h.directory.enroll("pt-1", "dev-1").token
        response, body = await h.post(b"[" + native(seq=1) + b"," + native(seq=2) + b"]", token)
        assert response.status == 202, body
        assert body == {"status": "accepted", "format": "native", "messages": 2, "readings": 6, "duplicates": 0,
                        "received_ms": START_MS + 60_000}
        assert [(key, received) for key, _, received in h.broker.topic] == [(b"pt-1", START_MS + 60_000)] * 2
        batch = decode_device_message(h.broker.topic[1][1])
        assert (batch.patient_id, batch.device_id, batch.seq, len(batch.points)) == ("pt-1", "dev-1", 2, 3)
        assert h.sample("vitals_gateway_readings_total", format="native") == 6
        assert h.sample("vitals_gateway_requests_total", route="/v1/uploads", status="202") == 1
        await h.gateway.flush_seen()
        assert list(h.directory.touched) == [next(iter(h.directory.credentials))]

    run(scenario)


def test_no_bad_or_revoked_token_is_401_and_nothing_is_produced() -> None:
    async def scenario(h: Harness) -> None:
        good = h.directory.enroll("pt-1", "dev-1")
        revoked = h.directory.enroll("pt-1", "dev-9", revoked=True)
        forged = good.token[:-4] + ("AAAA" if not good.token.endswith("AAAA") else "BBBB")
        cases = {"missing": None, "malformed": "not-a-token", "unknown": issue_token().token,
                 "mismatch": forged, "revoked": revoked.token}
        for cause, token in cases.items():
            response, body = await h.post(native(), token)
            assert response.status == 401, cause
            assert body["reason"] == "unauthorized" and "vrd1" not in json.dumps(body)
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            assert h.sample("vitals_gateway_auth_failures_total", reason=cause) == 1, cause
        assert h.broker.topic == []
        metrics = await (await h.session.get(h.base + "/metrics")).text()
        assert good.token not in metrics and good.token_id not in metrics

    run(scenario)


def test_another_patient_or_device_is_403_and_nothing_is_produced() -> None:
    async def scenario(h: Harness) -> None:
        token = h.directory.enroll("pt-1", "dev-1").token
        response, body = await h.post(b"[" + native() + b"," + native(patient="pt-2", seq=2) + b"]", token)
        assert (response.status, body["reason"]) == (403, "patient_mismatch")
        response, body = await h.post(native(device="dev-2"), token)
        assert (response.status, body["reason"]) == (403, "device_mismatch")
        assert h.broker.topic == []

    run(scenario)


def test_oversized_bodies_and_gzip_bombs_are_413_cheaply() -> None:
    async def scenario(h: Harness) -> None:
        token = h.directory.enroll("pt-1", "dev-1").token
        response, body = await h.post(b" " * 5000 + native(), token)
        assert (response.status, body["reason"]) == (413, "too_large")

        async def chunks() -> Any:
            for _ in range(10):
                yield b" " * 1000
        async with h.session.post(h.base + "/v1/uploads", data=chunks(),
                                  headers={"Authorization": f"Bearer {token}"}) as response:
            assert response.status == 413  # no Content-Length: counted while reading

        bomb = gzip.compress(b" " * 50_000_000)  # 50 MB of spaces in about 50 kB
        response, body = await h.post(bomb[:4096], token, headers={"Content-Encoding": "gzip"})
        assert (response.status, body["reason"]) == (413, "too_large")
        assert h.broker.topic == []

    run(scenario, gateway_max_body_bytes=4096, gateway_max_decompressed_bytes=8192)


def test_gzip_bodies_are_inflated_and_bad_encodings_refused() -> None:
    async def scenario(h: Harness) -> None:
        token = h.directory.enroll("pt-1", "dev-1").token
        response, body = await h.post(gzip.compress(native()), token, headers={"Content-Encoding": "gzip"})
        assert response.status == 202, body
        response, body = await h.post(native(seq=2), token, headers={"Content-Encoding": "gzip"})
        assert (response.status, body["reason"]) == (400, "bad_encoding")
        response, body = await h.post(native(seq=3), token, headers={"Content-Encoding": "br"})
        assert (response.status, body["reason"]) == (415, "unsupported_encoding")
        assert len(h.broker.topic) == 1

    run(scenario)


def test_a_flood_is_429_with_retry_after_and_the_device_may_upload_again_later() -> None:
    async def scenario(h: Harness) -> None:
        token = h.directory.enroll("pt-1", "dev-1").token
        other = h.directory.enroll("pt-2", "dev-2").token
        statuses = [(await h.post(native(seq=i), token))[0].status for i in range(5)]
        assert statuses == [202, 202, 202, 429, 429]
        response, body = await h.post(native(seq=9), token)
        assert response.status == 429 and int(response.headers["Retry-After"]) >= 1
        assert (await h.post(native("pt-2", "dev-2"), other))[0].status == 202  # its own bucket
        h.clock.now += int(response.headers["Retry-After"])
        assert (await h.post(native(seq=9), token))[0].status == 202
        assert h.sample("vitals_gateway_rejections_total", reason="rate_limited") == 3

    run(scenario, rate=1.0, burst=3)


def test_a_retried_upload_is_accepted_again_and_produced_once() -> None:
    async def scenario(h: Harness) -> None:
        token = h.directory.enroll("pt-1", "dev-1").token
        first, body = await h.post(native(seq=7), token)
        again, body_again = await h.post(native(seq=7), token)
        assert (first.status, again.status) == (202, 202)
        assert (body["duplicates"], body_again["duplicates"]) == (0, 1)
        # ... and concurrent copies, too: a device's uploads are handled one at a time
        results = await asyncio.gather(*(h.post(native(seq=8), token) for _ in range(5)))
        assert [r.status for r, _ in results] == [202] * 5
        assert [decode_device_message(v).seq for _, v, _ in h.broker.topic] == [7, 8]
        h.clock.now += 901  # past the idempotency window: the worker's (device, seq) window takes over
        await h.post(native(seq=7), token)
        assert len(h.broker.topic) == 3

    run(scenario)


def test_broker_down_is_503_and_the_retry_after_it_is_back_produces_nothing_twice() -> None:
    async def scenario(h: Harness) -> None:
        token = h.directory.enroll("pt-1", "dev-1").token
        h.broker.down = True
        response, body = await h.post(native(seq=1), token)
        assert (response.status, body["reason"]) == (503, "broker_unavailable")
        assert int(response.headers["Retry-After"]) >= 1
        assert h.gateway.in_flight == 1
        response, _ = await h.post(native(seq=1), token)  # retried while still down: waits on the same record
        assert response.status == 503 and len(h.broker.held) == 1
        h.broker.recover()  # the idempotent producer delivers what it held
        response, body = await h.post(b"[" + native(seq=1) + b"," + native(seq=2) + b"]", token)
        assert response.status == 202 and body["duplicates"] == 1
        assert [decode_device_message(v).seq for _, v, _ in h.broker.topic] == [1, 2]
        assert h.gateway.in_flight == 0
        assert h.sample("vitals_gateway_messages_total", format="native", outcome="produced") == 2

    run(scenario)


def test_a_record_held_while_down_is_awaited_by_the_retry_not_produced_again() -> None:
    async def scenario(h: Harness) -> None:
        token = h.directory.enroll("pt-1", "dev-1").token
        h.broker.down = True
        assert (await h.post(native(seq=1), token))[0].status == 503

        async def recover_soon() -> None:
            await asyncio.sleep(0.05)
            h.broker.recover()
        retry = asyncio.create_task(h.post(native(seq=1), token))
        await recover_soon()
        response, body = await retry
        assert response.status == 202 and body["duplicates"] == 0
        assert len(h.broker.topic) == 1

    run(scenario)


def test_revocation_takes_effect_once_the_cached_lookup_expires() -> None:
    async def scenario(h: Harness) -> None:
        issued = h.directory.enroll("pt-1", "dev-1")
        assert (await h.post(native(seq=1), issued.token))[0].status == 202
        old = h.directory.credentials[issued.token_id]
        h.directory.credentials[issued.token_id] = DeviceCredential(old.token_id, old.device_id, old.patient_id,
                                                                    old.token_sha256, True)
        assert (await h.post(native(seq=2), issued.token))[0].status == 202  # within the cache's 2 s
        h.clock.now += 2.5
        assert (await h.post(native(seq=3), issued.token))[0].status == 401
        assert h.directory.lookups == 2

    run(scenario)


def test_an_unreadable_device_table_is_503_auth_unavailable() -> None:
    async def scenario(h: Harness) -> None:
        token = h.directory.enroll("pt-1", "dev-1").token
        h.directory.down = True
        response, body = await h.post(native(), token)
        assert (response.status, body["reason"]) == (503, "auth_unavailable")
        assert "Retry-After" in response.headers

    run(scenario)


def test_invalid_readings_are_422_and_fhir_routes_answer_operation_outcomes() -> None:
    async def scenario(h: Harness) -> None:
        token = h.directory.enroll("pt-1", "dev-1").token
        bad = encode_device_message(device_id="dev-1", patient_id="pt-1", seq=1, sent_at=START_MS,
                                    readings=[("heart_rate", START_MS, 400.0)])
        response, body = await h.post(bad, token)
        assert (response.status, body["reason"]) == (422, "impossible_value")
        response, body = await h.post(b"{}", None, path="/fhir/Observation",
                                      headers={"Content-Type": "application/fhir+json"})
        assert response.status == 401 and body["resourceType"] == "OperationOutcome"
        assert response.content_type == "application/fhir+json"
        response, body = await h.post(b"{", token, path="/fhir")
        assert response.status in (400, 415, 422) and body["resourceType"] == "OperationOutcome"
        assert h.broker.topic == []

    run(scenario)


def test_service_routes_and_unknown_paths() -> None:
    async def scenario(h: Harness) -> None:
        async with h.session.get(h.base + "/healthz") as response:
            assert (response.status, await response.json()) == (200, {"status": "ok"})
        async with h.session.get(h.base + "/openapi.json") as response:
            assert (await response.json())["openapi"].startswith("3.")
        async with h.session.get(h.base + "/nowhere") as response:
            assert response.status == 404 and (await response.json())["status"] == 404
        async with h.session.get(h.base + "/v1/uploads") as response:
            assert response.status == 405 and response.headers["Allow"] == "POST"
        assert h.sample("vitals_gateway_requests_total", route="unmatched", status="404") == 1

    run(scenario)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(single_readings(), max_size=6), min_size=1, max_size=4), st.booleans(), st.booleans())
def test_the_records_produced_decode_to_the_messages_uploaded(messages: list[list[tuple[str, int, float]]],
                                                              int_values: bool, no_unit: bool) -> None:
    """Whatever the gateway wrote (the fast path's record, re-encoded) the worker reads as the device's message."""
    uploaded = [json.loads(native(seq=seq, n=0)) | {"readings": [
        {"metric": m, "t": t, "value": int(v) if int_values else v} | ({} if no_unit else {"unit": METRICS[m].unit})
        for m, t, v in readings]} for seq, readings in enumerate(messages)]
    body = json.dumps(uploaded).encode()

    async def main() -> list[tuple[bytes, bytes, int]]:
        broker, registry = FakeBroker(), CollectorRegistry()
        gateway = Gateway.from_settings(Settings(), directory=FakeDirectory(), sink=broker,
                                        metrics=GatewayMetrics(registry))
        credential = DeviceCredential("t", "dev-1", "pt-1", b"", False)
        parsed = parse_upload(body, content_type="application/json", limits=gateway.limits)
        await gateway.accept(credential, parsed, received_ms=START_MS + 60_000)
        return broker.topic

    topic = asyncio.run(main())
    want = [decode_device_message(json.dumps(message).encode()) for message in uploaded]
    got = [decode_device_message(value) for _, value, _ in topic]
    assert [(b.patient_id, b.device_id, b.seq, b.points) for b in got] == [
        (b.patient_id, b.device_id, b.seq, b.points) for b in want if b.points]
    assert all(not b.rejected for b in got) and {key for key, _, _ in topic} <= {b"pt-1"}
