"""End to end, grouped: several model-risk heads of one patient cross, one signed page arrives with every
head in ``alerts[]``; a head joining later sends nothing, and the resolved page lists all three."""

from __future__ import annotations

import time

import pytest

from kernel.events import RiskScore
from tests.alerts.conftest import START_MS, AlertingStack, read_jsonl, wait_for
from tests.alerts.test_e2e_paging import produce, query

pytestmark = pytest.mark.integration

PATIENT = "pt-e2e0022"


def model_score(minute: int, **risks: float) -> RiskScore:
    return RiskScore(patient_id=PATIENT, window_start_ms=START_MS + (minute - 1) * 60_000,
                     window_end_ms=START_MS + minute * 60_000, model_name="river-logreg", model_version="v7",
                     score=max(risks.values()), news2_total=1, news2_band="low", inputs={},
                     contributions={"hr_vs_baseline": 0.4}, risks=risks)


def test_heads_crossing_together_page_once_with_every_head_and_resolve_as_one(alerting: AlertingStack) -> None:
    settings = alerting.settings
    procs = (alerting.start_pager(), alerting.start_alerter())

    produce(settings, [model_score(m, any=0.8, infection=0.9, heart_failure=0.1) for m in (1, 3)])
    first = wait_for("the grouped page", lambda: read_jsonl(alerting.record), timeout_s=60, procs=procs)
    assert len(first) == 1, first
    body = first[0]["body"]
    assert body["status"] == "firing" and body["groupKey"] == f'{{}}:{{alertname="VitalriskRiskHigh", patient_id="{PATIENT}"}}'
    assert sorted(a["labels"]["condition"] for a in body["alerts"]) == ["any", "infection"]
    group_id = body["commonLabels"]["alert_id"]
    assert first[0]["idempotency_key"] == f"{group_id}:firing"

    # heart failure crosses while the group fires: it joins, nothing is sent; then all three recover
    produce(settings, [model_score(m, any=0.8, infection=0.9, heart_failure=0.8) for m in (4, 6)]
            + [model_score(m, any=0.1, infection=0.1, heart_failure=0.1) for m in (7, 9)])
    wait_for("the resolved page", lambda: len(read_jsonl(alerting.record)) >= 2, timeout_s=30, procs=procs)
    time.sleep(1.0)  # a stray page would arrive now
    pages = read_jsonl(alerting.record)
    assert [p["body"]["status"] for p in pages] == ["firing", "resolved"], pages
    resolved = pages[1]["body"]
    assert sorted(a["labels"]["condition"] for a in resolved["alerts"]) == ["any", "heart_failure", "infection"]
    assert {a["status"] for a in resolved["alerts"]} == {"resolved"}

    # the database keeps the group's row (it paged) and each head's own episode, linked to the group
    rows = query(settings, "SELECT kind, state, group_id, notified_at IS NOT NULL FROM alerts WHERE patient_id = %s "
                           "ORDER BY kind", PATIENT)
    assert rows == [("risk_high", "resolved", None, True),
                    ("risk_high:any", "resolved", group_id, False),
                    ("risk_high:heart_failure", "resolved", group_id, False),
                    ("risk_high:infection", "resolved", group_id, False)]
    events = {e for (e,) in query(settings, "SELECT event FROM alert_events WHERE alert_id = %s", group_id)}
    assert events == {"firing", "joined:risk_high:heart_failure", "resolved"}
    assert query(settings, "SELECT action FROM alert_notifications WHERE patient_id = %s ORDER BY created_at",
                 PATIENT) == [("firing",), ("resolved",)]
