"""The alert engine: scores and timer ticks in, pages and state transitions out. Pure.

Per patient and alert kind a state machine (see :mod:`stream.alerts.rules` for the thresholds)::

    ok ──signal ≥ enter──► pending ──still ≥ enter after for_ms──► firing ──≤ exit for clear_for_ms──► resolved
     ▲                       │ signal < enter                       │  (page: firing)                   (page: resolved)
     └───────────────────────┘ (no page)                            │  unacknowledged: re-notify every renotify_ms,
                                                                    │  escalate once after escalate_ms

- **Hysteresis and debounce.** Firing needs ``enter`` held for ``for_ms``; resolving needs the
  signal at or below the lower ``exit`` for ``clear_for_ms``. A signal oscillating around
  ``enter`` therefore never pages more than once per episode.
- **Deduplication.** An episode pages ``firing`` once; every page carries a deterministic
  ``notification_id`` (episode id + action), so a replay after a crash yields the same ids and
  the receiver drops the copies. Scores older than the last one seen are ignored.
- **Escalation and re-notification** run on the wall-clock ``now_ms`` handed to :meth:`tick`,
  never on a clock of the engine's own; an acknowledgement stops both.
- **Silences** mute pages (not state); a firing alert that was never paged pages at the first
  tick after its silence ends. **Inhibition**: while ``news2_high`` fires, the same patient's
  ``news2_red_parameter`` stays quiet.
- **Data stopped** fires from :meth:`tick` when a patient sent no score for ``data_stopped_ms``
  and resolves on the next score, unless so many patients went quiet at once that the pipeline,
  not the patients, stopped (storm protection).
- **Grouping** (``AlertPolicy.group_model_risk``, on by default). The model-risk heads
  (``risk_high:<condition>``) keep their own state machines, hysteresis and history, but page
  through one alert per patient, kind ``risk_high``: the *group*. It fires (and pages) when the
  first head fires; a head that fires while the group fires *joins* it (a ``joined:<kind>``
  history event, no page: the page already on the coordinator's screen is about this patient's
  model risk, and its later pages — re-notify, escalate, resolved — list every member). The
  group *resolves* when none of its heads fires any more, each head resolving by its own exit
  threshold and ``clear_for_ms``; a head merely pending keeps no group open. A head that fires
  after that starts a new group, and pages. Acknowledging the group (or any of its heads' ids)
  stops the group's timers; escalation and re-notification run on the group exactly as on a
  single alert. A silence holds the group's pages back when it covers the group's kind
  (``risk_high``, or every kind) or every head in the group: silencing one head mutes that
  head, not its patient's other heads. NEWS2 and ``data_stopped`` are never grouped.

Examples
--------
>>> from kernel.events import RiskScore
>>> engine = AlertEngine(AlertPolicy())
>>> def news2(t_min, total):
...     return RiskScore(patient_id="pt-1", window_start_ms=(t_min - 1) * 60_000, window_end_ms=t_min * 60_000, model_name="news2", model_version="rcp-2017-scale1",
...                      score=total / 20, news2_total=total, news2_band="high" if total >= 7 else "low", inputs={}, contributions={"respiratory_rate": 3.0})
>>> [p.action for t, n in [(1, 7), (2, 8), (3, 6), (4, 7), (5, 3), (6, 2), (7, 2)]
...  for p in engine.on_score(news2(t, n), now_ms=t * 60_000).pages]
['firing', 'resolved']
>>> engine.tick(now_ms=30 * 60_000).pages[0].action   # nobody sent a score for 23 min
'firing'

Two heads crossing for one patient give one page, which names both:

>>> def model(t_min, **risks):
...     return RiskScore(patient_id="pt-2", window_start_ms=(t_min - 1) * 60_000, window_end_ms=t_min * 60_000, model_name="river", model_version="v3",
...                      score=risks["any"], news2_total=1, news2_band="low", inputs={}, contributions={}, risks=risks)
>>> pages = [p for t, a, hf in [(1, .7, .2), (3, .8, .2), (4, .8, .7), (6, .8, .8), (7, .3, .3), (9, .2, .2)]
...          for p in engine.on_score(model(t, any=a, heart_failure=hf), now_ms=t * 60_000).pages]
>>> [(p.action, p.kind, [m.kind for m in p.members]) for p in pages]
[('firing', 'risk_high', ['risk_high:any']), ('resolved', 'risk_high', ['risk_high:any', 'risk_high:heart_failure'])]
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from kernel.errors import AlertNotFiring, UnknownAlert
from stream.alerts.rules import DATA_STOPPED, RISK_HIGH, AlertPolicy, signals
from kernel.alerts import (AlertEvent, AlertState, Evidence, GroupMember, Page, PatientAlerts, Phase, Silence,
                           episode_id)
from kernel.events import RiskScore

@dataclass(frozen=True, slots=True)
class Effects:
    """What one call produced: pages, history events, and the patients whose state changed."""

    pages: tuple[Page, ...] = ()
    events: tuple[AlertEvent, ...] = ()
    changed: tuple[str, ...] = ()
    stale: bool = False    # the score was older than the patient's latest and was ignored
    storm: int = 0         # patients whose data_stopped page storm protection held back

    def __add__(self, other: Effects) -> Effects:
        changed = tuple(dict.fromkeys((*self.changed, *other.changed)))
        return Effects(self.pages + other.pages, self.events + other.events, changed,
                       self.stale or other.stale, self.storm + other.storm)


class _Step:
    """Collects one call's pages and events while states are replaced."""

    def __init__(self) -> None:
        self.pages: list[Page] = []
        self.events: list[AlertEvent] = []
        self.changed: dict[str, None] = {}

    def event(self, patient_id: str, before: AlertState, after: AlertState, event: str, event_ms: int | None,
              at_ms: int) -> None:
        assert after.alert_id is not None  # noqa: S101 - every episode has an id
        self.events.append(AlertEvent(after.alert_id, patient_id, after.kind, event, before.phase.value,
                                      after.phase.value, event_ms, at_ms))

    def effects(self, *, stale: bool = False, storm: int = 0) -> Effects:
        return Effects(tuple(self.pages), tuple(self.events), tuple(self.changed), stale, storm)


class AlertEngine:
    """Alert state machines for many patients; feed it scores, ticks, acknowledgements, silences.

    Parameters
    ----------
    policy
        Thresholds, timers and routes-by-severity; :class:`~stream.alerts.rules.AlertPolicy`.

    Notes
    -----
    State lives in a plain dict keyed by patient id. The adapter owns persistence:
    :meth:`snapshot` after a batch, :meth:`restore` when a partition is assigned,
    :meth:`forget` when it is revoked.
    """

    def __init__(self, policy: AlertPolicy) -> None:
        self.policy = policy
        self._patients: dict[str, PatientAlerts] = {}
        self._silences: tuple[Silence, ...] = ()

    # -- inputs -------------------------------------------------------------------------------

    def on_score(self, score: RiskScore, *, now_ms: int) -> Effects:
        """Evaluate one score (event time = its window end) at wall-clock ``now_ms``."""
        step = _Step()
        pid = score.patient_id
        patient = self._patients.get(pid) or PatientAlerts(pid)
        t = score.window_end_ms
        if patient.last_event_ms is not None and t < patient.last_event_ms:
            self._patients[pid] = replace(patient, last_seen_ms=max(now_ms, patient.last_seen_ms or now_ms))
            step.changed[pid] = None
            return step.effects(stale=True)
        evidence = Evidence.from_score(score, top=self.policy.top_features)
        patient = replace(patient, last_seen_ms=now_ms, last_event_ms=t, evidence=evidence)
        stopped = patient.alert(DATA_STOPPED)
        if stopped.phase is Phase.FIRING:
            patient = patient.with_alert(self._resolve(patient, stopped, t, now_ms, step))
        for kind, value in signals(score).items():
            state = self._advance(patient, patient.alert(kind), value, t, now_ms, step)
            patient = patient.with_alert(state)
        if self.policy.group_model_risk:
            patient = self._regroup(patient, t, now_ms, step)
        self._patients[pid] = patient
        step.changed[pid] = None
        return step.effects()

    def tick(self, *, now_ms: int) -> Effects:
        """Run the wall-clock timers: data stopped, re-notify, escalate, pages a silence held back."""
        step = _Step()
        quiet: list[str] = []
        stop_ms = self.policy.data_stopped_ms
        for pid, patient in self._patients.items():
            stopped = patient.alert(DATA_STOPPED)
            if (stop_ms is not None and patient.last_seen_ms is not None and stopped.phase is not Phase.FIRING
                    and now_ms - patient.last_seen_ms >= stop_ms
                    and (stopped.since_ms is None or stopped.since_ms != patient.last_seen_ms)):
                quiet.append(pid)
        storm = (len(quiet) >= self.policy.storm_min_patients
                 and len(quiet) >= self.policy.storm_fraction * len(self._patients))
        if not storm:
            for pid in quiet:
                self._patients[pid] = self._data_stopped(self._patients[pid], now_ms, step)
        for pid in list(self._patients):
            patient = self._patients[pid]
            for state in patient.alerts:
                if state.phase is Phase.FIRING:
                    new = self._timers(patient, state, now_ms, step)
                    if new is not state:
                        patient = patient.with_alert(new)
            if patient is not self._patients[pid]:
                self._patients[pid] = patient
                step.changed[pid] = None
        return step.effects(storm=len(quiet) if storm else 0)

    def acknowledge(self, alert_id: str, *, by: str, at_ms: int) -> Effects:
        """Record that ``by`` acknowledged firing alert ``alert_id`` at ``at_ms``; stops its timers.

        Raises
        ------
        UnknownAlert
            No patient this engine holds has an episode with this id.
        AlertNotFiring
            The episode exists but is not firing.
        """
        if not by:
            raise ValueError("an acknowledgement must name who acknowledged")
        for pid, patient in self._patients.items():
            for state in patient.alerts:
                if state.alert_id != alert_id:
                    continue
                group = patient.alert(RISK_HIGH)
                if state.group_id is not None and group.alert_id == state.group_id and group.phase is Phase.FIRING:
                    state = group  # a head's id acknowledges the group it paged through
                if state.phase is not Phase.FIRING:
                    raise AlertNotFiring(f"alert {alert_id} is {state.phase.value}, not firing")
                if state.acknowledged:
                    return Effects()
                step = _Step()
                new = replace(state, acknowledged_by=by, acknowledged_ms=at_ms)
                step.event(pid, state, new, "acknowledged", None, at_ms)
                self._patients[pid] = patient.with_alert(new)
                step.changed[pid] = None
                return step.effects()
        raise UnknownAlert(f"no alert {alert_id!r} among the {len(self._patients)} patients of this engine")

    def set_silences(self, silences: Iterable[Silence]) -> None:
        """Replace the silences in force (the adapter reloads them from the database)."""
        self._silences = tuple(silences)

    # -- state handover -----------------------------------------------------------------------

    def restore(self, states: Iterable[PatientAlerts], *, resume_at_ms: int | None = None) -> None:
        """Take over patients' states (partition assigned).

        ``resume_at_ms`` (the adapter's now) restarts every ``data_stopped`` clock from then: a
        worker that was down must not page "data stopped" for patients whose scores are
        merely waiting in Kafka.
        """
        for state in states:
            if resume_at_ms is not None and state.last_seen_ms is not None:
                state = replace(state, last_seen_ms=max(state.last_seen_ms, resume_at_ms))
            self._patients[state.patient_id] = state

    def forget(self, patient_ids: Iterable[str]) -> None:
        """Drop patients (partition revoked); their new owner restores them from the snapshots."""
        for pid in patient_ids:
            self._patients.pop(pid, None)

    def snapshot(self, patient_id: str) -> PatientAlerts | None:
        """The patient's current state, to persist."""
        return self._patients.get(patient_id)

    @property
    def patients(self) -> tuple[str, ...]:
        return tuple(self._patients)

    def firing(self) -> list[tuple[str, AlertState]]:
        """``(patient_id, state)`` of every firing alert."""
        return [(pid, a) for pid, p in self._patients.items() for a in p.alerts if a.phase is Phase.FIRING]

    def counts(self) -> dict[tuple[str, str], int]:
        """Number of alerts per ``(kind, phase)``, for the ``vitals_alerts`` gauge."""
        out: dict[tuple[str, str], int] = {}
        for patient in self._patients.values():
            for a in patient.alerts:
                out[(a.kind, a.phase.value)] = out.get((a.kind, a.phase.value), 0) + 1
        return out

    # -- transitions --------------------------------------------------------------------------

    def _advance(self, patient: PatientAlerts, state: AlertState, value: float, t: int, now_ms: int,
                 step: _Step) -> AlertState:
        th = self.policy.threshold(state.kind)
        pid = patient.patient_id
        if state.last_event_ms is not None and t < state.last_event_ms:
            return state
        state = replace(state, last_event_ms=t, value=value)
        if state.phase in (Phase.OK, Phase.RESOLVED):
            if value < th.enter:
                return state
            new = replace(state.new_episode(pid, t), value=value, peak=value)
            step.event(pid, state, new, "pending", t, now_ms)
            state = new
        else:
            state = replace(state, peak=max(value, state.peak if state.peak is not None else value))
        if state.phase is Phase.PENDING:
            if value < th.enter:
                new = replace(state, phase=Phase.OK)
                step.event(pid, state, new, "cancelled", t, now_ms)
                return new
            assert state.since_ms is not None  # noqa: S101 - set with the episode
            if t - state.since_ms >= th.for_ms:
                return self._fire(patient, state, t, now_ms, step)
            return state
        # firing
        if value > th.exit:
            return replace(state, clearing_since_ms=None) if state.clearing_since_ms is not None else state
        clearing = state.clearing_since_ms if state.clearing_since_ms is not None else t
        state = replace(state, clearing_since_ms=clearing)
        if t - clearing >= th.clear_for_ms:
            return self._resolve(patient, state, t, now_ms, step)
        return state

    def _fire(self, patient: PatientAlerts, state: AlertState, t: int, now_ms: int, step: _Step) -> AlertState:
        new = replace(state, phase=Phase.FIRING, fired_ms=t, clearing_since_ms=None)
        step.event(patient.patient_id, state, new, "firing", t, now_ms)
        if self.policy.grouped(state.kind):
            return new  # pages through its group (:meth:`_regroup`)
        return self._maybe_page_first(patient, new, t, now_ms, step)

    def _regroup(self, patient: PatientAlerts, t: int, now_ms: int, step: _Step) -> PatientAlerts:
        """Fire, grow or resolve the patient's model-risk group after the heads saw one score.

        The group's breach began when its earliest firing head's did (``since_ms``), but never
        before the previous group resolved: group episodes never overlap, so the id (patient,
        ``risk_high``, ``since_ms``) is unique, and the same on a replay.
        Heads paged on their own before grouping was turned on (``notified_ms`` set) finish their
        episode alone.
        """
        pid = patient.patient_id
        group = patient.alert(RISK_HIGH)
        firing = [a for a in patient.alerts
                  if self.policy.grouped(a.kind) and a.phase is Phase.FIRING and a.notified_ms is None]
        if group.phase is not Phase.FIRING:
            if not firing:
                return patient
            since = min(a.since_ms if a.since_ms is not None else t for a in firing)
            if group.resolved_ms is not None:
                since = max(since, group.resolved_ms)  # after the last group: ids and started_at stay unique
            new = AlertState(RISK_HIGH, Phase.FIRING, group.episode + 1, episode_id(pid, RISK_HIGH, since),
                             since_ms=since, fired_ms=t, last_event_ms=t, members=tuple(a.kind for a in firing))
            step.event(pid, group, new, "firing", t, now_ms)
        else:
            joined = tuple(a.kind for a in firing if a.kind not in group.members)
            new = replace(group, last_event_ms=t, members=group.members + joined)
            for kind in joined:
                step.event(pid, group, new, f"joined:{kind}", t, now_ms)
        assert new.alert_id is not None  # noqa: S101 - set with the episode
        for head in firing:
            if head.group_id != new.alert_id:
                patient = patient.with_alert(replace(head, group_id=new.alert_id))
        members = [patient.alert(k) for k in new.members]
        peaks = [m.peak for m in members if m.peak is not None and m.group_id == new.alert_id]
        # its signal: the highest of its firing heads, or of all its heads as it resolves
        values = [a.value for a in (firing or [m for m in members if m.group_id == new.alert_id])
                  if a.value is not None]
        new = replace(new, value=max(values) if values else new.value,
                      peak=max([*peaks, *([new.peak] if new.peak is not None else [])], default=None))
        if not firing:
            return patient.with_alert(self._resolve(patient, new, t, now_ms, step))
        if group.phase is not Phase.FIRING:
            new = self._maybe_page_first(patient.with_alert(new), new, t, now_ms, step)
        return patient.with_alert(new)

    def _maybe_page_first(self, patient: PatientAlerts, state: AlertState, event_ms: int | None, now_ms: int,
                          step: _Step, *, record: bool = True) -> AlertState:
        """Page a firing, never-paged alert unless a silence or an inhibiting alert holds it back.

        ``record`` writes a ``silenced``/``inhibited`` history event (at firing time, not every tick).
        """
        pid = patient.patient_id
        held = ("silenced" if self._silenced(pid, state, now_ms)
                else "inhibited" if self._inhibited(patient, state.kind) else None)
        if held is not None:
            if record:
                step.event(pid, state, state, held, event_ms, now_ms)
            return state
        new = replace(state, notified_ms=now_ms, last_notified_ms=now_ms)
        step.pages.append(self._page(patient, new, "firing", event_ms, now_ms))
        return new

    def _resolve(self, patient: PatientAlerts, state: AlertState, t: int, now_ms: int, step: _Step) -> AlertState:
        new = replace(state, phase=Phase.RESOLVED, resolved_ms=t, clearing_since_ms=None)
        step.event(patient.patient_id, state, new, "resolved", t, now_ms)
        if state.notified_ms is not None and not self._silenced(patient.patient_id, state, now_ms):
            step.pages.append(self._page(patient, new, "resolved", t, now_ms))
        return new

    def _data_stopped(self, patient: PatientAlerts, now_ms: int, step: _Step) -> PatientAlerts:
        state = patient.alert(DATA_STOPPED)
        assert patient.last_seen_ms is not None  # noqa: S101 - only quiet patients come here
        since = patient.last_seen_ms
        new = AlertState(DATA_STOPPED, Phase.FIRING, state.episode + 1,
                         episode_id(patient.patient_id, DATA_STOPPED, since), since_ms=since, fired_ms=now_ms,
                         last_event_ms=patient.last_event_ms, value=float(now_ms - since))
        step.event(patient.patient_id, state, replace(new, phase=Phase.PENDING), "pending", None, now_ms)
        step.event(patient.patient_id, replace(new, phase=Phase.PENDING), new, "firing", None, now_ms)
        new = self._maybe_page_first(patient, new, None, now_ms, step)
        step.changed[patient.patient_id] = None
        return patient.with_alert(new)

    def _timers(self, patient: PatientAlerts, state: AlertState, now_ms: int, step: _Step) -> AlertState:
        pid = patient.patient_id
        if state.acknowledged or self._silenced(pid, state, now_ms):
            return state
        if state.notified_ms is None and self.policy.grouped(state.kind):
            return state  # a grouped head: its group pages
        if state.notified_ms is None:
            return self._maybe_page_first(patient, state, None, now_ms, step, record=False)
        timers = self.policy.timers(self.policy.severity(state.kind))
        last = state.last_notified_ms if state.last_notified_ms is not None else state.notified_ms
        if (timers.escalate_ms is not None and state.escalated_ms is None
                and now_ms - state.notified_ms >= timers.escalate_ms):
            new = replace(state, escalated_ms=now_ms, last_notified_ms=now_ms)
            step.event(pid, state, new, "escalated", None, now_ms)
            step.pages.append(self._page(patient, new, "escalate", None, now_ms))
            return new
        if timers.renotify_ms is not None and now_ms - last >= timers.renotify_ms:
            new = replace(state, renotified=state.renotified + 1, last_notified_ms=now_ms)
            step.event(pid, state, new, f"renotified:{new.renotified}", None, now_ms)
            step.pages.append(self._page(patient, new, "renotify", None, now_ms))
            return new
        return state

    # -- helpers ------------------------------------------------------------------------------

    def _silenced(self, patient_id: str, state: AlertState, now_ms: int) -> bool:
        """Whether a silence holds ``state``'s pages back; a group's when it covers the group or every head."""
        if any(s.matches(patient_id, state.kind, now_ms) for s in self._silences):
            return True
        return bool(state.kind == RISK_HIGH and state.members) and all(
            any(s.matches(patient_id, kind, now_ms) for s in self._silences) for kind in state.members)

    def _inhibited(self, patient: PatientAlerts, kind: str) -> bool:
        return any(patient.alert(src).phase is Phase.FIRING for src in self.policy.inhibitors_of(kind))

    def _page(self, patient: PatientAlerts, state: AlertState, action: str, event_ms: int | None,
              now_ms: int) -> Page:
        assert state.alert_id is not None and state.since_ms is not None  # noqa: S101 - firing episodes have both
        suffix = f"renotify:{state.renotified}" if action == "renotify" else action
        return Page(f"{state.alert_id}:{suffix}", state.alert_id, action, patient.patient_id, state.kind,
                    self.policy.severity(state.kind), state.episode, state.since_ms, state.fired_ms,
                    state.resolved_ms, event_ms, now_ms, state.value, state.peak, patient.evidence,
                    escalated=state.escalated_ms is not None, acknowledged_by=state.acknowledged_by,
                    members=tuple(_member(patient.alert(kind), state) for kind in state.members))


def _member(head: AlertState, group: AlertState) -> GroupMember:
    """A head as its group's page lists it: firing, or resolved (its episode in this group ended)."""
    assert head.alert_id is not None and head.since_ms is not None  # noqa: S101 - a member has fired
    firing = head.phase is Phase.FIRING and head.group_id == group.alert_id
    return GroupMember(head.kind, head.alert_id, firing and group.phase is Phase.FIRING, head.since_ms,
                       head.fired_ms, head.resolved_ms, head.value, head.peak)
