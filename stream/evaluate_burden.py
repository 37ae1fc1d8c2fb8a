"""The alert burden of an evaluation run: the alert policy replayed over every patient's scores. Pure.

:class:`SeriesStore` keeps every score of a run (patient, time, model risk of each head, NEWS2
total and red score, whether it fell in an episode) as compact arrays; :func:`alert_burden`
replays the default alert policy over the report period's scores
(:func:`stream.alerts.replay.replay_pages`; every model risk head pages, as in the alerter)
and counts, per scorer (:class:`stream.evaluate_report.Burden`): pages per patient-day, page PPV
(a firing page followed by an onset within the horizon), episode sensitivity (an onset preceded
by a firing page within the horizon; an onset whose whole horizon lay inside an earlier episode
is counted apart, since every score that could have warned of it is excluded as that episode's
aftermath) and median lead time, overall and per outcome kind (``by_kind``), where the onsets no
page preceded are also timed to their first page after onset (reported apart, never counted as
detections). Besides the default policy: the "any" head alone, and every head at other entry
thresholds (exit at 70 % of entry).

Examples
--------
>>> store = SeriesStore()
>>> store.add(["pt-1", "pt-2"], 300_000, [0.1, 0.7], [1, 6], [1, 3], [False, False])
>>> store.add(["pt-1"], 600_000, [0.2], [2], [1], [True])
>>> s = store.by_patient()["pt-1"]
>>> s.ts.tolist(), s.risk.tolist(), s.news2.tolist(), s.in_episode.tolist()
([300000, 600000], [0.1, 0.2], [1, 2], [False, True])
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from kernel.events import HOP_MS, RiskScore
from models.labelling import MS_PER_HOUR, Outcome, covered
from models.news2 import MAX_TOTAL
from stream.alerts.replay import replay_pages
from stream.alert_tuning import Candidate, PatientTally
from stream.alerts.rules import RISK_HIGH, AlertPolicy, Threshold
from stream.evaluate_report import MODEL, NEWS2, Burden

FloatVector = npt.NDArray[np.float64]
IntVector = npt.NDArray[np.int64]
#: The alert kinds NEWS2 pages with.
NEWS2_KINDS = ("news2_high", "news2_red_parameter")


@dataclass(slots=True)
class ScoreSeries:
    """One patient's scores over time (for alert replay and plots), in time order."""

    ts: IntVector
    risk: FloatVector
    news2: npt.NDArray[np.int8]
    red: npt.NDArray[np.int8]
    in_episode: npt.NDArray[np.bool_]
    heads: dict[str, FloatVector] = field(default_factory=dict)
    """The per-condition heads' risks besides ``risk`` (the "any" head), by condition."""


@dataclass(frozen=True, slots=True)
class _Chunk:
    """One :meth:`SeriesStore.add`: a batch of scores as arrays, patients as indices."""

    who: npt.NDArray[np.int32]
    ts: IntVector
    risk: FloatVector
    news2: npt.NDArray[np.int8]
    red: npt.NDArray[np.int8]
    in_episode: npt.NDArray[np.bool_]
    heads: tuple[FloatVector, ...]


class SeriesStore:
    """Every score's patient, time, model risk ("any" and per condition), NEWS2 total and red
    score, appended a batch at a time as compact arrays, and grouped per patient once at the end.

    Parameters
    ----------
    heads
        The per-condition heads kept besides the "any" head, in the order :meth:`add` gets them.
    """

    def __init__(self, heads: Sequence[str] = ()) -> None:
        self.heads = tuple(heads)
        self._index: dict[str, int] = {}
        self._ids: list[str] = []
        self._chunks: list[_Chunk] = []
        self._grouped: dict[str, ScoreSeries] | None = None

    def add(self, patient_ids: Sequence[str], ts_ms: npt.ArrayLike, risk: npt.ArrayLike, news2: npt.ArrayLike,
            red: npt.ArrayLike, in_episode: npt.ArrayLike, heads: Sequence[npt.ArrayLike] = ()) -> None:
        """Append scores: one per patient id, at ``ts_ms`` (one time for all, or one each)."""
        index = self._index
        for pid in patient_ids:
            if pid not in index:
                index[pid] = len(self._ids)
                self._ids.append(pid)
        n = len(patient_ids)
        self._chunks.append(_Chunk(np.fromiter((index[p] for p in patient_ids), dtype=np.int32, count=n),
                                   np.broadcast_to(np.asarray(ts_ms, dtype=np.int64), (n,)).copy(),
                                   np.asarray(risk, dtype=np.float64), np.asarray(news2, dtype=np.int8),
                                   np.asarray(red, dtype=np.int8), np.asarray(in_episode, dtype=np.bool_),
                                   tuple(np.asarray(h, dtype=np.float64) for h in heads)))
        self._grouped = None

    def by_patient(self) -> dict[str, ScoreSeries]:
        """Patient id -> their series (stable: each patient's scores in the order they came)."""
        if self._grouped is None:
            if not self._chunks:
                self._grouped = {}
                return self._grouped
            chunks = self._chunks
            who = np.concatenate([c.who for c in chunks])
            order = np.argsort(who, kind="stable")
            who = who[order]
            ts = np.concatenate([c.ts for c in chunks])[order]
            risk = np.concatenate([c.risk for c in chunks])[order]
            news2 = np.concatenate([c.news2 for c in chunks])[order]
            red = np.concatenate([c.red for c in chunks])[order]
            episode = np.concatenate([c.in_episode for c in chunks])[order]
            n_heads = min(len(c.heads) for c in chunks)
            heads = [np.concatenate([c.heads[j] for c in chunks])[order] for j in range(n_heads)]
            # the heads by name when every batch had them all (a batch added without heads has none)
            named = dict(zip(self.heads, heads, strict=True)) if len(heads) == len(self.heads) else {}
            starts = np.searchsorted(who, np.arange(len(self._ids) + 1))
            self._grouped = {pid: ScoreSeries(ts[a:b], risk[a:b], news2[a:b], red[a:b], episode[a:b],
                                              {c: h[a:b] for c, h in named.items()})
                             for pid, a, b in zip(self._ids, starts[:-1].tolist(), starts[1:].tolist(), strict=True)
                             if b > a}
        return self._grouped


@dataclass(frozen=True, slots=True)
class _Period:
    """What every replay of one run reads: the scores, the onsets that count, the report period."""

    series: Mapping[str, ScoreSeries]
    onsets: dict[str, list[tuple[int, str]]]
    """Patient -> (onset, kind) of each onset in the report period that some score could warn of."""
    in_episode: dict[str, int]
    """Outcome kind -> onsets in the report period whose whole horizon lay in earlier episodes."""
    any_head: str
    heads: tuple[str, ...]
    report_from_ms: int
    horizon_ms: int
    patients: int
    report_days: float
    label: str


def alert_burden(series: SeriesStore, outcomes: Sequence[Outcome], episodes: Mapping[str, Sequence[tuple[int, int]]],
                 *, any_head: str, report_from_ms: int, end_ms: int, horizon_ms: int, patients: int,
                 report_days: float, thresholds: Sequence[float], label: str) -> list[Burden]:
    """The alert burden of a run: the default policy (model and NEWS2), the ``any_head`` alone
    (``model:<head>``), and every head at each entry threshold of ``thresholds`` (``model@T``).

    Parameters
    ----------
    series
        Every score of the run.
    outcomes
        Every outcome of the run.
    episodes
        Patient -> ``(start, until)`` of each of their outcomes' exclusions
        (:meth:`models.labelling.DelayedLabeller.exclusion`).
    any_head
        The model's "any" head (:attr:`ScoreSeries.risk`); the others are :attr:`SeriesStore.heads`.
    report_from_ms, end_ms
        The report period.
    horizon_ms
        The label horizon: a page up to this long before an onset detects it.
    patients, report_days
        For pages per patient-day.
    thresholds
        Model risk entry thresholds replayed besides the default policy's (exit at 70 % of entry).
    label
        Model version written on the replayed scores.
    """
    period = _period(series, outcomes, episodes, any_head=any_head, report_from_ms=report_from_ms, end_ms=end_ms,
                     horizon_ms=horizon_ms, patients=patients, report_days=report_days, label=label)
    default = AlertPolicy(data_stopped_ms=None)
    out = _burden_for(period, default, "", (MODEL, NEWS2))
    out += _burden_for(period, default, f":{any_head}", (MODEL,), heads=(any_head,))
    for enter in thresholds:
        risk = Threshold(enter, round(0.7 * enter, 6), for_ms=default.risk.for_ms,
                         clear_for_ms=default.risk.clear_for_ms, severity=default.risk.severity)
        out += _burden_for(period, replace(default, risk=risk, risk_by_condition={}), f"@{enter:g}", (MODEL,))
    return out


def _period(series: SeriesStore, outcomes: Sequence[Outcome], episodes: Mapping[str, Sequence[tuple[int, int]]], *,
            any_head: str, report_from_ms: int, end_ms: int, horizon_ms: int, patients: int, report_days: float,
            label: str) -> _Period:
    """What every replay of the run reads (see :func:`alert_burden` for the arguments)."""
    onsets: dict[str, list[tuple[int, str]]] = {}
    in_episode: dict[str, int] = {}
    for o in outcomes:
        if report_from_ms <= o.onset_ms < end_ms:
            if covered(episodes[o.patient_id], o.onset_ms - horizon_ms, o.onset_ms):
                in_episode[o.kind] = in_episode.get(o.kind, 0) + 1
            else:
                onsets.setdefault(o.patient_id, []).append((o.onset_ms, o.kind))
    return _Period(series.by_patient(), onsets, in_episode, any_head, series.heads, report_from_ms, horizon_ms,
                   patients, report_days, label)


def patient_tallies(series: SeriesStore, outcomes: Sequence[Outcome],
                    episodes: Mapping[str, Sequence[tuple[int, int]]], *, any_head: str, report_from_ms: int,
                    end_ms: int, horizon_ms: int, patient_ids: Sequence[str], report_days: float,
                    candidates: Sequence[Candidate], label: str) -> dict[str, PatientTally]:
    """Each candidate policy's model pages replayed over the report period, tallied per patient.

    The counts of :func:`alert_burden`'s model rows, kept per patient (aligned with
    ``patient_ids``) so that several cohorts pool, subgroups split and a bootstrap resamples
    patients (:mod:`stream.alert_tuning`): pages, true pages (an onset within the horizon after
    the page), onsets that count, onsets detected (a page within the horizon before), and the
    detected onsets' leads. Only the model's pages (``candidate.heads``): NEWS2 is not tuned.
    The arguments are :func:`alert_burden`'s; ``patient_ids`` lists every patient, scored or not.

    Raises
    ------
    ValueError
        If a scored patient or an onset's patient is not in ``patient_ids``.
    """
    period = _period(series, outcomes, episodes, any_head=any_head, report_from_ms=report_from_ms, end_ms=end_ms,
                     horizon_ms=horizon_ms, patients=len(patient_ids), report_days=report_days, label=label)
    index = {pid: i for i, pid in enumerate(patient_ids)}
    unknown = (period.series.keys() | period.onsets.keys()) - index.keys()
    if unknown:
        raise ValueError(f"patient_tallies: {len(unknown)} patient(s) not in patient_ids, e.g. {min(unknown)}")
    n = len(patient_ids)
    onsets = np.zeros(n, dtype=np.int64)
    for pid, times in period.onsets.items():
        onsets[index[pid]] = len(times)
    # Each patient's highest risk per head over the scores a replay keeps: a patient no head of a
    # candidate brings to its entry threshold never leaves idle, so that replay can skip them.
    peaks: dict[str, dict[str, float]] = {}
    for pid, s in period.series.items():
        keep = (s.ts >= period.report_from_ms) & ~s.in_episode
        if keep.any():
            peaks[pid] = {c: float(r[keep].max())
                          for c, r in ((any_head, s.risk), *s.heads.items())}
    out: dict[str, PatientTally] = {}
    for candidate in candidates:
        enter = {c: candidate.policy.threshold(_risk_kind(c)).enter for c in candidate.heads}
        reach = {pid: period.series[pid] for pid, peak in peaks.items()
                 if any(peak.get(c, -math.inf) >= e for c, e in enter.items())}
        firing = _replay(replace(period, series=reach), candidate.policy, (MODEL,), candidate.heads,
                         in_episode=False)[MODEL]
        pages, true_pages, detected = (np.zeros(n, dtype=np.int64) for _ in range(3))
        leads: list[float] = []
        for pid, fired in firing.items():
            own = [t for t, _ in period.onsets.get(pid, ())]
            pages[index[pid]] = len(fired)
            true_pages[index[pid]] = sum(1 for t in fired if any(t < onset <= t + horizon_ms for onset in own))
        for pid, times_kinds in period.onsets.items():
            paged = firing.get(pid, [])
            for onset, _ in times_kinds:
                before = [t for t in paged if onset - horizon_ms <= t < onset]
                if before:
                    detected[index[pid]] += 1
                    leads.append((onset - min(before)) / MS_PER_HOUR)
        out[candidate.name] = PatientTally(pages, true_pages, onsets.copy(), detected, tuple(leads))
    return out


def _burden_for(period: _Period, policy: AlertPolicy, suffix: str, scorers: tuple[str, ...], *,
                heads: tuple[str, ...] | None = None) -> list[Burden]:
    """Replay ``policy`` over the report period's scores; the burden of each of ``scorers``.

    The model's kinds are ``risk_high:<condition>`` for each of ``heads`` (default: every
    head, as the live alerter pages them). With the policy's grouping on (the default, as in the
    alerter) a patient's heads page as one group (kind ``risk_high``), so several heads crossing
    in one episode count as one page; with it off each head's pages count.
    The model's kinds and NEWS2's kinds are replayed separately: the engine couples no
    model-risk kind with a NEWS2 kind (its one inhibition is NEWS2 high over NEWS2 red), so
    each one's pages are what a joint replay gives. Each replay is fed only the scores that
    change some kind's state (:func:`_transitions`); the others are no-ops to the engine, and
    a week of scores shrinks to the few around each episode, which keeps the replay of a
    large cohort to seconds. A test checks the pages against a replay of every score.

    Scores in an episode (the labeller's exclusion after an onset) are left out of the
    burden replay. A second replay keeps them, only to time the first page *after* an
    onset that no page preceded (``by_kind``: ``late_detected``, ``median_delay_h``);
    those late pages never count toward sensitivity. An onset whose whole horizon the
    exclusion covers is therefore out of every scorer's reach: it is counted in
    ``in_episode``, not in ``outcomes``.
    """
    onsets, in_episode, horizon = period.onsets, period.in_episode, period.horizon_ms
    names = (period.any_head, *period.heads) if heads is None else heads
    firing = _replay(period, policy, scorers, names, in_episode=False)
    late = _replay(period, policy, scorers, names, in_episode=True)
    out = []
    n_outcomes = sum(len(v) for v in onsets.values())
    kinds_of = {MODEL: tuple(_risk_kind(c) for c in names), NEWS2: NEWS2_KINDS}
    patients, report_days = period.patients, period.report_days
    for scorer in scorers:
        pages = firing[scorer]
        n_pages = sum(len(v) for v in pages.values())
        true_pages = sum(1 for pid, times in pages.items() for t in times
                         if any(t < onset <= t + horizon for onset, _ in onsets.get(pid, ())))
        leads: list[float] = []
        per_kind: dict[str, _KindTally] = {}
        for pid, times in onsets.items():
            for onset, kind in times:
                k = per_kind.setdefault(kind, _KindTally())
                k.outcomes += 1
                before = [t for t in pages.get(pid, ()) if onset - horizon <= t < onset]
                if before:
                    leads.append((onset - min(before)) / MS_PER_HOUR)
                    k.leads.append(leads[-1])
                    continue
                after = [t for t in late[scorer].get(pid, ()) if onset <= t < onset + horizon]
                if after:
                    k.delays.append((min(after) - onset) / MS_PER_HOUR)
        by_kind = {kind: (per_kind.get(kind) or _KindTally()).burden(in_episode.get(kind, 0))
                   for kind in sorted(per_kind.keys() | in_episode.keys())}
        out.append(Burden(scorer + (suffix if scorer == MODEL else ""), kinds_of[scorer], n_pages, true_pages,
                          n_pages / (patients * report_days) if report_days > 0 else math.nan,
                          true_pages / n_pages if n_pages else math.nan,
                          len(leads) / n_outcomes if n_outcomes else math.nan, n_outcomes, len(leads),
                          float(np.median(leads)) if leads else math.nan, by_kind, sum(in_episode.values())))
    return out


def _replay(period: _Period, policy: AlertPolicy, scorers: tuple[str, ...], heads: tuple[str, ...], *,
            in_episode: bool) -> dict[str, dict[str, list[int]]]:
    """Event times of the firing pages of each scorer's kinds, per patient (see :func:`_burden_for`)."""
    any_c = period.any_head
    model_kinds = {_risk_kind(c) for c in heads} | {RISK_HIGH}  # the heads, and their group
    firing: dict[str, dict[str, list[int]]] = {s: {} for s in scorers}
    label = period.label
    for pid, s in period.series.items():
        keep = s.ts >= period.report_from_ms
        if not in_episode:
            keep &= ~s.in_episode
        ts = s.ts[keep]
        for scorer in scorers:
            if scorer == MODEL:
                risks = {c: (s.risk if c == any_c else s.heads[c])[keep] for c in heads
                         if c == any_c or c in s.heads}
                if not risks:
                    continue
                needed = np.zeros(len(ts), dtype=bool)
                for c, r in risks.items():
                    needed |= _transitions(ts, r, policy.threshold(_risk_kind(c)))
                idx = np.flatnonzero(needed)
                columns = {c: r[idx].tolist() for c, r in risks.items()}
                first = next(iter(columns))
                scores = [RiskScore(patient_id=pid, window_start_ms=t - HOP_MS, window_end_ms=t, model_name="risk", model_version=label, score=columns[first][j], news2_total=0, news2_band="", inputs={}, contributions={},
                                    risks={c: columns[c][j] for c in columns})
                          for j, t in enumerate(ts[idx].tolist())]
            else:
                total = s.news2[keep].astype(np.int64)
                red = s.red[keep].astype(np.int64)
                needed = (_transitions(ts, total, policy.news2_total)
                          | _transitions(ts, red, policy.news2_parameter))
                scores = [RiskScore(patient_id=pid, window_start_ms=t - HOP_MS, window_end_ms=t, model_name="news2", model_version=label, score=n / MAX_TOTAL, news2_total=n, news2_band="", inputs={}, contributions={},
                                    news2_subscores={"max": r})
                          for t, n, r in zip(ts[needed].tolist(), total[needed].tolist(), red[needed].tolist(),
                                             strict=True)]
            if not scores:
                continue
            for page in replay_pages(scores, policy):
                if page.action != "firing" or page.event_ms is None:
                    continue
                if page.kind in (model_kinds if scorer == MODEL else NEWS2_KINDS):
                    firing[scorer].setdefault(pid, []).append(page.event_ms)
    return firing


def _risk_kind(condition: str) -> str:
    return f"risk_high:{condition}"


@dataclass(slots=True)
class _KindTally:
    """An outcome kind's tally while the burden is counted: onsets, and the leads and delays of its pages."""

    outcomes: int = 0
    leads: list[float] = field(default_factory=list)
    delays: list[float] = field(default_factory=list)

    def burden(self, in_episode: int) -> dict[str, float]:
        """The kind's entry of :attr:`Burden.by_kind`, given its onsets counted apart."""
        n, leads, delays = self.outcomes, self.leads, self.delays
        return {"outcomes": n, "detected": len(leads), "sensitivity": len(leads) / n if n else math.nan,
                "median_lead_h": float(np.median(leads)) if leads else math.nan,
                "late_detected": len(delays), "median_delay_h": float(np.median(delays)) if delays else math.nan,
                "in_episode": in_episode}


def _transitions(ts: IntVector, value: FloatVector | IntVector, threshold: Threshold) -> npt.NDArray[np.bool_]:
    """Which of one patient's scores change an alert kind's state in the engine (see :func:`_burden_for`).

    Follows :class:`stream.alerts.engine.AlertEngine`'s phases for one kind: idle, a score at
    or above ``enter`` starts a pending episode (firing at once if ``for_ms`` has passed);
    pending, a score below ``enter`` cancels it and one at or above fires it once ``for_ms``
    has passed; firing, a score at or below ``exit`` starts (or continues) clearing, which
    resolves after ``clear_for_ms``, and one above ``exit`` stops a clearing in progress.
    Every other score — below ``enter`` while idle, above ``exit`` while firing and not
    clearing — changes nothing but the alert's last value, so leaving it out changes no page
    but re-notifications (which the burden does not count).

    >>> t = np.arange(9) * 300_000
    >>> v = np.array([0.1, 0.6, 0.8, 0.9, 0.6, 0.2, 0.1, 0.6, 0.1])
    >>> _transitions(t, v, Threshold(0.7, 0.5, 60_000, 60_000)).tolist()
    [False, False, True, True, False, True, True, False, False]
    """
    enter, exit_, for_ms, clear_ms = threshold.enter, threshold.exit, threshold.for_ms, threshold.clear_for_ms
    out = np.zeros(len(value), dtype=bool)
    idle, pending, firing = 0, 1, 2
    phase, since, clearing = idle, 0, -1
    for i, (t, v) in enumerate(zip(ts.tolist(), value.tolist(), strict=True)):
        if phase == idle:
            if v < enter:
                continue
            out[i] = True
            phase, since = pending, t
            if t - since >= for_ms:
                phase, clearing = firing, -1
        elif phase == pending:
            out[i] = True
            if v < enter:
                phase = idle
            elif t - since >= for_ms:
                phase, clearing = firing, -1
        elif v > exit_:
            out[i] = clearing >= 0
            clearing = -1
        else:
            out[i] = True
            if clearing < 0:
                clearing = t
            if t - clearing >= clear_ms:
                phase = idle
    return out
