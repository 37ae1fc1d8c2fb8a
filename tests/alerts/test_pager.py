"""The pager receiver: verification, deduplication across restarts, id-only logs, HTTP answers."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

import aiohttp
import pytest

from simulators.pager import Pager, build_pager_app, run_pager, serve_pager
from sinks.alertmanager import alertmanager_body, encode_body
from sinks.signing import signed_headers
from stream.alerts import AlertEngine, AlertPolicy
from kernel.errors import ConfigurationError
from kernel.settings import Settings
from tests.alerts.conftest import free_port, news2_score

SECRET = b"pager-secret"


def a_page_body() -> bytes:
    engine = AlertEngine(AlertPolicy())
    pages = [p for m in (1, 2) for p in engine.on_score(news2_score("pt-77", m, 9), now_ms=m * 60_000).pages]
    return encode_body(alertmanager_body(pages[0], receiver="pager", grafana_url="g", external_url="a"))


def test_duplicates_are_recognised_even_after_a_restart(tmp_path: Path) -> None:
    record = tmp_path / "pages.jsonl"
    body = a_page_body()
    headers = signed_headers(SECRET, body, "al-x:firing", now_s=time.time())
    assert Pager([SECRET], record_path=record).accept(body, headers) == (200, {"status": "ok", "duplicate": False})
    again = Pager([SECRET], record_path=record)
    assert again.accept(body, signed_headers(SECRET, body, "al-x:firing", now_s=time.time()))[1]["duplicate"]
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    assert [(r["idempotency_key"], r["duplicate"]) for r in lines] == [("al-x:firing", False), ("al-x:firing", True)]
    assert lines[0]["body"] == json.loads(body)


def test_requests_without_a_key_or_json_are_refused() -> None:
    pager = Pager([SECRET])
    body = b"not json"
    headers = signed_headers(SECRET, body, "k", now_s=time.time())
    assert pager.accept(body, headers)[0] == 400
    no_key = {k: v for k, v in signed_headers(SECRET, b"{}", "k", now_s=time.time()).items() if k != "Idempotency-Key"}
    assert pager.accept(b"{}", no_key) == (401, {"status": "rejected", "reason": "missing"})  # the key is signed
    assert pager.rejected == 2 and pager.accepted == 0


@pytest.mark.parametrize("signature", ["t=1,v2=\u00e9\u00e9", "t=\u0661\u0662,v2=00", "t=" + "9" * 5000 + ",v2=00",
                                       ",,,", "t=1,t=2,v2=" + "0" * 64, "v2=" + "0" * 64])
def test_malformed_signature_headers_are_401_not_an_error(signature: str) -> None:
    headers = {**signed_headers(SECRET, b"{}", "k", now_s=time.time()), "X-Vitalrisk-Signature": signature}
    status, answer = Pager([SECRET]).accept(b"{}", headers)
    assert (status, answer["reason"]) == (401, "malformed")


def test_logs_name_ids_never_vital_values(caplog: pytest.LogCaptureFixture) -> None:
    body = a_page_body()
    with caplog.at_level(logging.INFO, logger="simulators.pager"):
        Pager([SECRET]).accept(body, signed_headers(SECRET, body, "al-y:firing", now_s=time.time()))
    (line,) = [r.getMessage() for r in caplog.records]
    alert_id = json.loads(body)["alerts"][0]["labels"]["alert_id"]
    assert line == f"page al-y:firing: alert {alert_id}, patient pt-77, news2_high, firing"  # ids and codes only


def test_the_http_service_answers_401_200_and_reports_health(tmp_path: Path) -> None:
    body = a_page_body()

    async def main() -> list[int]:
        pager = Pager([SECRET], record_path=tmp_path / "p.jsonl")
        stop = asyncio.Event()
        port = free_port()
        server = asyncio.create_task(serve_pager(pager, host="127.0.0.1", port=port, grafana_token="tok",
                                                 stop=stop))
        await asyncio.sleep(0.2)
        codes = []
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{port}"
            for headers in ({}, signed_headers(b"wrong", body, "k1", now_s=time.time()),
                            signed_headers(SECRET, body, "k1", now_s=time.time())):
                async with session.post(f"{url}/webhook", data=body, headers=headers) as r:
                    codes.append(r.status)
            async with session.post(f"{url}/grafana", json={"status": "firing"}) as r:
                codes.append(r.status)
            async with session.post(f"{url}/grafana", json={"status": "firing"},
                                    headers={"Authorization": "Bearer tok"}) as r:
                codes.append(r.status)
            async with session.get(f"{url}/healthz") as r:
                health = await r.json()
        stop.set()
        await server
        assert health == {"status": "ok", "accepted": 1, "duplicates": 0, "rejected": 2}
        return codes

    assert asyncio.run(main()) == [401, 401, 200, 401, 200]


def test_the_pager_needs_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError):
        run_pager(Settings(), 0)
    monkeypatch.delenv("PAGER_SECRET", raising=False)
    with pytest.raises(ConfigurationError, match="PAGER_SECRET"):
        run_pager(Settings(), 0, secret_env="PAGER_SECRET")
    with pytest.raises(ConfigurationError):
        Pager([])
    assert build_pager_app(Pager([SECRET])) is not None
