"""The local Apache Kafka broker: KRaft mode, one node or three, run with ``java`` from the official jars.

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

A three-broker cluster (``vitalrisk infra start kafka --brokers 3``, docs/scaling.md): three KRaft
nodes, each a combined broker and controller with a small heap, one quorum of three voters, under
``<state_dir>/kafka/node-N/``. Node ``N`` (1-3) listens on ``P + 2(N-1)`` and its controller on the
port after, where ``P`` is the port of ``VITALS_KAFKA_BOOTSTRAP``'s first server: node 1 takes the
single broker's two ports, nodes 2 and 3 the four after. The cluster creates its topics, the
offsets topic and the transaction state log with replication factor 3 and ``min.insync.replicas``
2 (unless ``VITALS_REPLICATION_FACTOR`` / ``VITALS_MIN_INSYNC_REPLICAS`` say otherwise), so it
keeps taking ``acks=all`` writes with one node down. One node stops and starts alone
(``--node N``). How many nodes there are is decided when the storage is formatted and kept with
it, as ``--secure`` is; the cluster is PLAINTEXT only.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import logging
import os
import secrets
import shutil
import signal
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
from infra.topics import ensure_topics, faust_topics, pipeline_topics
from infra.kafka_tls import BROKER_PRINCIPAL, make_broker_keystore, make_ca
from infra.processes import port_open, read_pid, spawn, tail, terminate, wait_until
from kernel.errors import ConfigurationError
from kernel.kafka_security import kafka_python_options
from kernel.settings import Settings

logger = logging.getLogger(__name__)

KAFKA_VERSION = "4.1.1"
POM = Path(__file__).with_name("kafka") / "pom.xml"
LOG4J_CONFIG = Path(__file__).with_name("kafka") / "log4j2.properties"
START_TIMEOUT_S = 90.0
JVM_HEAP = "-Xmx1g"
#: Heap of each node of the three-broker cluster: three JVMs share the machine with the pipeline.
CLUSTER_JVM_HEAP = "-Xmx384m"
#: Nodes of the local cluster, and the replicas that must hold a record before an acks=all write returns.
CLUSTER_BROKERS = 3
CLUSTER_MIN_INSYNC = 2


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


@dataclass(frozen=True, slots=True)
class KafkaNode:
    """One node of the local broker or cluster: its KRaft id, client and controller ports, files."""

    node_id: int
    port: int
    controller_port: int
    paths: KafkaPaths

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def node_ports(port: int, node_id: int) -> tuple[int, int]:
    """Client and controller port of node ``node_id`` (from 1) when the first node's client port is ``port``.

    >>> [node_ports(19092, n) for n in (1, 2, 3)]
    [(19092, 19093), (19094, 19095), (19096, 19097)]
    """
    first = port + 2 * (node_id - 1)
    return first, first + 1


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
    """Start, stop and inspect the local KRaft broker (one node) or cluster (three) on 127.0.0.1.

    ``secure=True`` asks for a secured broker when the storage is formatted; a broker already
    formatted stays as it was made (:attr:`secured` says which). ``brokers`` (1 or 3) asks for one
    node or the three-broker cluster when the storage is formatted; ``None`` takes what is there
    (one node if nothing is).

    Raises
    ------
    ConfigurationError
        For ``brokers`` other than 1 or 3, or ``secure`` with 3 (the cluster is PLAINTEXT only).
    """

    def __init__(self, settings: Settings, *, secure: bool = False, brokers: int | None = None) -> None:
        self.settings = settings
        self.secure = secure
        self.paths = KafkaPaths(settings.state_dir.resolve() / "kafka")
        self.host, self.port = bootstrap_address(settings)
        if self.host not in ("127.0.0.1", "localhost"):
            raise ValueError(f"the local broker listens on 127.0.0.1 only, not {self.host!r}")
        if brokers not in (None, 1, CLUSTER_BROKERS):
            raise ConfigurationError(f"--brokers must be 1 or {CLUSTER_BROKERS}, got {brokers}")
        if secure and brokers == CLUSTER_BROKERS:
            raise ConfigurationError(f"--secure with --brokers {CLUSTER_BROKERS} is not supported: "
                                     "the local cluster is PLAINTEXT only; the secured broker is one node")
        self.asked_brokers = brokers
        self.brokers = brokers or self.formatted_brokers() or 1
        self.controller_port = self.port + 1
        if self.brokers == 1:
            self.nodes = [KafkaNode(1, self.port, self.controller_port, self.paths)]
        else:
            self.nodes = [KafkaNode(n, *node_ports(self.port, n), KafkaPaths(self.paths.root / f"node-{n}"))
                          for n in range(1, self.brokers + 1)]

    def formatted_brokers(self) -> int | None:
        """How many nodes the storage under ``<state_dir>/kafka`` was formatted for; ``None`` if none yet."""
        if (self.paths.root / "node-1" / "data" / "meta.properties").exists():
            return CLUSTER_BROKERS
        if (self.paths.data / "meta.properties").exists():
            return 1
        return None

    @property
    def bootstrap(self) -> str:
        """Every node's address: what a client of the cluster should bootstrap from (any node may be down)."""
        return ",".join(node.address for node in self.nodes)

    def node(self, node_id: int) -> KafkaNode:
        """The node with KRaft id ``node_id``; a :class:`ConfigurationError` if there is none."""
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise ConfigurationError(f"no Kafka node {node_id}: the local Kafka under {self.paths.root} has "
                                 + (f"nodes 1-{self.brokers}" if self.brokers > 1 else
                                    "one node (start a cluster with `--brokers 3` after `vitalrisk infra clean kafka`)"))

    def ports(self, node_id: int | None = None) -> list[tuple[str, int]]:
        """``(what, port)`` of each port the nodes (or node ``node_id``) listen on."""
        nodes = self.nodes if node_id is None else [self.node(node_id)]
        ports = []
        for n in nodes:
            label = "Kafka" if self.brokers == 1 else f"Kafka node {n.node_id}"
            ports += [(label, n.port), (f"{label}'s controller", n.controller_port)]
        return ports

    def topic_settings(self) -> Settings:
        """The settings topics are created with: on the cluster, RF 3 and min.insync 2 unless set explicitly."""
        if self.brokers == 1:
            return self.settings
        cluster = {"replication_factor": CLUSTER_BROKERS, "min_insync_replicas": CLUSTER_MIN_INSYNC}
        return self.settings.model_copy(update={name: value for name, value in cluster.items()
                                                if name not in self.settings.model_fields_set})

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
        servers = admin_settings.kafka_bootstrap if self.brokers == 1 else self.bootstrap
        return KafkaAdminClient(bootstrap_servers=servers, client_id="vitalrisk-infra",
                                **options, **kafka_python_options(admin_settings))

    def running(self) -> bool:
        """Whether any node is running."""
        return any(read_pid(node.paths.pid) is not None for node in self.nodes)

    def node_up(self, node: KafkaNode) -> bool:
        return read_pid(node.paths.pid) is not None and port_open("127.0.0.1", node.port)

    def healthy(self) -> bool:
        """Whether every node is running and takes connections."""
        return all(self.node_up(node) for node in self.nodes)

    def start(self, node_id: int | None = None) -> None:
        """Start the nodes (or node ``node_id``) not running, wait until they serve, create the topics."""
        formatted = self.formatted_brokers()
        if self.asked_brokers is not None and formatted is not None and formatted != self.asked_brokers:
            shape = "a three-broker cluster" if formatted > 1 else "one node"
            raise ServiceFailed(f"the Kafka storage under {self.paths.root} was formatted as {shape}; delete it "
                                f"with `vitalrisk infra clean kafka` to start --brokers {self.asked_brokers}")
        nodes = self.nodes if node_id is None else [self.node(node_id)]
        if node_id is not None and formatted is None:
            raise ServiceFailed(f"no Kafka storage under {self.paths.root} yet: start the whole cluster first "
                                f"(`vitalrisk infra start kafka --brokers {CLUSTER_BROKERS}`)")
        down = [node for node in nodes if not self.node_up(node)]
        if not down:
            logger.info("kafka already running on %s", ",".join(node.address for node in nodes))
        else:
            self.paths.root.mkdir(parents=True, exist_ok=True)
            classpath = self.classpath()
            if self.secure and formatted and not self.secured:
                raise ServiceFailed(f"the Kafka storage under {self.paths.root} was formatted without --secure; "
                                    "delete it with `vitalrisk infra clean kafka` to start a secured broker")
            if self.secure and not formatted:
                self._make_secrets()
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            for node in down:
                node.paths.root.mkdir(parents=True, exist_ok=True)
                self._write_config(node)
                if not (node.paths.data / "meta.properties").exists():
                    self._format(classpath, node, cluster_id)
            java = _require("java")
            heap = JVM_HEAP if self.brokers == 1 else CLUSTER_JVM_HEAP
            for node in down:
                if read_pid(node.paths.pid) is None:
                    argv = [java, heap, "-XX:+UseG1GC", "-Djava.awt.headless=true",
                            f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
                            "-cp", classpath, "kafka.Kafka", str(node.paths.config)]
                    spawn(argv, log_file=node.paths.log, pid_file=node.paths.pid)
            for node in down:
                what = f"Kafka {KAFKA_VERSION}" + (f" node {node.node_id}" if self.brokers > 1 else "")
                wait_until(functools.partial(self._serves_metadata, node), timeout_s=START_TIMEOUT_S, what=what,
                           log_file=node.paths.log, pid_file=node.paths.pid)
            logger.info("kafka %s started on %s%s", KAFKA_VERSION, ",".join(node.address for node in down),
                        " (SASL_SSL, ACLs)" if self.secured else "")
        if node_id is not None:
            return  # one node back: the topics are the cluster's already
        self.create_topics()
        if self.secured:
            self.apply_acls()

    def stop(self, node_id: int | None = None) -> bool:
        """Stop every node (or node ``node_id``); whether one was running."""
        nodes = self.nodes if node_id is None else [self.node(node_id)]
        if len(nodes) > 1:  # all at once: the last one alone would wait for a quorum that is gone
            for node in nodes:
                pid = read_pid(node.paths.pid)
                if pid is not None:
                    os.kill(pid, signal.SIGTERM)
        stopped = [terminate(node.paths.pid, name="kafka" if self.brokers == 1 else f"kafka node {node.node_id}")
                   for node in nodes]
        return any(stopped)

    def discard_storage(self) -> None:
        """Delete the stopped broker's logs, so the next start formats a fresh cluster.

        For throwaway brokers (the tests'): a log left by a machine that stopped mid-write can
        hold a torn record that makes the broker exit at start.
        """
        if self.running():
            raise ServiceFailed("kafka is running; stop it before discarding its storage")
        shutil.rmtree(self.paths.data, ignore_errors=True)
        shutil.rmtree(self.paths.secure, ignore_errors=True)  # its SCRAM users were in the storage
        for n in range(1, CLUSTER_BROKERS + 1):
            shutil.rmtree(self.paths.root / f"node-{n}", ignore_errors=True)

    def status(self) -> str:
        """One line for the broker; for the cluster, one for it and one per node."""
        state = "healthy" if self.healthy() else ("starting" if self.running() else "stopped")
        if self.brokers == 1:
            secured = " (SASL_SSL + ACLs; `vitalrisk infra credentials kafka --principal NAME`)" if self.secured else ""
            return f"kafka {KAFKA_VERSION} on 127.0.0.1:{self.port}{secured}: {state}"
        up = sum(self.node_up(node) for node in self.nodes)
        if 0 < up < len(self.nodes):
            state = f"degraded ({up} of {len(self.nodes)} nodes up)"
        lines = [f"kafka {KAFKA_VERSION}, {len(self.nodes)} nodes (VITALS_KAFKA_BOOTSTRAP={self.bootstrap}): {state}"]
        for node in self.nodes:
            pid = read_pid(node.paths.pid)
            node_state = "up" if self.node_up(node) else ("starting" if pid is not None else "stopped")
            lines.append(f"  node {node.node_id} on {node.address} (controller {node.controller_port}): {node_state}")
        return "\n".join(lines)

    def apply_acls(self, settings: Settings | None = None) -> int:
        """Create every principal's ACLs for the topics ``settings`` (default: the broker's) name."""
        admin = self._admin()
        try:
            return kafka_acls.apply(admin, settings or self.settings)
        finally:
            admin.close()

    def create_topics(self) -> list[str]:
        """Create the pipeline's topics (:func:`infra.topics.pipeline_topics`); existing ones stay as they are.

        Existing topics, the worker's changelog among them, are checked against the settings
        (:func:`infra.topics.ensure_topics`): returns the warnings; raises
        :class:`~infra.errors.TopicsMismatch` where the pipeline cannot run on one.
        """
        settings = self.topic_settings()
        admin = self._admin()
        try:
            return ensure_topics(admin, pipeline_topics(settings), faust_topics(settings))
        finally:
            admin.close()

    def _serves_metadata(self, node: KafkaNode | None = None) -> bool:
        """Whether ``node`` (default: the first) answers metadata, and with the cluster, is registered in it."""
        node = node or self.nodes[0]
        if not port_open("127.0.0.1", node.port):
            return False
        from kafka.errors import KafkaError

        try:
            admin_settings = self.client_settings()
            admin = KafkaAdminClient(bootstrap_servers=node.address if self.brokers > 1 else
                                     admin_settings.kafka_bootstrap, client_id="vitalrisk-infra",
                                     request_timeout_ms=3000, **kafka_python_options(admin_settings))
        except KafkaError:
            return False
        try:
            admin.list_topics()
            return self.brokers == 1 or node.node_id in {b["broker_id"] for b in admin.describe_cluster()["brokers"]}
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

    def _security_config(self, node: KafkaNode) -> dict[str, str]:
        """The listeners of a plaintext broker, or of a secured one with its TLS, SASL and authorizer."""
        p, c = node.port, node.controller_port
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

    def _write_config(self, node: KafkaNode) -> None:
        # The single node: replication factor 1 everywhere. The cluster: 3, and 2 in sync, for the
        # broker's own topics (offsets, transactions) and as the default of any other.
        rf, isr = ("1", "1") if self.brokers == 1 else (str(CLUSTER_BROKERS), str(CLUSTER_MIN_INSYNC))
        lines = {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            "controller.quorum.voters": ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes),
            "controller.listener.names": "CONTROLLER",
            "log.dirs": str(node.paths.data),
            "num.partitions": str(self.settings.partitions),
            "offsets.topic.replication.factor": rf,
            "offsets.topic.num.partitions": "6",
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": isr,
            "share.coordinator.state.topic.replication.factor": rf,
            "share.coordinator.state.topic.min.isr": isr,
            **({} if self.brokers == 1 else {"default.replication.factor": rf, "min.insync.replicas": isr}),
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "true",
            # Simulated streams carry event-time record timestamps months in the past; time-based
            # retention would delete them while they are being read. Keep data by size only.
            "log.retention.ms": "-1",
            "log.retention.bytes": str(2 * 1024**3),
            **self._security_config(node),
        }
        config = node.paths.config
        config.touch(mode=0o600)  # a secured broker's holds the admin's and the stores' passwords
        config.chmod(0o600)
        config.write_text(properties_text(lines))

    def _format(self, classpath: str, node: KafkaNode, cluster_id: str) -> None:
        """Format ``node``'s storage for cluster ``cluster_id`` (the same for every node formatted together)."""
        if self.brokers > 1:  # a node formatted alone (its storage lost) joins the others' cluster
            for other in self.nodes:
                meta = other.paths.data / "meta.properties"
                if other is not node and meta.exists():
                    cluster_id = _cluster_id(meta) or cluster_id
                    break
        # `=` joins the id to its option: an id may start with "-", which would read as an option
        argv = [_require("java"), f"-Dlog4j2.configurationFile={LOG4J_CONFIG}", "-cp", classpath,
                "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c", str(node.paths.config),
                "--ignore-formatted"]
        if self.secured:  # SCRAM users are metadata: a KRaft broker gets its first ones at format time
            argv += scram_format_args({name: password for name, password in self.credentials().items()
                                       if name != "stores"})
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            raise ServiceFailed(f"formatting Kafka storage failed:\n{done.stdout}{done.stderr}")


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise ToolMissing(f"{tool} is not installed; the local Kafka broker needs Java 17 and Maven")
    return path


__all__ = ["KAFKA_VERSION", "KafkaNode", "LocalKafka", "bootstrap_address", "node_ports", "tail"]


def _cluster_id(meta: Path) -> str | None:
    """The ``cluster.id`` a node's ``meta.properties`` records."""
    for line in meta.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "cluster.id":
            return value.strip()
    return None


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
