"""A real ``vitalrisk gateway`` process on the session's broker and PostgreSQL, and devices enrolled through the CLI."""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition

from infra.processes import child_env, free_port
from infra.serving import gateway_listener
from kernel.settings import Settings
from sinks.metrics import scrape
from tests.conftest import ROOT, TEST_PG_PORT

START_MS = 1_767_571_200_000


def gateway_settings(isolated: Settings, **overrides: Any) -> Settings:
    """``isolated`` with the gateway's role on the test's own database and a free port."""
    dbname = isolated.database_url.rsplit("/", 1)[1]
    return isolated.model_copy(update={
        "gateway_port": free_port(),
        "gateway_database_url": f"postgresql://vitalrisk_gateway@127.0.0.1:{TEST_PG_PORT}/{dbname}",
        **overrides})


def vitalrisk(settings: Settings, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run one ``vitalrisk`` command with ``settings`` (the migrator's URL is VITALS_ADMIN_DATABASE_URL)."""
    return subprocess.run([sys.executable, "-m", "stream.cli", *args], cwd=ROOT,
                          env={**child_env(settings), **(env or {})}, capture_output=True, text=True, timeout=120)


def enroll(settings: Settings, patient: str, device: str) -> str:
    done = vitalrisk(settings, "devices", "enroll", "--patient", patient, "--device", device)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: Any


@dataclass
class GatewayProcess:
    """A running gateway and how to talk to it."""

    proc: subprocess.Popen[bytes]
    settings: Settings
    log: Path
    base: str = field(init=False)

    def __post_init__(self) -> None:
        self.base = gateway_listener(self.settings).url  # https:// with VITALS_GATEWAY_TLS_CERT_FILE

    def post(self, body: bytes, token: str | None, *, path: str = "/v1/uploads",
             headers: dict[str, str] | None = None) -> Answer:
        sent = {"Content-Type": "application/json", **(headers or {})}
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(self.base + path, data=body, headers=sent, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return Answer(response.status, dict(response.headers), json.loads(response.read()))
        except urllib.error.HTTPError as exc:
            text = exc.read()
            return Answer(exc.code, dict(exc.headers), json.loads(text) if text else None)

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        return scrape(self.base + "/metrics", name, labels)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture
def start_gateway(tmp_path: Path) -> Iterator[Callable[[Settings], GatewayProcess]]:
    running: list[GatewayProcess] = []

    def start(settings: Settings) -> GatewayProcess:
        log = tmp_path / f"gateway-{len(running)}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "stream.cli", "gateway"], cwd=ROOT,
                                    env=child_env(settings), stdout=out, stderr=subprocess.STDOUT)
        gateway = GatewayProcess(proc, settings, log)
        tls = ssl.create_default_context(cafile=settings.gateway_ca_file) if gateway.base.startswith("https") else None
        running.append(gateway)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"the gateway exited with {proc.returncode}:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(gateway.base + "/healthz", timeout=2, context=tls):
                    return gateway
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"the gateway did not answer in 60 s:\n{log.read_text()}")

    yield start
    for gateway in running:
        if gateway.proc.poll() is None:
            gateway.proc.kill()
            gateway.proc.wait()


def topic_records(settings: Settings, *, timeout_ms: int = 3000) -> list[Any]:
    """Every record on the readings topic (kafka-python ConsumerRecords, headers included)."""
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                             consumer_timeout_ms=timeout_ms, auto_offset_reset="earliest")
    try:
        partitions = [TopicPartition(settings.readings_topic, p)
                      for p in consumer.partitions_for_topic(settings.readings_topic) or ()]
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        return list(consumer)
    finally:
        consumer.close()
