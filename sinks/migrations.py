"""Versioned schema migrations, idempotent, recorded in ``schema_migrations``.

Migrations are the numbered files in ``sinks/sql/``: ``NNNN_name.sql`` runs everywhere;
a sibling ``NNNN_name.timescale.sql`` runs right after it, in the same transaction, when the
TimescaleDB extension is installed (hypertables, continuous aggregates, policies). The same
tables therefore exist on plain PostgreSQL and on TimescaleDB, and every board query runs on both.

A transaction-scoped advisory lock serialises concurrent migrators (several workers starting
at once); each migration and its record commit together or not at all.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from sinks.errors import MigrationFailed

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("sql")
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
#: Arbitrary but fixed key for pg_advisory_xact_lock, shared by every vitalrisk migrator.
_LOCK_KEY = 0x76697461  # "vita"


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered schema change, with its optional TimescaleDB-only companion."""

    version: int
    name: str
    sql: str
    timescale_sql: str | None


def discover(folder: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migrations in ``folder``, in version order.

    >>> [m.version for m in discover()][:1]
    [1]
    """
    found: list[Migration] = []
    for path in sorted(folder.glob("*.sql")):
        match = _NAME.match(path.name)
        if match is None:
            continue  # a .timescale.sql companion
        companion = path.with_name(f"{path.stem}.timescale.sql")
        found.append(Migration(int(match.group(1)), match.group(2), path.read_text(),
                               companion.read_text() if companion.exists() else None))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationFailed(f"two migrations share a version number: {versions}")
    return found


def timescale_available(conn: psycopg.Connection) -> bool:
    """Whether TimescaleDB is installed in this database, creating it if the server offers it."""
    offered = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone()
    if not offered:
        return False
    conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    return True


def migrate(url: str, *, folder: Path = MIGRATIONS_DIR) -> list[int]:
    """Apply every pending migration to the database at ``url``; return the versions applied.

    Run it as the schema owner (never the pipeline's writer role). Re-running is a no-op.
    """
    applied_now: list[int] = []
    with psycopg.connect(url, connect_timeout=10) as conn:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            conn.execute("""CREATE TABLE IF NOT EXISTS schema_migrations (
                                version    integer PRIMARY KEY,
                                name       text NOT NULL,
                                timescale  boolean NOT NULL,
                                applied_at timestamptz NOT NULL DEFAULT now())""")
            timescale = timescale_available(conn)
            done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            for migration in discover(folder):
                if migration.version in done:
                    continue
                logger.info("applying migration %04d_%s (timescale=%s)", migration.version,
                            migration.name, timescale)
                try:
                    conn.execute(migration.sql.encode())
                    if timescale and migration.timescale_sql:
                        conn.execute(migration.timescale_sql.encode())
                except psycopg.Error as exc:
                    raise MigrationFailed(f"migration {migration.version:04d}_{migration.name} failed: "
                                          f"{exc}".strip()) from exc
                conn.execute("INSERT INTO schema_migrations (version, name, timescale) VALUES (%s, %s, %s)",
                             (migration.version, migration.name, timescale))
                applied_now.append(migration.version)
            _grant(conn)
    return applied_now


def _grant(conn: psycopg.Connection) -> None:
    """Least privilege: the writer inserts and reads, the reader only reads; neither can alter."""
    dbname = conn.info.dbname
    conn.execute(sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO vitalrisk_writer")
                 .format(sql.Identifier(dbname)))
    conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO vitalrisk_reader").format(sql.Identifier(dbname)))
    conn.execute("GRANT USAGE ON SCHEMA public TO vitalrisk_writer, vitalrisk_reader")
    conn.execute("GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA public TO vitalrisk_writer")
    conn.execute("REVOKE INSERT ON schema_migrations FROM vitalrisk_writer")
    conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO vitalrisk_reader")


def current_version(url: str) -> int:
    """Highest applied migration, 0 for an empty database."""
    with psycopg.connect(url, connect_timeout=10) as conn:
        exists = conn.execute("SELECT to_regclass('schema_migrations')").fetchone()
        if not exists or exists[0] is None:
            return 0
        row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
        return int(row[0]) if row else 0
