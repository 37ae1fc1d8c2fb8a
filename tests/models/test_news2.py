"""Tests for models/news2.py: every cut of the RCP 2017 chart, bands, errors and properties."""

from __future__ import annotations

import dataclasses
import math
import statistics
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import numpy as np

from models.news2 import MAX_TOTAL, News2, News2Scorer, news2_score, news2_score_many

NORMAL: dict[str, float] = {
    "respiratory_rate": 16.0,
    "spo2": 98.0,
    "systolic_bp": 120.0,
    "heart_rate": 70.0,
    "temperature": 37.0,
}
VITALS = tuple(NORMAL)
LEVELS = ("alert", "confusion", "voice", "pain", "unresponsive")


def score(**overrides: Any) -> News2:
    """news2_score on normal observations, with ``overrides`` replacing some of them."""
    return news2_score(**{**NORMAL, **overrides})


# The chart as printed, in its own resolution: (lowest, highest, points), inclusive, None
# for open ends. Temperature is in tenths of a degree. Written independently of the module.
CHART: dict[str, tuple[tuple[int | None, int | None, int], ...]] = {
    "respiratory_rate": ((None, 8, 3), (9, 11, 1), (12, 20, 0), (21, 24, 2), (25, None, 3)),
    "spo2": ((None, 91, 3), (92, 93, 2), (94, 95, 1), (96, None, 0)),
    "systolic_bp": ((None, 90, 3), (91, 100, 2), (101, 110, 1), (111, 219, 0), (220, None, 3)),
    "heart_rate": (
        (None, 40, 3), (41, 50, 1), (51, 90, 0), (91, 110, 1), (111, 130, 2), (131, None, 3),
    ),
    "temperature": ((None, 350, 3), (351, 360, 1), (361, 380, 0), (381, 390, 1), (391, None, 2)),
}
RESOLUTION = {"temperature": Decimal("0.1")}


def chart_points(vital: str, value: float) -> int:
    """Oracle: round ``value`` half up (decimally, as written) to the chart, then look it up."""
    step = RESOLUTION.get(vital, Decimal(1))
    charted = int(Decimal(repr(value)).quantize(step, rounding=ROUND_HALF_UP) / step)
    for lowest, highest, points in CHART[vital]:
        if (lowest is None or charted >= lowest) and (highest is None or charted <= highest):
            return points
    raise AssertionError(f"chart has no row for {vital}={value}")


EDGES: list[tuple[str, float, int]] = [
    # Respiration rate: <=8 3; 9-11 1; 12-20 0; 21-24 2; >=25 3
    ("respiratory_rate", 0, 3),
    ("respiratory_rate", 8, 3),
    ("respiratory_rate", 8.49, 3),
    ("respiratory_rate", 8.5, 1),
    ("respiratory_rate", 9, 1),
    ("respiratory_rate", 11, 1),
    ("respiratory_rate", 11.49, 1),
    ("respiratory_rate", 11.5, 0),
    ("respiratory_rate", 12, 0),
    ("respiratory_rate", 20, 0),
    ("respiratory_rate", 20.49, 0),
    ("respiratory_rate", 20.5, 2),
    ("respiratory_rate", 21, 2),
    ("respiratory_rate", 24, 2),
    ("respiratory_rate", 24.49, 2),
    ("respiratory_rate", 24.5, 3),
    ("respiratory_rate", 25, 3),
    ("respiratory_rate", 60, 3),
    # SpO2 scale 1: <=91 3; 92-93 2; 94-95 1; >=96 0
    ("spo2", 70, 3),
    ("spo2", 91, 3),
    ("spo2", 91.49, 3),
    ("spo2", 91.5, 2),
    ("spo2", 92, 2),
    ("spo2", 93, 2),
    ("spo2", 93.49, 2),
    ("spo2", 93.5, 1),
    ("spo2", 94, 1),
    ("spo2", 95, 1),
    ("spo2", 95.49, 1),
    ("spo2", 95.5, 0),
    ("spo2", 96, 0),
    ("spo2", 100, 0),
    # Systolic BP: <=90 3; 91-100 2; 101-110 1; 111-219 0; >=220 3
    ("systolic_bp", 60, 3),
    ("systolic_bp", 90, 3),
    ("systolic_bp", 90.49, 3),
    ("systolic_bp", 90.5, 2),
    ("systolic_bp", 91, 2),
    ("systolic_bp", 100, 2),
    ("systolic_bp", 100.49, 2),
    ("systolic_bp", 100.5, 1),
    ("systolic_bp", 101, 1),
    ("systolic_bp", 110, 1),
    ("systolic_bp", 110.49, 1),
    ("systolic_bp", 110.5, 0),
    ("systolic_bp", 111, 0),
    ("systolic_bp", 219, 0),
    ("systolic_bp", 219.49, 0),
    ("systolic_bp", 219.5, 3),
    ("systolic_bp", 220, 3),
    ("systolic_bp", 260, 3),
    # Pulse: <=40 3; 41-50 1; 51-90 0; 91-110 1; 111-130 2; >=131 3
    ("heart_rate", 30, 3),
    ("heart_rate", 40, 3),
    ("heart_rate", 40.49, 3),
    ("heart_rate", 40.5, 1),
    ("heart_rate", 41, 1),
    ("heart_rate", 50, 1),
    ("heart_rate", 50.49, 1),
    ("heart_rate", 50.5, 0),
    ("heart_rate", 51, 0),
    ("heart_rate", 90, 0),
    ("heart_rate", 90.49, 0),
    ("heart_rate", 90.5, 1),
    ("heart_rate", 91, 1),
    ("heart_rate", 110, 1),
    ("heart_rate", 110.49, 1),
    ("heart_rate", 110.5, 2),
    ("heart_rate", 111, 2),
    ("heart_rate", 130, 2),
    ("heart_rate", 130.49, 2),
    ("heart_rate", 130.5, 3),
    ("heart_rate", 131, 3),
    ("heart_rate", 180, 3),
    # Temperature: <=35.0 3; 35.1-36.0 1; 36.1-38.0 0; 38.1-39.0 1; >=39.1 2
    ("temperature", 33.0, 3),
    ("temperature", 35.0, 3),
    ("temperature", 35.04, 3),
    ("temperature", 35.05, 1),
    ("temperature", 35.1, 1),
    ("temperature", 36.0, 1),
    ("temperature", 36.04, 1),
    ("temperature", 36.05, 0),
    ("temperature", 36.1, 0),
    ("temperature", 38.0, 0),
    ("temperature", 38.04, 0),
    ("temperature", 38.05, 1),
    ("temperature", 38.1, 1),
    ("temperature", 39.0, 1),
    ("temperature", 39.04, 1),
    ("temperature", 39.05, 2),
    ("temperature", 39.1, 2),
    ("temperature", 41.0, 2),
]


@pytest.mark.parametrize(("vital", "value", "points"), EDGES)
def test_every_cut_of_the_chart(vital: str, value: float, points: int) -> None:
    assert score(**{vital: value}).subscores[vital] == points


@pytest.mark.parametrize(("vital", "value", "points"), EDGES)
def test_edge_table_agrees_with_the_chart_oracle(vital: str, value: float, points: int) -> None:
    assert chart_points(vital, value) == points


@pytest.mark.parametrize(
    ("lower", "upper"), [(35.0, 35.1), (36.0, 36.1), (38.0, 38.1), (39.0, 39.1)]
)
def test_temperature_midpoint_rounds_up_exactly(lower: float, upper: float) -> None:
    """The mean of two adjacent chart rows scores as the upper row; one ulp below, the lower."""
    midpoint = statistics.fmean([lower, upper])
    below = math.nextafter(midpoint, 0.0)
    assert score(temperature=midpoint).subscores["temperature"] == chart_points(
        "temperature", upper
    )
    assert score(temperature=below).subscores["temperature"] == chart_points("temperature", lower)
    assert chart_points("temperature", upper) != chart_points("temperature", lower)


@pytest.mark.parametrize(("on_oxygen", "points"), [(False, 0), (True, 2)])
def test_air_or_oxygen(on_oxygen: bool, points: int) -> None:
    result = score(on_oxygen=on_oxygen)
    assert result.subscores["air_or_oxygen"] == points
    assert result.total == points
    assert result.band == "low"


@pytest.mark.parametrize(
    ("consciousness", "points", "band"),
    [
        ("alert", 0, "low"),
        ("confusion", 3, "low-medium"),
        ("voice", 3, "low-medium"),
        ("pain", 3, "low-medium"),
        ("unresponsive", 3, "low-medium"),
    ],
)
def test_every_consciousness_level(consciousness: str, points: int, band: str) -> None:
    result = score(consciousness=consciousness)
    assert result.subscores["consciousness"] == points
    assert result.total == points
    assert result.band == band


def test_subscores_keys_in_chart_order() -> None:
    assert list(score().subscores) == [
        "respiratory_rate",
        "spo2",
        "air_or_oxygen",
        "systolic_bp",
        "heart_rate",
        "consciousness",
        "temperature",
    ]


@pytest.mark.parametrize(
    ("overrides", "total", "band"),
    [
        pytest.param({}, 0, "low", id="all-normal"),
        pytest.param(
            {"respiratory_rate": 21, "spo2": 94, "heart_rate": 91}, 4, "low", id="4-no-red"
        ),
        pytest.param({"respiratory_rate": 8}, 3, "low-medium", id="single-3-total-3"),
        pytest.param(
            {"respiratory_rate": 8, "heart_rate": 91}, 4, "low-medium", id="single-3-total-4"
        ),
        pytest.param({"systolic_bp": 90, "on_oxygen": True}, 5, "medium", id="5-with-a-3"),
        pytest.param(
            {"respiratory_rate": 21, "spo2": 94, "heart_rate": 91, "temperature": 38.1},
            5,
            "medium",
            id="5-no-red",
        ),
        pytest.param(
            {"respiratory_rate": 21, "heart_rate": 111, "on_oxygen": True}, 6, "medium", id="6"
        ),
        pytest.param({"respiratory_rate": 8, "systolic_bp": 90}, 6, "medium", id="6-two-reds"),
        pytest.param(
            {"respiratory_rate": 25, "heart_rate": 111, "on_oxygen": True}, 7, "high", id="7"
        ),
        pytest.param(
            {
                "respiratory_rate": 5,
                "spo2": 85,
                "on_oxygen": True,
                "systolic_bp": 80,
                "heart_rate": 150,
                "consciousness": "unresponsive",
                "temperature": 34.0,
            },
            MAX_TOTAL,
            "high",
            id="maximum",
        ),
    ],
)
def test_aggregate_bands(overrides: dict[str, Any], total: int, band: str) -> None:
    result = score(**overrides)
    assert result.total == total
    assert result.band == band


NON_FINITE = [math.nan, math.inf, -math.inf]


@pytest.mark.parametrize("vital", VITALS)
@pytest.mark.parametrize("value", NON_FINITE)
def test_non_finite_values_raise(vital: str, value: float) -> None:
    with pytest.raises(ValueError, match=rf"^{vital} must be a finite number, got {value!r}$"):
        score(**{vital: value})


@pytest.mark.parametrize("consciousness", ["Alert", "A", "asleep", "", " alert", "confused"])
def test_invalid_consciousness_raises(consciousness: str) -> None:
    with pytest.raises(ValueError, match=r"^consciousness must be one of 'alert', .*, got "):
        score(consciousness=consciousness)


def test_arguments_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        news2_score(16, 98, 120, 70, 37.0)  # type: ignore[call-arg]


def test_result_is_frozen_and_hashable() -> None:
    result = score(respiratory_rate=8)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.respiratory_rate = 0  # type: ignore[misc]
    result.subscores["respiratory_rate"] = 0
    assert result.subscores["respiratory_rate"] == 3
    assert hash(result) == hash(score(respiratory_rate=8.2))
    assert result == score(respiratory_rate=8.2)


@pytest.mark.parametrize(
    ("field", "points"),
    [
        ("respiratory_rate", -1),
        ("spo2", 4),
        ("heart_rate", 1.0),
        ("temperature", True),
        ("air_or_oxygen", 1),
        ("air_or_oxygen", 3),
    ],
)
def test_news2_rejects_impossible_points(field: str, points: Any) -> None:
    fields = dict.fromkeys(score().subscores, 0)
    with pytest.raises(ValueError, match=rf"^{field} points must be"):
        News2(**{**fields, field: points})


# --- properties -------------------------------------------------------------------------

RANGES = {
    "respiratory_rate": (0.0, 80.0),
    "spo2": (50.0, 100.0),
    "systolic_bp": (40.0, 300.0),
    "heart_rate": (20.0, 300.0),
    "temperature": (25.0, 45.0),
}
# A value in the middle of each normal range: points never decrease moving away from it.
CENTRE = {
    "respiratory_rate": 16.0,
    "spo2": 100.0,
    "systolic_bp": 165.0,
    "heart_rate": 70.0,
    "temperature": 37.0,
}


def vital_value(vital: str) -> st.SearchStrategy[float]:
    lowest, highest = RANGES[vital]
    return st.one_of(
        st.floats(lowest, highest, allow_nan=False),
        st.integers(int(lowest), int(highest)).map(float),
        st.integers(int(lowest) * 20, int(highest) * 20).map(lambda k: k / 20),  # x.x5 ties
    )


observations = st.fixed_dictionaries(
    {vital: vital_value(vital) for vital in VITALS}
    | {"on_oxygen": st.booleans(), "consciousness": st.sampled_from(LEVELS)}
)


@given(observations)
def test_total_and_band_follow_the_rules(obs: dict[str, Any]) -> None:
    result = news2_score(**obs)
    subscores = result.subscores
    assert result.total == sum(subscores.values())
    assert all(0 <= p <= 3 for p in subscores.values())
    if result.total >= 7:
        assert result.band == "high"
    elif result.total >= 5:
        assert result.band == "medium"
    elif 3 in subscores.values():
        assert result.band == "low-medium"
    else:
        assert result.band == "low"


@given(observations)
def test_points_match_the_chart_after_rounding_half_up(obs: dict[str, Any]) -> None:
    result = news2_score(**obs)
    for vital in VITALS:
        assert result.subscores[vital] == chart_points(vital, obs[vital]), vital


vital_and_two_values = st.sampled_from(VITALS).flatmap(
    lambda v: st.tuples(st.just(v), vital_value(v), vital_value(v))
)


@given(vital_and_two_values)
def test_points_never_decrease_away_from_normal(draw: tuple[str, float, float]) -> None:
    vital, a, b = draw
    centre = CENTRE[vital]
    near, far = sorted((a, b), key=lambda v: abs(v - centre))
    if (near - centre) * (far - centre) < 0:
        return  # opposite sides of the normal range: no order between them
    assert score(**{vital: far}).subscores[vital] >= score(**{vital: near}).subscores[vital]


# --- River scorer -----------------------------------------------------------------------


def test_scorer_learn_one_is_a_no_op_returning_self() -> None:
    model = News2Scorer()
    x = {"respiratory_rate": 22.0, "spo2": 93.0}
    before = model.predict_proba_one(x)
    assert model.learn_one(x, True) is model
    assert model.learn_one(x, False) is model
    assert model.predict_proba_one(x) == before


def test_scorer_matches_news2_score_when_all_vitals_present() -> None:
    x = {**NORMAL, "respiratory_rate": 8.0, "heart_rate": 111.0, "on_oxygen": 1.0}
    expected = score(respiratory_rate=8.0, heart_rate=111.0, on_oxygen=True)
    assert News2Scorer().score_one(x) == expected
    assert News2Scorer().predict_proba_one(x) == {False: 1 - 7 / 20, True: 7 / 20}


@pytest.mark.parametrize("vital", VITALS)
def test_scorer_missing_vital_scores_zero(vital: str) -> None:
    abnormal = {
        "respiratory_rate": 30.0,
        "spo2": 85.0,
        "systolic_bp": 80.0,
        "heart_rate": 150.0,
        "temperature": 34.0,
    }
    full = News2Scorer().score_one(abnormal)
    for missing in ({k: v for k, v in abnormal.items() if k != vital}, {**abnormal, vital: None}):
        partial = News2Scorer().score_one(missing)  # type: ignore[arg-type]
        assert partial.subscores[vital] == 0
        assert partial.total == full.total - full.subscores[vital]


def test_scorer_empty_window_and_unknown_keys() -> None:
    assert News2Scorer().predict_proba_one({}) == {False: 1.0, True: 0.0}
    assert News2Scorer().predict_proba_one({"step_count": 900.0}) == {False: 1.0, True: 0.0}


@pytest.mark.parametrize(("flag", "points"), [(0.0, 0), (1.0, 2), (0, 0), (1, 2), (None, 0)])
def test_scorer_on_oxygen_flag(flag: float | None, points: int) -> None:
    x: dict[str, Any] = {"on_oxygen": flag}
    assert News2Scorer().score_one(x).subscores["air_or_oxygen"] == points


@pytest.mark.parametrize("flag", [0.5, 2.0, -1.0, math.nan])
def test_scorer_rejects_bad_on_oxygen(flag: float) -> None:
    with pytest.raises(ValueError, match=r"^on_oxygen must be 0 \(air\) or 1 \(oxygen\), got "):
        News2Scorer().score_one({"on_oxygen": flag})


@pytest.mark.parametrize("vital", VITALS)
def test_scorer_rejects_non_finite_vitals(vital: str) -> None:
    with pytest.raises(ValueError, match=rf"^{vital} must be a finite number, got nan$"):
        News2Scorer().predict_proba_one({vital: math.nan})


@given(observations, observations)
def test_scorer_probability_is_monotone_in_total(a: dict[str, Any], b: dict[str, Any]) -> None:
    model = News2Scorer()

    def as_x(obs: dict[str, Any]) -> dict[str, float]:
        return {vital: obs[vital] for vital in VITALS} | {"on_oxygen": float(obs["on_oxygen"])}

    pa, pb = model.predict_proba_one(as_x(a)), model.predict_proba_one(as_x(b))
    ta, tb = model.score_one(as_x(a)).total, model.score_one(as_x(b)).total
    for p in (pa, pb):
        assert set(p) == {False, True}
        assert 0.0 <= p[True] <= 1.0
        assert p[False] + p[True] == pytest.approx(1.0)
    if ta < tb:
        assert pa[True] < pb[True]
    elif ta == tb:
        assert pa[True] == pb[True]


# --- Vectorised NEWS2 -------------------------------------------------------------------


def maybe_missing(vital: str) -> st.SearchStrategy[float]:
    """A chart value (ties included), any finite float, or NaN: a missing vital."""
    return st.one_of(vital_value(vital), st.floats(allow_nan=False, allow_infinity=False), st.just(math.nan))


cohort = st.lists(
    st.fixed_dictionaries({vital: maybe_missing(vital) for vital in VITALS} | {"on_oxygen": st.booleans()}),
    min_size=1, max_size=20,
)


@given(cohort)
def test_vectorised_news2_agrees_with_the_scalar_one_on_every_input(rows: list[dict[str, Any]]) -> None:
    """Row i of news2_score_many is News2Scorer.score_one of observation i (NaN: absent), and
    news2_score's when no vital is missing."""
    many = news2_score_many(**{v: np.array([r[v] for r in rows]) for v in VITALS},
                            on_oxygen=np.array([r["on_oxygen"] for r in rows]))
    for i, row in enumerate(rows):
        present = {v: row[v] for v in VITALS if not math.isnan(row[v])}
        one = News2Scorer().score_one({**present, "on_oxygen": float(row["on_oxygen"])})
        assert {k: int(p[i]) for k, p in many.subscores.items()} == one.subscores
        assert (int(many.total[i]), str(many.band[i]), int(many.largest[i])) == (
            one.total, one.band, max(one.subscores.values()))
        if len(present) == len(VITALS):
            assert one == news2_score(**present, on_oxygen=row["on_oxygen"])


@pytest.mark.parametrize("vital", VITALS)
@pytest.mark.parametrize("value", [math.inf, -math.inf])
def test_vectorised_news2_rejects_infinite_vitals_like_the_scalar_one(vital: str, value: float) -> None:
    with pytest.raises(ValueError, match=rf"^{vital} must be a finite number"):
        news2_score(**{**NORMAL, vital: value})
    with pytest.raises(ValueError, match=rf"^{vital} must be a finite number or NaN \(missing\), got -?inf$"):
        news2_score_many(**{**NORMAL, vital: [37.0, value]})


def test_vectorised_news2_broadcasts_scalars_and_defaults_to_air() -> None:
    many = news2_score_many(**{**NORMAL, "heart_rate": [70.0, 135.0, math.nan]})
    assert many.heart_rate.tolist() == [0, 3, 0] and many.air_or_oxygen.tolist() == [0, 0, 0]
    assert many.band.tolist() == ["low", "low-medium", "low"] and many.total.dtype == np.int64
