"""The webhook body of a page: Alertmanager-compatible JSON, the exact bytes that are signed and sent.

The Alertmanager webhook format, ``"version": "4"`` (``receiver``, ``status``, ``alerts[]`` with
``labels``, ``annotations``, ``startsAt``, ``endsAt``, ``generatorURL``, ``fingerprint``, plus
``groupKey``, ``groupLabels``, ``commonLabels``, ``commonAnnotations``, ``externalURL``,
``truncatedAlerts``), one alert per request, so any Alertmanager receiver accepts it. A page
carries the pseudonymous patient id, risk, NEWS2, the top contributing features (names and NEWS2
points, never vital values), the model and its version, and a link to the patient's Grafana
board; never a name.

Pure functions of the page: :mod:`stream.alerts.delivery` encodes a body per page and receiver
and hands it to the sender (:mod:`sinks.webhook`), which signs it (:mod:`sinks.signing`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from kernel.alerts import Page

#: Alertmanager's "no end yet".
ZERO_TIME = "0001-01-01T00:00:00Z"
DASHBOARD_UID = "vitalrisk-patient"

_ALERTNAMES = {"news2_high": "VitalriskNews2High", "news2_red_parameter": "VitalriskNews2RedParameter",
               "risk_high": "VitalriskRiskHigh", "data_stopped": "VitalriskDataStopped"}


def rfc3339(ms: int | None) -> str:
    """Epoch ms as Alertmanager's RFC 3339 UTC time; ``None`` as the zero time.

    >>> rfc3339(1_767_571_200_000), rfc3339(None)
    ('2026-01-05T00:00:00Z', '0001-01-01T00:00:00Z')
    """
    if ms is None:
        return ZERO_TIME
    when = datetime.fromtimestamp(ms / 1000, tz=UTC)
    text = when.strftime("%Y-%m-%dT%H:%M:%S")
    return text + (f".{ms % 1000:03d}Z" if ms % 1000 else "Z")


def patient_dashboard_url(grafana_url: str, patient_id: str) -> str:
    """Link to the patient's Grafana board.

    >>> patient_dashboard_url("http://grafana:3000/", "pt-9c1e")
    'http://grafana:3000/d/vitalrisk-patient?var-patient=pt-9c1e'
    """
    return f"{grafana_url.rstrip('/')}/d/{DASHBOARD_UID}?var-patient={quote(patient_id, safe='')}"


def alert_labels(page: Page) -> dict[str, str]:
    """Labels that identify the alert (stable across its pages, so the fingerprint is too)."""
    base = page.kind.partition(":")[0]
    labels = {"alertname": _ALERTNAMES.get(base, "Vitalrisk"), "kind": page.kind, "patient_id": page.patient_id,
              "severity": page.severity, "alert_id": page.alert_id}
    if page.condition:
        labels["condition"] = page.condition
    return labels


def fingerprint(labels: Mapping[str, str]) -> str:
    """16 hex digits identifying a label set, like Alertmanager's.

    >>> fingerprint({"alertname": "A", "patient_id": "pt-1"})
    '1388d28f8eb04701'
    """
    canonical = "\x00".join(f"{k}\x01{labels[k]}" for k in sorted(labels))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _summary(page: Page) -> str:
    ev = page.evidence
    news2 = f"NEWS2 {ev.news2_total} ({ev.news2_band})" if ev else "NEWS2 unknown"
    base = page.kind.partition(":")[0]
    if base == "news2_high":
        what = f"{news2}: high clinical risk"
    elif base == "news2_red_parameter":
        what = f"a single NEWS2 parameter scores 3; {news2}"
    elif base == "risk_high":
        risk = ev.risk(page.kind) if ev else None
        what = f"{page.condition} risk {risk:.2f}" if risk is not None else f"{page.condition} risk high"
    elif base == "data_stopped":
        minutes = (page.value or 0) / 60_000
        what = f"no data for {minutes:.0f} min"
    else:
        what = page.kind
    prefix = {"renotify": "[unacknowledged] ", "escalate": "[ESCALATED] ", "resolved": "[resolved] "}
    return f"{prefix.get(page.action, '')}{page.patient_id}: {what}"


def alert_annotations(page: Page, *, grafana_url: str, external_url: str) -> dict[str, str]:
    """What a coordinator reads: summary, risk, NEWS2, top features, model, links (strings only)."""
    ev = page.evidence
    risk = ev.risk(page.kind) if ev else None
    annotations = {
        "summary": _summary(page),
        "patient_id": page.patient_id,
        "risk": "n/a" if risk is None else f"{risk:.3f}",
        "news2_total": "n/a" if ev is None else str(ev.news2_total),
        "news2_band": "n/a" if ev is None else ev.news2_band,
        "top_features": ", ".join(f"{name}={points:g}" for name, points in ev.top_features) if ev else "",
        "model": "" if ev is None else ev.model_name,
        "model_version": "" if ev is None else ev.model_version,
        "dashboard_url": patient_dashboard_url(grafana_url, page.patient_id),
        "ack_url": f"{external_url.rstrip('/')}/alerts/{page.alert_id}/ack",
        "notification": page.action,
        "notification_id": page.notification_id,
        "episode": str(page.episode),
    }
    if ev is not None and ev.missing_inputs:
        annotations["missing_inputs"] = ", ".join(ev.missing_inputs)
    if page.acknowledged_by:
        annotations["acknowledged_by"] = page.acknowledged_by
    return annotations


def alertmanager_body(page: Page, *, receiver: str, grafana_url: str, external_url: str) -> dict[str, Any]:
    """The Alertmanager ``version: "4"`` webhook body for one page.

    Examples
    --------
    >>> from kernel.alerts import Evidence
    >>> ev = Evidence(120_000, "news2", "rcp-2017-scale1", 0.4, 8, "high", (), (("respiratory_rate", 3.0),))
    >>> page = Page("al-1:firing", "al-1", "firing", "pt-9c1e", "news2_high", "critical", 1, 60_000,
    ...             120_000, None, 120_000, 120_000, 8.0, 8.0, ev)
    >>> body = alertmanager_body(page, receiver="pager", grafana_url="http://g", external_url="http://a")
    >>> body["version"], body["status"], body["alerts"][0]["labels"]["alertname"]
    ('4', 'firing', 'VitalriskNews2High')
    >>> body["alerts"][0]["annotations"]["summary"]
    'pt-9c1e: NEWS2 8 (high): high clinical risk'
    """
    labels = alert_labels(page)
    annotations = alert_annotations(page, grafana_url=grafana_url, external_url=external_url)
    group_labels = {"alertname": labels["alertname"], "patient_id": page.patient_id}
    group_key = "{}:{" + ", ".join(f'{k}="{v}"' for k, v in sorted(group_labels.items())) + "}"
    alert = {"status": page.status, "labels": labels, "annotations": annotations,
             "startsAt": rfc3339(page.fired_ms if page.fired_ms is not None else page.since_ms),
             "endsAt": rfc3339(page.resolved_ms if page.action == "resolved" else None),
             "generatorURL": annotations["dashboard_url"], "fingerprint": fingerprint(labels)}
    return {"version": "4", "groupKey": group_key, "truncatedAlerts": 0, "status": page.status,
            "receiver": receiver, "groupLabels": group_labels, "commonLabels": labels,
            "commonAnnotations": annotations, "externalURL": external_url, "alerts": [alert]}


def encode_body(body: Mapping[str, Any]) -> bytes:
    """Compact, key-sorted JSON: the exact bytes that are signed and sent."""
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
