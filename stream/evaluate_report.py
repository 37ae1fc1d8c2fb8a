"""The report of a ``vitalrisk evaluate`` run: what it measured, as one JSON object or as text. Pure.

:class:`EvaluationResult` holds everything a run measured (:class:`stream.evaluate_loop.EvaluationCore`
fills it); :meth:`EvaluationResult.summary` is the JSON object ``--json`` prints and
:func:`format_report` the human-readable report. :class:`Burden` is one scorer's alert burden
(:mod:`stream.evaluate_burden` replays the alert policy to count it). NaN and infinities
become ``null`` in the JSON (:func:`json_safe`).

Examples
--------
>>> print(_span((0.2, 0.61)), _span((math.nan, math.nan)), _hours(None), _hours(2.25))
0.20-0.61 - - 2.2
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import TypeAlias

import numpy as np
import numpy.typing as npt

from kernel.events import OpsEvent
from models.fairness import GroupMetrics
from models.labelling import ANY
from models.prequential import Metrics, ScoreSketch, wilson_interval
from stream.alert_tuning import RULE, CohortTallies, OperatingPoint, Protocol, SubgroupBurden

#: Scorers compared.
MODEL, NEWS2 = "model", "news2"
#: The outcome kind with the most sudden onset (simulators/deterioration.py: AF starts at once,
#: after a short, faint prodrome); the report gives episode sensitivity without it as well.
SUDDEN_KIND = "af_episode"

#: A JSON value, as :func:`json.dumps` writes it.
JsonValue: TypeAlias = "None | bool | int | float | str | list[JsonValue] | dict[str, JsonValue]"
FloatVector = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Burden:
    """Alert burden of one scorer under the alert policy, over the report period."""

    scorer: str
    kinds: tuple[str, ...]
    pages: int
    true_pages: int
    """Pages followed by an onset within the horizon (PPV's numerator)."""
    pages_per_patient_day: float
    ppv: float
    sensitivity: float
    outcomes: int
    detected: int
    median_lead_h: float
    by_kind: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per outcome kind: ``outcomes``, ``detected`` (a page within the horizon before onset),
    ``sensitivity``, ``median_lead_h``; and, of the onsets no page preceded, ``late_detected``
    (a first page within the horizon after onset, scores in the episode included) and
    ``median_delay_h`` (onset to that page). Late pages are not detections. ``in_episode``:
    onsets left out of ``outcomes``, as in :attr:`in_episode`."""
    in_episode: int = 0
    """Onsets in the report period whose whole horizon lay inside the patient's earlier episodes:
    every score that could have warned of them was excluded as that episode's aftermath (as the
    labeller excludes it from training and the window metrics), so no scorer could page before
    them. They are not in ``outcomes``; counting them as misses is ``detected / (outcomes + in_episode)``."""

    def as_dict(self) -> dict[str, JsonValue]:
        """Plain dict with the two 95 % intervals, NaN as ``None`` (JSON-friendly)."""
        out = {f.name: json_safe(getattr(self, f.name)) for f in fields(self)}
        out["ppv_ci95"] = json_safe(list(self.ppv_interval()))
        out["sensitivity_ci95"] = json_safe(list(self.sensitivity_interval()))
        return out

    def ppv_interval(self) -> tuple[float, float]:
        """95 % Wilson interval of the PPV: tens of pages make it wide, and a target judged on
        the point estimate alone would be judged on noise.

        >>> [round(v, 2) for v in Burden("model", (), 40, 20, 0.1, 0.5, 0.5, 4, 2, 6.0).ppv_interval()]
        [0.35, 0.65]
        """
        return wilson_interval(self.true_pages, self.pages)

    def sensitivity_interval(self) -> tuple[float, float]:
        """95 % Wilson interval of the episode sensitivity (onsets are few: 43 on the default cohort)."""
        return wilson_interval(self.detected, self.outcomes)

    def sensitivity_without(self, kind: str) -> float:
        """Episode sensitivity over the onsets of every other outcome kind.

        >>> b = Burden("model", (), 4, 2, 0.1, 0.5, 0.5, 4, 2, 6.0,
        ...            {"af_episode": {"outcomes": 2, "detected": 0}, "infection": {"outcomes": 2, "detected": 2}})
        >>> b.sensitivity_without("af_episode")
        1.0
        """
        rest = [v for k, v in self.by_kind.items() if k != kind]
        n = sum(v["outcomes"] for v in rest)
        return sum(v["detected"] for v in rest) / n if n else math.nan


@dataclass(frozen=True, slots=True)
class Example:
    """One patient's trajectory around an onset, for the trajectory plot."""

    patient_id: str
    kind: str
    onset_ms: int
    ts: npt.NDArray[np.int64]
    risk: FloatVector
    """The model's risk ("any" head) at each of ``ts``."""
    news2: FloatVector
    """The NEWS2 total at each of ``ts``."""


@dataclass(slots=True)
class EvaluationResult:
    """Everything an evaluation run measured."""

    patients: int
    days: float
    report_days: float
    windows_scored: int
    windows_labelled: int
    metrics: dict[str, dict[str, Metrics]]
    window_alerts: dict[str, dict[str, float]]
    subgroups: list[GroupMetrics]
    fairness_flags: list[dict[str, object]]
    fairness_events: list[OpsEvent]
    fairness_inherent: list[dict[str, object]]
    drift_events: list[OpsEvent]
    burden: list[Burden]
    model_version: str | None
    labeller: dict[str, int | dict[str, int]]
    seconds: float
    sketches: dict[str, ScoreSketch] = field(repr=False, default_factory=dict)
    examples: list[Example] = field(repr=False, default_factory=list)
    subgroup_burden: list[SubgroupBurden] = field(default_factory=list)
    """The default policy's model pages per sex, age band and skin tone (:func:`stream.alert_tuning.subgroup_burden`)."""
    tallies: CohortTallies | None = field(repr=False, default=None)
    """Per-patient tallies of the default policy and of any candidate policies (:mod:`stream.alert_tuning`)."""

    def summary(self) -> dict[str, JsonValue]:
        """The JSON object ``--json`` prints."""
        any_m, any_n = self.metrics[MODEL].get(ANY), self.metrics[NEWS2].get(ANY)
        out: dict[str, object] = {
            "patients": self.patients, "days": self.days, "report_days": self.report_days,
            "windows_scored": self.windows_scored, "windows_labelled": self.windows_labelled,
            "auroc_model": any_m.auroc if any_m else None, "auroc_news2": any_n.auroc if any_n else None,
            "auprc_model": any_m.auprc if any_m else None, "auprc_news2": any_n.auprc if any_n else None,
            "brier_model": any_m.brier if any_m else None, "brier_news2": any_n.brier if any_n else None,
            "ece_model": any_m.ece if any_m else None, "ece_news2": any_n.ece if any_n else None,
            "metrics": {s: {c: m.as_dict() for c, m in by_c.items()} for s, by_c in self.metrics.items()},
            "window_alerts": self.window_alerts,
            "subgroups": [r.as_dict() for r in self.subgroups],
            "fairness_flags": self.fairness_flags,
            "fairness_inherent": self.fairness_inherent,
            "drift_events": [{"ts_ms": e.ts_ms, "model": e.subject, **e.details} for e in self.drift_events],
            "alert_burden": [b.as_dict() for b in self.burden],
            "alert_burden_by_subgroup": [s.as_dict() for s in self.subgroup_burden],
            "model_version": self.model_version, "labeller": self.labeller, "seconds": round(self.seconds, 1),
        }
        return {k: json_safe(v) for k, v in out.items()}


def format_report(result: EvaluationResult) -> str:
    """The human-readable report."""
    lines = [f"vitalrisk evaluate: {result.patients} patients x {result.days:g} days; report on the last "
             f"{result.report_days:g} days ({result.windows_scored:,} windows scored, "
             f"{result.windows_labelled:,} labelled; model {result.model_version})", ""]
    lines.append(f"  {'condition':<19}{'scorer':<8}{'AUROC':>7}{'AUPRC':>7}{'Brier':>8}{'ECE':>7}"
                 f"{'windows':>10}{'positives':>10}")
    for c in result.metrics[MODEL]:
        for s in (MODEL, NEWS2):
            m = result.metrics[s][c]
            lines.append(f"  {c:<19}{s:<8}{m.auroc:7.3f}{m.auprc:7.3f}{m.brier:8.4f}{m.ece:7.4f}"
                         f"{int(m.n):>10,}{int(m.positives):>10,}")
    lines += ["", "  subgroups (any deterioration; sens at the window-alert threshold; E/O expected/observed "
              "events, NEWS2 histogram-calibrated)",
              f"  {'scorer':<8}{'attribute':<11}{'group':<8}{'patients':>9}{'positives':>10}{'AUROC':>7}"
              f"{'sens':>7}{'E/O':>7}"]
    for r in result.subgroups:
        lines.append(f"  {r.scorer:<8}{r.attribute:<11}{r.group:<8}{r.patients:>9}{int(r.positives):>10,}"
                     f"{r.auroc:7.3f}{r.sensitivity:7.3f}{r.calibration:7.2f}")

    def gap_text(f: dict[str, object]) -> str:
        return (f"{f['scorer']} {f['metric']} gap on {f['attribute']} ({f['low_group']} {f['low']:.3g} vs "
                f"{f['high_group']} {f['high']:.3g})")

    flags = result.fairness_flags
    lines.append("")
    lines.append("  fairness: " + ("nothing flagged" if not flags else "; ".join(gap_text(f) for f in flags)))
    if result.fairness_inherent:
        lines.append("  inherent to a baseline (reported, no ops event): "
                     + "; ".join(gap_text(f) for f in result.fairness_inherent))
    lines.append(f"  drift (ADWIN on the model's loss): {len(result.drift_events)} event(s)")
    lines += ["", "  alert burden (alert policy replayed over the report period; model: every risk head, as the "
              "alerter pages;", "  model:any: the \"any\" head only; model@T: every head at entry T, exit 0.7 T; "
              f"sens-AF: without {SUDDEN_KIND})",
              f"  {'scorer':<12}{'pages':>7}{'/pt-day':>9}{'PPV':>7}{'(95% CI)':>13}{'sens':>7}{'(95% CI)':>13}"
              f"{'sens-AF':>8}{'lead h':>8}"]
    for b in result.burden:
        lines.append(f"  {b.scorer:<12}{b.pages:>7}{b.pages_per_patient_day:9.3f}{b.ppv:7.3f}"
                     f"{_span(b.ppv_interval()):>13}{b.sensitivity:7.3f}{_span(b.sensitivity_interval()):>13}"
                     f"{b.sensitivity_without(SUDDEN_KIND):8.3f}{b.median_lead_h:8.1f}")
    lines.append("  by outcome kind: detected/onsets (median lead h); of the missed, paged within the horizon "
                 "after onset (median delay h) — late pages are not detections")
    for b in result.burden:
        parts = [f"{kind} {k['detected']}/{k['outcomes']} ({_hours(k['median_lead_h'])}), late {k['late_detected']} "
                 f"({_hours(k['median_delay_h'])})" for kind, k in b.by_kind.items()]
        lines.append(f"  {b.scorer:<12}" + ("; ".join(parts) or "no onset in the report period"))
    if result.subgroup_burden:
        lines += ["", "  alert burden by subgroup (model, default policy; 95 % bootstrap intervals over patients)",
                  *format_subgroups(result.subgroup_burden)]
    skipped = {kind: k["in_episode"] for kind, k in (result.burden[0].by_kind if result.burden else {}).items()
               if k["in_episode"]}
    if skipped:
        lines.append("  not counted: onsets whose whole horizon lay inside an earlier episode (no score could warn): "
                     + ", ".join(f"{kind} {n}" for kind, n in skipped.items()))
    lines.append(f"\n  {result.seconds:.0f} s. Simulated cohorts prove the machinery, not clinical validity.")
    return "\n".join(lines)


#: The ops event kind of a stored evaluation's alert burden (``vitalrisk evaluate --store``; the Model board reads it).
BURDEN_EVENT = "alert_burden"


def burden_event(*, ts_ms: int, model: str, policy: str, tune_seeds: Sequence[int], test_seeds: Sequence[int],
                 patients: int, days: float, overall: OperatingPoint,
                 subgroups: Sequence[SubgroupBurden]) -> OpsEvent:
    """The ops event ``vitalrisk evaluate --store`` records: the model pages of one policy, overall and per subgroup.

    ``subject`` is the model (``risk-logreg``); ``details`` say which cohorts (``test_seeds``: the
    cohorts reported on; ``tune_seeds``: those the policy was chosen on, empty for a single
    cohort run with the default policy), the policy, and the burden, NaN as ``null``.

    >>> from stream.alert_tuning import Estimate
    >>> p = OperatingPoint("default", (42,), 2, 20.0, 1, 1, 1, 1, Estimate(0.05), Estimate(1.0), Estimate(1.0), 3.0)
    >>> e = burden_event(ts_ms=0, model="logreg", policy="default", tune_seeds=(), test_seeds=(42,), patients=2,
    ...                  days=14.0, overall=p, subgroups=[])
    >>> e.kind, e.subject, e.details["test_seeds"], e.details["overall"]["ppv"]
    ('alert_burden', 'risk-logreg', [42], {'value': 1.0, 'ci95': [None, None]})
    """
    details: dict[str, object] = {
        "source": "vitalrisk evaluate", "policy": policy, "tune_seeds": list(tune_seeds),
        "test_seeds": list(test_seeds), "patients": patients, "days": days, "overall": overall.as_dict(),
        "subgroups": [s.as_dict() for s in subgroups]}
    return OpsEvent(kind=BURDEN_EVENT, ts_ms=ts_ms, subject=f"risk-{model}", details=details)


def format_protocol(protocol: Protocol, *, patients: int, days: float, seconds: float) -> str:
    """The text report of ``--tune-seeds``/``--test-seeds``: the seeds, the rule, the choice, its test results."""
    sel = protocol.selection
    chosen = sel.chosen.describe()
    seeds = ", ".join(str(s) for s in protocol.tune_seeds)
    tests = ", ".join(str(s) for s in protocol.test_seeds)
    t = protocol.target
    lines = [f"vitalrisk evaluate: alert policy chosen on cohorts {seeds}, reported on cohorts {tests} "
             f"({patients} patients x {days:g} days each)", "",
             f"  target: PPV >= {t.ppv:g}, episode sensitivity >= {t.sensitivity:g}, "
             f"<= {t.pages_per_patient_day:g} page per patient-day",
             f"  rule: {RULE}", f"  {len(sel.tuning)} candidate policies; chosen: {chosen['name']} "
             f"({'meets' if sel.feasible else 'does not meet'} the PPV target and page budget on the tuning cohorts)",
             "", "  model pages under the chosen policy (95 % bootstrap intervals over patients)", _POINT_HEADER,
             _point_line("tuning, pooled", protocol.tune_pooled), _point_line("test, pooled", protocol.test_pooled)]
    lines += [_point_line(f"test seed {p.seeds[0]}", p) for p in protocol.test_per_seed]
    lines.append("  target on the pooled test cohorts: "
                 + ("met" if protocol.test_pooled.meets(t) else "not met"))
    if protocol.test_subgroups:
        lines += ["", "  by subgroup, pooled test cohorts", *format_subgroups(list(protocol.test_subgroups))]
    best = sorted(sel.tuning, key=lambda p: (-_or(p.sensitivity.value), -_or(p.ppv.value)))[:8]
    lines += ["", "  tuning cohorts, the most sensitive candidates (point estimates)",
              f"  {'candidate':<34}{'/pt-day':>9}{'PPV':>7}{'sens':>7}"]
    lines += [f"  {p.candidate:<34}{p.pages_per_patient_day.value:9.3f}{p.ppv.value:7.3f}{p.sensitivity.value:7.3f}"
              for p in best]
    lines.append(f"\n  {seconds:.0f} s. Simulated cohorts prove the machinery, not clinical validity.")
    return "\n".join(lines)


_POINT_HEADER = (f"  {'cohorts':<18}{'patients':>9}{'pages':>7}{'/pt-day':>9}{'(95% CI)':>13}{'PPV':>7}{'(95% CI)':>13}"
                 f"{'sens':>7}{'(95% CI)':>13}{'onsets':>8}{'lead h':>8}")


def _point_line(label: str, p: OperatingPoint) -> str:
    r = p.pages_per_patient_day
    return (f"  {label:<18}{p.patients:>9}{p.pages:>7}{r.value:9.3f}{_span((r.low, r.high), 3):>13}{p.ppv.value:7.3f}"
            f"{_span((p.ppv.low, p.ppv.high)):>13}{p.sensitivity.value:7.3f}"
            f"{_span((p.sensitivity.low, p.sensitivity.high)):>13}{p.onsets:>8}{_hours(p.median_lead_h):>8}")


def _or(value: float) -> float:
    return -1.0 if math.isnan(value) else value


def format_subgroups(rows: list[SubgroupBurden]) -> list[str]:
    """The subgroup burden table's lines: pages per patient-day, PPV and episode sensitivity per group."""
    out = [f"  {'attribute':<11}{'group':<8}{'patients':>9}{'pages':>7}{'/pt-day':>9}{'PPV':>7}{'(95% CI)':>13}"
           f"{'sens':>7}{'(95% CI)':>13}{'onsets':>8}"]
    for s in rows:
        p = s.point
        out.append(f"  {s.attribute:<11}{s.group:<8}{p.patients:>9}{p.pages:>7}{p.pages_per_patient_day.value:9.3f}"
                   f"{p.ppv.value:7.3f}{_span((p.ppv.low, p.ppv.high)):>13}{p.sensitivity.value:7.3f}"
                   f"{_span((p.sensitivity.low, p.sensitivity.high)):>13}{p.onsets:>8}")
    return out


def json_safe(value: object) -> JsonValue:
    """``value`` as JSON can hold it: NaN and infinities ``None``, numpy scalars Python ones,
    tuples lists, dict keys strings.

    >>> json_safe({"a": (1.5, float("nan")), 2: np.int64(3)})
    {'a': [1.5, None], '2': 3}
    """
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return json_safe(value.item())
    if value is None or isinstance(value, (bool, int, str)):
        return value
    raise TypeError(f"json_safe takes JSON-like values (numbers, strings, lists, dicts), got {type(value).__name__}")


def _span(interval: tuple[float, float], digits: int = 2) -> str:
    lo, hi = interval
    return "-" if math.isnan(lo) else f"{lo:.{digits}f}-{hi:.{digits}f}"


def _hours(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.1f}"
