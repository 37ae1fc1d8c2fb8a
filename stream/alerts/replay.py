"""Replay scores through the alert engine offline, for evaluation of alert burden. Pure.

``vitalrisk evaluate`` counts what the live alerter *would* have paged: pages per patient-day,
PPV and sensitivity against outcomes, lead time from the firing page to onset. It calls
:func:`replay_pages` on a list of scores; the same engine and policy as the live service run,
with "now" taken to be each score's event time. Under the default policy a patient's model-risk
heads page as one group (kind ``risk_high``; see :mod:`stream.alerts.engine`, "Grouping").

Examples
--------
>>> from kernel.events import RiskScore
>>> def score(minute, risk):
...     return RiskScore(patient_id="pt-1", window_start_ms=(minute - 1) * 60_000, window_end_ms=minute * 60_000, model_name="river", model_version="v3", score=risk, news2_total=2, news2_band="low",
...                      inputs={}, contributions={}, risks={"any": risk})
>>> pages = replay_pages([score(m, r) for m, r in enumerate([.2, .8, .72, .75, .9, .6, .4, .3, .2], 1)])
>>> [(p.action, p.kind, p.event_ms // 60_000) for p in pages]
[('firing', 'risk_high', 4), ('resolved', 'risk_high', 9)]
"""

from __future__ import annotations

from collections.abc import Iterable

from stream.alerts.engine import AlertEngine
from kernel.alerts import Page
from stream.alerts.rules import AlertPolicy
from kernel.events import RiskScore


def replay_pages(scores: Iterable[RiskScore], policy: AlertPolicy | None = None, *,
                 ack_after_ms: int | None = None, until_ms: int | None = None) -> list[Page]:
    """Every page the engine issues for ``scores``, in event-time order.

    Parameters
    ----------
    scores
        Scores of any number of patients, in any order; they are sorted by window end
        (then patient id) and fed one by one, "now" being each one's window end.
    policy
        The alert policy; the default :class:`~stream.alerts.rules.AlertPolicy` if ``None``.
    ack_after_ms
        Simulate a coordinator acknowledging each firing page this long after it was sent
        (which suppresses its re-notifications and escalation); ``None`` never acknowledges.
    until_ms
        Run the timers up to this time after the last score (data stopped, re-notify,
        escalate); default: stop at the last score.

    Returns
    -------
    list[Page]
        Pages with ``action`` ``firing``, ``renotify``, ``escalate`` or ``resolved``. Count
        ``firing`` pages for the alert burden; ``Page.event_ms`` is the window end that fired it
        (lead time = onset - event_ms), ``Page.patient_id`` and ``Page.kind`` say whose and why
        (``risk_high``, a grouped page: ``Page.members`` names its heads).

    Notes
    -----
    The timers tick only at score times (and at ``until_ms``), so a ``data_stopped`` page comes
    at the first score of any patient after the timeout, not exactly at it.
    """
    engine = AlertEngine(policy or AlertPolicy())
    pages: list[Page] = []
    acks: list[tuple[int, str]] = []  # (due_ms, alert_id), in due order

    def run_until(now_ms: int) -> None:
        while acks and acks[0][0] <= now_ms:
            due, alert_id = acks.pop(0)
            if any(a.alert_id == alert_id for _, a in engine.firing()):
                engine.acknowledge(alert_id, by="replay", at_ms=due)
        collect(engine.tick(now_ms=now_ms).pages)

    def collect(new: Iterable[Page]) -> None:
        for page in new:
            pages.append(page)
            if ack_after_ms is not None and page.action == "firing":
                acks.append((page.at_ms + ack_after_ms, page.alert_id))
                acks.sort()

    last = None
    for score in sorted(scores, key=lambda s: (s.window_end_ms, s.patient_id)):
        run_until(score.window_end_ms)
        collect(engine.on_score(score, now_ms=score.window_end_ms).pages)
        last = score.window_end_ms
    if until_ms is not None and (last is None or until_ms > last):
        run_until(until_ms)
    return pages
