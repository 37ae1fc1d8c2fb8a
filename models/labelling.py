"""Labels for scored windows from delayed outcome events.

An outcome (``vitalrisk.outcome/1``: ``patient_id``, ``t``, ``kind``, ``onset``) arrives some
time after the windows it explains were scored. :class:`DelayedLabeller` holds each scored
window until its label is final, then releases it with one label per condition:

- **Positive** for a kind if an outcome of that kind has its onset within the horizon
  after the window: ``ts_ms < onset <= ts_ms + horizon_ms`` (default 12 h).
- **Negative** once the horizon and the outcome grace period have passed without one:
  a window is *final* once event time passes ``ts_ms + horizon_ms + outcome_grace_ms``
  (strictly: an onset exactly at the horizon still counts), and is released then, positive
  or not (a positive for one kind stays pending until the other kinds are settled too).
  Releases come in ``(ts_ms, patient_id)`` order, so a trainer that learns them in release
  order learns in a deterministic order.
- **Conditions.** One label per outcome kind (``hf_decompensation``, ``copd_exacerbation``,
  ``infection``, ``af_episode``) and ``"any"``, the union of ``any_kinds``. Decision: a new
  AF episode counts toward ``"any"`` (for a heart-failure or elderly patient it is a
  deterioration worth a call, and it is what a wrist device sees best) *and* has its own
  label, so a model may be trained for it separately.
- **During an episode.** From onset, a patient is *in an episode* for ``episode_ms[kind]``
  (default 5 days for heart failure and infection, 7 for COPD, 1 for AF: roughly an
  admission and the recovery after it; the outcome feed carries no end time). Windows
  scored in that period are excluded from training and evaluation: their vitals reflect
  the event and its treatment, not a warning of it. Windows scored after onset but before
  the outcome arrived are dropped when it does. They are still scored and shown.
- **Outcomes before windows.** Windows reach the labeller a little after their event time
  (the window must close first), so an outcome may arrive before the last windows that
  precede its onset; it is remembered until a window at or after the onset is added, and
  labels those windows as they come.
- **Late outcomes.** An outcome arriving more than ``outcome_grace_ms`` after its onset can
  no longer relabel windows already released as negative; it still starts an exclusion,
  and :attr:`LabellerStats.late_outcomes` counts it. Set the grace to the outcome feed's
  worst delay.

Memory is bounded: a patient holds at most ``max_pending_per_patient`` windows (default
``ceil((horizon_ms + outcome_grace_ms) / hop_ms) + 2``, 146 for a 12-h horizon at a 5-min
hop); a window beyond it is refused and counted (``overflow``). So the labeller holds at
most *patients x max_pending_per_patient* windows; keep ``item`` compact (a numpy vector,
not a dict of floats) for large cohorts.

Examples
--------
>>> H = 3_600_000
>>> lab = DelayedLabeller(horizon_ms=2 * H, max_pending_per_patient=10)
>>> for t in range(0, 5 * H, H):
...     _ = lab.add("pt-1", t, f"w{t // H}")
>>> lab.on_outcome(Outcome("pt-1", "infection", onset_ms=3 * H + 1, t_ms=3 * H + 1))
>>> [(w.item, w.labels["any"], w.labels["infection"]) for w in lab.advance(6 * H)]
[('w0', False, False), ('w1', False, False), ('w2', True, True), ('w3', True, True)]
>>> lab.pending, lab.stats.excluded
(0, 1)
>>> lab.add("pt-1", 5 * H, "w5")  # in the episode: not labelled
False
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Generic, TypeVar, cast

from models.errors import InvalidOutcome
from kernel.errors import InvalidMessage
from kernel.limits import DEFAULT_LIMITS, Limits, load_json, valid_id

T = TypeVar("T")

#: ``schema`` of an outcome event on the wire.
OUTCOME_SCHEMA = "vitalrisk.outcome/1"
#: Outcome kinds the labeller knows, each a condition label of its own.
OUTCOME_KINDS: tuple[str, ...] = ("hf_decompensation", "copd_exacerbation", "infection", "af_episode")
#: The union label.
ANY = "any"
_NO_KINDS: frozenset[str] = frozenset()
#: Every label a released window carries, ``"any"`` first.
LABELS: tuple[str, ...] = (ANY, *OUTCOME_KINDS)

MS_PER_MINUTE = 60_000
MS_PER_HOUR = 60 * MS_PER_MINUTE
MS_PER_DAY = 24 * MS_PER_HOUR
#: Default prediction horizon: a window is positive if an onset follows within 12 h.
DEFAULT_HORIZON_MS = 12 * MS_PER_HOUR
#: Default scoring interval, for the memory bound.
DEFAULT_HOP_MS = 5 * MS_PER_MINUTE
#: How long after onset a patient counts as in an episode (excluded), by kind.
DEFAULT_EPISODE_MS: Mapping[str, int] = MappingProxyType({
    "hf_decompensation": 5 * MS_PER_DAY,
    "copd_exacerbation": 7 * MS_PER_DAY,
    "infection": 5 * MS_PER_DAY,
    "af_episode": 1 * MS_PER_DAY,
})


def covered(episodes: Iterable[tuple[int, int]], start_ms: int, end_ms: int) -> bool:
    """Whether ``[start_ms, end_ms)`` lies wholly inside the union of ``episodes`` (``(start, until)`` each).

    An onset whose whole horizon is covered had no window that could warn of it: all were
    excluded as the aftermath of earlier events.

    >>> covered([(0, 10), (8, 18)], 6, 8), covered([(0, 10), (8, 18)], 9, 18), covered([(0, 10)], 9, 11)
    (True, True, False)
    >>> covered([], 0, 1)
    False
    """
    reached = start_ms
    for start, until in sorted(episodes):
        if start > reached:
            break
        reached = max(reached, until)
        if reached >= end_ms:
            return True
    return False


@dataclass(frozen=True, slots=True)
class Outcome:
    """A clinical outcome: an event of ``kind`` with onset at ``onset_ms``, published at ``t_ms``.

    Examples
    --------
    >>> Outcome.from_wire({"schema": "vitalrisk.outcome/1", "patient_id": "pt-1", "t": 5,
    ...                    "kind": "infection", "onset": 5}).onset_ms
    5
    >>> Outcome.from_wire({"schema": "vitalrisk.outcome/1", "patient_id": "pt-1", "t": 5,
    ...                    "kind": "stroke", "onset": 5})
    Traceback (most recent call last):
    ...
    models.errors.InvalidOutcome: kind must be one of ('hf_decompensation', 'copd_exacerbation', 'infection', 'af_episode'), got 'stroke'
    """

    patient_id: str
    kind: str
    onset_ms: int
    t_ms: int

    @classmethod
    def from_wire(cls, body: Mapping[str, Any], *, kinds: tuple[str, ...] = OUTCOME_KINDS) -> Outcome:
        """Validate one decoded ``vitalrisk.outcome/1`` record.

        Raises
        ------
        InvalidOutcome
            If the schema, a field's type or the kind is wrong.
        """
        if body.get("schema") != OUTCOME_SCHEMA:
            raise InvalidOutcome(f"schema must be {OUTCOME_SCHEMA!r}, got {body.get('schema')!r}")
        patient_id, kind, onset, t = (body.get(k) for k in ("patient_id", "kind", "onset", "t"))
        if not isinstance(patient_id, str) or not patient_id:
            raise InvalidOutcome(f"patient_id must be a non-empty string, got {type(patient_id).__name__}")
        if not valid_id(patient_id):
            raise InvalidOutcome(f"patient_id must follow the id rule, got {ascii(patient_id)[:40]}")
        if type(kind) is not str or kind not in kinds:
            raise InvalidOutcome(f"kind must be one of {kinds}, got {ascii(kind)[:40]}")
        for name, value in (("onset", onset), ("t", t)):
            if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 2**63:
                raise InvalidOutcome(f"{name} must be a positive epoch-ms integer, got {ascii(value)[:40]}")
        return cls(patient_id, kind, cast(int, onset), cast(int, t))  # both checked just above

    @classmethod
    def from_bytes(cls, raw: bytes, *, limits: Limits = DEFAULT_LIMITS,
                   kinds: tuple[str, ...] = OUTCOME_KINDS) -> Outcome:
        """Decode and validate one ``vitalrisk.outcome/1`` record: total, like every decoder.

        Raises
        ------
        InvalidOutcome
            For any bytes that are not such a record (beyond a limit, not JSON, not an object,
            a bad field); nothing else.

        >>> Outcome.from_bytes(b"[" * 5000 + b"]" * 5000)
        Traceback (most recent call last):
        ...
        models.errors.InvalidOutcome: too_deep: JSON nests deeper than 8 levels
        """
        try:
            body = load_json(raw, limits)
        except InvalidMessage as exc:
            raise InvalidOutcome(str(exc)) from None
        if not isinstance(body, dict):
            raise InvalidOutcome(f"an outcome must be a JSON object, got {type(body).__name__}")
        return cls.from_wire(body, kinds=kinds)


@dataclass(frozen=True, slots=True)
class LabelledWindow(Generic[T]):
    """A scored window whose labels are final: ``labels[condition]`` for every label."""

    patient_id: str
    ts_ms: int
    labels: dict[str, bool]
    item: T


@dataclass(slots=True)
class LabellerStats:
    """Counters of what the labeller refused or could not label."""

    excluded: int = 0  #: windows in an episode (refused, or dropped when the outcome came)
    overflow: int = 0  #: windows refused because the patient's pending queue was full
    out_of_order: int = 0  #: windows not newer than the patient's previous one
    late_outcomes: int = 0  #: outcomes too late to relabel already released windows
    censored: int = 0  #: windows still pending when :meth:`DelayedLabeller.drain` dropped them
    positives: dict[str, int] = field(default_factory=dict)  #: released positives per label


@dataclass(slots=True)
class _Pending(Generic[T]):
    ts_ms: int
    item: T
    kinds: frozenset[str]  # almost always empty: one shared frozenset, replaced when labelled


class DelayedLabeller(Generic[T]):
    """Holds scored windows per patient until outcomes (or their absence) label them.

    Parameters
    ----------
    horizon_ms
        An onset within this long after a window makes it positive.
    outcome_grace_ms
        How late after its onset an outcome may arrive and still label windows.
    episode_ms
        By outcome kind: how long after onset a patient's windows are excluded.
    hop_ms
        Expected interval between a patient's scored windows (sets the default bound).
    max_pending_per_patient
        Memory bound per patient; default from the horizon, grace and hop.
    any_kinds
        Outcome kinds that count toward ``"any"``.

    Raises
    ------
    ValueError
        If a duration is not positive, or a kind is unknown.
    """

    def __init__(self, *, horizon_ms: int = DEFAULT_HORIZON_MS, outcome_grace_ms: int = 0,
                 episode_ms: Mapping[str, int] = DEFAULT_EPISODE_MS, hop_ms: int = DEFAULT_HOP_MS,
                 max_pending_per_patient: int | None = None,
                 any_kinds: tuple[str, ...] = OUTCOME_KINDS) -> None:
        if horizon_ms <= 0:
            raise ValueError(f"horizon_ms must be positive, got {horizon_ms}")
        if outcome_grace_ms < 0:
            raise ValueError(f"outcome_grace_ms must be zero or more, got {outcome_grace_ms}")
        if hop_ms <= 0:
            raise ValueError(f"hop_ms must be positive, got {hop_ms}")
        unknown = (set(episode_ms) | set(any_kinds)) - set(OUTCOME_KINDS)
        if unknown:
            raise ValueError(f"unknown outcome kinds {sorted(unknown)}; known: {OUTCOME_KINDS}")
        if any(v < 0 for v in episode_ms.values()):
            raise ValueError(f"episode_ms must be zero or more for every kind, got {dict(episode_ms)}")
        self.horizon_ms = horizon_ms
        self.outcome_grace_ms = outcome_grace_ms
        self.episode_ms = dict(episode_ms)
        self.any_kinds = frozenset(any_kinds)
        self.max_pending_per_patient = (max_pending_per_patient if max_pending_per_patient is not None
                                        else math.ceil((horizon_ms + outcome_grace_ms) / hop_ms) + 2)
        if self.max_pending_per_patient < 1:
            raise ValueError(f"max_pending_per_patient must be at least 1, got {self.max_pending_per_patient}")
        self.stats = LabellerStats(positives={label: 0 for label in LABELS})
        self._pending: dict[str, deque[_Pending[T]]] = {}
        self._last_ts: dict[str, int] = {}
        self._released_through: dict[str, int] = {}
        self._episodes: dict[str, list[tuple[int, int]]] = {}  # (onset, end of exclusion) per patient
        self._onsets: dict[str, list[tuple[int, str]]] = {}  # outcomes whose onset is after the last window
        # Release order: a heap of the distinct times held, and the patients held at each time
        # (sorted when released). Far cheaper than a heap of (time, patient) when a thousand
        # patients share each time: pushes and pops per time, not per window.
        self._times: list[int] = []
        self._at: dict[int, list[str]] = {}
        self._count = 0

    @property
    def pending(self) -> int:
        """Windows held, waiting for their labels."""
        return self._count

    def in_episode(self, patient_id: str, ts_ms: int) -> bool:
        """Whether ``ts_ms`` falls in a known episode of the patient (excluded)."""
        episodes = self._episodes.get(patient_id)
        if not episodes:  # most patients, most of the time: no generator to set up
            return False
        return any(start <= ts_ms < until for start, until in episodes)

    def add(self, patient_id: str, ts_ms: int, item: T) -> bool:
        """Hold a window scored at ``ts_ms``; ``False`` if it is excluded, out of order or over the bound."""
        episodes = self._episodes.get(patient_id)
        if episodes:
            if any(start <= ts_ms < until for start, until in episodes):
                self.stats.excluded += 1
                return False
            episodes[:] = [(start, until) for start, until in episodes if until > ts_ms]
            if not episodes:
                del self._episodes[patient_id]
        last = self._last_ts.get(patient_id)
        if last is not None and ts_ms <= last:
            self.stats.out_of_order += 1
            return False
        queue = self._pending.get(patient_id)
        if queue is None:
            queue = self._pending[patient_id] = deque()
        elif len(queue) >= self.max_pending_per_patient:
            self.stats.overflow += 1
            return False
        window = _Pending(ts_ms, item, _NO_KINDS)
        known = self._onsets.get(patient_id)
        if known:  # outcomes that arrived before this window was scored (pipeline lag)
            known[:] = [(onset, kind) for onset, kind in known if onset > ts_ms]
            window.kinds = window.kinds.union(kind for onset, kind in known if onset <= ts_ms + self.horizon_ms)
            if not known:
                del self._onsets[patient_id]
        queue.append(window)
        self._last_ts[patient_id] = ts_ms
        self._hold_at(ts_ms, patient_id)
        self._count += 1
        return True

    def add_many(self, patient_ids: Sequence[str], ts_ms: int, items: Sequence[T]) -> list[bool]:
        """:meth:`add` for windows of many patients scored at the same ``ts_ms``; which were in an episode.

        Returns, per window, whether it fell in a known episode (:meth:`in_episode` before the
        add; such windows are excluded). The common case — a patient with no known episode
        or early outcome — skips their checks, which makes a 1,000-patient hop several times
        cheaper than 1,000 calls of :meth:`add`.

        >>> lab = DelayedLabeller(horizon_ms=60_000)
        >>> lab.on_outcome(Outcome("pt-2", "infection", onset_ms=0, t_ms=0))
        >>> lab.add_many(["pt-1", "pt-2"], 30_000, ["a", "b"]), lab.pending
        ([False, True], 1)
        """
        flags: list[bool] = []
        episodes, onsets, last_ts, pending = self._episodes, self._onsets, self._last_ts, self._pending
        bound = self.max_pending_per_patient
        at = self._at.get(ts_ms)
        if at is None:
            at = self._at[ts_ms] = []
            heapq.heappush(self._times, ts_ms)
        added = 0
        for pid, item in zip(patient_ids, items):
            if pid in episodes or pid in onsets:  # rare: the full rules
                excluded = self.stats.excluded
                self.add(pid, ts_ms, item)
                flags.append(self.stats.excluded > excluded)
                continue
            flags.append(False)
            last = last_ts.get(pid)
            if last is not None and ts_ms <= last:
                self.stats.out_of_order += 1
                continue
            queue = pending.get(pid)
            if queue is None:
                queue = pending[pid] = deque()
            elif len(queue) >= bound:
                self.stats.overflow += 1
                continue
            queue.append(_Pending(ts_ms, item, _NO_KINDS))
            last_ts[pid] = ts_ms
            at.append(pid)
            added += 1
        self._count += added
        return flags

    def exclusion(self, outcome: Outcome) -> tuple[int, int]:
        """``(start, until)``: when the patient's windows are excluded as ``outcome``'s episode.

        >>> DelayedLabeller(episode_ms={"infection": 10}).exclusion(Outcome("pt-1", "infection", 5, 5))
        (5, 15)
        """
        return outcome.onset_ms, outcome.onset_ms + self.episode_ms.get(outcome.kind, 0)

    def on_outcome(self, outcome: Outcome) -> None:
        """Label the patient's pending windows before the onset; drop those after it; start an exclusion."""
        onset, kind, pid = outcome.onset_ms, outcome.kind, outcome.patient_id
        if kind not in OUTCOME_KINDS:
            raise ValueError(f"unknown outcome kind {kind!r}; known: {OUTCOME_KINDS}")
        excluded_until = self.exclusion(outcome)[1]
        if excluded_until > onset:
            self._episodes.setdefault(pid, []).append((onset, excluded_until))
        if onset - self.horizon_ms <= self._released_through.get(pid, onset - self.horizon_ms - 1):
            self.stats.late_outcomes += 1
        queue = self._pending.get(pid)
        if queue:
            kept: deque[_Pending[T]] = deque()
            for window in queue:
                if onset <= window.ts_ms < excluded_until:
                    self.stats.excluded += 1
                    self._count -= 1
                    continue
                if onset - self.horizon_ms <= window.ts_ms < onset:
                    window.kinds = window.kinds | {kind}
                kept.append(window)
            self._pending[pid] = kept
        last = self._last_ts.get(pid)
        if last is None or last < onset:  # windows before the onset may still come
            self._onsets.setdefault(pid, []).append((onset, kind))

    def advance(self, now_ms: int) -> list[LabelledWindow[T]]:
        """Release, in ``(ts_ms, patient_id)`` order, every window final at event time ``now_ms``.

        A window is final once ``now_ms > ts_ms + horizon_ms + outcome_grace_ms``: an outcome
        with its onset exactly at the horizon, arriving at its onset, still labels it.
        """
        limit = now_ms - self.horizon_ms - self.outcome_grace_ms
        out: list[LabelledWindow[T]] = []
        times, at, pending = self._times, self._at, self._pending
        while times and times[0] < limit:
            ts = heapq.heappop(times)
            for pid in sorted(at.pop(ts)):
                queue = pending.get(pid)
                if not queue or queue[0].ts_ms != ts:
                    continue  # dropped when an outcome excluded it
                window = queue.popleft()
                if not queue:
                    del pending[pid]
                self._count -= 1
                self._released_through[pid] = ts
                out.append(LabelledWindow(pid, ts, self._labels(window.kinds), window.item))
        return out

    def _hold_at(self, ts_ms: int, patient_id: str) -> None:
        at = self._at.get(ts_ms)
        if at is None:
            at = self._at[ts_ms] = []
            heapq.heappush(self._times, ts_ms)
        at.append(patient_id)

    def pending_items(self) -> list[T]:
        """Every held window's item (any order): what a restarted trainer must read again."""
        return [window.item for queue in self._pending.values() for window in queue]

    def drain(self) -> int:
        """Drop every pending window (end of a run: their horizon never passed); return how many."""
        dropped = self._count
        self.stats.censored += dropped
        self._pending.clear()
        self._times.clear()
        self._at.clear()
        self._count = 0
        return dropped

    def _labels(self, kinds: frozenset[str]) -> dict[str, bool]:
        if not kinds:  # nearly every window: all negative, nothing to count
            return dict.fromkeys(LABELS, False)
        labels = {ANY: not kinds.isdisjoint(self.any_kinds)}
        for kind in OUTCOME_KINDS:
            labels[kind] = kind in kinds
        for label, positive in labels.items():
            if positive:
                self.stats.positives[label] += 1
        return labels
