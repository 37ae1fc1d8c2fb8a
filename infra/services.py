"""``vitalrisk infra``: both local services behind one start / stop / status / clean."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from typing import TypeVar

from infra.kafka import LocalKafka
from infra.postgres import LocalPostgres
from infra.preflight import require_database, require_kafka
from infra.processes import port_open, read_pid
from kernel.errors import ConfigurationError, PortInUse
from kernel.settings import Settings

Local = TypeVar("Local", LocalKafka, LocalPostgres)


def run_infra(settings: Settings, action: str, service: str, *, secure: bool = False,
              principal: str | None = None, brokers: int | None = None, node: int | None = None) -> int:
    """Apply ``action`` to ``service`` ("kafka", "postgres" or "all"); print each one's status.

    ``secure`` starts PostgreSQL with TLS and SCRAM passwords (:class:`~infra.postgres.LocalPostgres`);
    without it ``start`` starts it plain, and the other actions take it as it was started.

    ``clean`` stops the service and deletes its data (for PostgreSQL run as root from a private
    folder, that includes the data folder kept under ``/var/tmp``). ``secure`` asks ``start`` for
    a secured Kafka broker (SASL_SSL, ACLs) when it formats the broker's storage.
    ``credentials`` prints, as shell ``export`` lines, the ``VITALS_KAFKA_*`` variables that
    connect to the secured broker as ``principal``. ``check`` connects as this process's settings
    say (any broker, local or not, secured or not), as every command does before it starts work.
    ``brokers`` (1 or 3) asks ``start`` for one Kafka node or the three-broker cluster when it formats
    the storage; ``node`` applies ``start`` or ``stop`` to one node of the cluster alone.

    Raises
    ------
    ConfigurationError
        If the settings point the service at a server that is not the local one.
    PortInUse
        If ``start`` finds another process on a port the service would listen on: checked
        before the start, which would otherwise wait for a server that exits at once.
    ServiceFailed, ToolMissing
        If the service did not start, or a program it needs is not installed.
    """
    if action == "check":
        if service in ("kafka", "all"):
            require_kafka(settings)
            who = f" as {settings.kafka_username}" if settings.kafka_username else ""
            print(f"kafka at {settings.kafka_bootstrap}: answers ({settings.kafka_security_protocol}{who})")
        if service in ("postgres", "all"):
            require_database(settings.database_url)
            print("postgres: answers")
        return 0
    if action == "credentials":
        if service != "kafka" or principal is None:
            raise ConfigurationError("`vitalrisk infra credentials` needs kafka and --principal NAME")
        kafka = _local(lambda: LocalKafka(settings), "VITALS_KAFKA_BOOTSTRAP")
        for name, value in kafka.client_env(principal).items():
            print(f"export {name}={shlex.quote(value)}")
        return 0
    if node is not None and (service != "kafka" or action not in ("start", "stop")):
        raise ConfigurationError("--node goes with `vitalrisk infra start kafka` or `vitalrisk infra stop kafka`")
    if brokers is not None and (service == "postgres" or action != "start"):
        raise ConfigurationError("--brokers goes with `vitalrisk infra start kafka`")
    chosen: list[LocalKafka | LocalPostgres] = []
    if service in ("postgres", "all"):
        secure_postgres = True if secure else (False if action == "start" else None)
        chosen.append(_local(lambda: LocalPostgres(settings, secure=secure_postgres), "VITALS_DATABASE_URL"))
    if service in ("kafka", "all"):
        chosen.append(_local(lambda: LocalKafka(settings, secure=secure, brokers=brokers), "VITALS_KAFKA_BOOTSTRAP"))
    for svc in chosen:
        if action == "start":
            if isinstance(svc, LocalKafka):
                _require_kafka_ports_free(svc, node)
                svc.start(node)
            else:
                if not svc.running():
                    _require_ports_free(svc)
                svc.start()
        elif action in ("stop", "clean"):
            if isinstance(svc, LocalKafka):
                svc.stop(node)
            else:
                svc.stop()
            if action == "clean":  # a throwaway service: its data goes too
                svc.discard_storage()
        print(svc.status())
    return 0


def _local(make: Callable[[], Local], setting: str) -> Local:
    """The local service manager ``make`` builds; a remote address is a bad setting."""
    try:
        return make()
    except ValueError as exc:  # the address is not 127.0.0.1
        raise ConfigurationError(f"{exc}; `vitalrisk infra` manages the local services only: point {setting} "
                                 "at 127.0.0.1") from None


def _require_ports_free(svc: LocalPostgres) -> None:
    """Raise :class:`PortInUse` if another process listens where ``svc``, not running, would."""
    if port_open("127.0.0.1", svc.target.port):
        raise PortInUse("PostgreSQL", "127.0.0.1", svc.target.port, "VITALS_DATABASE_URL")


def _require_kafka_ports_free(kafka: LocalKafka, node_id: int | None) -> None:
    """Raise :class:`PortInUse` if another process listens where a node of ``kafka`` (or ``node_id``), not
    running, would."""
    nodes = kafka.nodes if node_id is None else [kafka.node(node_id)]
    setting = "VITALS_KAFKA_BOOTSTRAP" if kafka.brokers == 1 else "VITALS_KAFKA_BOOTSTRAP (docs/scaling.md)"
    for node in nodes:
        if read_pid(node.paths.pid) is not None:
            continue
        for what, port in kafka.ports(node.node_id):
            if port_open("127.0.0.1", port):
                raise PortInUse(what, "127.0.0.1", port,
                                f"{setting} (its port + 1)" if what.endswith("controller") and kafka.brokers == 1
                                else setting)
