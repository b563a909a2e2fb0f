"""Figures for evaluation: a confusion matrix per fold and a bar chart per results table.

Figures are drawn on the Agg canvas without pyplot, so nothing depends on a display or on
global matplotlib state, and saved through ``hmf.atomic``.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from hmf.atomic import atomic_path


def _save(fig: Figure, path: str | os.PathLike) -> None:
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")


def plot_confusion(matrix, classes: Sequence[str], path: str | os.PathLike, title: str = "Confusion matrix") -> None:
    """Confusion matrix (rows = true class, columns = predicted) with the counts written in."""
    cm = np.asarray(matrix, dtype=int)
    n = len(classes)
    if cm.shape != (n, n):
        raise ValueError(f"confusion matrix for {path} has shape {cm.shape}, expected ({n}, {n})")
    size = 1.6 + 0.75 * n
    fig = Figure(figsize=(size + 0.8, size))
    ax = fig.add_subplot()
    image = ax.imshow(cm, cmap="Blues", vmin=0, vmax=max(1, int(cm.max())))
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(n), labels=list(classes), rotation=45, ha="right")
    ax.set_yticks(range(n), labels=list(classes))
    ax.set_xlabel("Predicted")
    ax.set_ylabel("True")
    ax.set_title(title)
    threshold = cm.max() / 2 if cm.max() > 0 else 1
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", color="white" if cm[i, j] > threshold else "black")
    _save(fig, path)


def plot_metric_bars(
    means: np.ndarray,
    stds: np.ndarray,
    models: Sequence[str],
    metric_labels: Sequence[str],
    path: str | os.PathLike,
    title: str,
) -> None:
    """Grouped bars: one group per metric, one bar per model, error bars = std over folds.

    ``means``/``stds`` are (n_models, n_metrics); NaN means draw no bar (metric not available),
    a NaN std draws no error bar (a single fold).
    """
    means = np.asarray(means, dtype=float)
    stds = np.asarray(stds, dtype=float)
    n_models, n_metrics = means.shape
    width = 0.8 / max(n_models, 1)
    fig = Figure(figsize=(min(20.0, max(6.0, 2.0 + n_metrics * (0.25 * n_models + 0.4))), 4.2))
    ax = fig.add_subplot()
    x = np.arange(n_metrics)
    for m, model in enumerate(models):
        offset = (m - (n_models - 1) / 2) * width
        height = np.nan_to_num(means[m], nan=0.0)
        err = np.where(np.isnan(stds[m]) | np.isnan(means[m]), 0.0, stds[m])
        bars = ax.bar(x + offset, height, width, yerr=err, capsize=3, label=model)
        for bar, value in zip(bars, means[m]):
            if np.isnan(value):
                bar.set_visible(False)
    ax.set_xticks(x, labels=list(metric_labels))
    ax.set_ylim(min(0.0, float(np.nanmin(means - np.nan_to_num(stds))) if np.isfinite(means).any() else 0.0), 1.05)
    ax.set_ylabel("mean over folds (± std)")
    ax.set_title(title)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    _save(fig, path)
