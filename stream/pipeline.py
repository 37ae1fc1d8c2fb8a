"""The pipeline's pure core: device messages in; dead letters, closed windows and scores out.

No Kafka, no database, no clock: the Faust agent (:mod:`stream.app`) and the tests drive the
same object, handing in each record's bytes, partition, offset and record timestamp, and
deciding themselves when a partition has been idle long enough to close.

Examples
--------
>>> from stream.wire import encode_device_message
>>> core = VitalsPipeline(window_ms=60_000, grace_ms=0, max_future_ms=60_000, carry_ms=3_600_000)
>>> raw = encode_device_message(device_id="d1", patient_id="pt-1", seq=1, sent_at=61_000,
...     readings=[("heart_rate", 1_000, 70.0), ("heart_rate", 61_000, 75.0)])
>>> step = core.on_message(raw, partition=0, offset=0, record_ts_ms=61_000)
>>> step.readings, [(w.start_ms, w.metrics["heart_rate"].count) for w in step.windows]
(2, [(0, 1)])
>>> core.on_message(b"oops", partition=0, offset=1, record_ts_ms=61_000).dead_letters[0].reason
'not_json'
>>> core.low_offset(0)
0
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from stream.errors import InvalidMessage
from stream.events import DeadLetter, RiskScore, VitalReading, WindowFeatures
from stream.scoring import News2WindowScorer
from stream.settings import Settings
from stream.windows import PartitionWindows
from stream.wire import decode_device_message


@dataclass(slots=True)
class StepResult:
    """What one message (or one idle close) produced."""

    readings: int = 0
    late: int = 0
    dead_letters: list[DeadLetter] = field(default_factory=list)
    windows: list[WindowFeatures] = field(default_factory=list)
    scores: list[RiskScore] = field(default_factory=list)


class VitalsPipeline:
    """Validation, per-partition event-time windows and NEWS2 scoring for one worker.

    Parameters
    ----------
    window_ms, grace_ms
        Tumbling window length and allowed lateness, event-time milliseconds.
    max_future_ms
        Readings this far after their record's timestamp are rejected.
    carry_ms
        How long a vital's last window mean may stand in for a missing one in NEWS2.
    """

    def __init__(self, *, window_ms: int, grace_ms: int, max_future_ms: int, carry_ms: int) -> None:
        self.window_ms = window_ms
        self.grace_ms = grace_ms
        self.max_future_ms = max_future_ms
        self._partitions: dict[int, PartitionWindows] = {}
        self._scorer = News2WindowScorer(carry_ms=carry_ms)

    @classmethod
    def from_settings(cls, settings: Settings) -> "VitalsPipeline":
        return cls(window_ms=settings.window_ms, grace_ms=settings.grace_ms,
                   max_future_ms=settings.max_future_ms, carry_ms=settings.news2_carry_ms)

    @property
    def open_windows(self) -> int:
        return sum(len(w) for w in self._partitions.values())

    def on_message(self, raw: bytes, *, partition: int, offset: int, record_ts_ms: int | None) -> StepResult:
        """Validate one record, window its readings, and emit what the watermark closes."""
        step = StepResult()
        try:
            good, step.dead_letters = decode_device_message(raw, reference_ms=record_ts_ms,
                                                            max_future_ms=self.max_future_ms)
        except InvalidMessage as exc:
            step.dead_letters.append(DeadLetter(exc.reason, exc.detail, raw))
            return step
        windows = self._windows(partition)
        for reading in good:
            if windows.add(reading, offset=offset):
                step.readings += 1
            else:
                step.late += 1
                step.dead_letters.append(_late(reading, windows))
        self._emit(windows.close_ready(), step)
        return step

    def close_partition(self, partition: int) -> StepResult:
        """Close every open window of an idle partition (its devices went quiet)."""
        step = StepResult()
        windows = self._partitions.get(partition)
        if windows is not None:
            self._emit(windows.close_all(), step)
        return step

    def low_offset(self, partition: int) -> int | None:
        """Lowest offset still needed by an open window of ``partition``; ``None`` if none is."""
        windows = self._partitions.get(partition)
        return None if windows is None else windows.low_offset()

    def drop_partition(self, partition: int) -> None:
        """Forget a partition this worker no longer owns; its next owner replays it."""
        self._partitions.pop(partition, None)

    def _windows(self, partition: int) -> PartitionWindows:
        windows = self._partitions.get(partition)
        if windows is None:
            windows = self._partitions[partition] = PartitionWindows(window_ms=self.window_ms,
                                                                     grace_ms=self.grace_ms)
        return windows

    def _emit(self, closed: list[WindowFeatures], step: StepResult) -> None:
        step.windows.extend(closed)
        for window in closed:
            score = self._scorer.score(window)
            if score is not None:
                step.scores.append(score)


def _late(reading: VitalReading, windows: PartitionWindows) -> DeadLetter:
    payload = json.dumps({"device_id": reading.device_id, "patient_id": reading.patient_id, "seq": reading.seq,
                          "reading": {"metric": reading.metric, "t": reading.ts_ms, "value": reading.value}},
                         separators=(",", ":")).encode()
    return DeadLetter("late", f"t={reading.ts_ms} is behind the closed windows (closed before "
                              f"{windows.closed_before_ms}, grace {windows.grace_ms} ms)", payload)
