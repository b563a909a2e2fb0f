"""Training curves from a fold's ``train_log.csv``: losses and validation metrics per epoch."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from hmf.atomic import atomic_path
from hmf.evaluation.metrics import METRICS

DPI = 100
FIGSIZE = (11.0, 4.2)


def read_train_log(path: str | os.PathLike) -> pd.DataFrame:
    """The per-epoch rows of a training log, checked for the columns the plot needs."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training log {path} does not exist")
    try:
        frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"training log {path} is not a readable CSV: {err}") from None
    missing = [c for c in ("epoch", "train_loss") if c not in frame.columns]
    if missing:
        raise ValueError(f"training log {path}: missing column(s) {missing} (columns: {list(frame.columns)})")
    if frame.empty:
        raise ValueError(f"training log {path} has no epochs")
    return frame.sort_values("epoch").reset_index(drop=True)


def plot_training_curves(log_csv: str | os.PathLike, out_png: str | os.PathLike, title: str = "") -> tuple[int, int]:
    """Left: training and validation loss per epoch; right: validation metrics per epoch.

    Returns the pixel size of the PNG (fixed: FIGSIZE x DPI).
    """
    frame = read_train_log(log_csv)
    epochs = frame["epoch"].to_numpy()
    fig = Figure(figsize=FIGSIZE)
    loss_ax, metric_ax = fig.subplots(1, 2)
    loss_ax.plot(epochs, frame["train_loss"], marker="o", label="train loss")
    if "val_loss" in frame:
        loss_ax.plot(epochs, frame["val_loss"], marker="o", label="validation loss")
        best = int(frame["val_loss"].idxmin())
        loss_ax.axvline(
            epochs[best], color="grey", linestyle=":", label=f"lowest validation loss (epoch {epochs[best]})"
        )
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("loss")
    loss_ax.set_title("Loss")
    loss_ax.legend(fontsize=8)

    # The metrics table's curve metrics, in its order, that the log has.
    shown = [m for m in METRICS if m.curve and f"val_{m.name}" in frame]
    metrics = [m.name for m in shown]
    for m in shown:
        metric_ax.plot(epochs, frame[f"val_{m.name}"], marker="o", label=m.label)
    if metrics:
        metric_ax.set_ylim(min(0.0, float(frame[[f"val_{m}" for m in metrics]].min().min())) - 0.02, 1.02)
        metric_ax.legend(fontsize=8)
    else:
        metric_ax.text(
            0.5, 0.5, "no validation part in this fold", ha="center", va="center", transform=metric_ax.transAxes
        )
    metric_ax.set_xlabel("epoch")
    metric_ax.set_title("Validation metrics")
    for ax in (loss_ax, metric_ax):
        ax.grid(alpha=0.3)
        if len(epochs) <= 20:
            ax.set_xticks(epochs)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    FigureCanvasAgg(fig)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return int(round(FIGSIZE[0] * DPI)), int(round(FIGSIZE[1] * DPI))
