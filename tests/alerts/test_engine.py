"""The alert engine (stream/alerts/engine.py): its state machine on literal score sequences, and its
properties over generated signals (hypothesis): one page per episode, timers, silences, restarts."""

from __future__ import annotations

import ast
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernel.alerts import Page, PatientAlerts, Phase, Silence
from kernel.errors import AlertNotFiring, UnknownAlert
from stream.alerts import AlertEngine, AlertPolicy, Threshold, Timers
from tests.alerts.conftest import news2_score
from tests.alerts.scores import ENTER, EXIT, KIND, MIN, T0, any_risk, at, feed, policy, risk_score, run


def test_news2_high_waits_for_its_minimum_duration_then_pages_once() -> None:
    engine = AlertEngine(AlertPolicy())
    assert feed(engine, [news2_score("pt-1", 1, 7)]) == []
    assert engine.snapshot("pt-1").alert("news2_high").phase is Phase.PENDING
    assert feed(engine, [news2_score("pt-1", 2, 8)]) == [("firing", "news2_high")]
    assert feed(engine, [news2_score("pt-1", m, 9) for m in range(3, 10)]) == []


def test_a_breach_shorter_than_the_minimum_duration_is_cancelled_without_a_page() -> None:
    engine = AlertEngine(AlertPolicy())
    out = []
    for minute, total in [(1, 7), (2, 6), (3, 7), (4, 5)]:
        outcome = engine.on_score(news2_score("pt-1", minute, total), now_ms=at(minute))
        out += [(e.kind, e.event) for e in outcome.events if e.kind == "news2_high"]
        assert not outcome.pages
    assert out == [("news2_high", "pending"), ("news2_high", "cancelled")] * 2


def test_hysteresis_keeps_firing_between_exit_and_enter_and_resolves_after_clear_for() -> None:
    engine = AlertEngine(AlertPolicy())
    pages = feed(engine, [news2_score("pt-1", m, n) for m, n in
                          [(1, 7), (2, 7), (3, 6), (4, 5), (5, 6), (6, 4), (7, 5), (8, 4), (9, 3)]])
    assert pages == [("firing", "news2_high")]  # 4 at minute 6 cleared, 5 at minute 7 interrupted the clearing
    assert feed(engine, [news2_score("pt-1", 10, 2)]) == [("resolved", "news2_high")]
    state = engine.snapshot("pt-1").alert("news2_high")
    assert (state.phase, state.resolved_ms, state.peak) == (Phase.RESOLVED, at(10), 7.0)


def test_zero_minimum_duration_fires_on_the_first_breaching_score() -> None:
    policy = AlertPolicy(news2_total=Threshold(7, 4, severity="critical"))
    engine = AlertEngine(policy)
    outcome = engine.on_score(news2_score("pt-1", 1, 9), now_ms=at(1))
    assert [p.action for p in outcome.pages] == ["firing"]
    assert [e.event for e in outcome.events if e.kind == "news2_high"] == ["pending", "firing"]


def test_each_condition_has_its_own_alert_and_news2_only_scores_leave_them_alone() -> None:
    engine = AlertEngine(AlertPolicy(group_model_risk=False))  # grouped: tests/alerts/test_engine_grouping.py
    scores = [risk_score("pt-1", m, {"infection": r, "hf_decompensation": 0.1}) for m, r in
              [(1, 0.8), (2, 0.9), (3, 0.85)]]
    assert feed(engine, scores) == [("firing", "risk_high:infection")]
    # NEWS2-only scores carry no risks: they neither resolve nor re-fire the model alert
    assert feed(engine, [news2_score("pt-1", m, 1) for m in (4, 5, 6, 7)]) == []
    assert engine.snapshot("pt-1").alert("risk_high:infection").phase is Phase.FIRING
    pages = engine.on_score(risk_score("pt-1", 8, {"infection": 0.3}), now_ms=at(8)).pages
    assert pages == ()
    last = engine.on_score(risk_score("pt-1", 10, {"infection": 0.3}), now_ms=at(10)).pages
    assert [(p.action, p.condition) for p in last] == [("resolved", "infection")]


def test_per_condition_thresholds_override_the_default() -> None:
    policy = AlertPolicy(risk_by_condition={"copd_exacerbation": Threshold(0.4, 0.2, 0, 0)})
    engine = AlertEngine(policy)
    (page,) = engine.on_score(risk_score("pt-1", 1, {"copd_exacerbation": 0.45, "any": 0.45}), now_ms=at(1)).pages
    assert (page.action, page.kind, [m.kind for m in page.members]) == (
        "firing", "risk_high", ["risk_high:copd_exacerbation"])


def test_page_carries_ids_risk_news2_features_and_model_but_no_values() -> None:
    engine = AlertEngine(AlertPolicy())
    feed(engine, [risk_score("pt-7", 1, {"any": 0.9}, total=3)])
    feed(engine, [risk_score("pt-7", 2, {"any": 0.9}, total=3)])
    (page,) = engine.on_score(risk_score("pt-7", 3, {"any": 0.95}, total=3), now_ms=at(3)).pages
    assert (page.patient_id, page.kind, page.severity, page.action) == ("pt-7", "risk_high", "warning", "firing")
    assert page.evidence is not None
    assert page.evidence.risk(page.kind) == 0.95 and page.evidence.news2_total == 3
    assert page.evidence.top_features == (("hr_vs_baseline", 0.4), ("rr_slope", 0.2))
    assert (page.evidence.model_name, page.evidence.model_version) == ("river-logreg", "v7")
    assert page.notification_id == f"{page.alert_id}:firing" and page.event_ms == at(3)


def test_red_single_parameter_pages_alone_but_is_inhibited_by_news2_high() -> None:
    engine = AlertEngine(AlertPolicy())
    assert feed(engine, [news2_score("pt-1", m, 4, red=True) for m in (1, 2)]) == [("firing", "news2_red_parameter")]
    other = AlertEngine(AlertPolicy())
    assert feed(other, [news2_score("pt-2", m, 8, red=True) for m in (1, 2)]) == [("firing", "news2_high")]
    # news2_high resolves while the red parameter still scores 3: the held-back page goes out at the next tick
    feed(other, [news2_score("pt-2", m, 3, red=True) for m in (3, 4, 5)])
    assert other.snapshot("pt-2").alert("news2_high").phase is Phase.RESOLVED
    assert [(p.action, p.kind) for p in other.tick(now_ms=at(5.1)).pages] == [("firing", "news2_red_parameter")]


def test_escalation_fires_once_after_the_timeout_and_renotification_repeats() -> None:
    policy = AlertPolicy(timers_by_severity={"critical": Timers(renotify_ms=5 * MIN, escalate_ms=3 * MIN),
                                             "warning": Timers(None, None), "info": Timers(None, None)})
    engine = AlertEngine(policy)
    feed(engine, [news2_score("pt-1", m, 8) for m in (1, 2)])  # fires at minute 2
    actions = []
    for tenth in range(21, 140):  # ticks every 6 s from minute 2.1 to 13.9
        actions += [(tenth, p.action) for p in engine.tick(now_ms=at(tenth / 10)).pages]
    assert actions == [(50, "escalate"), (100, "renotify")]
    assert [a for _, a in actions].count("escalate") == 1


def test_acknowledgement_stops_escalation_and_renotification() -> None:
    engine = AlertEngine(AlertPolicy(data_stopped_ms=None))
    (page,) = [p for s in [news2_score("pt-1", m, 8) for m in (1, 2)]
               for p in engine.on_score(s, now_ms=s.window_end_ms).pages]
    outcome = engine.acknowledge(page.alert_id, by="rn-ward-3", at_ms=at(3))
    assert [e.event for e in outcome.events] == ["acknowledged"]
    assert engine.acknowledge(page.alert_id, by="someone-else", at_ms=at(4)).events == ()
    assert all(not engine.tick(now_ms=at(m)).pages for m in range(3, 200, 5))
    state = engine.snapshot("pt-1").alert("news2_high")
    assert (state.acknowledged_by, state.acknowledged_ms) == ("rn-ward-3", at(3))


def test_acknowledging_unknown_or_resolved_alerts_raises() -> None:
    engine = AlertEngine(AlertPolicy())
    with pytest.raises(UnknownAlert):
        engine.acknowledge("al-nope", by="x", at_ms=0)
    pages = feed(engine, [news2_score("pt-1", m, n) for m, n in [(1, 8), (2, 8), (3, 1), (4, 1), (5, 1)]])
    assert [a for a, _ in pages] == ["firing", "resolved"]
    alert_id = engine.snapshot("pt-1").alert("news2_high").alert_id
    assert alert_id is not None
    with pytest.raises(AlertNotFiring):
        engine.acknowledge(alert_id, by="x", at_ms=at(6))
    with pytest.raises(ValueError):
        engine.acknowledge(alert_id, by="", at_ms=at(6))


def test_a_silence_suppresses_pages_and_when_it_expires_the_still_firing_alert_pages() -> None:
    engine = AlertEngine(AlertPolicy())
    engine.set_silences([Silence("s1", "pt-1", "news2", at(0), at(10), "rn-ward-3", "planned procedure"),
                         Silence("s2", "pt-1", "news2_high", at(0), at(10), "rn-ward-3", "planned procedure")])
    outcome = engine.on_score(news2_score("pt-1", 1, 8), now_ms=at(1))
    outcome += engine.on_score(news2_score("pt-1", 2, 8), now_ms=at(2))
    assert outcome.pages == () and "silenced" in [e.event for e in outcome.events]
    assert all(not engine.tick(now_ms=at(m / 2)).pages for m in range(5, 20))
    (late,) = engine.tick(now_ms=at(10)).pages
    assert (late.action, late.kind, late.event_ms) == ("firing", "news2_high", None)
    assert engine.tick(now_ms=at(10.5)).pages == ()


def test_a_silence_of_another_patient_or_kind_does_not_apply() -> None:
    engine = AlertEngine(AlertPolicy())
    engine.set_silences([Silence("s1", "pt-2", None, at(0), at(60), "ops", "other patient"),
                         Silence("s2", None, "risk_high", at(0), at(60), "ops", "model rollout")])
    assert feed(engine, [news2_score("pt-1", m, 8) for m in (1, 2)]) == [("firing", "news2_high")]
    assert feed(engine, [risk_score("pt-1", m, {"any": 0.9}, total=8) for m in (3, 4, 5)]) == []


def test_data_stopped_fires_after_the_timeout_and_resolves_on_the_next_score() -> None:
    engine = AlertEngine(AlertPolicy(data_stopped_ms=10 * MIN))
    feed(engine, [news2_score("pt-1", 1, 1)])
    assert engine.tick(now_ms=at(10.9)).pages == ()
    (page,) = engine.tick(now_ms=at(11)).pages
    assert (page.action, page.kind, page.severity) == ("firing", "data_stopped", "warning")
    assert engine.tick(now_ms=at(12)).pages == ()
    assert feed(engine, [news2_score("pt-1", 30, 1)]) == [("resolved", "data_stopped")]


def test_many_patients_going_quiet_together_is_a_pipeline_stall_not_five_pages() -> None:
    engine = AlertEngine(AlertPolicy(data_stopped_ms=10 * MIN))
    feed(engine, [news2_score(f"pt-{i}", 1, 1) for i in range(8)])
    outcome = engine.tick(now_ms=at(20))
    assert outcome.pages == () and outcome.storm == 8
    feed(engine, [news2_score(f"pt-{i}", 21, 1) for i in range(7)])
    (page,) = engine.tick(now_ms=at(25)).pages  # one patient still quiet after the stall: that one pages
    assert (page.patient_id, page.kind) == ("pt-7", "data_stopped")


def test_restored_state_does_not_page_data_stopped_for_the_downtime() -> None:
    engine = AlertEngine(AlertPolicy(data_stopped_ms=10 * MIN))
    feed(engine, [news2_score("pt-1", 1, 1)])
    snapshot = PatientAlerts.from_json(engine.snapshot("pt-1").to_json())
    restarted = AlertEngine(AlertPolicy(data_stopped_ms=10 * MIN))
    restarted.restore([snapshot], resume_at_ms=at(60))
    assert restarted.tick(now_ms=at(61)).pages == ()
    assert [p.kind for p in restarted.tick(now_ms=at(70)).pages] == ["data_stopped"]


def test_scores_older_than_the_latest_are_ignored() -> None:
    engine = AlertEngine(AlertPolicy())
    feed(engine, [news2_score("pt-1", 5, 1)])
    outcome = engine.on_score(news2_score("pt-1", 3, 9), now_ms=at(6))
    assert outcome.stale and outcome.pages == () and outcome.events == ()


def test_forget_drops_patients() -> None:
    engine = AlertEngine(AlertPolicy())
    feed(engine, [news2_score("pt-1", 1, 1), news2_score("pt-2", 1, 1)])
    engine.forget(["pt-1"])
    assert engine.patients == ("pt-2",)


probabilities = st.floats(0.0, 1.0, allow_nan=False)


@given(st.lists(st.floats(EXIT + 1e-6, 1.0, allow_nan=False), min_size=1, max_size=300))
def test_a_risk_oscillating_around_the_enter_threshold_pages_at_most_once(risks: list[float]) -> None:
    """Above the exit threshold the alert never resolves: no flapping, one firing page at most."""
    pages = run(AlertEngine(policy(escalate_ms=None)), risks)
    assert [p.action for p in pages] in ([], ["firing"])


@given(st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=1, max_size=300),
       st.sampled_from([0, MIN, 3 * MIN]), st.sampled_from([0, MIN, 3 * MIN]))
def test_exactly_one_firing_page_per_episode_and_one_resolution(risks: list[float], for_ms: int,
                                                                clear_for_ms: int) -> None:
    engine = AlertEngine(replace(policy(for_ms=for_ms, clear_for_ms=clear_for_ms, escalate_ms=None),
                                 group_model_risk=False))  # one head grouped pages alike: test_engine_grouping.py
    pages = run(engine, risks)
    actions = [p.action for p in pages]
    # strictly alternating firing, resolved, firing, ... each pair naming one episode
    assert actions == ["firing", "resolved"] * (len(actions) // 2) + ["firing"] * (len(actions) % 2)
    firing_ids = [p.alert_id for p in pages if p.action == "firing"]
    assert len(set(firing_ids)) == len(firing_ids)
    for fire, resolve in zip(pages[::2], pages[1::2]):
        assert fire.alert_id == resolve.alert_id and fire.episode == resolve.episode
    # every episode that fired was paged; none that did not
    fired_episodes = {p.alert_id for p in pages}
    state = engine.snapshot("pt-1")
    assert state is not None
    current = state.alert(KIND)
    if current.fired_ms is not None:
        assert current.alert_id in fired_episodes
    # a page needs the enter threshold held for for_ms: every firing page's window was at or above enter
    for p in pages:
        if p.action == "firing":
            assert p.value is not None and p.value >= ENTER
            assert p.fired_ms is not None and p.fired_ms - p.since_ms >= for_ms
        else:
            assert p.value is not None and p.value <= EXIT


@given(st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=1, max_size=120),
       st.lists(st.integers(1, 60 * MIN), min_size=1, max_size=60))
def test_escalation_fires_once_after_the_timeout_unless_acknowledged(risks: list[float], gaps: list[int]) -> None:
    escalate_ms = 10 * MIN
    engine = AlertEngine(policy(for_ms=0, clear_for_ms=10 ** 12, escalate_ms=escalate_ms))  # never resolves
    pages = run(engine, [0.9] + risks)
    (first,) = pages
    now = first.at_ms
    escalations: list[Page] = []
    for gap in gaps:
        now += gap
        escalations += [p for p in engine.tick(now_ms=now).pages if p.action == "escalate"]
    if now - first.at_ms < escalate_ms:
        assert escalations == []
    else:
        (escalation,) = escalations
        assert escalation.at_ms - first.at_ms >= escalate_ms
        assert escalation.notification_id == f"{first.alert_id}:escalate"
        assert escalation.at_ms - gaps[-1] <= now  # at the first tick past the timeout
    acked = AlertEngine(policy(for_ms=0, clear_for_ms=10 ** 12, escalate_ms=escalate_ms))
    (page,) = run(acked, [0.9])
    acked.acknowledge(page.alert_id, by="rn", at_ms=page.at_ms + 1)
    assert all(not acked.tick(now_ms=page.at_ms + g * MIN).pages for g in range(0, 200, 7))


@given(st.integers(0, 30), st.integers(1, 60), st.lists(st.integers(1, 5 * MIN), min_size=1, max_size=80))
def test_a_silence_suppresses_then_expires(start_min: int, length_min: int, gaps: list[int]) -> None:
    """No page during the silence; after it, a still-firing alert pages exactly once."""
    engine = AlertEngine(policy(for_ms=0, clear_for_ms=10 ** 12, escalate_ms=None))
    starts, ends = T0 + start_min * MIN, T0 + (start_min + length_min) * MIN
    engine.set_silences([Silence("s", "pt-1", "risk_high", starts, ends, "rn", "procedure")])
    now = starts
    pages = list(engine.on_score(any_risk(start_min, 0.95), now_ms=now).pages)
    assert pages == []
    for gap in gaps:
        now += gap
        new = engine.tick(now_ms=now).pages
        assert all(now >= ends for _ in new)
        pages += new
    if now >= ends:
        assert [p.action for p in pages] == ["firing"]
        assert pages[0].at_ms >= ends
    else:
        assert pages == []


@given(st.lists(st.tuples(st.sampled_from(["pt-1", "pt-2", "pt-3"]), probabilities), min_size=2, max_size=150),
       st.data())
def test_a_restart_from_the_snapshots_pages_exactly_as_an_uninterrupted_run(
        stream: list[tuple[str, float]], data: st.DataObject) -> None:
    scores = [any_risk(i, r, patient=p) for i, (p, r) in enumerate(stream, 1)]
    split = data.draw(st.integers(1, len(scores) - 1))
    whole = AlertEngine(policy(escalate_ms=None))
    expected = [p for s in scores for p in whole.on_score(s, now_ms=s.window_end_ms).pages]
    first = AlertEngine(policy(escalate_ms=None))
    got = [p for s in scores[:split] for p in first.on_score(s, now_ms=s.window_end_ms).pages]
    snapshots = [PatientAlerts.from_json(first.snapshot(pid).to_json()) for pid in first.patients]
    second = AlertEngine(policy(escalate_ms=None))
    second.restore(snapshots)
    # the records after the last committed offset are replayed too: duplicates must change nothing
    replay_from = data.draw(st.integers(max(0, split - 5), split))
    got += [p for s in scores[replay_from:] for p in second.on_score(s, now_ms=s.window_end_ms).pages]
    assert [p.notification_id for p in got] == [p.notification_id for p in expected]


PURE = ("stream/alerts/engine.py", "stream/alerts/rules.py", "stream/alerts/replay.py", "kernel/alerts.py",
        "kernel/errors.py")
FORBIDDEN = {"faust", "psycopg", "psycopg_pool", "aiohttp", "kafka", "aiokafka", "urllib", "time", "datetime",
             "asyncio", "socket", "requests", "random"}


@pytest.mark.parametrize("module", PURE)
def test_the_core_imports_no_io_and_no_clock(module: str) -> None:
    tree = ast.parse((Path(__file__).resolve().parents[2] / module).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert not imported & FORBIDDEN, imported & FORBIDDEN
