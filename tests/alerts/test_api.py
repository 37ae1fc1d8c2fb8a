"""The alerter's HTTP API on the real PostgreSQL: tokens, content types, bounded silences, ending one.

The application is served in process (aiohttp's test server) over a real :class:`AlertStore`;
``test_e2e_paging`` drives the same API inside the real ``vitalrisk alerter`` process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from kernel.errors import ConfigurationError
from kernel.settings import Settings
from sinks.alert_store import AlertStore
from stream.alerts.api import build_api, check_exposure
from stream.alerts.silence_rules import SilenceBounds

TOKEN = "t" * 32
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {**AUTH, "Content-Type": "application/json"}


def with_api(settings: Settings, scenario: Callable[[TestClient[Any, Any], list[int]], Awaitable[None]]) -> list[int]:
    """Run ``scenario`` against the API; return how often it told the alerter something changed."""
    changes: list[int] = []

    async def main() -> None:
        async with AlertStore(settings.database_url) as store:
            app = build_api(store, token=TOKEN, on_change=lambda: changes.append(1),
                            bounds=SilenceBounds(patient_max_minutes=120, wildcard_max_minutes=30))
            async with TestClient(TestServer(app)) as client:
                await scenario(client, changes)

    asyncio.run(main())
    return changes


@pytest.mark.integration
def test_silences_are_bounded_listed_and_ended_early(isolated: Settings) -> None:
    async def scenario(client: TestClient[Any, Any], changes: list[int]) -> None:
        async def post(body: dict[str, Any]) -> tuple[int, Any]:
            answer = await client.post("/silences", json=body, headers=AUTH)
            return answer.status, await answer.json()

        base = {"kind": None, "by": "rn-ward-3", "reason": "procedure"}
        status, answer = await post({**base, "patient_id": None, "minutes": 10})
        assert status == 400 and "all_patients" in answer["error"], "a wildcard must be explicit"
        status, answer = await post({**base, "patient_id": None, "all_patients": True, "minutes": 31})
        assert status == 400 and "at most 30 minutes" in answer["error"]
        status, answer = await post({**base, "patient_id": "pt-a1", "minutes": 121})
        assert status == 400 and "at most 120 minutes" in answer["error"]
        status, answer = await post({**base, "patient_id": "pt-a1", "all_patients": True, "minutes": 5})
        assert status == 400, "one patient or all, not both"
        status, answer = await post({**base, "patient_id": None, "all_patients": "yes", "minutes": 5})
        assert status == 400
        assert changes == []

        status, patient = await post({**base, "patient_id": "pt-a1", "minutes": 120})
        assert status == 201
        status, wildcard = await post({**base, "patient_id": None, "all_patients": True, "minutes": 30})
        assert status == 201
        listed = await (await client.get("/silences", headers=AUTH)).json()
        assert {s["silence_id"] for s in listed} == {patient["silence_id"], wildcard["silence_id"]}

        path = f"/silences/{wildcard['silence_id']}"
        ended = await client.delete(path, json={"by": "ops-2"}, headers=AUTH)
        assert ended.status == 200 and (await ended.json())["ended_by"] == "ops-2"
        assert (await client.delete(path, json={"by": "ops-2"}, headers=AUTH)).status == 409
        assert (await client.delete("/silences/si-nope", json={"by": "ops-2"}, headers=AUTH)).status == 404
        assert (await client.delete(path, json={}, headers=AUTH)).status == 400
        listed = await (await client.get("/silences", headers=AUTH)).json()
        assert [s["silence_id"] for s in listed] == [patient["silence_id"]]
        assert len(changes) == 3  # two created, one ended: the alerter reloads at once

    with_api(isolated, scenario)


@pytest.mark.integration
def test_only_json_bodies_with_the_token_are_read(isolated: Settings) -> None:
    async def scenario(client: TestClient[Any, Any], changes: list[int]) -> None:
        silence = '{"patient_id": "pt-a2", "minutes": 5, "by": "x", "reason": "y"}'
        # what a web page can send cross-site without a preflight: form encodings and text/plain
        for content_type in ("application/x-www-form-urlencoded", "multipart/form-data; boundary=b", "text/plain"):
            answer = await client.post("/silences", data=silence, headers={**AUTH, "Content-Type": content_type})
            assert answer.status == 415, content_type
        answer = await client.post("/silences", data=silence.encode(), headers=AUTH)  # no content type at all
        assert answer.status == 415
        assert (await client.delete("/silences/si-1", data="{}", headers={**AUTH, "Content-Type": "text/plain"})
                ).status == 415
        assert (await client.post("/silences", data=silence, headers={"Content-Type": "application/json"})
                ).status == 401
        wrong = {"Authorization": "Bearer " + "\u00e9" * 32, "Content-Type": "application/json"}
        assert (await client.post("/silences", data=silence, headers=wrong)).status == 401
        assert (await client.get("/healthz")).status == 200  # no token needed
        answer = await client.post("/silences", data=silence, headers={**JSON, "Content-Type": "application/json; charset=utf-8"})
        assert answer.status == 201
        assert (await client.post("/silences", data=b"\xff\xfe", headers=JSON)).status == 400
        assert len(changes) == 1

    with_api(isolated, scenario)


@pytest.mark.parametrize(("host", "token", "refused"), [
    ("127.0.0.1", None, False), ("::1", None, False), ("localhost", None, False),
    ("0.0.0.0", None, True), ("10.1.2.3", None, True), ("alerter.internal", None, True),
    ("0.0.0.0", "x" * 32, False),
])
def test_the_api_is_not_served_beyond_loopback_without_a_token(host: str, token: str | None, refused: bool) -> None:
    settings = Settings(alerter_host=host, alerter_api_token=token, alerter_allow_plaintext=True)  # TLS: tests/infra/test_serving.py
    if refused:
        with pytest.raises(ConfigurationError, match="VITALS_ALERTER_API_TOKEN"):
            check_exposure(settings)
    else:
        check_exposure(settings)
    check_exposure(settings.model_copy(update={"alerter_port": 0}))  # no API, nothing exposed


class UnansweringStore:
    """A store whose database never answers (the real one retries a lost database for as long as it runs)."""

    async def acknowledge(self, alert_id: str, *, by: str, via: str) -> tuple[str, int]:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    async def list_alerts(self, *, state: str | None = None) -> list[dict[str, Any]]:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")


def test_a_request_the_database_does_not_answer_is_503_within_the_deadline() -> None:
    async def main() -> list[tuple[int, str | None, float]]:
        app = build_api(UnansweringStore(), token=TOKEN, deadline_s=0.3)
        answers = []
        async with TestClient(TestServer(app)) as client:
            for request in (client.get("/alerts", headers=AUTH),
                            client.post("/alerts/al-1/ack", json={"by": "rn-1"}, headers=AUTH)):
                started = asyncio.get_running_loop().time()
                answer = await request
                answers.append((answer.status, answer.headers.get("Retry-After"),
                                asyncio.get_running_loop().time() - started))
        return answers

    for status, retry_after, took_s in asyncio.run(main()):
        assert (status, retry_after) == (503, "1")
        assert took_s < 3
