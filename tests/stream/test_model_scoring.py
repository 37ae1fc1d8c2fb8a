"""The worker's model scoring (stream/model_scoring.py): one accountable score per feature row once a
snapshot is in, NEWS2 of the same row beside it, newer snapshots only, the patient's diagnoses joined."""

from __future__ import annotations

from kernel.events import HOP_MS, FeatureRow
from kernel.wire import PatientRecord
from models.news2 import News2Scorer
from models.patient_context import PatientContext
from models.risk import RiskModel
from models.scorer import Scorer
from models.snapshots import Snapshot
from stream.model_scoring import ModelScoring

T = 1_767_571_200_000 + 12 * HOP_MS
ROW = {"respiratory_rate_mean_15m": 22.0, "oxygen_saturation_mean_15m": 95.0, "heart_rate_mean_60m": 96.0,
       "systolic_blood_pressure_last": 118.0}
CONDITIONS = ("any", "infection")


def _snapshot(version: int, name: str = "risk-logreg") -> Snapshot:
    return Snapshot(name, version, 0, 0, {}, RiskModel(conditions=CONDITIONS))


def test_no_model_score_before_the_first_snapshot() -> None:
    scoring = ModelScoring(Scorer())
    assert scoring.version is None
    assert scoring.score_rows([FeatureRow(patient_id="pt-1", ts_ms=T, x=ROW)]) == []
    assert scoring.swap(_snapshot(1)) and scoring.score_rows([]) == []


def test_each_row_gets_one_score_naming_its_model_window_and_the_news2_of_the_same_row() -> None:
    scoring = ModelScoring(Scorer(_snapshot(4)))
    rows = [FeatureRow(patient_id="pt-1", ts_ms=T, x=ROW), FeatureRow(patient_id="pt-2", ts_ms=T, x={"heart_rate_mean_15m": 131.0})]
    first, second = scoring.score_rows(rows)
    expected = News2Scorer().score_one({"respiratory_rate": 22.0, "spo2": 95.0, "heart_rate": 96.0,
                                        "systolic_bp": 118.0})
    assert (first.patient_id, first.window_start_ms, first.window_end_ms) == ("pt-1", T - HOP_MS, T)
    assert (first.model_name, first.model_version) == ("risk-logreg", "risk-logreg-v4")
    assert (first.news2_total, first.news2_band) == (expected.total, expected.band)
    assert first.news2_subscores == dict(expected.subscores)
    assert sorted(first.risks) == sorted(CONDITIONS) and all(0.0 <= p <= 1.0 for p in first.risks.values())
    assert first.missing_inputs == ("temperature",)
    assert second.patient_id == "pt-2" and set(second.missing_inputs) == {"respiratory_rate", "spo2", "temperature",
                                                                          "systolic_bp"}
    assert scoring.seconds >= 0.0


def test_blood_pressure_stands_in_for_carry_ms_then_counts_as_missing() -> None:
    scoring = ModelScoring(Scorer(_snapshot(1)), news2_carry_ms=2 * HOP_MS)
    no_bp = {k: v for k, v in ROW.items() if k != "systolic_blood_pressure_last"}
    missing = [scoring.score_rows([FeatureRow(patient_id="pt-1", ts_ms=T + i * HOP_MS, x=ROW if i == 0 else no_bp)])[0].missing_inputs
               for i in range(4)]
    assert missing == [("temperature",), ("temperature",), ("temperature",), ("temperature", "systolic_bp")]


def test_only_a_newer_snapshot_of_the_same_model_replaces_the_one_in_use() -> None:
    scoring = ModelScoring(Scorer(_snapshot(3)))
    assert not scoring.swap(_snapshot(3)) and not scoring.swap(_snapshot(2))
    assert not scoring.swap(_snapshot(9, name="risk-hat"))
    assert scoring.swap(_snapshot(5)) and scoring.version == "risk-logreg-v5"
    [score] = scoring.score_rows([FeatureRow(patient_id="pt-1", ts_ms=T, x=ROW)])
    assert score.model_version == "risk-logreg-v5"


def test_the_patients_diagnoses_are_among_the_inputs_of_their_scores_only() -> None:
    context = PatientContext(("diagnoses",))
    context.update(PatientRecord("pt-1", {}, ("copd",)))
    scoring = ModelScoring(Scorer(_snapshot(1)), context=context)
    known, unknown = scoring.score_rows([FeatureRow(patient_id="pt-1", ts_ms=T, x=ROW), FeatureRow(patient_id="pt-2", ts_ms=T, x=ROW)])
    assert known.inputs["dx_copd"] == 1.0 and known.inputs["dx_heart_failure"] == 0.0
    assert not any(name.startswith("dx_") for name in unknown.inputs)
    assert {k: v for k, v in known.inputs.items() if not k.startswith("dx_")} == ROW
