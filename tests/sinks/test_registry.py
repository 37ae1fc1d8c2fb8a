"""The model registry (sinks.registry) on the real PostgreSQL: immutable, verified versions."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from models.errors import SnapshotRejected
from models.risk import RiskModel
from models.snapshots import Snapshot
from sinks.errors import RegistryError, SinkRejected
from sinks.registry import ModelVersion, load, register, sha256_hex, versions
from tests.sinks.conftest import START_MS, Database

pytestmark = pytest.mark.integration
KEY = "registry test key, long enough to sign"


def _version(version: int, created_ms: int = START_MS, *, examples_seen: int | None = None) -> ModelVersion:
    return ModelVersion(name="risk-logreg", version=version, created_ms=created_ms,
                        examples_seen=version * 100 if examples_seen is None else examples_seen,
                        metrics={"auroc_any": 0.8, "ece_any": float("nan")})


def test_register_load_and_list_newest_first(db: Database) -> None:
    with psycopg.connect(db.writer_url) as conn:
        for version in (1, 2, 10):
            assert register(conn, _version(version, START_MS + version), b"\x80blob-%d" % version) == \
                sha256_hex(b"\x80blob-%d" % version)
        assert load(conn, "risk-logreg") == b"\x80blob-10"
        assert load(conn, "risk-logreg", version=2) == b"\x80blob-2"
        listed = versions(conn, "risk-logreg")
    assert [v.version for v in listed] == [10, 2, 1]
    assert listed[0] == ModelVersion(name="risk-logreg", version=10, created_ms=START_MS + 10, examples_seen=1000,
                                     metrics={"auroc_any": 0.8, "ece_any": None}, sha256=sha256_hex(b"\x80blob-10"))
    assert listed[0].label == "risk-logreg-v10"
    with psycopg.connect(db.reader_url) as conn:  # Grafana's role reads it too
        assert load(conn, "risk-logreg", version=1) == b"\x80blob-1"


def test_the_newest_is_the_latest_created_then_the_highest_version(db: Database) -> None:
    with psycopg.connect(db.writer_url) as conn:
        register(conn, _version(9), b"nine")
        register(conn, _version(10), b"ten")  # same created_at: 10 > 9 numerically, not as text
        assert load(conn, "risk-logreg") == b"ten"


def test_versions_are_immutable(db: Database) -> None:
    with psycopg.connect(db.writer_url) as conn:
        digest = register(conn, _version(1), b"\x80model-one")
        assert register(conn, _version(1), b"\x80model-one") == digest  # the same bytes again: a no-op
        with pytest.raises(RegistryError, match="already registered with other bytes"):
            register(conn, _version(1, examples_seen=999), b"\x80other-bytes")
        assert load(conn, "risk-logreg", version=1) == b"\x80model-one"
    with psycopg.connect(db.writer_url) as conn, pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("INSERT INTO model_registry (model_name, model_version, created_at, examples_seen, model, "
                     "model_sha256) VALUES ('m', '9', now(), 0, 'abc', %s)", (digest,))


def test_an_absent_version_is_a_registry_error(db: Database) -> None:
    with psycopg.connect(db.writer_url) as conn:
        with pytest.raises(RegistryError, match="no snapshot of 'risk-hat'"):
            load(conn, "risk-hat")
        register(conn, _version(1), b"one")
        with pytest.raises(RegistryError, match="version 2"):
            load(conn, "risk-logreg", version=2)
        assert versions(conn, "risk-hat") == []


def test_a_missing_table_is_a_registry_error_that_says_what_to_do(empty_db: Database) -> None:
    with psycopg.connect(empty_db.owner_url) as conn:  # not migrated
        for call in (lambda: load(conn, "risk-logreg"), lambda: versions(conn, "risk-logreg"),
                     lambda: register(conn, _version(1), b"one")):
            with pytest.raises(RegistryError, match="apply the migrations"):
                call()


def test_a_blob_that_does_not_match_its_sha256_is_not_loaded(db: Database) -> None:
    with psycopg.connect(db.writer_url) as conn:
        register(conn, _version(1), b"one")
    with psycopg.connect(db.owner_url) as conn:  # only the owner could alter a row, and only by dropping the checks
        checks = conn.execute("SELECT conname FROM pg_constraint WHERE conrelid = 'model_registry'::regclass "
                              "AND contype = 'c'").fetchall()
        for (name,) in checks:
            conn.execute(sql.SQL("ALTER TABLE model_registry DROP CONSTRAINT {}").format(sql.Identifier(name)))
        conn.execute("UPDATE model_registry SET model = 'tampered'")
    with psycopg.connect(db.writer_url) as conn, pytest.raises(SinkRejected, match="SHA-256"):
        load(conn, "risk-logreg")


def _snapshot(version: int) -> Snapshot:
    model = RiskModel(conditions=("any",), negative_rate=1.0)
    model.learn_one({"hr_z": 2.0}, {"any": True})
    return Snapshot("risk-logreg", version, START_MS, version * 100, {"auroc_any": 0.8}, model)


def test_a_snapshot_round_trips_and_one_signed_with_another_key_is_refused(db: Database) -> None:
    """What the trainer does: register signed bytes, load them, verify before unpickling."""
    snapshot = _snapshot(3)
    with psycopg.connect(db.writer_url) as conn:
        register(conn, _version(3), snapshot.to_bytes(KEY))
        loaded = Snapshot.from_bytes(load(conn, "risk-logreg"), KEY)
        assert loaded.version == 3 and loaded.model.risk_one({"hr_z": 2.0})["any"] > 0.5
        register(conn, _version(4, START_MS + 1), _snapshot(4).to_bytes("somebody else's key that is long enough"))
        with pytest.raises(SnapshotRejected, match="signature"):
            Snapshot.from_bytes(load(conn, "risk-logreg"), KEY)
