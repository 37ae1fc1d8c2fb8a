"""One typed settings object, read from the environment once and passed down.

Every variable carries the ``VITALS_`` prefix (``VITALS_KAFKA_BOOTSTRAP``,
``VITALS_DATABASE_URL``, ...). Nothing else in the code base reads ``os.environ``. A ``VITALS_*``
variable that is no setting is an error, not silently ignored (a typo would otherwise leave a
default in force, such as a broker spoken to in plaintext); the test harness's ``VITALS_TEST_*``
and the few :data:`NOT_SETTINGS` that other programs read are exempt.

Examples
--------
>>> s = Settings(kafka_bootstrap="127.0.0.1:19092", partitions=3)
>>> s.partitions, s.readings_topic
(3, 'vitals.readings')
>>> s.window_ms
60000
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Literal, Self
from urllib.parse import quote

from pydantic import Field, FilePath, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from kernel.errors import first_line


def kafka_servers(bootstrap: str) -> list[tuple[str, int]]:
    """The ``(host, port)`` of each server in a ``host:port,host:port`` bootstrap list.

    Raises
    ------
    ValueError
        If a server is not ``host:port`` with a port in 1-65535.

    Examples
    --------
    >>> kafka_servers("127.0.0.1:19092, broker-2:9092")
    [('127.0.0.1', 19092), ('broker-2', 9092)]
    >>> kafka_servers("127.0.0.1")
    Traceback (most recent call last):
    ...
    ValueError: each Kafka server must be host:port with a port in 1-65535, got '127.0.0.1'
    """
    servers = []
    for server in (part.strip() for part in bootstrap.split(",")):
        host, _, port = server.rpartition(":")
        if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"each Kafka server must be host:port with a port in 1-65535, got {server!r}")
        servers.append((host, int(port)))
    return servers


def check_database_url(url: str) -> str:
    """``url`` if libpq can parse it as a connection string or URL; the checks that need no server.

    Raises
    ------
    ValueError
        With libpq's reason, e.g. an unknown option or an unterminated IPv6 address.

    Examples
    --------
    >>> check_database_url("postgresql://vitalrisk_writer@127.0.0.1:15432/vitalrisk")
    'postgresql://vitalrisk_writer@127.0.0.1:15432/vitalrisk'
    >>> check_database_url("127.0.0.1:15432")
    Traceback (most recent call last):
    ...
    ValueError: must be a libpq URL such as postgresql://user@host:port/dbname: missing "=" after the URL in connection info string
    >>> check_database_url("postgresql://w:pw@[::1/db")
    Traceback (most recent call last):
    ...
    ValueError: must be a libpq URL such as postgresql://user@host:port/dbname: end of string reached when looking for matching "]" in IPv6 host address in URI: the URL
    """
    # Imported here, not at the top: every command reads the settings and most never touch the
    # database; defaults are not validated, so only a URL set in the environment pays ~0.1 s.
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        reason = first_line(exc).replace(f'"{url}"', "the URL")  # libpq quotes it, password and all
        raise ValueError(f"must be a libpq URL such as postgresql://user@host:port/dbname: {reason}") from None
    return url


#: Shortest bearer token the alerter's API accepts: 32 URL-safe characters carry 192 bits.
MIN_API_TOKEN_CHARS = 32

#: The database roles, one per service; each is granted only what its service uses (sinks/migrations.py,
#: docs/storage.md). A process connects as the user its URL names; a URL naming none gets its service's role.
WORKER_ROLE = "vitalrisk_worker"
TRAINER_ROLE = "vitalrisk_trainer"
ALERTER_ROLE = "vitalrisk_alerter"  # also `vitalrisk ack` and `vitalrisk silence`
GATEWAY_ROLE = "vitalrisk_gateway"
READER_ROLE = "vitalrisk_reader"  # Grafana, and the demo's summary
OWNER_ROLE = "vitalrisk_owner"  # owns the schema: `vitalrisk migrate`, `vitalrisk devices`
#: What worker, trainer and alerter shared before each had a role of its own. Deprecated: kept with its old grants
#: for one release so that a deployment can migrate before it moves its services to their own roles.
DEPRECATED_WRITER_ROLE = "vitalrisk_writer"

_URL = re.compile(r"^(postgres(?:ql)?://)([^/?#]*)(.*)$", re.S)


def _url_parts(url: str) -> tuple[str, str, str, str] | None:
    """``(scheme, userinfo, hosts, rest)`` of a libpq URL; ``None`` for a ``key=value`` connection string."""
    match = _URL.match(url)
    if match is None:
        return None
    userinfo, at, hosts = match.group(2).rpartition("@")
    return match.group(1), userinfo if at else "", hosts, match.group(3)


def role_url(url: str, role: str) -> str:
    """``url`` connecting as ``role``, without a password: the same server, database and options, another role.

    For local runs and tests, where every service reaches one server and only the role differs. A
    password belongs to its role, so it is dropped, never carried over: give each role's in its own
    URL, or in a libpq passfile (the ``passfile`` option of the URL, or ``PGPASSFILE``) that lists them all.

    Examples
    --------
    >>> role_url("postgresql://vitalrisk_writer:pw@127.0.0.1:15432/vitalrisk?sslmode=verify-full", WORKER_ROLE)
    'postgresql://vitalrisk_worker@127.0.0.1:15432/vitalrisk?sslmode=verify-full'
    >>> role_url("postgresql://127.0.0.1/vitalrisk", READER_ROLE)
    'postgresql://vitalrisk_reader@127.0.0.1/vitalrisk'
    >>> role_url("host=127.0.0.1 dbname=vitalrisk user=w password=pw", TRAINER_ROLE)
    'dbname=vitalrisk host=127.0.0.1 user=vitalrisk_trainer'
    """
    parts = _url_parts(url)
    if parts is not None and not re.search(r"[?&](user|password)=", parts[3]):
        scheme, _, hosts, rest = parts
        return f"{scheme}{quote(role, safe='')}@{hosts}{rest}"
    from psycopg.conninfo import conninfo_to_dict, make_conninfo  # see check_database_url

    params = {k: v for k, v in conninfo_to_dict(url).items() if k not in ("user", "password")}
    return make_conninfo("", **params, user=role)


def with_default_role(url: str, role: str) -> str:
    """``url`` as it is if it names a user, else ``url`` as ``role`` (its password, if any, kept).

    >>> with_default_role("postgresql://127.0.0.1:15432/vitalrisk", WORKER_ROLE)
    'postgresql://vitalrisk_worker@127.0.0.1:15432/vitalrisk'
    >>> with_default_role("postgresql://someone@db.example/vitalrisk", WORKER_ROLE)
    'postgresql://someone@db.example/vitalrisk'
    """
    from psycopg.conninfo import conninfo_to_dict, make_conninfo  # see check_database_url

    params = conninfo_to_dict(url)
    if params.get("user"):
        return url
    parts = _url_parts(url)
    if parts is not None and not re.search(r"[?&]password=", parts[3]):
        scheme, userinfo, hosts, rest = parts
        return f"{scheme}{quote(role, safe='')}{userinfo}@{hosts}{rest}"  # userinfo is "" or ":password"
    return make_conninfo("", **params, user=role)


def redact_url(url: str) -> str:
    """``url`` with its password, if any, replaced by ``***``: fit for a log line, an error or a repr.

    >>> redact_url("postgresql://w:s3cret@127.0.0.1/vitalrisk?sslmode=verify-full")
    'postgresql://w:***@127.0.0.1/vitalrisk?sslmode=verify-full'
    >>> redact_url("host=127.0.0.1 user=w password='s3 cret' dbname=v")
    'host=127.0.0.1 user=w password=*** dbname=v'
    >>> redact_url("postgresql://w@127.0.0.1/v?password=s3cret&sslmode=require")
    'postgresql://w@127.0.0.1/v?password=***&sslmode=require'
    """
    parts = _url_parts(url)
    if parts is not None:
        scheme, userinfo, hosts, rest = parts
        user, colon, _ = userinfo.partition(":")
        shown = f"{user}{':***' if colon else ''}@" if userinfo else ""
        return f"{scheme}{shown}{hosts}" + re.sub(r"([?&]password=)[^&#]*", r"\1***", rest)
    return re.sub(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", url)


#: The settings that hold a libpq URL, and so maybe a password.
_DATABASE_URLS = ("database_url", "admin_database_url", "gateway_database_url")

#: The certificate and key files each HTTP server of vitalrisk serves TLS with (infra.serving), in pairs.
_TLS_FILES = ("gateway_tls_cert_file", "gateway_tls_key_file", "alerter_tls_cert_file", "alerter_tls_key_file")

#: ``VITALS_*`` variables that are not settings but are read by other programs: the test suite
#: (``VITALS_TEST_*`` too, by prefix), the TimescaleDB build script, and docker-compose's database
#: init script, Grafana and the pager (``--grafana-token-env``) in their containers. A user who
#: keeps compose's ``.env`` in the shell may run ``vitalrisk`` with them set.
NOT_SETTINGS = frozenset({
    "VITALS_KEEP_TEST_SERVICES", "VITALS_SLOW_TESTS",
    "VITALS_BUILD_DIR", "VITALS_TIMESCALEDB_SOURCE",
    "VITALS_OWNER_PASSWORD", "VITALS_WRITER_PASSWORD", "VITALS_READER_PASSWORD", "VITALS_GATEWAY_PASSWORD",
    "VITALS_WORKER_PASSWORD", "VITALS_TRAINER_PASSWORD", "VITALS_ALERTER_PASSWORD",
    "VITALS_PG_HOST", "VITALS_PG_DATABASE", "VITALS_PG_READER", "VITALS_PROMETHEUS_URL",
    "VITALS_GRAFANA_DASHBOARDS_DIR", "VITALS_PAGER_GRAFANA_TOKEN",
    # docker-compose.yml: each Kafka principal's SCRAM password (infra/compose.py, `vitalrisk infra compose-kafka`)
    "VITALS_KAFKA_ADMIN_PASSWORD", "VITALS_KAFKA_WORKER_PASSWORD", "VITALS_KAFKA_TRAINER_PASSWORD",
    "VITALS_KAFKA_ALERTER_PASSWORD", "VITALS_KAFKA_GATEWAY_PASSWORD", "VITALS_KAFKA_SIMULATOR_PASSWORD",
    "VITALS_KAFKA_DEVICE_PASSWORD", "VITALS_KAFKA_OPERATOR_PASSWORD",
})
#: Prefix of the test harness's own variables (tests/conftest.py), never settings.
TEST_PREFIX = "VITALS_TEST_"

#: Kafka security protocols, as every client library names them.
KafkaProtocol = Literal["PLAINTEXT", "SSL", "SASL_SSL", "SASL_PLAINTEXT"]
#: SASL mechanisms with a username and password.
SaslMechanism = Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"]


def unknown_variables(environ: dict[str, str] | os._Environ[str], known: set[str] | frozenset[str]) -> list[str]:
    """Each ``VITALS_*`` name in ``environ`` that is neither in ``known`` nor exempt, with a close match.

    Names are compared upper-cased, as the settings read them. ``NOT_SETTINGS`` is the one list of
    exemptions: tests/kernel/test_settings.py checks that the repository names no other.

    Examples
    --------
    >>> unknown_variables({"vitals_partiton": "3", "VITALS_TEST_KAFKA_PORT": "1", "HOME": "/"},
    ...                   {"VITALS_PARTITIONS"})
    ['vitals_partiton (did you mean VITALS_PARTITIONS?)']
    >>> unknown_variables({"VITALS_SLOW_TESTS": "1", "vitals_partitions": "3"}, {"VITALS_PARTITIONS"})
    []
    """
    unknown = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith("VITALS_") or upper in known or upper in NOT_SETTINGS or upper.startswith(TEST_PREFIX):
            continue
        close = difflib.get_close_matches(upper.removeprefix("VITALS_"), [k.removeprefix("VITALS_") for k in known],
                                          n=1, cutoff=0.8)
        unknown.append(f"{name} (did you mean VITALS_{close[0]}?)" if close else name)
    return unknown


class Settings(BaseSettings):
    """Immutable configuration of every vitalrisk process."""

    model_config = SettingsConfigDict(env_prefix="VITALS_", frozen=True, extra="forbid",
                                      hide_input_in_errors=True)  # an input may be a password

    state_dir: Path = Field(Path(".local"), description="local services' data and logs (git-ignored)")

    # Kafka
    kafka_bootstrap: str = Field("127.0.0.1:19092", description="host:port of the Kafka broker(s)")
    partitions: int = Field(6, ge=1, le=1024, description="partitions of every topic we create")
    readings_topic: str = "vitals.readings"
    deadletter_topic: str = "vitals.deadletter"
    outcomes_topic: str = "vitals.outcomes"
    scores_topic: str = "risk.scores"
    features_topic: str = "vitals.features"
    snapshots_topic: str = Field("models.snapshots", description="compacted topic of signed model snapshots")
    patients_topic: str = Field("vitals.patients",
                                description="compacted topic of patients' subgroups and enrolment diagnoses")
    replication_factor: int = Field(
        1, ge=1, le=16, description="replicas of each partition of every topic vitalrisk creates, Faust's changelog "
        "and internal topics included (3 on a three-broker cluster)"
    )
    min_insync_replicas: int = Field(
        1, ge=1, le=16, description="replicas that must hold a record before the broker acknowledges an acks=all "
        "write (min.insync.replicas of every topic vitalrisk creates; at most replication_factor)"
    )

    # Kafka security (docs/configuration.md, "Kafka security"); kernel.kafka_security turns these into
    # each client library's options
    kafka_security_protocol: KafkaProtocol = Field(
        "PLAINTEXT", description="PLAINTEXT, SSL (TLS), SASL_SSL (TLS + SASL) or SASL_PLAINTEXT (SASL, no TLS)"
    )
    kafka_sasl_mechanism: SaslMechanism = Field(
        "SCRAM-SHA-512", description="SASL mechanism: SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN"
    )
    kafka_username: str | None = Field(None, description="SASL username: this process's Kafka principal")
    kafka_password: SecretStr | None = Field(None, description="SASL password of kafka_username")
    kafka_ca_file: Path | None = Field(
        None, description="PEM file of the CA(s) the broker's certificate must chain to; unset: the system's"
    )
    kafka_cert_file: Path | None = Field(None, description="PEM client certificate, for brokers that ask for one")
    kafka_key_file: Path | None = Field(None, description="PEM private key of kafka_cert_file")
    kafka_check_hostname: bool = Field(
        True, description="TLS: the broker's certificate must name the host connected to"
    )

    # Faust worker
    app_id: str = Field("vitalrisk", description="Faust application id: consumer group and table prefix")
    data_dir: Path = Field(Path(".local/faust"), description="Faust's local state directory")
    window_ms: int = Field(60_000, gt=0, description="tumbling window length, event time")
    grace_ms: int = Field(30_000, ge=0, description="how far behind the watermark an event may arrive")
    session_timeout_s: float = Field(
        10.0, ge=6, description="consumer group session timeout: how soon a dead worker's partitions move"
    )
    idle_timeout_s: float = Field(
        10.0, gt=0, description="wall-clock seconds without events after which open windows close"
    )
    max_future_ms: int = Field(
        5 * 60_000, ge=0, description="allowed clock skew: readings further ahead of the broker's record time "
        "(and of the worker's clock) than this are rejected as future_timestamp"
    )

    # Limits on what a sender may put in one record (kernel.limits; docs/limits.md)
    limit_message_bytes: int = Field(1_048_576, ge=256, description="bytes of one record's value (too_large)")
    limit_readings: int = Field(10_000, ge=1, description="readings in one device message (too_many_readings)")
    limit_json_depth: int = Field(8, ge=3, le=64, description="nesting of JSON arrays and objects (too_deep)")
    limit_number_digits: int = Field(
        20, ge=13, le=400, description="digits of a JSON integer, characters of a float (number_too_large)"
    )
    limit_string_chars: int = Field(
        256, ge=64, description="characters of a JSON key or string value in an object (string_too_long)"
    )
    limit_devices_per_partition: int = Field(
        100_000, ge=1, description="devices whose sequence numbers one partition remembers (LRU)"
    )
    news2_carry_ms: int = Field(
        12 * 3_600_000, ge=0, description="how long a vital's last window mean stands in for a missing one"
    )
    data_stopped_ms: int = Field(
        30 * 60_000, gt=0, description="event time without readings after which a patient counts as stopped"
    )
    metrics_host: str = Field("127.0.0.1", description="address the /metrics endpoint binds")
    metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus /metrics port; 0 disables")
    web_port: int = Field(6066, ge=1, le=65535, description="Faust's own web server port")

    # PostgreSQL / TimescaleDB
    database_url: str = Field(
        "postgresql://127.0.0.1:15432/vitalrisk",
        description="libpq URL this process connects with; naming no user, each service connects as its own "
        "role (vitalrisk_worker, vitalrisk_trainer, vitalrisk_alerter)",
    )
    admin_database_url: str | None = Field(
        None, description="URL of the schema owner; when set, the worker applies migrations at start"
    )
    sink_timescale: str = Field(
        "auto", pattern="^(auto|on|off)$",
        description="migrations: use TimescaleDB when the server offers it (auto), require it (on) or never (off)",
    )
    sink_batch_rows: int = Field(5_000, gt=0, description="flush the sink after this many rows")
    sink_flush_s: float = Field(1.0, gt=0, description="flush the sink at least this often")
    sink_raw_retention_days: int = Field(
        0, ge=0, description="drop features and readings older than this many days; 0 keeps them"
    )
    sink_scores_retention_days: int = Field(0, ge=0, description="drop risk scores older than this; 0 keeps them")
    sink_rollup_retention_days: int = Field(
        0, ge=0, description="TimescaleDB: drop 5-min/1-h rollups older than this; 0 keeps them"
    )
    sink_compress_after_days: int = Field(
        7, ge=0, description="TimescaleDB: compress chunks older than this many days; 0 never"
    )
    sink_readings_every_ms: int | None = Field(
        None, ge=0, description="store raw readings thinned to one per patient, metric and this many ms "
        "(0: all); unset stores none"
    )
    sink_rollup_refresh_s: float = Field(
        60.0, gt=0, description="plain PostgreSQL: how often the writer refreshes the rollup views"
    )

    # Alerting and webhooks (issue 7: `vitalrisk alerter`, `ack`, `silence`, `pager`)
    alert_risk_enter: float = Field(0.6, gt=0, le=1, description="model risk at or above which an episode starts")
    alert_risk_exit: float = Field(0.5, ge=0, le=1, description="model risk at or below which it resolves")
    alert_for_s: float = Field(
        60.0, ge=0, description="event time a breach must last before it pages (NEWS2; model risk: twice this)"
    )
    alert_clear_s: float = Field(120.0, ge=0, description="event time below the exit threshold before resolving")
    alert_data_stopped_s: float = Field(
        900.0, ge=0, description="wall-clock time without a score after which data_stopped pages; 0 turns it off"
    )
    alert_renotify_s: float = Field(
        900.0, gt=0, description="re-page an unacknowledged critical alert this often (warning: 4x)"
    )
    alert_escalate_s: float = Field(
        600.0, gt=0, description="escalate an unacknowledged critical alert after this (warning: 3x)"
    )
    alert_grafana_url: str = Field("http://127.0.0.1:3000", description="Grafana base URL that pages link to")
    alert_external_url: str = Field("http://127.0.0.1:9094", description="the alerter's URL, as pages name it")
    alerter_host: str = Field("127.0.0.1", description="address the alerter's HTTP API (ack, silences) binds")
    alerter_port: int = Field(9094, ge=0, le=65535, description="port of the alerter's HTTP API; 0 disables it")
    alerter_api_token: SecretStr | None = Field(
        None, description="bearer token the alerter's API requires (at least 32 characters); "
        "required when the API listens beyond the loopback address"
    )
    alerter_tls_cert_file: Path | None = Field(
        None, description="PEM certificate chain the alerter's API serves HTTPS with (with alerter_tls_key_file); "
        "unset: plain HTTP"
    )
    alerter_tls_key_file: Path | None = Field(None, description="PEM private key of alerter_tls_cert_file")
    alerter_allow_plaintext: bool = Field(
        False, description="let the alerter's API serve plain HTTP beyond the loopback address (only behind a "
        "TLS-terminating proxy)"
    )
    silence_max_minutes: float = Field(
        7 * 24 * 60, gt=0, le=7 * 24 * 60, description="longest silence of one patient's pages, minutes"
    )
    silence_wildcard_max_minutes: float = Field(
        60.0, gt=0, le=24 * 60, description="longest silence of every patient's pages (explicit all_patients), minutes"
    )
    alerter_flush_s: float = Field(0.2, gt=0, description="persist alert state at least this often")
    webhook_receivers: str = Field(
        "pager=http://127.0.0.1:9095/webhook", description="webhook receivers as name=url;name=url"
    )
    webhook_require_https: bool = Field(False, description="refuse webhook receivers that are not https:// URLs")
    webhook_ca_file: FilePath | None = Field(
        None, description="PEM bundle of the CAs a receiver's certificate must chain to (default: the system's)"
    )
    webhook_routes: str = Field(
        "critical=pager;warning=pager;info=pager;escalation=pager",
        description="receivers per severity, and for escalations, as severity=name,name;severity=name",
    )
    webhook_secret: SecretStr | None = Field(None, description="HMAC-SHA256 key that signs every webhook")
    webhook_timeout_s: float = Field(5.0, gt=0, description="timeout of one webhook attempt")
    webhook_backoff_s: float = Field(0.5, gt=0, description="first webhook retry delay; doubles, with jitter")
    webhook_backoff_max_s: float = Field(30.0, gt=0, description="longest delay between two webhook attempts")
    webhook_give_up_s: float = Field(900.0, gt=0, description="dead-letter a webhook not delivered within this")

    # Ingest gateway (`vitalrisk gateway`, `vitalrisk devices`; docs/gateway.md)
    gateway_host: str = Field("127.0.0.1", description="address the ingest gateway's HTTP API binds")
    gateway_port: int = Field(8088, ge=1, le=65535, description="port of the ingest gateway's HTTP API")
    gateway_tls_cert_file: Path | None = Field(
        None, description="PEM certificate chain the gateway serves HTTPS with (with gateway_tls_key_file); "
        "unset: plain HTTP"
    )
    gateway_tls_key_file: Path | None = Field(None, description="PEM private key of gateway_tls_cert_file")
    gateway_allow_plaintext: bool = Field(
        False, description="let the gateway serve plain HTTP beyond the loopback address (only behind a "
        "TLS-terminating proxy)"
    )
    gateway_ca_file: Path | None = Field(
        None, description="PEM file of the CA(s) the gateway's certificate must chain to, for `replay` and "
        "`simulate --via-gateway https://...`; unset: the system's"
    )
    gateway_database_url: str = Field(
        "postgresql://vitalrisk_gateway@127.0.0.1:15432/vitalrisk",
        description="libpq URL the gateway looks device tokens up with (the gateway role)",
    )
    gateway_max_body_bytes: int = Field(
        1_048_576, ge=1024, description="bytes of one upload as sent, compressed or not (413 beyond)"
    )
    gateway_max_decompressed_bytes: int = Field(
        8_388_608, ge=1024, description="bytes a gzip upload may expand to (413 beyond: a gzip bomb costs only this)"
    )
    gateway_rate_per_device: float = Field(
        5.0, gt=0, description="uploads per second one device may make on average (429 beyond)"
    )
    gateway_burst: int = Field(20, ge=1, description="uploads one device may make at once after a quiet spell")
    gateway_idempotency_s: float = Field(
        900.0, gt=0, description="how long the gateway recognises a retried upload and accepts it once"
    )
    gateway_idempotency_keys: int = Field(
        200_000, ge=1, description="most uploaded messages remembered for idempotency (oldest forgotten first)"
    )
    gateway_auth_cache_s: float = Field(
        2.0, ge=0, description="how long a token lookup is reused: a revocation takes effect within this"
    )
    gateway_produce_timeout_s: float = Field(
        5.0, gt=0, description="how long an upload waits for the broker's acknowledgement before 503"
    )

    # Models (issue 5)
    snapshot_key: SecretStr | None = Field(
        None, description="HMAC-SHA256 key that signs model snapshots (at least 32 characters); "
        "unset: snapshots can be neither written nor loaded"
    )
    model: str = Field("logreg", pattern="^(logreg|hat)$", description="risk model: logreg or hat")
    model_seed: int = Field(42, description="seed of the model's initial weights and negative sampling")
    model_patient_inputs: str = Field(
        "age_band", pattern="^(none|age_band|diagnoses|age_band,diagnoses)$",
        description="what the model knows of a patient besides the vitals: age_band, diagnoses, both "
        "(age_band,diagnoses) or none; trainer and workers must agree"
    )
    label_horizon_ms: int = Field(
        12 * 3_600_000, gt=0, description="an outcome this soon after a scored window makes it positive"
    )
    outcome_grace_ms: int = Field(
        30 * 60_000, ge=0, description="how late after its onset an outcome may arrive and still label windows"
    )
    snapshot_every: int = Field(5_000, gt=0, description="the trainer publishes a snapshot after this many "
                                "labelled windows...")
    snapshot_every_ms: int = Field(3_600_000, gt=0, description="...or this much event time, whichever is first")

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap_list(cls, value: str) -> str:
        kafka_servers(value)
        return value

    @field_validator("alerter_api_token")
    @classmethod
    def _long_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_API_TOKEN_CHARS:
            raise ValueError(f"must be at least {MIN_API_TOKEN_CHARS} characters, e.g. the output of "
                             "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'")
        return value

    @field_validator("kafka_ca_file", "kafka_cert_file", "kafka_key_file", *_TLS_FILES, "gateway_ca_file")
    @classmethod
    def _readable_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError("no such file")
        return value

    @model_validator(mode="before")
    @classmethod
    def _no_unknown_variables(cls, data: object) -> object:
        # pydantic-settings' environment source drops unknown names even with extra="forbid"
        unknown = unknown_variables(os.environ, {f"VITALS_{name.upper()}" for name in cls.model_fields})
        if unknown:
            raise ValueError(f"unknown variable{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}: "
                             "not a vitalrisk setting (docs/configuration.md lists them); unset it")
        return data

    @model_validator(mode="after")
    def _durability_fits(self) -> Self:
        if self.min_insync_replicas > self.replication_factor:
            raise ValueError(f"VITALS_MIN_INSYNC_REPLICAS={self.min_insync_replicas} exceeds "
                             f"VITALS_REPLICATION_FACTOR={self.replication_factor}: no write could ever be "
                             "acknowledged; lower it or raise the replication factor")
        return self

    @model_validator(mode="after")
    def _kafka_security_fits(self) -> Self:
        protocol = self.kafka_security_protocol
        sasl, tls = protocol.startswith("SASL_"), protocol in ("SSL", "SASL_SSL")
        given = f"VITALS_KAFKA_SECURITY_PROTOCOL={protocol}"
        if sasl and (self.kafka_username is None or self.kafka_password is None):
            raise ValueError(f"{given} needs VITALS_KAFKA_USERNAME and VITALS_KAFKA_PASSWORD")
        if not sasl and (self.kafka_username is not None or self.kafka_password is not None):
            raise ValueError(f"{given} sends no username or password; unset VITALS_KAFKA_USERNAME and "
                             "VITALS_KAFKA_PASSWORD or use SASL_SSL")
        files = [name for name in ("kafka_ca_file", "kafka_cert_file", "kafka_key_file") if getattr(self, name)]
        if files and not tls:
            raise ValueError(f"{given} uses no TLS; unset VITALS_{files[0].upper()} or use SSL or SASL_SSL")
        if self.kafka_key_file is not None and self.kafka_cert_file is None:
            raise ValueError("VITALS_KAFKA_KEY_FILE needs VITALS_KAFKA_CERT_FILE, the certificate it is the key of")
        return self

    @model_validator(mode="after")
    def _tls_pairs(self) -> Self:
        for cert, key in (_TLS_FILES[0:2], _TLS_FILES[2:4]):
            if (getattr(self, cert) is None) != (getattr(self, key) is None):
                given, missing = (cert, key) if getattr(self, key) is None else (key, cert)
                raise ValueError(f"VITALS_{given.upper()} needs VITALS_{missing.upper()}: set both (HTTPS) "
                                 "or neither (plain HTTP)")
        return self

    @field_validator(*_DATABASE_URLS)
    @classmethod
    def _libpq_url(cls, value: str | None) -> str | None:
        return None if value is None else check_database_url(value)

    def for_service(self, role: str) -> Settings:
        """These settings for the service that connects as ``role``: a database URL naming no user names it.

        >>> Settings().for_service(WORKER_ROLE).database_url
        'postgresql://vitalrisk_worker@127.0.0.1:15432/vitalrisk'
        >>> Settings(database_url="postgresql://me@127.0.0.1/v").for_service(WORKER_ROLE).database_url
        'postgresql://me@127.0.0.1/v'
        """
        return self.model_copy(update={"database_url": with_default_role(self.database_url, role)})

    def __repr_args__(self) -> Iterator[tuple[str | None, object]]:
        """Pydantic's repr, database passwords shown as ``***``.

        >>> "pw" in repr(Settings(database_url="postgresql://w:pw@127.0.0.1/v"))
        False
        """
        for name, value in super().__repr_args__():
            yield name, redact_url(value) if name in _DATABASE_URLS and isinstance(value, str) else value

    def as_env(self) -> dict[str, str]:
        """These settings as ``VITALS_*`` variables, for a child process to read back.

        >>> Settings(partitions=2).as_env()["VITALS_PARTITIONS"]
        '2'
        """
        env: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                continue
            env[f"VITALS_{name.upper()}"] = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
        return env
