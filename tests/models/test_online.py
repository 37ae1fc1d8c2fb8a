"""The live trainer's loop: a trainer restarted from any snapshot ends with the same model."""

from __future__ import annotations

import pickle
import random
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from models.labelling import Outcome
from models.online import OnlineLearner
from models.risk import RiskModel, _linear_parts
from models.snapshots import Snapshot
from kernel.events import HOP_MS, FeatureRow
from kernel.wire import PatientRecord

H = 3_600_000
T0 = 1_767_571_200_000
HORIZON = 2 * H


@dataclass(frozen=True)
class Record:
    """A feature row or an outcome as the trainer reads it: partition, offset, payload."""

    partition: int
    offset: int
    item: FeatureRow | Outcome


def _stream(seed: int, patients: int = 6, hours: int = 12) -> list[Record]:
    """Rows every 5 minutes per patient over 2 partitions, outcomes on a third, in arrival order."""
    rng = random.Random(seed)
    events: list[tuple[int, int, FeatureRow | Outcome]] = []
    for p in range(patients):
        pid = f"pt-{p}"
        onset = T0 + rng.randrange(3 * H, hours * H) if rng.random() < 0.5 else None
        for t in range(T0 + HOP_MS, T0 + hours * H, HOP_MS):
            sick = onset is not None and onset - HORIZON <= t < onset
            hr = 70 + (25 if sick else 0) + rng.gauss(0, 6)
            events.append((t, p % 2, FeatureRow(patient_id=pid, ts_ms=t, x={"heart_rate_mean_60m": hr, "heart_rate_z_60m": (hr - 70) / 8,
                                                          "respiratory_rate_mean_15m": 16 + rng.gauss(0, 2)})))
        if onset is not None:
            arrives = onset + rng.randrange(0, 20 * 60_000)  # within the outcome grace
            events.append((arrives, 2, Outcome(pid, "infection", onset_ms=onset, t_ms=arrives)))
    events.sort(key=lambda e: e[0])
    offsets = [0, 0, 0]
    out = []
    for _, partition, item in events:
        out.append(Record(partition, offsets[partition], item))
        offsets[partition] += 1
    return out


def _learner(model: RiskModel | None = None, *, first_version: int = 1, learned_before_ms: int | None = None,
             resumed_at_ms: int | None = None, patient_inputs: tuple[str, ...] = ("age_band",)) -> OnlineLearner:
    return OnlineLearner(model or RiskModel(conditions=("any", "infection"), negative_rate=0.5),
                         name="risk-logreg", horizon_ms=HORIZON, outcome_grace_ms=30 * 60_000,
                         snapshot_every=40, snapshot_every_ms=None, first_version=first_version,
                         learned_before_ms=learned_before_ms, resumed_at_ms=resumed_at_ms,
                         patient_inputs=patient_inputs)


def _feed(learner: OnlineLearner, records: list[Record], lag: int = 0) -> list[Snapshot]:
    """Like :meth:`TrainerService.step`, with partition 1 read ``lag`` records behind partition 0."""
    snapshots = []
    for r in _interleave(records, lag):
        if isinstance(r.item, Outcome):
            learner.on_outcome(r.item)
            continue
        _, snapshot = learner.offer(r.item, partition=r.partition, offset=r.offset)
        if snapshot is not None:
            snapshots.append(snapshot)
    return snapshots


def _interleave(records: list[Record], lag: int) -> list[Record]:
    """Records in another arrival order: each partition's own order kept, partition 1 delayed."""
    keyed = [((i + lag if r.partition == 1 else i), k, r) for k, (i, r) in enumerate(enumerate(records))]
    return [r for _, _, r in sorted(keyed, key=lambda e: (e[0], e[1]))]


def _restart(snapshot: Snapshot, records: list[Record]) -> tuple[OnlineLearner, list[Record]]:
    """A new trainer from ``snapshot``: every outcome first, then rows from the resume offsets."""
    model = pickle.loads(pickle.dumps(snapshot.model))  # as read back from the topic
    learner = _learner(model, first_version=snapshot.version + 1,
                       learned_before_ms=snapshot.resume["learned_before_ms"], resumed_at_ms=snapshot.created_at_ms)
    starts = {int(p): o for p, o in snapshot.resume["features"].items()}
    replay = [r for r in records if isinstance(r.item, Outcome)]
    replay += [r for r in records if not isinstance(r.item, Outcome) and r.offset >= starts.get(r.partition, 0)]
    return learner, replay


def _weights(model: RiskModel) -> dict[str, float]:
    probe = {"heart_rate_mean_60m": 95.0, "heart_rate_z_60m": 3.0, "respiratory_rate_mean_15m": 22.0}
    return model.risk_one(probe)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), lag=st.integers(0, 60), which=st.integers(0, 1_000))
def test_a_trainer_restarted_from_any_snapshot_learns_the_same_model(seed: int, lag: int, which: int) -> None:
    """Whatever the interleaving of the partitions, before and after the restart."""
    records = _stream(seed)
    end = records[-1].item.ts_ms + HORIZON + H if isinstance(records[-1].item, FeatureRow) else T0 + 20 * H
    straight = _learner()
    snapshots = _feed(straight, records)
    straight.advance(end)
    assert snapshots, "the stream is long enough for snapshots"

    snapshot = snapshots[which % len(snapshots)]
    # The outcomes a restarted trainer sees are those published by then (it reads them to the end).
    resumed, replay = _restart(snapshot, records)
    more = _feed(resumed, replay, lag)
    resumed.advance(end)

    assert resumed.trainer.examples_seen == straight.trainer.examples_seen
    assert _weights(resumed.model) == pytest.approx(_weights(straight.model), abs=1e-12)
    later = [(s.version, s.examples_seen) for s in snapshots if s.version > snapshot.version]
    assert [(s.version, s.examples_seen) for s in more] == later, "the same snapshots, version for version"


def test_snapshots_say_where_to_resume() -> None:
    learner = _learner()
    snapshots = _feed(learner, _stream(3))
    for snap in snapshots:
        assert set(snap.resume) == {"learned_before_ms", "features"}
        assert snap.resume["learned_before_ms"] <= snap.created_at_ms - HORIZON
        assert set(snap.resume["features"]) <= {"0", "1"}
    offsets = [snap.resume["features"]["0"] for snap in snapshots]
    assert offsets == sorted(offsets), "resume offsets only move forward"


def test_no_snapshot_of_an_untrained_model() -> None:
    learner = _learner()
    rows = [FeatureRow(patient_id="pt-1", ts_ms=T0 + i * HOP_MS, x={"heart_rate_mean_60m": 70.0}) for i in range(1, 12)]
    for i, row in enumerate(rows):
        assert learner.offer(row, partition=0, offset=i) == ([], None)


def test_scores_are_test_then_train() -> None:
    """Each window is scored when it arrives, by the model as it was then, and judged later."""
    learner = _learner()
    records = _stream(5)
    _feed(learner, records, 7)
    learner.advance(T0 + 20 * H)
    labelled = learner.evaluator.labelled
    rows = sum(1 for r in records if isinstance(r.item, FeatureRow))
    assert 0 < labelled <= rows
    assert learner.rows_scored == rows
    assert np.isfinite(learner.evaluator.metrics("model", "any").brier)


def test_fairness_is_watched_per_subgroup_given_the_patients() -> None:
    learner = _learner()
    for p in range(6):
        learner.on_patient(PatientRecord(f"pt-{p}", {"sex": "FM"[p % 2], "age_band": "75+",
                                                    "skin_tone": ("I-II", "V-VI")[p % 2]}))
    _feed(learner, _stream(8))
    learner.advance(T0 + 20 * H)
    rows = {(r.scorer, r.attribute, r.group): r for r in learner.fairness.table()}
    assert rows[("model", "skin_tone", "V-VI")].windows > 0 and rows[("model", "skin_tone", "I-II")].windows > 0
    assert rows[("news2", "sex", "F")].windows == rows[("model", "sex", "F")].windows


def test_the_trainer_records_drift_and_fairness_events_one_row_per_gap() -> None:
    """Events become ops_events rows (kind, subject, time unique) and counters; no connection needed."""
    import json as _json

    from prometheus_client import CollectorRegistry
    from pydantic import SecretStr

    from kernel.events import OpsEvent
    from models.trainer_service import TrainerService
    from sinks.metrics import ModelMetrics
    from sinks.rows import ops_event_row
    from kernel.settings import Settings

    registry = CollectorRegistry()
    service = TrainerService(Settings(snapshot_key=SecretStr("k" * 40)), metrics=ModelMetrics(registry))
    service._record_events([
        OpsEvent(kind="drift", ts_ms=T0, subject="model", details={"condition": "any", "recent_loss": 0.2}),
        OpsEvent(kind="fairness", ts_ms=T0, subject="risk-logreg", details={"scorer": "news2", "metric": "calibration",
                                                 "attribute": "skin_tone", "gap": 0.4}),
        OpsEvent(kind="fairness", ts_ms=T0, subject="risk-logreg", details={"scorer": "news2", "metric": "sensitivity",
                                                 "attribute": "skin_tone", "gap": 0.3}),
    ])
    subjects = [(e.kind, e.subject) for e in service._ops_events]
    assert subjects == [("drift", "risk-logreg"), ("fairness", "risk-logreg:news2:calibration:skin_tone"),
                        ("fairness", "risk-logreg:news2:sensitivity:skin_tone")]
    assert _json.loads(ops_event_row(service._ops_events[1])[3])["gap"] == 0.4
    assert registry.get_sample_value("vitals_drift_events_total", {"model": "risk-logreg"}) == 1
    assert registry.get_sample_value("vitals_ops_events_total", {"kind": "fairness"}) == 2


@pytest.mark.parametrize("inputs", [("age_band",), ("age_band", "diagnoses")])
def test_the_model_learns_from_what_the_patients_records_say(inputs: tuple[str, ...]) -> None:
    """A patient's age band (and, when configured, enrolment diagnoses) join every row of theirs
    as model inputs; a patient whose record has not arrived (or who left) is scored from the
    vitals alone; sex and skin tone are never inputs."""
    learner = _learner(patient_inputs=inputs)
    for p in range(0, 6, 2):
        learner.on_patient(PatientRecord(f"pt-{p}", {"age_band": ("<65", "75+")[p == 0], "skin_tone": "V-VI"},
                                         ("copd",) if p == 0 else ()))
    learner.forget_patient("pt-4")
    _feed(learner, _stream(3))
    learner.advance(T0 + 20 * H)
    parts = _linear_parts(learner.model.heads["any"])
    assert parts is not None
    _, _, regression, _ = parts
    assert regression.weights.get("age_75+", 0.0) != 0.0  # learnt a weight for the band
    assert ("dx_copd" in learner.space.columns) == ("diagnoses" in inputs)
    assert not any("skin" in c or "sex" in c for c in learner.space.columns)
    assert learner.context.inputs("pt-0")["age_75+"] == 1.0
    assert learner.context.inputs("pt-2")["age_75+"] == 0.0
    assert learner.context.inputs("pt-4") == {} and learner.context.inputs("pt-1") == {}
