"""The local Apache Kafka broker: KRaft mode, one node, run with ``java`` from the official jars.

The jars are resolved by Maven from ``infra/kafka/pom.xml`` into the local Maven cache; the
classpath Maven prints is cached under the state folder, keyed by the pom's hash, so later starts
need neither the network nor Maven.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from infra.errors import ServiceFailed, ToolMissing
from infra.processes import port_open, read_pid, spawn, tail, terminate, wait_until
from kernel.settings import Settings
from kernel.wire import SNAPSHOT_TOPIC

logger = logging.getLogger(__name__)

KAFKA_VERSION = "4.1.1"
POM = Path(__file__).with_name("kafka") / "pom.xml"
LOG4J_CONFIG = Path(__file__).with_name("kafka") / "log4j2.properties"
START_TIMEOUT_S = 90.0
JVM_HEAP = "-Xmx1g"


@dataclass(frozen=True, slots=True)
class KafkaPaths:
    """Where the local broker keeps its files, under ``<state_dir>/kafka``."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def config(self) -> Path:
        return self.root / "server.properties"

    @property
    def classpath(self) -> Path:
        return self.root / "classpath.txt"

    @property
    def pid(self) -> Path:
        return self.root / "pid"

    @property
    def log(self) -> Path:
        return self.root / "broker.log"


def bootstrap_address(settings: Settings) -> tuple[str, int]:
    """Host and port of the first bootstrap server.

    >>> bootstrap_address(Settings(kafka_bootstrap="127.0.0.1:19092,other:9092"))
    ('127.0.0.1', 19092)
    """
    host, _, port = settings.kafka_bootstrap.split(",")[0].rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"kafka_bootstrap must be host:port, got {settings.kafka_bootstrap!r}")
    return host, int(port)


class LocalKafka:
    """Start, stop and inspect the one-node KRaft broker on 127.0.0.1."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.paths = KafkaPaths(settings.state_dir.resolve() / "kafka")
        self.host, self.port = bootstrap_address(settings)
        if self.host not in ("127.0.0.1", "localhost"):
            raise ValueError(f"the local broker listens on 127.0.0.1 only, not {self.host!r}")
        self.controller_port = self.port + 1

    def running(self) -> bool:
        return read_pid(self.paths.pid) is not None

    def healthy(self) -> bool:
        return self.running() and port_open("127.0.0.1", self.port)

    def start(self) -> None:
        """Start the broker if it is not running, wait until it serves, create the topics."""
        if self.healthy():
            logger.info("kafka already running on 127.0.0.1:%d", self.port)
        else:
            self.paths.root.mkdir(parents=True, exist_ok=True)
            classpath = self.classpath()
            self._write_config()
            if not (self.paths.data / "meta.properties").exists():
                self._format(classpath)
            java = _require("java")
            argv = [java, JVM_HEAP, "-XX:+UseG1GC", "-Djava.awt.headless=true",
                    f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
                    "-cp", classpath, "kafka.Kafka", str(self.paths.config)]
            spawn(argv, log_file=self.paths.log, pid_file=self.paths.pid)
            wait_until(self._serves_metadata, timeout_s=START_TIMEOUT_S, what=f"Kafka {KAFKA_VERSION}",
                       log_file=self.paths.log, pid_file=self.paths.pid)
            logger.info("kafka %s started on 127.0.0.1:%d", KAFKA_VERSION, self.port)
        self.create_topics()

    def stop(self) -> bool:
        return terminate(self.paths.pid, name="kafka")

    def discard_storage(self) -> None:
        """Delete the stopped broker's logs, so the next start formats a fresh cluster.

        For throwaway brokers (the tests'): a log left by a machine that stopped mid-write can
        hold a torn record that makes the broker exit at start.
        """
        if self.running():
            raise ServiceFailed("kafka is running; stop it before discarding its storage")
        shutil.rmtree(self.paths.data, ignore_errors=True)

    def status(self) -> str:
        state = "healthy" if self.healthy() else ("starting" if self.running() else "stopped")
        return f"kafka {KAFKA_VERSION} on 127.0.0.1:{self.port}: {state}"

    def create_topics(self) -> None:
        """Create the pipeline's topics with ``settings.partitions`` partitions; existing ones stay.

        The model snapshots' topic has one partition, compacted: its newest record per model
        name is what every scorer and a restarted trainer start from. The readings topic stamps
        each record with the broker's time (``LogAppendTime``): the worker bounds event time by
        it, so a sender cannot move a watermark ahead by forging its record time.
        """
        from kafka.admin import KafkaAdminClient, NewTopic
        from kafka.errors import TopicAlreadyExistsError

        s = self.settings
        admin = KafkaAdminClient(bootstrap_servers=s.kafka_bootstrap, client_id="vitalrisk-infra")
        try:
            existing = set(admin.list_topics())
            wanted = [s.readings_topic, s.deadletter_topic, s.outcomes_topic, s.scores_topic, s.features_topic]
            new = [NewTopic(t, num_partitions=s.partitions, replication_factor=1,
                            topic_configs={"retention.ms": "-1", **_timestamps(t, s)})
                   for t in wanted if t not in existing]
            if s.snapshots_topic not in existing:
                new.append(NewTopic(s.snapshots_topic, **SNAPSHOT_TOPIC))
            if s.patients_topic not in existing:  # the latest record per patient is what counts
                new.append(NewTopic(s.patients_topic, num_partitions=s.partitions, replication_factor=1,
                                    topic_configs={"cleanup.policy": "compact", "retention.ms": "-1"}))
            if new:
                try:
                    admin.create_topics(new)
                except TopicAlreadyExistsError:
                    pass
        finally:
            admin.close()

    def _serves_metadata(self) -> bool:
        if not port_open("127.0.0.1", self.port):
            return False
        from kafka.admin import KafkaAdminClient
        from kafka.errors import KafkaError

        try:
            admin = KafkaAdminClient(bootstrap_servers=self.settings.kafka_bootstrap,
                                     request_timeout_ms=3000, client_id="vitalrisk-infra")
        except KafkaError:
            return False
        try:
            admin.list_topics()
            return True
        except KafkaError:
            return False
        finally:
            admin.close()

    def classpath(self) -> str:
        """The broker's classpath, resolved by Maven once per version of the pom."""
        digest = hashlib.sha256(POM.read_bytes()).hexdigest()[:16]
        cached = self.paths.classpath
        stamp = cached.with_suffix(".sha")
        if cached.exists() and stamp.exists() and stamp.read_text() == digest:
            classpath = cached.read_text().strip()
            if all(Path(jar).exists() for jar in classpath.split(":")):
                return classpath
        mvn = _require("mvn")
        argv = [mvn, "-q", "-B", "-f", str(POM), "dependency:build-classpath",
                f"-Dmdep.outputFile={cached}"]
        logger.info("resolving the Kafka %s jars with Maven", KAFKA_VERSION)
        offline = subprocess.run([*argv, "-o"], capture_output=True, text=True)
        if offline.returncode != 0:
            online = subprocess.run(argv, capture_output=True, text=True)
            if online.returncode != 0:
                raise ServiceFailed(f"Maven could not resolve the Kafka jars:\n{online.stdout[-3000:]}")
        stamp.write_text(digest)
        return cached.read_text().strip()

    def _write_config(self) -> None:
        p = self.port
        c = self.controller_port
        lines = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{c}",
            "listeners": f"PLAINTEXT://127.0.0.1:{p},CONTROLLER://127.0.0.1:{c}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{p}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.paths.data),
            "num.partitions": str(self.settings.partitions),
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "6",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "true",
            # Simulated streams carry event-time record timestamps months in the past; time-based
            # retention would delete them while they are being read. Keep data by size only.
            "log.retention.ms": "-1",
            "log.retention.bytes": str(2 * 1024**3),
        }
        self.paths.config.write_text("".join(f"{k}={v}\n" for k, v in lines.items()))

    def _format(self, classpath: str) -> None:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        argv = [_require("java"), f"-Dlog4j2.configurationFile={LOG4J_CONFIG}", "-cp", classpath,
                "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(self.paths.config),
                "--ignore-formatted"]
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            raise ServiceFailed(f"formatting Kafka storage failed:\n{done.stdout}{done.stderr}")


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise ToolMissing(f"{tool} is not installed; the local Kafka broker needs Java 17 and Maven")
    return path


__all__ = ["KAFKA_VERSION", "LocalKafka", "bootstrap_address", "tail"]


def _timestamps(topic: str, settings: Settings) -> dict[str, str]:
    """Topic configs for record times: the broker's own on the readings topic, senders' elsewhere.

    >>> _timestamps("vitals.readings", Settings()), _timestamps("risk.scores", Settings())
    ({'message.timestamp.type': 'LogAppendTime'}, {})
    """
    return {"message.timestamp.type": "LogAppendTime"} if topic == settings.readings_topic else {}


def _resolve_jars() -> int:
    """``python -m infra.kafka``: fetch the broker's jars into the Maven cache (set-up step)."""
    try:
        classpath = LocalKafka(Settings()).classpath()
    except (ServiceFailed, ToolMissing) as exc:
        print(f"setup: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    print(f"setup: Kafka {KAFKA_VERSION} jars ready ({len(classpath.split(':'))} jars in the local Maven cache)")
    return 0


if __name__ == "__main__":
    sys.exit(_resolve_jars())
