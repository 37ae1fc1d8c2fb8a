"""A grouped model-risk page on the wire (sinks/alertmanager.py): Alertmanager's group with one alert
per head, each with its own status and times; the page survives the outbox's JSON."""

from __future__ import annotations

from kernel.alerts import Page
from sinks.alertmanager import alertmanager_body, fingerprint
from stream.alerts import AlertEngine
from tests.alerts.scores import at, policy, risk_score


def grouped_pages() -> list[Page]:
    engine = AlertEngine(policy(escalate_ms=10 * 60_000))
    pages: list[Page] = []
    for minute, risks in [(1, {"any": 0.8, "infection": 0.9}), (3, {"any": 0.8, "infection": 0.9}),
                          (4, {"any": 0.2, "infection": 0.9}), (6, {"any": 0.2, "infection": 0.9})]:
        pages += engine.on_score(risk_score("pt-9", minute, risks), now_ms=at(minute)).pages
    pages += engine.tick(now_ms=at(13)).pages
    return pages


def test_a_grouped_page_lists_every_head_with_its_own_status_and_times() -> None:
    firing, escalate = grouped_pages()
    assert (firing.action, escalate.action) == ("firing", "escalate")
    body = alertmanager_body(escalate, receiver="pager", grafana_url="http://g", external_url="http://a")
    assert body["groupKey"] == '{}:{alertname="VitalriskRiskHigh", patient_id="pt-9"}'
    assert body["status"] == "firing" and body["commonLabels"]["alert_id"] == escalate.alert_id
    assert "kind" not in body["commonLabels"]  # each alert names its own head
    by_head = {a["labels"]["condition"]: a for a in body["alerts"]}
    assert set(by_head) == {"any", "infection"}
    assert by_head["any"]["status"] == "resolved" and by_head["any"]["endsAt"] == "2026-01-05T00:06:00Z"
    assert by_head["infection"]["status"] == "firing" and by_head["infection"]["endsAt"] == "0001-01-01T00:00:00Z"
    assert by_head["infection"]["annotations"]["risk"] == "0.900"
    assert len({a["fingerprint"] for a in body["alerts"]}) == 2
    assert all(a["fingerprint"] == fingerprint(a["labels"]) for a in body["alerts"])
    assert body["commonAnnotations"]["heads"] == "any 0.200, infection 0.900"
    assert body["commonAnnotations"]["summary"].startswith("[ESCALATED] pt-9: model risk high: any")


def test_a_grouped_page_survives_the_outbox() -> None:
    for page in grouped_pages():
        assert Page.from_json(page.to_json()) == page and page.members


def test_the_idempotency_keys_of_a_group_are_one_per_page_and_stable() -> None:
    first, second = grouped_pages(), grouped_pages()
    assert [p.notification_id for p in first] == [p.notification_id for p in second]
    assert [p.notification_id for p in first] == [f"{first[0].alert_id}:firing", f"{first[0].alert_id}:escalate"]
