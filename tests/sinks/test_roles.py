"""Least privilege on the real PostgreSQL: each service's role may do what its service does and nothing else.

The worker inserts windows, scores and readings and cannot touch alert state, silences or the outbox;
the trainer has the model registry, outcomes and ops events; the alerter the alert tables only; the
reader only SELECTs; none can DDL. The deprecated writer keeps its old grants for one release.
"""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors

from kernel.settings import (ALERTER_ROLE, DEPRECATED_WRITER_ROLE, GATEWAY_ROLE, READER_ROLE, TRAINER_ROLE,
                             WORKER_ROLE, role_url)
from sinks.migrations import SERVICE_GRANTS, migrate
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
#: One row for each table the alerter writes, and the outcomes the trainer records.
ALERT_ROW = {
    "alert_state": "INSERT INTO alert_state (patient_id, kafka_partition, state) VALUES ('pt-1', 0, '{}')",
    "alerts": "INSERT INTO alerts (alert_id, patient_id, kind, episode, severity, state, started_at) "
              "VALUES ('a-1', 'pt-1', 'news2_high', 1, 'critical', 'firing', now())",
    "alert_events": "INSERT INTO alert_events (alert_id, event, patient_id, kind, from_state, to_state, at) "
                    "VALUES ('a-1', 'firing', 'pt-1', 'news2_high', 'pending', 'firing', now())",
    "alert_notifications": "INSERT INTO alert_notifications (notification_id, alert_id, action, patient_id, kind, "
                           "severity, receivers, page) VALUES ('n-1', 'a-1', 'firing', 'pt-1', 'news2_high', "
                           "'critical', '{pager}', '{}')",
    "webhook_deliveries": "INSERT INTO webhook_deliveries (notification_id, receiver, attempt, outcome, duration_ms) "
                          "VALUES ('n-1', 'pager', 1, 'delivered', 1)",
    "webhook_deadletters": "INSERT INTO webhook_deadletters (notification_id, receiver, attempts, last_error, body) "
                           "VALUES ('n-1', 'pager', 3, 'x', '{}')",
    "acknowledgements": "INSERT INTO acknowledgements (alert_id, acknowledged_by, via) VALUES ('a-1', 'nurse', 'cli')",
    "silences": "INSERT INTO silences (silence_id, patient_id, starts_at, ends_at, created_by, reason) "
                "VALUES ('s-1', 'pt-1', now(), now() + interval '1 hour', 'nurse', 'x')",
}
OUTCOME_ROW = "INSERT INTO outcomes (patient_id, kind, onset, published_at) VALUES ('pt-1', 'icu', now(), now())"
#: Statements no role but the owner may run: schema changes of every kind.
DDL = ("CREATE TABLE sneaky (x integer)", "CREATE SCHEMA sneaky", "CREATE VIEW sneaky AS SELECT 1",
       "CREATE FUNCTION sneaky() RETURNS int LANGUAGE sql AS 'SELECT 1'", "ALTER TABLE features ADD COLUMN sneaky int",
       "CREATE INDEX sneaky ON features ((1))", "DROP TABLE silences", "DROP TABLE alert_notifications",
       "TRUNCATE alert_state", "ALTER TABLE alerts DISABLE ROW LEVEL SECURITY", "DROP SCHEMA gateway CASCADE")

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


def _as(db: Database, role: str) -> str:
    return role_url(db.writer_url, role)


def test_worker_inserts_its_rows_and_cannot_touch_alerts_silences_or_the_outbox(db: Database) -> None:
    with psycopg.connect(_as(db, WORKER_ROLE), autocommit=True) as conn:
        for table in ("features", "risk_scores", "readings"):
            conn.execute(ROW[table])
            conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {table}_stage AS SELECT * FROM {table} WITH NO DATA")  # noqa: S608 - our own table names
            with conn.cursor().copy(f"COPY {table} FROM STDIN") as copy:  # the writer's fast path
                copy.write(b"")
            _refused(conn, f"SELECT * FROM {table}")  # noqa: S608 - our own names; it writes, never reads patients back
            _refused(conn, f"UPDATE {table} SET {UPDATABLE[table]}")  # noqa: S608 - table names from our own constants
            _refused(conn, f"DELETE FROM {table}")  # noqa: S608 - table names from our own constants
        conn.execute("SELECT vitalrisk_maintenance()")  # refreshes the rollups, through the definer only
        for table, insert in ALERT_ROW.items():
            _refused(conn, insert)
            _refused(conn, f"SELECT * FROM {table}")  # noqa: S608 - table names from our own constants
            _refused(conn, f"DELETE FROM {table}")  # noqa: S608 - table names from our own constants
        _refused(conn, "UPDATE alerts SET acknowledged_by = 'forged'")
        _refused(conn, "UPDATE alert_state SET state = '{}'")
        _refused(conn, "SELECT * FROM end_silence('s-1', 'forged')")
        for table in ("model_registry", "ops_events"):
            _refused(conn, ROW[table])
        _refused(conn, OUTCOME_ROW)
        _refused(conn, "SELECT * FROM gateway.devices")
        _refused(conn, "INSERT INTO schema_migrations VALUES (999, 'x', false)")


def test_trainer_has_the_registry_outcomes_and_ops_events_only(db: Database) -> None:
    with psycopg.connect(_as(db, TRAINER_ROLE), autocommit=True) as conn:
        conn.execute(ROW["model_registry"])
        assert conn.execute("SELECT model_version FROM model_registry").fetchall() == [("1",)]
        conn.execute(OUTCOME_ROW)
        conn.execute(ROW["ops_events"])
        _refused(conn, "UPDATE model_registry SET examples_seen = 0")  # a published version never changes
        _refused(conn, "DELETE FROM model_registry")
        _refused(conn, "DELETE FROM outcomes")
        for table in ("features", "risk_scores", "readings"):
            _refused(conn, ROW[table])
            _refused(conn, f"SELECT * FROM {table}")  # noqa: S608 - table names from our own constants
        for insert in ALERT_ROW.values():
            _refused(conn, insert)
        _refused(conn, "CREATE TEMP TABLE scratch (x integer)")
        _refused(conn, "SELECT vitalrisk_maintenance()")


def test_alerter_keeps_alert_state_and_cannot_touch_the_pipelines_tables(db: Database) -> None:
    with psycopg.connect(_as(db, ALERTER_ROLE), autocommit=True) as conn:
        for table, insert in ALERT_ROW.items():
            conn.execute(insert)
            if table != "alert_events":
                assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (1,)  # noqa: S608 - table names from our own constants
        conn.execute("INSERT INTO alert_state (patient_id, kafka_partition, state) VALUES ('pt-1', 1, '{}') "
                     "ON CONFLICT (patient_id) DO UPDATE SET kafka_partition = EXCLUDED.kafka_partition")
        conn.execute("UPDATE alerts SET acknowledged_by = 'nurse', acknowledged_at = now() WHERE alert_id = 'a-1'")
        _refused(conn, "SELECT * FROM alert_events")  # history is written, never read back
        _refused(conn, "UPDATE alerts SET patient_id = 'pt-2'")  # only the state columns move
        _refused(conn, "UPDATE silences SET ends_at = now() + interval '1 year'")
        # ... it may end one early, only through the owner's function, which can only end it now
        assert conn.execute("SELECT count(*) FROM end_silence('s-1', 'nurse')").fetchone() == (1,)
        assert conn.execute("SELECT ends_at <= now(), ended_by FROM silences WHERE silence_id = 's-1'"
                            ).fetchall() == [(True, "nurse")]
        assert conn.execute("SELECT count(*) FROM end_silence('s-1', 'nurse')").fetchone() == (0,)  # ended once
        _refused(conn, "UPDATE acknowledgements SET acknowledged_by = 'someone else'")
        for table in ("alert_events", "alert_notifications", "webhook_deliveries", "acknowledgements"):
            _refused(conn, f"DELETE FROM {table}")  # noqa: S608 - our own table names; history and audit are append-only
        for table, insert in ROW.items():
            _refused(conn, insert)
            _refused(conn, f"SELECT * FROM {table} LIMIT 1")  # noqa: S608 - table names from our own constants
        _refused(conn, OUTCOME_ROW)
        _refused(conn, "CREATE TEMP TABLE scratch (x integer)")
        _refused(conn, "SELECT vitalrisk_maintenance()")


@pytest.mark.parametrize("role", [WORKER_ROLE, TRAINER_ROLE, ALERTER_ROLE, GATEWAY_ROLE, READER_ROLE,
                                  DEPRECATED_WRITER_ROLE])
def test_no_role_can_change_the_schema(db: Database, role: str) -> None:
    with psycopg.connect(_as(db, role), autocommit=True) as conn:
        conn.execute("SET default_transaction_read_only = off")  # the reader's sessions are read-only besides
        for statement in DDL:
            _refused(conn, statement)


def test_grants_converge_to_the_table_at_every_migrate(db: Database) -> None:
    with psycopg.connect(db.owner_url, autocommit=True) as conn:  # a grant made by hand, or by an older release
        conn.execute(f"GRANT INSERT, DELETE ON silences, alert_notifications TO {WORKER_ROLE}")
        conn.execute(f"GRANT UPDATE (state) ON alert_state TO {WORKER_ROLE}")
    migrate(db.owner_url, timescale="off")
    with psycopg.connect(_as(db, WORKER_ROLE), autocommit=True) as conn:
        for table in ("silences", "alert_notifications"):
            _refused(conn, ALERT_ROW[table])
        _refused(conn, "UPDATE alert_state SET state = '{}'")


def test_every_table_a_service_is_granted_exists_and_the_migration_made_each_role(db: Database) -> None:
    with psycopg.connect(db.owner_url) as conn:
        tables = {row[0] for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        roles = {row[0] for row in conn.execute("SELECT rolname FROM pg_roles WHERE rolcanlogin")}
    assert set(SERVICE_GRANTS) <= roles
    for role, grants in SERVICE_GRANTS.items():
        assert set(grants) <= tables, role


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
    for role in SERVICE_GRANTS:  # a service's role reaches a new table only once SERVICE_GRANTS names it
        with psycopg.connect(_as(db, role), autocommit=True) as conn:
            _refused(conn, "INSERT INTO later_table VALUES (1)")
            _refused(conn, "SELECT x FROM later_table")
    with psycopg.connect(db.writer_url, autocommit=True) as conn:
        conn.execute("INSERT INTO later_table VALUES (1)")
        _refused(conn, "DELETE FROM later_table")
    with psycopg.connect(db.reader_url, autocommit=True) as conn:
        assert conn.execute("SELECT x FROM later_table").fetchall() == [(1,)]
        conn.execute("SET default_transaction_read_only = off")
        _refused(conn, "INSERT INTO later_table VALUES (2)")


def test_no_role_is_privileged(db: Database) -> None:
    roles = sorted([*SERVICE_GRANTS, GATEWAY_ROLE, READER_ROLE, DEPRECATED_WRITER_ROLE])
    with psycopg.connect(db.owner_url) as conn:
        rows = conn.execute("SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, rolreplication "
                            "FROM pg_roles WHERE rolname = ANY(%s) ORDER BY 1", (roles,)).fetchall()
        owned = conn.execute("SELECT count(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner "
                             "WHERE r.rolname = ANY(%s)", (roles,)).fetchone()
        members = conn.execute("SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member "
                               "WHERE r.rolname = ANY(%s)", (roles,)).fetchone()
    assert rows == [(role, False, False, False, False, False) for role in roles]
    assert owned == (0,), "the pipeline's roles own nothing, so they cannot ALTER or DROP"
    assert members == (0,), "and inherit nothing from another role"
