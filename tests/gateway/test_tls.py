"""The gateway over HTTPS (``VITALS_GATEWAY_TLS_CERT_FILE`` and ``_KEY_FILE``), with a fake device table and broker.

:func:`gateway.app.serve` itself listens here, as ``vitalrisk gateway`` does, with a ``trustme``
certificate for 127.0.0.1: a client that trusts the CA uploads (aiohttp, and the simulator's
uploader with ``VITALS_GATEWAY_CA_FILE``), one that does not is refused at the handshake, and
plaintext HTTP to the TLS port gets no answer. The settings' errors are one line from the CLI.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import ValidationError
from prometheus_client import CollectorRegistry

from gateway.app import serve
from infra.processes import free_port
from infra.serving import MIN_TLS_VERSION, Listener, gateway_listener, prepare, server_tls
from kernel.errors import ConfigurationError
from kernel.settings import Settings
from kernel.wire import decode_device_message
from simulators.gateway_publisher import GatewayProducer
from stream.cli import bad_settings_line
from tests.conftest import ROOT
from tests.gateway.test_service_app import FakeBroker, FakeDirectory, native
from tests.gateway.tls import ServerFiles, server_files


@pytest.fixture
def tls_files(tmp_path: Path) -> ServerFiles:
    return server_files(tmp_path / "tls")


def tls_settings(files: ServerFiles, **overrides: Any) -> Settings:
    return Settings(gateway_port=free_port(), gateway_tls_cert_file=files.cert, gateway_tls_key_file=files.key,
                    **overrides)


Scenario = Callable[[str, FakeDirectory, FakeBroker], Awaitable[None]]


def serving(settings: Settings, scenario: Scenario) -> None:
    """Run ``serve(settings)`` with fakes until ``scenario(base_url, directory, broker)`` returns."""

    async def main() -> None:
        directory, broker, stop = FakeDirectory(), FakeBroker(), asyncio.Event()
        server = asyncio.create_task(serve(settings, directory=directory, sink=broker, registry=CollectorRegistry(),
                                           stop=stop))
        base = gateway_listener(settings).url
        try:
            for _ in range(100):  # until it listens
                if server.done():
                    server.result()
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", settings.gateway_port)
                    writer.close()
                    break
                except OSError:
                    await asyncio.sleep(0.05)
            await scenario(base, directory, broker)
        finally:
            stop.set()
            await server

    asyncio.run(main())


def test_a_client_with_the_ca_uploads_over_https(tls_files: ServerFiles, caplog: pytest.LogCaptureFixture) -> None:
    settings = tls_settings(tls_files)

    async def scenario(base: str, directory: FakeDirectory, broker: FakeBroker) -> None:
        assert base.startswith("https://127.0.0.1:")
        token = directory.enroll("pt-1", "dev-1").token
        async with aiohttp.ClientSession() as session:
            async with session.post(base + "/v1/uploads", data=native(), ssl=tls_files.client_context(),
                                    headers={"Authorization": f"Bearer {token}",
                                             "Content-Type": "application/json"}) as answer:
                assert answer.status == 202, await answer.text()
        assert [decode_device_message(value).seq for _, value, _ in broker.topic] == [1]

    with caplog.at_level("INFO", logger="gateway.app"):
        serving(settings, scenario)
    assert f"gateway on https://127.0.0.1:{settings.gateway_port}" in caplog.text  # the scheme it serves


def test_the_simulators_uploader_verifies_the_gateway_with_its_ca_file(tls_files: ServerFiles) -> None:
    settings = tls_settings(tls_files)

    async def scenario(base: str, directory: FakeDirectory, broker: FakeBroker) -> None:
        token = directory.enroll("pt-1", "dev-1").token

        def replay(ca_file: Path | None) -> None:
            producer = GatewayProducer(base, token, ca_file=ca_file, give_up_s=5)
            producer.send("vitals.readings", key=b"pt-1", value=native(seq=len(broker.topic) + 1))
            producer.flush()

        await asyncio.to_thread(replay, tls_files.ca)
        assert len(broker.topic) == 1
        # Without the CA the certificate does not verify: one line at once, not two minutes of retries.
        with pytest.raises(ConfigurationError, match="does not verify.*VITALS_GATEWAY_CA_FILE"):
            await asyncio.to_thread(replay, None)
        assert len(broker.topic) == 1

    serving(settings, scenario)


def test_a_client_without_the_ca_is_refused_at_the_handshake(tls_files: ServerFiles) -> None:
    async def scenario(base: str, directory: FakeDirectory, broker: FakeBroker) -> None:
        token = directory.enroll("pt-1", "dev-1").token
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await session.post(base + "/v1/uploads", data=native(), ssl=ssl.create_default_context(),
                                   headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
            another_ca = server_files(tls_files.ca.parent / "other").client_context()
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await session.get(base + "/healthz", ssl=another_ca)
        assert broker.topic == []

    serving(tls_settings(tls_files), scenario)


def test_plaintext_http_to_the_tls_port_gets_no_answer(tls_files: ServerFiles) -> None:
    async def scenario(base: str, directory: FakeDirectory, broker: FakeBroker) -> None:
        token = directory.enroll("pt-1", "dev-1").token
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientError):
                async with session.post(base.replace("https://", "http://") + "/v1/uploads", data=native(),
                                        headers={"Authorization": f"Bearer {token}",
                                                 "Content-Type": "application/json"}) as answer:
                    await answer.read()
        assert broker.topic == []

    serving(tls_settings(tls_files), scenario)


def test_only_tls_1_2_or_later_is_offered(tls_files: ServerFiles) -> None:
    context = server_tls(gateway_listener(tls_settings(tls_files)))
    assert context is not None and context.minimum_version == MIN_TLS_VERSION == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_NONE  # no client certificate asked for (mutual TLS is not offered)


@pytest.mark.parametrize(("host", "tls", "allowed", "refused"), [
    ("127.0.0.1", False, False, False), ("::1", False, False, False), ("localhost", False, False, False),
    ("0.0.0.0", False, False, True), ("10.1.2.3", False, False, True), ("gateway.internal", False, False, True),
    ("0.0.0.0", True, False, False), ("0.0.0.0", False, True, False),
])
def test_plain_http_is_not_served_beyond_loopback_unless_allowed(tls_files: ServerFiles, host: str, tls: bool,
                                                                allowed: bool, refused: bool) -> None:
    settings = Settings(gateway_host=host, gateway_allow_plaintext=allowed,
                        **({"gateway_tls_cert_file": tls_files.cert, "gateway_tls_key_file": tls_files.key}
                           if tls else {}))
    if not refused:
        server_tls(gateway_listener(settings))
        return

    async def never(base: str, directory: FakeDirectory, broker: FakeBroker) -> None:
        raise AssertionError("served")

    with pytest.raises(ConfigurationError, match="plain HTTP on .*VITALS_GATEWAY_ALLOW_PLAINTEXT"):
        serving(settings, never)


# --- the settings' errors, one line from `vitalrisk gateway` --------------------------------


def gateway_cli(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VITALS_")}
    return subprocess.run([sys.executable, "-m", "stream.cli", "gateway"], cwd=ROOT, env={**clean, **env},
                          capture_output=True, text=True, timeout=60, check=False)


def mismatched(files: ServerFiles) -> dict[str, str]:
    other = server_files(files.ca.parent / "other")
    return {"VITALS_GATEWAY_TLS_CERT_FILE": str(files.cert), "VITALS_GATEWAY_TLS_KEY_FILE": str(other.key)}


CASES = [
    pytest.param(lambda f: {"VITALS_GATEWAY_TLS_CERT_FILE": str(f.cert)},
                 ["VITALS_GATEWAY_TLS_CERT_FILE needs VITALS_GATEWAY_TLS_KEY_FILE"], id="cert-alone"),
    pytest.param(lambda f: {"VITALS_GATEWAY_TLS_KEY_FILE": str(f.key)},
                 ["VITALS_GATEWAY_TLS_KEY_FILE needs VITALS_GATEWAY_TLS_CERT_FILE"], id="key-alone"),
    pytest.param(lambda f: {"VITALS_GATEWAY_TLS_CERT_FILE": str(f.cert) + ".gone",
                            "VITALS_GATEWAY_TLS_KEY_FILE": str(f.key)},
                 ["VITALS_GATEWAY_TLS_CERT_FILE", "no such file"], id="cert-missing"),
    pytest.param(mismatched, ["VITALS_GATEWAY_TLS_KEY_FILE=", "is not the key of the certificate"], id="mismatch"),
    pytest.param(lambda f: {"VITALS_GATEWAY_TLS_CERT_FILE": str(f.ca.parent / "not.pem"),
                            "VITALS_GATEWAY_TLS_KEY_FILE": str(f.key)},
                 ["are not a PEM certificate chain"], id="not-pem"),
    pytest.param(lambda f: {"VITALS_GATEWAY_HOST": "0.0.0.0"},
                 ["would serve plain HTTP on 0.0.0.0", "VITALS_GATEWAY_TLS_CERT_FILE"], id="exposed"),
]


def first_error(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    """What ``vitalrisk gateway`` prints for ``env``, in process: the settings, then the serving checks."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    try:
        prepare(gateway_listener(Settings()))
    except ValidationError as exc:
        return f"vitalrisk: {bad_settings_line(exc)}"
    except ConfigurationError as exc:
        return f"vitalrisk: {exc}"
    raise AssertionError("no error")


@pytest.mark.parametrize(("env", "fragments"), CASES)
def test_bad_tls_settings_are_one_line(tls_files: ServerFiles, env: Callable[[ServerFiles], dict[str, str]],
                                       fragments: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    (tls_files.ca.parent / "not.pem").write_text("not a certificate\n")
    line = first_error(env(tls_files), monkeypatch)
    assert "\n" not in line and "PRIVATE KEY" not in line
    for fragment in fragments:
        assert fragment in line, line


@pytest.mark.parametrize("case", ["cert-alone", "mismatch"])
def test_the_cli_prints_the_one_line_and_exits_2(tls_files: ServerFiles, case: str) -> None:
    env, fragments = next(param.values for param in CASES if param.id == case)
    done = gateway_cli(env(tls_files))
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("vitalrisk: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_an_unreadable_file_is_named(tls_files: ServerFiles) -> None:
    folder = Listener("the gateway", "gateway", "127.0.0.1", 1, tls_files.cert, tls_files.ca.parent)
    with pytest.raises(ConfigurationError, match=r"cannot read VITALS_GATEWAY_TLS_KEY_FILE=.*: Is a directory"):
        server_tls(folder)
