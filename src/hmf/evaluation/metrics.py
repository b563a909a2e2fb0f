"""Per-fold metrics, computed from a predictions file only.

Conventions (each fold is scored on its own):

- precision, recall and F1 are macro averages over the classes that occur in the fold's true
  or predicted labels (scikit-learn's default), with ``zero_division=0``; a class that is
  neither present nor predicted has no defined score and is left out, with a note;
- balanced accuracy is the mean recall over the classes present in the true labels;
- ROC AUC is binary on the second class, or one-vs-rest macro over all classes; it needs
  every class in the true labels, otherwise it is None with a note;
- quadratic weighted kappa uses all classes in task order (ordinal tasks only, None otherwise).
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from typing import Sequence

import numpy as np
import pandas as pd
from sklearn import metrics as skm
from sklearn.exceptions import UndefinedMetricWarning

from hmf.atomic import write_json
from hmf.evaluation.plots import plot_confusion
from hmf.evaluation.predictions import label_indices, probabilities, read_predictions

log = logging.getLogger(__name__)

METRIC_KEYS = (
    "accuracy",
    "balanced_accuracy",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "f1_weighted",
    "auc",
    "kappa_quadratic",
)


def compute_metrics(pred_df: pd.DataFrame, classes: Sequence[str], ordinal: bool) -> dict:
    """Metrics of one fold from a checked predictions frame (see ``read_predictions``)."""
    classes = [str(c) for c in classes]
    n_classes = len(classes)
    y_true = label_indices(pred_df, "true_label", classes)
    y_pred = label_indices(pred_df, "pred_label", classes)
    probs = probabilities(pred_df, classes)
    notes: list[str] = []

    absent_true = [classes[i] for i in range(n_classes) if not (y_true == i).any()]
    unused = [classes[i] for i in range(n_classes) if not (y_true == i).any() and not (y_pred == i).any()]
    if unused:
        notes.append(f"class(es) {unused} neither present nor predicted: left out of the macro averages")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.simplefilter("ignore", UserWarning)  # balanced accuracy: predicted class absent from truth
        precision, recall, f1, _ = skm.precision_recall_fscore_support(y_true, y_pred, average="macro", zero_division=0)
        per_p, per_r, per_f, support = skm.precision_recall_fscore_support(
            y_true, y_pred, labels=list(range(n_classes)), average=None, zero_division=0
        )
        result = {
            "accuracy": float(skm.accuracy_score(y_true, y_pred)),
            "balanced_accuracy": float(skm.balanced_accuracy_score(y_true, y_pred)),
            "precision_macro": float(precision),
            "recall_macro": float(recall),
            "f1_macro": float(f1),
            "f1_weighted": float(skm.f1_score(y_true, y_pred, average="weighted", zero_division=0)),
            "auc": _auc(y_true, probs, classes, absent_true, notes),
            "kappa_quadratic": _kappa(y_true, y_pred, n_classes, notes) if ordinal else None,
        }
    result.update(
        {
            "confusion_matrix": skm.confusion_matrix(y_true, y_pred, labels=list(range(n_classes))).tolist(),
            "per_class": {
                c: {"precision": float(per_p[i]), "recall": float(per_r[i]), "f1": float(per_f[i]), "support": int(support[i])}
                for i, c in enumerate(classes)
            },
            "n": int(len(y_true)),
            "class_counts": {c: int((y_true == i).sum()) for i, c in enumerate(classes)},
            "classes": classes,
            "ordinal": bool(ordinal),
            "notes": notes,
        }
    )
    return result


def _auc(y_true: np.ndarray, probs: np.ndarray, classes: list[str], absent: list[str], notes: list[str]) -> float | None:
    if absent:
        notes.append(f"auc skipped: class(es) {absent} absent from the true labels of this fold")
        return None
    if len(classes) == 2:
        return float(skm.roc_auc_score(y_true == 1, probs[:, 1]))
    # One-vs-rest needs rows summing to exactly 1; files are allowed rounding slack.
    probs = probs / probs.sum(axis=1, keepdims=True)
    return float(skm.roc_auc_score(y_true, probs, multi_class="ovr", average="macro", labels=list(range(len(classes)))))


def _kappa(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int, notes: list[str]) -> float | None:
    value = skm.cohen_kappa_score(y_true, y_pred, weights="quadratic", labels=list(range(n_classes)))
    if not math.isfinite(value):
        notes.append("kappa undefined: true and predicted labels are a single, identical class")
        return None
    return float(value)


def evaluate_fold(
    predictions_csv: str | os.PathLike,
    metrics_json: str | os.PathLike,
    confusion_png: str | os.PathLike,
    classes: Sequence[str],
    ordinal: bool,
    title: str | None = None,
) -> dict:
    """Score one fold's predictions file; write ``metrics_json`` and ``confusion_png``."""
    frame = read_predictions(predictions_csv, classes)
    result = compute_metrics(frame, classes, ordinal)
    result["predictions"] = str(predictions_csv)
    for note in result["notes"]:
        log.warning("%s: %s", predictions_csv, note)
    write_json(metrics_json, result)
    if title is None:
        title = f"Confusion matrix (n = {result['n']})"
    plot_confusion(result["confusion_matrix"], result["classes"], confusion_png, title=title)
    log.info(
        "%s: accuracy %.3f, macro F1 %.3f, auc %s, kappa %s",
        predictions_csv,
        result["accuracy"],
        result["f1_macro"],
        _fmt(result["auc"]),
        _fmt(result["kappa_quadratic"]),
    )
    return result


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"
