"""The model registry against the real PostgreSQL (integration)."""

from __future__ import annotations

import psycopg
import pytest

from models.errors import RegistryError, SnapshotRejected
from models.registry import load, register, versions
from models.risk import RiskModel
from models.snapshots import Snapshot
from kernel.settings import Settings

pytestmark = pytest.mark.integration
KEY = "registry test key, long enough to sign"


def _snapshot(version: int, created_at_ms: int) -> Snapshot:
    model = RiskModel(conditions=("any",), negative_rate=1.0)
    model.learn_one({"hr_z": 2.0}, {"any": True})
    return Snapshot("risk-logreg", version, created_at_ms, version * 100, {"auroc_any": 0.8, "ece_any": float("nan")},
                    model)


def test_register_load_and_list(isolated: Settings) -> None:
    with psycopg.connect(isolated.database_url) as conn:  # the writer role
        for version in (1, 2, 10):
            register(conn, _snapshot(version, 1_767_571_200_000 + version), KEY)
        latest = load(conn, "risk-logreg", KEY)
        assert latest.version == 10 and latest.model.risk_one({"hr_z": 2.0})["any"] > 0.5
        assert load(conn, "risk-logreg", KEY, version=2).examples_seen == 200
        listed = versions(conn, "risk-logreg")
        assert [v.version for v in listed] == [10, 2, 1] and listed[0].metrics == {"auroc_any": 0.8, "ece_any": None}


def test_versions_are_immutable(isolated: Settings) -> None:
    with psycopg.connect(isolated.database_url) as conn:
        first = _snapshot(1, 0)
        digest = register(conn, first, KEY)
        assert register(conn, first, KEY) == digest  # the same bytes again: a no-op
        changed = Snapshot(first.name, first.version, first.created_at_ms, 999, first.metrics, first.model)
        with pytest.raises(RegistryError, match="already registered"):
            register(conn, changed, KEY)


def test_a_row_signed_with_another_key_is_refused(isolated: Settings) -> None:
    with psycopg.connect(isolated.database_url) as conn:
        register(conn, _snapshot(1, 0), "somebody else's key that is long enough")
        with pytest.raises(SnapshotRejected, match="signature"):
            load(conn, "risk-logreg", KEY)
        with pytest.raises(RegistryError, match="no snapshot"):
            load(conn, "risk-hat", KEY)
