"""Choosing the alert policy on some cohorts and judging it on others: the grid, the rule, the statistics. Pure.

``vitalrisk evaluate --tune-seeds 1,2 --test-seeds 3,4,5`` runs several simulated cohorts. Each
cohort's scores are replayed under every :class:`Candidate` policy of a grid
(:func:`candidate_grid`: entry thresholds per head, minimum durations, which heads page, and
model-risk grouping once the engine has it) and tallied per patient (:class:`PatientTally`:
pages, true pages, onsets, onsets paged in time). Then:

1. :func:`select_policy` picks one candidate **from the tuning cohorts' tallies alone**, by a
   rule written here (:data:`RULE`): the highest pooled episode sensitivity among the candidates
   with pooled PPV ≥ the target and pages per patient-day ≤ the target; ties go to the higher
   PPV, then to fewer pages, then to the grid's order. If no candidate meets the PPV target, the
   one nearest the target (largest ``min(PPV / target PPV, sensitivity / target sensitivity)``)
   within the page budget.
2. The chosen policy is frozen and reported on the test cohorts (:func:`run_protocol`): pooled
   (the patients of every test seed together) and per seed, with 95 % intervals, and per
   subgroup (:func:`subgroup_burden`).

Intervals: a percentile bootstrap over **patients** (:func:`operating_point`). Pages are not
independent trials: one deteriorating or noisy patient raises several pages, and a patient's
onsets share one physiology; a Wilson interval over pages treats a patient's ten pages as ten
independent draws and comes out too narrow. Resampling whole patients keeps that clustering,
covers pages per patient-day (not a proportion) by the same method, and pooled over seeds it is
the same resampling of the pooled patients. A test checks its coverage on synthetic patients.

Examples
--------
>>> t = PatientTally.of(pages=[2, 0, 1], true_pages=[1, 0, 1], onsets=[1, 0, 1], detected=[1, 0, 1],
...                     leads_h=[3.0, 5.0])
>>> cohort = CohortTallies(seed=7, patient_ids=("a", "b", "c"), report_days=2.0,
...                        groups={"sex": ("F", "M", "F")}, by_candidate={"c1": t})
>>> p = operating_point([cohort], "c1", resamples=0)
>>> p.pages, p.true_pages, p.onsets, p.detected, p.pages_per_patient_day.value, p.ppv.value, p.median_lead_h
(3, 2, 2, 2, 0.5, 0.6666666666666666, 4.0)
>>> [(s.group, s.point.pages) for s in subgroup_burden([cohort], "c1", resamples=0)]
[('F', 3), ('M', 0)]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TypeAlias

import numpy as np
import numpy.typing as npt

from kernel.alerts import SEVERITIES
from stream.alerts.rules import MINUTE_MS, AlertPolicy, Threshold

IntVector = npt.NDArray[np.int64]
#: A JSON value (as :data:`stream.evaluate_report.JsonValue`, which imports this module's types).
Json: TypeAlias = "None | bool | int | float | str | list[Json] | dict[str, Json]"

#: The heads whose entry threshold the grid moves together (the "any" head and the AF head:
#: AF's one warning is sudden, so its head stays with the "any" head).
BASE_HEADS: tuple[str, ...] = ("any", "af_episode")
#: The per-condition heads of slower deteriorations, moved together (or switched off).
SLOW_HEADS: tuple[str, ...] = ("hf_decompensation", "copd_exacerbation", "infection")
#: Grid values: entry of the base heads, entry of the slow heads (``None``: they do not page),
#: minimum duration above entry. Exit is entry minus :data:`HYSTERESIS`.
BASE_ENTRIES: tuple[float, ...] = (0.5, 0.6, 0.7)
SLOW_ENTRIES: tuple[float | None, ...] = (0.6, 0.7, 0.8, None)
FOR_MS: tuple[int, ...] = (2 * MINUTE_MS, 10 * MINUTE_MS)
HYSTERESIS = 0.1
#: The selection rule, as the report states it.
RULE = ("highest pooled episode sensitivity on the tuning cohorts among candidates with pooled PPV >= "
        "target and pages per patient-day <= target; ties: higher PPV, fewer pages, grid order; if none "
        "reaches the PPV target: largest min(PPV / target PPV, sensitivity / target sensitivity) within "
        "the page budget")
#: Bootstrap resamples of the reported intervals.
RESAMPLES = 2000


@dataclass(frozen=True, slots=True)
class Candidate:
    """One alert policy of the grid: a real :class:`~stream.alerts.rules.AlertPolicy` and the heads that page.

    Parameters
    ----------
    name
        Short, unique label, e.g. ``"base0.6-slow0.7-for2"``.
    policy
        The policy the engine replays (``data_stopped`` off: the replay has no wall clock).
    heads
        The model heads that page; the others' crossings are ignored.
    """

    name: str
    policy: AlertPolicy
    heads: tuple[str, ...]

    def describe(self) -> dict[str, Json]:
        """The candidate as JSON: thresholds of each paging head, and the policy's other switches.

        >>> c = candidate_grid(("any", "infection"))[0]
        >>> c.describe()["heads"]["any"]
        {'enter': 0.5, 'exit': 0.4, 'for_min': 2.0, 'clear_min': 2.0}
        """
        heads: dict[str, Json] = {}
        for h in self.heads:
            t = self.policy.threshold(f"risk_high:{h}")
            heads[h] = {"enter": t.enter, "exit": t.exit, "for_min": t.for_ms / MINUTE_MS,
                        "clear_min": t.clear_for_ms / MINUTE_MS}
        return {"name": self.name, "heads": heads, "grouped": self.policy.group_model_risk}


def candidate_grid(conditions: Sequence[str], *, base: AlertPolicy | None = None) -> tuple[Candidate, ...]:
    """The candidate policies, in a fixed order (the selection's last tie-break).

    Every combination of :data:`BASE_ENTRIES` (the heads of :data:`BASE_HEADS`),
    :data:`SLOW_ENTRIES` (the heads of :data:`SLOW_HEADS`; ``None`` leaves them silent) and
    :data:`FOR_MS`, each head exiting :data:`HYSTERESIS` below its entry and clearing after the
    base policy's ``clear_for_ms``, each with a patient's model-risk pages grouped and not. Heads not in ``conditions`` are
    left out. The default policy (every head at 0.6, 2 min) is one of the candidates.

    Parameters
    ----------
    conditions
        The model's heads.
    base
        The policy every candidate varies (default: :class:`AlertPolicy` with ``data_stopped`` off).

    Examples
    --------
    >>> grid = candidate_grid(("any", "hf_decompensation", "copd_exacerbation", "infection", "af_episode"))
    >>> len(grid), len({c.name for c in grid}) == len(grid)
    (48, True)
    >>> c = next(c for c in grid if c.name.startswith("base0.6-slow0.6-for2"))
    >>> c.policy.threshold("risk_high:infection") == AlertPolicy().risk
    True
    """
    start = base if base is not None else AlertPolicy(data_stopped_ms=None)
    base_heads = tuple(h for h in conditions if h in BASE_HEADS)
    slow_heads = tuple(h for h in conditions if h in SLOW_HEADS)
    out: list[Candidate] = []
    for grouped in (True, False):
        for for_ms in FOR_MS:
            for enter in BASE_ENTRIES:
                for slow in SLOW_ENTRIES:
                    risk = _threshold(enter, for_ms, start.risk)
                    by_condition = {h: _threshold(slow, for_ms, start.risk) for h in slow_heads} if slow else {}
                    policy = replace(start, risk=risk, risk_by_condition=MappingProxyType(by_condition),
                                     group_model_risk=grouped)
                    heads = (*base_heads, *slow_heads) if slow is not None else base_heads
                    name = (f"base{enter:g}-slow{'off' if slow is None else f'{slow:g}'}-for{for_ms // MINUTE_MS}"
                            + ("-grouped" if grouped else "-ungrouped"))
                    out.append(Candidate(name, policy, tuple(h for h in conditions if h in heads)))
    return tuple(out)


def _threshold(enter: float, for_ms: int, like: Threshold) -> Threshold:
    return Threshold(enter, round(enter - HYSTERESIS, 6), for_ms=for_ms, clear_for_ms=like.clear_for_ms,
                     severity=like.severity if like.severity in SEVERITIES else "warning")


@dataclass(frozen=True, slots=True)
class PatientTally:
    """One candidate's counts on one cohort, per patient (aligned with :attr:`CohortTallies.patient_ids`).

    ``pages``: firing pages in the report period; ``true_pages``: those followed by an onset
    within the horizon; ``onsets``: onsets that count (some score could warn of them);
    ``detected``: onsets a page preceded within the horizon; ``leads_h``: each detected onset's
    lead (onset minus the first page before it), hours, in no particular patient order.
    """

    pages: IntVector
    true_pages: IntVector
    onsets: IntVector
    detected: IntVector
    leads_h: tuple[float, ...] = ()

    @classmethod
    def of(cls, *, pages: Sequence[int], true_pages: Sequence[int], onsets: Sequence[int], detected: Sequence[int],
           leads_h: Sequence[float] = ()) -> PatientTally:
        """A tally from per-patient sequences.

        Raises
        ------
        ValueError
            If the sequences differ in length, or a count is negative or beyond its total.
        """
        arrays = [np.asarray(v, dtype=np.int64) for v in (pages, true_pages, onsets, detected)]
        if len({a.shape for a in arrays}) != 1 or arrays[0].ndim != 1:
            raise ValueError("a tally needs one count per patient in each of pages, true_pages, onsets, detected")
        p, t, o, d = arrays
        if (p < 0).any() or (o < 0).any() or (t < 0).any() or (d < 0).any() or (t > p).any() or (d > o).any():
            raise ValueError("a tally needs 0 <= true_pages <= pages and 0 <= detected <= onsets per patient")
        return cls(p, t, o, d, tuple(float(x) for x in leads_h))


@dataclass(frozen=True, slots=True)
class CohortTallies:
    """What the selection and the report read of one cohort: its patients and every candidate's tally.

    Parameters
    ----------
    seed
        The cohort's simulator seed.
    patient_ids
        Every patient of the cohort (those without a score or a page too: they count in patient-days).
    report_days
        Length of the report period (each patient's days in it).
    groups
        Attribute -> each patient's group, aligned with ``patient_ids``.
    by_candidate
        Candidate name -> its :class:`PatientTally`.
    """

    seed: int
    patient_ids: tuple[str, ...]
    report_days: float
    groups: Mapping[str, tuple[str, ...]]
    by_candidate: Mapping[str, PatientTally]

    def permuted(self, rng: np.random.Generator) -> CohortTallies:
        """The same cohort with its patients' tallies shuffled among them (for tests of the selection)."""
        order = rng.permutation(len(self.patient_ids))
        return replace(self, by_candidate={
            name: PatientTally(t.pages[order], t.true_pages[order], t.onsets[order], t.detected[order],
                               t.leads_h[::-1])
            for name, t in self.by_candidate.items()})


@dataclass(frozen=True, slots=True)
class Estimate:
    """A point estimate and its 95 % interval (NaN when undefined or not computed)."""

    value: float
    low: float = math.nan
    high: float = math.nan

    def as_dict(self) -> dict[str, Json]:
        """``{"value", "ci95"}``, NaN as ``None``."""
        return {"value": _num(self.value), "ci95": [_num(self.low), _num(self.high)]}


@dataclass(frozen=True, slots=True)
class OperatingPoint:
    """One candidate's burden over some patients: counts, the three rates with intervals, median lead."""

    candidate: str
    seeds: tuple[int, ...]
    patients: int
    patient_days: float
    pages: int
    true_pages: int
    onsets: int
    detected: int
    pages_per_patient_day: Estimate
    ppv: Estimate
    sensitivity: Estimate
    median_lead_h: float

    def meets(self, target: Target) -> bool:
        """Whether the point estimates meet every part of ``target``."""
        return (self.ppv.value >= target.ppv and self.sensitivity.value >= target.sensitivity
                and self.pages_per_patient_day.value <= target.pages_per_patient_day)

    def as_dict(self) -> dict[str, Json]:
        """JSON-friendly, NaN as ``None``."""
        return {"candidate": self.candidate, "seeds": list(self.seeds), "patients": self.patients,
                "patient_days": _num(self.patient_days), "pages": self.pages, "true_pages": self.true_pages,
                "onsets": self.onsets, "detected": self.detected,
                "pages_per_patient_day": self.pages_per_patient_day.as_dict(), "ppv": self.ppv.as_dict(),
                "sensitivity": self.sensitivity.as_dict(), "median_lead_h": _num(self.median_lead_h)}


@dataclass(frozen=True, slots=True)
class Target:
    """The burden target: PPV and episode sensitivity at least, pages per patient-day at most."""

    ppv: float = 0.5
    sensitivity: float = 0.8
    pages_per_patient_day: float = 1.0

    def as_dict(self) -> dict[str, Json]:
        """JSON-friendly."""
        return {"ppv": self.ppv, "sensitivity": self.sensitivity, "pages_per_patient_day": self.pages_per_patient_day}


@dataclass(frozen=True, slots=True)
class SubgroupBurden:
    """One subgroup's burden under one candidate (its patients of every cohort given)."""

    attribute: str
    group: str
    point: OperatingPoint

    def as_dict(self) -> dict[str, Json]:
        """JSON-friendly: attribute, group, and the operating point's fields."""
        return {"attribute": self.attribute, "group": self.group, **self.point.as_dict()}


@dataclass(frozen=True, slots=True)
class _Pool:
    """Per-patient arrays of one candidate over several cohorts, concatenated."""

    days: npt.NDArray[np.float64]
    pages: IntVector
    true_pages: IntVector
    onsets: IntVector
    detected: IntVector
    leads_h: tuple[float, ...]


def _pool(cohorts: Sequence[CohortTallies], candidate: str,
          masks: Sequence[npt.NDArray[np.bool_]] | None = None) -> _Pool:
    parts: list[tuple[npt.NDArray[np.float64], PatientTally, npt.NDArray[np.bool_]]] = []
    leads: list[float] = []
    for i, c in enumerate(cohorts):
        try:
            t = c.by_candidate[candidate]
        except KeyError:
            raise ValueError(f"cohort seed {c.seed} has no tally of candidate {candidate!r}") from None
        n = len(c.patient_ids)
        if len(t.pages) != n:
            raise ValueError(f"cohort seed {c.seed}: candidate {candidate!r} tallies {len(t.pages)} patients, not {n}")
        mask = masks[i] if masks is not None else np.ones(n, dtype=bool)
        parts.append((np.full(n, c.report_days, dtype=np.float64), t, mask))
        if masks is None:
            leads += t.leads_h
    if masks is not None:  # leads are not per patient: a subgroup's median lead is not reported
        leads = []

    def cat(arrays: list[npt.NDArray[np.int64]]) -> IntVector:
        return np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)

    return _Pool(np.concatenate([d[m] for d, _, m in parts]) if parts else np.zeros(0),
                 cat([t.pages[m] for _, t, m in parts]), cat([t.true_pages[m] for _, t, m in parts]),
                 cat([t.onsets[m] for _, t, m in parts]), cat([t.detected[m] for _, t, m in parts]), tuple(leads))


def _ratio(num: npt.NDArray[np.float64] | npt.NDArray[np.int64],
           den: npt.NDArray[np.float64] | npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan).astype(np.float64)


def _point_of(pool: _Pool, candidate: str, seeds: tuple[int, ...], *, resamples: int, rng_seed: int) -> OperatingPoint:
    n = len(pool.pages)
    days = float(pool.days.sum())
    pages, true_pages = int(pool.pages.sum()), int(pool.true_pages.sum())
    onsets, detected = int(pool.onsets.sum()), int(pool.detected.sum())
    rate = pages / days if days > 0 else math.nan
    ppv = true_pages / pages if pages else math.nan
    sens = detected / onsets if onsets else math.nan
    intervals = [(math.nan, math.nan)] * 3
    if resamples > 0 and n > 0:
        rng = np.random.default_rng(rng_seed)
        # Resample whole patients: sums of each resample, in blocks to bound the index matrix.
        sums = {k: np.empty(resamples) for k in ("days", "pages", "true", "onsets", "detected")}
        block = max(1, 2_000_000 // n)
        for a in range(0, resamples, block):
            b = min(resamples, a + block)
            idx = rng.integers(0, n, size=(b - a, n))
            sums["days"][a:b] = pool.days[idx].sum(axis=1)
            sums["pages"][a:b] = pool.pages[idx].sum(axis=1)
            sums["true"][a:b] = pool.true_pages[idx].sum(axis=1)
            sums["onsets"][a:b] = pool.onsets[idx].sum(axis=1)
            sums["detected"][a:b] = pool.detected[idx].sum(axis=1)
        draws = (_ratio(sums["pages"], sums["days"]), _ratio(sums["true"], sums["pages"]),
                 _ratio(sums["detected"], sums["onsets"]))
        intervals = [_percentiles(d) for d in draws]
    values = (rate, ppv, sens)
    est = [Estimate(v, *(iv if not math.isnan(v) else (math.nan, math.nan)))
           for v, iv in zip(values, intervals, strict=True)]
    lead = float(np.median(pool.leads_h)) if pool.leads_h else math.nan
    return OperatingPoint(candidate, seeds, n, days, pages, true_pages, onsets, detected, est[0], est[1], est[2], lead)


def _percentiles(draws: npt.NDArray[np.float64]) -> tuple[float, float]:
    finite = draws[~np.isnan(draws)]
    if not len(finite):
        return math.nan, math.nan
    lo, hi = np.percentile(finite, [2.5, 97.5])
    return float(lo), float(hi)


def operating_point(cohorts: Sequence[CohortTallies], candidate: str, *, resamples: int = RESAMPLES,
                    rng_seed: int = 0) -> OperatingPoint:
    """``candidate``'s burden over the patients of every cohort in ``cohorts`` pooled.

    Pages per patient-day (pages over patient-days), PPV (true pages over pages) and episode
    sensitivity (detected over onsets), each with a 95 % percentile bootstrap interval over
    patients (``resamples`` draws of as many patients as the pool holds, with replacement,
    seeded by ``rng_seed``; ``0`` resamples: no interval), and the median lead of the detected onsets.

    Raises
    ------
    ValueError
        If a cohort has no tally of ``candidate``.
    """
    pool = _pool(cohorts, candidate)
    return _point_of(pool, candidate, tuple(c.seed for c in cohorts), resamples=resamples, rng_seed=rng_seed)


def subgroup_burden(cohorts: Sequence[CohortTallies], candidate: str, *, resamples: int = RESAMPLES,
                    rng_seed: int = 0) -> list[SubgroupBurden]:
    """``candidate``'s burden in every group of every attribute (sex, age band, skin tone), cohorts pooled.

    Each attribute's groups split the patients: their pages, onsets, patients and patient-days
    add up to the whole. Groups in sorted order per attribute; a subgroup's median lead is not
    kept (NaN).
    """
    if not cohorts:
        return []
    out: list[SubgroupBurden] = []
    seeds = tuple(c.seed for c in cohorts)
    for attribute in sorted(set().union(*(c.groups.keys() for c in cohorts))):
        values = sorted({g for c in cohorts for g in c.groups.get(attribute, ())})
        for group in values:
            masks = [np.array([g == group for g in c.groups.get(attribute, ("",) * len(c.patient_ids))], dtype=bool)
                     for c in cohorts]
            pool = _pool(cohorts, candidate, masks)
            out.append(SubgroupBurden(attribute, group, _point_of(pool, candidate, seeds, resamples=resamples,
                                                                  rng_seed=rng_seed)))
    return out


@dataclass(frozen=True, slots=True)
class Selection:
    """The candidate :func:`select_policy` chose, whether it met the target, and every candidate's tuning point."""

    chosen: Candidate
    feasible: bool
    """Whether the chosen candidate met the PPV target and the page budget on the tuning cohorts."""
    tuning: tuple[OperatingPoint, ...]
    """Every candidate's pooled point on the tuning cohorts (no intervals), in grid order."""


def select_policy(tuning: Sequence[CohortTallies], candidates: Sequence[Candidate],
                  target: Target = Target()) -> Selection:
    """Choose one of ``candidates`` from the tuning cohorts' tallies alone, by :data:`RULE`.

    Nothing of a test cohort is an argument: the choice cannot depend on one.

    Raises
    ------
    ValueError
        Without tuning cohorts or candidates, or if a cohort lacks a candidate's tally.

    Examples
    --------
    >>> def tally(pages, true, detected):
    ...     return PatientTally.of(pages=[pages], true_pages=[true], onsets=[10], detected=[detected])
    >>> grid = candidate_grid(("any",))[:3]
    >>> tallies = dict(zip((c.name for c in grid), (tally(10, 6, 7), tally(20, 11, 9), tally(30, 12, 10))))
    >>> c = CohortTallies(seed=1, patient_ids=("a",), report_days=100.0, groups={}, by_candidate=tallies)
    >>> s = select_policy([c], grid)
    >>> s.chosen.name == grid[1].name, s.feasible
    (True, True)
    """
    if not tuning:
        raise ValueError("the selection needs at least one tuning cohort")
    if not candidates:
        raise ValueError("the selection needs at least one candidate policy")
    points = tuple(operating_point(tuning, c.name, resamples=0) for c in candidates)

    def num(v: float) -> float:
        return -math.inf if math.isnan(v) else v

    def order(i: int) -> tuple[float, float, float, int]:
        p = points[i]
        return (num(p.sensitivity.value), num(p.ppv.value), -num(p.pages_per_patient_day.value), -i)

    budget = [i for i, p in enumerate(points) if p.pages_per_patient_day.value <= target.pages_per_patient_day]
    feasible = [i for i in budget if points[i].ppv.value >= target.ppv]
    if feasible:
        best = max(feasible, key=order)
    else:
        def nearness(i: int) -> tuple[float, float, float, float, int]:
            p = points[i]
            return (min(num(p.ppv.value) / target.ppv, num(p.sensitivity.value) / target.sensitivity), *order(i))
        best = max(budget or range(len(points)), key=nearness)
    return Selection(candidates[best], bool(feasible), points)


@dataclass(frozen=True, slots=True)
class Protocol:
    """A whole protocol run: the seeds, the choice on the tuning cohorts, and its report on the test cohorts."""

    tune_seeds: tuple[int, ...]
    test_seeds: tuple[int, ...]
    target: Target
    selection: Selection
    test_pooled: OperatingPoint
    test_per_seed: tuple[OperatingPoint, ...]
    test_subgroups: tuple[SubgroupBurden, ...]
    tune_pooled: OperatingPoint
    """The chosen candidate on the tuning cohorts, with intervals (what it was chosen on)."""
    candidates: tuple[Candidate, ...] = field(repr=False, default=())

    def as_dict(self) -> dict[str, Json]:
        """The ``protocol`` object of ``--json``: which seeds did what, the rule, the choice and its report."""
        return {
            "tune_seeds": list(self.tune_seeds), "test_seeds": list(self.test_seeds),
            "rule": RULE, "target": self.target.as_dict(), "interval": "95 % percentile bootstrap over patients "
            f"({RESAMPLES} resamples)", "chosen": self.selection.chosen.describe(),
            "target_met_on_tuning": self.selection.feasible,
            "target_met_on_test": self.test_pooled.meets(self.target),
            "tuning_chosen": self.tune_pooled.as_dict(),
            "test_pooled": self.test_pooled.as_dict(),
            "test_per_seed": [p.as_dict() for p in self.test_per_seed],
            "test_subgroups": [s.as_dict() for s in self.test_subgroups],
            "tuning_candidates": [p.as_dict() for p in self.selection.tuning],
        }


def check_seeds(tune_seeds: Sequence[int], test_seeds: Sequence[int]) -> None:
    """Refuse seed lists a protocol cannot be honest with: empty, negative, repeated or shared.

    Raises
    ------
    ValueError
        With a one-line message naming the fault.

    Examples
    --------
    >>> check_seeds([1, 2], [2, 3])
    Traceback (most recent call last):
    ...
    ValueError: --tune-seeds and --test-seeds share seed 2: a test cohort must not be tuned on
    """
    for flag, seeds in (("--tune-seeds", tune_seeds), ("--test-seeds", test_seeds)):
        if not seeds:
            raise ValueError(f"{flag} needs at least one seed")
        if any(s < 0 for s in seeds):
            raise ValueError(f"{flag} takes seeds >= 0, got {min(seeds)}")
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"{flag} repeats a seed: {', '.join(str(s) for s in seeds)}")
    shared = sorted(set(tune_seeds) & set(test_seeds))
    if shared:
        raise ValueError(f"--tune-seeds and --test-seeds share seed {', '.join(str(s) for s in shared)}: "
                         "a test cohort must not be tuned on")


def run_protocol(tuning: Sequence[CohortTallies], testing: Sequence[CohortTallies], candidates: Sequence[Candidate],
                 target: Target = Target(), *, resamples: int = RESAMPLES, rng_seed: int = 0) -> Protocol:
    """Choose on ``tuning`` (:func:`select_policy`), freeze, report on ``testing`` pooled and per seed.

    Raises
    ------
    ValueError
        If the seeds are empty, repeated or shared (:func:`check_seeds`).
    """
    tune_seeds, test_seeds = tuple(c.seed for c in tuning), tuple(c.seed for c in testing)
    check_seeds(tune_seeds, test_seeds)
    selection = select_policy(tuning, candidates, target)
    name = selection.chosen.name
    return Protocol(
        tune_seeds, test_seeds, target, selection,
        operating_point(testing, name, resamples=resamples, rng_seed=rng_seed),
        tuple(operating_point([c], name, resamples=resamples, rng_seed=rng_seed) for c in testing),
        tuple(subgroup_burden(testing, name, resamples=resamples, rng_seed=rng_seed)),
        operating_point(tuning, name, resamples=resamples, rng_seed=rng_seed), tuple(candidates))


def _num(v: float) -> float | None:
    return None if math.isnan(v) or math.isinf(v) else float(v)
