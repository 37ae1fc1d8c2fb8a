"""``vitalrisk infra``: both local services behind one start / stop / status / clean."""

from __future__ import annotations

from infra.kafka import LocalKafka
from infra.postgres import LocalPostgres
from infra.processes import port_open
from kernel.errors import ConfigurationError, PortInUse
from kernel.settings import Settings


def run_infra(settings: Settings, action: str, service: str, *, secure: bool = False) -> int:
    """Apply ``action`` to ``service`` ("kafka", "postgres" or "all"); print each one's status.

    ``secure`` starts PostgreSQL with TLS and SCRAM passwords (:class:`~infra.postgres.LocalPostgres`);
    without it ``start`` starts it plain, and the other actions take it as it was started.

    ``clean`` stops the service and deletes its data (for PostgreSQL run as root from a private
    folder, that includes the data folder kept under ``/var/tmp``).

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
    chosen: list[LocalKafka | LocalPostgres] = []
    if service in ("postgres", "all"):
        secure_postgres = True if secure else (False if action == "start" else None)
        chosen.append(_local(LocalPostgres, settings, "VITALS_DATABASE_URL", secure=secure_postgres))
    if service in ("kafka", "all"):
        chosen.append(_local(LocalKafka, settings, "VITALS_KAFKA_BOOTSTRAP"))
    for svc in chosen:
        if action == "start":
            if not svc.running():
                _require_ports_free(svc)
            svc.start()
        elif action in ("stop", "clean"):
            svc.stop()
            if action == "clean":  # a throwaway service: its data goes too
                svc.discard_storage()
        print(svc.status())
    return 0


def _local(kind: type[LocalKafka | LocalPostgres], settings: Settings, setting: str, **options: bool | None
           ) -> LocalKafka | LocalPostgres:
    """The local service manager ``kind`` for ``settings``; a remote address is a bad setting."""
    try:
        return kind(settings, **options)
    except ValueError as exc:  # the address is not 127.0.0.1
        raise ConfigurationError(f"{exc}; `vitalrisk infra` manages the local services only: point {setting} "
                                 "at 127.0.0.1") from None


def _require_ports_free(svc: LocalKafka | LocalPostgres) -> None:
    """Raise :class:`PortInUse` if another process listens where ``svc``, not running, would."""
    if isinstance(svc, LocalKafka):
        ports = [("Kafka", svc.port, "VITALS_KAFKA_BOOTSTRAP"),
                 ("Kafka's controller", svc.controller_port, "VITALS_KAFKA_BOOTSTRAP (its port + 1)")]
    else:
        ports = [("PostgreSQL", svc.target.port, "VITALS_DATABASE_URL")]
    for what, port, setting in ports:
        if port_open("127.0.0.1", port):
            raise PortInUse(what, "127.0.0.1", port, setting)
