"""The TimescaleDB path: hypertables, continuous aggregates, compression and retention policies.

These run where TimescaleDB is available: on the session's PostgreSQL if it offers the
extension, or on the server named by ``VITALS_TEST_TIMESCALE_URL``, a superuser URL such as
docker-compose's ``postgresql://postgres:$POSTGRES_PASSWORD@127.0.0.1:15432/postgres`` (its
init script has created the vitalrisk roles). Elsewhere they are skipped, saying why.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import errors, sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from sinks.migrations import SinkPolicies, discover, migrate
from sinks.timescale import TimescaleWriter, refresh_rollups
from tests.conftest import Services
from tests.sinks.conftest import make_scores, make_windows

pytestmark = pytest.mark.integration

ROLLUPS = ("vitals_5m", "vitals_1h", "risk_5m", "risk_1h")


def _offers_timescale(admin_url: str) -> bool:
    try:
        with psycopg.connect(admin_url, connect_timeout=5) as conn:
            return conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone() \
                is not None
    except psycopg.OperationalError:
        return False


@pytest.fixture
def ts_admin(services: Services) -> str:
    """Superuser URL of a server's maintenance database that offers TimescaleDB, or skip."""
    local = services.superuser_url.rsplit("/", 1)[0] + "/postgres"
    if _offers_timescale(local):
        return local
    url = os.environ.get("VITALS_TEST_TIMESCALE_URL")
    if url and _offers_timescale(url):
        return url
    pytest.skip("TimescaleDB is not available: the test PostgreSQL (Debian's postgresql server) has no "
                "timescaledb extension and VITALS_TEST_TIMESCALE_URL names no TimescaleDB server "
                "(e.g. docker-compose's timescaledb service)")


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
    assert migrate(ts_db) == [m.version for m in discover()]
    assert migrate(ts_db) == [], "a re-run is a no-op"
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

    migrate(ts_db, policies=SinkPolicies(raw_retention_days=30, scores_retention_days=90, rollup_retention_days=365,
                                         compress_after_days=3))
    with psycopg.connect(ts_db) as conn:
        retention = sorted(r[0] for r in conn.execute(
            "SELECT config->>'drop_after' FROM timescaledb_information.jobs WHERE proc_name = 'policy_retention'"))
        compression = [r[0] for r in conn.execute(
            "SELECT config->>'compress_after' FROM timescaledb_information.jobs WHERE proc_name = 'policy_compression'")]
    assert retention == sorted(["30 days", "30 days", "90 days"] + ["365 days"] * 4)
    assert compression == ["3 days"] * 3


def test_writer_and_real_time_rollups_on_hypertables(ts_db: str) -> None:
    migrate(ts_db)
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
