"""The trainer: learns labelled windows in a deterministic order and publishes snapshots.

There is one trainer per model (one population model, many scorers). It receives windows whose
labels are final (:class:`models.labelling.LabelledWindow`), sorts each batch by
``(ts_ms, patient_id)`` — the order :meth:`DelayedLabeller.advance` releases them in — and
learns them one by one, so the same labelled stream always trains the same model, whatever
the batching. Every ``snapshot_every`` learned windows, or ``snapshot_every_ms`` of event time,
it takes a :class:`~models.snapshots.Snapshot` (a copy) for the scorers to swap to.

Pure: no Kafka, no database, no clock. The lead's adapter publishes the snapshots (compacted
topic, registry) and feeds the trainer from the outcomes and features topics.

Examples
--------
>>> from models.labelling import LabelledWindow
>>> from models.risk import RiskModel
>>> trainer = Trainer(RiskModel(conditions=("any",), negative_rate=1.0), name="risk-logreg",
...                   snapshot_every=2, snapshot_every_ms=None)
>>> batch = [LabelledWindow("pt-2", 60_000, {"any": False}, {"hr_z": 0.1}),
...          LabelledWindow("pt-1", 60_000, {"any": True}, {"hr_z": 3.0})]
>>> snap = trainer.learn(batch, now_ms=120_000)
>>> snap.version, snap.examples_seen, trainer.last_order
(1, 2, [('pt-1', 60000), ('pt-2', 60000)])
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any, Generic, TypeVar

from models.labelling import LabelledWindow
from models.risk import RiskModel
from models.snapshots import Snapshot

T = TypeVar("T")


def _as_features(item: Any) -> dict[str, float]:
    if not isinstance(item, Mapping):
        raise TypeError(f"a labelled window's item must be a feature dict unless to_x is given, got "
                        f"{type(item).__name__}")
    return dict(item)


class Trainer(Generic[T]):
    """Learn labelled windows in ``(ts_ms, patient_id)`` order; snapshot every N windows or T ms.

    Parameters
    ----------
    model
        The model to train (mutated in place; snapshots are copies).
    name
        Model name in snapshots, e.g. ``"risk-logreg"``.
    snapshot_every
        Take a snapshot after this many labelled windows since the last one; ``None``: never.
    snapshot_every_ms
        ...or after this much event time since the last one; ``None``: never.
    to_x
        Builds the feature dict from a window's ``item`` (default: ``item`` is the dict).
    metrics
        Called when a snapshot is taken; its result is stored as the snapshot's metrics.
    first_version
        Version of the first snapshot.
    """

    def __init__(self, model: RiskModel, *, name: str, snapshot_every: int | None = 50_000,
                 snapshot_every_ms: int | None = 3_600_000, to_x: Callable[[T], dict[str, float]] = _as_features,
                 metrics: Callable[[], dict[str, float | None]] | None = None, first_version: int = 1) -> None:
        if snapshot_every is not None and snapshot_every <= 0:
            raise ValueError(f"snapshot_every must be positive or None, got {snapshot_every}")
        if snapshot_every_ms is not None and snapshot_every_ms <= 0:
            raise ValueError(f"snapshot_every_ms must be positive or None, got {snapshot_every_ms}")
        self.model = model
        self.name = name
        self.snapshot_every = snapshot_every
        self.snapshot_every_ms = snapshot_every_ms
        self.to_x = to_x
        self.metrics = metrics
        self.version = first_version - 1
        self.learned_since_snapshot = 0
        self.last_snapshot_ms: int | None = None
        self.last_order: list[tuple[str, int]] = []

    @property
    def examples_seen(self) -> int:
        """Labelled windows offered to the model so far."""
        return self.model.examples_seen

    def learn(self, windows: Iterable[LabelledWindow[T]], *, now_ms: int) -> Snapshot | None:
        """Learn a batch of final windows (any order); return a snapshot if one is due at ``now_ms``."""
        batch = sorted(windows, key=lambda w: (w.ts_ms, w.patient_id))
        to_x, model = self.to_x, self.model
        for window in batch:
            model.learn_lazy(partial(to_x, window.item), window.labels)
        self.last_order = [(w.patient_id, w.ts_ms) for w in batch]
        self.learned_since_snapshot += len(batch)
        if self.last_snapshot_ms is None:
            self.last_snapshot_ms = now_ms
        # Nothing learned since the last snapshot: the same model under a new version helps nobody.
        due = self.learned_since_snapshot > 0 and (
            (self.snapshot_every is not None and self.learned_since_snapshot >= self.snapshot_every)
            or (self.snapshot_every_ms is not None and now_ms - self.last_snapshot_ms >= self.snapshot_every_ms))
        return self.snapshot(now_ms) if due else None

    def snapshot(self, now_ms: int) -> Snapshot:
        """Take a snapshot now (a deep copy of the model), with the next version."""
        self.version += 1
        self.learned_since_snapshot = 0
        self.last_snapshot_ms = now_ms
        metrics = self.metrics() if self.metrics is not None else {}
        copied = pickle.loads(pickle.dumps(self.model, protocol=pickle.HIGHEST_PROTOCOL))  # noqa: S301 - a deep copy of our own model, never outside bytes
        return Snapshot(self.name, self.version, now_ms, self.model.examples_seen, metrics, copied)
