"""Signed snapshots, the trainer's order and cadence, and the scorer's hot swap."""

from __future__ import annotations

import pickle
import random

import pytest
from pydantic import SecretStr

from models.errors import SnapshotKeyMissing, SnapshotRejected
from models.labelling import LabelledWindow
from models.risk import RiskModel
from models.scorer import Scorer
from models.snapshots import MAGIC, Snapshot, signing_key
from models.trainer import Trainer
from kernel.settings import Settings

KEY = "correct horse battery staple, and more"


def _trained(seed: int = 0) -> RiskModel:
    model = RiskModel("logreg", seed=seed, conditions=("any", "infection"), negative_rate=1.0)
    rng = random.Random(seed)
    for _ in range(300):
        x = {"hr_z": rng.gauss(0, 1), "temp_z": rng.gauss(0, 1)}
        model.learn_one(x, {"any": x["hr_z"] > 1, "infection": x["temp_z"] > 1})
    return model


def _snapshot(version: int = 1) -> Snapshot:
    return Snapshot("risk-logreg", version, 1_767_571_200_000, 300, {"auroc_any": 0.81}, _trained())


def test_round_trip_keeps_model_and_metadata() -> None:
    snap = _snapshot(4)
    back = Snapshot.from_bytes(snap.to_bytes(KEY), KEY)
    assert (back.name, back.version, back.created_at_ms, back.examples_seen, back.metrics) == \
        (snap.name, snap.version, snap.created_at_ms, snap.examples_seen, snap.metrics)
    x = {"hr_z": 1.5, "temp_z": -0.2}
    assert back.model.risk_one(x) == snap.model.risk_one(x)


def test_settings_key_is_accepted_as_secret() -> None:
    settings = Settings(snapshot_key=KEY)
    raw = _snapshot().to_bytes(settings.snapshot_key)
    assert Snapshot.from_bytes(raw, settings.snapshot_key).version == 1
    assert "correct horse" not in repr(settings)


@pytest.mark.parametrize("mutate", [
    lambda raw: raw[:-1] + bytes([raw[-1] ^ 1]),  # payload altered
    lambda raw: raw[:len(MAGIC)] + bytes(32) + raw[len(MAGIC) + 32:],  # signature replaced
])
def test_altered_snapshots_are_rejected_before_unpickling(mutate, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = mutate(_snapshot().to_bytes(KEY))

    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("pickle.loads must not run on unauthenticated bytes")

    monkeypatch.setattr(pickle, "loads", refuse)
    with pytest.raises(SnapshotRejected, match="signature"):
        Snapshot.from_bytes(raw, KEY)


def test_a_forged_pickle_signed_with_another_key_never_runs() -> None:
    class Boom:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (exec, ("raise SystemExit('pwned')",))

    forged = Snapshot("risk-logreg", 9, 0, 0, {}, Boom()).to_bytes("an attacker's key of enough length!!")
    with pytest.raises(SnapshotRejected):
        Snapshot.from_bytes(forged, KEY)


@pytest.mark.parametrize("raw", [b"", b"not a snapshot at all", MAGIC])
def test_garbage_is_rejected(raw: bytes) -> None:
    with pytest.raises(SnapshotRejected, match="magic"):
        Snapshot.from_bytes(raw, KEY)


@pytest.mark.parametrize("key", [None, "short", SecretStr("")])
def test_missing_or_short_keys_are_refused(key: object) -> None:
    with pytest.raises(SnapshotKeyMissing):
        signing_key(key)
    with pytest.raises(SnapshotKeyMissing):
        _snapshot().to_bytes(key)


def test_scorer_swaps_only_to_newer_versions_of_its_model() -> None:
    scorer = Scorer()
    assert scorer.score({"hr_z": 1.0}) == {} and scorer.risk_score("pt-1", 0, 1, {}) is None
    assert scorer.swap(_snapshot(2))
    assert not scorer.swap(_snapshot(2)) and not scorer.swap(_snapshot(1))
    other = Snapshot("risk-hat", 7, 0, 0, {}, _trained())
    assert not scorer.swap(other)
    assert scorer.swap(_snapshot(3)) and scorer.version == "risk-logreg-v3"
    risks = scorer.score({"hr_z": 2.0, "temp_z": 0.0})
    assert set(risks) == {"any", "infection"} and risks["any"] > risks["infection"]


def test_scorer_builds_accountable_score_rows() -> None:
    scorer = Scorer(_snapshot(5), top_features=1)
    row = scorer.risk_score("pt-1", 0, 300_000, {"hr_z": 2.5, "temp_z": 0.1})
    assert row is not None
    assert (row.model_name, row.model_version) == ("risk-logreg", "risk-logreg-v5")
    assert list(row.contributions) == ["hr_z"] and row.score == row.risks["any"]


def _windows(seed: int) -> list[LabelledWindow[dict[str, float]]]:
    rng = random.Random(seed)
    return [LabelledWindow(f"pt-{i % 7}", 300_000 * (i // 7), {"any": rng.random() < 0.2},
                           {"hr_z": rng.gauss(0, 1)}) for i in range(400)]


def test_trainer_learns_in_window_then_patient_order_whatever_the_batches() -> None:
    windows = _windows(1)
    shuffled = windows[:]
    random.Random(2).shuffle(shuffled)
    a = Trainer(RiskModel(conditions=("any",), seed=1), name="m", snapshot_every=None, snapshot_every_ms=None)
    b = Trainer(RiskModel(conditions=("any",), seed=1), name="m", snapshot_every=None, snapshot_every_ms=None)
    a.learn(windows, now_ms=0)
    b.learn(shuffled, now_ms=0)
    assert a.last_order == b.last_order == sorted(a.last_order, key=lambda pt: (pt[1], pt[0]))
    probe = {"hr_z": 1.0}
    assert a.model.risk_one(probe) == b.model.risk_one(probe)


def test_trainer_snapshots_every_n_examples_and_every_t_of_event_time() -> None:
    windows = _windows(3)
    by_count = Trainer(RiskModel(conditions=("any",)), name="m", snapshot_every=100, snapshot_every_ms=None)
    versions = [s.version for i in range(0, 400, 50)
                if (s := by_count.learn(windows[i:i + 50], now_ms=i)) is not None]
    assert versions == [1, 2, 3, 4]
    by_time = Trainer(RiskModel(conditions=("any",)), name="m", snapshot_every=None, snapshot_every_ms=3_600_000)
    taken = [s.created_at_ms for t in range(0, 4 * 3_600_000, 600_000)
             if (s := by_time.learn(windows[:1], now_ms=t)) is not None]
    assert taken == [3_600_000, 7_200_000, 10_800_000]


def test_snapshots_are_copies() -> None:
    trainer = Trainer(RiskModel(conditions=("any",), negative_rate=1.0), name="m", snapshot_every=1,
                      snapshot_every_ms=None)
    snap = trainer.learn(_windows(4)[:10], now_ms=0)
    assert snap is not None
    before = snap.model.risk_one({"hr_z": 1.0})
    trainer.learn(_windows(5), now_ms=1)
    assert snap.model.risk_one({"hr_z": 1.0}) == before
