"""Metrics of a set of predictions (one fold, or all folds pooled), computed from a predictions
file only.

Conventions (one scorer, ``scores``, serves the per-fold metrics, the pooled metrics and every
bootstrap resample; the validation metrics that select a checkpoint use the same convention):

- precision, recall and F1 are macro averages over *all* the task's classes, with
  ``zero_division=0``: a class absent from the true labels and never predicted scores 0;
- balanced accuracy is the mean recall over the classes present in the true labels;
- ROC AUC is binary on the second class, or one-vs-rest macro over all classes; it needs
  every class in the true labels, otherwise it is None with a note. A predictor whose
  probabilities are all one-hot (the pN rule) gives hard labels, not scores: its AUC is None
  ("n/a"), not the AUC of a step function;
- quadratic weighted kappa uses all classes in task order (ordinal tasks only, None otherwise).

``METRICS`` is the one table of the metrics ``scores`` computes: name, label, direction and
where each is shown (result tables, paired comparisons, training curves). The result tables,
the report, the training curves and the checkpoint selection (``training.monitor``) read it.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn import metrics as skm
from sklearn.exceptions import UndefinedMetricWarning

from hmf.atomic import write_json
from hmf.evaluation.plots import plot_confusion
from hmf.evaluation.predictions import label_indices, probabilities, read_predictions

log = logging.getLogger(__name__)

# Why a fold's expected test ids may have no prediction, per level.
LEFT_OUT_REASON = {
    "slide": "test slides without patches (no tissue found): no prediction",
    "patient": "test patients none of whose slides has patches: no prediction",
}


@dataclass(frozen=True)
class Metric:
    """One metric of :func:`scores`."""

    name: str  # key in scores(), metrics.json and the tables; ``val_<name>`` in a training log
    label: str  # column header and axis label
    higher_is_better: bool
    tabulated: bool  # a column of the result tables by default
    compared: bool  # in the paired comparison of every model with the reference model
    curve: bool  # drawn per epoch in the training curves


# In this order in every table and figure.
METRICS: tuple[Metric, ...] = (
    Metric("accuracy", "Accuracy", True, tabulated=True, compared=False, curve=True),
    Metric("balanced_accuracy", "Balanced accuracy", True, tabulated=False, compared=False, curve=True),
    Metric("precision_macro", "Precision", True, tabulated=True, compared=False, curve=False),
    Metric("recall_macro", "Recall", True, tabulated=True, compared=False, curve=False),
    Metric("f1_macro", "F1", True, tabulated=True, compared=True, curve=True),
    Metric("f1_weighted", "Weighted F1", True, tabulated=False, compared=False, curve=False),
    Metric("auc", "AUC", True, tabulated=True, compared=True, curve=True),
    Metric("kappa_quadratic", "Kappa", True, tabulated=True, compared=True, curve=True),
)
METRIC: dict[str, Metric] = {m.name: m for m in METRICS}


def metric(name: str) -> Metric:
    """The table row of ``name``; an unknown name is an error listing the known ones."""
    try:
        return METRIC[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; choose from {list(METRIC)}") from None


def is_one_hot(probs: np.ndarray) -> bool:
    """True when every row is a one-hot vector: hard labels written as probabilities."""
    probs = np.asarray(probs, dtype=np.float64)
    return bool(len(probs)) and bool(np.all((probs == 0) | (probs == 1)))


def scores(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    probs: np.ndarray,
    n_classes: int,
    ordinal: bool,
    weights: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Every metric (accuracy, balanced accuracy, macro precision, recall and F1, weighted F1,
    AUC, quadratic kappa) for each row of ``weights``; NaN where undefined.

    ``weights`` is (B, n): row b counts prediction i ``weights[b, i]`` times (a bootstrap
    resample); None scores the predictions once (B = 1). Vectorised over B through the
    confusion matrices, so thousands of resamples cost a few matrix products.
    """
    y_true = np.asarray(y_true, dtype=int)
    y_pred = np.asarray(y_pred, dtype=int)
    n = len(y_true)
    w = np.ones((1, n)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.ndim != 2 or w.shape[1] != n:
        raise ValueError(f"weights must have shape (B, {n}), got {w.shape}")
    c = int(n_classes)
    pairs = np.zeros((n, c * c))
    pairs[np.arange(n), y_true * c + y_pred] = 1.0
    cm = (w @ pairs).reshape(-1, c, c)  # (B, true, predicted)
    total = cm.sum(axis=(1, 2))
    diag = np.diagonal(cm, axis1=1, axis2=2)
    true_n, pred_n = cm.sum(axis=2), cm.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(pred_n > 0, diag / pred_n, 0.0)
        recall = np.where(true_n > 0, diag / true_n, 0.0)
        f1 = np.where(true_n + pred_n > 0, 2 * diag / (true_n + pred_n), 0.0)
        present = true_n > 0
        out = {
            "accuracy": diag.sum(axis=1) / total,
            "balanced_accuracy": (recall * present).sum(axis=1) / present.sum(axis=1),
            "precision_macro": precision.mean(axis=1),
            "recall_macro": recall.mean(axis=1),
            "f1_macro": f1.mean(axis=1),
            "f1_weighted": (true_n * f1).sum(axis=1) / total,
            "auc": _auc(y_true, np.asarray(probs, dtype=np.float64), c, w),
            "kappa_quadratic": _kappa(cm, true_n, pred_n, total) if ordinal else np.full(len(w), np.nan),
        }
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


def weighted_auc(score: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC (Mann-Whitney, ties count a half) of ``score`` for ``positive`` under each row of
    ``weights`` (B, n); NaN where a row has no positive or no negative weight."""
    order = np.argsort(score, kind="stable")
    s, pos = score[order], np.asarray(positive, dtype=bool)[order]
    w = weights[:, order]
    starts = np.r_[0, np.flatnonzero(np.diff(s)) + 1]  # groups of tied scores
    neg_group = np.add.reduceat(w * ~pos, starts, axis=1)
    pos_group = np.add.reduceat(w * pos, starts, axis=1)
    neg_below = np.cumsum(neg_group, axis=1) - neg_group
    wins = (pos_group * (neg_below + 0.5 * neg_group)).sum(axis=1)
    n_pos, n_neg = pos_group.sum(axis=1), neg_group.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), wins / (n_pos * n_neg), np.nan)


def _auc(y_true: np.ndarray, probs: np.ndarray, n_classes: int, w: np.ndarray) -> np.ndarray:
    if is_one_hot(probs):
        return np.full(len(w), np.nan)
    if n_classes == 2:
        return weighted_auc(probs[:, 1], y_true == 1, w)
    # One-vs-rest needs rows summing to exactly 1; files are allowed rounding slack.
    probs = probs / probs.sum(axis=1, keepdims=True)
    per_class = np.stack([weighted_auc(probs[:, k], y_true == k, w) for k in range(n_classes)], axis=1)
    return per_class.mean(axis=1)  # NaN when any class is absent from the (resampled) truth


def _kappa(cm: np.ndarray, true_n: np.ndarray, pred_n: np.ndarray, total: np.ndarray) -> np.ndarray:
    c = cm.shape[1]
    i, j = np.indices((c, c))
    penalty = (i - j) ** 2
    expected = true_n[:, :, None] * pred_n[:, None, :] / total[:, None, None]
    observed = (penalty * cm).sum(axis=(1, 2))
    chance = (penalty * expected).sum(axis=(1, 2))
    return np.where(chance > 0, 1 - observed / np.where(chance > 0, chance, 1), np.nan)


def compute_metrics(pred_df: pd.DataFrame, classes: Sequence[str], ordinal: bool) -> dict:
    """Metrics of a checked predictions frame (see ``read_predictions``): one fold, or all pooled."""
    classes = [str(c) for c in classes]
    n_classes = len(classes)
    y_true = label_indices(pred_df, "true_label", classes)
    y_pred = label_indices(pred_df, "pred_label", classes)
    probs = probabilities(pred_df, classes)
    notes: list[str] = []

    absent_true = [classes[i] for i in range(n_classes) if not (y_true == i).any()]
    unused = [classes[i] for i in range(n_classes) if not (y_true == i).any() and not (y_pred == i).any()]
    if unused:
        notes.append(f"class(es) {unused} neither present nor predicted: they score 0 in the macro averages")
    if is_one_hot(probs):
        notes.append("auc n/a: one-hot probabilities (hard labels, no scores to rank)")
    elif absent_true:
        notes.append(f"auc skipped: class(es) {absent_true} absent from the true labels")
    values = {k: float(v[0]) for k, v in scores(y_true, y_pred, probs, n_classes, ordinal).items()}
    if ordinal and not math.isfinite(values["kappa_quadratic"]):
        notes.append("kappa undefined: true and predicted labels are a single, identical class")
    result: dict = {k: (v if math.isfinite(v) else None) for k, v in values.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        per_p, per_r, per_f, support = skm.precision_recall_fscore_support(
            y_true, y_pred, labels=list(range(n_classes)), average=None, zero_division=0
        )
    result.update(
        {
            "confusion_matrix": skm.confusion_matrix(y_true, y_pred, labels=list(range(n_classes))).tolist(),
            "per_class": {
                c: {
                    "precision": float(per_p[i]),
                    "recall": float(per_r[i]),
                    "f1": float(per_f[i]),
                    "support": int(support[i]),
                }
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


def expected_test_ids(sheet_csv: str | os.PathLike, split_csv: str | os.PathLike, level: str) -> list[str]:
    """The ids a fold's predictions file should hold: the slides (level ``slide``) or the
    patients (level ``patient``) of the fold's test part."""
    from hmf.data.sample_sheet import read_sample_sheet
    from hmf.data.splits import read_split

    sheet = read_sample_sheet(sheet_csv)
    split = read_split(split_csv)
    tested = sheet[sheet["patient_id"].map(split) == "test"]
    if level == "slide":
        return sorted(tested["slide_id"].astype(str))
    if level == "patient":
        return sorted(tested["patient_id"].astype(str).unique())
    raise ValueError(f"unknown level {level!r}: expected 'slide' or 'patient'")


def left_out(frame: pd.DataFrame, expected: Sequence[str], level: str, source) -> dict:
    """Expected test ids without a prediction (counted, not only warned about); a prediction
    for an id outside the fold's test part is an error (it would be scored on seen data)."""
    present, expected = set(frame["id"]), set(expected)
    unexpected = sorted(present - expected)
    if unexpected:
        raise ValueError(f"predictions file {source}: id(s) outside the fold's test part: {unexpected[:10]}")
    missing = sorted(expected - present)
    return {"n": len(missing), "ids": missing, "reason": LEFT_OUT_REASON[level]}


def evaluate_fold(
    predictions_csv: str | os.PathLike,
    metrics_json: str | os.PathLike,
    confusion_png: str | os.PathLike,
    classes: Sequence[str],
    ordinal: bool,
    title: str | None = None,
    expected_ids: Sequence[str] | None = None,
    level: str = "slide",
) -> dict:
    """Score one fold's predictions file; write ``metrics_json`` and ``confusion_png``.

    With ``expected_ids`` (the fold's test slides or patients) the ids without a prediction
    are counted in ``left_out`` of the metrics file.
    """
    frame = read_predictions(predictions_csv, classes)
    result = compute_metrics(frame, classes, ordinal)
    result["predictions"] = str(predictions_csv)
    if expected_ids is not None:
        result["left_out"] = left_out(frame, expected_ids, level, predictions_csv)
        if result["left_out"]["n"]:
            result["notes"].append(
                f"{result['left_out']['n']} {result['left_out']['reason']}: {', '.join(result['left_out']['ids'][:10])}"
            )
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
        fmt(result["auc"]),
        fmt(result["kappa_quadratic"]),
    )
    return result


def fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"
