"""The alerting's shared records: per-patient alert state, pages, alert events, silences, severities.

The alert engine (``stream/alerts/``) evolves these values; the alert store and the webhook sender
(``sinks/alert_store.py``, ``sinks/webhook.py``) persist and deliver them, so they live in the kernel
that both may import.

One :class:`PatientAlerts` per patient holds one :class:`AlertState` per alert kind and the
:class:`Evidence` of the latest score. The adapter persists :meth:`PatientAlerts.to_json` after
each batch and hands :meth:`PatientAlerts.from_json` back to the engine when it takes over the
patient's partition, so alert state moves with the partition like every other per-patient state.

Two clocks appear, each named: ``*_event_ms`` / ``since_ms`` / ``fired_ms`` / ``resolved_ms`` are
event time (a score's window end), ``*_now_ms`` / ``notified_ms`` / ``last_seen_ms`` the
wall-clock "now" the adapter passes in (equal to event time in a replay).

Examples
--------
>>> st = AlertState("news2_high", Phase.FIRING, episode=1, alert_id="al-1", since_ms=0, fired_ms=60_000)
>>> p = PatientAlerts("pt-1", alerts=(st,))
>>> PatientAlerts.from_json(p.to_json()) == p
True
>>> p.alert("news2_high").phase.value
'firing'
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from kernel.errors import InvalidPolicy
from kernel.events import RiskScore


class Phase(str, Enum):  # noqa: UP042 - a StrEnum would change str(phase) and f-strings of it
    """Where one alert kind of one patient stands: ok → pending → firing → resolved (→ pending ...)."""

    OK = "ok"
    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


def episode_id(patient_id: str, kind: str, since_ms: int) -> str:
    """Deterministic id of the episode that began at ``since_ms``: a replay finds the same one.

    >>> episode_id("pt-1", "news2_high", 60_000)
    'al-79ec8d0f42fc2da06b08'
    """
    digest = hashlib.sha256(f"{patient_id}|{kind}|{since_ms}".encode()).hexdigest()
    return f"al-{digest[:20]}"


@dataclass(frozen=True, slots=True)
class Evidence:
    """What a page shows of the latest score: risk, NEWS2, top features, model. No vital values.

    Examples
    --------
    >>> s = RiskScore(patient_id="pt-1", window_start_ms=0, window_end_ms=60_000, model_name="news2", model_version="rcp-2017-scale1", score=0.35, news2_total=7, news2_band="high",
    ...               inputs={"heart_rate": 135.0}, contributions={"heart_rate": 3.0, "respiratory_rate": 2.0, "spo2": 2.0})
    >>> Evidence.from_score(s, top=2).top_features
    (('heart_rate', 3.0), ('respiratory_rate', 2.0))
    """

    window_end_ms: int
    model_name: str
    model_version: str
    score: float
    news2_total: int
    news2_band: str
    risks: tuple[tuple[str, float], ...] = ()
    top_features: tuple[tuple[str, float], ...] = ()
    missing_inputs: tuple[str, ...] = ()

    @classmethod
    def from_score(cls, score: RiskScore, *, top: int = 3) -> Evidence:
        """The page-worthy part of a score; features ranked by contribution, ties by name."""
        ranked = sorted(((k, float(v)) for k, v in score.contributions.items() if v > 0),
                        key=lambda kv: (-kv[1], kv[0]))
        return cls(score.window_end_ms, score.model_name, score.model_version, float(score.score),
                   int(score.news2_total), score.news2_band,
                   tuple(sorted((k, float(v)) for k, v in score.risks.items())),
                   tuple(ranked[:top]), tuple(score.missing_inputs))

    def risk(self, kind: str) -> float | None:
        """The model risk a page of ``kind`` reports: its own condition's, else the highest.

        >>> e = Evidence(0, "m", "1", 0.2, 3, "low-medium", risks=(("any", 0.4), ("infection", 0.9)))
        >>> e.risk("risk_high:any"), e.risk("news2_high")
        (0.4, 0.9)
        """
        risks = dict(self.risks)
        _, _, condition = kind.partition(":")
        if condition in risks:
            return risks[condition]
        return max(risks.values()) if risks else None

    def to_json(self) -> dict[str, Any]:
        return {"window_end_ms": self.window_end_ms, "model_name": self.model_name,
                "model_version": self.model_version, "score": self.score, "news2_total": self.news2_total,
                "news2_band": self.news2_band, "risks": [list(r) for r in self.risks],
                "top_features": [list(f) for f in self.top_features], "missing_inputs": list(self.missing_inputs)}

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Evidence:
        return cls(int(body["window_end_ms"]), str(body["model_name"]), str(body["model_version"]),
                   float(body["score"]), int(body["news2_total"]), str(body["news2_band"]),
                   tuple((str(k), float(v)) for k, v in body["risks"]),
                   tuple((str(k), float(v)) for k, v in body["top_features"]),
                   tuple(str(m) for m in body["missing_inputs"]))


@dataclass(frozen=True, slots=True)
class AlertState:
    """One alert kind of one patient: its phase, current episode and notification bookkeeping."""

    kind: str
    phase: Phase = Phase.OK
    #: Episodes begun so far; ``alert_id`` names the current (or last) one.
    episode: int = 0
    alert_id: str | None = None
    since_ms: int | None = None            # event time the breach began (pending since)
    fired_ms: int | None = None            # event time it fired
    resolved_ms: int | None = None         # event time it resolved
    clearing_since_ms: int | None = None   # event time the signal fell to or below exit
    last_event_ms: int | None = None       # event time of the last score evaluated
    value: float | None = None             # last signal
    peak: float | None = None              # highest signal in this episode
    notified_ms: int | None = None         # now of the first page (None: not paged yet)
    last_notified_ms: int | None = None    # now of the latest page, any action
    renotified: int = 0
    escalated_ms: int | None = None
    acknowledged_by: str | None = None
    acknowledged_ms: int | None = None
    #: A model-risk group (kind ``risk_high``): the heads that fired while it fired, in order.
    members: tuple[str, ...] = ()
    #: A model-risk head: the group its current episode paged through, if grouped.
    group_id: str | None = None

    def new_episode(self, patient_id: str, since_ms: int) -> AlertState:
        """A fresh pending episode beginning at ``since_ms``, keeping only the episode count."""
        return AlertState(self.kind, Phase.PENDING, self.episode + 1, episode_id(patient_id, self.kind, since_ms),
                          since_ms=since_ms, last_event_ms=self.last_event_ms)

    @property
    def acknowledged(self) -> bool:
        return self.acknowledged_by is not None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"kind": self.kind, "phase": self.phase.value}
        for name in ("episode", "alert_id", "since_ms", "fired_ms", "resolved_ms", "clearing_since_ms",
                     "last_event_ms", "value", "peak", "notified_ms", "last_notified_ms", "renotified",
                     "escalated_ms", "acknowledged_by", "acknowledged_ms", "group_id"):
            body[name] = getattr(self, name)
        body["members"] = list(self.members)
        return body

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> AlertState:
        """The inverse of :meth:`to_json`; states saved before grouping existed lack its fields."""
        fields = dict(body)
        fields["phase"] = Phase(fields["phase"])
        fields["members"] = tuple(fields.get("members", ()))
        return cls(**fields)


@dataclass(frozen=True, slots=True)
class PatientAlerts:
    """Everything the engine remembers about one patient; a snapshot the adapter persists."""

    patient_id: str
    last_seen_ms: int | None = None   # now of the latest score (drives data_stopped)
    last_event_ms: int | None = None  # event time of the latest score
    evidence: Evidence | None = None
    alerts: tuple[AlertState, ...] = ()

    def alert(self, kind: str) -> AlertState:
        """The state of ``kind``, a fresh ``ok`` one if the patient never had it."""
        for state in self.alerts:
            if state.kind == kind:
                return state
        return AlertState(kind)

    def with_alert(self, state: AlertState) -> PatientAlerts:
        """A copy with ``state`` replacing the same kind's (kinds kept sorted)."""
        others = [a for a in self.alerts if a.kind != state.kind]
        return replace(self, alerts=tuple(sorted([*others, state], key=lambda a: a.kind)))

    def to_json(self) -> dict[str, Any]:
        return {"patient_id": self.patient_id, "last_seen_ms": self.last_seen_ms,
                "last_event_ms": self.last_event_ms,
                "evidence": None if self.evidence is None else self.evidence.to_json(),
                "alerts": [a.to_json() for a in self.alerts]}

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> PatientAlerts:
        evidence = body.get("evidence")
        return cls(str(body["patient_id"]), body.get("last_seen_ms"), body.get("last_event_ms"),
                   None if evidence is None else Evidence.from_json(evidence),
                   tuple(AlertState.from_json(a) for a in body.get("alerts", ())))


#: Severities, most urgent first.
SEVERITIES = ("critical", "warning", "info")


#: Page actions, in the order an episode may emit them.
ACTIONS = ("firing", "renotify", "escalate", "resolved")


@dataclass(frozen=True, slots=True)
class GroupMember:
    """One model-risk head of a grouped page: its own episode, as the group's page lists it.

    ``firing`` is false once the head resolved (the group still fires while another head does).

    >>> m = GroupMember("risk_high:any", "al-2", True, 0, 60_000, None, 0.8, 0.9)
    >>> GroupMember.from_json(m.to_json()) == m
    True
    """

    kind: str
    alert_id: str
    firing: bool
    since_ms: int
    fired_ms: int | None
    resolved_ms: int | None
    value: float | None
    peak: float | None

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> GroupMember:
        return cls(**body)


@dataclass(frozen=True, slots=True)
class Page:
    """One notification for delivery: an episode's firing, re-notification, escalation or resolution.

    ``notification_id`` is the idempotency key (the same on every replay). ``event_ms`` is the
    event time (score window end) that caused it, ``at_ms`` the "now" it was issued at.
    """

    notification_id: str
    alert_id: str
    action: str
    patient_id: str
    kind: str
    severity: str
    episode: int
    since_ms: int
    fired_ms: int | None
    resolved_ms: int | None
    event_ms: int | None
    at_ms: int
    value: float | None
    peak: float | None
    evidence: Evidence | None
    escalated: bool = False
    acknowledged_by: str | None = None
    #: A grouped model-risk page (kind ``risk_high``): every head that fired while the group fired.
    members: tuple[GroupMember, ...] = ()

    @property
    def condition(self) -> str:
        """The model condition of a ``risk_high:<condition>`` page, else ``""``."""
        return self.kind.partition(":")[2]

    @property
    def status(self) -> str:
        """Alertmanager's status: ``resolved`` or ``firing``."""
        return "resolved" if self.action == "resolved" else "firing"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the outbox stores pages this way).

        >>> p = Page("al-1:firing", "al-1", "firing", "pt-1", "news2_high", "critical", 1, 0, 60_000, None,
        ...          60_000, 61_000, 7.0, 7.0, None)
        >>> Page.from_json(p.to_json()) == p
        True
        """
        body = {name: getattr(self, name) for name in self.__slots__}
        body["evidence"] = None if self.evidence is None else self.evidence.to_json()
        body["members"] = [m.to_json() for m in self.members]
        return body

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Page:
        fields = dict(body)
        evidence = fields.pop("evidence", None)
        members = tuple(GroupMember.from_json(m) for m in fields.pop("members", ()))
        return cls(**fields, evidence=None if evidence is None else Evidence.from_json(evidence), members=members)


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """One entry of an episode's history: a phase change, an acknowledgement, a page sent.

    ``event`` is ``pending``, ``cancelled`` (pending back to ok), ``firing``, ``resolved``,
    ``acknowledged``, ``escalated``, ``renotified:<n>``, ``silenced``, ``inhibited``, or (a model-risk
    group) ``joined:<kind>`` when a head fires while the group fires.
    """

    alert_id: str
    patient_id: str
    kind: str
    event: str
    from_phase: str
    to_phase: str
    event_ms: int | None
    at_ms: int


@dataclass(frozen=True, slots=True)
class Silence:
    """A time-bound mute: no page for matching alerts while ``starts_ms <= now < ends_ms``.

    Parameters
    ----------
    silence_id
        Unique id (the database's).
    patient_id
        The patient it mutes; ``None`` mutes every patient (maintenance).
    kind
        The kind it mutes, or a prefix before ``:`` (``risk_high`` mutes every condition);
        ``None`` mutes every kind.
    starts_ms, ends_ms
        Wall-clock window, epoch milliseconds.
    created_by, reason
        Who muted it and why (free text: no patient names).
    """

    silence_id: str
    patient_id: str | None
    kind: str | None
    starts_ms: int
    ends_ms: int
    created_by: str
    reason: str

    def __post_init__(self) -> None:
        if self.ends_ms <= self.starts_ms:
            raise InvalidPolicy(f"a silence must end after it starts, got {self.starts_ms}..{self.ends_ms}")

    def matches(self, patient_id: str, kind: str, now_ms: int) -> bool:
        """Whether this silence mutes ``kind`` for ``patient_id`` at ``now_ms``.

        >>> s = Silence("s", None, "risk_high", 0, 10, "ops", "maintenance")
        >>> s.matches("pt-9", "risk_high:any", 5), s.matches("pt-9", "news2_high", 5), s.matches("pt-9", "risk_high:any", 10)
        (True, False, False)
        """
        if not self.starts_ms <= now_ms < self.ends_ms:
            return False
        if self.patient_id is not None and self.patient_id != patient_id:
            return False
        return self.kind is None or kind == self.kind or kind.startswith(self.kind + ":")
