"""Webhook delivery of pages: Alertmanager-compatible JSON, HMAC-signed, retried, audited.

Body
    The Alertmanager webhook format, ``"version": "4"`` (``receiver``, ``status``, ``alerts[]``
    with ``labels``, ``annotations``, ``startsAt``, ``endsAt``, ``generatorURL``, ``fingerprint``,
    plus ``groupKey``, ``groupLabels``, ``commonLabels``, ``commonAnnotations``, ``externalURL``,
    ``truncatedAlerts``), one alert per request, so any Alertmanager receiver accepts it. A page
    carries the pseudonymous patient id, risk, NEWS2, the top contributing features (names and
    NEWS2 points, never vital values), the model and its version, and a link to the patient's
    Grafana board; never a name.

Signature scheme (``X-Vitalrisk-Signature``)
    ::

        X-Vitalrisk-Timestamp: <unix seconds>
        X-Vitalrisk-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>
        Idempotency-Key: <notification id>

    The HMAC covers the decimal timestamp, a dot, and the exact body bytes. A receiver
    recomputes it with the shared secret, compares in constant time, and rejects a timestamp more
    than 5 minutes from its clock (replays). Several ``v1=`` entries may appear (secret
    rotation); one match suffices. Every attempt is signed afresh, so a page retried for minutes
    is never stale. ``Idempotency-Key`` is the same on every attempt and every replay of the
    same page: receivers drop the copies.

Delivery
    2xx is delivered. 408, 425, 429, 5xx, timeouts and connection errors are retried with
    exponential backoff and jitter (``delay = min(max, first * 2**(n-1))``, slept as a uniform
    draw in ``[delay/2, delay]``) until ``give_up_s`` has passed; other statuses fail at once.
    Each attempt is recorded through a :class:`DeliveryAudit`; a page given up on is
    dead-lettered there and raises :class:`~kernel.errors.AlertDeliveryFailed`.

Examples
--------
>>> header = sign(b"k", b'{"a":1}', 1_700_000_000)
>>> header
't=1700000000,v1=1b6ad1bc9bf48c52ce01939866d5877c6cc4e87ddad27e16673cb8c4964394a3'
>>> verify([b"k"], b'{"a":1}', header, "1700000000", now_s=1_700_000_060)
1700000000
>>> verify([b"k"], b'{"a":2}', header, "1700000000", now_s=1_700_000_060)
Traceback (most recent call last):
...
kernel.errors.SignatureInvalid: mismatch: no v1 signature matches the body
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp

from kernel.alerts import SEVERITIES, Page
from kernel.errors import AlertDeliveryFailed, InvalidPolicy, SignatureInvalid

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Vitalrisk-Signature"
TIMESTAMP_HEADER = "X-Vitalrisk-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
#: Signatures older or newer than this (seconds) are rejected as replays.
SIGNATURE_TOLERANCE_S = 300
#: Alertmanager's "no end yet".
ZERO_TIME = "0001-01-01T00:00:00Z"
#: The route key for escalations; falls back to the severity's route when absent.
ESCALATION_ROUTE = "escalation"
RETRY_STATUSES = frozenset({408, 425, 429})
DASHBOARD_UID = "vitalrisk-patient"

_ALERTNAMES = {"news2_high": "VitalriskNews2High", "news2_red_parameter": "VitalriskNews2RedParameter",
               "risk_high": "VitalriskRiskHigh", "data_stopped": "VitalriskDataStopped"}


# -- signing ----------------------------------------------------------------------------------

def sign(secret: bytes, body: bytes, timestamp_s: int) -> str:
    """The ``X-Vitalrisk-Signature`` value for ``body`` sent at ``timestamp_s``."""
    digest = hmac.new(secret, f"{timestamp_s}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp_s},v1={digest}"


def verify(secrets: Sequence[bytes], body: bytes, signature: str | None, timestamp: str | None, *,
           now_s: float, tolerance_s: float = SIGNATURE_TOLERANCE_S) -> int:
    """Check a request's signature; return its timestamp.

    Parameters
    ----------
    secrets
        Accepted secrets (more than one while a secret is being rotated).
    body
        The raw request body.
    signature, timestamp
        The ``X-Vitalrisk-Signature`` and ``X-Vitalrisk-Timestamp`` header values (``None`` if absent).
    now_s
        The receiver's clock, unix seconds.
    tolerance_s
        Largest accepted distance between ``t`` and ``now_s``.

    Raises
    ------
    SignatureInvalid
        ``missing`` header, ``malformed`` value, ``stale`` timestamp, or ``mismatch``.

    Examples
    --------
    >>> verify([b"k"], b"{}", sign(b"k", b"{}", 100), "100", now_s=1_000)
    Traceback (most recent call last):
    ...
    kernel.errors.SignatureInvalid: stale: timestamp 100 is 900 s from now (limit 300 s)
    """
    if not signature or not timestamp:
        raise SignatureInvalid("missing", f"{SIGNATURE_HEADER} and {TIMESTAMP_HEADER} are required")
    parts: dict[str, list[str]] = {}
    for item in signature.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            raise SignatureInvalid("malformed", f"{SIGNATURE_HEADER} must be t=<unix>,v1=<hex>")
        parts.setdefault(key, []).append(value)
    try:
        t = int(parts["t"][0])
    except (KeyError, ValueError):
        raise SignatureInvalid("malformed", f"{SIGNATURE_HEADER} needs an integer t=") from None
    if timestamp.strip() != str(t):
        raise SignatureInvalid("malformed", f"{TIMESTAMP_HEADER} ({timestamp}) differs from t= ({t})")
    if abs(now_s - t) > tolerance_s:
        raise SignatureInvalid("stale", f"timestamp {t} is {abs(now_s - t):.0f} s from now "
                                        f"(limit {tolerance_s:.0f} s)")
    candidates = parts.get("v1", [])
    message = f"{t}.".encode() + body
    for secret in secrets:
        expected = hmac.new(secret, message, hashlib.sha256).hexdigest()
        if any(hmac.compare_digest(expected, c) for c in candidates):
            return t
    raise SignatureInvalid("mismatch", "no v1 signature matches the body")


def signed_headers(secret: bytes, body: bytes, notification_id: str, *, now_s: float) -> dict[str, str]:
    """All headers of one attempt: content type, timestamp, signature, idempotency key.

    >>> sorted(signed_headers(b"k", b"{}", "al-1:firing", now_s=5.9))
    ['Content-Type', 'Idempotency-Key', 'X-Vitalrisk-Signature', 'X-Vitalrisk-Timestamp']
    """
    t = int(now_s)
    return {"Content-Type": "application/json", TIMESTAMP_HEADER: str(t), SIGNATURE_HEADER: sign(secret, body, t),
            IDEMPOTENCY_HEADER: notification_id}


# -- routing ----------------------------------------------------------------------------------

def parse_receivers(text: str) -> dict[str, str]:
    """``name=url;name=url`` as a dict.

    >>> parse_receivers("pager=http://127.0.0.1:9095/webhook; oncall=https://oncall.example/hook")
    {'pager': 'http://127.0.0.1:9095/webhook', 'oncall': 'https://oncall.example/hook'}
    >>> parse_receivers("pager")
    Traceback (most recent call last):
    ...
    kernel.errors.InvalidPolicy: a receiver must be name=http(s)://..., got 'pager'
    """
    out: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(";"))):
        name, sep, url = item.partition("=")
        if not sep or not name.strip() or not url.strip().startswith(("http://", "https://")):
            raise InvalidPolicy(f"a receiver must be name=http(s)://..., got {item!r}")
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
    def parse(cls, text: str, receivers: set[str] | frozenset[str]) -> "Router":
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


# -- the body ---------------------------------------------------------------------------------

def rfc3339(ms: int | None) -> str:
    """Epoch ms as Alertmanager's RFC 3339 UTC time; ``None`` as the zero time.

    >>> rfc3339(1_767_571_200_000), rfc3339(None)
    ('2026-01-05T00:00:00Z', '0001-01-01T00:00:00Z')
    """
    if ms is None:
        return ZERO_TIME
    when = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
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


# -- retries ----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter, bounded by a total time budget.

    Examples
    --------
    >>> b = Backoff(first_s=0.5, max_s=4.0, give_up_s=60.0)
    >>> [b.ceiling(n) for n in range(1, 6)]
    [0.5, 1.0, 2.0, 4.0, 4.0]
    >>> 0.25 <= b.delay(1, random.Random(7)) <= 0.5
    True
    """

    first_s: float = 0.5
    max_s: float = 30.0
    give_up_s: float = 900.0

    def __post_init__(self) -> None:
        if not 0 < self.first_s <= self.max_s or self.give_up_s <= 0:
            raise InvalidPolicy(f"backoff needs 0 < first_s <= max_s and give_up_s > 0, got "
                                f"{self.first_s:g}, {self.max_s:g}, {self.give_up_s:g}")

    def ceiling(self, attempt: int) -> float:
        """Largest delay after the ``attempt``-th failure (1-based)."""
        return min(self.max_s, self.first_s * 2.0 ** (attempt - 1))

    def delay(self, attempt: int, rng: random.Random) -> float:
        """A jittered delay in ``[ceiling/2, ceiling]``: spread out, never a hot loop."""
        ceiling = self.ceiling(attempt)
        return rng.uniform(ceiling / 2, ceiling)


# -- delivery ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Delivery:
    """One page for one receiver: the signed-per-attempt body and where it goes."""

    notification_id: str
    alert_id: str
    receiver: str
    url: str
    body: bytes


@dataclass(frozen=True, slots=True)
class Attempt:
    """The record of one HTTP attempt (one row of the ``webhook_deliveries`` audit table)."""

    notification_id: str
    receiver: str
    attempt: int
    outcome: str               # delivered | retry | failed
    status_code: int | None
    error: str | None
    duration_ms: float


class DeliveryAudit(Protocol):
    """Where attempts and dead letters are recorded (the database in the alerter, a list in tests)."""

    async def record_attempt(self, attempt: Attempt) -> None: ...

    async def dead_letter(self, delivery: Delivery, attempts: int, last_status: int | None, detail: str) -> None: ...


def classify(status: int) -> str:
    """``delivered``, ``retry`` or ``failed`` for an HTTP status.

    >>> [classify(s) for s in (200, 204, 429, 503, 400, 401)]
    ['delivered', 'delivered', 'retry', 'retry', 'failed', 'failed']
    """
    if 200 <= status < 300:
        return "delivered"
    if status in RETRY_STATUSES or status >= 500:
        return "retry"
    return "failed"


class WebhookSender:
    """Signs and posts deliveries with retries; use as ``async with WebhookSender(...) as s``.

    Parameters
    ----------
    secret
        The HMAC-SHA256 key.
    audit
        Records every attempt and every dead letter.
    backoff
        Retry schedule and budget.
    timeout_s
        Timeout of one attempt (connect + response).
    rng
        Jitter source (seed it in tests).
    clock
        Unix-seconds clock used for the signature timestamp (inject in tests).
    """

    def __init__(self, secret: bytes, *, audit: DeliveryAudit, backoff: Backoff | None = None,
                 timeout_s: float = 5.0, rng: random.Random | None = None,
                 clock: Any = time.time) -> None:
        if not secret:
            raise InvalidPolicy("a webhook secret is required: pages are always signed")
        self._secret = secret
        self.audit = audit
        self.backoff = backoff or Backoff()
        self.timeout_s = timeout_s
        self._rng = rng or random.Random()
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> "WebhookSender":
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def attempt(self, delivery: Delivery, number: int) -> Attempt:
        """One signed POST; never raises for HTTP or network trouble, returns the outcome."""
        if self._session is None:
            raise RuntimeError("use WebhookSender as an async context manager")
        headers = signed_headers(self._secret, delivery.body, delivery.notification_id, now_s=self._clock())
        started = time.perf_counter()
        status: int | None = None
        error: str | None = None
        try:
            async with self._session.post(delivery.url, data=delivery.body, headers=headers) as response:
                status = response.status
                await response.read()
            outcome = classify(status)
            if outcome != "delivered":
                error = f"HTTP {status}"
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            outcome = "retry"
            error = f"{type(exc).__name__}: {exc}".strip()[:300]
        return Attempt(delivery.notification_id, delivery.receiver, number, outcome, status, error,
                       (time.perf_counter() - started) * 1000)

    async def deliver(self, delivery: Delivery) -> Attempt:
        """Post until delivered, a permanent failure, or the budget runs out; audit every attempt.

        Returns
        -------
        Attempt
            The successful attempt.

        Raises
        ------
        AlertDeliveryFailed
            After dead-lettering the delivery.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.backoff.give_up_s
        number = 0
        while True:
            number += 1
            result = await self.attempt(delivery, number)
            final = result.outcome == "failed"
            delay = self.backoff.delay(number, self._rng)
            if result.outcome == "retry" and loop.time() + delay > deadline:
                final = True
                result = Attempt(result.notification_id, result.receiver, result.attempt, "failed",
                                 result.status_code, f"gave up after {self.backoff.give_up_s:g} s: {result.error}",
                                 result.duration_ms)
            await self.audit.record_attempt(result)
            if result.outcome == "delivered":
                return result
            if final:
                detail = result.error or "failed"
                await self.audit.dead_letter(delivery, number, result.status_code, detail)
                raise AlertDeliveryFailed(delivery.notification_id, delivery.receiver, number, detail)
            logger.warning("webhook %s to %s: attempt %d failed (%s); retrying in %.1f s",
                           delivery.notification_id, delivery.receiver, number, result.error, delay)
            await asyncio.sleep(delay)
