"""The TimescaleDB path: hypertables, continuous aggregates, compression and retention policies.

These run where TimescaleDB is available: on the session's PostgreSQL, which preloads the
extension when it is installed (``make timescaledb`` builds it from ``../shared/vendor``), or on
the server named by ``VITALS_TEST_TIMESCALE_URL``, a superuser URL such as docker-compose's
``postgresql://postgres:$POSTGRES_PASSWORD@127.0.0.1:15432/postgres`` (its init script has
created the vitalrisk roles). Elsewhere they are skipped, saying why, unless
``VITALS_TEST_REQUIRE_TIMESCALE=1`` (CI) makes that a failure.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import errors, sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from sinks.migrations import SinkPolicies, discover, migrate
from sinks.timescale import TimescaleWriter, refresh_rollups
from kernel.events import RiskScore, WindowFeatures
from tests.conftest import Services, skip_without_timescale, timescale_usable
from tests.sinks.conftest import START_MS, make_scores, make_windows

pytestmark = pytest.mark.integration

ROLLUPS = ("vitals_5m", "vitals_1h", "risk_5m", "risk_1h")


@pytest.fixture
def ts_admin(services: Services) -> str:
    """Superuser URL of a server's maintenance database that offers TimescaleDB, or skip."""
    local = services.superuser_url.rsplit("/", 1)[0] + "/postgres"
    if timescale_usable(local):
        return local
    url = os.environ.get("VITALS_TEST_TIMESCALE_URL")
    if url and timescale_usable(url):
        return url
    skip_without_timescale("TimescaleDB is not available: the test PostgreSQL has no preloaded timescaledb "
                           "extension (`make timescaledb` builds it) and VITALS_TEST_TIMESCALE_URL names no "
                           "TimescaleDB server (e.g. docker-compose's timescaledb service)")


@pytest.fixture
def ts_db(ts_admin: str) -> Iterator[str]:
    """Owner URL of a fresh database on the TimescaleDB server (not yet migrated)."""
    name = f"test_ts_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ts_admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield make_conninfo(ts_admin, dbname=name)
    with psycopg.connect(ts_admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _as(owner_url: str, role: str) -> str:
    """The owner's URL, acting as ``role`` (privileges are checked as that role; no password needed)."""
    options = conninfo_to_dict(owner_url).get("options") or ""
    return make_conninfo(owner_url, options=f"{options} -c role={role}".strip())


def test_migrations_build_hypertables_aggregates_and_policies(ts_db: str) -> None:
    assert migrate(ts_db, timescale="on") == [m.version for m in discover()]
    assert migrate(ts_db, timescale="on") == [], "a re-run is a no-op"
    with psycopg.connect(ts_db) as conn:
        assert {r[0] for r in conn.execute("SELECT timescale FROM schema_migrations")} == {True}
        hypertables: dict[str, bool] = dict(conn.execute("SELECT hypertable_name, compression_enabled FROM "
                                        "timescaledb_information.hypertables WHERE hypertable_schema = 'public'"))
        assert {"features": True, "risk_scores": True, "readings": True}.items() <= hypertables.items()
        caggs: dict[str, bool] = dict(conn.execute("SELECT view_name, materialized_only FROM "
                                  "timescaledb_information.continuous_aggregates"))
        assert caggs == {name: False for name in ROLLUPS}, "real-time continuous aggregates"
        jobs = conn.execute("SELECT proc_name, config FROM timescaledb_information.jobs "
                            "WHERE proc_name LIKE 'policy_%'").fetchall()
    by_kind: dict[str, list[dict[str, object]]] = {}
    for proc, config in jobs:
        by_kind.setdefault(proc, []).append(config)
    assert len(by_kind["policy_refresh_continuous_aggregate"]) == 4
    assert [c["compress_after"] for c in by_kind["policy_compression"]] == ["7 days"] * 3
    assert "policy_retention" not in by_kind, "0 days: no retention by default"

    migrate(ts_db, timescale="on", policies=SinkPolicies(raw_retention_days=30, scores_retention_days=90,
                                                         rollup_retention_days=365, compress_after_days=3))
    with psycopg.connect(ts_db) as conn:
        retention = sorted(r[0] for r in conn.execute(
            "SELECT config->>'drop_after' FROM timescaledb_information.jobs WHERE proc_name = 'policy_retention'"))
        compression = [r[0] for r in conn.execute(
            "SELECT config->>'compress_after' FROM timescaledb_information.jobs "
            "WHERE proc_name = 'policy_compression'")]
    assert retention == sorted(["30 days", "30 days", "90 days"] + ["365 days"] * 4)
    assert compression == ["3 days"] * 3


def test_writer_and_real_time_rollups_on_hypertables(ts_db: str) -> None:
    migrate(ts_db, timescale="on")
    windows = make_windows(patients=3, minutes=70)
    scores = make_scores(windows)

    async def run() -> tuple[int, int]:
        async with TimescaleWriter(_as(ts_db, "vitalrisk_writer"), rollup_refresh_s=None) as writer:
            return await writer.write_many(windows, scores), await writer.write_many(windows, scores)

    first, replay = asyncio.run(run())
    assert (first, replay) == (len(windows) * 3 + len(scores), 0)
    with psycopg.connect(_as(ts_db, "vitalrisk_writer")) as conn:
        refresh_rollups(conn)  # a no-op here: policies refresh
    with psycopg.connect(_as(ts_db, "vitalrisk_reader")) as conn:
        got = conn.execute("SELECT bucket, patient_id, metric, n, min, max FROM vitals_5m ORDER BY 1, 2, 3").fetchall()
        want = conn.execute("SELECT date_bin('5 minutes', window_start, TIMESTAMPTZ '2000-01-01 00:00:00+00'), "
                            "patient_id, metric, sum(n), min(min), max(max) FROM features GROUP BY 1, 2, 3 "
                            "ORDER BY 1, 2, 3").fetchall()
        assert got == want
        risk = conn.execute("SELECT bucket, patient_id, windows, news2_max FROM risk_1h ORDER BY 1, 2").fetchall()
        want_risk = conn.execute("SELECT date_bin('1 hour', window_start, TIMESTAMPTZ '2000-01-01 00:00:00+00'), "
                                 "patient_id, count(*), max(news2_total) FROM risk_scores GROUP BY 1, 2 "
                                 "ORDER BY 1, 2").fetchall()
        assert risk == want_risk
        conn.execute("SET default_transaction_read_only = off")
        with pytest.raises(errors.InsufficientPrivilege), conn.transaction():
            conn.execute("INSERT INTO features VALUES ('pt-1', 'hr', now(), now(), 1, 1, 1, 1)")
    with psycopg.connect(_as(ts_db, "vitalrisk_writer"), autocommit=True) as conn:
        for statement in ("DELETE FROM features", "UPDATE risk_scores SET score = 0", "DROP TABLE features",
                          "DROP MATERIALIZED VIEW vitals_5m"):
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(statement)


def _write(owner_url: str, windows: list[WindowFeatures], scores: list[RiskScore]) -> None:
    async def run() -> None:
        async with TimescaleWriter(_as(owner_url, "vitalrisk_writer"), rollup_refresh_s=None) as writer:
            await writer.write_many(windows, scores)

    asyncio.run(run())


def _aged_data(owner_url: str) -> int:
    """Windows 45, 10 and 1 days old (past retention, due for compression, recent); how many."""
    now_ms = int(time.time() // 86_400 * 86_400 * 1000)
    windows = []
    for days_ago in (45, 10, 1):
        windows += make_windows(patients=2, minutes=30, first_minute=-(days_ago * 1440))
    shifted = [WindowFeatures(patient_id=w.patient_id, start_ms=w.start_ms - START_MS + now_ms, end_ms=w.end_ms - START_MS + now_ms, metrics=w.metrics)
               for w in windows]
    _write(owner_url, shifted, make_scores(shifted))
    return len(shifted)


def _effects(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """What the policies did: rows left past retention, compressed chunks, materialised rollup rows."""
    materialised = 0
    for schema, table in conn.execute("SELECT materialization_hypertable_schema, materialization_hypertable_name "
                                      "FROM timescaledb_information.continuous_aggregates"):
        count = conn.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(
            sql.Identifier(schema), sql.Identifier(table))).fetchone()
        materialised += count[0] if count else 0
    row = conn.execute("""
        SELECT (SELECT count(*) FROM features WHERE window_start < now() - INTERVAL '30 days'),
               (SELECT count(*) FROM risk_scores WHERE window_start < now() - INTERVAL '30 days'),
               (SELECT count(*) FROM timescaledb_information.chunks WHERE is_compressed)""").fetchone()
    assert row is not None
    return {"old_features": row[0], "old_scores": row[1], "compressed_chunks": row[2], "materialised": materialised}


def _jobs(conn: psycopg.Connection[Any]) -> list[int]:
    return [r[0] for r in conn.execute("SELECT job_id FROM timescaledb_information.jobs WHERE proc_name IN "
                                       "('policy_retention', 'policy_compression', "
                                       "'policy_refresh_continuous_aggregate') ORDER BY job_id")]


def _pause_jobs(owner_url: str) -> None:
    """Unschedule the policies and wait out any run the migration started, so the test decides when they run."""
    with psycopg.connect(owner_url, autocommit=True) as conn:
        for job in _jobs(conn):
            conn.execute("SELECT alter_job(%s, scheduled => false)", (job,))
        deadline = time.monotonic() + 30
        while conn.execute("SELECT count(*) FROM timescaledb_information.job_stats "
                           "WHERE job_status = 'Running'").fetchone() != (0,) and time.monotonic() < deadline:
            time.sleep(0.2)
        # A fresh scheduler for this database, while no job runs (restarting one mid-job marks the
        # job crashed and backs it off for minutes): in a busy suite the launcher may not have
        # started one yet when the database was made.
        conn.execute("SELECT _timescaledb_functions.restart_background_workers()")


def _run_in_background(conn: psycopg.Connection[Any], proc_name: str) -> None:
    """Make the scheduler start every job of ``proc_name`` now; wait until each has succeeded since.

    :func:`_pause_jobs` has made sure the database has a scheduler to run them.
    """
    asked = conn.execute("SELECT now()").fetchone()
    jobs = [r[0] for r in conn.execute("SELECT alter_job(job_id, scheduled => true, next_start => now()) FROM "
                                       "timescaledb_information.jobs WHERE proc_name = %s", (proc_name,))]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done = conn.execute("SELECT count(*) FROM timescaledb_information.job_stats s JOIN "
                            "timescaledb_information.jobs j USING (job_id) WHERE j.proc_name = %s "
                            "AND s.last_successful_finish > %s", (proc_name, asked[0] if asked else None)).fetchone()
        if done == (len(jobs),):
            return
        time.sleep(0.5)
    failures = conn.execute("SELECT e.job_id, e.err_message FROM timescaledb_information.job_errors e JOIN "
                            "timescaledb_information.jobs j USING (job_id) WHERE j.proc_name = %s "
                            "AND e.start_time > %s", (proc_name, asked[0] if asked else None)).fetchall()
    workers = conn.execute("SELECT backend_type, datname FROM pg_stat_activity WHERE backend_type LIKE "
                           "'TimescaleDB%%' OR backend_type LIKE '%%Policy%%'").fetchall()
    pytest.fail(f"the scheduler did not run every {proc_name} job within 120 s; errors: {failures}; "
                f"TimescaleDB workers: {workers}")


POLICIES = SinkPolicies(raw_retention_days=30, scores_retention_days=30, rollup_retention_days=0,
                        compress_after_days=7)


def test_policies_do_their_work_in_the_background(ts_db: str) -> None:
    """TimescaleDB's own scheduler runs retention, compression and refresh: nothing to run by hand."""
    migrate(ts_db, timescale="on", policies=POLICIES)
    _pause_jobs(ts_db)
    _aged_data(ts_db)
    with psycopg.connect(ts_db, autocommit=True) as conn:
        before = _effects(conn)
        assert before["old_features"] > 0 and before["compressed_chunks"] == 0 and before["materialised"] == 0
        jobs = _jobs(conn)
        assert len(jobs) == 3 + 3 + 4  # retention and compression of three tables, four rollups
        # One kind at a time, as their schedules space them: a compression and a retention job on
        # the same hypertable at the same instant can deadlock (the scheduler then retries later).
        for kind in ("policy_retention", "policy_compression", "policy_refresh_continuous_aggregate"):
            _run_in_background(conn, kind)
        after = _effects(conn)
    assert after["old_features"] == 0 and after["old_scores"] == 0, after
    assert after["compressed_chunks"] > 0, after
    assert after["materialised"] > 0, after


def test_policies_do_their_work_when_run_in_the_foreground(ts_db: str) -> None:
    """``CALL run_job(id)``: what an operator runs (or schedules) where the background scheduler cannot."""
    migrate(ts_db, timescale="on", policies=POLICIES)
    _pause_jobs(ts_db)
    windows = _aged_data(ts_db)
    with psycopg.connect(ts_db, autocommit=True) as conn:
        for job in _jobs(conn):
            conn.execute("CALL run_job(%s)", (job,))
        after = _effects(conn)
        left = conn.execute("SELECT count(DISTINCT (patient_id, window_start)) FROM features").fetchone()
    assert after["old_features"] == 0 and after["old_scores"] == 0, after
    assert after["compressed_chunks"] > 0 and after["materialised"] > 0, after
    assert left == (windows * 2 // 3,), "the windows within retention stay, compressed or not"
