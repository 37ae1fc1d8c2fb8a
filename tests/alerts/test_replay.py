"""Offline replay of scores through the alert engine (stream/alerts/replay.py), as ``vitalrisk evaluate``
counts the alert burden: the live engine's pages, in any input order, with simulated acknowledgements."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from stream.alerts import AlertEngine, AlertPolicy, replay_pages
from tests.alerts.conftest import news2_score
from tests.alerts.scores import MIN, any_risk, at, policy, run

probabilities = st.floats(0.0, 1.0, allow_nan=False)


def test_replay_finds_the_same_pages_and_can_simulate_acknowledgement() -> None:
    scores = [news2_score("pt-1", m, n) for m, n in enumerate([1, 7, 8, 9, 9] + [8] * 40 + [1] * 5, 1)]
    pages = replay_pages(scores)
    assert replay_pages(list(reversed(scores))) == pages
    assert [p.action for p in pages] == ["firing", "escalate", "renotify", "renotify", "resolved"]
    acked = replay_pages(scores, ack_after_ms=2 * MIN)
    assert [p.action for p in acked] == ["firing", "resolved"]


@settings(max_examples=50)
@given(st.lists(probabilities, min_size=1, max_size=200))
def test_replay_pages_matches_the_live_engine(risks: list[float]) -> None:
    live = run(AlertEngine(policy(escalate_ms=None)), risks)
    assert replay_pages([any_risk(i, r) for i, r in enumerate(risks, 1)], policy(escalate_ms=None)) == live


@settings(max_examples=50, deadline=None)
@given(stream=st.dictionaries(st.tuples(st.sampled_from(["pt-1", "pt-2", "pt-3"]), st.integers(1, 40)), probabilities,
                              min_size=1, max_size=120), data=st.data())
def test_the_pages_of_many_patients_do_not_depend_on_the_order_scores_are_handed_in(
        stream: dict[tuple[str, int], float], data: st.DataObject) -> None:
    """Patients' scores of the same minute included: ties are broken by patient, not by arrival."""
    scores = [any_risk(minute, r, patient=p) for (p, minute), r in stream.items()]
    assert replay_pages(data.draw(st.permutations(scores)), policy()) == replay_pages(scores, policy())


def test_pages_of_one_minute_come_in_patient_order_whatever_order_the_scores_came_in() -> None:
    scores = [any_risk(m, 0.9, patient=p) for m in range(1, 5) for p in ("pt-2", "pt-1")]
    pages = replay_pages(scores, policy())
    assert [(p.patient_id, p.action) for p in pages] == [("pt-1", "firing"), ("pt-2", "firing")]
    assert replay_pages(list(reversed(scores)), policy()) == pages


def test_until_runs_the_timers_past_the_last_score() -> None:
    scores = [news2_score("pt-1", 1, 1)]
    quiet = AlertPolicy(data_stopped_ms=10 * MIN)
    assert replay_pages(scores, quiet) == []
    assert replay_pages(scores, quiet, until_ms=at(10.9)) == []
    (page,) = replay_pages(scores, quiet, until_ms=at(11))
    assert (page.action, page.kind, page.at_ms) == ("firing", "data_stopped", at(11))
