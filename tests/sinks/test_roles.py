"""Least privilege on the real PostgreSQL: the reader only reads, the writer only reads and inserts."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors

from tests.sinks.conftest import Database

pytestmark = pytest.mark.integration

SINK_TABLES = ("features", "risk_scores", "readings", "model_registry", "ops_events")
ROLLUPS = ("vitals_5m", "vitals_1h", "risk_5m", "risk_1h")
ROW = {
    "features": "INSERT INTO features VALUES ('pt-1', 'hr', now(), now(), 1, 1, 1, 1)",
    "risk_scores": "INSERT INTO risk_scores (patient_id, window_start, window_end, model_name, model_version, "
                   "score, news2_total, news2_band, inputs, contributions) "
                   "VALUES ('pt-1', now(), now(), 'm', '1', 0, 0, 'low', '{}', '{}')",
    "readings": "INSERT INTO readings VALUES ('pt-1', 'hr', now(), 1, 'dev-1')",
    "model_registry": "INSERT INTO model_registry (model_name, model_version, created_at, examples_seen, model, "
                      "model_sha256) VALUES ('m', '1', now(), 0, 'x', encode(sha256('x'), 'hex'))",
    "ops_events": "INSERT INTO ops_events (ts, kind, subject) VALUES (now(), 'drift', 'm')",
}

UPDATABLE = {"features": "mean = 0", "risk_scores": "score = 0", "readings": "value = 0",
             "model_registry": "examples_seen = 0", "ops_events": "details = '{}'"}


def _refused(conn: psycopg.Connection, statement: str) -> None:
    """``statement`` fails for lack of privilege (and leaves the session usable)."""
    with pytest.raises(errors.InsufficientPrivilege):
        with conn.transaction():
            conn.execute(statement)


def test_reader_reads_everything_and_writes_nothing(db: Database) -> None:
    with psycopg.connect(db.reader_url, autocommit=True) as conn:
        # Sessions are read-only by default (defence in depth) ...
        assert conn.execute("SHOW default_transaction_read_only").fetchone() == ("on",)
        for relation in SINK_TABLES + ROLLUPS:
            conn.execute(f"SELECT * FROM {relation} LIMIT 1")  # noqa: S608 - fixed names
        # ... but the grants alone forbid writing: switch read-only off and try.
        conn.execute("SET default_transaction_read_only = off")
        for table, insert in ROW.items():
            _refused(conn, insert)
            _refused(conn, f"UPDATE {table} SET {UPDATABLE[table]}")  # noqa: S608 - table names from our own constants
            _refused(conn, f"DELETE FROM {table}")  # noqa: S608 - table names from our own constants
            _refused(conn, f"TRUNCATE {table}")
        _refused(conn, "CREATE TABLE grafana_scratch (x integer)")
        _refused(conn, "CREATE SCHEMA grafana_scratch")
        _refused(conn, "CREATE TEMP TABLE grafana_scratch (x integer)")
        _refused(conn, "CREATE VIEW grafana_scratch AS SELECT 1")
        _refused(conn, "SELECT vitalrisk_maintenance()")
        _refused(conn, "INSERT INTO schema_migrations VALUES (999, 'x', false)")


def test_writer_inserts_but_cannot_update_delete_or_alter(db: Database) -> None:
    with psycopg.connect(db.writer_url, autocommit=True) as conn:
        for table, insert in ROW.items():
            conn.execute(insert)
            _refused(conn, f"DELETE FROM {table}")  # noqa: S608 - table names from our own constants
            _refused(conn, f"TRUNCATE {table}")
            _refused(conn, f"DROP TABLE {table}")
            _refused(conn, f"ALTER TABLE {table} ADD COLUMN sneaky integer")
            _refused(conn, f"CREATE INDEX sneaky ON {table} ((1))")
        for table, assignment in UPDATABLE.items():
            _refused(conn, f"UPDATE {table} SET {assignment}")  # noqa: S608 - table names from our own constants
        for view in ROLLUPS:
            _refused(conn, f"DROP MATERIALIZED VIEW {view}")
            _refused(conn, f"REFRESH MATERIALIZED VIEW {view}")
        _refused(conn, "CREATE TABLE sneaky (x integer)")
        _refused(conn, "INSERT INTO schema_migrations VALUES (999, 'x', false)")
        _refused(conn, "UPDATE sink_policies SET raw_retention_days = 1")
        _refused(conn, "DELETE FROM schema_migrations")
        conn.execute("CREATE TEMP TABLE staging_is_allowed (x integer)")  # the writer's COPY staging
        conn.execute("SELECT vitalrisk_maintenance()")  # refresh + retention, through the definer only
        assert conn.execute("SELECT count(*) FROM features").fetchone() == (1,)


def test_default_privileges_cover_tables_the_migrator_creates_later(db: Database) -> None:
    with psycopg.connect(db.owner_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE later_table (x integer)")
    with psycopg.connect(db.writer_url, autocommit=True) as conn:
        conn.execute("INSERT INTO later_table VALUES (1)")
        _refused(conn, "DELETE FROM later_table")
    with psycopg.connect(db.reader_url, autocommit=True) as conn:
        assert conn.execute("SELECT x FROM later_table").fetchall() == [(1,)]
        conn.execute("SET default_transaction_read_only = off")
        _refused(conn, "INSERT INTO later_table VALUES (2)")


def test_neither_role_is_privileged(db: Database) -> None:
    with psycopg.connect(db.owner_url) as conn:
        rows = conn.execute("SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls FROM pg_roles "
                            "WHERE rolname IN ('vitalrisk_writer', 'vitalrisk_reader') ORDER BY 1").fetchall()
        owned = conn.execute("SELECT count(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner "
                             "WHERE r.rolname IN ('vitalrisk_writer', 'vitalrisk_reader')").fetchone()
    assert rows == [("vitalrisk_reader", False, False, False, False), ("vitalrisk_writer", False, False, False, False)]
    assert owned == (0,), "the pipeline's roles own nothing, so they cannot ALTER or DROP"
