"""infra.serving on the alerter's API: HTTPS from ``VITALS_ALERTER_TLS_CERT_FILE`` and ``_KEY_FILE``, and
plain HTTP refused beyond the loopback address (the gateway's side is tests/gateway/test_tls.py).

``/healthz`` reads no database, so the API is served over a store that is never used.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import cast

import aiohttp
import pytest

from infra.processes import free_port
from infra.serving import alerter_listener
from kernel.errors import ConfigurationError
from kernel.settings import Settings
from sinks.alert_store import AlertStore
from stream.alerts.api import check_exposure, start_api
from tests.gateway.tls import ServerFiles, server_files

TOKEN = "t" * 32


@pytest.fixture
def tls_files(tmp_path: Path) -> ServerFiles:
    return server_files(tmp_path / "tls")


def test_the_alerter_api_serves_https_with_its_certificate(tls_files: ServerFiles,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(alerter_port=free_port(), alerter_api_token=TOKEN, alerter_tls_cert_file=tls_files.cert,
                        alerter_tls_key_file=tls_files.key)
    base = alerter_listener(settings).url

    async def main() -> None:
        runner = await start_api(cast(AlertStore, object()), settings, on_change=lambda: None)
        try:
            async with aiohttp.ClientSession() as session:
                async with session.get(base + "/healthz", ssl=tls_files.client_context()) as answer:
                    assert answer.status == 200 and await answer.json() == {"status": "ok"}
                with pytest.raises(aiohttp.ClientConnectorCertificateError):
                    await session.get(base + "/healthz", ssl=ssl.create_default_context())
                with pytest.raises(aiohttp.ClientError):
                    async with session.get(base.replace("https", "http") + "/healthz") as answer:
                        await answer.read()
        finally:
            await runner.cleanup()

    with caplog.at_level("INFO", logger="stream.alerts.api"):
        asyncio.run(main())
    assert base.startswith("https://") and f"alerter API on {base}" in caplog.text


@pytest.mark.parametrize(("host", "tls", "allowed", "refused"), [
    ("127.0.0.1", False, False, False), ("0.0.0.0", False, False, True), ("10.1.2.3", False, False, True),
    ("0.0.0.0", True, False, False), ("0.0.0.0", False, True, False),
])
def test_the_alerter_api_serves_plain_http_beyond_loopback_only_when_allowed(
        tls_files: ServerFiles, host: str, tls: bool, allowed: bool, refused: bool) -> None:
    files = {"alerter_tls_cert_file": tls_files.cert, "alerter_tls_key_file": tls_files.key} if tls else {}
    settings = Settings(alerter_host=host, alerter_api_token=TOKEN, alerter_allow_plaintext=allowed, **files)
    if refused:
        with pytest.raises(ConfigurationError, match="plain HTTP.*VITALS_ALERTER_ALLOW_PLAINTEXT"):
            check_exposure(settings)
    else:
        check_exposure(settings)
    check_exposure(settings.model_copy(update={"alerter_port": 0}))  # no API, nothing exposed


def test_the_alerter_api_s_tls_files_are_checked_before_it_starts(tls_files: ServerFiles) -> None:
    other = server_files(tls_files.ca.parent / "other")
    settings = Settings(alerter_tls_cert_file=tls_files.cert, alerter_tls_key_file=other.key)
    with pytest.raises(ConfigurationError, match="VITALS_ALERTER_TLS_KEY_FILE=.* is not the key of the certificate"):
        check_exposure(settings)
    with pytest.raises(ValueError, match="VITALS_ALERTER_TLS_KEY_FILE needs VITALS_ALERTER_TLS_CERT_FILE"):
        Settings(alerter_tls_key_file=other.key)
