"""Figures for evaluation: a confusion matrix per fold and a bar chart per results table.

Figures are drawn on the Agg canvas without pyplot, so nothing depends on a display or on
global matplotlib state, and saved through ``hmf.atomic``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

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
    errors: np.ndarray,
    models: Sequence[str],
    metric_labels: Sequence[str],
    path: str | os.PathLike,
    title: str,
    ylabel: str = "mean over folds (± std)",
    markers: np.ndarray | None = None,
    marker_label: str = "",
) -> None:
    """Grouped bars: one group per metric, one bar per model.

    ``means`` is (n_models, n_metrics); ``errors`` the same shape (symmetric error bars, e.g. a
    std over folds) or (2, n_models, n_metrics) (distances below and above, e.g. a confidence
    interval). NaN means draw no bar (metric not available) or no error bar. ``markers``
    (n_models, n_metrics), when given, draws a dot on each bar (e.g. the mean over folds).
    """
    means = np.asarray(means, dtype=float)
    errors = np.asarray(errors, dtype=float)
    n_models, n_metrics = means.shape
    width = 0.8 / max(n_models, 1)
    fig = Figure(figsize=(min(20.0, max(6.0, 2.0 + n_metrics * (0.25 * n_models + 0.4))), 4.2))
    ax = fig.add_subplot()
    x = np.arange(n_metrics)
    lowest = 0.0
    for m, model in enumerate(models):
        offset = (m - (n_models - 1) / 2) * width
        height = np.nan_to_num(means[m], nan=0.0)
        err = errors[:, m] if errors.ndim == 3 else errors[m]
        err = np.where(np.isnan(err) | np.isnan(means[m]), 0.0, err)
        bars = ax.bar(x + offset, height, width, yerr=err, capsize=3, label=model)
        lowest = min(lowest, float(np.min(height - (err[0] if errors.ndim == 3 else err))))
        for bar, value in zip(bars, means[m]):
            if np.isnan(value):
                bar.set_visible(False)
        if markers is not None:
            ax.plot(x + offset, markers[m], "k.", markersize=5, label=marker_label if m == 0 else None)
    ax.set_xticks(x, labels=list(metric_labels))
    ax.set_ylim(lowest, 1.05)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    _save(fig, path)


def plot_forest(rows, metric_labels: dict, path: str | os.PathLike, title: str) -> None:
    """Forest plot of paired differences: one panel per metric, one line per model (the
    difference to the reference and its confidence interval), a vertical line at 0.

    ``rows`` is the comparison frame (``model``, ``metric``, ``difference``, ``ci_low``,
    ``ci_high``, ``p_value``); undefined differences are written as "n/a".
    """
    metrics = list(dict.fromkeys(rows["metric"]))
    models = list(dict.fromkeys(rows["model"]))
    n_panels = max(1, len(metrics))
    fig = Figure(figsize=(3.6 * n_panels + 1.6, 0.9 + 0.45 * max(1, len(models))))
    axes = fig.subplots(1, n_panels, sharey=True, squeeze=False)[0]
    y = np.arange(len(models))[::-1]
    for ax, metric in zip(axes, metrics):
        part = rows[rows["metric"] == metric].set_index("model")
        for yi, model in zip(y, models):
            if model not in part.index or not np.isfinite(part.at[model, "difference"]):
                ax.text(0, yi, "n/a", ha="center", va="center", fontsize=8, color="grey")
                continue
            r = part.loc[model]
            ax.plot([r["ci_low"], r["ci_high"]], [yi, yi], color="tab:blue", linewidth=2)
            ax.plot(r["difference"], yi, "o", color="tab:blue")
            ax.annotate(
                f"p={r['p_value']:.3g}",
                (r["ci_high"], yi),
                xytext=(4, 0),
                textcoords="offset points",
                va="center",
                fontsize=7,
            )
        ax.axvline(0, color="black", linewidth=0.8, linestyle="--")
        ax.set_title(metric_labels.get(metric, metric))
        ax.set_xlabel("difference to the reference")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, labels=models)
    axes[0].set_ylim(-0.7, len(models) - 0.3)
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)
