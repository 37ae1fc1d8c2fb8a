"""The Compose broker's configuration, run on the real Kafka broker here.

What docker-compose.yml's one-shot services write (``vitalrisk infra compose-certs`` and
``compose-kafka``, :mod:`infra.compose`) is started by the same entrypoint the kafka container runs
(``infra/compose/kafka-start.sh``), with the broker's jars as the local broker runs them, and with
only the listener addresses moved from the compose network to 127.0.0.1. Then ``vitalrisk infra
acls`` makes the topics and ACLs as admin, and clients connect over SASL_SSL as the principals the
services are: let in within their ACLs, refused outside them, and refused with a wrong password.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kafka import KafkaProducer
from kafka.errors import TopicAuthorizationFailedError
from pydantic import SecretStr

from infra.compose import COMPOSE_PRINCIPALS, ca_file, make_certs, write_broker_config
from infra.kafka import LocalKafka
from infra.preflight import require_kafka
from infra.processes import free_port, spawn, terminate, wait_until
from kernel.errors import ServiceUnavailable
from kernel.kafka_security import kafka_python_options
from kernel.settings import Settings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
START_SCRIPT = ROOT / "infra" / "compose" / "kafka-start.sh"
#: The plain session broker's state folder (tests/conftest.py): its cached classpath of the Kafka jars.
SESSION_STATE = ROOT / ".local" / "test"


@dataclass
class ComposeBroker:
    settings: Settings
    passwords: dict[str, str]
    certs: Path

    def as_(self, principal: str, *, password: str | None = None) -> Settings:
        return self.settings.model_copy(update={
            "kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "SCRAM-SHA-512",
            "kafka_username": principal, "kafka_password": SecretStr(password or self.passwords[principal]),
            "kafka_ca_file": ca_file(self.certs)})


def _serves(settings: Settings) -> bool:
    try:
        require_kafka(settings, timeout_s=3)
    except ServiceUnavailable:
        return False
    return True


@pytest.fixture(scope="module")
def compose_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeBroker]:
    root = tmp_path_factory.mktemp("compose-kafka")
    certs, config, data = root / "certs", root / "kafka-config", root / "data"
    assert make_certs(certs, {"kafka": None})
    port, controller = free_port(), free_port()
    passwords = {name: secrets.token_urlsafe(16) for name in ("admin", *COMPOSE_PRINCIPALS)}
    write_broker_config(config, certs=certs, passwords=passwords, partitions=2, data_dir=data,
                        listen=f"127.0.0.1:{port}", advertise=f"localhost:{port}",
                        controller=f"127.0.0.1:{controller}")
    # The image's two tools, as the jars the local broker runs
    classpath = LocalKafka(Settings(state_dir=SESSION_STATE)).classpath()
    bin_dir = root / "bin"
    bin_dir.mkdir()
    for tool, main in (("kafka-storage.sh", "kafka.tools.StorageTool"), ("kafka-server-start.sh", "kafka.Kafka")):
        script = bin_dir / tool
        script.write_text(f'#!/bin/bash\nexec java -Xmx512m -cp "{classpath}" {main} "$@"\n')
        script.chmod(0o755)
    log, pid = root / "broker.log", root / "pid"
    env = {**os.environ, "KAFKA_BIN": str(bin_dir), "VITALRISK_KAFKA_CONFIG_DIR": str(config)}
    spawn(["bash", str(START_SCRIPT)], log_file=log, pid_file=pid, env=env)
    broker = ComposeBroker(Settings(state_dir=root, kafka_bootstrap=f"localhost:{port}", partitions=2),
                           passwords, certs)
    try:
        wait_until(lambda: _serves(broker.as_("admin")), timeout_s=90, what="the compose broker", log_file=log,
                   pid_file=pid)
        yield broker
    finally:
        terminate(pid, name="compose kafka")


def _acls(settings: Settings) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("VITALS_")}
    env |= {name: value for name, value in settings.as_env().items() if name.removeprefix("VITALS_").startswith("KAFKA_")}
    env["VITALS_PARTITIONS"] = str(settings.partitions)
    return subprocess.run([sys.executable, "-m", "stream.cli", "infra", "acls"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=90)


def _send(settings: Settings, topic: str) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", max_block_ms=10_000,
                             **kafka_python_options(settings))
    try:
        producer.send(topic, key=b"pt-compose", value=b"{}").get(timeout=15)
    finally:
        producer.close()


def test_kafka_init_makes_the_topics_and_acls_then_each_principal_is_held_to_them(
        compose_broker: ComposeBroker) -> None:
    done = _acls(compose_broker.as_("admin"))
    assert done.returncode == 0, done.stderr
    assert "topics created" in done.stdout and "ACLs applied" in done.stdout
    assert compose_broker.passwords["admin"] not in done.stdout + done.stderr
    again = _acls(compose_broker.as_("admin"))  # the one-shot service runs at every `up`
    assert again.returncode == 0, again.stderr
    s = compose_broker.settings
    _send(compose_broker.as_("worker"), s.features_topic)
    _send(compose_broker.as_("gateway"), s.readings_topic)
    _send(compose_broker.as_("trainer"), s.snapshots_topic)
    with pytest.raises(TopicAuthorizationFailedError):
        _send(compose_broker.as_("worker"), s.snapshots_topic)  # only the trainer writes snapshots
    with pytest.raises(TopicAuthorizationFailedError):
        _send(compose_broker.as_("simulator"), s.scores_topic)


def test_a_wrong_password_or_a_non_admin_is_refused(compose_broker: ComposeBroker) -> None:
    with pytest.raises(ServiceUnavailable, match="refused worker's login"):
        require_kafka(compose_broker.as_("worker", password="not-the-password"))
    done = _acls(compose_broker.as_("worker"))
    assert done.returncode == 2 and done.stderr.startswith("vitalrisk: ") and "admin" in done.stderr, done.stderr
    assert compose_broker.passwords["worker"] not in done.stderr

