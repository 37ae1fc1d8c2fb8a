"""Trainer and scorers on the real broker: snapshots flow, hot-swap, and survive restarts.

One worker scores feature rows with the newest snapshot; one trainer learns from the rows and
the outcome feed and publishes snapshots to the compacted topic and the registry. The cohort is
published an hour of simulated time at a time, so the trainer has something new to learn while
the workers score. The test shows:

- the worker hot-swaps: its model scores name several snapshot versions without a restart;
- scores keep flowing while the trainer is down (killed with SIGKILL), and the restarted
  trainer resumes from its newest snapshot (next version, examples seen keep counting) and
  registers it if the killed trainer published it to the topic but not yet to the registry;
- a restarted worker scores with the newest snapshot from its first score;
- outcomes land in the ``outcomes`` table (the patient board's annotations);
- scores use each patient's record (age band) from the patients topic, known at the worker's
  start or published while it runs.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from itertools import groupby

import psycopg
import pytest
from pydantic import SecretStr

from models.snapshot_topic import read_latest
from simulators.cohort import CohortConfig, population, simulate
from simulators.deterioration import Incidence
from simulators.kafka_publisher import make_producer, publish, publish_patients
from kernel.settings import Settings

pytestmark = pytest.mark.integration

HOUR_MS = 3_600_000
HOURS = 6
PATIENTS = 30
MODEL = "risk-logreg"


def _topology_settings(isolated: Settings) -> Settings:
    return isolated.model_copy(update={
        "snapshot_key": SecretStr("k" * 40), "label_horizon_ms": 30 * 60_000, "outcome_grace_ms": 0,
        "snapshot_every": 150, "snapshot_every_ms": 30 * 60_000})


def _registry(settings: Settings) -> list[tuple[int, int]]:
    """(version, examples seen) of every registered snapshot, oldest first."""
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute("SELECT model_version::int, examples_seen FROM model_registry WHERE model_name = %s "
                            "ORDER BY 1", (MODEL,)).fetchall()
    return [(int(v), int(n)) for v, n in rows]


def _model_scores(settings: Settings) -> list[tuple[int, int]]:
    """(window start ms, snapshot version) of every model score written, in window order."""
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute("SELECT (extract(epoch FROM window_start) * 1000)::bigint, model_version "
                            "FROM risk_scores WHERE model_name = %s ORDER BY 1", (MODEL,)).fetchall()
    return [(int(t), int(v.rsplit("-v", 1)[1])) for t, v in rows]


def _diagnosed(settings: Settings) -> dict[str, list[bool]]:
    """Per patient, in window order, whether each model score had the patient inputs (age band)."""
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute("SELECT patient_id, inputs ? 'age_75+' FROM risk_scores WHERE model_name = %s "
                            "ORDER BY patient_id, window_start", (MODEL,)).fetchall()
    return {pid: [bool(d) for _, d in group] for pid, group in groupby(rows, key=lambda r: r[0])}


def _wait(what: str, check: Callable[[], bool], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def test_scores_hot_swap_and_survive_trainer_and_worker_restarts(isolated: Settings, start_worker,
                                                                 start_trainer) -> None:
    settings = _topology_settings(isolated)
    config = CohortConfig(patients=PATIENTS, seed=11, duration_ms=HOURS * HOUR_MS,
                          incidence=Incidence().scaled(300.0))
    hours = {h: list(msgs) for h, msgs in groupby(simulate(config), key=lambda m: (m.sent_ms - config.start_ms)
                                                  // HOUR_MS)}
    producer = make_producer(settings)

    def publish_hours(*which: int) -> None:
        for h in which:
            publish(hours.get(h, []), settings=settings, producer=producer)

    patients = population(config)
    early, late = patients[:PATIENTS // 2], patients[PATIENTS // 2:]
    publish_patients(early, settings=settings, producer=producer)
    publish_hours(0, 1, 2)
    worker = start_worker(settings)
    trainer = start_trainer(settings)
    _wait("the first snapshots", lambda: len(_registry(settings)) >= 2, timeout_s=180)
    publish_hours(3)
    _wait("model scores", lambda: len(_model_scores(settings)) > 0)
    publish_patients(late, settings=settings, producer=producer)  # the worker's feed picks them up

    # The trainer dies; the worker keeps scoring with the snapshot it holds. A trainer writes each
    # snapshot to the topic, then to the registry: killed between the two, its newest is on the
    # topic only, and the restarted trainer must register it.
    trainer.stop(signal.SIGKILL)
    before_restart = _registry(settings)
    newest, _ = read_latest(settings, MODEL)
    assert newest is not None and newest.version - before_restart[-1][0] in (0, 1)
    scores_before = len(_model_scores(settings))
    publish_hours(4)
    _wait("scores while the trainer is down", lambda: len(_model_scores(settings)) > scores_before + PATIENTS)
    assert _registry(settings) == before_restart, "no trainer, no new snapshot"

    # The restarted trainer resumes from its newest snapshot: next version, examples keep counting.
    last_version, last_seen = newest.version, newest.examples_seen
    restarted = start_trainer(settings)
    _wait("a snapshot from the restarted trainer", lambda: _registry(settings)[-1][0] > last_version, timeout_s=180)
    registered = _registry(settings)
    assert [v for v, _ in registered] == list(range(1, registered[-1][0] + 1)), "a version missing from the registry"
    resumed = [(v, n) for v, n in registered if v > last_version]
    assert resumed[0][0] == last_version + 1
    assert resumed[0][1] > last_seen, "the restarted trainer started from zero"
    assert restarted.log.read_text().count(f"resuming {MODEL} from {MODEL}-v{last_version}") == 1

    # The restarted trainer exports its live evaluation.
    restarted.wait_metric("vitals_model_version", lambda v: v >= last_version + 1, labels={"model": MODEL})
    assert restarted.metric("vitals_trainer_examples_total", {"model": MODEL}) > 0
    assert restarted.metric("vitals_model_brier", {"model": "model", "condition": "any"}) > 0

    # The worker hot-swapped without a restart: its scores name several versions.
    scored = _model_scores(settings)
    assert len({v for _, v in scored}) >= 2, f"one snapshot version only: {sorted({v for _, v in scored})}"

    # A restarted worker scores with the newest snapshot from its very first score.
    assert worker.stop() == 0
    newest = _registry(settings)[-1][0]
    last_window = _model_scores(settings)[-1][0]  # the stopped worker's last: it scored until it stopped
    start_worker(settings)
    publish_hours(5, 6)
    _wait("scores from the restarted worker", lambda: any(t > last_window for t, _ in _model_scores(settings)))
    after = [v for t, v in _model_scores(settings) if t > last_window]
    assert min(after) >= newest, f"a restarted worker scored with v{min(after)} though v{newest} was published"

    published = sum(1 for msgs in hours.values() for m in msgs if m.kind == "outcome")
    assert published > 0

    def outcomes_stored() -> int:
        with psycopg.connect(settings.database_url) as conn:
            return int(conn.execute("SELECT count(*) FROM outcomes").fetchone()[0])

    _wait(f"{published} outcomes in the database", lambda: outcomes_stored() == published)
    producer.close()

    # Patient inputs: known from the first score for patients published before the worker started,
    # and from some point on for those published while it ran (never lost again after).
    diagnosed = _diagnosed(settings)
    assert all(all(diagnosed[p.patient_id]) for p in early if p.patient_id in diagnosed)
    for p in late:
        flags = diagnosed.get(p.patient_id, [])
        assert flags and flags[-1], f"{p.patient_id}: the feed never delivered its record"
        assert flags == sorted(flags), f"{p.patient_id}: patient inputs came and went"


def test_only_snapshots_signed_with_the_key_are_ever_loaded(isolated: Settings) -> None:
    """A record on the topic written without the key — higher version or garbage — is skipped unread."""
    from kafka import KafkaProducer

    from models.risk import RiskModel
    from models.snapshot_topic import read_latest
    from models.snapshots import Snapshot

    settings = _topology_settings(isolated)
    genuine = Snapshot(MODEL, 3, 1, 10, {}, RiskModel(conditions=("any",)))
    forged = Snapshot(MODEL, 9, 2, 99, {}, RiskModel(conditions=("any",)))
    other_model = Snapshot("risk-hat", 12, 3, 5, {}, RiskModel(conditions=("any",)))
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    for raw in (genuine.to_bytes(settings.snapshot_key), forged.to_bytes("x" * 40), b"not a snapshot",
                other_model.to_bytes(settings.snapshot_key)):
        producer.send(settings.snapshots_topic, key=MODEL.encode(), value=raw)
    producer.flush()
    producer.close()

    latest, end = read_latest(settings, MODEL)
    assert latest is not None and latest.label == f"{MODEL}-v3"
    assert end == 4


def test_a_restarted_trainer_registers_a_snapshot_left_on_the_topic_only(isolated: Settings) -> None:
    """Killed between its two writes, a trainer leaves its newest snapshot on the topic (scorers swap
    to it) but not in the registry; the next trainer resumes from it and registers it."""
    from kafka import KafkaProducer

    from models.risk import RiskModel
    from models.snapshot_topic import MAX_SNAPSHOT_BYTES, ensure_topic
    from models.snapshots import Snapshot
    from models.trainer_service import TrainerService

    settings = _topology_settings(isolated)
    orphan = Snapshot(MODEL, 3, 1_767_225_600_000, 450, {}, RiskModel(seed=1))
    ensure_topic(settings)
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, max_request_size=MAX_SNAPSHOT_BYTES)
    producer.send(settings.snapshots_topic, key=MODEL.encode(), value=orphan.to_bytes(settings.snapshot_key)).get(30)
    producer.close()
    assert _registry(settings) == []
    service = TrainerService(settings)
    service.start()
    service.close()
    assert service.resumed_from == orphan.label
    assert _registry(settings) == [(3, 450)]
