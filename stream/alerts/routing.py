"""Which receiver gets which page: the receiver list and the route table (alert policy, no I/O).

Receivers (``VITALS_WEBHOOK_RECEIVERS``) name webhook URLs; routes (``VITALS_WEBHOOK_ROUTES``) map
a page's severity, and escalations, to receivers. The alerter parses both once at start
(:mod:`stream.alerts.service`); the dispatcher (:mod:`stream.alerts.delivery`) sends each page to
the receivers its route names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from kernel.alerts import SEVERITIES
from kernel.errors import InvalidPolicy

#: The route key for escalations; falls back to the severity's route when absent.
ESCALATION_ROUTE = "escalation"


def parse_receivers(text: str, *, require_https: bool = False) -> dict[str, str]:
    """``name=url;name=url`` as a dict; with ``require_https``, every URL must be ``https://``.

    >>> parse_receivers("pager=http://127.0.0.1:9095/webhook; oncall=https://oncall.example/hook")
    {'pager': 'http://127.0.0.1:9095/webhook', 'oncall': 'https://oncall.example/hook'}
    >>> parse_receivers("pager")
    Traceback (most recent call last):
    ...
    kernel.errors.InvalidPolicy: a receiver must be name=http(s)://..., got 'pager'
    >>> parse_receivers("pager=http://pager.example/hook", require_https=True)
    Traceback (most recent call last):
    ...
    kernel.errors.InvalidPolicy: receiver 'pager' must be an https:// URL (VITALS_WEBHOOK_REQUIRE_HTTPS): pages carry patient ids
    """
    out: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(";"))):
        name, sep, url = item.partition("=")
        if not sep or not name.strip() or not url.strip().startswith(("http://", "https://")):
            raise InvalidPolicy(f"a receiver must be name=http(s)://..., got {item!r}")
        if require_https and not url.strip().startswith("https://"):
            raise InvalidPolicy(f"receiver {name.strip()!r} must be an https:// URL (VITALS_WEBHOOK_REQUIRE_HTTPS): "
                                "pages carry patient ids")
        out[name.strip()] = url.strip()
    return out


@dataclass(frozen=True, slots=True)
class Router:
    """Which receivers get a page: by severity, and a separate route for escalations.

    Examples
    --------
    >>> r = Router.parse("critical=pager,oncall;warning=pager;escalation=oncall", {"pager", "oncall"})
    >>> r.receivers_for("warning", escalate=False), r.receivers_for("warning", escalate=True)
    (('pager',), ('oncall',))
    >>> r.receivers_for("info", escalate=False)
    ()
    """

    routes: Mapping[str, tuple[str, ...]]

    @classmethod
    def parse(cls, text: str, receivers: set[str] | frozenset[str]) -> Router:
        """``severity=a,b;severity=c`` (``escalation=`` for escalations), checked against ``receivers``."""
        routes: dict[str, tuple[str, ...]] = {}
        for item in filter(None, (part.strip() for part in text.split(";"))):
            key, sep, names = item.partition("=")
            key = key.strip()
            if not sep or key not in (*SEVERITIES, ESCALATION_ROUTE):
                raise InvalidPolicy(f"a route must be <{'|'.join((*SEVERITIES, ESCALATION_ROUTE))}>=receiver,..., "
                                    f"got {item!r}")
            chosen = tuple(n.strip() for n in names.split(",") if n.strip())
            unknown = [n for n in chosen if n not in receivers]
            if unknown:
                raise InvalidPolicy(f"route {key!r} names unknown receivers {unknown}; known: {sorted(receivers)}")
            routes[key] = chosen
        return cls(routes)

    def receivers_for(self, severity: str, *, escalate: bool) -> tuple[str, ...]:
        if escalate and ESCALATION_ROUTE in self.routes:
            return self.routes[ESCALATION_ROUTE]
        return self.routes.get(severity, ())
