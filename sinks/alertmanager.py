"""The webhook body of a page: Alertmanager-compatible JSON, the exact bytes that are signed and sent.

The Alertmanager webhook format, ``"version": "4"`` (``receiver``, ``status``, ``alerts[]`` with
``labels``, ``annotations``, ``startsAt``, ``endsAt``, ``generatorURL``, ``fingerprint``, plus
``groupKey``, ``groupLabels``, ``commonLabels``, ``commonAnnotations``, ``externalURL``,
``truncatedAlerts``), one page per request, so any Alertmanager receiver accepts it. A page
carries the pseudonymous patient id, risk, NEWS2, the top contributing features (names and NEWS2
points, never vital values), the model and its version, and a link to the patient's Grafana
board; never a name.

A page carries one alert in ``alerts[]``, except a grouped model-risk page (kind ``risk_high``,
see :mod:`stream.alerts.engine`): one alert per head that fired in the group, each with its own
``labels`` (``kind``, ``condition``), ``status``, ``startsAt``/``endsAt`` and risk; the group's
``status``, ``commonLabels`` (what all share, the group's ``alert_id`` included) and
``commonAnnotations`` (a summary naming every head and its risk). ``groupKey`` is Alertmanager's:
the route's group labels (alert name, patient), stable across a patient's episodes; a receiver
dedupes on the ``Idempotency-Key`` (``<alert_id>:<action>``, one per page of an episode), or, as
for Alertmanager, on ``groupKey`` with each alert's ``fingerprint`` and ``startsAt``.

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

from kernel.alerts import GroupMember, Page

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
    elif base == "risk_high" and page.members:
        what = "model risk high: " + _heads(page, digits=2)
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


def _heads(page: Page, *, digits: int) -> str:
    """``any 0.81, heart_failure 0.72``: a group's heads with their latest risk, in the order they joined."""
    ev = page.evidence
    out = []
    for m in page.members:
        risk = ev.risk(m.kind) if ev else m.value
        condition = m.kind.partition(":")[2]
        out.append(condition if risk is None else f"{condition} {risk:.{digits}f}")
    return ", ".join(out)


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
    if page.members:
        annotations["heads"] = _heads(page, digits=3)
    return annotations


def _member_alert(page: Page, member: GroupMember, labels: Mapping[str, str],
                  annotations: Mapping[str, str]) -> dict[str, Any]:
    """One head of a grouped page as an ``alerts[]`` entry: its own labels, status, times and risk."""
    condition = member.kind.partition(":")[2]
    own = {**labels, "kind": member.kind, "condition": condition}
    risk = page.evidence.risk(member.kind) if page.evidence else member.value
    status = "firing" if member.firing and page.status == "firing" else "resolved"
    ends = member.resolved_ms if member.resolved_ms is not None else page.resolved_ms
    notes = {**annotations, "risk": "n/a" if risk is None else f"{risk:.3f}",
             "peak": "n/a" if member.peak is None else f"{member.peak:.3f}", "head_alert_id": member.alert_id,
             "summary": f"{page.patient_id}: {condition} risk " + ("high" if risk is None else f"{risk:.2f}")}
    return {"status": status, "labels": own, "annotations": notes,
            "startsAt": rfc3339(member.fired_ms if member.fired_ms is not None else member.since_ms),
            "endsAt": rfc3339(ends if status == "resolved" else None),
            "generatorURL": annotations["dashboard_url"], "fingerprint": fingerprint(own)}


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

    A grouped model-risk page lists each head:

    >>> from kernel.alerts import GroupMember
    >>> ev = Evidence(600_000, "river", "v3", 0.8, 2, "low", (("any", 0.81), ("heart_failure", 0.72)), ())
    >>> heads = (GroupMember("risk_high:any", "al-3", True, 0, 300_000, None, 0.81, 0.85),
    ...          GroupMember("risk_high:heart_failure", "al-4", True, 300_000, 600_000, None, 0.72, 0.72))
    >>> page = Page("al-2:escalate", "al-2", "escalate", "pt-9c1e", "risk_high", "warning", 1, 300_000, 300_000,
    ...             None, None, 2_100_000, 0.81, 0.85, ev, escalated=True, members=heads)
    >>> body = alertmanager_body(page, receiver="pager", grafana_url="http://g", external_url="http://a")
    >>> [(a["labels"]["condition"], a["annotations"]["risk"], a["startsAt"]) for a in body["alerts"]]
    [('any', '0.810', '1970-01-01T00:05:00Z'), ('heart_failure', '0.720', '1970-01-01T00:10:00Z')]
    >>> body["commonAnnotations"]["summary"], body["commonLabels"]["alert_id"]
    ('[ESCALATED] pt-9c1e: model risk high: any 0.81, heart_failure 0.72', 'al-2')
    """
    labels = alert_labels(page)
    annotations = alert_annotations(page, grafana_url=grafana_url, external_url=external_url)
    group_labels = {"alertname": labels["alertname"], "patient_id": page.patient_id}
    group_key = "{}:{" + ", ".join(f'{k}="{v}"' for k, v in sorted(group_labels.items())) + "}"
    if page.members:
        alerts = [_member_alert(page, m, labels, annotations) for m in page.members]
        common = {k: v for k, v in alerts[0]["labels"].items() if all(a["labels"].get(k) == v for a in alerts)}
    else:
        alerts = [{"status": page.status, "labels": labels, "annotations": annotations,
                   "startsAt": rfc3339(page.fired_ms if page.fired_ms is not None else page.since_ms),
                   "endsAt": rfc3339(page.resolved_ms if page.action == "resolved" else None),
                   "generatorURL": annotations["dashboard_url"], "fingerprint": fingerprint(labels)}]
        common = labels
    return {"version": "4", "groupKey": group_key, "truncatedAlerts": 0, "status": page.status,
            "receiver": receiver, "groupLabels": group_labels, "commonLabels": common,
            "commonAnnotations": annotations, "externalURL": external_url, "alerts": alerts}


def encode_body(body: Mapping[str, Any]) -> bytes:
    """Compact, key-sorted JSON: the exact bytes that are signed and sent."""
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
