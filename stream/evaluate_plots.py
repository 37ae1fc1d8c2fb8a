"""The plots of a ``vitalrisk evaluate`` run: ROC, calibration and example trajectories, as PNG files.

:func:`write_plots` draws them with matplotlib when it is installed (an optional dependency:
without it no plot is written); :func:`roc_curve` and :func:`reliability` compute the curves
from the run's score sketches (:class:`models.prequential.ScoreSketch`) and need numpy only.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from models.labelling import MS_PER_HOUR
from models.news2 import MAX_TOTAL
from models.prequential import LOGIT_RANGE, N_BINS, ScoreSketch
from stream.evaluate_report import MODEL, EvaluationResult

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FloatVector = npt.NDArray[np.float64]


def write_plots(result: EvaluationResult, out_dir: Path) -> list[Path]:
    """ROC, calibration and trajectory plots as PNG files; ``[]`` if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, sk in result.sketches.items():
        fpr, tpr = roc_curve(sk)
        ax.plot(fpr, tpr, label=f"{name} (AUROC {sk.auroc():.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate",
           title="Any deterioration within 12 h (report period)")
    ax.legend(loc="lower right")
    paths.append(_save(fig, out_dir / "evaluate_roc.png"))
    fig, ax = plt.subplots(figsize=(5, 5))
    predicted, observed, _ = reliability(result.sketches[MODEL])
    ax.plot(predicted, observed, "o-", label=f"model (ECE {result.sketches[MODEL].ece():.4f})")
    top = max(float(np.nanmax(predicted)) if len(predicted) else 0.01,
              float(np.nanmax(observed)) if len(observed) else 0.01)
    ax.plot([0, top], [0, top], "k:", lw=0.8, label="perfect calibration")
    ax.set(xlabel="mean predicted risk (bin)", ylabel="observed rate (bin)",
           title="Calibration, any deterioration (quantile bins)")
    ax.legend(loc="upper left")
    paths.append(_save(fig, out_dir / "evaluate_calibration.png"))
    if result.examples:
        fig, axes = plt.subplots(len(result.examples), 1, figsize=(8, 2.2 * len(result.examples)), sharex=False)
        for ax, ex in zip(np.atleast_1d(axes), result.examples, strict=True):
            hours = (ex.ts - ex.onset_ms) / MS_PER_HOUR
            ax.plot(hours, ex.risk, lw=0.8, label="model risk (any)")
            ax.plot(hours, ex.news2 / MAX_TOTAL, lw=0.8, label="NEWS2 / 20")
            ax.axvline(0, color="r", lw=1)
            ax.axvspan(-12, 0, color="r", alpha=0.08)
            ax.set_title(f"{ex.patient_id}: {ex.kind} (onset at 0 h; shaded: 12-h horizon)", fontsize=9)
            ax.set_ylim(0, 1)
        np.atleast_1d(axes)[-1].set_xlabel("hours from onset")
        np.atleast_1d(axes)[0].legend(loc="upper left", fontsize=8)
        fig.tight_layout()
        paths.append(_save(fig, out_dir / "evaluate_trajectories.png"))
    return paths


def _save(fig: Figure, path: Path) -> Path:
    import matplotlib.pyplot as plt  # matplotlib is optional: imported only where a plot is drawn

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def roc_curve(sketch: ScoreSketch) -> tuple[FloatVector, FloatVector]:
    """ROC points (FPR, TPR) of a sketch, highest threshold first.

    >>> sketch = ScoreSketch()
    >>> sketch.update_many(np.array([False, True]), np.array([0.1, 0.9]))
    >>> [v.tolist()[:2] for v in roc_curve(sketch)]
    [[0.0, 0.0], [0.0, 0.0]]
    """
    sketch.fold()
    tp = np.concatenate([[0.0], np.cumsum(sketch.pos[::-1])])
    fp = np.concatenate([[0.0], np.cumsum(sketch.neg[::-1])])
    return fp / max(fp[-1], 1e-12), tp / max(tp[-1], 1e-12)


def reliability(sketch: ScoreSketch, groups: int = 12) -> tuple[FloatVector, FloatVector, FloatVector]:
    """Reliability points from a sketch: score bins merged into ``groups`` of equal weight.

    Returns the mean predicted risk, the observed rate and the weight of each group.
    """
    sketch.fold()
    centers = np.arange(N_BINS, dtype=np.float64)
    logit = (centers - 1 + 0.5) * (2 * LOGIT_RANGE / (N_BINS - 2)) - LOGIT_RANGE
    p_center = 1.0 / (1.0 + np.exp(-logit))
    weight = sketch.pos + sketch.neg
    cum = np.cumsum(weight)
    if cum[-1] <= 0:
        return np.array([]), np.array([]), np.array([])
    edges = np.searchsorted(cum, np.linspace(0, cum[-1], groups + 1)[1:-1])
    predicted, observed, counts = [], [], []
    for part in np.split(np.arange(N_BINS), edges):
        w = weight[part].sum()
        if w <= 0:
            continue
        predicted.append(float(np.sum(weight[part] * p_center[part]) / w))
        observed.append(float(sketch.pos[part].sum() / w))
        counts.append(float(w))
    return np.array(predicted), np.array(observed), np.array(counts)
