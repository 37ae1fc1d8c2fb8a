"""What pages, and when: alert kinds, thresholds with hysteresis, timers and silences.

Each alert *kind* turns a score into one number, its *signal*, and compares it with a
:class:`Threshold`:

==========================  ==================================================  ==========  ========
kind                        signal                                              enter/exit  severity
==========================  ==================================================  ==========  ========
``news2_high``              ``RiskScore.news2_total``                           ≥ 7 / ≤ 4   critical
``news2_red_parameter``     the largest of ``RiskScore.news2_subscores``        ≥ 3 / ≤ 1   warning
``risk_high:<condition>``   ``RiskScore.risks[condition]`` (one per condition)  ≥ .6 / ≤ .5 warning
``data_stopped``            no score from the patient for ``data_stopped_ms``   (timer)     warning
==========================  ==================================================  ==========  ========

NEWS2 7 or more is the RCP's *high* clinical risk (emergency response), a single parameter
scoring 3 its *red score* (urgent ward-based response). The exit thresholds sit below the enter
thresholds (*hysteresis*), so a signal wandering around the enter threshold pages once, not at
every crossing; ``for_ms`` is how long (event time) the signal must stay at or above ``enter``
before it pages, ``clear_for_ms`` how long it must stay at or below ``exit`` before the alert
resolves. Nothing here reads a clock: every time is an argument.

The model-risk entry of 0.6 (0.7 until issue 7) was chosen on the alert burden of
``vitalrisk evaluate``'s default cohort: it pages two more of 43 onsets (heart failure) before
onset than 0.7, at a page PPV still above 0.5 (0.54) and about 0.014 pages per patient-day; a
lower entry buys at most a few more onsets at a PPV under 0.5 (0.3: 34 of 43, PPV 0.33). On a
held-out cohort (seed 43) 0.6 also pages more onsets than 0.7, but at PPV 0.44: the trade-off,
the onsets no threshold pages in time, and how the burden target fares on each cohort are in
docs/alerting.md.

Examples
--------
>>> policy = AlertPolicy()
>>> policy.threshold("news2_high").enter, policy.threshold("risk_high:infection").exit
(7.0, 0.5)
>>> policy.timers("critical")
Timers(renotify_ms=900000, escalate_ms=600000)
>>> from kernel.alerts import Silence
>>> Silence("s1", patient_id="pt-1", kind="risk_high", starts_ms=0, ends_ms=60_000,
...         created_by="rn-ward-3", reason="family visit").matches("pt-1", "risk_high:any", 30_000)
True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from kernel.errors import InvalidPolicy
from kernel.alerts import SEVERITIES
from kernel.events import RiskScore

NEWS2_HIGH = "news2_high"
NEWS2_RED = "news2_red_parameter"
RISK_HIGH = "risk_high"
DATA_STOPPED = "data_stopped"
#: Severities, most urgent first; every page is routed by one of them.

MINUTE_MS = 60_000


@dataclass(frozen=True, slots=True)
class Threshold:
    """Enter and exit levels of one kind's signal, with the durations that debounce them.

    Parameters
    ----------
    enter
        The signal at or above this starts an episode (pending, then firing).
    exit
        The signal at or below this resolves a firing alert; must not exceed ``enter``.
    for_ms
        Event time the signal must stay at or above ``enter`` before the alert fires; 0 fires
        on the first breaching score.
    clear_for_ms
        Event time the signal must stay at or below ``exit`` before a firing alert resolves.
    severity
        ``critical``, ``warning`` or ``info``: picks the receivers and the timers.

    Examples
    --------
    >>> Threshold(0.5, 0.7)
    Traceback (most recent call last):
    ...
    kernel.errors.InvalidPolicy: exit (0.7) must not exceed enter (0.5): hysteresis needs exit <= enter
    """

    enter: float
    exit: float
    for_ms: int = 0
    clear_for_ms: int = 0
    severity: str = "warning"

    def __post_init__(self) -> None:
        if self.exit > self.enter:
            raise InvalidPolicy(f"exit ({self.exit:g}) must not exceed enter ({self.enter:g}): "
                                "hysteresis needs exit <= enter")
        if self.for_ms < 0 or self.clear_for_ms < 0:
            raise InvalidPolicy(f"for_ms and clear_for_ms must be >= 0, got {self.for_ms}, {self.clear_for_ms}")
        if self.severity not in SEVERITIES:
            raise InvalidPolicy(f"severity must be one of {SEVERITIES}, got {self.severity!r}")


@dataclass(frozen=True, slots=True)
class Timers:
    """Wall-clock timers of a firing, unacknowledged alert of one severity (``None``: never).

    ``renotify_ms`` repeats the page while nobody acknowledges it; ``escalate_ms`` after the
    first page sends it, once, to the escalation route.
    """

    renotify_ms: int | None
    escalate_ms: int | None

    def __post_init__(self) -> None:
        for name in ("renotify_ms", "escalate_ms"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise InvalidPolicy(f"{name} must be positive or None, got {value}")


def _default_timers() -> Mapping[str, Timers]:
    return MappingProxyType({
        "critical": Timers(renotify_ms=15 * MINUTE_MS, escalate_ms=10 * MINUTE_MS),
        "warning": Timers(renotify_ms=60 * MINUTE_MS, escalate_ms=30 * MINUTE_MS),
        "info": Timers(renotify_ms=None, escalate_ms=None),
    })


@dataclass(frozen=True, slots=True)
class AlertPolicy:
    """The whole alerting policy: thresholds per kind, timers per severity, storm protection.

    Parameters
    ----------
    news2_total
        Threshold on the NEWS2 total (RCP: 7 or more is high risk).
    news2_parameter
        Threshold on the largest single-parameter NEWS2 score (RCP: a 3 is a red score).
    risk
        Threshold on every condition's model probability, unless ``risk_by_condition`` names one.
    risk_by_condition
        Per-condition overrides of ``risk``, e.g. ``{"infection": Threshold(0.6, 0.4, 120_000)}``.
    data_stopped_ms
        Wall-clock time without a score after which a patient's ``data_stopped`` alert fires;
        ``None`` turns the kind off.
    data_stopped_severity
        Severity of ``data_stopped``.
    timers_by_severity
        :class:`Timers` per severity.
    inhibits
        ``(source, target)`` kind pairs: while ``source`` fires for a patient, ``target`` fires
        silently for that patient (one page for one deterioration, the more urgent one).
    storm_fraction, storm_min_patients
        When at least ``storm_min_patients`` patients and at least ``storm_fraction`` of all
        tracked patients go quiet in the same tick, the pipeline stalled, not the patients:
        no ``data_stopped`` page is sent for them (the Grafana "pipeline stalled" rule pages ops).
    top_features
        How many contributing features a page lists.
    group_model_risk
        Page the model-risk heads of one patient as one group (kind ``risk_high``; see
        :mod:`stream.alerts.engine`, "Grouping"): a head crossing while the group fires joins it
        instead of paging. ``False`` pages every head on its own, as before grouping existed.
    """

    news2_total: Threshold = Threshold(7.0, 4.0, for_ms=MINUTE_MS, clear_for_ms=2 * MINUTE_MS, severity="critical")
    news2_parameter: Threshold = Threshold(3.0, 1.0, for_ms=MINUTE_MS, clear_for_ms=2 * MINUTE_MS,
                                           severity="warning")
    risk: Threshold = Threshold(0.6, 0.5, for_ms=2 * MINUTE_MS, clear_for_ms=2 * MINUTE_MS, severity="warning")
    risk_by_condition: Mapping[str, Threshold] = field(default_factory=lambda: MappingProxyType({}))
    data_stopped_ms: int | None = 15 * MINUTE_MS
    data_stopped_severity: str = "warning"
    timers_by_severity: Mapping[str, Timers] = field(default_factory=_default_timers)
    inhibits: tuple[tuple[str, str], ...] = ((NEWS2_HIGH, NEWS2_RED),)
    storm_fraction: float = 0.5
    storm_min_patients: int = 5
    top_features: int = 3
    group_model_risk: bool = True

    def __post_init__(self) -> None:
        if self.data_stopped_ms is not None and self.data_stopped_ms <= 0:
            raise InvalidPolicy(f"data_stopped_ms must be positive or None, got {self.data_stopped_ms}")
        if self.data_stopped_severity not in SEVERITIES:
            raise InvalidPolicy(f"data_stopped_severity must be one of {SEVERITIES}, "
                                f"got {self.data_stopped_severity!r}")
        missing = [s for s in SEVERITIES if s not in self.timers_by_severity]
        if missing:
            raise InvalidPolicy(f"timers must cover every severity, missing {missing}")
        if not 0 < self.storm_fraction <= 1 or self.storm_min_patients < 1:
            raise InvalidPolicy(f"storm_fraction must lie in (0, 1] and storm_min_patients be >= 1, "
                                f"got {self.storm_fraction:g}, {self.storm_min_patients}")
        if self.top_features < 0:
            raise InvalidPolicy(f"top_features must be >= 0, got {self.top_features}")

    def threshold(self, kind: str) -> Threshold:
        """The threshold of a score-driven kind.

        >>> AlertPolicy().threshold("data_stopped")
        Traceback (most recent call last):
        ...
        kernel.errors.InvalidPolicy: kind 'data_stopped' has no threshold: it is driven by a timer
        """
        if kind == NEWS2_HIGH:
            return self.news2_total
        if kind == NEWS2_RED:
            return self.news2_parameter
        base, _, condition = kind.partition(":")
        if base == RISK_HIGH and condition:
            return self.risk_by_condition.get(condition, self.risk)
        if kind == DATA_STOPPED:
            raise InvalidPolicy(f"kind {kind!r} has no threshold: it is driven by a timer")
        raise InvalidPolicy(f"unknown alert kind {kind!r}")

    def severity(self, kind: str) -> str:
        """Severity of any kind, the timer-driven ones and the model-risk group included.

        The group (``risk_high``) takes the most urgent severity of any head's threshold, so its
        route and timers do not change as heads join it.

        >>> AlertPolicy(risk_by_condition={"copd": Threshold(0.7, 0.5, severity="critical")}).severity("risk_high")
        'critical'
        """
        if kind == DATA_STOPPED:
            return self.data_stopped_severity
        if kind == RISK_HIGH:
            heads = {self.risk.severity, *(t.severity for t in self.risk_by_condition.values())}
            return min(heads, key=SEVERITIES.index)
        return self.threshold(kind).severity

    def grouped(self, kind: str) -> bool:
        """Whether ``kind`` pages through its patient's model-risk group rather than on its own.

        >>> AlertPolicy().grouped("risk_high:copd"), AlertPolicy().grouped("news2_high")
        (True, False)
        >>> AlertPolicy(group_model_risk=False).grouped("risk_high:copd")
        False
        """
        return self.group_model_risk and kind.startswith(RISK_HIGH + ":")

    def timers(self, severity: str) -> Timers:
        """:class:`Timers` for one severity."""
        return self.timers_by_severity[severity]

    def inhibitors_of(self, kind: str) -> tuple[str, ...]:
        """The kinds whose firing silences ``kind`` for the same patient.

        >>> AlertPolicy().inhibitors_of("news2_red_parameter")
        ('news2_high',)
        """
        return tuple(source for source, target in self.inhibits if target == kind)


def signals(score: RiskScore) -> dict[str, float]:
    """Each score-driven kind's signal in one score, inhibiting kinds first.

    A kind whose input the score lacks is absent: a NEWS2-only score has no ``risks``, so it
    neither raises nor clears a model-risk alert.

    >>> s = RiskScore(patient_id="pt-1", window_start_ms=0, window_end_ms=60_000, model_name="news2", model_version="rcp-2017-scale1", score=0.35, news2_total=7, news2_band="high", inputs={}, contributions={},
    ...               risks={"infection": 0.8}, news2_subscores={"heart_rate": 3, "spo2": 2})
    >>> signals(s)
    {'news2_high': 7.0, 'news2_red_parameter': 3.0, 'risk_high:infection': 0.8}
    """
    out: dict[str, float] = {NEWS2_HIGH: float(score.news2_total)}
    if score.news2_subscores:
        out[NEWS2_RED] = float(max(score.news2_subscores.values()))
    for condition in sorted(score.risks):
        out[f"{RISK_HIGH}:{condition}"] = float(score.risks[condition])
    return out


