"""Delayed labels: positives within the horizon, negatives after it, exclusions, bounds, order."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.errors import InvalidOutcome
from models.labelling import ANY, LABELS, OUTCOME_KINDS, DelayedLabeller, Outcome

H = 3_600_000
M = 60_000


def _outcome(pid: str, kind: str, onset: int) -> Outcome:
    return Outcome(pid, kind, onset_ms=onset, t_ms=onset)


def test_windows_within_the_horizon_before_onset_are_positive_for_the_kind_and_any() -> None:
    lab: DelayedLabeller[int] = DelayedLabeller(horizon_ms=12 * H, hop_ms=M)
    for t in range(0, 24 * H, H):
        assert lab.add("pt-1", t, t)
    lab.on_outcome(_outcome("pt-1", "hf_decompensation", 20 * H))
    released = lab.advance(100 * H)
    positive = [w.ts_ms // H for w in released if w.labels[ANY]]
    assert positive == list(range(8, 20))  # onset in (t, t + 12 h]
    assert all(w.labels["hf_decompensation"] == w.labels[ANY] for w in released)
    assert not any(w.labels["infection"] or w.labels["copd_exacerbation"] for w in released)
    assert [w.ts_ms // H for w in released] == list(range(20))  # 20..23 h are in the episode
    assert lab.stats.excluded == 4


def test_af_episodes_count_toward_any_and_have_their_own_label() -> None:
    lab: DelayedLabeller[None] = DelayedLabeller(horizon_ms=2 * H, hop_ms=H)
    lab.add("pt-1", 0, None)
    lab.on_outcome(_outcome("pt-1", "af_episode", H))
    (window,) = lab.advance(10 * H)
    assert window.labels == {ANY: True, "hf_decompensation": False, "copd_exacerbation": False,
                             "infection": False, "af_episode": True}
    assert set(window.labels) == set(LABELS)


def test_any_kinds_is_configurable() -> None:
    lab: DelayedLabeller[None] = DelayedLabeller(horizon_ms=2 * H, hop_ms=H, any_kinds=("infection",))
    lab.add("pt-1", 0, None)
    lab.on_outcome(_outcome("pt-1", "af_episode", H))
    (window,) = lab.advance(10 * H)
    assert window.labels[ANY] is False and window.labels["af_episode"] is True


def test_a_window_is_released_only_after_horizon_and_grace() -> None:
    lab: DelayedLabeller[None] = DelayedLabeller(horizon_ms=2 * H, outcome_grace_ms=30 * M, hop_ms=H)
    lab.add("pt-1", 0, None)
    assert lab.advance(2 * H + 30 * M) == []
    assert len(lab.advance(2 * H + 30 * M + 1)) == 1


def test_outcome_arriving_within_the_grace_still_labels() -> None:
    lab: DelayedLabeller[None] = DelayedLabeller(horizon_ms=2 * H, outcome_grace_ms=H, hop_ms=H)
    lab.add("pt-1", 0, None)
    lab.add("pt-1", H, None)
    lab.advance(2 * H + 30 * M)  # nothing final yet
    lab.on_outcome(Outcome("pt-1", "infection", onset_ms=2 * H, t_ms=2 * H + 50 * M))
    released = lab.advance(10 * H)
    assert [w.labels[ANY] for w in released] == [True, True]
    assert lab.stats.late_outcomes == 0


def test_an_outcome_later_than_the_grace_is_counted_and_cannot_relabel() -> None:
    lab: DelayedLabeller[None] = DelayedLabeller(horizon_ms=2 * H, hop_ms=H)
    lab.add("pt-1", 0, None)
    (window,) = lab.advance(2 * H + 1)
    assert window.labels[ANY] is False
    lab.on_outcome(Outcome("pt-1", "infection", onset_ms=H, t_ms=3 * H))
    assert lab.stats.late_outcomes == 1
    assert not lab.add("pt-1", 3 * H, None)  # the exclusion still starts at onset


def test_exclusion_lasts_for_the_episode_then_windows_count_again() -> None:
    lab: DelayedLabeller[None] = DelayedLabeller(horizon_ms=2 * H, hop_ms=H,
                                                 episode_ms={"infection": 10 * H})
    lab.on_outcome(_outcome("pt-1", "infection", 5 * H))
    assert lab.in_episode("pt-1", 5 * H) and lab.in_episode("pt-1", 15 * H - 1)
    assert not lab.add("pt-1", 14 * H, None)
    assert lab.add("pt-1", 15 * H, None)
    assert lab.add("pt-2", 6 * H, None)  # other patients are not affected


def test_windows_scored_after_the_outcome_arrived_but_before_onset_are_positive() -> None:
    lab: DelayedLabeller[str] = DelayedLabeller(horizon_ms=2 * H, hop_ms=M)
    lab.add("pt-1", 0, "a")
    lab.on_outcome(_outcome("pt-1", "copd_exacerbation", H))  # the pipeline still holds 30..59 min
    lab.add("pt-1", 30 * M, "b")
    assert not lab.add("pt-1", H, "c")
    released = lab.advance(10 * H)
    assert [(w.item, w.labels["copd_exacerbation"]) for w in released] == [("a", True), ("b", True)]


def test_pending_windows_are_bounded_per_patient() -> None:
    lab: DelayedLabeller[None] = DelayedLabeller(horizon_ms=H, hop_ms=30 * M)
    assert lab.max_pending_per_patient == 4
    accepted = [lab.add("pt-1", t * M, None) for t in range(10)]
    assert accepted == [True] * 4 + [False] * 6
    assert lab.pending == 4 and lab.stats.overflow == 6


def test_out_of_order_and_duplicate_windows_are_refused() -> None:
    lab: DelayedLabeller[None] = DelayedLabeller()
    assert lab.add("pt-1", 10 * M, None)
    assert not lab.add("pt-1", 10 * M, None)
    assert not lab.add("pt-1", 5 * M, None)
    assert lab.stats.out_of_order == 2


def test_release_order_is_window_time_then_patient() -> None:
    lab: DelayedLabeller[None] = DelayedLabeller(horizon_ms=H, hop_ms=M)
    for pid in ("pt-c", "pt-a", "pt-b"):
        for t in (0, 5 * M):
            lab.add(pid, t, None)
    order = [(w.ts_ms, w.patient_id) for w in lab.advance(10 * H)]
    assert order == sorted(order)


def test_drain_counts_censored_windows() -> None:
    lab: DelayedLabeller[None] = DelayedLabeller()
    lab.add("pt-1", 0, None)
    assert lab.drain() == 1 and lab.pending == 0 and lab.stats.censored == 1


@pytest.mark.parametrize("body, message", [
    ({"schema": "other", "patient_id": "p", "t": 1, "kind": "infection", "onset": 1}, "schema"),
    ({"schema": "vitalrisk.outcome/1", "patient_id": "", "t": 1, "kind": "infection", "onset": 1}, "patient_id"),
    ({"schema": "vitalrisk.outcome/1", "patient_id": "p", "t": 1, "kind": "infection", "onset": "1"}, "onset"),
    ({"schema": "vitalrisk.outcome/1", "patient_id": "p", "t": True, "kind": "infection", "onset": 1}, "t must"),
])
def test_invalid_outcomes_are_rejected(body: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidOutcome, match=message):
        Outcome.from_wire(body)


@settings(max_examples=60, deadline=None)
@given(
    windows=st.lists(st.tuples(st.sampled_from(["pt-1", "pt-2"]), st.integers(0, 200)), max_size=60),
    outcomes=st.lists(st.tuples(st.sampled_from(["pt-1", "pt-2"]), st.sampled_from(OUTCOME_KINDS),
                                st.integers(1, 200)), max_size=4),
)
def test_labels_match_the_definition(windows: list[tuple[str, int]], outcomes: list[tuple[str, str, int]]) -> None:
    """Property: with outcomes arriving at onset, every released window carries exactly the labels
    the definition gives, and excluded windows are never released."""
    horizon, episode = 30, 40
    lab: DelayedLabeller[None] = DelayedLabeller(horizon_ms=horizon, hop_ms=1, max_pending_per_patient=1_000,
                                                 episode_ms={k: episode for k in OUTCOME_KINDS})
    events = sorted([(t, 1, pid, "", 0) for pid, t in set(windows)]
                    + [(onset, 0, pid, kind, onset) for pid, kind, onset in outcomes])
    released = []
    for t, is_window, pid, kind, onset in events:
        released += lab.advance(t)
        if is_window:
            lab.add(pid, t, None)
        else:
            lab.on_outcome(Outcome(pid, kind, onset_ms=onset, t_ms=onset))
    released += lab.advance(10_000)
    for w in released:
        mine = [(k, o) for p, k, o in outcomes if p == w.patient_id]
        assert not any(o <= w.ts_ms < o + episode for _, o in mine)
        for kind in OUTCOME_KINDS:
            assert w.labels[kind] == any(k == kind and w.ts_ms < o <= w.ts_ms + horizon for k, o in mine)
        assert w.labels[ANY] == any(w.labels[k] for k in OUTCOME_KINDS)
    expected = {(pid, t) for pid, t in set(windows)
                if not any(p == pid and o <= t < o + episode for p, _, o in outcomes)}
    assert {(w.patient_id, w.ts_ms) for w in released} == expected
