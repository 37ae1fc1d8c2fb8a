"""The synthetic-cohort section of docs/cohort.md: two patients' week of vitals, and episode incidence.

Run as ``python -m simulators.cohort_report --patients 1000 --days 7 --seed 42 --out docs/img``.
It simulates the whole cohort as fast as it goes (accelerated: no pacing), keeps only the
readings of two patients chosen before the run, and writes:

- ``cohort_deteriorating.png``: a patient whose deterioration episode starts and resolves
  inside the week, with prodrome, acute phase and recovery shaded;
- ``cohort_stable.png``: a patient with no episode, as like the first as the cohort allows
  (same conditions, closest age);

and prints a markdown table of episode incidence by chronic condition. The simulation is
vectorised across patients, so the two patients' readings cannot be had without simulating
all of them; memory stays bounded because everything else is counted and dropped.

Examples
--------
>>> from simulators.cohort import CohortConfig
>>> config = CohortConfig(patients=300, seed=42, duration_ms=7 * MS_PER_DAY)
>>> rows = incidence_by_condition(population(config), episodes(config), config.duration_ms)
>>> [r.condition for r in rows][-1], rows[-1].patients
('all patients', 300)
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np
import numpy.typing as npt

from simulators.cohort import CohortConfig, MS_PER_DAY, episodes, population, simulate
from simulators.deterioration import Episode
from simulators.population import CONDITIONS, Condition, Patient

MS_PER_HOUR = 3_600_000
MS_PER_WEEK = 7 * MS_PER_DAY
#: How far inside the week an example episode must start and end, so both ends show.
EDGE_MS = 12 * MS_PER_HOUR
#: Episode kinds that move several vitals at once (an AF episode moves mainly heart rate).
_SHOWCASE_KINDS = ("infection", "hf_decompensation", "copd_exacerbation")

_CONDITION_LABEL: dict[Condition, str] = {
    "heart_failure": "heart failure",
    "copd": "COPD",
    "hypertension": "hypertension",
    "type2_diabetes": "type 2 diabetes",
    "atrial_fibrillation": "atrial fibrillation",
}


@dataclass(frozen=True, slots=True)
class IncidenceRow:
    """Episodes among the patients with one condition (or all patients).

    ``by_kind`` counts the episodes by kind; ``self_resolving`` those that resolved without
    an event (no outcome published). Patients with several conditions count in every row.
    """

    condition: str
    patients: int
    episodes: int
    per_100_patient_weeks: float
    self_resolving: int
    by_kind: dict[str, int]

    @property
    def self_resolving_share(self) -> float:
        return self.self_resolving / self.episodes if self.episodes else float("nan")


def incidence_by_condition(patients: Sequence[Patient], eps: Iterable[Episode],
                           duration_ms: int) -> list[IncidenceRow]:
    """One :class:`IncidenceRow` per chronic condition, then one for all patients.

    Examples
    --------
    >>> from simulators.population import Baseline
    >>> b = Baseline(70.0, 97.0, 15.0, 36.6, 125.0, 78.0)
    >>> pts = [Patient("pt-a", 70, "F", 2, ("copd",), b), Patient("pt-b", 60, "M", 5, (), b)]
    >>> eps = [Episode("pt-a", "copd_exacerbation", 0, 1, 2, 3, 1.0, False),
    ...        Episode("pt-a", "infection", 0, 1, 2, 3, 1.0, True)]
    >>> copd = incidence_by_condition(pts, eps, MS_PER_WEEK)[1]
    >>> copd.condition, copd.patients, copd.episodes, copd.per_100_patient_weeks, copd.self_resolving_share
    ('COPD', 1, 2, 200.0, 0.5)
    """
    by_patient: dict[str, list[Episode]] = defaultdict(list)
    for e in eps:
        by_patient[e.patient_id].append(e)
    weeks = duration_ms / MS_PER_WEEK
    groups: list[tuple[str, list[Patient]]] = [
        (_CONDITION_LABEL[c], [p for p in patients if p.has(c)]) for c in CONDITIONS
    ]
    groups.append(("all patients", list(patients)))
    rows = []
    for label, members in groups:
        mine = [e for p in members for e in by_patient.get(p.patient_id, ())]
        rows.append(IncidenceRow(
            condition=label,
            patients=len(members),
            episodes=len(mine),
            per_100_patient_weeks=100.0 * len(mine) / (len(members) * weeks) if members else float("nan"),
            self_resolving=sum(e.resolved_without_event for e in mine),
            by_kind=dict(sorted(Counter(e.kind for e in mine).items())),
        ))
    return rows


def incidence_markdown(rows: Sequence[IncidenceRow]) -> str:
    """The incidence rows as a markdown table.

    Examples
    --------
    >>> row = IncidenceRow("COPD", 10, 4, 40.0, 1, {"copd_exacerbation": 3, "infection": 1})
    >>> print(incidence_markdown([row]))
    | condition | patients | episodes | per 100 patient-weeks | resolved on their own | episodes by kind |
    |---|---:|---:|---:|---:|---|
    | COPD | 10 | 4 | 40.0 | 25 % (1) | COPD exacerbation 3, infection 1 |
    """
    lines = ["| condition | patients | episodes | per 100 patient-weeks | resolved on their own | episodes by kind |",
             "|---|---:|---:|---:|---:|---|"]
    for r in rows:
        share = f"{100 * r.self_resolving_share:.0f} % ({r.self_resolving})" if r.episodes else "–"
        kinds = ", ".join(f"{_KIND_LABEL.get(k, k)} {n}" for k, n in r.by_kind.items()) or "–"
        lines.append(f"| {r.condition} | {r.patients:,} | {r.episodes:,} | {r.per_100_patient_weeks:.1f} | "
                     f"{share} | {kinds} |")
    return "\n".join(lines)


_KIND_LABEL = {"hf_decompensation": "HF decompensation", "copd_exacerbation": "COPD exacerbation",
               "infection": "infection", "af_episode": "AF episode"}  # fmt: skip


def choose_patients(config: CohortConfig, patients: Sequence[Patient],
                    eps: Sequence[Episode]) -> tuple[Episode, Patient, Patient]:
    """The showcase episode, its patient, and a matched stable patient.

    The episode is the most severe one that becomes an event, moves several vitals, and
    starts (prodrome) and resolves at least :data:`EDGE_MS` inside the period, in a
    patient with no other episode. The stable patient has no episode, preferably the same
    conditions, and the closest age.

    Raises
    ------
    ValueError
        If no episode or no stable patient fits (a cohort too small or too short).

    Examples
    --------
    >>> from simulators.deterioration import Incidence
    >>> config = CohortConfig(patients=100, seed=1, duration_ms=7 * MS_PER_DAY, incidence=Incidence().scaled(5))
    >>> episode, sick, stable = choose_patients(config, population(config), episodes(config))
    >>> episode.kind, sick.conditions == stable.conditions, abs(sick.age_years - stable.age_years)
    ('infection', True, 0)
    >>> choose_patients(config, population(config), [])
    Traceback (most recent call last):
    ...
    ValueError: no episode starts and resolves inside the period: simulate more patients or days
    """
    start, stop = config.start_ms + EDGE_MS, config.start_ms + config.duration_ms - EDGE_MS
    count = Counter(e.patient_id for e in eps)
    fits = [e for e in eps if not e.resolved_without_event and e.kind in _SHOWCASE_KINDS
            and e.prodrome_start_ms >= start and e.end_ms <= stop and count[e.patient_id] == 1]
    if not fits:
        raise ValueError("no episode starts and resolves inside the period: simulate more patients or days")
    episode = max(fits, key=lambda e: (e.severity, e.patient_id))
    by_id = {p.patient_id: p for p in patients}
    sick = by_id[episode.patient_id]
    stable = [p for p in patients if count[p.patient_id] == 0]
    if not stable:
        raise ValueError("every patient has an episode: no stable patient to compare with")
    match = min(stable, key=lambda p: (p.conditions != sick.conditions, abs(p.age_years - sick.age_years),
                                       p.patient_id))
    return episode, sick, match


@dataclass(slots=True)
class StreamSummary:
    """What streaming the cohort produced; the readings of the followed patients only."""

    messages: int = 0
    readings: int = 0
    outcome_events: int = 0
    seconds: float = 0.0
    followed: dict[str, list[tuple[str, int, float]]] = field(default_factory=dict)


def stream_cohort(config: CohortConfig, follow: Iterable[str], *, progress: TextIO | None = None) -> StreamSummary:
    """Run the simulation; count everything, keep ``(metric, t, value)`` of the ``follow`` patients."""
    keep: dict[str, list[tuple[str, int, float]]] = {pid: [] for pid in follow}
    summary = StreamSummary(followed=keep)
    started = last = time.monotonic()
    for message in simulate(config):
        if message.kind == "outcome":
            summary.outcome_events += 1
            continue
        summary.messages += 1
        payload = message.payload
        if isinstance(payload, bytes):
            continue
        readings = payload["readings"]
        summary.readings += len(readings)
        sink = keep.get(message.key)
        if sink is not None:
            sink.extend((r["metric"], r["t"], r["value"]) for r in readings)
        if progress is not None and summary.messages % 50_000 == 0 and time.monotonic() - last >= 2.0:
            last = time.monotonic()
            day = (message.sent_ms - config.start_ms) / MS_PER_DAY
            progress.write(f"\rsimulated day {day:.2f} of {config.duration_ms / MS_PER_DAY:.0f}: "
                           f"{summary.readings:,} readings in {last - started:.0f} s")
            progress.flush()
    summary.seconds = time.monotonic() - started
    if progress is not None:
        progress.write("\n")
    return summary


def _series(rows: list[tuple[str, int, float]], metric: str) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    picked = [(t, v) for m, t, v in rows if m == metric]
    if not picked:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    t, v = zip(*sorted(picked))
    return np.asarray(t, dtype=np.int64), np.asarray(v, dtype=np.float64)


def _binned(t: npt.NDArray[np.int64], v: npt.NDArray[np.float64], start_ms: int, bin_ms: int,
            how: str) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Per-bin median (or sum) of a series, at the bins' centres, in days since ``start_ms``."""
    if t.size == 0:
        return np.zeros(0), np.zeros(0)
    b = (t - start_ms) // bin_ms
    keys, first = np.unique(b, return_index=True)
    parts = np.split(v, first[1:])
    stat = np.array([np.median(p) if how == "median" else p.sum() for p in parts])
    return (keys * bin_ms + bin_ms / 2) / MS_PER_DAY, stat


#: The metrics of each panel but the last (steps), top to bottom.
PANELS: tuple[tuple[str, ...], ...] = (
    ("heart_rate",), ("respiratory_rate",), ("oxygen_saturation",), ("body_temperature",),
    ("systolic_blood_pressure", "diastolic_blood_pressure"), ("step_count",),
)


def shared_limits(*patients_rows: list[tuple[str, int, float]]) -> list[tuple[float, float]]:
    """Y limits per panel covering every given patient, so their plots compare at a glance.

    Steps are summed per hour, so their panel gets the largest hourly total.

    Examples
    --------
    >>> shared_limits([("heart_rate", 0, 60.0), ("step_count", 0, 30.0)],
    ...               [("heart_rate", 0, 100.0), ("step_count", 60_000, 50.0)])[0]
    (56.0, 104.0)
    """
    limits = []
    for metrics in PANELS:
        if metrics == ("step_count",):
            top = max((_binned(*_series(rows, "step_count"), 0, MS_PER_HOUR, "sum")[1].max(initial=0.0)
                       for rows in patients_rows), default=0.0)
            limits.append((0.0, 1.05 * top if top > 0 else 1.0))
            continue
        values = [v for rows in patients_rows for m, _, v in rows if m in metrics]
        if not values:
            limits.append((0.0, 1.0))
            continue
        lo, hi = min(values), max(values)
        pad = 0.1 * (hi - lo) or 1.0
        limits.append((lo - pad, hi + pad))
    return limits


def plot_week(path: Path, patient: Patient, rows: list[tuple[str, int, float]], config: CohortConfig,
              episode: Episode | None, ylims: Sequence[tuple[float, float]] | None = None) -> Path:
    """Six panels (HR, RR, SpO2, temperature, BP, steps) of one patient over the period, as a PNG.

    ``ylims`` fixes each panel's y range (see :func:`shared_limits`); by default each fits the data.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    start = config.start_ms
    days = config.duration_ms / MS_PER_DAY
    fig, axes = plt.subplots(6, 1, figsize=(11, 11), sharex=True)
    panels: list[tuple[str, str, str]] = [
        ("heart_rate", "heart rate\nbeats/min", "C3"),
        ("respiratory_rate", "respiratory rate\nbreaths/min", "C0"),
        ("oxygen_saturation", "SpO2 %", "C4"),
        ("body_temperature", "temperature °C", "C1"),
    ]
    for ax, (metric, label, colour) in zip(axes, panels):
        t, v = _series(rows, metric)
        ax.plot((t - start) / MS_PER_DAY, v, ".", ms=0.6, color=colour, alpha=0.15, rasterized=True)
        x, med = _binned(t, v, start, MS_PER_HOUR, "median")
        ax.plot(x, med, "-", lw=1.0, color=colour, label="hourly median")
        ax.set_ylabel(label, fontsize=9)
    ax = axes[4]
    for metric, colour, name in (("systolic_blood_pressure", "C3", "systolic"),
                                 ("diastolic_blood_pressure", "C0", "diastolic")):  # fmt: skip
        t, v = _series(rows, metric)
        ax.plot((t - start) / MS_PER_DAY, v, "o-", ms=3, lw=0.6, color=colour, label=name)
    ax.set_ylabel("blood pressure\nmmHg (cuff)", fontsize=9)
    ax.legend(loc="upper right", fontsize=7, ncol=2)
    ax = axes[5]
    t, v = _series(rows, "step_count")
    x, total = _binned(t, v, start, MS_PER_HOUR, "sum")
    ax.bar(x, total, width=1 / 24, color="C2")
    ax.set_ylabel("steps\nper hour", fontsize=9)
    ax.set_xlabel("days since 2026-01-05 00:00 UTC" if start == 1_767_571_200_000 else "days since start")
    ax.set_xlim(0, days)

    conditions = ", ".join(_CONDITION_LABEL[c] for c in patient.conditions) or "no chronic condition"
    head = f"{patient.patient_id}: {patient.age_years} y, {patient.sex}, Fitzpatrick {patient.skin_tone}, {conditions}"
    if episode is None:
        fig.suptitle(f"{head}\nno deterioration episode this week", fontsize=10)
    else:
        p, o, r, e = ((x - start) / MS_PER_DAY for x in (episode.prodrome_start_ms, episode.onset_ms,
                                                         episode.recovery_start_ms, episode.end_ms))
        for ax in axes:
            ax.axvspan(p, o, color="orange", alpha=0.12, lw=0)
            ax.axvspan(o, r, color="red", alpha=0.12, lw=0)
            ax.axvspan(r, e, color="green", alpha=0.08, lw=0)
            ax.axvline(o, color="red", lw=1.0)
            ax.axvline(e, color="green", lw=1.0, ls="--")
        kind = _KIND_LABEL[episode.kind]
        fig.suptitle(f"{head}\n{kind} (severity {episode.severity:.2f}): prodrome from day {p:.1f} (orange), "
                     f"onset day {o:.1f} (red line), acute to day {r:.1f}, resolved day {e:.1f} (green dashed)",
                     fontsize=10)
    for i, ax in enumerate(axes):
        ax.grid(alpha=0.3, lw=0.5)
        if ylims is not None:
            ax.set_ylim(*ylims[i])
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Simulate, plot, print the incidence table; return the exit status."""
    out, err = stdout or sys.stdout, stderr or sys.stderr
    parser = argparse.ArgumentParser(prog="python -m simulators.cohort_report", description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    args = parser.parse_args(argv)
    minutes = round(args.days * 1440)
    try:
        config = CohortConfig(patients=args.patients, seed=args.seed, duration_ms=max(minutes, 0) * 60_000)
        patients, eps = population(config), episodes(config)
        episode, sick, stable = choose_patients(config, patients, eps)
    except (TypeError, ValueError) as exc:
        err.write(f"cohort_report: {exc}\n")
        return 2
    # This process only builds and drops message dicts: a lazier cyclic collector saves about
    # a third of the run (see simulators.cohort), and no reference cycles are made here.
    gc.set_threshold(100_000, 50, 1000)
    err.write(f"simulating {config.patients:,} patients x {args.days:g} days (seed {config.seed}); "
              f"following {sick.patient_id} ({episode.kind}) and {stable.patient_id} (stable)\n")
    summary = stream_cohort(config, (sick.patient_id, stable.patient_id), progress=err)
    sick_rows, stable_rows = summary.followed[sick.patient_id], summary.followed[stable.patient_id]
    ylims = shared_limits(sick_rows, stable_rows)
    paths = [
        plot_week(args.out / "cohort_deteriorating.png", sick, sick_rows, config, episode, ylims),
        plot_week(args.out / "cohort_stable.png", stable, stable_rows, config, None, ylims),
    ]
    rows = incidence_by_condition(patients, eps, config.duration_ms)
    events = sum(not e.resolved_without_event for e in eps)
    out.write(f"{config.patients:,} patients x {args.days:g} days, seed {config.seed}: {summary.messages:,} device "
              f"messages, {summary.readings:,} readings, {summary.outcome_events:,} outcome events "
              f"({events:,} expected from the episode plan); simulated in {summary.seconds:.0f} s\n\n")
    out.write(incidence_markdown(rows) + "\n\n")
    for p in paths:
        out.write(f"plot: {p}\n")
    if summary.outcome_events != events:
        err.write(f"cohort_report: the stream had {summary.outcome_events} outcome events, the plan {events}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
