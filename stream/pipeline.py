"""The pipeline's pure core: device messages in; dead letters, windows, features and scores out.

No Kafka, no database, no clock: the Faust agent (:mod:`stream.app`) and the in-process
runner hand in each record's bytes, partition, offset and record timestamp, decide themselves
when a partition has been idle long enough to close, and call :meth:`VitalsPipeline.checkpoint`
once the outputs are durable.

State that must outlive the process goes through a :class:`~stream.state.StateStore`: each
patient's features state and each partition's window checkpoint (watermark, closed-before
mark, last offset processed). After a restart the core reloads them lazily and the source is
replayed from the committed offset: records at or below the checkpoint's offset are replays,
whose dead letters and late readings were already accounted for and are not reported again.

Examples
--------
>>> from kernel.wire import encode_device_message
>>> core = VitalsPipeline(window_ms=60_000, grace_ms=0, max_future_ms=60_000, carry_ms=3_600_000)
>>> raw = encode_device_message(device_id="d1", patient_id="pt-1", seq=1, sent_at=61_000,
...     readings=[("heart_rate", 1_000, 70.0), ("heart_rate", 61_000, 75.0)])
>>> step = core.on_message(raw, partition=0, offset=0, record_ts_ms=61_000)
>>> step.readings, [(w.start_ms, w.metrics["heart_rate"].count) for w in step.windows]
(2, [(0, 1)])
>>> core.on_message(raw, partition=0, offset=1, record_ts_ms=61_000).duplicates
1
>>> core.on_message(b"oops", partition=0, offset=2, record_ts_ms=61_000).dead_letters[0].reason
'not_json'
>>> core.low_offset(0)
0
"""

from __future__ import annotations

import struct
from collections import Counter, OrderedDict
from dataclasses import dataclass, field

from stream.deadletters import as_bytes
from kernel.errors import InvalidMessage
from kernel.events import HOP_MS, DeadLetter, FeatureRow, RiskScore, WindowFeatures
from stream.features import FeatureEngine, PatientState
from kernel.limits import DEFAULT_LIMITS, Limits
from stream.scoring import news2_for_window
from kernel.settings import Settings
from stream.state import DictStore, StateStore
from stream.windows import PartitionWindows
from kernel.wire import DeviceBatch, decode_device_message, decode_valid_device_message

#: How many recent sequence numbers per device are remembered for de-duplication. Older
#: resends reach closed windows and are rejected as late instead.
SEQ_MEMORY = 256
_SEQ_BITS = (1 << SEQ_MEMORY) - 1
_CHECKPOINT = struct.Struct("<qqq")
_NONE = -(2**63)


@dataclass(slots=True)
class StepResult:
    """What one message (or one idle close) produced."""

    readings: int = 0
    late: int = 0
    duplicates: int = 0
    dead_letters: list[DeadLetter] = field(default_factory=list)
    windows: list[WindowFeatures] = field(default_factory=list)
    scores: list[RiskScore] = field(default_factory=list)
    features: list[FeatureRow] = field(default_factory=list)
    stopped: list[tuple[str, int]] = field(default_factory=list)  # (patient, last reading ms)
    devices_forgotten: int = 0  # devices whose sequence numbers were dropped (least recently seen)


@dataclass(slots=True)
class _Partition:
    windows: PartitionWindows
    replayed_through: int = -1  # offsets at or below were processed before the restart
    last_offset: int = -1
    # device -> (max seq, bitmask), least recently seen first; at most Limits.max_devices
    seqs: OrderedDict[str, tuple[int, int]] = field(default_factory=OrderedDict)
    dirty: set[str] = field(default_factory=set)  # patients changed since the last checkpoint


class VitalsPipeline:
    """Validation, de-duplication, event-time windows, features and NEWS2 for one worker.

    Parameters
    ----------
    window_ms, grace_ms
        Tumbling window length and allowed lateness, event-time milliseconds.
    max_future_ms
        Allowed clock skew: readings this far after their record's time (and after the clock
        handed in as ``now_ms``) are rejected, so no watermark runs further ahead of real time.
    carry_ms
        How long a vital's last window mean may stand in for a missing one in NEWS2.
    data_stopped_ms
        Event time without readings after which a patient is reported as stopped.
    patient_idle_ms
        Event time without readings after which a patient's state is forgotten.
    store
        Durable state; a :class:`~stream.state.DictStore` when omitted.
    limits
        What one record may hold, and how many devices a partition remembers
        (:class:`~kernel.limits.Limits`).
    """

    def __init__(self, *, window_ms: int, grace_ms: int, max_future_ms: int, carry_ms: int,
                 data_stopped_ms: int = 30 * 60_000, patient_idle_ms: int = 7 * 24 * 3_600_000,
                 store: StateStore | None = None, limits: Limits = DEFAULT_LIMITS) -> None:
        self.window_ms = window_ms
        self.grace_ms = grace_ms
        self.max_future_ms = max_future_ms
        self.carry_ms = carry_ms
        self.data_stopped_ms = data_stopped_ms
        self.patient_idle_ms = patient_idle_ms
        self.store: StateStore = store if store is not None else DictStore()
        self.limits = limits
        self.features = FeatureEngine()
        self._partitions: dict[int, _Partition] = {}

    @classmethod
    def from_settings(cls, settings: Settings, *, store: StateStore | None = None) -> VitalsPipeline:
        return cls(window_ms=settings.window_ms, grace_ms=settings.grace_ms, max_future_ms=settings.max_future_ms,
                   carry_ms=settings.news2_carry_ms, data_stopped_ms=settings.data_stopped_ms, store=store,
                   limits=Limits.from_settings(settings))

    @property
    def open_windows(self) -> int:
        return sum(len(p.windows) for p in self._partitions.values())

    def watermark_ms(self, partition: int) -> int | None:
        part = self._partitions.get(partition)
        return None if part is None else part.windows.watermark_ms

    def on_message(self, raw: bytes | None, *, partition: int, offset: int, record_ts_ms: int | None,
                   now_ms: int | None = None) -> StepResult:
        """Validate one record, window its readings, and emit what the watermark closes.

        ``record_ts_ms`` is the record's time (the broker's append time on the readings topic),
        ``now_ms`` the caller's clock, if it has one: readings more than ``max_future_ms`` after
        the earlier of the two are refused as ``future_timestamp``, so a sender's clock, or a
        record time it set itself, cannot move the watermark ahead of real time. A record
        refused in whole or in part gives one dead letter carrying its original bytes once.
        """
        step = StepResult()
        part = self._partition(partition)
        replay = offset <= part.replayed_through
        part.last_offset = max(part.last_offset, offset)
        reference = record_ts_ms if now_ms is None or (record_ts_ms is not None and record_ts_ms <= now_ms) \
            else now_ms
        # The typed fast path (msgspec, in C) answers a valid message; anything else takes the
        # strict reader, which names the fault (the same batch either way: kernel.wire).
        batch = decode_valid_device_message(raw, reference_ms=reference, max_future_ms=self.max_future_ms,
                                            limits=self.limits)
        if batch is None:
            try:
                batch = decode_device_message(raw, reference_ms=reference, max_future_ms=self.max_future_ms,
                                              limits=self.limits)
            except InvalidMessage as exc:
                if not replay:
                    step.dead_letters.append(DeadLetter(reason=exc.reason, detail=exc.detail,
                                                        payload=as_bytes(raw)))
                return step
        seqs = part.seqs
        if not _first_time(seqs, batch.device_id, batch.seq):
            step.duplicates += 1
            return step
        while len(seqs) > self.limits.max_devices:
            seqs.popitem(last=False)  # the least recently seen device: its next message counts as new
            step.devices_forgotten += 1
        windows = part.windows
        late = windows.add_many(batch.patient_id, batch.points, offset=offset)
        step.readings = len(batch.points) - len(late)
        if (late or batch.rejected) and not replay:
            step.late = len(late)
            step.dead_letters.append(_refused_readings(as_bytes(raw), batch, late, windows, accepted=step.readings))
        before = windows.closed_before_ms  # read before closing moves it to the watermark
        self._emit(partition, part, windows.close_ready(), step, before_ms=before)
        return step

    def close_partition(self, partition: int) -> StepResult:
        """Close every open window of an idle partition (its devices went quiet)."""
        step = StepResult()
        part = self._partitions.get(partition)
        if part is not None:
            before = part.windows.closed_before_ms
            self._emit(partition, part, part.windows.close_all(), step, before_ms=before)
        return step

    def low_offset(self, partition: int) -> int | None:
        """Lowest offset still needed by an open window of ``partition``; ``None`` if none is."""
        part = self._partitions.get(partition)
        return None if part is None else part.windows.low_offset()

    def checkpoint(self, partition: int) -> list[tuple[str, bytes | None]]:
        """The partition's state as it stands, as ``(key, value)`` writes for :meth:`save`.

        Take it together with the outputs it produced, and :meth:`save` it only once those
        outputs are committed: the saved state then never runs ahead of the database. A value
        of ``None`` deletes the key (an expired patient).

        The partition's watermark record comes last. A changelog partition keeps its records in
        order, so a worker killed while the writes are on their way restores either the new
        watermark with every patient state it belongs with, or the old watermark with some
        patients' states newer than it: never windows marked closed whose patients' states were
        lost. The replay from the old watermark closes again windows that a newer patient state
        already holds; they are skipped (a patient's windows close in time order, so its state's
        last window end says which it holds).
        """
        part = self._partitions.get(partition)
        if part is None:
            return []
        writes: list[tuple[str, bytes | None]] = []
        for patient_id in part.dirty:
            state = self.features.patients.get(patient_id)
            writes.append((f"p:{patient_id}", None if state is None else state.to_bytes()))
        part.dirty.clear()
        w = part.windows
        writes.append((f"w:{partition}", _CHECKPOINT.pack(
            _NONE if w.max_event_ms is None else w.max_event_ms,
            _NONE if w.closed_before_ms is None else w.closed_before_ms, part.last_offset)))
        return writes

    def unsave(self, partition: int, writes: list[tuple[str, bytes | None]]) -> None:
        """Mark a :meth:`checkpoint` that could not be saved as still to save (its batch failed)."""
        part = self._partitions.get(partition)
        if part is not None:
            part.dirty.update(key[2:] for key, _ in writes if key.startswith("p:"))

    def save(self, partition: int, writes: list[tuple[str, bytes | None]]) -> None:
        """Write a :meth:`checkpoint` to the state store."""
        for key, value in writes:
            if value is None:
                self.store.delete(partition, key)
            else:
                self.store.put(partition, key, value)

    def drop_partition(self, partition: int) -> None:
        """Forget a partition this worker no longer owns; its next owner restores and replays it."""
        self._partitions.pop(partition, None)
        for patient_id in [p for p, s in self.features.patients.items() if s.partition == partition]:
            del self.features.patients[patient_id]

    def state_bytes(self) -> dict[str, int]:
        """Serialized size of every patient's state, for measuring the per-patient bound."""
        return {p: len(s.to_bytes()) for p, s in self.features.patients.items()}

    def _partition(self, partition: int) -> _Partition:
        part = self._partitions.get(partition)
        if part is None:
            windows = PartitionWindows(window_ms=self.window_ms, grace_ms=self.grace_ms)
            part = self._partitions[partition] = _Partition(windows)
            saved = self.store.get(f"w:{partition}")
            if saved is not None:
                max_event, closed_before, last_offset = _CHECKPOINT.unpack(saved)
                windows.restore(max_event_ms=None if max_event == _NONE else max_event,
                                closed_before_ms=None if closed_before == _NONE else closed_before)
                part.replayed_through = part.last_offset = last_offset
        return part

    def _patient(self, patient_id: str, partition: int) -> PatientState:
        state = self.features.patients.get(patient_id)
        if state is None:
            saved = self.store.get(f"p:{patient_id}")
            state = PatientState.from_bytes(saved) if saved is not None else PatientState(partition)
            state.partition = partition
            self.features.patients[patient_id] = state
        return state

    def _emit(self, partition: int, part: _Partition, closed: list[WindowFeatures], step: StepResult, *,
              before_ms: int | None) -> None:
        """Features and scores of the ``closed`` windows; once per hop of event time (the
        watermark crossing a hop since ``before_ms``, where closing stood before this step), the
        patients whose data stopped and the idle patients to forget."""
        before = before_ms
        for window in closed:
            state = self._patient(window.patient_id, partition)
            if window.end_ms <= state.last_reading_ms:
                # A replay after a restart: the patient's restored state already holds this
                # window (its checkpoint was saved after these outputs were durable), so
                # folding it in again would count it twice in the panes and the baseline.
                continue
            out = self.features.on_window(window, partition=partition)
            part.dirty.add(window.patient_id)
            enriched = WindowFeatures(patient_id=window.patient_id, start_ms=window.start_ms, end_ms=window.end_ms, metrics=window.metrics,
                                      baseline_z=out.z, baseline_mean=out.baseline)
            step.windows.append(enriched)
            step.features.extend(out.rows)
            score = news2_for_window(enriched, state.last_known, carry_ms=self.carry_ms)
            if score is not None:
                step.scores.append(score)
        watermark = part.windows.watermark_ms
        if closed and watermark is not None and before is not None and \
                watermark // HOP_MS != before // HOP_MS:  # once per hop of event time
            step.stopped.extend(self.features.stopped(partition, watermark, after_ms=self.data_stopped_ms))
            for patient_id in self.features.expire(partition, watermark, idle_ms=self.patient_idle_ms):
                part.dirty.add(patient_id)


def _first_time(seqs: OrderedDict[str, tuple[int, int]], device_id: str, seq: int) -> bool:
    """Record ``seq`` for ``device_id``; ``False`` if it was seen among the recent ones. The
    device becomes the most recently seen.

    >>> seen: OrderedDict[str, tuple[int, int]] = OrderedDict()
    >>> [_first_time(seen, "d", s) for s in (5, 3, 5, 3, 4, 6)]
    [True, True, False, False, True, True]
    """
    entry = seqs.get(device_id)
    if entry is None:
        seqs[device_id] = (seq, 1)
        return True
    seqs.move_to_end(device_id)
    top, mask = entry
    if seq > top:
        shift = seq - top
        mask = ((mask << shift) | 1) & _SEQ_BITS if shift < SEQ_MEMORY else 1
        seqs[device_id] = (seq, mask)
        return True
    age = top - seq
    if age >= SEQ_MEMORY:
        return True  # too old to remember; its windows are closed, so it is rejected as late
    bit = 1 << age
    if mask & bit:
        return False
    seqs[device_id] = (top, mask | bit)
    return True


def _refused_readings(raw: bytes, batch: DeviceBatch, late: list[tuple[str, int, float]],
                      windows: PartitionWindows, *, accepted: int) -> DeadLetter:
    """One dead letter for a message's refused readings: their count by reason, the first one's
    detail, the message's bytes once."""
    reasons = Counter(r.reason for r in batch.rejected)
    if late:
        reasons["late"] += len(late)
    if batch.rejected:
        first = batch.rejected[0]
        reason, detail = first.reason, f"reading {first.index}: {first.detail}"
    else:
        reason, detail = "late", (f"t={late[0][1]} is behind the closed windows (closed before "
                                  f"{windows.closed_before_ms}, grace {windows.grace_ms} ms)")
    refused = sum(reasons.values())
    if refused > 1:
        detail += f" (and {refused - 1} more refused)"
    return DeadLetter(reason=reason, detail=detail, payload=raw, reasons=dict(reasons), accepted=accepted, device_id=batch.device_id, patient_id=batch.patient_id)
