"""``vitalrisk evaluate --store``: the alert burden by subgroup recorded where the Model board reads it."""

from __future__ import annotations

import io

import psycopg
import pytest

from kernel.settings import READER_ROLE, TRAINER_ROLE, Settings, role_url
from stream.evaluate import run_evaluate
from tests.conftest import as_service


@pytest.mark.integration
def test_store_records_the_burden_by_subgroup_as_the_trainer_for_the_reader(isolated: Settings) -> None:
    err = io.StringIO()
    settings = as_service(isolated, TRAINER_ROLE)
    assert run_evaluate(settings, 12, 0.25, 42, "logreg", True, None, store=True, stdout=io.StringIO(),
                        stderr=err) == 0
    assert "alert burden recorded (risk-logreg" in err.getvalue()
    with psycopg.connect(role_url(isolated.database_url, READER_ROLE)) as conn:
        rows = conn.execute("SELECT subject, details FROM ops_events WHERE kind = 'alert_burden'").fetchall()
    assert len(rows) == 1
    subject, details = rows[0]
    assert subject == "risk-logreg" and details["test_seeds"] == [42] and details["tune_seeds"] == []
    assert {(s["attribute"], s["group"]) for s in details["subgroups"]} >= {("sex", "F"), ("sex", "M")}
    assert sum(s["patients"] for s in details["subgroups"] if s["attribute"] == "sex") == 12
    assert details["overall"]["patients"] == 12


def test_store_without_a_database_is_one_line_before_the_run() -> None:
    err = io.StringIO()
    settings = Settings(database_url="postgresql://vitalrisk_trainer@127.0.0.1:1/vitalrisk")
    assert run_evaluate(settings, 12, 0.25, 42, "logreg", True, None, store=True, stdout=io.StringIO(),
                        stderr=err) == 2
    assert err.getvalue().startswith("vitalrisk: evaluate --store: cannot reach the database")
    assert err.getvalue().count("\n") == 1
