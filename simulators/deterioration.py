"""Deterioration episodes with ground truth: when they start, when they become an event.

An episode has four times (epoch ms):

``prodrome_start_ms``
    The physiology starts to drift. The drift grows, accelerating, until onset, so a
    model has hours to days of warning (6–24 h for infection, 1–3 days for heart failure).
``onset_ms``
    Clinical onset: the event (admission, exacerbation, AF episode) happens and the
    **outcome** ``{"schema": "vitalrisk.outcome/1", "patient_id", "t", "kind", "onset"}``
    is published with ``t == onset == onset_ms``.
``recovery_start_ms``
    The acute phase ends (treatment works, AF terminates); the drift eases off.
``end_ms``
    The patient is back at baseline.

Some episodes **resolve on their own** (``resolved_without_event``): the drift rises to part
of its full size, peaks at ``onset_ms`` and fades again; no outcome is published. They are
the near misses a good model should not alarm on too loudly.

Episodes arrive as a Poisson process per patient and kind at the configured
:class:`Incidence`; overlapping episodes of one patient add up. Kinds and effects:

=====================  ===========  ===========================================================
kind                   who          drift at full severity
=====================  ===========  ===========================================================
``hf_decompensation``  HF           HR +14, RR +6, SpO2 −3.5, SBP −6, activity −60 %
``copd_exacerbation``  COPD         SpO2 −5, RR +8, HR +12, temperature +0.3, activity −50 %
``infection``          everybody    temperature +1.9, HR +24, RR +7, SBP −24, DBP −14, SpO2 −2
``af_episode``         AF           prodrome: ectopy (HR +6, irregular); at onset: AF, HR +45
                                    and highly irregular until it terminates
=====================  ===========  ===========================================================

Each episode draws a severity from 0.7 to 1.3 that scales its effects.

Examples
--------
>>> ep = Episode("pt-0123456789", "infection", prodrome_start_ms=0, onset_ms=3_600_000,
...              recovery_start_ms=7_200_000, end_ms=10_800_000, severity=1.0,
...              resolved_without_event=False)
>>> ep.outcome()["kind"], ep.outcome()["onset"]
('infection', 3600000)
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from types import MappingProxyType
from typing import Any, Literal, get_args
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from simulators.physiology import N_EFFECTS
from simulators.population import CohortArrays, Condition, seeded_rng

#: Kinds of deterioration episode; also the ``kind`` of an outcome event.
EpisodeKind = Literal["hf_decompensation", "copd_exacerbation", "infection", "af_episode"]

#: All episode kinds.
EPISODE_KINDS: tuple[EpisodeKind, ...] = get_args(EpisodeKind)

#: ``schema`` of an outcome event on the wire.
OUTCOME_SCHEMA = "vitalrisk.outcome/1"

MS_PER_HOUR = 3_600_000
MS_PER_YEAR = 365.25 * 24 * MS_PER_HOUR
_EPISODE_DOMAIN = 0x455049  # "EPI"


@dataclass(frozen=True, slots=True)
class Incidence:
    """How often deterioration episodes start, per patient-year *at risk*.

    Heart-failure decompensation counts only patients with heart failure, COPD exacerbation
    only those with COPD, AF episodes only those with atrial fibrillation; infection counts
    everybody. Rates include the self-resolving episodes (``self_resolving_fraction`` of
    them publish no outcome).

    The defaults are several times real-world rates (a heart-failure patient is admitted
    about once a year, a COPD patient has one or two exacerbations) so that a test cohort
    sees enough events: 1,000 patients over 14 days (about 200 with heart failure, 200 with
    COPD, 90 with AF) expect about 100 episodes, 80 of them with an outcome.

    Examples
    --------
    >>> Incidence().rate("infection")
    0.7
    >>> Incidence().scaled(2.0).rate("copd_exacerbation")
    6.0
    >>> Incidence(infection=-1.0)
    Traceback (most recent call last):
    ...
    ValueError: incidence of infection must be a finite rate >= 0 per patient-year, got -1.0
    """

    hf_decompensation: float = 3.0
    copd_exacerbation: float = 3.0
    infection: float = 0.7
    af_episode: float = 8.0
    self_resolving_fraction: float = 0.2

    def __post_init__(self) -> None:
        for kind in EPISODE_KINDS:
            rate = getattr(self, kind)
            if not (np.isfinite(rate) and rate >= 0):
                raise ValueError(
                    f"incidence of {kind} must be a finite rate >= 0 per patient-year, got {rate}"
                )
        if not 0.0 <= self.self_resolving_fraction <= 1.0:
            raise ValueError(
                f"self_resolving_fraction must be in [0, 1], got {self.self_resolving_fraction}"
            )

    def rate(self, kind: EpisodeKind) -> float:
        """Episodes of ``kind`` per patient-year at risk."""
        return float(getattr(self, kind))

    def scaled(self, factor: float) -> Incidence:
        """The same incidence with every rate multiplied by ``factor``."""
        return replace(self, **{k: getattr(self, k) * factor for k in EPISODE_KINDS})

    @classmethod
    def none(cls) -> Incidence:
        """No episodes at all: a cohort that never deteriorates."""
        return cls(**{f.name: 0.0 for f in fields(cls) if f.name in EPISODE_KINDS})


@dataclass(frozen=True, slots=True)
class Trajectory:
    """Time course and size of one kind of episode.

    ``*_h`` are (low, high) bounds of uniformly drawn durations in hours. ``drift`` and
    ``acute`` are effect vectors in the column order of :mod:`simulators.physiology`
    (HR, RR, SpO2, temperature, systolic, diastolic, activity loss, HR irregularity) at
    full severity: ``drift`` grows through the prodrome and fades in recovery, ``acute``
    applies on top from onset to recovery start (only for episodes that become events).
    """

    condition: Condition | None
    prodrome_h: tuple[float, float]
    acute_h: tuple[float, float]
    recovery_h: tuple[float, float]
    drift: tuple[float, ...]
    acute: tuple[float, ...]


_ZERO = (0.0,) * N_EFFECTS

#: Trajectory of each episode kind; read-only.
TRAJECTORIES: Mapping[EpisodeKind, Trajectory] = MappingProxyType(
    {
        "hf_decompensation": Trajectory(
            condition="heart_failure", prodrome_h=(24.0, 72.0), acute_h=(24.0, 72.0),
            recovery_h=(48.0, 120.0), drift=(14.0, 6.0, -3.5, 0.0, -6.0, -3.0, 0.6, 0.0),
            acute=_ZERO,
        ),
        "copd_exacerbation": Trajectory(
            condition="copd", prodrome_h=(12.0, 48.0), acute_h=(24.0, 72.0),
            recovery_h=(72.0, 168.0), drift=(12.0, 8.0, -5.0, 0.3, 4.0, 2.0, 0.5, 0.0),
            acute=_ZERO,
        ),
        "infection": Trajectory(
            condition=None, prodrome_h=(6.0, 24.0), acute_h=(24.0, 72.0),
            recovery_h=(48.0, 120.0), drift=(24.0, 7.0, -2.0, 1.9, -24.0, -14.0, 0.6, 0.0),
            acute=_ZERO,
        ),
        "af_episode": Trajectory(
            condition="atrial_fibrillation", prodrome_h=(6.0, 12.0), acute_h=(1.0, 24.0),
            recovery_h=(0.5, 2.0), drift=(6.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.1, 5.0),
            acute=(45.0, 3.0, -1.0, 0.0, -10.0, -5.0, 0.3, 15.0),
        ),
    }
)  # fmt: skip

_SEVERITY = (0.7, 1.3)
_SELF_RESOLVING_PEAK = (0.4, 0.7)  # fraction of the full drift a near miss reaches
_PRODROME_EXPONENT = 1.5  # drift accelerates towards onset


@dataclass(frozen=True, slots=True)
class Episode:
    """One deterioration episode of one patient: the ground truth.

    Times are epoch milliseconds with ``prodrome_start_ms < onset_ms <= recovery_start_ms
    < end_ms``. For a self-resolving episode ``onset_ms`` is when the drift peaks and no
    outcome is published.
    """

    patient_id: str
    kind: EpisodeKind
    prodrome_start_ms: int
    onset_ms: int
    recovery_start_ms: int
    end_ms: int
    severity: float
    resolved_without_event: bool

    def outcome(self) -> dict[str, Any] | None:
        """The outcome event published at onset, or ``None`` for a self-resolving episode.

        Examples
        --------
        >>> Episode("pt-0", "af_episode", 0, 10, 20, 30, 1.0, True).outcome() is None
        True
        """
        if self.resolved_without_event:
            return None
        return {
            "schema": OUTCOME_SCHEMA,
            "patient_id": self.patient_id,
            "t": self.onset_ms,
            "kind": self.kind,
            "onset": self.onset_ms,
        }


def plan_episodes(
    cohort: CohortArrays,
    incidence: Incidence,
    *,
    seed: int,
    start_ms: int,
    duration_ms: int,
) -> list[Episode]:
    """Draw every episode whose onset falls in ``[start_ms, start_ms + duration_ms)``.

    Prodromes may begin before ``start_ms``: such a patient is already drifting when the
    stream starts. Each kind draws from its own random stream, so changing one rate leaves
    the other kinds' episodes unchanged.

    Parameters
    ----------
    cohort
        The patients.
    incidence
        Rates per patient-year at risk.
    seed
        The cohort's seed.
    start_ms, duration_ms
        The simulated period, epoch milliseconds.

    Returns
    -------
    list of Episode
        Sorted by onset, then patient id.

    Raises
    ------
    ValueError
        If ``duration_ms`` is not positive.

    Examples
    --------
    >>> from simulators.population import sample_cohort
    >>> cohort = sample_cohort(50, seed=5)
    >>> eps = plan_episodes(cohort, Incidence(infection=50.0), seed=5, start_ms=0,
    ...                     duration_ms=7 * 24 * MS_PER_HOUR)
    >>> len(eps) > 0, all(e.prodrome_start_ms < e.onset_ms < e.end_ms for e in eps)
    (True, True)
    """
    if duration_ms <= 0:
        raise ValueError(f"duration_ms must be positive, got {duration_ms}")
    years = duration_ms / MS_PER_YEAR
    out: list[Episode] = []
    for k, kind in enumerate(EPISODE_KINDS):
        traj = TRAJECTORIES[kind]
        rate = incidence.rate(kind)
        if rate == 0:
            continue
        rng = seeded_rng(seed, _EPISODE_DOMAIN, k)
        if traj.condition is None:
            at_risk = np.ones(len(cohort), dtype=np.bool_)
        else:
            at_risk = cohort.has(traj.condition)
        counts = rng.poisson(rate * years * at_risk)
        for i in np.flatnonzero(counts):
            for _ in range(int(counts[i])):
                out.append(_draw(rng, cohort.ids[i], kind, traj, incidence, start_ms, duration_ms))
    out.sort(key=lambda e: (e.onset_ms, e.patient_id, e.kind))
    return out


def _draw(
    rng: np.random.Generator,
    patient_id: str,
    kind: EpisodeKind,
    traj: Trajectory,
    incidence: Incidence,
    start_ms: int,
    duration_ms: int,
) -> Episode:
    u = rng.random(6)
    onset = start_ms + int(u[0] * duration_ms)
    prodrome = _span(traj.prodrome_h, u[1])
    severity = _SEVERITY[0] + (_SEVERITY[1] - _SEVERITY[0]) * float(u[2])
    resolves = bool(u[3] < incidence.self_resolving_fraction)
    if resolves:
        acute = 0
        recovery = int(prodrome * (0.5 + 0.5 * float(u[4])))
    else:
        acute = _span(traj.acute_h, u[4])
        recovery = _span(traj.recovery_h, u[5])
    return Episode(
        patient_id=patient_id,
        kind=kind,
        prodrome_start_ms=onset - prodrome,
        onset_ms=onset,
        recovery_start_ms=onset + acute,
        end_ms=onset + acute + max(recovery, 60_000),
        severity=round(severity, 3),
        resolved_without_event=resolves,
    )


def _span(bounds_h: tuple[float, float], u: float) -> int:
    return int((bounds_h[0] + (bounds_h[1] - bounds_h[0]) * u) * MS_PER_HOUR)


class EpisodeEffects:
    """Sums the effects of the episodes active at a time, for the whole cohort.

    Walks forward through time: :meth:`at` must be called with non-decreasing times. It keeps
    only the active episodes in view, so the cost per minute does not grow with the length
    of the run.

    Parameters
    ----------
    episodes
        The run's episodes (any order).
    patient_index
        Patient id -> row of the effects array.
    n
        Number of patients.

    Examples
    --------
    >>> ep = Episode("pt-a", "infection", 0, 10 * MS_PER_HOUR, 20 * MS_PER_HOUR,
    ...              30 * MS_PER_HOUR, 1.0, False)
    >>> walker = EpisodeEffects([ep], {"pt-a": 0, "pt-b": 1}, 2)
    >>> walker.at(5 * MS_PER_HOUR)[:, 3].round(2).tolist()  # temperature, mid-prodrome
    [0.67, 0.0]
    >>> float(walker.at(12 * MS_PER_HOUR)[0, 3])  # acute phase: full drift
    1.9
    >>> float(walker.at(40 * MS_PER_HOUR)[0, 3])  # recovered
    0.0
    """

    def __init__(self, episodes: list[Episode], patient_index: Mapping[str, int], n: int) -> None:
        eps = sorted(episodes, key=lambda e: e.prodrome_start_ms)
        self._n = n
        self._row = np.array([patient_index[e.patient_id] for e in eps], dtype=np.int64)
        self._ps = np.array([e.prodrome_start_ms for e in eps], dtype=np.float64)
        self._onset = np.array([e.onset_ms for e in eps], dtype=np.float64)
        self._rec = np.array([e.recovery_start_ms for e in eps], dtype=np.float64)
        self._end = np.array([e.end_ms for e in eps], dtype=np.float64)
        self._event = np.array([not e.resolved_without_event for e in eps], dtype=np.bool_)
        self._peak = np.where(self._event, 1.0, 0.0)
        self._severity = np.array([e.severity for e in eps], dtype=np.float64)
        drift = {k: np.array(TRAJECTORIES[k].drift) for k in EPISODE_KINDS}
        acute = {k: np.array(TRAJECTORIES[k].acute) for k in EPISODE_KINDS}
        self._drift = np.array([drift[e.kind] for e in eps]).reshape(len(eps), N_EFFECTS)
        self._acute = np.array([acute[e.kind] for e in eps]).reshape(len(eps), N_EFFECTS)
        # A near miss peaks at a fraction of the full drift, fixed per episode.
        for j, e in enumerate(eps):
            if e.resolved_without_event:
                lo, hi = _SELF_RESOLVING_PEAK
                frac = (e.severity - _SEVERITY[0]) / (_SEVERITY[1] - _SEVERITY[0])
                self._peak[j] = lo + (hi - lo) * frac
        self._next = 0
        self._active = np.zeros(0, dtype=np.int64)
        self._last_t = -np.inf

    def at(self, t_ms: float) -> npt.NDArray[np.float64]:
        """The ``(n, N_EFFECTS)`` effects at ``t_ms``.

        Raises
        ------
        ValueError
            If ``t_ms`` is earlier than the previous call's.
        """
        if t_ms < self._last_t:
            raise ValueError(f"EpisodeEffects.at needs non-decreasing times, got {t_ms} after {self._last_t}")
        self._last_t = t_ms
        stop = int(np.searchsorted(self._ps, t_ms, side="right"))
        if stop > self._next:
            self._active = np.concatenate([self._active, np.arange(self._next, stop)])
            self._next = stop
        a = self._active[self._end[self._active] > t_ms]
        self._active = a
        out = np.zeros((self._n, N_EFFECTS))
        if a.size == 0:
            return out
        ps, onset, rec, end = self._ps[a], self._onset[a], self._rec[a], self._end[a]
        peak = self._peak[a]
        rising = _bound((t_ms - ps) / (onset - ps), 0.0, 1.0) ** _PRODROME_EXPONENT
        fading = _bound(1.0 - (t_ms - rec) / (end - rec), 0.0, 1.0)
        level = peak * np.where(t_ms < onset, rising, np.where(t_ms < rec, 1.0, fading))
        in_acute = (self._event[a] & (t_ms >= onset) & (t_ms < rec)).astype(np.float64)
        sev = self._severity[a][:, None]
        contrib = sev * (level[:, None] * self._drift[a] + in_acute[:, None] * self._acute[a])
        np.add.at(out, self._row[a], contrib)
        return out


def _bound(values: npt.NDArray[np.float64], lo: float, hi: float) -> npt.NDArray[np.float64]:
    """``np.clip`` without its Python-level dispatch (called many times a simulated minute)."""
    return np.minimum(np.maximum(values, lo), hi)
