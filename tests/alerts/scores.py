"""Score sequences for the alert core's tests, and the engine runs that feed them (no services).

``news2_score`` (NEWS2-only scores) is in ``conftest.py`` beside the fixtures of the end-to-end tests;
here are model-risk scores, a policy with one model-risk threshold, and the loops that feed an engine.
"""

from __future__ import annotations

from kernel.alerts import Page
from kernel.events import RiskScore
from stream.alerts import AlertEngine, AlertPolicy, Threshold, Timers

MIN = 60_000
T0 = 1_767_571_200_000
#: The model-risk threshold of :func:`policy`.
ENTER, EXIT = 0.7, 0.5
KIND = "risk_high:any"


def at(minute: float) -> int:
    """The time ``minute`` minutes after ``T0``."""
    return T0 + int(minute * MIN)


def risk_score(patient: str, minute: int, risks: dict[str, float], total: int = 1) -> RiskScore:
    """A model score of the window ending at ``minute``, with two contributing features and NEWS2 ``total``."""
    return RiskScore(patient_id=patient, window_start_ms=T0 + (minute - 1) * MIN, window_end_ms=T0 + minute * MIN, model_name="river-logreg", model_version="v7", score=max(risks.values()),
                     news2_total=total, news2_band="low", inputs={}, contributions={"hr_vs_baseline": 0.4, "rr_slope": 0.2}, risks=risks,
                     news2_subscores={"heart_rate": min(total, 1)})


def any_risk(minute: int, risk: float, patient: str = "pt-1") -> RiskScore:
    """A model score of the window ending at ``minute`` with one risk, ``any``."""
    return RiskScore(patient_id=patient, window_start_ms=T0 + (minute - 1) * MIN, window_end_ms=T0 + minute * MIN, model_name="river", model_version="v1", score=risk, news2_total=0, news2_band="low", inputs={}, contributions={},
                     risks={"any": risk})


def policy(*, for_ms: int = 2 * MIN, clear_for_ms: int = 2 * MIN, escalate_ms: int | None = 10 * MIN,
           renotify_ms: int | None = None) -> AlertPolicy:
    """A policy paging model risk at :data:`ENTER` / :data:`EXIT`, the same timers for every severity but info,
    ``data_stopped`` off."""
    timers = Timers(renotify_ms, escalate_ms)
    return AlertPolicy(risk=Threshold(ENTER, EXIT, for_ms, clear_for_ms, "warning"), data_stopped_ms=None,
                       timers_by_severity={"critical": timers, "warning": timers, "info": Timers(None, None)})


def feed(engine: AlertEngine, scores: list[RiskScore]) -> list[tuple[str, str]]:
    """The ``(action, kind)`` of every page the scores cause, "now" being each one's window end."""
    out = []
    for s in scores:
        out += [(p.action, p.kind) for p in engine.on_score(s, now_ms=s.window_end_ms).pages]
    return out


def run(engine: AlertEngine, risks: list[float], *, start: int = 1) -> list[Page]:
    """The pages of one patient's ``any`` risks, one a minute from minute ``start``."""
    pages: list[Page] = []
    for i, r in enumerate(risks, start):
        pages += engine.on_score(any_risk(i, r), now_ms=T0 + i * MIN).pages
    return pages
