"""Properties of the alert state machine over generated signals (hypothesis, no services)."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from stream.alerts import AlertEngine, AlertPolicy, Threshold, Timers, replay_pages
from kernel.alerts import Page, PatientAlerts, Silence
from kernel.events import RiskScore

MIN = 60_000
T0 = 1_767_571_200_000
ENTER, EXIT = 0.7, 0.5
KIND = "risk_high:any"


def policy(*, for_ms: int = 2 * MIN, clear_for_ms: int = 2 * MIN, escalate_ms: int | None = 10 * MIN,
           renotify_ms: int | None = None) -> AlertPolicy:
    timers = Timers(renotify_ms, escalate_ms)
    return AlertPolicy(risk=Threshold(ENTER, EXIT, for_ms, clear_for_ms, "warning"), data_stopped_ms=None,
                       timers_by_severity={"critical": timers, "warning": timers, "info": Timers(None, None)})


def score(minute: int, risk: float, patient: str = "pt-1") -> RiskScore:
    return RiskScore(patient, T0 + (minute - 1) * MIN, T0 + minute * MIN, "river", "v1", risk, 0, "low", {}, {},
                     risks={"any": risk})


def run(engine: AlertEngine, risks: list[float], *, start: int = 1) -> list[Page]:
    pages: list[Page] = []
    for i, r in enumerate(risks, start):
        pages += engine.on_score(score(i, r), now_ms=T0 + i * MIN).pages
    return pages


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
    engine = AlertEngine(policy(for_ms=for_ms, clear_for_ms=clear_for_ms, escalate_ms=None))
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
    pages = list(engine.on_score(score(start_min, 0.95), now_ms=now).pages)
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
    scores = [score(i, r, patient=p) for i, (p, r) in enumerate(stream, 1)]
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


@settings(max_examples=50)
@given(st.lists(probabilities, min_size=1, max_size=200))
def test_replay_pages_matches_the_live_engine(risks: list[float]) -> None:
    live = run(AlertEngine(policy(escalate_ms=None)), risks)
    assert replay_pages([score(i, r) for i, r in enumerate(risks, 1)], policy(escalate_ms=None)) == live
