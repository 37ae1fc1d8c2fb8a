"""``vitalrisk trainer``: the one process that learns, and publishes what every scorer uses.

Adapter around the pure :class:`models.online.OnlineLearner`:

- **in**: the workers' feature rows (``vitals.features``) and the outcome events
  (``vitals.outcomes``), read with kafka-python without a consumer group (one trainer per
  model, which owns every partition);
- **out**: each snapshot, signed, to the compacted snapshots topic (which the workers follow to
  hot-swap) and to the ``model_registry`` table; outcomes to the ``outcomes`` table (Grafana's
  patient annotations); drift events to ``ops_events``; live prequential metrics to Prometheus.

**Restart.** At start the trainer takes the newest verified snapshot of its model from the
topic (the registry if the topic has none), resumes its model and version from it, reads every
outcome again, then the feature rows from the snapshot's ``resume`` offsets, skipping rows it
had already learned (see :mod:`models.online`). Without a snapshot it starts a fresh model.
The workers keep scoring with the snapshot they hold meanwhile: a trainer restart pauses
learning, never scoring.

**Broker outage.** Once running, the trainer rides out a Kafka outage in place: a failed
Kafka call (the end offsets it asks for, a snapshot's publish) ends the step, and
:meth:`TrainerService.run` retries with :class:`kernel.backoff.Backoff` until the broker is
back, keeping everything it holds (model, labeller, read-but-unoffered rows, snapshots not yet
acknowledged, which are published in order once it answers). It logs one line when the outage
starts and one when it ends, and keeps ``vitals_kafka_up{client="trainer"}`` and
``vitals_kafka_outages_total`` current.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import signal
import time
from collections import deque
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import psycopg

from models.errors import InvalidOutcome
from models.labelling import Outcome
from models.online import OnlineLearner
from models.risk import RiskModel
from models.snapshot_topic import MAX_SNAPSHOT_BYTES, ensure_topic, model_name, read_latest
from models.snapshots import Snapshot, signing_key
from sinks import registry
from sinks.errors import RegistryError
from sinks.metrics import KafkaHealth, KafkaMetrics, ModelMetrics, serve_metrics
from sinks.rows import utc
from sinks.timescale import write_ops_events, write_outcomes
from kernel.backoff import Backoff
from kernel.errors import InvalidMessage, ServiceUnavailable, VitalsError, first_line
from kernel.events import FeatureRow, OpsEvent
from infra.preflight import require_database, require_kafka
from kernel.kafka_security import kafka_python_options
from kernel.settings import TRAINER_ROLE, Settings
from models.patient_context import parse_inputs
from models.patient_topic import apply_records
from kernel.wire import decode_feature_row

logger = logging.getLogger(__name__)

#: How long the trainer waits for the input topics to exist before it gives up, seconds.
TOPIC_WAIT_S = 120.0
#: How often the per-subgroup gauges are recomputed, seconds.
FAIRNESS_PUBLISH_S = 5.0
#: Rows this far ahead (event time) of the slowest partition's are held back until it catches up:
#: their patients' windows wait for the watermark, and the labeller holds only so many.
MAX_SKEW_MS = 30 * 60_000
#: How long one snapshot publish waits for the broker's acknowledgement before the step ends
#: (the send stays in flight and is waited for again on the next attempt), seconds.
PUBLISH_WAIT_S = 10.0
#: Retry schedule while Kafka is unavailable: never gives up (the trainer's state is worth keeping).
KAFKA_BACKOFF = Backoff(first_s=0.5, max_s=5.0, give_up_s=None)
#: A Kafka request (the end offsets) not answered within this long fails the step, ms.
KAFKA_REQUEST_TIMEOUT_MS = 10_000
#: Longest wait between two reconnection attempts to a broker that went away, ms.
RECONNECT_BACKOFF_MAX_MS = 2_000


class TrainerService:
    """One trainer: restore, then :meth:`step` until stopped.

    Parameters
    ----------
    settings
        Kafka, database, model and labelling settings.
    metrics
        Prometheus gauges and counters to keep current, if any.
    kafka_metrics
        Where to report Kafka outages (``vitals_kafka_up{client="trainer"}``), if anywhere.
    backoff
        The retry schedule while Kafka is unavailable.
    """

    def __init__(self, settings: Settings, *, metrics: ModelMetrics | None = None,
                 kafka_metrics: KafkaMetrics | None = None, backoff: Backoff = KAFKA_BACKOFF,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        self.metrics = metrics
        self.kafka = KafkaHealth("trainer", kafka_metrics)
        self._backoff = backoff
        self._sleep = sleep
        self._unpublished: deque[Snapshot] = deque()  # made, not yet acknowledged by the broker
        self._in_flight: Any = None  # the send future of the head of _unpublished, if sent
        self.name = model_name(settings)
        self._key = signing_key(settings.snapshot_key)  # fail before connecting to anything
        self._stopping = False
        self._unregistered: list[Snapshot] = []
        self._outcome_rows: list[tuple[str, str, datetime, datetime]] = []
        self._ops_events: list[OpsEvent] = []
        self.snapshots: list[str] = []
        self.resumed_from: str | None = None
        self._examples_reported = 0
        self._fairness_published = 0.0
        self._ends: dict[Any, int] = {}
        self._held: dict[int, deque[tuple[int, FeatureRow]]] = {}  # read, not yet offered
        self._read_ts: dict[int, int] = {}  # newest row time read per partition
        self._ends_at = -1.0

    # -- set-up ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Restore from the newest snapshot, connect, and position the consumer."""
        from kafka import KafkaConsumer, KafkaProducer, TopicPartition

        s = self.settings
        latest = self._latest_snapshot()
        model = latest.model if latest is not None else RiskModel(s.model, s.model_seed)
        self.learner = OnlineLearner(
            model, name=self.name, horizon_ms=s.label_horizon_ms, outcome_grace_ms=s.outcome_grace_ms,
            snapshot_every=s.snapshot_every, snapshot_every_ms=s.snapshot_every_ms,
            first_version=latest.version + 1 if latest is not None else 1, alert_threshold=s.alert_risk_enter,
            learned_before_ms=latest.resume.get("learned_before_ms") if latest is not None else None,
            resumed_at_ms=latest.created_at_ms if latest is not None else None,
            news2_carry_ms=s.news2_carry_ms, patient_inputs=parse_inputs(s.model_patient_inputs))
        if latest is not None:
            self.resumed_from = latest.label
            logger.info("resuming %s from %s (%d examples seen)", self.name, latest.label, latest.examples_seen)
        else:
            logger.info("no snapshot of %s yet: starting a fresh %s model", self.name, s.model)
        self.consumer = KafkaConsumer(bootstrap_servers=s.kafka_bootstrap, group_id=None, enable_auto_commit=False,
                                      client_id=f"vitalrisk-trainer-{self.name}", max_poll_records=1_000,
                                      request_timeout_ms=KAFKA_REQUEST_TIMEOUT_MS,
                                      reconnect_backoff_max_ms=RECONNECT_BACKOFF_MAX_MS, **kafka_python_options(s))
        self.producer = KafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all",
                                      max_request_size=MAX_SNAPSHOT_BYTES, client_id=f"vitalrisk-trainer-{self.name}",
                                      reconnect_backoff_max_ms=RECONNECT_BACKOFF_MAX_MS, **kafka_python_options(s))
        features = [TopicPartition(s.features_topic, p) for p in self._partitions(s.features_topic)]
        outcomes = [TopicPartition(s.outcomes_topic, p) for p in self._partitions(s.outcomes_topic)]
        patients = [TopicPartition(s.patients_topic, p) for p in self._partitions(s.patients_topic, required=False)]
        self.consumer.assign(features + outcomes + patients)
        resume = latest.resume.get("features", {}) if latest is not None else {}
        for tp in features:
            if str(tp.partition) in resume:
                self.consumer.seek(tp, int(resume[str(tp.partition)]))
            else:
                self.consumer.seek_to_beginning(tp)
        for tp in outcomes + patients:
            self.consumer.seek_to_beginning(tp)
        self._features_tps = features
        self._replay_outcomes(outcomes + patients)
        self.db = psycopg.connect(s.database_url, autocommit=True, connect_timeout=10,
                                  application_name=f"vitalrisk-trainer-{self.name}")
        if latest is not None and latest.version not in {v.version for v in registry.versions(self.db, self.name)}:
            # Killed between its two writes, the last trainer left this version on the topic, where
            # scorers swap to it, but not in the registry: register it, or its scores name a model
            # nobody can look up.
            logger.info("registering %s, which is on the topic but not in the registry", latest.label)
            self._unregistered.insert(0, latest)

    def _latest_snapshot(self) -> Snapshot | None:
        latest, _ = read_latest(self.settings, self.name)
        if latest is not None:
            return latest
        try:
            with psycopg.connect(self.settings.database_url, connect_timeout=10) as conn:
                return Snapshot.from_bytes(registry.load(conn, self.name), self._key)
        except RegistryError:
            return None

    def _partitions(self, topic: str, *, required: bool = True) -> list[int]:
        deadline = time.monotonic() + TOPIC_WAIT_S
        while True:
            partitions = self.consumer.partitions_for_topic(topic)
            if partitions:
                return sorted(partitions)
            if not required:
                logger.warning("topic %s does not exist: no diagnoses or subgroups, so no live fairness monitor", topic)
                return []
            if time.monotonic() > deadline:
                raise VitalsError(f"topic {topic} does not exist after {TOPIC_WAIT_S:.0f} s: "
                                  "start the workers (they create it) or `vitalrisk infra start`")
            logger.info("waiting for topic %s", topic)
            time.sleep(1.0)

    def _replay_outcomes(self, side_inputs: list[Any]) -> None:
        """Read every outcome and patient record up to now before offering any feature row.

        Replayed windows need their labels, the model the patients' diagnoses and the fairness
        monitor their subgroups; feature rows fetched meanwhile wait, read but not offered.
        """
        end = self.consumer.end_offsets(side_inputs)
        while any(self.consumer.position(tp) < end[tp] for tp in side_inputs):
            for tp, records in self.consumer.poll(timeout_ms=1000).items():
                self._take(tp, records)

    # -- the loop -------------------------------------------------------------------------------

    def run(self) -> None:
        """Step until :meth:`stop` (SIGTERM, SIGINT); ride out Kafka outages with :data:`KAFKA_BACKOFF`."""
        from kafka.errors import KafkaError

        retries = None
        while not self._stopping:
            try:
                self.step()
            except KafkaError as exc:
                reason = first_line(exc)
                self.kafka.failed(reason if type(exc).__name__ in reason else f"{type(exc).__name__}: {reason}")
                if retries is None:
                    retries = self._backoff.start(now_s=time.monotonic(), rng=random.Random())
                delay = retries.next_delay(now_s=time.monotonic())
                self._pause(delay if delay is not None else self._backoff.max_s)
                continue
            retries = None
        self.close()

    def _pause(self, seconds: float) -> None:
        """Sleep ``seconds``, waking early when stopped."""
        left = seconds
        while not self._stopping and left > 0:
            self._sleep(min(left, 0.25))
            left -= 0.25

    def stop(self) -> None:
        self._stopping = True

    def step(self, timeout_ms: int = 500) -> int:
        """Read one batch, learn what became final, publish any snapshot; return records read.

        Raises
        ------
        kafka.errors.KafkaError
            Kafka did not answer (end offsets, a snapshot's acknowledgement): nothing held is
            lost, and the next step carries on from where this one stopped.
        """
        self._send_snapshots()  # any the last step could not publish, first and in order
        caught_up = self._caught_up()  # before the poll: nothing more was there to read
        batches = self.consumer.poll(timeout_ms=timeout_ms)
        count = 0
        # Outcomes and patients first: they label windows the same batch's rows might otherwise release.
        features = self.settings.features_topic
        for tp, records in sorted(batches.items(), key=lambda item: (item[0].topic == features,
                                                                     item[0].topic, item[0].partition)):
            count += len(records)
            self._take(tp, records)
        caught_up = self._caught_up()
        self._offer_aligned(caught_up)
        watermark = self.learner.watermark(caught_up=caught_up)
        if watermark is not None:
            self._absorb(*self.learner.advance(watermark))
        self._flush_db()
        self._publish_metrics()
        return count

    def _take(self, tp: Any, records: list[Any]) -> None:
        """Side inputs straight to the learner; feature rows decoded and held for :meth:`_offer_aligned`."""
        if tp.topic != self.settings.features_topic:
            self._side_input(tp.topic, records)
            return
        held = self._held.setdefault(tp.partition, deque())
        for record in records:
            try:
                row = decode_feature_row(record.value)
            except InvalidMessage as exc:
                logger.warning("feature row at %s[%d]@%d unreadable: %s", tp.topic, tp.partition,
                               record.offset, exc.detail)
                continue
            held.append((record.offset, row))
            if row.ts_ms > self._read_ts.get(tp.partition, row.ts_ms - 1):
                self._read_ts[tp.partition] = row.ts_ms

    def _offer_aligned(self, caught_up: frozenset[int]) -> None:
        """Offer the rows read so far, holding back those more than :data:`MAX_SKEW_MS` ahead.

        Kafka hands over partitions unevenly (a catch-up fetch may bring hours of one partition
        before a minute of another); a row far ahead of the slowest partition would make its
        patient's windows wait for the watermark longer than the labeller holds them. Such rows
        wait here instead, read but not yet offered — and a restart reads them again, since the
        resume offsets count only offered rows.
        """
        behind = [ts for p, ts in self._read_ts.items() if p not in caught_up]
        slowest = min(behind, default=None)
        for partition, held in sorted(self._held.items()):
            while held and (slowest is None or held[0][1].ts_ms <= slowest + MAX_SKEW_MS):
                offset, row = held.popleft()
                self._absorb(*self.learner.offer(row, partition=partition, offset=offset, caught_up=caught_up))

    def _absorb(self, events: list[OpsEvent], snapshot: Snapshot | None) -> None:
        self._record_events(events)
        if snapshot is not None:
            self._publish(snapshot)

    def _caught_up(self) -> frozenset[int]:
        """Feature partitions read to their end: they do not hold the watermark back.

        The end offsets are asked of the broker (at most once a second): the consumer's own
        high-water marks are unknown for partitions it has not fetched from lately, and a stale
        "not at the end" would stall the watermark.
        """
        now = time.monotonic()
        if now - self._ends_at >= 1.0:
            self._ends = self.consumer.end_offsets(self._features_tps)
            self._ends_at = now
            self.kafka.ok()
        return frozenset(tp.partition for tp in self._features_tps
                         if self.consumer.position(tp) >= self._ends.get(tp, 0))

    def _side_input(self, topic: str, records: Iterable[Any]) -> None:
        if topic == self.settings.outcomes_topic:
            self._outcomes(records)
            return
        apply_records(records, self.learner.on_patient, self.learner.forget_patient)

    def _outcomes(self, records: Iterable[Any]) -> None:
        for record in records:
            try:
                outcome = Outcome.from_bytes(record.value)
            except InvalidOutcome as exc:
                logger.warning("outcome record at offset %d rejected: %s", record.offset, exc)
                continue
            self.learner.on_outcome(outcome)
            self._outcome_rows.append((outcome.patient_id, outcome.kind, utc(outcome.onset_ms), utc(outcome.t_ms)))

    def _record_events(self, events: list[OpsEvent]) -> None:
        for event in events:
            logger.warning("%s event on %s at %s: %s", event.kind, self.name, utc(event.ts_ms).isoformat(),
                           event.details)
            # One row per gap: the subject names what drifted apart (the key is kind, subject, time).
            subject = ":".join([self.name, *(str(event.details[k]) for k in ("scorer", "metric", "attribute")
                                             if k in event.details)])
            self._ops_events.append(dataclasses.replace(event, subject=subject))
            if self.metrics is not None:
                if event.kind == "drift":
                    self.metrics.drift_events.labels(self.name).inc()
                self.metrics.ops_events.labels(event.kind).inc()

    def _publish(self, snapshot: Snapshot) -> None:
        """Topic first (scorers swap from it), then the registry (audit; retried until it lands)."""
        self._unpublished.append(snapshot)
        self._send_snapshots()

    def _send_snapshots(self) -> None:
        """Publish the waiting snapshots in order, each acknowledged before the next is sent.

        A send the broker has not acknowledged within :data:`PUBLISH_WAIT_S` stays in flight and
        is waited for again on the next call; one that failed is sent again (a snapshot on the
        topic twice is harmless: scorers swap only to a newer version).
        """
        from kafka.errors import KafkaTimeoutError

        while self._unpublished:
            snapshot = self._unpublished[0]
            raw = snapshot.to_bytes(self._key)
            if self._in_flight is None:
                self._in_flight = self.producer.send(self.settings.snapshots_topic, key=self.name.encode(), value=raw)
            try:
                self._in_flight.get(timeout=PUBLISH_WAIT_S)
            except KafkaTimeoutError:
                if not self._in_flight.is_done:
                    raise  # still in flight: wait for it again next time
                self._in_flight = None
                raise
            except BaseException:
                self._in_flight = None  # failed for good: send it again next time
                raise
            self._in_flight = None
            self._unpublished.popleft()
            self.kafka.ok()
            self.snapshots.append(snapshot.label)
            logger.info("published %s (%d examples seen, %d bytes)", snapshot.label, snapshot.examples_seen,
                        len(raw))
            self._unregistered.append(snapshot)

    def _flush_db(self) -> None:
        """Registry rows, outcomes and ops events; kept for the next step if the database is down."""
        if not (self._unregistered or self._outcome_rows or self._ops_events):
            return
        try:
            if self.db.closed:
                self.db = psycopg.connect(self.settings.database_url, autocommit=True, connect_timeout=10)
            while self._unregistered:
                self._register(self._unregistered[0])
                self._unregistered.pop(0)
            if self._outcome_rows:
                write_outcomes(self.db, self._outcome_rows)
                self._outcome_rows.clear()
            if self._ops_events:
                write_ops_events(self.db, self._ops_events)
                self._ops_events.clear()
        except psycopg.OperationalError as exc:
            logger.warning("database unavailable (%s); will retry", str(exc).splitlines()[0])

    def _register(self, snapshot: Snapshot) -> None:
        """Its signed bytes into the registry (:mod:`sinks.registry`), with what the registry lists."""
        version = registry.ModelVersion(name=snapshot.name, version=snapshot.version, created_ms=snapshot.created_at_ms,
                                        examples_seen=snapshot.examples_seen, metrics=snapshot.metrics)
        registry.register(self.db, version, snapshot.to_bytes(self._key))

    def _publish_metrics(self) -> None:
        m = self.metrics
        if m is None:
            return
        m.model_version.labels(self.name).set(self.learner.trainer.version)
        m.pending_labels.set(self.learner.labeller.pending)
        seen = self.learner.trainer.examples_seen
        m.trainer_examples.labels(self.name).inc(max(0, seen - self._examples_reported))
        self._examples_reported = seen
        self.learner.evaluator.publish(m)
        if self.learner.groups and time.monotonic() - self._fairness_published >= FAIRNESS_PUBLISH_S:
            self.learner.fairness.publish(m)
            self._fairness_published = time.monotonic()

    def close(self) -> None:
        self._flush_db()
        if self._unpublished:
            logger.warning("stopping with %d snapshots unpublished (Kafka unavailable): the next trainer "
                           "resumes from %s and learns them again", len(self._unpublished),
                           self.snapshots[-1] if self.snapshots else "the start")
        for closing in (self.consumer.close, lambda: self.producer.close(timeout=5), self.db.close):
            try:
                closing()
            except Exception:  # noqa: BLE001 - best effort on the way out
                logger.debug("error while closing", exc_info=True)


def run_trainer(settings: Settings) -> int:
    """Block running the trainer until SIGTERM or SIGINT; return its exit status.

    Raises
    ------
    SnapshotKeyMissing
        No usable ``VITALS_SNAPSHOT_KEY``.
    ServiceUnavailable
        Kafka or PostgreSQL does not answer before the start, or stops answering while the
        trainer restores and positions itself (a failure later is retried or ends the run).
    PortInUse
        The metrics port is taken.
    """
    from kafka.errors import KafkaError
    from prometheus_client import CollectorRegistry

    settings = settings.for_service(TRAINER_ROLE)
    metrics_registry = CollectorRegistry()
    service = TrainerService(settings, metrics=ModelMetrics(metrics_registry),
                             kafka_metrics=KafkaMetrics(metrics_registry))
    serve_metrics(settings, metrics_registry)  # first: a taken port is this machine's to fix, whatever else is down
    require_kafka(settings)
    require_database(settings.database_url)
    try:
        ensure_topic(settings)
        service.start()
    except KafkaError as exc:
        raise ServiceUnavailable(f"Kafka at {settings.kafka_bootstrap} failed while the trainer started "
                                 f"({type(exc).__name__}: {first_line(exc)}); "
                                 "check it with `vitalrisk infra status`") from None
    except psycopg.OperationalError as exc:
        raise ServiceUnavailable(f"PostgreSQL failed while the trainer started ({first_line(exc)}); "
                                 "check it with `vitalrisk infra status`") from None
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: service.stop())
    service.run()
    logger.info("trainer stopped after %s", service.snapshots[-1] if service.snapshots else "no snapshot")
    return 0
