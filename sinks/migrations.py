"""Versioned schema migrations, idempotent, recorded in ``schema_migrations``.

Migrations are the numbered files in ``sinks/sql/``. ``NNNN_name.sql`` runs everywhere; a
sibling ``NNNN_name.timescale.sql`` runs right after it when the TimescaleDB extension is
installed (hypertables, continuous aggregates, compression), and a sibling
``NNNN_name.plain.sql`` runs instead when it is not (views that stand in for continuous
aggregates). The same table and view names therefore exist on plain PostgreSQL and on
TimescaleDB, and every board query runs on both.

A file runs in one transaction together with its companions and its ``schema_migrations``
record, unless one of them starts with the header line ``-- vitalrisk: no-transaction``
(TimescaleDB refuses ``CREATE MATERIALIZED VIEW ... WITH (timescaledb.continuous) ... WITH DATA``
inside a transaction block). Such a file runs statement by statement in autocommit mode, and
the migration is recorded only after its last statement: every statement in it must be
idempotent (``IF NOT EXISTS``, ``if_not_exists => true``), so a migration interrupted halfway
is completed by the next run.

A session-level advisory lock serialises concurrent migrators (several workers starting at
once). After every run, whether or not anything was pending, the runner stores the retention
and compression days it was given, applies them as TimescaleDB policies, and grants the
pipeline's roles what they need (:func:`grant`).
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import psycopg
from psycopg import sql

from kernel.settings import ALERTER_ROLE, DEPRECATED_WRITER_ROLE, READER_ROLE, TRAINER_ROLE, WORKER_ROLE
from sinks.errors import MigrationFailed

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("sql")
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
#: Header line that makes a migration file run statement by statement, outside a transaction.
NO_TRANSACTION = "-- vitalrisk: no-transaction"
#: Arbitrary but fixed key for pg_advisory_lock, shared by every vitalrisk migrator.
_LOCK_KEY = 0x76697461  # "vita"
#: The role worker, trainer and alerter shared before each had its own (deprecated; see the CHANGELOG).
WRITER_ROLE = DEPRECATED_WRITER_ROLE
#: Tables the deprecated writer may read but never write: the runner's own bookkeeping.
_OWNER_ONLY_TABLES = ("schema_migrations", "sink_policies")
#: The plain PostgreSQL maintenance function (SECURITY DEFINER, owned by the migrator): refreshes the rollups.
_MAINTENANCE = "vitalrisk_maintenance()"
_END_SILENCE = "end_silence(text, text)"

#: What each service's role may do, table by table (schema ``public``); the one place these grants are
#: written. ``UPDATE (a, b)`` limits an update to those columns. A table not named here is out of a role's
#: reach, a table added later included: unlike Grafana's reader, the services get no default privileges.
#: Migration 0012 creates the roles; the gateway's grants are in 0011 (its own schema).
SERVICE_GRANTS: dict[str, dict[str, tuple[str, ...]]] = {
    # Windows, scores and thinned readings, by COPY into session-local staging tables (TEMPORARY below).
    WORKER_ROLE: {"features": ("INSERT",), "risk_scores": ("INSERT",), "readings": ("INSERT",)},
    # Registers model versions (and reads them back to resume); records outcomes and drift/fairness events.
    TRAINER_ROLE: {"model_registry": ("SELECT", "INSERT"), "outcomes": ("INSERT",), "ops_events": ("INSERT",)},
    # Alert state, episodes and their history, the outbox and its audit, acknowledgements and silences.
    ALERTER_ROLE: {
        "alert_state": ("SELECT", "INSERT", "UPDATE (kafka_partition, state, updated_at)"),
        "alerts": ("SELECT", "INSERT", "UPDATE (state, fired_at, resolved_at, updated_at, acknowledged_by, "
                   "acknowledged_at, escalated_at, notified_at, last_notified_at, peak, model_name, model_version)"),
        "alert_events": ("INSERT",),
        "alert_notifications": ("SELECT", "INSERT"),
        "webhook_deliveries": ("SELECT", "INSERT"),
        "webhook_deadletters": ("SELECT", "INSERT"),
        "acknowledgements": ("SELECT", "INSERT"),
        "silences": ("SELECT", "INSERT"),
    },
}
#: Roles that may create session-local temporary tables (the worker's COPY staging).
_TEMPORARY_ROLES = (WORKER_ROLE, WRITER_ROLE)
#: Roles that may call the maintenance function (the worker refreshes the rollups after its commits).
_MAINTENANCE_ROLES = (WORKER_ROLE, WRITER_ROLE)
#: Roles that may end a silence early, through the owner's function only (migration 0013).
_SILENCE_ENDING_ROLES = (ALERTER_ROLE, WRITER_ROLE)
#: Which sink_policies column governs the retention of each hypertable or continuous aggregate.
_RETENTION = (("features", "raw_retention_days"), ("readings", "raw_retention_days"),
              ("risk_scores", "scores_retention_days"), ("vitals_5m", "rollup_retention_days"),
              ("vitals_1h", "rollup_retention_days"), ("risk_5m", "rollup_retention_days"),
              ("risk_1h", "rollup_retention_days"))
_COMPRESSED = ("features", "readings", "risk_scores")


@dataclass(frozen=True, slots=True)
class Script:
    """One SQL file of a migration.

    Examples
    --------
    >>> Script.parse("-- vitalrisk: no-transaction\\nSELECT 1;").transactional
    False
    >>> Script.parse("SELECT 1;").transactional
    True
    """

    text: str
    transactional: bool

    @classmethod
    def parse(cls, text: str) -> Script:
        first = text.lstrip().split("\n", 1)[0].strip()
        return cls(text, first != NO_TRANSACTION)


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered schema change with its optional TimescaleDB-only and plain-only companions."""

    version: int
    name: str
    sql: str
    timescale_sql: str | None = None
    plain_sql: str | None = None

    def scripts(self, timescale: bool) -> list[Script]:
        """The files to run, in order, on a database with or without TimescaleDB.

        >>> m = Migration(2, "x", "SELECT 1;", timescale_sql="SELECT 2;", plain_sql="SELECT 3;")
        >>> [s.text for s in m.scripts(timescale=True)], [s.text for s in m.scripts(timescale=False)]
        (['SELECT 1;', 'SELECT 2;'], ['SELECT 1;', 'SELECT 3;'])
        """
        companion = self.timescale_sql if timescale else self.plain_sql
        return [Script.parse(text) for text in (self.sql, companion) if text is not None]

    @property
    def checksum(self) -> str:
        """SHA-256 over the base file and both companions, to notice a file edited after it ran."""
        digest = hashlib.sha256()
        for text in (self.sql, self.timescale_sql or "", self.plain_sql or ""):
            digest.update(text.encode())
            digest.update(b"\0")
        return digest.hexdigest()


class _PolicySettings(Protocol):
    @property
    def sink_raw_retention_days(self) -> int: ...
    @property
    def sink_scores_retention_days(self) -> int: ...
    @property
    def sink_rollup_retention_days(self) -> int: ...
    @property
    def sink_compress_after_days(self) -> int: ...


@dataclass(frozen=True, slots=True)
class SinkPolicies:
    """Retention and compression, in days; 0 keeps data for ever (or never compresses).

    ``raw`` covers ``features`` and ``readings``; ``rollup`` the continuous aggregates (on
    plain PostgreSQL the rollup views are computed from the raw tables and follow their
    retention). Compression applies on TimescaleDB only.

    Examples
    --------
    >>> SinkPolicies(raw_retention_days=30).scores_retention_days
    0
    >>> SinkPolicies(compress_after_days=-1)
    Traceback (most recent call last):
    ...
    ValueError: compress_after_days must be >= 0 days, got -1
    """

    raw_retention_days: int = 0
    scores_retention_days: int = 0
    rollup_retention_days: int = 0
    compress_after_days: int = 7

    def __post_init__(self) -> None:
        for name in self.__slots__:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be >= 0 days, got {value!r}")

    @classmethod
    def from_settings(cls, settings: _PolicySettings) -> SinkPolicies:
        """The policies named by ``VITALS_SINK_*_DAYS`` settings."""
        return cls(settings.sink_raw_retention_days, settings.sink_scores_retention_days,
                   settings.sink_rollup_retention_days, settings.sink_compress_after_days)


def discover(folder: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migrations in ``folder``, in version order.

    >>> [m.version for m in discover()][:3]
    [1, 2, 3]
    """
    found: list[Migration] = []
    for path in sorted(folder.glob("*.sql")):
        match = _NAME.match(path.name)
        if match is None:
            continue  # a .timescale.sql or .plain.sql companion
        companions = [path.with_name(f"{path.stem}.{kind}.sql") for kind in ("timescale", "plain")]
        timescale_sql, plain_sql = (p.read_text() if p.exists() else None for p in companions)
        found.append(Migration(int(match.group(1)), match.group(2), path.read_text(), timescale_sql, plain_sql))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationFailed(f"two migrations share a version number: {versions}")
    return found


def split_statements(text: str) -> list[str]:
    """Split SQL into statements at top-level semicolons, for files run outside a transaction.

    Quotes, quoted identifiers, dollar-quoted bodies and comments are respected; comment-only
    pieces are dropped. (A multi-statement string sent at once would run as one implicit
    transaction, which is what such files must avoid.)

    Examples
    --------
    >>> split_statements("SELECT ';'; -- a; comment\\nDO $x$ BEGIN PERFORM 1; END $x$;\\n/* ; */")
    ["SELECT ';'", '-- a; comment\\nDO $x$ BEGIN PERFORM 1; END $x$']
    """
    statements: list[str] = []
    start = i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == "-" and text.startswith("--", i):
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
        elif c == "/" and text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
        elif c in "'\"":
            end = text.find(c, i + 1)
            while end >= 0 and text.startswith(c * 2, end):  # doubled quote inside the literal
                end = text.find(c, end + 2)
            i = n if end < 0 else end + 1
        elif c == "$" and (tag := re.match(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$", text[i:])):
            end = text.find(tag.group(0), i + len(tag.group(0)))
            i = n if end < 0 else end + len(tag.group(0))
        elif c == ";":
            statements.append(text[start:i])
            i += 1
            start = i
        else:
            i += 1
    statements.append(text[start:])
    return [s.strip() for s in statements if _has_code(s)]


def _has_code(statement: str) -> bool:
    without_comments = re.sub(r"--[^\n]*|/\*.*?\*/", "", statement, flags=re.S)
    return bool(without_comments.strip())


#: How migrations choose between TimescaleDB and plain PostgreSQL (``VITALS_SINK_TIMESCALE``).
TIMESCALE_MODES = ("auto", "on", "off")


def timescale_available(conn: psycopg.Connection, mode: str = "auto") -> bool:
    """Whether to build the TimescaleDB schema, creating the extension when the server offers it.

    ``auto`` uses TimescaleDB when the server can load it and plain PostgreSQL otherwise, with
    one warning line when the extension is installed but unusable (not preloaded, or the
    migrator may not create it); ``on`` makes those cases errors; ``off`` never creates it.

    Raises
    ------
    MigrationFailed
        ``on`` and the extension cannot be used; ``off`` and the database already has it.
    """
    if mode not in TIMESCALE_MODES:
        raise ValueError(f"mode must be one of {TIMESCALE_MODES}, got {mode!r}")
    if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone():
        if mode == "off":
            raise MigrationFailed(f"database {conn.info.dbname!r} already has the timescaledb extension; "
                                  "VITALS_SINK_TIMESCALE=off cannot undo that")
        return True
    if mode == "off":
        return False
    offered = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone()
    preloaded = "timescaledb" in str(conn.execute("SHOW shared_preload_libraries").fetchone())
    reason = None
    if not offered:
        reason = "the server does not offer the timescaledb extension"
    elif not preloaded:
        # CREATE EXTENSION would end the session with FATAL "must be preloaded".
        reason = ("timescaledb is installed on the server but not in shared_preload_libraries "
                  "(add shared_preload_libraries = 'timescaledb' to postgresql.conf and restart to use it)")
    else:
        try:
            with conn.transaction():
                conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        except psycopg.Error as exc:
            reason = f"timescaledb is offered but could not be created ({str(exc).strip()})"
    if reason is None:
        return True
    if mode == "on":
        raise MigrationFailed(f"VITALS_SINK_TIMESCALE=on, but {reason}")
    if offered:
        logger.warning("%s: using plain PostgreSQL", reason)
    return False


def migrate(url: str, *, folder: Path = MIGRATIONS_DIR, policies: SinkPolicies | None = None,
            timescale: str = "auto") -> list[int]:
    """Apply every pending migration to the database at ``url``; return the versions applied.

    Run it as the schema owner (never the pipeline's writer role). Re-running is a no-op apart
    from re-applying ``policies`` (when given; otherwise the stored ones stay) and the grants.
    ``timescale`` is ``auto``, ``on`` or ``off`` (:func:`timescale_available`).

    Raises
    ------
    MigrationFailed
        A migration's SQL failed; the database stays at the last migration that completed.
    """
    applied_now: list[int] = []
    try:
        with psycopg.connect(url, connect_timeout=10, autocommit=True,
                             application_name="vitalrisk-migrate") as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
            try:
                with conn.transaction():
                    conn.execute("""CREATE TABLE IF NOT EXISTS schema_migrations (
                                        version    integer PRIMARY KEY,
                                        name       text NOT NULL,
                                        timescale  boolean NOT NULL,
                                        applied_at timestamptz NOT NULL DEFAULT now())""")
                    conn.execute("ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS checksum text")
                history = conn.execute("SELECT bool_and(timescale) FROM schema_migrations").fetchone()
                if history is not None and history[0] is False:
                    # Built plain: TimescaleDB's companions would not fit these tables.
                    if timescale == "on":
                        raise MigrationFailed("VITALS_SINK_TIMESCALE=on, but this database was migrated as plain "
                                              "PostgreSQL; migrate a new database to use TimescaleDB")
                    use_timescale = False
                else:
                    use_timescale = timescale_available(conn, timescale)
                done = {int(row[0]): row[1] for row in
                        conn.execute("SELECT version, checksum FROM schema_migrations")}
                for migration in discover(folder):
                    if migration.version in done:
                        if done[migration.version] not in (None, migration.checksum):
                            logger.warning("migration %04d_%s changed after it was applied; not re-run",
                                           migration.version, migration.name)
                        continue
                    _apply(conn, migration, use_timescale)
                    applied_now.append(migration.version)
                with conn.transaction():
                    if policies is not None:
                        _store_policies(conn, policies)
                    if use_timescale:
                        _apply_timescale_policies(conn)
                    grant(conn, ours=folder == MIGRATIONS_DIR)
            finally:
                if not conn.closed:
                    try:
                        conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
                    except psycopg.Error:
                        pass  # the session ends right after, releasing the lock anyway
    except MigrationFailed:
        raise
    except psycopg.Error as exc:
        raise MigrationFailed(f"migrating the database failed: {str(exc).strip()}") from exc
    return applied_now


def _apply(conn: psycopg.Connection, migration: Migration, timescale: bool) -> None:
    """Run one migration's scripts and record it; see the module docstring for transactions."""
    label = f"{migration.version:04d}_{migration.name}"
    scripts = migration.scripts(timescale)
    logger.info("applying migration %s (timescale=%s)", label, timescale)
    record = ("INSERT INTO schema_migrations (version, name, timescale, checksum) VALUES (%s, %s, %s, %s)",
              (migration.version, migration.name, timescale, migration.checksum))
    try:
        if all(script.transactional for script in scripts):
            with conn.transaction():
                for script in scripts:
                    conn.execute(script.text.encode())
                conn.execute(*record)
            return
        for script in scripts:
            if script.transactional:
                with conn.transaction():
                    conn.execute(script.text.encode())
            else:
                for statement in split_statements(script.text):
                    conn.execute(statement.encode())
        with conn.transaction():
            conn.execute(*record)
    except psycopg.Error as exc:
        raise MigrationFailed(f"migration {label} failed: {str(exc).strip()}") from exc


def _store_policies(conn: psycopg.Connection, policies: SinkPolicies) -> None:
    conn.execute("""UPDATE sink_policies SET raw_retention_days = %s, scores_retention_days = %s,
                           rollup_retention_days = %s, compress_after_days = %s, updated_at = now()
                    WHERE (raw_retention_days, scores_retention_days, rollup_retention_days,
                           compress_after_days) IS DISTINCT FROM (%s, %s, %s, %s)""",
                 (policies.raw_retention_days, policies.scores_retention_days, policies.rollup_retention_days,
                  policies.compress_after_days) * 2)


def stored_policies(conn: psycopg.Connection) -> SinkPolicies:
    """The retention and compression days the database currently applies."""
    row = conn.execute("SELECT raw_retention_days, scores_retention_days, rollup_retention_days, "
                       "compress_after_days FROM sink_policies").fetchone()
    if row is None:
        raise MigrationFailed("sink_policies is empty: the database is not migrated")
    return SinkPolicies(*(int(v) for v in row))


def _apply_timescale_policies(conn: psycopg.Connection) -> None:
    """Make TimescaleDB's retention and compression jobs match ``sink_policies``.

    Each job is removed and re-added (``if_exists``/``if_not_exists``), so a changed number of
    days takes effect at the next migrate; 0 days leaves no job.
    """
    policies = stored_policies(conn)
    for relation, column in _RETENTION:
        if conn.execute("SELECT to_regclass(%s)", (relation,)).fetchone() == (None,):
            continue
        days = getattr(policies, column)
        conn.execute("SELECT remove_retention_policy(%s::regclass, if_exists => true)", (relation,))
        if days:
            conn.execute("SELECT add_retention_policy(%s::regclass, drop_after => make_interval(days => %s::int))",
                         (relation, days))
    for relation in _COMPRESSED:
        conn.execute("SELECT remove_compression_policy(%s::regclass, if_exists => true)", (relation,))
        if policies.compress_after_days:
            conn.execute("SELECT add_compression_policy(%s::regclass, "
                         "compress_after => make_interval(days => %s::int))",
                         (relation, policies.compress_after_days))


def grant(conn: psycopg.Connection, *, ours: bool = True) -> None:
    """Least privilege, re-applied after every migrate so new tables are covered.

    ``ours``: the schema is this project's migrations' (not a test's own folder), so every table
    :data:`SERVICE_GRANTS` names must exist; otherwise the grants of missing tables are skipped.

    Each service's role gets exactly :data:`SERVICE_GRANTS`: everything else it held on the tables
    of ``public`` is revoked first, in the same transaction, so a privilege taken out of the table
    is gone after the next migrate. The worker may also create its session's temporary staging
    tables and call the maintenance function. Grafana's reader may connect and read every table,
    those created later too (default privileges). The deprecated writer keeps, for one release,
    what it had: read every table, insert into the pipeline's tables (not the migrator's
    bookkeeping), temporary tables, the maintenance function. None of them owns anything, so none
    can ALTER or DROP, and none may create objects in the schema; PUBLIC loses ``TEMPORARY`` on
    the database, ``CREATE`` on the schema and ``EXECUTE`` on the maintenance function.
    """
    db = sql.Identifier(conn.info.dbname)
    writer, reader = sql.Identifier(WRITER_ROLE), sql.Identifier(READER_ROLE)
    services = sql.SQL(", ").join(sql.Identifier(role) for role in SERVICE_GRANTS)
    statements: list[sql.SQL | sql.Composed] = [
        sql.SQL("REVOKE TEMPORARY ON DATABASE {} FROM PUBLIC").format(db),
        sql.SQL("GRANT CONNECT ON DATABASE {} TO {}, {}, {}").format(db, writer, reader, services),
        sql.SQL("REVOKE CREATE ON SCHEMA public FROM PUBLIC"),
        sql.SQL("GRANT USAGE ON SCHEMA public TO {}, {}, {}").format(writer, reader, services),
        sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}, {}").format(writer, reader),
        sql.SQL("GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {}").format(writer),
        sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {}").format(reader),
        sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT ON TABLES TO {}").format(writer),
        sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE ON SEQUENCES TO {}").format(writer),
        # Table-level revokes take the column-level privileges (UPDATE (a, b)) with them.
        sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {}").format(services),
        sql.SQL("REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {}").format(services),
        sql.SQL("REVOKE TEMPORARY ON DATABASE {} FROM {}").format(db, services),
    ]
    statements += [sql.SQL("GRANT TEMPORARY ON DATABASE {} TO {}").format(db, sql.Identifier(role))
                   for role in _TEMPORARY_ROLES]
    tables = [row[0] for row in conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND c.relpersistence = 'p' "
        "ORDER BY c.relname")]
    for table in tables:
        if table in _OWNER_ONLY_TABLES:
            statements.append(sql.SQL("REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON {} FROM {}")
                              .format(sql.Identifier(table), writer))
        else:
            statements.append(sql.SQL("GRANT INSERT ON {} TO {}").format(sql.Identifier(table), writer))
    for role, grants in SERVICE_GRANTS.items():
        for table, privileges in grants.items():
            if table not in tables and not ours:
                continue
            if table not in tables:
                raise MigrationFailed(f"SERVICE_GRANTS names table {table!r} for {role}, but the migrations "
                                      "made no such table")
            statements.append(sql.SQL("GRANT {} ON {} TO {}").format(
                sql.SQL(", ").join(sql.SQL(privilege) for privilege in privileges), sql.Identifier(table),
                sql.Identifier(role)))
    if conn.execute("SELECT to_regprocedure(%s)", (_MAINTENANCE,)).fetchone() != (None,):
        statements.append(sql.SQL("REVOKE EXECUTE ON FUNCTION {} FROM PUBLIC").format(sql.SQL(_MAINTENANCE)))
        statements += [sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(sql.SQL(_MAINTENANCE), sql.Identifier(role))
                       for role in _MAINTENANCE_ROLES]
    if conn.execute("SELECT to_regprocedure(%s)", (_END_SILENCE,)).fetchone() != (None,):
        statements.append(sql.SQL("REVOKE EXECUTE ON FUNCTION {} FROM PUBLIC").format(sql.SQL(_END_SILENCE)))
        statements += [sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(sql.SQL(_END_SILENCE), sql.Identifier(role))
                       for role in _SILENCE_ENDING_ROLES]
    for statement in statements:
        conn.execute(statement)


def current_version(url: str) -> int:
    """Highest applied migration, 0 for an empty database."""
    with psycopg.connect(url, connect_timeout=10) as conn:
        exists = conn.execute("SELECT to_regclass('schema_migrations')").fetchone()
        if not exists or exists[0] is None:
            return 0
        row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
        return int(row[0]) if row else 0
