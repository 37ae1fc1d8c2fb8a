"""The local Apache Kafka broker: KRaft mode, one node, run with ``java`` from the official jars.

The jars are resolved by Maven from ``infra/kafka/pom.xml`` into the local Maven cache; the
classpath Maven prints is cached under the state folder, keyed by the pom's hash, so later starts
need neither the network nor Maven.

Secured (``vitalrisk infra start kafka --secure``, docs/security-kafka.md): the client listener is
SASL_SSL (SCRAM-SHA-512 or -256) with a certificate from a throwaway CA (:mod:`infra.kafka_tls`),
one SCRAM user per service principal created when the storage is formatted, the KRaft
``StandardAuthorizer`` and the ACLs of :mod:`infra.kafka_acls`, applied at every start. The
controller listener, on 127.0.0.1 too, is TLS with client certificates: only the broker's own
key opens it. Whether a broker is secured is decided when its storage is formatted and kept with
it (``<state_dir>/kafka/secure/``); the principals' passwords are there, mode 0600.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from kafka.admin import KafkaAdminClient

from pydantic import SecretStr

from infra import kafka_acls
from infra.kafka_config import SCRAM_MECHANISMS, BrokerTLS, properties_text, scram_format_args, secured_properties
from infra.errors import ServiceFailed, ToolMissing
from infra.kafka_tls import BROKER_PRINCIPAL, make_broker_keystore, make_ca
from infra.processes import port_open, read_pid, spawn, tail, terminate, wait_until
from kernel.kafka_security import kafka_python_options
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

    @property
    def secure(self) -> Path:
        """The secured broker's TLS stores, CA and principals' passwords (mode 0700)."""
        return self.root / "secure"

    @property
    def credentials(self) -> Path:
        return self.secure / "credentials.json"

    @property
    def ca(self) -> Path:
        """The CA's certificate: ``VITALS_KAFKA_CA_FILE`` for the secured broker's clients."""
        return self.secure / "ca.pem"


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
    """Start, stop and inspect the one-node KRaft broker on 127.0.0.1.

    ``secure=True`` asks for a secured broker when the storage is formatted; a broker already
    formatted stays as it was made (:attr:`secured` says which).
    """

    def __init__(self, settings: Settings, *, secure: bool = False) -> None:
        self.settings = settings
        self.secure = secure
        self.paths = KafkaPaths(settings.state_dir.resolve() / "kafka")
        self.host, self.port = bootstrap_address(settings)
        if self.host not in ("127.0.0.1", "localhost"):
            raise ValueError(f"the local broker listens on 127.0.0.1 only, not {self.host!r}")
        self.controller_port = self.port + 1

    @property
    def secured(self) -> bool:
        """Whether the broker's storage was formatted secured (SASL_SSL, SCRAM users, ACLs)."""
        return self.paths.credentials.exists()

    def credentials(self) -> dict[str, str]:
        """Each principal's SCRAM password, and the TLS stores' (``"stores"``)."""
        if not self.secured:
            raise ServiceFailed(f"the Kafka broker under {self.paths.root} is not secured; start it with "
                                "`vitalrisk infra start kafka --secure` (after `vitalrisk infra clean kafka`)")
        loaded: dict[str, str] = json.loads(self.paths.credentials.read_text())
        return loaded

    def client_settings(self, principal: str = kafka_acls.ADMIN) -> Settings:
        """``settings`` as ``principal`` on this broker: SASL_SSL, its password, the CA; unchanged if not secured."""
        if not self.secured:
            return self.settings
        if principal not in kafka_acls.PRINCIPALS and principal != kafka_acls.ADMIN:
            raise ValueError(f"no Kafka principal {principal!r}; the principals are: "
                             f"{', '.join([kafka_acls.ADMIN, *kafka_acls.PRINCIPALS])}")
        return self.settings.model_copy(update={
            "kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": SCRAM_MECHANISMS[0],
            "kafka_username": principal, "kafka_password": SecretStr(self.credentials()[principal]),
            "kafka_ca_file": self.paths.ca, "kafka_cert_file": None, "kafka_key_file": None,
            "kafka_check_hostname": True})

    def client_env(self, principal: str) -> dict[str, str]:
        """The ``VITALS_KAFKA_*`` variables a process needs to connect as ``principal``."""
        s = self.client_settings(principal)
        return {name: value for name, value in s.as_env().items()
                if name.startswith("VITALS_KAFKA_") and name != "VITALS_KAFKA_BOOTSTRAP"}

    def _admin(self, **options: object) -> KafkaAdminClient:
        admin_settings = self.client_settings()
        return KafkaAdminClient(bootstrap_servers=admin_settings.kafka_bootstrap, client_id="vitalrisk-infra",
                                **options, **kafka_python_options(admin_settings))

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
            formatted = (self.paths.data / "meta.properties").exists()
            if self.secure and formatted and not self.secured:
                raise ServiceFailed(f"the Kafka storage under {self.paths.root} was formatted without --secure; "
                                    "delete it with `vitalrisk infra clean kafka` to start a secured broker")
            if self.secure and not formatted:
                self._make_secrets()
            self._write_config()
            if not formatted:
                self._format(classpath)
            java = _require("java")
            argv = [java, JVM_HEAP, "-XX:+UseG1GC", "-Djava.awt.headless=true",
                    f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
                    "-cp", classpath, "kafka.Kafka", str(self.paths.config)]
            spawn(argv, log_file=self.paths.log, pid_file=self.paths.pid)
            wait_until(self._serves_metadata, timeout_s=START_TIMEOUT_S, what=f"Kafka {KAFKA_VERSION}",
                       log_file=self.paths.log, pid_file=self.paths.pid)
            logger.info("kafka %s started on 127.0.0.1:%d%s", KAFKA_VERSION, self.port,
                        " (SASL_SSL, ACLs)" if self.secured else "")
        self.create_topics()
        if self.secured:
            self.apply_acls()

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
        shutil.rmtree(self.paths.secure, ignore_errors=True)  # its SCRAM users were in the storage

    def status(self) -> str:
        state = "healthy" if self.healthy() else ("starting" if self.running() else "stopped")
        secured = " (SASL_SSL + ACLs; `vitalrisk infra credentials kafka --principal NAME`)" if self.secured else ""
        return f"kafka {KAFKA_VERSION} on 127.0.0.1:{self.port}{secured}: {state}"

    def apply_acls(self, settings: Settings | None = None) -> int:
        """Create every principal's ACLs for the topics ``settings`` (default: the broker's) name."""
        admin = self._admin()
        try:
            return kafka_acls.apply(admin, settings or self.settings)
        finally:
            admin.close()

    def create_topics(self) -> None:
        """Create the pipeline's topics on this broker (:func:`create_topics`)."""
        admin = self._admin()
        try:
            create_topics(admin, self.settings)
        finally:
            admin.close()

    def _serves_metadata(self) -> bool:
        if not port_open("127.0.0.1", self.port):
            return False
        from kafka.errors import KafkaError

        try:
            admin = self._admin(request_timeout_ms=3000)
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

    def _make_secrets(self) -> None:
        """A CA, the broker's keystore and truststore, and a password per principal, under ``secure/``."""
        shutil.rmtree(self.paths.secure, ignore_errors=True)
        logger.info("making a throwaway CA, the broker's certificate and the principals' passwords")
        ca = make_ca(self.paths.secure)
        stores = make_broker_keystore(ca, self.paths.secure)
        passwords = {name: secrets.token_urlsafe(24) for name in (kafka_acls.ADMIN, *kafka_acls.PRINCIPALS)}
        passwords["stores"] = stores.password
        self.paths.credentials.touch(mode=0o600)
        self.paths.credentials.write_text(json.dumps(passwords, indent=1) + "\n")

    def _security_config(self) -> dict[str, str]:
        """The listeners of a plaintext broker, or of a secured one with its TLS, SASL and authorizer."""
        p, c = self.port, self.controller_port
        if not self.secured:
            return {"listeners": f"PLAINTEXT://127.0.0.1:{p},CONTROLLER://127.0.0.1:{c}",
                    "advertised.listeners": f"PLAINTEXT://127.0.0.1:{p}",
                    "inter.broker.listener.name": "PLAINTEXT",
                    "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"}
        passwords = self.credentials()
        secure = self.paths.secure
        tls = BrokerTLS(secure / "broker.p12", secure / "truststore.p12", "PKCS12", passwords["stores"])
        return secured_properties(listen=f"127.0.0.1:{p}", advertise=f"127.0.0.1:{p}", controller=f"127.0.0.1:{c}",
                                  admin_password=passwords[kafka_acls.ADMIN], tls=tls,
                                  broker_principal=BROKER_PRINCIPAL)

    def _write_config(self) -> None:
        c = self.controller_port
        lines = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{c}",
            "controller.listener.names": "CONTROLLER",
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
            **self._security_config(),
        }
        self.paths.config.touch(mode=0o600)  # a secured broker's holds the admin's and the stores' passwords
        self.paths.config.chmod(0o600)
        self.paths.config.write_text(properties_text(lines))

    def _format(self, classpath: str) -> None:
        # `=` joins the id to its option: an id may start with "-", which would read as an option
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        argv = [_require("java"), f"-Dlog4j2.configurationFile={LOG4J_CONFIG}", "-cp", classpath,
                "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c", str(self.paths.config),
                "--ignore-formatted"]
        if self.secured:  # SCRAM users are metadata: a KRaft broker gets its first ones at format time
            argv += scram_format_args({name: password for name, password in self.credentials().items()
                                       if name != "stores"})
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            raise ServiceFailed(f"formatting Kafka storage failed:\n{done.stdout}{done.stderr}")


def create_topics(admin: KafkaAdminClient, settings: Settings) -> None:
    """Create the pipeline's topics with ``settings.partitions`` partitions on ``admin``'s broker; existing ones stay.

    The model snapshots' topic has one partition, compacted: its newest record per model
    name is what every scorer and a restarted trainer start from. The readings topic stamps
    each record with the broker's time (``LogAppendTime``): the worker bounds event time by
    it, so a sender cannot move a watermark ahead by forging its record time.
    """
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    s = settings
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


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise ToolMissing(f"{tool} is not installed; the local Kafka broker needs Java 17 and Maven")
    return path


__all__ = ["KAFKA_VERSION", "LocalKafka", "bootstrap_address", "create_topics", "tail"]


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
