"""Fairness: the prequential metrics per patient subgroup, and an ops event when groups drift apart.

Subgroups (:func:`subgroups`): ``sex`` (``F``/``M``), ``age_band`` (``<65``, ``65-74``, ``75+``)
and ``skin_tone`` by Fitzpatrick type (``I-II``, ``III-IV``, ``V-VI``) — the attribute that
matters for pulse oximetry, which over-reads SpO2 in darker skin and hides hypoxaemia
(Sjoding et al., NEJM 2020). A biased SpO2 makes a darker-skinned patient look healthier than
they are, so a score that leans on absolute SpO2 *under-predicts* for them: it gives them lower
scores than their event rate warrants. The monitor gates on that directly:

- **calibration-in-the-large** (``calibration``): E/O, the group's expected events (sum of its
  predicted probabilities) over its observed positive windows, compared between groups as a
  ratio (``max_calibration_ratio``). A calibrated scorer (the model) is used as is. A ranking
  score (NEWS2's ``total / 20``) is first mapped to probabilities by histogram calibration —
  the observed event rate at each score level, pooled over all patients — so its E/O asks:
  "does this group have more events than its NEWS2 levels predict for everybody?". Every
  window counts (E is estimated from all of them), which makes it far steadier than a
  sensitivity when a group has only a handful of episodes.
- **sensitivity at the alert threshold** (``sensitivity``): the share of windows before an
  onset that score at or above the threshold. Window-level sensitivity is dominated by which
  few episodes fall in a group, so it is gated only for groups with at least
  ``min_positives_sensitivity`` positive windows.

AUROC, Brier and ECE per group are reported too but not gated: AUROC is blind to a shift that
moves a whole group's scores, which is exactly what a measurement bias does.

**What raises an ops event.** A gap is *flagged* — one :class:`~models.evaluation.OpsEvent` of
kind ``"fairness"`` per (scorer, metric, attribute) when it opens, again only after it has
closed — when all three hold:

1. it is beyond the policy's limit;
2. it is *credible*: beyond no gap (E/O ratio 1, sensitivity difference 0) by ``z`` standard
   errors, counting each group's patients with a positive window, not its windows — one
   episode makes a hundred positive windows, so a window count would call two episodes a
   large sample. Sampling noise in small groups is reported in the table, not paged;
3. it is not an *inherent* gap of a fixed baseline (``FairnessPolicy.inherent_gaps``), which
   ops cannot act on: by default NEWS2 by age band. The RCP chart has no age term and older
   patients deteriorate at lower scores, so NEWS2 under-predicts for over-75s whatever the
   devices do. Such gaps are listed by :meth:`FairnessMonitor.inherent` and in the table.

Why these: ops act on what changed in *this* deployment — a device that measures some
patients worse, a model that learned to serve some patients worse. The deployed model is
held to every attribute; NEWS2, which also pages here, is held to every attribute but the one
its chart knowingly ignores. A group is compared only when it has at least ``min_positives``
positive windows (and the group it is compared with too).

What the simulator shows (see README, "Fairness"): with its SpO2 over-reading on, NEWS2
under-predicts for Fitzpatrick V-VI (E/O well below I-II's) and is flagged on skin tone; with
it off, nothing is flagged. The personalised model is unaffected either way: its SpO2 signal
is a deviation from the patient's own baseline, which a constant offset cancels.

Examples
--------
>>> import numpy as np
>>> groups = {"pt-a": {"skin_tone": "I-II"}, "pt-b": {"skin_tone": "V-VI"}}
>>> mon = FairnessMonitor(groups, scorers=("model",), thresholds={"model": 0.5},
...                       policy=FairnessPolicy(min_positives=2, min_positives_sensitivity=2, z=0.0,
...                                             attributes=("skin_tone",)))  # z=0: two patients are no sample
>>> y = np.array([True, True, False, True, True, False])
>>> p = np.array([.9, .8, .1, .3, .6, .1])
>>> mon.update_many(["pt-a"] * 3 + ["pt-b"] * 3, y, {"model": p})
>>> [(e.detail["metric"], e.detail["low_group"]) for e in mon.check(0)]
[('sensitivity', 'V-VI'), ('calibration', 'V-VI')]
>>> mon.check(60_000)  # still open: not raised again
[]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from models.evaluation import OpsEvent, ScoreSketch

#: Attributes monitored, in report order.
ATTRIBUTES: tuple[str, ...] = ("sex", "age_band", "skin_tone")
#: Groups of each attribute, in report order.
GROUPS: Mapping[str, tuple[str, ...]] = {
    "sex": ("F", "M"),
    "age_band": ("<65", "65-74", "75+"),
    "skin_tone": ("I-II", "III-IV", "V-VI"),
}


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


@dataclass(frozen=True, slots=True)
class FairnessPolicy:
    """When a gap between subgroups becomes an ops event.

    Parameters
    ----------
    max_sensitivity_gap
        Largest tolerated difference in sensitivity at the alert threshold (absolute).
    max_calibration_ratio
        Largest tolerated ratio between two groups' E/O (calibration-in-the-large).
    min_positives
        Positive windows a group needs before it is compared on calibration.
    min_positives_sensitivity
        Positive windows a group needs before it is compared on sensitivity.
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
    """

    max_sensitivity_gap: float = 0.15
    max_calibration_ratio: float = 1.5
    min_positives: int = 300
    min_positives_sensitivity: int = 1_000
    attributes: tuple[str, ...] = ATTRIBUTES
    calibrated: tuple[str, ...] = ("model",)
    max_calibration_ratio_by_attribute: tuple[tuple[str, float], ...] = ()
    z: float = 1.96
    inherent_gaps: tuple[tuple[str, str], ...] = (("news2", "age_band"),)

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

    def as_dict(self) -> dict[str, object]:
        """Plain dict, NaN as ``None``."""
        return {name: (None if isinstance(v, float) and math.isnan(v) else v)
                for name in self.__slots__ for v in (getattr(self, name),)}  # type: ignore[attr-defined]


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
    _open: set[tuple[str, str, str]] = field(default_factory=set)
    _positive_patients: dict[tuple[str, str], set[str]] = field(default_factory=dict)

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
                g = self.groups.get(pid, {}).get(a)
                if g is not None:
                    self._positive_patients.setdefault((a, g), set()).add(pid)

    def positive_patients(self, attribute: str, group: str) -> int:
        """Patients of the group with at least one positive window so far: the gates' sample size."""
        return len(self._positive_patients.get((attribute, group), ()))

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
            rows.append(GroupMetrics(s, a, g, counts.get((a, g), 0), sk.n, sk.positives, sk.auroc(),
                                     sk.sensitivity(t), sk.ppv(t), mean, prevalence,
                                     eo[(s, a)].get(g, math.nan), sk.brier(), sk.ece()))
        return rows

    def gaps(self) -> list[dict[str, object]]:
        """Every gated gap, flagged or not.

        Each names the scorer, metric, attribute, low and high group and their values, the gap
        and its limit, and ``credible`` (beyond no-gap by ``z`` standard errors), ``inherent``
        (a declared property of the scorer) and ``flagged`` (beyond the limit, credible and
        not inherent: what raises an ops event).
        """
        out: list[dict[str, object]] = []
        rows = self.table()
        policy = self.policy
        for s in self.scorers:
            for a in policy.attributes:
                inherent = (s, a) in policy.inherent_gaps
                group_rows = [r for r in rows if r.scorer == s and r.attribute == a]
                sens = [r for r in group_rows
                        if r.positives >= policy.min_positives_sensitivity and not math.isnan(r.sensitivity)]
                if len(sens) >= 2:
                    lo = min(sens, key=lambda r: r.sensitivity)
                    hi = max(sens, key=lambda r: r.sensitivity)
                    gap = hi.sensitivity - lo.sensitivity
                    se = math.sqrt(sum(r.sensitivity * (1 - r.sensitivity) / max(self.positive_patients(a, r.group), 1)
                                       for r in (lo, hi)))
                    credible = gap - policy.z * se > 0
                    out.append({"scorer": s, "metric": "sensitivity", "attribute": a, "low_group": lo.group,
                                "high_group": hi.group, "low": lo.sensitivity, "high": hi.sensitivity,
                                "gap": gap, "limit": policy.max_sensitivity_gap, "credible": credible,
                                "inherent": inherent,
                                "flagged": gap > policy.max_sensitivity_gap and credible and not inherent})
                eo = self._expected_over_observed(s, a, policy.min_positives)
                cal = [(g, v) for g, v in eo.items() if v > 0 and math.isfinite(v)]
                if len(cal) >= 2:
                    lo_g, lo_v = min(cal, key=lambda gv: gv[1])
                    hi_g, hi_v = max(cal, key=lambda gv: gv[1])
                    limit = policy.calibration_limit(a)
                    # log(E/O) has a standard error of about 1/sqrt(events); events are counted as
                    # patients, since a patient's positive windows come from one episode.
                    se = math.sqrt(sum(1.0 / max(self.positive_patients(a, g), 1) for g in (lo_g, hi_g)))
                    credible = math.log(hi_v / lo_v) - policy.z * se > 0
                    out.append({"scorer": s, "metric": "calibration", "attribute": a, "low_group": lo_g,
                                "high_group": hi_g, "low": lo_v, "high": hi_v, "gap": hi_v / lo_v,
                                "limit": limit, "credible": credible, "inherent": inherent,
                                "flagged": hi_v / lo_v > limit and credible and not inherent})
        return out

    def inherent(self) -> list[dict[str, object]]:
        """Gaps beyond the limit that are declared properties of their scorer: reported, not flagged."""
        return [g for g in self.gaps() if g["inherent"] and g["credible"]
                and float(g["gap"]) > float(g["limit"])]  # type: ignore[arg-type]

    def calibration(self, scorer: str, attribute: str) -> dict[str, float]:
        """E/O of each group with enough positives (histogram-calibrated for uncalibrated scorers)."""
        return self._expected_over_observed(scorer, attribute, self.policy.min_positives)

    def _expected_over_observed(self, scorer: str, attribute: str, min_positives: int) -> dict[str, float]:
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
        return {g: expected[g] / sk.positives for g, sk in sketches.items()
                if sk.positives >= max(min_positives, 1)}

    def check(self, ts_ms: int) -> list[OpsEvent]:
        """Ops events for gaps that opened since the last check (closed gaps may open again)."""
        events = []
        now_open = set()
        for gap in self.gaps():
            key = (str(gap["scorer"]), str(gap["metric"]), str(gap["attribute"]))
            if gap["flagged"]:
                now_open.add(key)
                if key not in self._open:
                    events.append(OpsEvent("fairness", ts_ms, self.model, dict(gap)))
        self._open = now_open
        return events

    def flagged(self) -> list[dict[str, object]]:
        """The gaps currently beyond the policy."""
        return [g for g in self.gaps() if g["flagged"]]

    def publish(self, model_metrics: object) -> None:
        """Set ``vitals_subgroup_auroc`` and ``vitals_fairness_gap`` of a :class:`sinks.metrics.ModelMetrics`."""
        for r in self.table():
            if not math.isnan(r.auroc):
                model_metrics.subgroup_auroc.labels(model=r.scorer, attribute=r.attribute,  # type: ignore[attr-defined]
                                                    group=r.group).set(r.auroc)
        for g in self.gaps():
            model_metrics.fairness_gap.labels(model=g["scorer"], metric=g["metric"],  # type: ignore[attr-defined]
                                              attribute=g["attribute"]).set(float(g["gap"]))  # type: ignore[arg-type]
