"""Grouped model-risk pages (stream/alerts/engine.py, "Grouping"): a patient's heads page as one alert.

Literal sequences for the promised behaviour (several heads, one page naming them all; a group that
resolves and fires again pages again; escalation as for one alert), and properties over generated
multi-head signals (hypothesis).
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from kernel.alerts import Page, PatientAlerts, Phase, Silence
from stream.alerts import AlertEngine
from stream.alerts.rules import RISK_HIGH
from tests.alerts.conftest import news2_score
from tests.alerts.scores import MIN, T0, at, policy, risk_score

HEADS = ("any", "heart_failure", "infection")


def head_kind(condition: str) -> str:
    return f"{RISK_HIGH}:{condition}"


def pages_of(engine: AlertEngine, rows: list[tuple[int, dict[str, float]]], patient: str = "pt-1") -> list[Page]:
    out: list[Page] = []
    for minute, risks in rows:
        out += engine.on_score(risk_score(patient, minute, risks), now_ms=at(minute)).pages
    return out


def test_several_heads_crossing_give_one_page_whose_annotations_name_them_all() -> None:
    engine = AlertEngine(policy())
    rows = [(1, {"any": 0.8, "heart_failure": 0.9, "infection": 0.1}),   # two heads enter together
            (3, {"any": 0.8, "heart_failure": 0.9, "infection": 0.8}),   # both fire: one page; infection enters
            (5, {"any": 0.8, "heart_failure": 0.9, "infection": 0.8})]   # infection fires: joins, no page
    pages = pages_of(engine, rows)
    assert [(p.action, p.kind) for p in pages] == [("firing", RISK_HIGH)]
    assert [m.kind for m in pages[0].members] == [head_kind("any"), head_kind("heart_failure")]
    group = engine.snapshot("pt-1").alert(RISK_HIGH)
    assert group.members == (head_kind("any"), head_kind("heart_failure"), head_kind("infection"))
    assert all(engine.snapshot("pt-1").alert(head_kind(c)).group_id == group.alert_id for c in HEADS)
    # the heads keep their own episodes and history; only the group pages
    events = [(e.kind, e.event) for e in engine.on_score(risk_score("pt-1", 6, {"any": 0.2, "heart_failure": 0.2,
                                                                               "infection": 0.2}),
                                                         now_ms=at(6)).events]
    assert (head_kind("infection"), "firing") not in events
    resolved = pages_of(engine, [(8, {"any": 0.2, "heart_failure": 0.2, "infection": 0.2})])
    assert [(p.action, p.kind, p.alert_id) for p in resolved] == [("resolved", RISK_HIGH, group.alert_id)]
    assert [(m.kind, m.firing) for m in resolved[0].members] == [(head_kind(c), False) for c in HEADS]


def test_a_head_joining_records_history_but_sends_nothing() -> None:
    engine = AlertEngine(policy())
    pages_of(engine, [(1, {"any": 0.8, "infection": 0.1}), (3, {"any": 0.8, "infection": 0.8})])
    outcome = engine.on_score(risk_score("pt-1", 5, {"any": 0.8, "infection": 0.8}), now_ms=at(5))
    assert outcome.pages == ()
    assert (RISK_HIGH, f"joined:{head_kind('infection')}") in [(e.kind, e.event) for e in outcome.events]


def test_the_group_resolves_only_when_every_head_has_and_then_pages_again_on_a_new_crossing() -> None:
    engine = AlertEngine(policy())
    first = pages_of(engine, [(1, {"any": 0.8, "infection": 0.8}), (3, {"any": 0.8, "infection": 0.8}),
                              (4, {"any": 0.2, "infection": 0.8}), (6, {"any": 0.2, "infection": 0.8})])
    assert [p.action for p in first] == ["firing"]  # "any" resolved at 6; infection still fires
    assert engine.snapshot("pt-1").alert(head_kind("any")).phase is Phase.RESOLVED
    # "any" crosses again while the group still fires: no page
    assert pages_of(engine, [(7, {"any": 0.8, "infection": 0.8}), (9, {"any": 0.8, "infection": 0.8})]) == []
    done = pages_of(engine, [(10, {"any": 0.2, "infection": 0.2}), (12, {"any": 0.2, "infection": 0.2})])
    assert [p.action for p in done] == ["resolved"]
    again = pages_of(engine, [(13, {"any": 0.2, "infection": 0.9}), (15, {"any": 0.2, "infection": 0.9})])
    assert [(p.action, p.kind) for p in again] == [("firing", RISK_HIGH)]
    assert again[0].alert_id != first[0].alert_id and again[0].episode == 2
    assert [m.kind for m in again[0].members] == [head_kind("infection")]


def test_escalation_renotification_and_acknowledgement_run_on_the_group_as_on_one_alert() -> None:
    engine = AlertEngine(policy(escalate_ms=10 * MIN, renotify_ms=15 * MIN))
    pages_of(engine, [(1, {"any": 0.8, "infection": 0.8}), (3, {"any": 0.8, "infection": 0.8})])
    assert engine.tick(now_ms=at(12)).pages == ()
    escalated = engine.tick(now_ms=at(13)).pages
    assert [(p.action, p.kind, p.escalated) for p in escalated] == [("escalate", RISK_HIGH, True)]
    assert {m.kind for m in escalated[0].members} == {head_kind("any"), head_kind("infection")}
    assert engine.tick(now_ms=at(14)).pages == ()  # once
    assert [p.action for p in engine.tick(now_ms=at(28)).pages] == ["renotify"]
    # an acknowledgement of a head's id (an older link) is the group's
    head_id = engine.snapshot("pt-1").alert(head_kind("infection")).alert_id
    assert head_id is not None
    ack = engine.acknowledge(head_id, by="rn-ward-3", at_ms=at(29))
    assert [(e.kind, e.event) for e in ack.events] == [(RISK_HIGH, "acknowledged")]
    assert engine.tick(now_ms=at(120)).pages == ()


def test_escalation_is_unchanged_when_one_head_fires_alone() -> None:
    grouped, single = AlertEngine(policy()), AlertEngine(replace(policy(), group_model_risk=False))
    rows = [(1, {"any": 0.8}), (3, {"any": 0.8})]
    a, b = pages_of(grouped, rows), pages_of(single, rows)
    a += grouped.tick(now_ms=at(13)).pages
    b += single.tick(now_ms=at(13)).pages
    assert [(p.action, p.at_ms, p.severity) for p in a] == [(p.action, p.at_ms, p.severity) for p in b]
    assert [p.kind for p in a] == [RISK_HIGH] * 2 and [p.kind for p in b] == [head_kind("any")] * 2


def test_grouping_off_pages_every_head_on_its_own() -> None:
    engine = AlertEngine(replace(policy(), group_model_risk=False))
    pages = pages_of(engine, [(1, {"any": 0.8, "infection": 0.8}), (3, {"any": 0.8, "infection": 0.8})])
    assert sorted(p.kind for p in pages) == [head_kind("any"), head_kind("infection")]
    assert all(not p.members for p in pages) and RISK_HIGH not in {a.kind for a in engine.snapshot("pt-1").alerts}


def test_news2_pages_stay_their_own_kind() -> None:
    engine = AlertEngine(policy())
    pages: list[Page] = []
    for minute in (1, 2, 3):
        pages += engine.on_score(news2_score("pt-1", minute, 8, risk=0.9), now_ms=at(minute)).pages
    assert sorted(p.kind for p in pages) == ["news2_high", RISK_HIGH]


def test_a_silence_of_one_head_mutes_that_head_not_the_group() -> None:
    engine = AlertEngine(policy())
    engine.set_silences([Silence("s1", "pt-1", head_kind("infection"), T0, at(60), "rn-1", "procedure")])
    alone = pages_of(engine, [(1, {"infection": 0.8}), (3, {"infection": 0.8})])
    assert alone == []  # its only member is silenced
    joined = pages_of(engine, [(4, {"infection": 0.8, "any": 0.8}), (6, {"infection": 0.8, "any": 0.8})])
    assert joined == []  # "any" joined: the group is no longer wholly silenced, and pages at the next tick
    held = engine.tick(now_ms=at(6))
    assert [(p.action, [m.kind for m in p.members]) for p in held.pages] == [
        ("firing", [head_kind("infection"), head_kind("any")])]


def test_a_silence_of_the_group_kind_mutes_every_head() -> None:
    engine = AlertEngine(policy())
    engine.set_silences([Silence("s1", "pt-1", RISK_HIGH, T0, at(60), "rn-1", "procedure")])
    assert pages_of(engine, [(1, {"any": 0.8, "infection": 0.8}), (3, {"any": 0.8, "infection": 0.8})]) == []
    assert engine.tick(now_ms=at(59)).pages == ()
    assert [p.action for p in engine.tick(now_ms=at(60)).pages] == ["firing"]


def test_group_state_survives_a_restart_from_its_snapshot() -> None:
    engine = AlertEngine(policy())
    pages_of(engine, [(1, {"any": 0.8, "infection": 0.8}), (3, {"any": 0.8, "infection": 0.8})])
    snapshot = engine.snapshot("pt-1")
    assert snapshot is not None
    again = PatientAlerts.from_json(snapshot.to_json())
    assert again == snapshot
    restarted = AlertEngine(policy())
    restarted.restore([again])
    assert [p.action for p in pages_of(restarted, [(4, {"any": 0.1, "infection": 0.1}),
                                                   (6, {"any": 0.1, "infection": 0.1})])] == ["resolved"]


def test_a_head_paged_alone_before_grouping_finishes_its_episode_alone() -> None:
    """State saved by an alerter without grouping: the head already paged keeps its own timers and resolution."""
    old = AlertEngine(replace(policy(), group_model_risk=False))
    pages_of(old, [(1, {"any": 0.8}), (3, {"any": 0.8})])
    snapshot = old.snapshot("pt-1")
    assert snapshot is not None
    new = AlertEngine(policy())
    new.restore([snapshot])
    assert [(p.action, p.kind) for p in new.tick(now_ms=at(13)).pages] == [("escalate", head_kind("any"))]
    assert [(p.action, p.kind) for p in pages_of(new, [(14, {"any": 0.1}), (16, {"any": 0.1})])] == [
        ("resolved", head_kind("any"))]


# -- properties -----------------------------------------------------------------------------------

LEVELS = st.sampled_from([0.1, 0.45, 0.55, 0.75, 0.9])  # below exit, at exit, between, above enter


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(LEVELS, LEVELS, LEVELS), min_size=1, max_size=40),
       st.lists(st.integers(1, 4), min_size=40, max_size=40))
def test_pages_never_outnumber_groups_and_list_every_head_that_crossed(
        rows: list[tuple[float, float, float]], gaps: list[int]) -> None:
    engine = AlertEngine(policy(escalate_ms=10 * MIN, renotify_ms=None))
    minute = 0
    pages: list[Page] = []
    crossed: dict[str, set[str]] = {}   # group alert id -> heads that fired while it fired
    open_group: str | None = None
    groups_fired = 0
    for (a, hf, inf), gap in zip(rows, gaps, strict=False):
        minute += gap
        outcome = engine.on_score(risk_score("pt-1", minute, dict(zip(HEADS, (a, hf, inf), strict=True))),
                                  now_ms=at(minute))
        for e in outcome.events:
            if e.kind == RISK_HIGH and e.event == "firing":
                open_group, groups_fired = e.alert_id, groups_fired + 1
                crossed[e.alert_id] = set()
        for e in outcome.events:
            if e.kind != RISK_HIGH and e.event == "firing":
                assert open_group is not None, "a head fired outside any group"
                crossed[open_group].add(e.kind)
        pages += outcome.pages
        pages += engine.tick(now_ms=at(minute) + 1).pages
    assert all(p.kind == RISK_HIGH for p in pages)
    escalations = sum(p.action == "escalate" for p in pages)
    firing = [p for p in pages if p.action == "firing"]
    assert len(firing) == groups_fired and escalations <= groups_fired
    assert len(pages) <= 2 * groups_fired + escalations  # firing + resolved per group, and escalations
    for p in pages:
        assert {m.kind for m in p.members} <= crossed[p.alert_id]
        if p.action == "resolved":
            assert {m.kind for m in p.members} == crossed[p.alert_id]
    state = engine.snapshot("pt-1")
    assert state is not None
    group = state.alert(RISK_HIGH)
    if group.alert_id is not None:
        assert set(group.members) == crossed[group.alert_id]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=1, max_size=150),
       st.sampled_from([0, MIN, 3 * MIN]), st.sampled_from([0, MIN, 3 * MIN]))
def test_one_head_pages_grouped_exactly_as_alone(risks: list[float], for_ms: int, clear_for_ms: int) -> None:
    """A group of one head is that head: same actions, times, values and timers; only the kind and id differ."""
    base = policy(for_ms=for_ms, clear_for_ms=clear_for_ms, escalate_ms=10 * MIN, renotify_ms=15 * MIN)
    runs = []
    for grouped in (True, False):
        engine = AlertEngine(replace(base, group_model_risk=grouped))
        out: list[Page] = []
        for i, r in enumerate(risks, 1):
            out += engine.on_score(risk_score("pt-1", i, {"any": r}), now_ms=T0 + i * MIN).pages
            out += engine.tick(now_ms=T0 + i * MIN + 1).pages
        runs.append([(p.action, p.since_ms, p.fired_ms, p.resolved_ms, p.event_ms, p.at_ms, p.value, p.peak)
                     for p in out])
    assert runs[0] == runs[1]
