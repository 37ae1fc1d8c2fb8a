"""Migrations on the real PostgreSQL: from empty, re-run as a no-op, transaction modes, policies."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from sinks.errors import MigrationFailed
from sinks.migrations import (
    NO_TRANSACTION,
    Migration,
    Script,
    SinkPolicies,
    current_version,
    discover,
    migrate,
    split_statements,
    stored_policies,
)
from sinks.timescale import refresh_rollups
from tests.sinks.conftest import Database

OUR_TABLES = ("features", "risk_scores", "readings", "model_registry", "ops_events")
ROLLUPS = ("vitals_5m", "vitals_1h", "risk_5m", "risk_1h")


def _schema(url: str) -> list[tuple[object, ...]]:
    """Everything a re-run could change: relations, columns, indexes, privileges, functions, policies."""
    with psycopg.connect(url) as conn:
        return [
            *conn.execute("SELECT c.relname, c.relkind, c.relacl::text FROM pg_class c "
                          "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' "
                          "ORDER BY 1").fetchall(),
            *conn.execute("SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns "
                          "WHERE table_schema = 'public' ORDER BY 1, 2").fetchall(),
            *conn.execute("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' "
                          "ORDER BY 1").fetchall(),
            *conn.execute("SELECT p.proname, p.prosecdef, p.proacl::text FROM pg_proc p JOIN pg_namespace n "
                          "ON n.oid = p.pronamespace WHERE n.nspname = 'public' ORDER BY 1").fetchall(),
            *conn.execute("SELECT defaclrole::regrole::text, defaclobjtype, defaclacl::text FROM pg_default_acl "
                          "ORDER BY 1, 2").fetchall(),
            *conn.execute("SELECT version, name, checksum FROM schema_migrations ORDER BY 1").fetchall(),
            *conn.execute("SELECT raw_retention_days, scores_retention_days, rollup_retention_days, "
                          "compress_after_days, updated_at FROM sink_policies").fetchall(),
        ]


# -- pure helpers -------------------------------------------------------------------------------


def test_split_statements_respects_quotes_dollar_bodies_and_comments() -> None:
    text = """
        -- header; with a semicolon
        CREATE TABLE "odd;name" (x text DEFAULT 'a;''b');
        CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $body$ SELECT 1; $body$;
        /* block ; comment */ SELECT $$;$$;
        -- trailing comment only;
    """
    statements = split_statements(text)
    assert len(statements) == 3
    assert statements[0].endswith("""DEFAULT 'a;''b')""")
    assert "$body$ SELECT 1; $body$" in statements[1]
    assert statements[2].endswith("SELECT $$;$$")


def test_script_header_and_companions_are_discovered() -> None:
    assert not Script.parse(f"\n{NO_TRANSACTION}\nSELECT 1;").transactional
    assert Script.parse("-- vitalrisk: something else\nSELECT 1;").transactional
    migrations = {m.version: m for m in discover()}
    assert {1, 2, 3, 4, 5, 6} <= set(migrations)
    assert migrations[6].plain_sql is not None and migrations[6].timescale_sql is not None
    assert not Script.parse(migrations[6].timescale_sql).transactional  # continuous aggregates WITH DATA
    assert Migration(9, "x", "a").checksum != Migration(9, "x", "a", timescale_sql="b").checksum


def test_policies_reject_negative_days() -> None:
    with pytest.raises(ValueError, match="raw_retention_days must be >= 0"):
        SinkPolicies(raw_retention_days=-1)


# -- against PostgreSQL -------------------------------------------------------------------------

@pytest.mark.integration
def test_migrate_from_empty_then_rerun_is_a_noop(empty_db: Database) -> None:
    assert current_version(empty_db.owner_url) == 0
    applied = migrate(empty_db.owner_url, timescale="off")
    assert applied == [m.version for m in discover()]
    assert current_version(empty_db.owner_url) == max(applied)
    with psycopg.connect(empty_db.owner_url) as conn:
        kinds: dict[str, str] = dict(conn.execute("SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n "
                                  "ON n.oid = c.relnamespace WHERE n.nspname = 'public'").fetchall())
        recorded = conn.execute("SELECT version, timescale, checksum IS NOT NULL FROM schema_migrations "
                                "ORDER BY 1").fetchall()
    assert all(kinds.get(t) == "r" for t in OUR_TABLES), kinds
    assert all(kinds.get(v) == "m" for v in ROLLUPS), "plain PostgreSQL: materialized views"
    assert recorded == [(v, False, True) for v in applied]

    before = _schema(empty_db.owner_url)
    assert migrate(empty_db.owner_url, timescale="off") == []
    assert migrate(empty_db.owner_url, timescale="off") == []
    assert _schema(empty_db.owner_url) == before, "a re-run changes nothing"


@pytest.mark.integration
def test_concurrent_migrators_apply_each_version_once(empty_db: Database) -> None:
    results: list[list[int]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(migrate(empty_db.owner_url, timescale="off"))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert sorted(results, key=len) == [[], [], [m.version for m in discover()]]


@pytest.mark.integration
def test_no_transaction_files_run_statement_by_statement_and_resume(empty_db: Database, tmp_path: Path) -> None:
    # CREATE INDEX CONCURRENTLY cannot run in a transaction block, like TimescaleDB's
    # continuous aggregates WITH DATA: it only works if the runner honours the header.
    (tmp_path / "0001_base.sql").write_text("CREATE TABLE IF NOT EXISTS t (x integer);")
    (tmp_path / "0002_index.sql").write_text(
        f"{NO_TRANSACTION}\nCREATE INDEX CONCURRENTLY IF NOT EXISTS t_x ON t (x);\n"
        "CREATE TABLE IF NOT EXISTS after_index (y integer);\nSELECT no_such_function();\n")
    (tmp_path / "0002_index.timescale.sql").write_text("SELECT this_would_fail_on_plain_postgres();")
    with pytest.raises(MigrationFailed, match="0002_index"):
        migrate(empty_db.owner_url, folder=tmp_path, timescale="off")
    with psycopg.connect(empty_db.owner_url) as conn:
        assert conn.execute("SELECT to_regclass('t_x') IS NOT NULL, to_regclass('after_index') IS NOT NULL"
                            ).fetchone() == (True, True), "statements before the failure stay applied"
        assert [r[0] for r in conn.execute("SELECT version FROM schema_migrations")] == [1], "0002 not recorded"

    # fixed, the next run completes it; every statement is idempotent
    (tmp_path / "0002_index.sql").write_text(
        f"{NO_TRANSACTION}\nCREATE INDEX CONCURRENTLY IF NOT EXISTS t_x ON t (x);\n"
        "CREATE TABLE IF NOT EXISTS after_index (y integer);\n")
    assert migrate(empty_db.owner_url, folder=tmp_path, timescale="off") == [2]
    assert migrate(empty_db.owner_url, folder=tmp_path, timescale="off") == []


@pytest.mark.integration
def test_a_failing_transactional_migration_leaves_nothing(empty_db: Database, tmp_path: Path) -> None:
    (tmp_path / "0001_ok.sql").write_text("CREATE TABLE one (x integer);")
    (tmp_path / "0002_bad.sql").write_text("CREATE TABLE two (x integer);\nSELECT 1/0;")
    (tmp_path / "0002_bad.plain.sql").write_text("CREATE TABLE two_plain (x integer);")
    with pytest.raises(MigrationFailed, match=r"0002_bad failed: division by zero"):
        migrate(empty_db.owner_url, folder=tmp_path, timescale="off")
    assert current_version(empty_db.owner_url) == 1
    with psycopg.connect(empty_db.owner_url) as conn:
        assert conn.execute("SELECT to_regclass('two'), to_regclass('two_plain')").fetchone() == (None, None)


@pytest.mark.integration
def test_policies_are_stored_and_enforced_on_plain_postgres(db: Database) -> None:
    policies = SinkPolicies(raw_retention_days=30, scores_retention_days=60)
    assert migrate(db.owner_url, timescale="off", policies=policies) == []
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    old, recent = now - timedelta(days=45), now - timedelta(days=1)
    with psycopg.connect(db.owner_url) as conn:
        assert stored_policies(conn) == SinkPolicies(30, 60, 0, 7)
        for ts in (old, recent):
            conn.execute("INSERT INTO features VALUES ('pt-1', 'heart_rate', %s, %s, 1, 70, 70, 70)",
                         (ts, ts + timedelta(minutes=1)))
            conn.execute("INSERT INTO risk_scores (patient_id, window_start, window_end, model_name, model_version,"
                         " score, news2_total, news2_band, inputs, contributions) VALUES ('pt-1', %s, %s, 'news2',"
                         " '1', 0, 0, 'low', '{}', '{}')", (ts, ts + timedelta(minutes=1)))
            conn.execute("INSERT INTO readings VALUES ('pt-1', 'heart_rate', %s, 70, 'dev-1')", (ts,))
    with psycopg.connect(db.writer_url) as conn:  # the pipeline's periodic call, as the writer
        refresh_rollups(conn)
        features = conn.execute("SELECT window_start FROM features").fetchall()
        scores = conn.execute("SELECT window_start FROM risk_scores ORDER BY 1").fetchall()
        readings = conn.execute("SELECT ts FROM readings").fetchall()
        rollup = conn.execute("SELECT bucket FROM vitals_1h").fetchall()
    assert features == [(recent,)] and readings == [(recent,)], "raw data older than 30 days dropped"
    assert scores == [(old,), (recent,)], "scores are kept for 60 days"
    assert len(rollup) == 1, "plain PostgreSQL rollups follow the raw tables"

    # stored policies survive a migrate that names none, and change when named
    migrate(db.owner_url, timescale="off")
    with psycopg.connect(db.owner_url) as conn:
        assert stored_policies(conn).raw_retention_days == 30
    migrate(db.owner_url, timescale="off", policies=SinkPolicies())
    with psycopg.connect(db.owner_url) as conn:
        assert stored_policies(conn) == SinkPolicies()
