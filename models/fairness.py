"""Fairness: the prequential metrics per patient subgroup, and an ops event when a group is served worse.

Subgroups (:func:`subgroups`): ``sex`` (``F``/``M``), ``age_band`` (``<65``, ``65-74``, ``75+``)
and ``skin_tone`` by Fitzpatrick type (``I-II``, ``III-IV``, ``V-VI``) — the attribute that
matters for pulse oximetry, which over-reads SpO2 in darker skin and hides hypoxaemia
(Sjoding et al., NEJM 2020). A biased SpO2 makes a darker-skinned patient look healthier than
they are, so a score that leans on absolute SpO2 *under-predicts* for them: it gives them lower
scores than their event rate warrants, and misses more of their deteriorations. The monitor
gates on exactly those two harms, each group against the group served best (the reference):

- **calibration-in-the-large** (``calibration``): E/O, the group's expected events (sum of its
  predicted probabilities) over its observed positive windows; the gap is the reference's E/O
  over the group's. A calibrated scorer (the model) is used as is. A ranking score (NEWS2's
  ``total / 20``) is first mapped to probabilities by histogram calibration — the observed
  event rate at each score level, pooled over all patients — so its E/O asks: "does this group
  have more events than its NEWS2 levels predict for everybody?". E comes from every window,
  so the noise is in O: the number of episodes.
- **episode sensitivity at the alert threshold** (``sensitivity``): the share of the group's
  patients with a positive window (an onset within the horizon) who had one scored at or above
  the threshold — an alert before the onset. The gap is the reference's share minus the
  group's. Counted in episodes, not windows: window-level sensitivity (still in the table) is
  dominated by which few long episodes fall in a group.

AUROC, Brier and ECE per group are reported too but not gated: AUROC is blind to a shift that
moves a whole group's scores, which is exactly what a measurement bias does.

**What raises an ops event.** A gap is *flagged* — one :class:`~kernel.events.OpsEvent` of
kind ``"fairness"`` per (scorer, metric, attribute) when it opens, again when it names a group
it did not, or after it has closed — when, for some group, all three hold:

1. it is in the direction of harm and beyond the policy's limit (E/O ratio
   ``max_calibration_ratio``, sensitivity shortfall ``max_sensitivity_gap``): a group is named
   only for fewer predicted events or more missed episodes than the reference. Gaps are
   relative: a group scored too high becomes the reference, and the others are named (for a
   histogram-calibrated score the two are the same thing; for the model it may be the
   over-scored group that is wrong);
2. it is *credible*: beyond no gap by ``z`` standard errors, counted in patients with a
   positive window, not in windows — one episode makes a hundred positive windows, so a
   window count would call two episodes a large sample. For E/O the standard error of
   log(E/O) is 1/sqrt(episodes) per group (Poisson); for sensitivity, the two-proportion
   standard error over episodes. Sampling noise in small groups is reported, not paged;
3. it is not an *inherent* gap of a fixed baseline (``FairnessPolicy.inherent_gaps``), which
   ops cannot act on: by default NEWS2 by age band. The RCP chart has no age term and older
   patients deteriorate at lower scores, so NEWS2 under-predicts for over-75s whatever the
   devices do. Such gaps are listed by :meth:`FairnessMonitor.inherent` and in the table.

Every group beyond the limit and credible is listed (``low_groups``); the event names the
worst (``low_group``). The reference is the best-served group, so a bias that grows with skin
tone (the simulator over-reads by 0, 1 and 2.5 points for I-II, III-IV and V-VI) can name
III-IV as well as V-VI. Picking the best of several groups as the reference makes the
credibility gate somewhat optimistic; the limit is the guard against that.

Why these: ops act on what changed in *this* deployment — a device that measures some
patients worse, a model that learned to serve some patients worse. The deployed model is
held to every attribute; NEWS2, which also pages here, is held to every attribute but the one
its chart knowingly ignores. A group is compared only when it has at least ``min_episodes``
patients with an episode (30: below that the normal approximations are poor) and, for
calibration, ``min_positives`` positive windows — and so is the reference.

What the simulator shows (docs/models.md, "Fairness"; 1,000 patients x 10 days at six
times the default incidence, about 200 patients with an episode, 40-85 a skin-tone group).
Switching its SpO2 over-reading on (a paired counterfactual, seeds 42, 7 and 1) multiplies
NEWS2's E/O for Fitzpatrick V-VI by 0.78-0.79 and lowers its episode sensitivity by 0.12-0.16;
the personalised model does not under-predict V-VI with it, its SpO2 signal being a deviation
from the patient's own baseline, which a constant offset cancels. At the end of the run the
monitor flags NEWS2 on skin tone naming V-VI (with III-IV, biased by 1 point) with the bias on,
on all three seeds (calibration, sensitivity or both), and nothing with it off. The model sees
each patient's age band (:mod:`models.patient_context`): on vitals alone it was flagged on
calibration by age band on seed 1 (over-75s under-predicted, ratio 1.57), in both runs. The
margins are thin: the bias's own effect on the V-VI : I-II E/O ratio is about 1.5, the limit
itself. The daily checks are repeated tests at ``z`` each, with no correction for the repeated
looks or the ~16 comparisons, so an event needs the gap on ``confirm_checks`` (2) consecutive
checks: with the bias off, seeds 42 and 7 raise none; seed 1 raises one (NEWS2 episode
sensitivity by sex, on two days in both runs, closed by the end).

Examples
--------
>>> import numpy as np
>>> groups = {f"pt-{i}": {"skin_tone": ("I-II", "V-VI")[i % 2]} for i in range(4)}
>>> mon = FairnessMonitor(groups, scorers=("model",), thresholds={"model": 0.5},
...                       policy=FairnessPolicy(min_positives=2, min_episodes=2, z=0.0,
...                                             attributes=("skin_tone",)))  # z=0: four patients are no sample
>>> pids = [f"pt-{i}" for i in range(4) for _ in range(3)]
>>> y = np.array([True, True, False] * 4)
>>> p = np.array([.9, .8, .1,  .3, .2, .1,  .9, .7, .1,  .6, .3, .1])  # V-VI (pt-1, pt-3) scored low
>>> mon.update_many(pids, y, {"model": p})
>>> mon.check(0)  # flagged on one check: not yet an event (policy.confirm_checks = 2)
[]
>>> [(e.details["metric"], e.details["low_group"]) for e in mon.check(60_000)]
[('calibration', 'V-VI'), ('sensitivity', 'V-VI')]
>>> mon.check(120_000)  # still open: not raised again
[]
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, cast

import numpy as np
import numpy.typing as npt

from kernel.events import OpsEvent
from models.prequential import ScoreSketch
from kernel.wire import PATIENT_ATTRIBUTES, PatientRecord

if TYPE_CHECKING:
    from prometheus_client import Gauge


class FairnessGauges(Protocol):
    """The gauges :meth:`FairnessMonitor.publish` sets (:class:`sinks.metrics.ModelMetrics` has them)."""

    @property
    def subgroup_auroc(self) -> Gauge: ...

    @property
    def fairness_gap(self) -> Gauge: ...

#: Attributes monitored, in report order.
ATTRIBUTES: tuple[str, ...] = ("sex", "age_band", "skin_tone")
#: Groups of each attribute, in report order: the values a patient record may carry on the wire.
GROUPS: Mapping[str, tuple[str, ...]] = PATIENT_ATTRIBUTES


def age_band(age_years: int) -> str:
    """``<65``, ``65-74`` or ``75+``.

    >>> age_band(64), age_band(65), age_band(80)
    ('<65', '65-74', '75+')
    """
    return "<65" if age_years < 65 else "65-74" if age_years < 75 else "75+"


def skin_tone_group(fitzpatrick: int) -> str:
    """Fitzpatrick type 1-6 as ``I-II``, ``III-IV`` or ``V-VI``.

    >>> [skin_tone_group(t) for t in (1, 4, 6)]
    ['I-II', 'III-IV', 'V-VI']
    """
    if not 1 <= fitzpatrick <= 6:
        raise ValueError(f"Fitzpatrick type must be 1 to 6, got {fitzpatrick}")
    return ("I-II", "III-IV", "V-VI")[(fitzpatrick - 1) // 2]


def subgroups(sex: str, age_years: int, skin_tone: int) -> dict[str, str]:
    """The subgroup of each attribute for one patient.

    >>> subgroups("F", 77, 5)
    {'sex': 'F', 'age_band': '75+', 'skin_tone': 'V-VI'}
    """
    return {"sex": sex, "age_band": age_band(age_years), "skin_tone": skin_tone_group(skin_tone)}


class PatientAttributes(Protocol):
    """What :func:`patient_record` reads of a patient: :class:`simulators.population.Patient` has it
    (the models import no simulator, so the type is structural)."""

    @property
    def patient_id(self) -> str: ...
    @property
    def sex(self) -> str: ...
    @property
    def age_years(self) -> int: ...
    @property
    def skin_tone(self) -> int: ...
    @property
    def conditions(self) -> Iterable[str]: ...


def patient_record(patient: PatientAttributes) -> PatientRecord:
    """A simulated patient (:class:`simulators.population.Patient`) as the programme records them:
    coarse subgroups and enrolment diagnoses, nothing more.

    >>> from simulators.cohort import CohortConfig, population
    >>> record = patient_record(population(CohortConfig(patients=1, seed=3))[0])
    >>> sorted(record.groups), record.conditions is not None
    (['age_band', 'sex', 'skin_tone'], True)
    """
    return PatientRecord(patient.patient_id, subgroups(patient.sex, patient.age_years, patient.skin_tone),
                         tuple(patient.conditions))


@dataclass(frozen=True, slots=True)
class FairnessPolicy:
    """When a gap between subgroups becomes an ops event.

    Parameters
    ----------
    max_sensitivity_gap
        Largest tolerated shortfall of a group's episode sensitivity at the alert threshold
        below the best-served group's (absolute).
    max_calibration_ratio
        Largest tolerated ratio of the best-served group's E/O (calibration-in-the-large) to a
        group's.
    min_positives
        Positive windows a group (and the reference) needs before it is compared on calibration.
    min_episodes
        Patients with a positive window a group (and the reference) needs before it is
        compared on either gate: below about 30 events the normal approximations behind the
        credibility gate are poor, and a monitor that looks daily would page on early noise.
    attributes
        Attributes monitored.
    calibrated
        Scorers whose probabilities are calibrated; the others are histogram-calibrated first.
    max_calibration_ratio_by_attribute
        Per-attribute overrides of ``max_calibration_ratio``, e.g. ``(("age_band", 2.5),)``.
    z
        Credibility: a gap is flagged only if it stays beyond no-gap (ratio 1, difference 0)
        by ``z`` standard errors, counted in patients with a positive window (the
        independent units: one episode makes a hundred positive windows). 0 turns it off.
    inherent_gaps
        ``(scorer, attribute)`` pairs whose gap is a known property of a fixed baseline, not
        something ops can act on: reported by :meth:`FairnessMonitor.gaps` (``inherent``),
        never flagged. Default: NEWS2 by age band (the chart has no age term, and older
        patients deteriorate at lower scores).
    confirm_checks
        Consecutive checks a gap must be flagged on before it raises an ops event: hysteresis
        against the repeated looks of a monitor that checks daily, each at ``z`` (a gap that
        crosses the gates on one day's noise and closes the next raises nothing).
    """

    max_sensitivity_gap: float = 0.15
    max_calibration_ratio: float = 1.5
    min_positives: int = 300
    min_episodes: int = 30
    attributes: tuple[str, ...] = ATTRIBUTES
    calibrated: tuple[str, ...] = ("model",)
    max_calibration_ratio_by_attribute: tuple[tuple[str, float], ...] = ()
    z: float = 1.96
    inherent_gaps: tuple[tuple[str, str], ...] = (("news2", "age_band"),)
    confirm_checks: int = 2

    def calibration_limit(self, attribute: str) -> float:
        """The E/O ratio limit of ``attribute``."""
        return dict(self.max_calibration_ratio_by_attribute).get(attribute, self.max_calibration_ratio)

    def __post_init__(self) -> None:
        if not 0 < self.max_sensitivity_gap <= 1:
            raise ValueError(f"max_sensitivity_gap must be in (0, 1], got {self.max_sensitivity_gap}")
        if not self.max_calibration_ratio > 1:
            raise ValueError(f"max_calibration_ratio must be above 1, got {self.max_calibration_ratio}")
        unknown = set(self.attributes) - set(ATTRIBUTES)
        if unknown:
            raise ValueError(f"unknown attributes {sorted(unknown)}; known: {ATTRIBUTES}")
        if self.min_episodes < 1:
            raise ValueError(f"min_episodes must be at least 1, got {self.min_episodes}")
        if self.confirm_checks < 1:
            raise ValueError(f"confirm_checks must be at least 1, got {self.confirm_checks}")
        if not self.z >= 0:
            raise ValueError(f"z must be zero or more, got {self.z}")
        unknown = {a for _, a in self.inherent_gaps} - set(ATTRIBUTES)
        if unknown:
            raise ValueError(f"unknown attributes in inherent_gaps {sorted(unknown)}; known: {ATTRIBUTES}")


@dataclass(frozen=True, slots=True)
class GroupMetrics:
    """One row of the subgroup table."""

    scorer: str
    attribute: str
    group: str
    patients: int
    windows: float
    positives: float
    auroc: float
    sensitivity: float
    ppv: float
    mean_score: float
    prevalence: float
    calibration: float  # E/O (histogram-calibrated first for uncalibrated scorers)
    brier: float
    ece: float
    episodes: int = 0  # patients with a positive window: the gates' sample size
    episode_sensitivity: float = math.nan  # share of them with a positive window at the threshold

    def as_dict(self) -> dict[str, object]:
        """Plain dict, NaN as ``None``."""
        return {name: (None if isinstance(v, float) and math.isnan(v) else v)
                for name in self.__slots__ for v in (getattr(self, name),)}


@dataclass(slots=True)
class FairnessMonitor:
    """Per-subgroup sketches of each scorer's labelled scores, and the gap checks.

    Parameters
    ----------
    groups
        Patient id -> attribute -> group (see :func:`subgroups`); unknown patients are skipped.
    scorers
        Names of the scorers monitored.
    thresholds
        Alert threshold of each scorer (for sensitivity and PPV).
    policy
        Gap limits.
    model
        Name used in the ops events' ``model`` field.
    """

    groups: Mapping[str, Mapping[str, str]]
    scorers: Sequence[str]
    thresholds: Mapping[str, float]
    policy: FairnessPolicy = field(default_factory=FairnessPolicy)
    model: str = "model"
    _sketches: dict[tuple[str, str, str], ScoreSketch] = field(default_factory=dict)
    _open: dict[tuple[str, str, str], frozenset[str]] = field(default_factory=dict)
    _streak: dict[tuple[str, str, str], dict[str, int]] = field(default_factory=dict)  # checks flagged in a row
    _positive_patients: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    _detected: dict[str, set[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [s for s in self.scorers if s not in self.thresholds]
        if missing:
            raise ValueError(f"every scorer needs an alert threshold; missing {missing}")
        for s in self.scorers:
            for a in self.policy.attributes:
                for g in GROUPS[a]:
                    self._sketches[(s, a, g)] = ScoreSketch(alert_thresholds=(self.thresholds[s],))

    def update_many(self, patient_ids: Sequence[str], y: npt.ArrayLike,
                    scores: Mapping[str, npt.ArrayLike]) -> None:
        """Add labelled windows (``y``) of ``patient_ids`` with each scorer's stored score."""
        yb = np.asarray(y, dtype=bool)
        positive = {pid for pid, hit in zip(patient_ids, yb.tolist()) if hit}
        for a in self.policy.attributes:
            labels = np.array([self.groups.get(pid, {}).get(a, "") for pid in patient_ids])
            for g in GROUPS[a]:
                mask = labels == g
                if not mask.any():
                    continue
                for s in self.scorers:
                    self._sketches[(s, a, g)].update_many(yb[mask], np.asarray(scores[s])[mask])
            for pid in positive:
                group = self.groups.get(pid, {}).get(a)
                if group is not None:
                    self._positive_patients.setdefault((a, group), set()).add(pid)
        for s in self.scorers:
            hit = yb & (np.asarray(scores[s], dtype=np.float64) >= self.thresholds[s])
            if hit.any():
                self._detected.setdefault(s, set()).update(pid for pid, h in zip(patient_ids, hit.tolist()) if h)

    def positive_patients(self, attribute: str, group: str) -> int:
        """Patients of the group with at least one positive window so far: the gates' sample size."""
        return len(self._positive_patients.get((attribute, group), ()))

    def episode_sensitivity(self, scorer: str, attribute: str, group: str) -> tuple[int, int]:
        """``(detected, episodes)``: the group's patients with a positive window, and how many of
        them had one scored at or above the scorer's threshold (an alert within the horizon)."""
        episodes = self._positive_patients.get((attribute, group), set())
        return len(episodes & self._detected.get(scorer, set())), len(episodes)

    def table(self) -> list[GroupMetrics]:
        """Metrics of every (scorer, attribute, group)."""
        counts: dict[tuple[str, str], int] = {}
        for attrs in self.groups.values():
            for a, g in attrs.items():
                counts[(a, g)] = counts.get((a, g), 0) + 1
        rows = []
        eo = {(s, a): self._expected_over_observed(s, a, 1) for s in self.scorers for a in self.policy.attributes}
        for (s, a, g), sk in self._sketches.items():
            t = self.thresholds[s]
            mean = sk.mean_score()  # folds buffered scores first
            prevalence = sk.positives / sk.n if sk.n else math.nan
            detected, episodes = self.episode_sensitivity(s, a, g)
            rows.append(GroupMetrics(s, a, g, counts.get((a, g), 0), sk.n, sk.positives, sk.auroc(),
                                     sk.sensitivity(t), sk.ppv(t), mean, prevalence,
                                     eo[(s, a)].get(g, math.nan), sk.brier(), sk.ece(), episodes,
                                     detected / episodes if episodes else math.nan))
        return rows

    def gaps(self) -> list[dict[str, object]]:
        """Every gated gap, flagged or not: for each (scorer, metric, attribute), every group
        against the group served best (``high_group``, the reference).

        Each names the scorer, metric, attribute, ``low_group`` (the group served worst: the
        most under-predicted, or the most missed), ``high_group`` and their values, ``gap``
        (E/O ratio reference / group, or sensitivity difference reference - group) and its
        limit, ``z_score`` (the gap over its standard error), ``credible`` (``z_score`` beyond
        ``z``), ``low_groups`` (every group beyond the limit and credible), ``inherent`` (a
        declared property of the scorer) and ``flagged`` (some group beyond the limit and
        credible, and not inherent: what raises an ops event). Only the direction of harm is
        gated — a group is named for having *fewer* events predicted, or *more* episodes
        missed, than the reference — and when a group is flagged, ``low_group`` is the worst
        flagged one.
        """
        out: list[dict[str, object]] = []
        policy = self.policy
        for s in self.scorers:
            for a in policy.attributes:
                inherent = (s, a) in policy.inherent_gaps
                for gap in (self._calibration_gap(s, a), self._sensitivity_gap(s, a)):
                    if gap is None:
                        continue
                    gap["inherent"] = inherent
                    gap["flagged"] = bool(gap["low_groups"]) and not inherent
                    out.append(gap)
        return out

    def _calibration_gap(self, scorer: str, attribute: str) -> dict[str, object] | None:
        """Calibration-in-the-large (E/O) of each group against the group with the highest."""
        policy = self.policy
        parts = self._expected_observed(scorer, attribute)
        eo = {g: e / o for g, (e, o) in parts.items()
              if o >= max(policy.min_positives, 1) and e > 0
              and self.positive_patients(attribute, g) >= policy.min_episodes}
        # log(E/O) has a standard error of about 1/sqrt(events); events are counted as
        # patients, since a patient's positive windows come from one episode.
        best = max(eo.values(), default=0.0)
        comparisons = {g: (v, math.log(best / v), 1.0 / self.positive_patients(attribute, g)) for g, v in eo.items()}
        return self._gap(scorer, "calibration", attribute, comparisons, ratio=True,
                         limit=policy.calibration_limit(attribute))

    def _sensitivity_gap(self, scorer: str, attribute: str) -> dict[str, object] | None:
        """Episode sensitivity of each group against the group with the highest."""
        policy = self.policy
        counts = {g: self.episode_sensitivity(scorer, attribute, g) for g in GROUPS[attribute]}
        sens = {g: (d / n, n) for g, (d, n) in counts.items() if n >= policy.min_episodes}
        # Each episode one Bernoulli trial; the variance is taken under no gap (pooled rate).
        comparisons: dict[str, tuple[float, float, float]] = {}
        if sens:
            ref = max(sens, key=lambda g: sens[g][0])
            for g, (v, n) in sens.items():
                pooled = (v * n + sens[ref][0] * sens[ref][1]) / (n + sens[ref][1])
                comparisons[g] = (v, sens[ref][0] - v, pooled * (1 - pooled) / n)
        return self._gap(scorer, "sensitivity", attribute, comparisons, ratio=False,
                         limit=policy.max_sensitivity_gap)

    def _gap(self, scorer: str, metric: str, attribute: str,
             comparisons: Mapping[str, tuple[float, float, float]], *, ratio: bool,
             limit: float) -> dict[str, object] | None:
        """The gap entry from ``group -> (value, gap to the reference, variance share)``.

        The gap is a log ratio (``ratio``) or a difference; the reference is the group with the
        zero gap, and its variance share is added to each group's.
        """
        if len(comparisons) < 2:
            return None
        ref = min(comparisons, key=lambda g: comparisons[g][1])
        var_ref = comparisons[ref][2]
        rows = []
        for g, (value, d, var) in comparisons.items():
            if g == ref:
                continue
            se = math.sqrt(var + var_ref)
            z_score = d / se if se > 0 else 0.0
            shown = math.exp(d) if ratio else d
            rows.append((g, value, shown, z_score, shown > limit and z_score > self.policy.z))
        beyond = [r for r in rows if r[4]]
        g, value, shown, z_score, _ = max(beyond or rows, key=lambda r: r[2])
        return {"scorer": scorer, "metric": metric, "attribute": attribute, "low_group": g,
                "high_group": ref, "low": value, "high": comparisons[ref][0], "gap": shown,
                "limit": limit, "z_score": z_score, "credible": z_score > self.policy.z,
                "low_groups": [r[0] for r in sorted(beyond, key=lambda r: -r[2])]}

    def inherent(self) -> list[dict[str, object]]:
        """Gaps beyond the limit that are declared properties of their scorer: reported, not flagged."""
        return [g for g in self.gaps() if g["inherent"] and g["credible"]
                and cast(float, g["gap"]) > cast(float, g["limit"])]

    def calibration(self, scorer: str, attribute: str) -> dict[str, float]:
        """E/O of each group with enough positives (histogram-calibrated for uncalibrated scorers)."""
        return self._expected_over_observed(scorer, attribute, self.policy.min_positives)

    def _expected_observed(self, scorer: str, attribute: str) -> dict[str, tuple[float, float]]:
        """Expected and observed positive windows of each group."""
        sketches = {g: self._sketches[(scorer, attribute, g)] for g in GROUPS[attribute]}
        for sk in sketches.values():
            sk.fold()
        if scorer in self.policy.calibrated:
            expected = {g: sk.sum_p for g, sk in sketches.items()}
        else:
            pos = sum(sk.pos for sk in sketches.values())
            total = sum(sk.pos + sk.neg for sk in sketches.values())
            rate = np.divide(pos, total, out=np.zeros_like(pos), where=total > 0)
            expected = {g: float(np.sum((sk.pos + sk.neg) * rate)) for g, sk in sketches.items()}
        return {g: (expected[g], sk.positives) for g, sk in sketches.items()}

    def _expected_over_observed(self, scorer: str, attribute: str, min_positives: int) -> dict[str, float]:
        return {g: e / o for g, (e, o) in self._expected_observed(scorer, attribute).items()
                if o >= max(min_positives, 1)}

    def check(self, ts_ms: int) -> list[OpsEvent]:
        """Ops events for gaps that opened since the last check, or that now name a group they
        did not (closed gaps may open again). A group counts once it has been flagged on
        ``policy.confirm_checks`` consecutive checks."""
        events = []
        now_open: dict[tuple[str, str, str], frozenset[str]] = {}
        streaks: dict[tuple[str, str, str], dict[str, int]] = {}
        for gap in self.gaps():
            if not gap["flagged"]:
                continue
            key = (str(gap["scorer"]), str(gap["metric"]), str(gap["attribute"]))
            before_counts = self._streak.get(key, {})
            counts = {g: before_counts.get(g, 0) + 1 for g in cast(list[str], gap["low_groups"])}
            streaks[key] = counts
            confirmed = frozenset(g for g, n in counts.items() if n >= self.policy.confirm_checks)
            before = self._open.get(key)
            if before is not None or confirmed:
                now_open[key] = confirmed | (before or frozenset())
            if confirmed and (before is None or not confirmed <= before):
                events.append(OpsEvent(kind="fairness", ts_ms=ts_ms, subject=self.model, details=dict(gap)))
        self._streak = streaks
        self._open = now_open
        return events

    def flagged(self) -> list[dict[str, object]]:
        """The gaps currently beyond the policy."""
        return [g for g in self.gaps() if g["flagged"]]

    def publish(self, model_metrics: FairnessGauges) -> None:
        """Set ``vitals_subgroup_auroc`` and ``vitals_fairness_gap`` of a :class:`sinks.metrics.ModelMetrics`."""
        for r in self.table():
            if not math.isnan(r.auroc):
                model_metrics.subgroup_auroc.labels(model=r.scorer, attribute=r.attribute,
                                                    group=r.group).set(r.auroc)
        for g in self.gaps():
            model_metrics.fairness_gap.labels(model=str(g["scorer"]), metric=str(g["metric"]),
                                              attribute=str(g["attribute"])).set(cast(float, g["gap"]))
