"""The Ops board's *Ingest gateway* row and VitalsGatewayUnavailable select what the gateway answers.

The gateway's ``requests`` counter is labelled with the route's pattern and its ``rejections``
counter with the refusal reason; the board filters both by value, so a renamed route or a new
"retry later" reason would leave a panel or the alert silently empty. These checks tie the
values to the gateway's own definitions: its OpenAPI description and its table of reasons.
"""

from __future__ import annotations

from typing import get_args

from gateway.openapi import openapi_document
from gateway.outcome import ISSUE_TYPES, Status
from grafana import rules
from grafana.boards.ops import STATUS_CLASSES, UPLOAD_ROUTES, ops_board


def test_upload_routes_are_the_gateways_post_routes() -> None:
    paths = openapi_document(1024)["paths"]
    # /fhir/ (the FHIR base URL with its slash, where fhirclient posts Bundles) is counted as /fhir
    posted = {path.rstrip("/") for path, operations in paths.items() if "post" in operations}
    assert set(UPLOAD_ROUTES) == posted
    assert {"/metrics", "/healthz"} <= set(paths) - set(UPLOAD_ROUTES), "scrapes and probes are not uploads"


def test_the_503_reasons_are_every_transient_refusal() -> None:
    transient = {reason for reason, kind in ISSUE_TYPES.items() if kind == "transient"}
    assert set(rules.GATEWAY_UNAVAILABLE_REASONS) == transient == {"broker_unavailable", "auth_unavailable"}
    (alert,) = [rule for rule in rules.alerting_rules() if rule.alert == "VitalsGatewayUnavailable"]
    assert rules.GATEWAY_UNAVAILABLE_MATCHER in alert.expr
    assert alert.for_ == f"{rules.GATEWAY_UNAVAILABLE_MINUTES}m"


def test_the_row_shows_every_status_class_the_gateway_answers() -> None:
    refusals = {str(status)[0] for status in get_args(Status)}
    assert set(STATUS_CLASSES) == {"2"} | refusals  # 202, and every class of refusal
    (row,) = [row for row in ops_board().rows if row.title == "Ingest gateway"]
    (requests,) = [panel for panel in row.panels if panel.title.startswith("Upload requests per second")]
    assert [target.legend for target in requests.targets] == ["{{route}} 2xx", "{{route}} 4xx", "{{route}} 5xx"]
