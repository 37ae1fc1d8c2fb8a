"""What pages and when (stream/alerts/rules.py): the signal of each kind in a score, the threshold and
severity of each kind, the policies that cannot work, and the defaults the live alerter shares."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernel.alerts import SEVERITIES
from kernel.errors import InvalidPolicy
from kernel.events import RiskScore
from kernel.settings import Settings
from stream.alerts import AlertEngine, AlertPolicy, Threshold, Timers
from stream.alerts.rules import DATA_STOPPED, NEWS2_HIGH, NEWS2_RED, signals
from stream.alerts.service import policy_from_settings
from tests.alerts.scores import MIN, at, risk_score

CONDITIONS = ["any", "infection", "hf_decompensation", "copd_exacerbation", "af_episode"]


@given(total=st.integers(0, 20), subscores=st.dictionaries(st.sampled_from(["respiratory_rate", "spo2",
                                                                            "heart_rate", "temperature"]),
                                                           st.integers(0, 3)),
       risks=st.dictionaries(st.sampled_from(CONDITIONS), st.floats(0.0, 1.0, allow_nan=False)))
def test_each_kind_signals_its_own_part_of_a_score(total: int, subscores: dict[str, int],
                                                   risks: dict[str, float]) -> None:
    score = RiskScore(patient_id="pt-1", window_start_ms=0, window_end_ms=60_000, model_name="m", model_version="v", score=0.5, news2_total=total, news2_band="low", inputs={}, contributions={}, risks=risks,
                      news2_subscores=subscores)
    expected = {NEWS2_HIGH: float(total)}
    if subscores:
        expected[NEWS2_RED] = float(max(subscores.values()))
    expected |= {f"risk_high:{c}": r for c, r in risks.items()}
    got = signals(score)
    assert got == expected
    assert list(got)[:len(expected) - len(risks)] == [NEWS2_HIGH, NEWS2_RED][:len(expected) - len(risks)], \
        "the NEWS2 kinds, which inhibit, come first"
    assert [k for k in got if k.startswith("risk_high:")] == sorted(f"risk_high:{c}" for c in risks)


def test_each_kind_has_its_threshold_and_severity() -> None:
    override = Threshold(0.4, 0.2, 0, 0, severity="critical")
    policy = AlertPolicy(risk_by_condition={"copd_exacerbation": override}, data_stopped_severity="info")
    assert policy.threshold(NEWS2_HIGH) == Threshold(7.0, 4.0, MIN, 2 * MIN, "critical")
    assert policy.threshold(NEWS2_RED) == Threshold(3.0, 1.0, MIN, 2 * MIN, "warning")
    assert policy.threshold("risk_high:infection") == policy.risk
    assert policy.threshold("risk_high:copd_exacerbation") == override
    assert [policy.severity(k) for k in (NEWS2_HIGH, NEWS2_RED, "risk_high:any", "risk_high:copd_exacerbation",
                                         DATA_STOPPED)] == ["critical", "warning", "warning", "critical", "info"]
    for kind in ("made_up", "risk_high", "risk_high:", DATA_STOPPED):
        with pytest.raises(InvalidPolicy):
            policy.threshold(kind)


def test_the_default_timers_cover_every_severity_and_news2_high_inhibits_the_red_score() -> None:
    policy = AlertPolicy()
    assert [policy.timers(s) for s in SEVERITIES] == [Timers(15 * MIN, 10 * MIN), Timers(60 * MIN, 30 * MIN),
                                                      Timers(None, None)]
    assert policy.inhibitors_of(NEWS2_RED) == (NEWS2_HIGH,) and policy.inhibitors_of(NEWS2_HIGH) == ()


def test_policies_that_cannot_work_are_refused() -> None:
    with pytest.raises(InvalidPolicy):
        Threshold(0.5, 0.6)
    with pytest.raises(InvalidPolicy):
        Threshold(0.5, 0.4, severity="urgent")
    with pytest.raises(InvalidPolicy):
        AlertPolicy(timers_by_severity={"critical": Timers(1, 1)})
    with pytest.raises(InvalidPolicy):
        AlertPolicy().threshold("made_up")


@pytest.mark.parametrize("build", [
    lambda: Threshold(0.5, 0.4, for_ms=-1),
    lambda: Threshold(0.5, 0.4, clear_for_ms=-1),
    lambda: Timers(renotify_ms=0, escalate_ms=None),
    lambda: Timers(renotify_ms=None, escalate_ms=-5),
    lambda: AlertPolicy(data_stopped_ms=0),
    lambda: AlertPolicy(data_stopped_severity="page"),
    lambda: AlertPolicy(storm_fraction=0.0),
    lambda: AlertPolicy(storm_fraction=1.5),
    lambda: AlertPolicy(storm_min_patients=0),
    lambda: AlertPolicy(top_features=-1),
], ids=["for_ms", "clear_for_ms", "renotify", "escalate", "data_stopped", "data_stopped_severity",
        "storm_zero", "storm_above_one", "storm_patients", "top_features"])
def test_each_rule_of_a_policy_is_checked_when_it_is_built(build: Callable[[], object]) -> None:
    with pytest.raises(InvalidPolicy):
        build()


def test_a_threshold_may_enter_and_exit_at_one_level_and_timers_may_be_off() -> None:
    assert Threshold(0.5, 0.5).exit == 0.5
    quiet = AlertPolicy(data_stopped_ms=None, timers_by_severity={s: Timers(None, None) for s in SEVERITIES})
    assert quiet.data_stopped_ms is None and quiet.timers("critical") == Timers(None, None)


def test_the_alerter_settings_and_the_policy_default_agree_on_the_model_risk_threshold() -> None:
    """Issue 7: the live alerter (settings) and ``vitalrisk evaluate`` (policy default) page alike."""
    assert policy_from_settings(Settings()).risk == AlertPolicy().risk == Threshold(0.6, 0.5, 2 * MIN, 2 * MIN)
    engine = AlertEngine(AlertPolicy())
    # 0.65 held for two scores pages every head that reaches it (0.7 did not page it before issue 7), as one group
    pages = [p for m in (1, 2, 3) for p in engine.on_score(
        risk_score("pt-1", m, {"any": 0.65, "infection": 0.65, "copd_exacerbation": 0.2}), now_ms=at(m)).pages]
    assert [(p.action, p.kind, [h.kind for h in p.members]) for p in pages] == [
        ("firing", "risk_high", ["risk_high:any", "risk_high:infection"])]
