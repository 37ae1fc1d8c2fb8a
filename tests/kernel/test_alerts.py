"""The alerting's shared records (kernel/alerts.py): alert state and pages survive their JSON form,
silences mute exactly what they name while they last, episodes have stable ids, evidence ranks features."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernel.alerts import ACTIONS, SEVERITIES, AlertState, Evidence, Page, PatientAlerts, Phase, Silence, episode_id
from kernel.errors import InvalidPolicy
from kernel.events import RiskScore

kinds = st.sampled_from(["news2_high", "news2_red_parameter", "risk_high:any", "risk_high:infection", "data_stopped"])
times = st.one_of(st.none(), st.integers(0, 2**62))
signals = st.one_of(st.none(), st.floats(0.0, 20.0, allow_nan=False))
names = st.text(min_size=1, max_size=20)
pairs = st.lists(st.tuples(names, st.floats(0.0, 1.0, allow_nan=False)), max_size=4).map(tuple)

states = st.builds(AlertState, kinds, st.sampled_from(Phase), st.integers(0, 1_000), st.one_of(st.none(), names),
                   times, times, times, times, times, signals, signals, times, times, st.integers(0, 50), times,
                   st.one_of(st.none(), names), times)
evidence = st.one_of(st.none(), st.builds(Evidence, st.integers(0, 2**62), names, names,
                                          st.floats(0.0, 1.0, allow_nan=False), st.integers(0, 20), names, pairs,
                                          pairs, st.lists(names, max_size=3).map(tuple)))
patients = st.builds(lambda patient, seen, event, ev, alerts: PatientAlerts(
    patient, seen, event, ev, tuple(sorted({a.kind: a for a in alerts}.values(), key=lambda a: a.kind))),
    names, times, times, evidence, st.lists(states, max_size=5))
pages = st.builds(Page, names, names, st.sampled_from(ACTIONS), names, kinds, st.sampled_from(SEVERITIES),
                  st.integers(1, 100), st.integers(0, 2**62), times, times, times, st.integers(0, 2**62), signals,
                  signals, evidence, st.booleans(), st.one_of(st.none(), names))


@given(alerts=patients)
def test_a_patients_alert_state_survives_its_json_form(alerts: PatientAlerts) -> None:
    assert PatientAlerts.from_json(json.loads(json.dumps(alerts.to_json()))) == alerts


@given(page=pages)
def test_a_page_survives_its_json_form(page: Page) -> None:
    assert Page.from_json(json.loads(json.dumps(page.to_json()))) == page
    assert page.status == ("resolved" if page.action == "resolved" else "firing")


def test_with_alert_replaces_the_same_kind_and_keeps_kinds_sorted() -> None:
    alerts = PatientAlerts("pt-1").with_alert(AlertState("risk_high:any")).with_alert(AlertState("news2_high"))
    firing = AlertState("risk_high:any", Phase.FIRING, episode=1)
    again = alerts.with_alert(firing)
    assert [a.kind for a in again.alerts] == ["news2_high", "risk_high:any"]
    assert again.alert("risk_high:any") == firing and alerts.alert("risk_high:any").phase is Phase.OK
    assert again.alert("data_stopped") == AlertState("data_stopped"), "a kind never seen is ok"


def test_a_new_episode_is_pending_with_a_stable_id_and_forgets_the_last_one() -> None:
    old = AlertState("news2_high", Phase.RESOLVED, episode=2, alert_id="al-x", since_ms=0, fired_ms=60_000,
                     resolved_ms=600_000, last_event_ms=600_000, peak=9.0, acknowledged_by="rn")
    new = old.new_episode("pt-1", 900_000)
    assert (new.phase, new.episode, new.since_ms, new.last_event_ms) == (Phase.PENDING, 3, 900_000, 600_000)
    assert new.alert_id == episode_id("pt-1", "news2_high", 900_000) != episode_id("pt-2", "news2_high", 900_000)
    assert (new.fired_ms, new.peak, new.acknowledged) == (None, None, False)


@given(starts=st.integers(0, 1_000), length=st.integers(1, 1_000), now=st.integers(-10, 2_100),
       patient=st.one_of(st.none(), st.sampled_from(["pt-1", "pt-2"])),
       muted=st.one_of(st.none(), st.sampled_from(["news2", "news2_high", "risk_high", "risk_high:any"])),
       kind=kinds)
def test_a_silence_mutes_what_it_names_from_its_start_until_its_end(starts: int, length: int, now: int,
                                                                   patient: str | None, muted: str | None,
                                                                   kind: str) -> None:
    silence = Silence("s", patient, muted, starts, starts + length, "rn", "procedure")
    kind_named = muted is None or kind == muted or (":" in kind and kind.split(":")[0] == muted)
    expected = starts <= now < starts + length and patient in (None, "pt-1") and kind_named
    assert silence.matches("pt-1", kind, now) == expected


def test_a_silence_must_end_after_it_starts() -> None:
    with pytest.raises(InvalidPolicy, match="must end after it starts"):
        Silence("s", None, None, 10, 10, "x", "y")


def test_evidence_lists_the_largest_positive_contributions_ties_by_name() -> None:
    score = RiskScore(patient_id="pt-1", window_start_ms=0, window_end_ms=60_000, model_name="river", model_version="v1", score=0.7, news2_total=3, news2_band="low-medium", inputs={"heart_rate": 120.0},
                      contributions={"b": 0.5, "a": 0.5, "c": 0.9, "d": -1.0, "e": 0.0, "f": 0.1}, missing_inputs=("spo2",),
                      risks={"infection": 0.9, "any": 0.7})
    found = Evidence.from_score(score, top=3)
    assert found.top_features == (("c", 0.9), ("a", 0.5), ("b", 0.5))
    assert found.risks == (("any", 0.7), ("infection", 0.9)) and found.missing_inputs == ("spo2",)
    assert (found.risk("risk_high:any"), found.risk("news2_high"), Evidence.from_score(
        RiskScore(patient_id="pt-1", window_start_ms=0, window_end_ms=1, model_name="news2", model_version="v", score=0.1, news2_total=2, news2_band="low", inputs={}, contributions={})).risk("news2_high")) == (0.7, 0.9, None)
