"""Every SQL query of every board runs on the real PostgreSQL after a short pipeline run, as the
read-only ``vitalrisk_reader`` role Grafana uses, and returns rows.

A simulated cohort goes through Kafka and a real worker into a fresh database. Each query (panel
targets, variable queries, annotation queries) is then expanded as Grafana 11 expands it
(:mod:`tests.grafana.grafana_sql`) and run twice: with the plain-PostgreSQL expansion
(``timescaledb: false``, ``floor(extract(epoch ...))``), and with the expansion our data source
really uses (``timescaledb: true``, ``time_bucket``). The whole test runs on two databases: one
migrated as plain PostgreSQL, where a stand-in ``time_bucket`` built on ``date_bin`` serves the
second expansion, and one on real TimescaleDB (hypertables, continuous aggregates, its own
``time_bucket``), which needs the extension preloaded (CI requires it). Time series results must have a
``time`` column in order. Queries on tables another issue has not created yet are skipped with
the reason; tables that exist but that only processes outside this run write (alerts and
acknowledgements, the model registry, ops events) get a few seeded rows, so their queries
still have to return some.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from datetime import datetime, UTC
from typing import Any

import psycopg
import pytest
from psycopg import sql as pgsql

from simulators.cohort import CohortConfig, simulate
from stream.alert_tuning import Estimate, OperatingPoint, SubgroupBurden
from stream.evaluate_report import burden_event
from simulators.devices import DeviceSchedule
from simulators.kafka_publisher import make_producer, publish
from kernel.settings import Settings
from tests.grafana.artefacts import BoardQuery, dashboards, queries
from tests.grafana.grafana_sql import TimeRange, expand

pytestmark = pytest.mark.integration

#: Six patients for 20 minutes; every cuff measures in the first minutes, so blood pressure is there too.
COHORT = CohortConfig(patients=6, seed=11, duration_ms=20 * 60_000,
                      devices=DeviceSchedule(bp_cuff_times_h=(0.0, 0.1)))
#: ``$__interval`` of the emulated panels: one feature window, the data source's minimum.
INTERVAL = "1m"
READER = "vitalrisk_reader"
#: Schema holding the stand-in ``time_bucket`` (TimescaleDB's default origin for sub-day buckets).
SHIM_SCHEMA = "grafana_test_timescale_shim"
#: Tables that other issues add; a board query on one that does not exist yet is skipped.
PENDING_TABLES: dict[str, str] = {}
#: Rows for tables that exist but that no process of this pipeline run writes (the alerter, the
#: trainer and the model service run separately), placed at the run's event times.
LATEST_WINDOWS = ("(SELECT DISTINCT ON (patient_id) patient_id, window_start, window_end FROM risk_scores "
                  "ORDER BY patient_id, window_start DESC)")
#: An ``alert_burden`` event as ``vitalrisk evaluate --store`` records it (the Model board's subgroup burden table).
_POINT = OperatingPoint("default", (42,), 500, 5000.0, 40, 22, 20, 16, Estimate(0.008, 0.006, 0.01),
                        Estimate(0.55, 0.4, 0.7), Estimate(0.8, 0.6, 0.95), 5.5)
BURDEN_DETAILS = "'" + json.dumps(burden_event(
    ts_ms=0, model="logreg", policy="default", tune_seeds=(), test_seeds=(42,), patients=1000, days=14.0,
    overall=_POINT, subgroups=[SubgroupBurden("sex", "F", _POINT), SubgroupBurden("skin_tone", "V-VI", _POINT)],
).details).replace("'", "''") + "'"
SEEDS = {
    "alerts": f"""
        INSERT INTO alerts (alert_id, patient_id, kind, episode, severity, state, started_at, fired_at,
                            resolved_at, notified_at, last_notified_at, acknowledged_by, acknowledged_at, peak)
        SELECT 'test-' || patient_id || '-' || s.kind, patient_id, s.kind, 1, s.severity, s.state,
               window_start - INTERVAL '5 minutes', window_start - INTERVAL '3 minutes',
               CASE WHEN s.state = 'resolved' THEN window_end END,
               window_start - INTERVAL '3 minutes', window_start - INTERVAL '3 minutes',
               NULL, NULL, 7
        FROM {LATEST_WINDOWS} AS latest,
             (VALUES ('news2_high', 'critical', 'firing'), ('news2_red_parameter', 'warning', 'resolved'),
                     ('data_stopped', 'warning', 'pending')) AS s(kind, severity, state)""",
    "acknowledgements": """
        INSERT INTO acknowledgements (alert_id, acknowledged_by, acknowledged_at, via)
        SELECT alert_id, 'rn-ward-3', notified_at + INTERVAL '2 minutes', 'http'
        FROM alerts WHERE kind = 'news2_high' ORDER BY alert_id LIMIT 3""",
    "model_registry": """
        INSERT INTO model_registry (model_name, model_version, created_at, examples_seen, metrics, model,
                                    model_sha256)
        SELECT 'logreg', v::text, (SELECT min(window_start) FROM risk_scores) + v * INTERVAL '1 minute',
               100 * v, jsonb_build_object('auroc', 0.7 + v / 100.0), '\\x00'::bytea,
               encode(sha256('\\x00'::bytea), 'hex')
        FROM generate_series(1, 3) AS v""",
    "outcomes": f"""
        INSERT INTO outcomes (patient_id, kind, onset, published_at)
        SELECT patient_id, 'infection', window_start, window_start FROM {LATEST_WINDOWS} AS latest""",
    "ops_events": f"""
        INSERT INTO ops_events (ts, kind, subject, details)
        SELECT window_end, 'data_stopped', patient_id, '{{}}'::jsonb FROM {LATEST_WINDOWS} AS latest
        UNION ALL
        SELECT min(window_start) + INTERVAL '4 minutes', 'drift', 'logreg', '{{"detector": "adwin"}}'::jsonb
        FROM risk_scores
        UNION ALL
        SELECT min(window_start) + INTERVAL '5 minutes', 'alert_burden', 'risk-logreg', {BURDEN_DETAILS}::jsonb
        FROM risk_scores""",
}
_TABLE_REF = re.compile(r"\b(?:FROM|JOIN)\s+(?:LATERAL\s+)?([a-z_][a-z0-9_]*)\b(?!\s*[.(])", re.IGNORECASE)
_QUOTED = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"")
_CTE = re.compile(r"(?:\bWITH|,)\s+([a-z_][a-z0-9_]*)\s+AS\s*\(", re.IGNORECASE)


def tables_read(text: str) -> set[str]:
    """Relations a query reads (its CTE names left out).

    >>> sorted(tables_read("WITH latest AS (SELECT * FROM risk_scores), t AS (SELECT 'from the' AS \\"from x\\") "
    ...                    "SELECT extract(epoch FROM k.t) FROM latest JOIN alerts AS k USING (p) "
    ...                    "CROSS JOIN LATERAL f(x), unnest(x) AS m"))
    ['alerts', 'risk_scores']
    """
    code = _QUOTED.sub("''", text)  # literals and quoted identifiers ("SD from baseline")
    names = {name.lower() for name in _TABLE_REF.findall(code)}
    return names - {n.lower() for n in _CTE.findall(code)} - {"lateral"}


def _publish(settings: Settings) -> int:
    """Publish the cohort; return the number of device messages (outcomes go to another topic)."""
    producer = make_producer(settings)
    try:
        report = publish(simulate(COHORT), settings=settings, producer=producer)
    finally:
        producer.close()
    assert report.errors == 0
    return report.messages - report.outcomes


def _wait_until_written(worker: Any, device_messages: int, *, timeout_s: float = 60) -> None:
    """Until every message is consumed, every window closed and every score committed."""
    deadline = time.monotonic() + timeout_s
    state: tuple[float, ...] = ()
    while time.monotonic() < deadline:
        try:
            state = (worker.metric("vitals_messages_total"), worker.metric("vitals_open_windows"),
                     worker.metric("vitals_scores_total"),
                     worker.metric("vitals_sink_rows_total", {"table": "risk_scores"}))
        except OSError:
            state = ()
        if state and state[0] >= device_messages and state[1] == 0 and 0 < state[2] == state[3]:
            return
        if worker.proc.poll() is not None:
            raise AssertionError(f"worker exited with {worker.proc.returncode}:\n{worker.log.read_text()[-3000:]}")
        time.sleep(0.25)
    raise AssertionError(f"(messages, open windows, scores, score rows) = {state}; want {device_messages} "
                         f"messages, 0 open, all scores written\n{worker.log.read_text()[-3000:]}")


def _reader_url(settings: Settings) -> str:
    return re.sub(r"^postgresql://[^@]+@", f"postgresql://{READER}@", settings.database_url)


def _prepare_database(owner_url: str, *, shim: bool) -> set[str]:
    """Install the time_bucket stand-in (plain PostgreSQL), seed pending tables; return the tables present."""
    with psycopg.connect(owner_url, autocommit=True) as conn:
        if shim:
            _install_time_bucket_shim(conn)
        present = {row[0] for row in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")}
        _seed_pending(conn, present)
    return present


def _install_time_bucket_shim(conn: psycopg.Connection[Any]) -> None:
    """``time_bucket`` on ``date_bin``, in a schema of its own, for the plain-PostgreSQL run."""
    conn.execute(pgsql.SQL("CREATE SCHEMA {}").format(pgsql.Identifier(SHIM_SCHEMA)))
    conn.execute(pgsql.SQL(
        "CREATE FUNCTION {}.time_bucket(bucket_width interval, ts timestamptz) RETURNS timestamptz "
        "LANGUAGE sql IMMUTABLE PARALLEL SAFE "
        "AS $$ SELECT date_bin(bucket_width, ts, TIMESTAMPTZ '2000-01-03 00:00:00+00') $$"
    ).format(pgsql.Identifier(SHIM_SCHEMA)))
    conn.execute(pgsql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(
        pgsql.Identifier(SHIM_SCHEMA), pgsql.Identifier(READER)))


def _seed_pending(conn: psycopg.Connection[Any], present: set[str]) -> None:
    """Seed each table of :data:`SEEDS` that exists and is empty (in order: acknowledgements need alerts)."""
    for table, statement in SEEDS.items():
        if table not in present:
            continue
        empty = conn.execute(pgsql.SQL("SELECT NOT EXISTS (SELECT FROM {})").format(pgsql.Identifier(table))).fetchone()
        if empty and empty[0]:
            conn.execute(statement.encode())


@pytest.fixture
def reader(isolated: Settings) -> Iterator[psycopg.Connection[Any]]:
    """A read-only session as Grafana's role (every statement in a read-only transaction)."""
    with psycopg.connect(_reader_url(isolated), autocommit=True) as conn:
        conn.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        conn.execute("SET statement_timeout = '20s'")
        yield conn


def _run(conn: psycopg.Connection[Any], text: str, *, timescaledb: bool) -> tuple[list[str], list[tuple[Any, ...]]]:
    # The stand-in schema exists only in plain-PostgreSQL runs; a real TimescaleDB's time_bucket is in public.
    path = f"public, {SHIM_SCHEMA}" if timescaledb else "public"
    conn.execute(f"SET search_path = {path}")
    cursor = conn.execute(text.encode())
    columns = [c.name for c in cursor.description or []]
    return columns, cursor.fetchall()


def _time_range(conn: psycopg.Connection[Any]) -> TimeRange:
    row = conn.execute("SELECT min(window_start), max(window_end) FROM features").fetchone()
    assert row and row[0] is not None, "the pipeline wrote no features"
    return TimeRange(row[0].astimezone(UTC), row[1].astimezone(UTC))


def _resolve_variables(conn: psycopg.Connection[Any], board: str, time_range: TimeRange) -> dict[str, str]:
    """Run the board's SQL variable queries in order; each takes its default if offered, else its
    first value, as Grafana does when a board opens."""
    values: dict[str, str] = {}
    for variable in dashboards()[board]["templating"]["list"]:
        if variable["datasource"]["type"] == "prometheus":
            continue
        text = expand(variable["query"], time_range, interval=INTERVAL, variables=values, timescaledb=False)
        _, rows = _run(conn, text, timescaledb=False)
        offered = [str(row[0]) for row in rows]
        assert offered, f"{board}: variable {variable['name']} has no values"
        default = variable.get("current", {}).get("value")
        values[variable["name"]] = default if default in offered else offered[0]
    return values


def _check_result(query: BoardQuery, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
    assert rows, f"{query.label} returned no rows"
    if query.format == "time_series" and query.where.startswith("panel"):
        assert "time" in columns, f"{query.label}: a time series needs a `time` column, got {columns}"
        times = [row[columns.index("time")] for row in rows]
        as_seconds = [t.timestamp() if isinstance(t, datetime) else float(t) for t in times]
        assert as_seconds == sorted(as_seconds), f"{query.label}: time series rows must be sorted by time"
    if query.where.startswith("annotation"):
        assert {"time", "text"} <= set(columns), f"{query.label}: annotations need `time` and `text`"


@pytest.mark.parametrize("isolated", ["off", "on"], indirect=True, ids=["postgresql", "timescaledb"])
def test_every_board_sql_query_returns_rows_after_a_pipeline_run(isolated: Settings, start_worker: Any,
                                                                  reader: psycopg.Connection[Any],
                                                                  subtests: Any) -> None:
    """On plain PostgreSQL (``time_bucket`` emulated) and on real TimescaleDB (hypertables, continuous aggregates)."""
    device_messages = _publish(isolated)
    worker = start_worker(isolated)
    _wait_until_written(worker, device_messages)
    assert isolated.admin_database_url
    on_timescale = isolated.sink_timescale == "on"
    present = _prepare_database(isolated.admin_database_url, shim=not on_timescale)
    time_range = _time_range(reader)

    checked = 0
    for board in dashboards():
        variables = _resolve_variables(reader, board, time_range)
        for query in (q for q in queries(board, dashboards()[board]) if q.language == "sql"):
            with subtests.test(msg=query.label):
                missing = tables_read(query.text) - present
                pending = sorted(missing & set(PENDING_TABLES))
                if pending:
                    pytest.skip(f"{query.label}: {'; '.join(PENDING_TABLES[t] for t in pending)}")
                assert not missing, f"{query.label} reads tables that do not exist: {sorted(missing)}"
                for timescaledb in (False, True):
                    text = expand(query.text, time_range, interval=INTERVAL, variables=variables,
                                  timescaledb=timescaledb)
                    try:
                        columns, rows = _run(reader, text, timescaledb=timescaledb)
                    except psycopg.Error as exc:
                        pytest.fail(f"{query.label} (timescaledb={timescaledb}) failed: {exc}\n{text}")
                    _check_result(query, columns, rows)
                checked += 1
    assert checked >= 15, f"only {checked} SQL queries ran"
