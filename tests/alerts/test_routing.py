"""Which receiver gets which page (stream.alerts.routing): receivers and routes, parsed and checked."""

from __future__ import annotations

import pytest

from kernel.errors import InvalidPolicy
from stream.alerts.routing import Router, parse_receivers


def test_routes_and_receivers_are_parsed_and_checked() -> None:
    receivers = parse_receivers("pager=http://p/webhook;senior=https://s/hook")
    router = Router.parse("critical=pager,senior;warning=pager;escalation=senior", frozenset(receivers))
    assert router.receivers_for("critical", escalate=False) == ("pager", "senior")
    assert router.receivers_for("warning", escalate=True) == ("senior",)
    assert Router.parse("warning=pager", frozenset(receivers)).receivers_for("warning", escalate=True) == ("pager",)
    with pytest.raises(InvalidPolicy, match="unknown receivers"):
        Router.parse("critical=nobody", frozenset(receivers))
    with pytest.raises(InvalidPolicy):
        Router.parse("urgent=pager", frozenset(receivers))
    with pytest.raises(InvalidPolicy):
        parse_receivers("pager=ftp://x")
