"""Shared fixtures: the real Kafka broker and PostgreSQL, started once per test session.

Integration tests get their own topics, consumer group and database, so they never see each
other's data. The services run on ports apart from the demo's, under ``.local/test``, and the
session stops what it started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import psycopg
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from infra.postgres import SUPERUSER, LocalPostgres
from infra.processes import child_env, free_port
from sinks.metrics import scrape
from sinks.migrations import migrate
from kernel.settings import DEPRECATED_WRITER_ROLE, TRAINER_ROLE, WORKER_ROLE, Settings, role_url

if TYPE_CHECKING:
    from infra.kafka import LocalKafka

ROOT = Path(__file__).resolve().parent.parent
# Apart from the demo's ports; overridable so two checkouts can run their suites side by side.
TEST_KAFKA = f"127.0.0.1:{os.environ.get('VITALS_TEST_KAFKA_PORT', '29092')}"
TEST_PG_PORT = int(os.environ.get("VITALS_TEST_PG_PORT", "25432"))
#: The secured (TLS + SCRAM) cluster of the TLS tests: a second one, on its own port and state folder.
TEST_PG_TLS_PORT = int(os.environ.get("VITALS_TEST_PG_TLS_PORT", str(TEST_PG_PORT + 1)))
# The secured broker (SASL_SSL + ACLs) of the security tests: its own port, after the plain broker's
# and its controller's (docs/testing.md).
TEST_SECURE_KAFKA = "127.0.0.1:" + os.environ.get("VITALS_TEST_SECURE_KAFKA_PORT",
                                                   str(int(TEST_KAFKA.rpartition(":")[2]) + 2))
# The three-broker cluster of tests/scaleout/test_cluster*.py: node N on this port + 2(N-1), its controller on the
# next (six ports in all; docs/testing.md).
TEST_CLUSTER_KAFKA = "127.0.0.1:" + os.environ.get("VITALS_TEST_CLUSTER_KAFKA_PORT",
                                                    str(int(TEST_KAFKA.rpartition(":")[2]) + 10))


def timescale_usable(admin_url: str) -> bool:
    """Whether the server at ``admin_url`` offers TimescaleDB and has it preloaded."""
    try:
        with psycopg.connect(admin_url, connect_timeout=5) as conn:
            row = conn.execute("SELECT EXISTS (SELECT FROM pg_available_extensions WHERE name = 'timescaledb') "
                               "AND current_setting('shared_preload_libraries') LIKE '%timescaledb%'").fetchone()
            return bool(row and row[0])
    except psycopg.OperationalError:
        return False


def skip_without_timescale(reason: str) -> NoReturn:
    """Skip a TimescaleDB test, or fail it where CI says the extension must be there."""
    if os.environ.get("VITALS_TEST_REQUIRE_TIMESCALE") == "1":
        pytest.fail(f"{reason}, but VITALS_TEST_REQUIRE_TIMESCALE=1: run `make timescaledb`")
    pytest.skip(reason)



def group_offsets(settings: Settings, topic: str, group: str) -> dict[int, tuple[int | None, int]]:
    """Per partition of ``topic``: consumer ``group``'s committed offset (``None`` if none) and the end offset."""
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None)
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        ends = consumer.end_offsets(tps)
        try:
            committed = admin.list_group_offsets(group).get(group, {})
        except KafkaError as exc:  # a fresh broker's coordinator not up yet: nothing committed so far
            if not exc.retriable:
                raise
            committed = {}
        return {tp.partition: (committed[tp].offset if tp in committed and committed[tp].offset >= 0 else None, ends[tp])
                for tp in tps}
    finally:
        admin.close()
        consumer.close()


def committed_to_end(settings: Settings, topic: str, group: str) -> bool:
    """Whether consumer ``group`` has committed every partition of ``topic`` to its end (printing any behind)."""
    behind = {partition: (committed, end) for partition, (committed, end) in group_offsets(settings, topic, group).items()
              if end and (committed is None or committed < end)}
    if behind:
        print(f"{group} committed behind the end of {topic} (partition: (committed, end)):", behind)
    return not behind


def as_service(settings: Settings, role: str) -> Settings:
    """``settings`` for a service process: the tests' URL (the deprecated writer, which may read every table
    the tests check) becomes the service's own role's, as in a deployment. Another user is left as it is."""
    if conninfo_to_dict(settings.database_url).get("user") != DEPRECATED_WRITER_ROLE:
        return settings
    return settings.model_copy(update={"database_url": role_url(settings.database_url, role)})


@dataclass
class Services:
    """Handles on the session's Kafka and PostgreSQL."""

    base: Settings
    superuser_url: str

    def settings(self, **overrides: object) -> Settings:
        return self.base.model_copy(update=overrides)


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    from infra.kafka import LocalKafka
    from infra.postgres import LocalPostgres

    base = Settings(state_dir=ROOT / ".local" / "test", kafka_bootstrap=TEST_KAFKA,
                    database_url=f"postgresql://vitalrisk_writer@127.0.0.1:{TEST_PG_PORT}/vitalrisk",
                    sink_timescale="off")  # plain PostgreSQL unless a test asks for TimescaleDB
    postgres = LocalPostgres(base)
    kafka = LocalKafka(base)
    started = [svc for svc in (postgres, kafka) if not svc.healthy()]
    if kafka in started:
        kafka.stop()  # a broker that is starting or hung: its storage is the tests' to discard
        kafka.discard_storage()  # every test makes its own topics; a stale log only risks a torn record
    postgres.start()
    kafka.start()
    yield Services(base, postgres.superuser_url)
    if os.environ.get("VITALS_KEEP_TEST_SERVICES") != "1":
        for svc in started:
            svc.stop()


@pytest.fixture(scope="session")
def secured_postgres() -> Iterator[LocalPostgres]:
    """A PostgreSQL cluster serving TLS only, with SCRAM passwords (``infra start postgres --secure``), for
    the TLS tests alone; plain PostgreSQL stays the other tests'. Stopped at the end if the session started it."""
    settings = Settings(state_dir=ROOT / ".local" / "test-tls",
                        database_url=f"postgresql://127.0.0.1:{TEST_PG_TLS_PORT}/vitalrisk", sink_timescale="off")
    cluster = LocalPostgres(settings, secure=True, timescale=False)
    started = not cluster.healthy()
    if started:
        cluster.stop()  # a cluster left starting, or stopped: its mode is this fixture's to set
    cluster.start()
    yield cluster
    if started and os.environ.get("VITALS_KEEP_TEST_SERVICES") != "1":
        cluster.stop()


@pytest.fixture
def secured_db(secured_postgres: LocalPostgres) -> Iterator[str]:
    """A migrated database of its own on the secured cluster; yields its ``verify-full`` URL naming no user
    (each service then connects as its own role, with its password from the cluster's passfile)."""
    dbname = f"tls_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(secured_postgres.url(SUPERUSER, "postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    migrate(secured_postgres.url(SUPERUSER, dbname), timescale="off")
    yield secured_postgres.url(None, dbname)
    with psycopg.connect(secured_postgres.url(SUPERUSER, "postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))


@pytest.fixture(scope="session")
def secure_kafka() -> Iterator[LocalKafka]:
    """The secured broker (SASL_SSL, a throwaway CA, one SCRAM user per service, ACLs), started by the tests
    that use it, under ``.local/test-secure``."""
    from infra.kafka import LocalKafka

    base = Settings(state_dir=ROOT / ".local" / "test-secure", kafka_bootstrap=TEST_SECURE_KAFKA)
    kafka = LocalKafka(base, secure=True)
    started = not kafka.healthy()
    if started:
        kafka.stop()
        kafka.discard_storage()  # a fresh CA and fresh passwords every session
    kafka.start()
    yield kafka
    if started and os.environ.get("VITALS_KEEP_TEST_SERVICES") != "1":
        kafka.stop()


@pytest.fixture(scope="session")
def kafka_cluster() -> Iterator[LocalKafka]:
    """The three-broker KRaft cluster (``infra start kafka --brokers 3``), under ``.local/test-cluster``, started by
    the tests that use it (fresh storage each session) and stopped at the end if the session started it."""
    from infra.kafka import LocalKafka

    base = Settings(state_dir=ROOT / ".local" / "test-cluster", kafka_bootstrap=TEST_CLUSTER_KAFKA)
    cluster = LocalKafka(base, brokers=3)
    started = not cluster.healthy()
    if started:
        cluster.stop()
        cluster.discard_storage()
        began = time.monotonic()
        cluster.start()
        print(f"three-broker cluster started in {time.monotonic() - began:.1f} s")
    yield cluster
    if started and os.environ.get("VITALS_KEEP_TEST_SERVICES") != "1":
        cluster.stop()


@pytest.fixture
def secure_isolated(isolated: Settings, secure_kafka: LocalKafka) -> Settings:
    """``isolated``'s topics, group and database on the secured broker, topics made and ACLs granted by its admin.

    The settings carry no credentials: give a process a principal's with
    ``LocalKafka(settings).client_settings("worker")``.
    """
    from infra.kafka import LocalKafka

    settings = isolated.model_copy(update={"state_dir": secure_kafka.settings.state_dir,
                                           "kafka_bootstrap": secure_kafka.settings.kafka_bootstrap})
    broker = LocalKafka(settings)
    broker.create_topics()
    broker.apply_acls()
    return settings


@pytest.fixture
def isolated(services: Services, request: pytest.FixtureRequest) -> Iterator[Settings]:
    """Settings with fresh topics, consumer group and a migrated database of their own.

    Plain PostgreSQL unless parametrized indirectly with a ``VITALS_SINK_TIMESCALE`` mode
    (``@pytest.mark.parametrize("isolated", ["on"], indirect=True)``).
    """
    timescale = getattr(request, "param", services.base.sink_timescale)
    admin = services.superuser_url.rsplit("/", 1)[0] + "/postgres"
    if timescale == "on" and not timescale_usable(admin):
        skip_without_timescale("the test PostgreSQL has no preloaded TimescaleDB")
    from infra.kafka import LocalKafka
    from sinks.migrations import migrate

    tag = uuid.uuid4().hex[:10]
    dbname = f"test_{tag}"
    admin = services.superuser_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    owner_url = f"{admin.rsplit('/', 1)[0]}/{dbname}"
    migrate(owner_url, timescale=timescale)
    settings = services.settings(
        app_id=f"vitalrisk-test-{tag}", readings_topic=f"t{tag}.readings", deadletter_topic=f"t{tag}.deadletter",
        outcomes_topic=f"t{tag}.outcomes", scores_topic=f"t{tag}.scores", features_topic=f"t{tag}.features",
        snapshots_topic=f"t{tag}.snapshots", patients_topic=f"t{tag}.patients",
        database_url=f"postgresql://vitalrisk_writer@127.0.0.1:{TEST_PG_PORT}/{dbname}",
        admin_database_url=owner_url, data_dir=ROOT / ".local" / "test" / f"faust-{tag}",
        idle_timeout_s=2.0, sink_flush_s=0.5, sink_timescale=timescale)
    LocalKafka(settings).create_topics()
    yield settings
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))


@dataclass
class WorkerProcess:
    """A real ``vitalrisk worker`` (or ``trainer``) process with its own metrics port."""

    proc: subprocess.Popen[bytes]
    metrics_port: int
    log: Path

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        """Current value of one sample on the worker's /metrics page (0 when absent)."""
        return scrape(f"http://127.0.0.1:{self.metrics_port}/metrics", name, labels)

    def wait_metric(self, name: str, predicate: Callable[[float], bool], *, timeout_s: float = 60,
                    labels: dict[str, str] | None = None) -> float:
        deadline = time.monotonic() + timeout_s
        value = 0.0
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.proc.args[-1]} exited with {self.proc.returncode}:\n"
                                     f"{self.log.read_text()[-3000:]}")
            try:
                value = self.metric(name, labels)
                if predicate(value):
                    return value
            except OSError:
                pass
            time.sleep(0.25)
        raise AssertionError(f"{name}={value} did not satisfy the condition in {timeout_s} s;\n"
                             f"{self.log.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def _spawner(tmp_path: Path, command: str, role: str) -> Iterator[Callable[[Settings], WorkerProcess]]:
    """Start ``vitalrisk COMMAND`` processes, as database ``role``, with their own metrics ports; SIGKILL
    leftovers at the end."""
    running: list[WorkerProcess] = []

    def start(settings: Settings) -> WorkerProcess:
        port = free_port()
        log = tmp_path / f"{command}-{len(running)}.log"
        env = child_env(as_service(settings, role), VITALS_METRICS_PORT=str(port))
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "stream.cli", command], cwd=ROOT, env=env,
                                    stdout=out, stderr=subprocess.STDOUT)
        started = WorkerProcess(proc, port, log)
        running.append(started)
        return started

    yield start
    for process in running:
        process.stop(signal.SIGKILL)


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[[Settings], WorkerProcess]]:
    yield from _spawner(tmp_path, "worker", WORKER_ROLE)


@pytest.fixture
def start_trainer(tmp_path: Path) -> Iterator[Callable[[Settings], WorkerProcess]]:
    yield from _spawner(tmp_path, "trainer", TRAINER_ROLE)
