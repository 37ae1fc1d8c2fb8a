"""Checks a command makes before it starts work: the broker and the database answer, a port is free.

Why before, and not where the libraries fail: Faust reports an unreachable broker with a
traceback logged from inside its event loop, kafka-python retries for half a minute before it
gives up, and psycopg's pool logs a warning per attempt. A check made first turns the common
cases (a service not started, a port another process holds) into one line and exit status 1.

These are checks at one moment: a service lost after them (a broker that stops mid-run) is for
the running service to handle.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket

import psycopg
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError
from psycopg.conninfo import conninfo_to_dict

from kernel.errors import ServiceUnavailable, first_line, listen_failed
from kernel.kafka_security import aiokafka_options
from kernel.settings import Settings, kafka_servers

#: How long one TCP connection attempt to a broker may take, seconds.
CONNECT_TIMEOUT_S = 3.0
#: libpq's connect_timeout for the database check, whole seconds.
DATABASE_TIMEOUT_S = 5
#: libpq's words for a failed TLS handshake or server certificate check.
_TLS_FAILURE = re.compile(r"SSL error|certificate|SSL SYSCALL|server does not support SSL|sslrootcert|root certificate")
# libpq prefixes every connection failure with where it tried; the reason follows.
_LIBPQ_WHERE = re.compile(r'^(connection failed: )?(connection to server (at|on) .*? failed: )?')


def require_kafka(settings: Settings, *, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Return once a server of ``settings.kafka_bootstrap`` accepts a connection and serves metadata.

    Two steps: a TCP connection (fast, and its failure has a plain reason such as "Connection
    refused"), then aiokafka's bootstrap, the metadata request Faust itself starts with, so that
    something on the port that is not a working broker fails here too. The bootstrap speaks the
    configured security protocol, so a wrong password, an untrusted certificate or a plaintext
    client at a secured broker fails here, with the reason and the setting to check.

    Raises
    ------
    ServiceUnavailable
        If no server does; the message names the address, the reason and how to start the broker.
    """
    reasons = []
    for host, port in kafka_servers(settings.kafka_bootstrap):
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                break
        except OSError as exc:
            reasons.append(_reason(exc))
    else:
        raise ServiceUnavailable(f"Kafka at {settings.kafka_bootstrap} is not reachable ({'; '.join(reasons)}); "
                                 "start it with `vitalrisk infra start kafka` or set VITALS_KAFKA_BOOTSTRAP")
    refusals: list[str] = []
    try:
        asyncio.run(asyncio.wait_for(_bootstrap(settings, timeout_s, refusals), timeout=2 * timeout_s))
    except (KafkaError, TimeoutError) as exc:
        raise ServiceUnavailable(refusal(settings, refusals[-1] if refusals else first_line(exc))) from None


def refusal(settings: Settings, reason: str) -> str:
    """The one line for a broker that took the connection but not the client, with the setting to check.

    >>> s = Settings(kafka_security_protocol="SASL_SSL", kafka_username="worker", kafka_password="pw")
    >>> print(refusal(s, "[Error 58] SaslAuthenticationFailed: Authentication failed during authentication"))
    Kafka at 127.0.0.1:19092 refused worker's login ([Error 58] SaslAuthenticationFailed: Authentication failed during authentication); check VITALS_KAFKA_USERNAME and VITALS_KAFKA_PASSWORD
    >>> print(refusal(Settings(), "KafkaConnectionError: Connection at 127.0.0.1:19092 closed"))
    Kafka at 127.0.0.1:19092 accepts connections but does not answer as a broker (KafkaConnectionError: Connection at 127.0.0.1:19092 closed); a secured broker closes PLAINTEXT clients: set VITALS_KAFKA_SECURITY_PROTOCOL and its credentials
    """
    where, protocol = f"Kafka at {settings.kafka_bootstrap}", settings.kafka_security_protocol
    if "SaslAuthenticationFailed" in reason or "Authentication failed" in reason:
        return (f"{where} refused {settings.kafka_username}'s login ({reason}); "
                "check VITALS_KAFKA_USERNAME and VITALS_KAFKA_PASSWORD")
    if "CERTIFICATE_VERIFY_FAILED" in reason:
        return (f"{where} has a certificate this client does not trust ({reason}); check VITALS_KAFKA_CA_FILE "
                "(and VITALS_KAFKA_CHECK_HOSTNAME)")
    if protocol == "PLAINTEXT" and "closed" in reason:  # not a broker, or a secured one
        return (f"{where} accepts connections but does not answer as a broker ({reason}); a secured broker "
                "closes PLAINTEXT clients: set VITALS_KAFKA_SECURITY_PROTOCOL and its credentials")
    return f"{where} accepts connections but does not answer as a broker ({reason}); check it with " \
           f"`vitalrisk infra status`{'' if protocol == 'PLAINTEXT' else ' and VITALS_KAFKA_SECURITY_PROTOCOL'}"


class _Reasons(logging.Handler):
    """Keeps the reason of each connection aiokafka logs as failed (its exception only says "Unable to bootstrap")."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__(logging.ERROR)
        self.reasons = reasons

    def emit(self, record: logging.LogRecord) -> None:
        message = _AIOKAFKA_WHERE.sub("", record.getMessage().splitlines()[0])
        self.reasons.append(_SSL_SOURCE.sub("", message).strip())


_AIOKAFKA_WHERE = re.compile(r'^Unable connect to "[^"]*": ')
_SSL_SOURCE = re.compile(r"\s*\(_ssl\.c:\d+\)")


async def _bootstrap(settings: Settings, timeout_s: float, reasons: list[str]) -> None:
    """One metadata request, as Faust's first; aiokafka's error log goes to ``reasons``, not the console."""
    library_log = logging.getLogger("aiokafka")
    level, propagate = library_log.level, library_log.propagate
    handler = _Reasons(reasons)
    library_log.setLevel(logging.ERROR)
    library_log.propagate = False
    library_log.addHandler(handler)
    client = AIOKafkaClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=int(timeout_s * 1000),
                            client_id="vitalrisk-check", **aiokafka_options(settings))
    try:
        await client.bootstrap()
    finally:
        await client.close()
        library_log.removeHandler(handler)
        library_log.setLevel(level)
        library_log.propagate = propagate


def require_database(url: str, *, setting: str = "VITALS_DATABASE_URL",
                     timeout_s: int = DATABASE_TIMEOUT_S) -> None:
    """Return once PostgreSQL at ``url`` accepts a session (then closed again).

    Parameters
    ----------
    url
        A libpq URL, already parsed once (:func:`kernel.settings.check_database_url`).
    setting
        The variable or option that gave ``url``, named in the message.

    Raises
    ------
    ServiceUnavailable
        If the server cannot be reached or refuses the session (no such database or role, a wrong
        password, a connection without TLS to a server that requires it), or TLS fails (a server
        certificate that the URL's ``sslrootcert`` does not trust, or issued for another host name).
    """
    try:
        psycopg.connect(url, connect_timeout=timeout_s, application_name="vitalrisk-check").close()
    except psycopg.OperationalError as exc:
        where = _database_address(url)
        detail = _LIBPQ_WHERE.sub("", first_line(exc))
        if _TLS_FAILURE.search(detail):
            raise ServiceUnavailable(f"PostgreSQL at {where}: TLS failed ({detail}); check sslmode, sslrootcert "
                                     f"and the host name in {setting} (docs/storage.md, \"TLS\")") from None
        if "no encryption" in detail:  # pg_hba.conf has hostssl lines only
            raise ServiceUnavailable(f"PostgreSQL at {where} requires TLS ({detail.replace('FATAL:  ', '')}); "
                                     f"add sslmode=verify-full and sslrootcert to {setting}") from None
        if "FATAL" in detail:  # the server answered, and refused
            raise ServiceUnavailable(f"PostgreSQL at {where} refused the connection ({detail.replace('FATAL:  ', '')}); "
                                     f"check {setting}, or create the schema with `vitalrisk migrate`") from None
        raise ServiceUnavailable(f"PostgreSQL at {where} is not reachable ({detail}); start it with "
                                 f"`vitalrisk infra start postgres` or check {setting}") from None


def require_free_port(host: str, port: int, *, what: str, setting: str) -> None:
    """Return if ``host:port`` could be bound now; for a server that binds later, inside Faust.

    The probe sets ``SO_REUSEADDR`` as aiohttp and ``http.server`` do, so a port with only
    closing connections on it counts as free; one with a listener does not.

    Raises
    ------
    PortInUse
        If another process listens there.
    ConfigurationError
        If the address cannot be bound for another reason (not this machine's, unresolvable).
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        raise listen_failed(exc, what=what, host=host, port=port, setting=setting) from None


def _database_address(url: str) -> str:
    """``host:port/dbname`` of a libpq URL, never its password.

    >>> _database_address("postgresql://w:secret@127.0.0.1:15432/vitalrisk")
    '127.0.0.1:15432/vitalrisk'
    """
    parts = conninfo_to_dict(url)
    return f"{parts.get('host', 'localhost')}:{parts.get('port', 5432)}/{parts.get('dbname', '')}"


def _reason(exc: OSError) -> str:
    """``connection refused``, ``timed out``, ... for one failed connection attempt."""
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host: {exc.strerror}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return exc.strerror or type(exc).__name__
