"""Databases of their own for the sink tests, on the session's PostgreSQL (no Kafka needed)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from psycopg import sql

from sinks.migrations import migrate
from kernel.events import MetricStats, RiskScore, WindowFeatures
from tests.conftest import TEST_PG_PORT, Services

START_MS = 1_767_571_200_000  # 2026-01-05T00:00Z


@dataclass(frozen=True)
class Database:
    """One throwaway database and the URLs of the three roles that use it."""

    name: str
    admin_url: str  # the cluster's maintenance database, as the superuser

    @property
    def owner_url(self) -> str:
        """The migrator (the local cluster's superuser; docker-compose uses vitalrisk_owner)."""
        return f"{self.admin_url.rsplit('/', 1)[0]}/{self.name}"

    @property
    def writer_url(self) -> str:
        return f"postgresql://vitalrisk_writer@127.0.0.1:{TEST_PG_PORT}/{self.name}"

    @property
    def reader_url(self) -> str:
        return f"postgresql://vitalrisk_reader@127.0.0.1:{TEST_PG_PORT}/{self.name}"

    def block(self) -> None:
        """An outage of this database only: refuse new connections and end the open ones."""
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(sql.Identifier(self.name)))
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (self.name,))

    def unblock(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(sql.Identifier(self.name)))


@pytest.fixture
def empty_db(services: Services) -> Iterator[Database]:
    """A new, empty database (not migrated)."""
    admin = services.superuser_url.rsplit("/", 1)[0] + "/postgres"
    db = Database(f"test_sink_{uuid.uuid4().hex[:10]}", admin)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db.name)))
    yield db
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(sql.Identifier(db.name)))
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db.name)))


@pytest.fixture
def db(empty_db: Database) -> Database:
    """A migrated database."""
    migrate(empty_db.owner_url, timescale="off")
    return empty_db


def make_windows(patients: int, minutes: int, *, first_minute: int = 0) -> list[WindowFeatures]:
    """Three metrics per window, values depending on patient and minute."""
    out = []
    for minute in range(first_minute, first_minute + minutes):
        start = START_MS + minute * 60_000
        for p in range(patients):
            base = 60.0 + p + minute / 10
            out.append(WindowFeatures(patient_id=f"pt-{p:04x}", start_ms=start, end_ms=start + 60_000, metrics={
                "heart_rate": MetricStats(12, base, base - 2.0, base + 3.0),
                "respiratory_rate": MetricStats(1, 15.0 + p, 15.0 + p, 15.0 + p),
                "oxygen_saturation": MetricStats(2, 96.5, 96.0, 97.0)}))
    return out


def make_scores(windows: list[WindowFeatures]) -> list[RiskScore]:
    return [RiskScore(patient_id=w.patient_id, window_start_ms=w.start_ms, window_end_ms=w.end_ms, model_name="news2", model_version="rcp-2017", score=(i % 7) / 20, news2_total=i % 7,
                      news2_band="low" if i % 7 < 5 else "medium", inputs={"heart_rate": w.metrics["heart_rate"].mean},
                      contributions={"heart_rate": 0.0}, missing_inputs=("body_temperature",))
            for i, w in enumerate(windows)]
