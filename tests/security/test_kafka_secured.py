"""On the real secured broker (SASL_SSL, SCRAM, ACLs): strangers are refused, each service principal stays
within its ACLs, and the pipeline runs with every process as its own principal.

The broker is the ``secure_kafka`` session fixture's; the tests' topics and ACLs are made by
``secure_isolated``.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from itertools import groupby
from pathlib import Path

import psycopg
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import GroupAuthorizationFailedError, TopicAuthorizationFailedError
from pydantic import SecretStr

from infra.kafka import LocalKafka
from infra.processes import child_env
from kernel.kafka_security import kafka_python_options
from kernel.settings import READER_ROLE, Settings, with_default_role
from simulators.cohort import CohortConfig, population, simulate
from simulators.deterioration import Incidence
from simulators.kafka_publisher import make_producer, publish, publish_patients
from tests.alerts.conftest import AlertingStack, free_port, read_jsonl, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
HOUR_MS = 3_600_000


def as_(settings: Settings, principal: str) -> Settings:
    return LocalKafka(settings).client_settings(principal)


def check(settings: Settings, **env: str) -> subprocess.CompletedProcess[str]:
    """``vitalrisk infra check kafka`` with ``settings`` and ``env`` on top (a value ``""`` unsets)."""
    variables = child_env(settings, **env)
    variables = {k: v for k, v in variables.items() if v != ""}
    return subprocess.run([sys.executable, "-m", "stream.cli", "infra", "check", "kafka"], cwd=ROOT, env=variables,
                          capture_output=True, text=True, timeout=60)


def test_a_principal_with_its_credentials_is_let_in(secure_isolated: Settings) -> None:
    done = check(as_(secure_isolated, "worker"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"kafka at {secure_isolated.kafka_bootstrap}: answers (SASL_SSL as worker)"


@pytest.mark.parametrize("env,says", [
    ({}, "a secured broker closes PLAINTEXT clients: set VITALS_KAFKA_SECURITY_PROTOCOL"),
    ({"VITALS_KAFKA_PASSWORD": "not-the-password"}, "refused worker's login"),
    ({"VITALS_KAFKA_CA_FILE": ""}, "has a certificate this client does not trust"),
], ids=["no-credentials", "wrong-password", "untrusted-ca"])
def test_a_stranger_is_refused_in_one_line(secure_isolated: Settings, env: dict[str, str], says: str) -> None:
    worker = as_(secure_isolated, "worker")
    settings = secure_isolated if not env else worker
    done = check(settings, **env)
    assert done.returncode == 1, done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vitalrisk: ") and says in lines[0], done.stderr
    assert worker.kafka_password is not None and worker.kafka_password.get_secret_value() not in done.stderr


def _producer(settings: Settings) -> KafkaProducer:
    return KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", max_block_ms=10_000,
                         **kafka_python_options(settings))


def _write(settings: Settings, topic: str) -> None:
    producer = _producer(settings)
    try:
        producer.send(topic, key=b"pt-acl", value=b"{}").get(timeout=15)
    finally:
        producer.close()


def _read(settings: Settings, topic: str, *, group: str | None = None) -> None:
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=group, enable_auto_commit=False,
                             consumer_timeout_ms=3000, **kafka_python_options(settings))
    try:
        if group is None:  # kafka-python logs, not raises, a topic it may not describe: ask for its offsets
            tp = TopicPartition(topic, 0)
            consumer.end_offsets([tp])
            consumer.assign([tp])
            consumer.seek_to_beginning()
        else:
            consumer.subscribe([topic])
        for _ in range(3):  # a fetch the broker refuses raises on a later poll
            consumer.poll(timeout_ms=1000)
    finally:
        consumer.close()


@pytest.mark.parametrize("principal,action,topic", [
    ("worker", _write, "snapshots_topic"),  # only the trainer writes model snapshots
    ("device", _read, "scores_topic"),
    ("gateway", _read, "readings_topic"),  # writes readings, never reads them
    ("alerter", _write, "features_topic"),
    ("alerter", _write, "scores_topic"),  # forged scores would page
    ("simulator", _write, "scores_topic"),
    ("trainer", _write, "readings_topic"),
])
def test_each_principal_is_refused_outside_its_acls(secure_isolated: Settings, principal: str,
                                                    action: Callable[..., None], topic: str) -> None:
    with pytest.raises(TopicAuthorizationFailedError):
        action(as_(secure_isolated, principal), getattr(secure_isolated, topic))


def test_a_principal_may_not_join_another_services_group(secure_isolated: Settings) -> None:
    with pytest.raises(GroupAuthorizationFailedError):
        _read(as_(secure_isolated, "trainer"), secure_isolated.features_topic, group=secure_isolated.app_id)


def test_each_principal_may_do_what_its_acls_grant(secure_isolated: Settings) -> None:
    s = secure_isolated
    _write(as_(s, "device"), s.readings_topic)
    _write(as_(s, "gateway"), s.readings_topic)
    _write(as_(s, "worker"), s.features_topic)
    _write(as_(s, "trainer"), s.snapshots_topic)
    _read(as_(s, "alerter"), s.scores_topic)
    _read(as_(s, "trainer"), s.features_topic)


def _count(settings: Settings, sql: str) -> int:
    with psycopg.connect(with_default_role(settings.database_url, READER_ROLE)) as conn:
        row = conn.execute(sql).fetchone()
    return int(row[0]) if row else 0


@pytest.mark.timeout(420)
def test_the_pipeline_runs_secured_with_one_principal_per_process(secure_isolated: Settings, secured_db: str,
                                                                  start_worker, start_trainer, tmp_path: Path) -> None:
    """simulator -> worker -> trainer -> worker's model scores -> alerter -> signed page, each its own Kafka
    principal over SASL_SSL, and its own database role over TLS (verify-full, SCRAM)."""
    settings = secure_isolated.model_copy(update={
        "snapshot_key": SecretStr("k" * 40), "label_horizon_ms": 30 * 60_000, "outcome_grace_ms": 0,
        "snapshot_every": 150, "snapshot_every_ms": 30 * 60_000,
        "database_url": secured_db, "admin_database_url": None})
    assert "sslmode=verify-full" in secured_db
    config = CohortConfig(patients=20, seed=11, duration_ms=4 * HOUR_MS, incidence=Incidence().scaled(300.0))
    hours = {h: list(m) for h, m in groupby(simulate(config), key=lambda m: (m.sent_ms - config.start_ms) // HOUR_MS)}
    simulator = as_(settings, "simulator")
    producer = make_producer(simulator)
    publish_patients(population(config), settings=simulator, producer=producer)
    for h in (0, 1, 2):
        publish(hours.get(h, []), settings=simulator, producer=producer)

    pager_port = free_port()
    alerting = AlertingStack(as_(settings, "alerter").model_copy(update={
        "alerter_port": free_port(), "metrics_port": free_port(), "alert_data_stopped_s": 0.0,
        "webhook_receivers": f"pager=http://127.0.0.1:{pager_port}/webhook", "webhook_backoff_s": 0.2}),
        pager_port, tmp_path / "pages.jsonl", tmp_path, [])
    try:
        pager = alerting.start_pager()
        alerter = alerting.start_alerter()
        worker = start_worker(as_(settings, "worker"))
        start_trainer(as_(settings, "trainer"))
        wait_for("a snapshot in the registry", lambda: _count(settings, "SELECT count(*) FROM model_registry"),
                 timeout_s=180, procs=(pager, alerter), every_s=1.0)
        publish(hours.get(3, []), settings=simulator, producer=producer)
        wait_for("scores by the trained model", lambda: _count(
            settings, "SELECT count(*) FROM risk_scores WHERE model_name = 'risk-logreg'"), timeout_s=120,
            procs=(pager, alerter), every_s=1.0)
        assert worker.proc.poll() is None
        pages = wait_for("a signed page", lambda: read_jsonl(alerting.record), timeout_s=120, procs=(pager, alerter))
        assert pages[0]["body"]["alerts"], "the pager records only pages whose signature it verified"
    finally:
        producer.close()
        for proc in alerting.running:
            proc.stop()
