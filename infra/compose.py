"""The Compose stack secured as the local one is: what its one-shot services run (docker-compose.yml).

Three commands, each run by a one-shot service of the vitalrisk image before the services that need
what it makes:

- ``vitalrisk infra compose-certs --out /certs --hosts kafka:1000,timescaledb:70,gateway:10001,alerter:10001``
  (service ``certs``): a CA and, for each host, a key and a certificate the CA signed for that host name,
  ``localhost`` and ``127.0.0.1``, made with ``trustme`` as the local secured PostgreSQL's are.
  The CA's key is never stored, so nothing that mounts the volume can issue a certificate. Each
  host's key is mode 0600 and owned by the user id given after the host (the user its container
  runs as: 1000 is ``appuser`` of the apache/kafka image, 70 ``postgres`` of the Alpine-based
  TimescaleDB image, 10001 ``vitalrisk`` of the project's image, whose ingest gateway and alerter
  API serve HTTPS with theirs); PostgreSQL refuses a key others can read. Host certificates live
  :data:`CERT_VALID_DAYS` days. Idempotent: when the CA and every host's files exist, none expiring
  within :data:`RENEW_DAYS` days, nothing is made; otherwise, or with ``--renew``, a new CA and new
  certificates.
- ``vitalrisk infra compose-kafka --certs /certs --out /kafka-config`` (service ``kafka-config``):
  the broker's ``server.properties`` (SASL_SSL on every interface of its container, the KRaft
  controller on the container's loopback, the ACL authorizer), made by the same
  :func:`infra.kafka_config.secured_properties` the local secured broker runs, and the
  ``kafka-storage format --add-scram`` arguments creating one SCRAM user per principal of
  :data:`COMPOSE_PRINCIPALS` (their passwords from ``VITALS_KAFKA_<PRINCIPAL>_PASSWORD``).
  ``infra/compose/kafka-start.sh`` formats the storage with them once and starts the broker.
- ``vitalrisk infra acls`` (service ``kafka-init``): as ``admin``, over SASL_SSL, on any broker the
  settings name, creates the pipeline's topics and every principal's ACLs (:mod:`infra.kafka_acls`).
"""

from __future__ import annotations

import base64
import datetime
import logging
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from kafka.admin import KafkaAdminClient

from infra import kafka_acls
from infra.errors import ServiceFailed
from infra.topics import ensure_topics, pipeline_topics
from infra.preflight import require_kafka
from infra.kafka_config import BrokerTLS, properties_text, scram_format_args, secured_properties
from kernel.errors import ConfigurationError
from kernel.kafka_security import kafka_python_options
from kernel.settings import Settings

logger = logging.getLogger(__name__)

#: The Kafka principals with a SCRAM user in the Compose stack, besides ``admin``: every principal of
#: :data:`infra.kafka_acls.PRINCIPALS`, the services' and the tools' (``device`` for ``vitalrisk replay``,
#: ``operator`` for ``vitalrisk deadletters``).
COMPOSE_PRINCIPALS = tuple(kafka_acls.PRINCIPALS)
#: The organisation named in the Compose certificates' subjects.
ORGANIZATION = "vitalrisk compose"
#: The broker's client listener (every interface of its container) and controller listener (its loopback).
CLIENT_PORT, CONTROLLER_PORT = 9092, 9093
#: Days a host certificate is valid; one expiring within :data:`RENEW_DAYS` is made again at the next run.
CERT_VALID_DAYS = 730
RENEW_DAYS = 30
#: Retention by size only, per partition: simulated streams carry event-time timestamps far in the past.
LOG_RETENTION_BYTES = 2 * 1024**3


def password_variable(principal: str) -> str:
    """The environment variable holding ``principal``'s SCRAM password in the Compose stack.

    >>> password_variable("worker")
    'VITALS_KAFKA_WORKER_PASSWORD'
    """
    return f"VITALS_KAFKA_{principal.upper()}_PASSWORD"


@dataclass(frozen=True, slots=True)
class HostFiles:
    """One host's TLS files under ``<certs>/<host>/``."""

    folder: Path

    @property
    def key(self) -> Path:
        """The private key, PKCS#8 PEM, mode 0600 (PostgreSQL's ``ssl_key_file``)."""
        return self.folder / "server.key"

    @property
    def cert(self) -> Path:
        """The certificate chain, PEM (PostgreSQL's ``ssl_cert_file``)."""
        return self.folder / "server.crt"

    @property
    def keystore(self) -> Path:
        """The key followed by the chain, mode 0600: Kafka's ``PEM`` key store."""
        return self.folder / "server.pem"


def ca_file(certs: Path) -> Path:
    """The CA every client verifies against: ``VITALS_KAFKA_CA_FILE``, ``sslrootcert``, Grafana's root cert."""
    return certs / "ca.pem"


def host_files(certs: Path, host: str) -> HostFiles:
    return HostFiles(certs / host)


def parse_hosts(text: str) -> dict[str, int | None]:
    """``host[:uid],host[:uid]``: the hosts to certify and who owns each one's key (``None``: this process).

    >>> parse_hosts("kafka:1000,timescaledb:70,grafana")
    {'kafka': 1000, 'timescaledb': 70, 'grafana': None}
    """
    hosts: dict[str, int | None] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        host, _, uid = item.partition(":")
        if not host.replace("-", "").replace(".", "").isalnum() or (uid and not uid.isdigit()):
            raise ValueError(f"expected host[:uid],host[:uid], e.g. kafka:1000,timescaledb:70; got {item!r}")
        hosts[host] = int(uid) if uid else None
    if not hosts:
        raise ValueError("name at least one host, e.g. --hosts kafka:1000,timescaledb:70")
    return hosts


def make_certs(out: Path, hosts: Mapping[str, int | None], *, renew: bool = False) -> bool:
    """A CA and each host's key and certificate under ``out``; ``False`` if they all exist (and not ``renew``).

    The CA's certificate is written last: its presence says the set is complete.

    Raises
    ------
    ServiceFailed
        If a key cannot be given to its owner (only root, or the owner itself, can).
    """
    if not renew and ca_file(out).exists() and all(
            (f.key.exists() and f.cert.exists() and f.keystore.exists() and not _expiring(f.cert))
            for f in (host_files(out, host) for host in hosts)):
        logger.info("the CA and the certificates of %s exist under %s: kept", ", ".join(hosts), out)
        return False
    out.mkdir(parents=True, exist_ok=True)
    ca_file(out).unlink(missing_ok=True)
    ca = trustme.CA(organization_name=ORGANIZATION, organization_unit_name="certificate authority")
    for host, uid in hosts.items():
        files = host_files(out, host)
        files.folder.mkdir(exist_ok=True)
        files.folder.chmod(0o755)
        leaf = ca.issue_cert(host, "localhost", "127.0.0.1", common_name=host, organization_name=ORGANIZATION,
                             organization_unit_name=host, not_after=_now() + datetime.timedelta(days=CERT_VALID_DAYS))
        key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), password=None).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        chain = b"".join(pem.bytes() for pem in leaf.cert_chain_pems)
        _write(files.key, key, mode=0o600, uid=uid)
        _write(files.keystore, key + chain, mode=0o600, uid=uid)
        _write(files.cert, chain, mode=0o644, uid=uid)
    _write(ca_file(out), ca.cert_pem.bytes(), mode=0o644, uid=None)
    logger.info("made a CA (%s) and certificates for %s", ca_file(out), ", ".join(hosts))
    return True


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _expiring(cert: Path) -> bool:
    """Whether ``cert`` expires within :data:`RENEW_DAYS` (or cannot be read)."""
    try:
        expires = x509.load_pem_x509_certificate(cert.read_bytes()).not_valid_after_utc
    except ValueError:
        return True
    return expires - _now() < datetime.timedelta(days=RENEW_DAYS)


def _write(path: Path, data: bytes, *, mode: int, uid: int | None) -> None:
    """Write ``path`` afresh with ``mode``, then give it to ``uid`` (its group too)."""
    path.unlink(missing_ok=True)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb") as handle:
        handle.write(data)
    path.chmod(mode)
    if uid is not None and uid != os.geteuid():
        try:
            os.chown(path, uid, uid)
        except PermissionError:
            raise ServiceFailed(f"cannot give {path} to user {uid}: run as root (with CAP_CHOWN) or as that "
                                "user") from None


def broker_principal(cert: Path) -> str:
    """``User:<subject>`` of the broker's certificate, as Kafka's default principal mapping names it."""
    subject = x509.load_pem_x509_certificate(cert.read_bytes()).subject
    return "User:" + subject.rfc4514_string()


def broker_properties(*, certs: Path, data_dir: Path, admin_password: str, partitions: int, host: str = "kafka",
                      listen: str = f":{CLIENT_PORT}", advertise: str = f"kafka:{CLIENT_PORT}",
                      controller: str = f"127.0.0.1:{CONTROLLER_PORT}") -> dict[str, str]:
    """The Compose broker's ``server.properties``: one KRaft node, secured as the local broker is.

    The client listener is SASL_SSL only: no PLAINTEXT listener at all. The controller listener
    binds the container's own loopback, which no other container can reach (each has its own
    network namespace), and it is TLS with the broker's certificate required of every client.
    """
    files = host_files(certs, host)
    return {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{controller}",
        "controller.listener.names": "CONTROLLER",
        "log.dirs": str(data_dir),
        "num.partitions": str(partitions),
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        # Simulated streams carry event-time record timestamps months in the past; time-based
        # retention would delete them while they are being read. Keep data by size only.
        "log.retention.ms": "-1",
        "log.retention.bytes": str(LOG_RETENTION_BYTES),
        **secured_properties(listen=listen, advertise=advertise, controller=controller,
                             admin_password=admin_password,
                             tls=BrokerTLS(files.keystore, ca_file(certs), "PEM"),
                             broker_principal=broker_principal(files.cert)),
    }


def admin_client_properties(certs: Path, admin_password: str) -> dict[str, str]:
    """A Kafka command-line tool's ``--command-config`` as ``admin`` (the broker's healthcheck)."""
    login = (f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{kafka_acls.ADMIN}" '
             f'password="{admin_password}";')
    return {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "sasl.jaas.config": login,
            "ssl.truststore.type": "PEM", "ssl.truststore.location": str(ca_file(certs))}


@dataclass(frozen=True, slots=True)
class KafkaConfigFiles:
    """What :func:`write_broker_config` writes under ``folder``, the broker's start script reads."""

    folder: Path

    @property
    def properties(self) -> Path:
        return self.folder / "server.properties"

    @property
    def scram_args(self) -> Path:
        """The ``--add-scram`` arguments, one per line."""
        return self.folder / "scram-args"

    @property
    def cluster_id(self) -> Path:
        return self.folder / "cluster-id"

    @property
    def admin(self) -> Path:
        """``--command-config`` of the command-line tools, as ``admin``."""
        return self.folder / "admin.properties"


def write_broker_config(out: Path, *, certs: Path, passwords: Mapping[str, str], partitions: int,
                        data_dir: Path = Path("/var/lib/kafka/data"), uid: int | None = None,
                        **listeners: str) -> KafkaConfigFiles:
    """Write the broker's files under ``out`` (each mode 0600, owned by ``uid``); the cluster id is kept.

    ``passwords`` holds ``admin``'s and each principal's; ``listeners`` overrides
    :func:`broker_properties`' ``listen``, ``advertise`` and ``controller``.
    """
    if kafka_acls.ADMIN not in passwords:
        raise ValueError(f"the broker needs {kafka_acls.ADMIN}'s password")
    files = KafkaConfigFiles(out)
    out.mkdir(parents=True, exist_ok=True)
    lines = broker_properties(certs=certs, data_dir=data_dir, admin_password=passwords[kafka_acls.ADMIN],
                              partitions=partitions, **listeners)
    scram = scram_format_args(passwords)
    cluster_id = (files.cluster_id.read_text().strip() if files.cluster_id.exists()
                  else base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))
    _write(files.properties, properties_text(lines).encode(), mode=0o600, uid=uid)
    _write(files.scram_args, "".join(f"{arg}\n" for arg in scram).encode(), mode=0o600, uid=uid)
    _write(files.cluster_id, f"{cluster_id}\n".encode(), mode=0o600, uid=uid)
    _write(files.admin, properties_text(admin_client_properties(certs, passwords[kafka_acls.ADMIN])).encode(),
           mode=0o600, uid=uid)
    return files


def principal_passwords(environ: Mapping[str, str]) -> dict[str, str]:
    """``admin``'s and each Compose principal's password, from ``VITALS_KAFKA_<PRINCIPAL>_PASSWORD``.

    Raises
    ------
    ConfigurationError
        If one is unset or empty (it has no default).
    """
    names = (kafka_acls.ADMIN, *COMPOSE_PRINCIPALS)
    missing = [password_variable(name) for name in names if not environ.get(password_variable(name))]
    if missing:
        raise ConfigurationError(f"set {', '.join(missing)}: each Kafka principal's password, no default")
    return {name: environ[password_variable(name)] for name in names}


def apply_acls(settings: Settings) -> int:
    """As the settings' principal (``admin``), create the pipeline's topics and every principal's ACLs; the count."""
    if settings.kafka_username != kafka_acls.ADMIN:
        raise ConfigurationError(f"`vitalrisk infra acls` acts as the super user: set VITALS_KAFKA_USERNAME="
                                 f"{kafka_acls.ADMIN} (it is {settings.kafka_username!r})")
    require_kafka(settings)  # unreachable, or refused: one line naming the setting to check
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, client_id="vitalrisk-infra",
                             **kafka_python_options(settings))
    try:
        ensure_topics(admin, pipeline_topics(settings))  # logs what differs
        return kafka_acls.apply(admin, settings)
    finally:
        admin.close()


#: ``vitalrisk infra`` actions this module runs.
COMPOSE_ACTIONS = ("compose-certs", "compose-kafka", "acls")


def run_compose_action(settings: Settings, action: str, *, out: Path | None, certs: Path | None,
                       hosts: str | None, renew: bool, owner: int | None, environ: Mapping[str, str]) -> int:
    """``vitalrisk infra compose-certs|compose-kafka|acls``: print what was done, return the exit status."""
    if action == "compose-certs":
        if out is None or hosts is None:
            raise ConfigurationError("`vitalrisk infra compose-certs` needs --out DIR and --hosts host:uid,...")
        try:
            wanted = parse_hosts(hosts)
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        made = make_certs(out, wanted, renew=renew)
        print(f"{'made' if made else 'kept'} the CA {ca_file(out)} and the certificates of {', '.join(wanted)}")
        return 0
    if action == "compose-kafka":
        if out is None or certs is None:
            raise ConfigurationError("`vitalrisk infra compose-kafka` needs --certs DIR and --out DIR")
        if not ca_file(certs).exists():
            raise ConfigurationError(f"no CA at {ca_file(certs)}: run `vitalrisk infra compose-certs` first")
        files = write_broker_config(out, certs=certs, passwords=principal_passwords(environ),
                                    partitions=settings.partitions, uid=owner)
        print(f"wrote {files.properties} (SASL_SSL, ACLs) and the SCRAM users of "
              f"{', '.join((kafka_acls.ADMIN, *COMPOSE_PRINCIPALS))}")
        return 0
    if action == "acls":
        count = apply_acls(settings)
        print(f"kafka at {settings.kafka_bootstrap}: topics created, {count} ACLs applied")
        return 0
    raise ValueError(f"not a compose action: {action!r}")
