"""Result tables: per-fold metrics files summarised as ``mean ± std`` per model.

The std is the sample standard deviation over folds (ddof = 1). A metric missing from some
folds (AUC when a class was absent, kappa when undefined) is averaged over the folds that
have it, and the Markdown table says so in a footnote.
"""

from __future__ import annotations

import json
import os
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from hmf.atomic import write_csv, write_text
from hmf.evaluation.plots import plot_metric_bars

DEFAULT_METRICS = ("accuracy", "precision_macro", "recall_macro", "f1_macro", "auc", "kappa_quadratic")
METRIC_LABELS = {
    "accuracy": "Accuracy",
    "balanced_accuracy": "Balanced accuracy",
    "precision_macro": "Precision",
    "recall_macro": "Recall",
    "f1_macro": "F1",
    "f1_weighted": "Weighted F1",
    "auc": "AUC",
    "kappa_quadratic": "Kappa",
}
_SUPERSCRIPT = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")


def _load(path, model: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise FileNotFoundError(f"metrics file of model {model!r} not found: {path}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"metrics file {path} (model {model!r}) is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"metrics file {path} (model {model!r}) does not hold a JSON object")
    return data


def format_cell(mean: float, std: float, n: int) -> str:
    """``0.840 ± 0.072``; a single fold gives ``0.840 (1 fold)``; no fold gives ``–``."""
    if n == 0 or not np.isfinite(mean):
        return "–"
    if n == 1:
        return f"{mean:.3f} (1 fold)"
    return f"{mean:.3f} ± {std:.3f}"


def summarise(
    metrics_paths: Mapping[str, Sequence[str | os.PathLike]],
    metrics: Sequence[str] = DEFAULT_METRICS,
    model_order: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per model: ``model``, ``folds`` and, per metric, ``<m>_mean``, ``<m>_std``
    (ddof = 1; NaN with fewer than two values), ``<m>_n`` (folds with a value) and ``<m>``
    (the formatted cell)."""
    unknown = [m for m in metrics if m not in METRIC_LABELS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; choose from {list(METRIC_LABELS)}")
    models = _ordered_models(metrics_paths, model_order)
    reference_classes = None
    rows = []
    for model in models:
        paths = list(metrics_paths[model])
        if not paths:
            raise ValueError(f"model {model!r}: no metrics files")
        row: dict = {"model": model, "folds": len(paths)}
        values = {m: [] for m in metrics}
        for path in paths:
            data = _load(path, model)
            classes = data.get("classes")
            if reference_classes is None:
                reference_classes = (classes, path)
            elif classes != reference_classes[0]:
                raise ValueError(
                    f"metrics file {path} (model {model!r}) has classes {classes}, but {reference_classes[1]} "
                    f"has {reference_classes[0]}: a table compares models on one task"
                )
            for m in metrics:
                if m not in data:
                    raise ValueError(f"metrics file {path} (model {model!r}) has no {m!r} entry")
                if data[m] is not None:
                    values[m].append(float(data[m]))
        for m in metrics:
            v = np.asarray(values[m], dtype=float)
            mean = float(v.mean()) if len(v) else float("nan")
            std = float(v.std(ddof=1)) if len(v) > 1 else float("nan")
            row[f"{m}_mean"] = mean
            row[f"{m}_std"] = std
            row[f"{m}_n"] = int(len(v))
            row[m] = format_cell(mean, std, len(v))
        rows.append(row)
    return pd.DataFrame(rows)


def _ordered_models(metrics_paths: Mapping, model_order: Sequence[str] | None) -> list[str]:
    if not metrics_paths:
        raise ValueError("no models to tabulate")
    if model_order is None:
        return list(metrics_paths)
    missing = [m for m in model_order if m not in metrics_paths]
    if missing:
        raise ValueError(f"model_order names model(s) without metrics files: {missing}")
    return list(model_order) + [m for m in metrics_paths if m not in model_order]


def markdown_table(summary: pd.DataFrame, metrics: Sequence[str], title: str, model_labels: Mapping[str, str] | None = None) -> str:
    """The paper's layout (Model | Accuracy | Precision | Recall | F1 | AUC | Kappa | Folds),
    best mean per column in bold; metrics no model has are left out."""
    model_labels = model_labels or {}
    shown = [m for m in metrics if (summary[f"{m}_n"] > 0).any()]
    header = ["Model", *[METRIC_LABELS[m] for m in shown], "Folds"]
    best = {}
    for m in shown:
        rounded = summary[f"{m}_mean"].round(3)
        best[m] = rounded.max() if rounded.notna().sum() > 1 else None
    footnotes: list[str] = []
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for _, row in summary.iterrows():
        cells = [model_labels.get(row["model"], row["model"])]
        for m in shown:
            cell = row[m]
            if best[m] is not None and round(row[f"{m}_mean"], 3) == best[m]:
                cell = f"**{cell}**"
            if 0 < row[f"{m}_n"] < row["folds"]:
                footnotes.append(
                    f"{METRIC_LABELS[m]} of {cells[0]}: averaged over the {row[f'{m}_n']} of {row['folds']} folds "
                    f"where it is defined (see the notes in the other folds' metrics.json)."
                )
                cell += str(len(footnotes)).translate(_SUPERSCRIPT)
            cells.append(cell)
        cells.append(str(row["folds"]))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Mean ± sample standard deviation (ddof = 1) over folds; best mean per column in bold.")
    for i, note in enumerate(footnotes, start=1):
        lines.append("")
        lines.append(f"{str(i).translate(_SUPERSCRIPT)} {note}")
    return "\n".join(lines) + "\n"


def build_tables(
    metrics_paths: Mapping[str, Sequence[str | os.PathLike]],
    out_csv: str | os.PathLike,
    out_md: str | os.PathLike,
    out_png: str | os.PathLike,
    title: str,
    metrics: Sequence[str] = DEFAULT_METRICS,
    model_order: Sequence[str] | None = None,
    model_labels: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Write the CSV (numeric means, stds, counts and the formatted cells), the Markdown table
    and the bar chart for one task × level; returns the summary frame."""
    summary = summarise(metrics_paths, metrics, model_order)
    write_csv(out_csv, summary)
    write_text(out_md, markdown_table(summary, metrics, title, model_labels))
    shown = [m for m in metrics if (summary[f"{m}_n"] > 0).any()]
    labels = [(model_labels or {}).get(m, m) for m in summary["model"]]
    plot_metric_bars(
        summary[[f"{m}_mean" for m in shown]].to_numpy(dtype=float),
        summary[[f"{m}_std" for m in shown]].to_numpy(dtype=float),
        labels,
        [METRIC_LABELS[m] for m in shown],
        out_png,
        title,
    )
    return summary
