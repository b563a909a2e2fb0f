"""The predictions files: written and read here only.

``predictions.csv`` of a trained fold model, the only thing evaluation reads from it, has
columns ``id, true_label, pred_label, prob_<class>...`` (one probability column per class, in
the task's class order), one row per slide or patient, sorted by id. Models without
probabilities (the pN rule) write a one-hot row.

The predict target's files for new, unlabelled patients have no ``true_label``: the ensemble
(``id``, optional columns such as ``patient_id``, ``pred_label``, ``prob_<class>...`` (the
mean over the K fold models), ``std_<class>...`` (their spread), ``folds``, ``in_sample``) and
the per-fold rows (``id, fold, pred_label, prob_<class>..., in_sample``). ``in_sample`` is true
for training slides or patients re-scored with ``predict.allow_training_slides``.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping, Sequence

import numpy as np
import pandas as pd

from hmf.atomic import write_csv

PROB_PREFIX = "prob_"
STD_PREFIX = "std_"
SUM_TOLERANCE = 1e-3  # probabilities written from float32 softmax sum to 1 within rounding


def prob_columns(classes: Sequence[str]) -> list[str]:
    return [f"{PROB_PREFIX}{c}" for c in classes]


def write_predictions(ids, true_labels, probs, classes: Sequence[str], path: str | os.PathLike) -> pd.DataFrame:
    """Write a predictions file; ``pred_label`` is the arg-max class of each row of ``probs``.

    ``true_labels`` are class names or class indices; ``probs`` is an (n, C) array whose
    columns follow ``classes``. Returns the frame written.
    """
    classes = [str(c) for c in classes]
    ids = [str(i) for i in ids]
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape != (len(ids), len(classes)):
        raise ValueError(
            f"{path}: probabilities must have shape (n_ids={len(ids)}, n_classes={len(classes)}), got {probs.shape}"
        )
    if len(true_labels) != len(ids):
        raise ValueError(f"{path}: {len(ids)} ids but {len(true_labels)} true labels")
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: duplicate ids {sorted({i for i in ids if ids.count(i) > 1})[:10]}")
    truth = [_label_name(t, classes, path) for t in true_labels]
    frame = pd.DataFrame({"id": ids, "true_label": truth, "pred_label": [classes[i] for i in probs.argmax(axis=1)]})
    for col, column in zip(prob_columns(classes), probs.T):
        frame[col] = column
    frame = frame.sort_values("id", kind="stable").reset_index(drop=True)
    _check_probabilities(frame, classes, path)
    write_csv(path, frame)
    return frame


def read_predictions(path: str | os.PathLike, classes: Sequence[str]) -> pd.DataFrame:
    """Read and check a predictions file against the task's ``classes``.

    Checks: the columns, ids unique, labels among the classes, probabilities finite, in [0, 1]
    and summing to 1, and ``pred_label`` being a class of highest probability.
    """
    classes = [str(c) for c in classes]
    try:
        frame = pd.read_csv(
            path, dtype={"id": str, "true_label": str, "pred_label": str}, keep_default_na=False, na_values=[""]
        )
    except FileNotFoundError:
        raise FileNotFoundError(f"predictions file not found: {path}") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"predictions file {path}: not a readable CSV ({exc})") from exc
    expected = ["id", "true_label", "pred_label", *prob_columns(classes)]
    missing = [c for c in expected if c not in frame.columns]
    if missing:
        raise ValueError(f"predictions file {path}: missing column(s) {missing}; expected {expected}")
    extra = [c for c in frame.columns if c.startswith(PROB_PREFIX) and c not in expected]
    if extra:
        raise ValueError(f"predictions file {path}: probability column(s) {extra} for classes not in {classes}")
    if frame.empty:
        raise ValueError(f"predictions file {path}: no rows")
    if frame["id"].isna().any():
        raise ValueError(f"predictions file {path}: empty id in {int(frame['id'].isna().sum())} row(s)")
    dup = sorted(frame.loc[frame["id"].duplicated(), "id"].unique())
    if dup:
        raise ValueError(f"predictions file {path}: duplicate id(s) {dup[:10]}")
    for col in ("true_label", "pred_label"):
        bad = frame.loc[~frame[col].isin(classes), col]
        if len(bad):
            raise ValueError(
                f"predictions file {path}: {col} value(s) {sorted(bad.fillna('<empty>').unique())[:10]} "
                f"not among the classes {classes}"
            )
    _check_probabilities(frame, classes, path)
    return frame[expected].sort_values("id", kind="stable").reset_index(drop=True)


TIE_TOLERANCE = 1e-9  # probabilities this close to the row's maximum count as tied


def ensemble_labels(
    ids, mean: np.ndarray, classes: Sequence[str], preferred: Mapping[str, str] | None = None
) -> list[str]:
    """The arg-max class of each row of ``mean`` (n, C). Where several classes tie for the
    maximum, ``preferred[id]`` decides (e.g. the pN rule over the ensemble's node labels):
    that class if it is tied, else the tied class nearest to it in the class order (the later
    one at equal distance). Without a preference a tie goes to the first class."""
    classes = list(classes)
    labels = []
    for i, row in zip(ids, mean):
        tied = np.flatnonzero(row >= row.max() - TIE_TOLERANCE)
        choice = int(tied[0])
        if len(tied) > 1 and preferred is not None and preferred.get(i) in classes:
            want = classes.index(preferred[i])
            choice = int(min(tied, key=lambda k: (abs(int(k) - want), -int(k))))
        labels.append(classes[choice])
    return labels


def write_ensemble_predictions(
    ids,
    probs: np.ndarray,
    classes: Sequence[str],
    path: str | os.PathLike,
    extra: dict | None = None,
    preferred: Mapping[str, str] | None = None,
    in_sample: Collection[str] | None = None,
) -> pd.DataFrame:
    """The predict target's ensemble file from the fold models' probabilities ``probs`` (K, n, C):
    their mean, its arg-max (ties: see :func:`ensemble_labels`) and their standard deviation over
    the folds (NaN for one fold). ``extra`` columns (name -> one value per id) follow ``id``;
    ``in_sample`` (ids predicted in-sample), if given, adds a boolean ``in_sample`` column.
    Returns the frame written."""
    mean = probs.mean(axis=0)
    frame = pd.DataFrame(
        {"id": list(ids), **(extra or {}), "pred_label": ensemble_labels(ids, mean, classes, preferred)}
    )
    for column, values in zip(prob_columns(classes), mean.T):
        frame[column] = values
    std = probs.std(axis=0, ddof=1) if probs.shape[0] > 1 else np.full_like(mean, np.nan)
    for c, values in zip(classes, std.T):
        frame[f"{STD_PREFIX}{c}"] = values
    frame["folds"] = probs.shape[0]
    if in_sample is not None:
        frame["in_sample"] = frame["id"].isin(set(in_sample))
    write_csv(path, frame)
    return frame


def write_fold_predictions(
    ids, probs: np.ndarray, classes: Sequence[str], path: str | os.PathLike, in_sample: Collection[str] | None = None
) -> pd.DataFrame:
    """The predict target's per-fold file: one row per fold model and id (``in_sample`` as for
    :func:`write_ensemble_predictions`). Returns the frame written."""
    rows = []
    for k, fold in enumerate(probs):
        part = pd.DataFrame({"id": list(ids), "fold": k, "pred_label": [classes[i] for i in fold.argmax(axis=1)]})
        for column, values in zip(prob_columns(classes), fold.T):
            part[column] = values
        rows.append(part)
    frame = pd.concat(rows, ignore_index=True)
    if in_sample is not None:
        frame["in_sample"] = frame["id"].isin(set(in_sample))
    write_csv(path, frame)
    return frame


def read_predicted_labels(path: str | os.PathLike) -> pd.Series:
    """id -> ``pred_label`` of a predictions file (either kind)."""
    try:
        frame = pd.read_csv(path, dtype={"id": str}, keep_default_na=False, na_values=[""])
    except FileNotFoundError:
        raise FileNotFoundError(f"predictions file not found: {path}") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"predictions file {path}: not a readable CSV ({exc})") from exc
    missing = [c for c in ("id", "pred_label") if c not in frame.columns]
    if missing:
        raise ValueError(f"predictions file {path}: missing column(s) {missing}")
    return frame.set_index("id")["pred_label"]


def label_indices(frame: pd.DataFrame, column: str, classes: Sequence[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    return frame[column].map(index).to_numpy(dtype=int)


def probabilities(frame: pd.DataFrame, classes: Sequence[str]) -> np.ndarray:
    return frame[prob_columns(classes)].to_numpy(dtype=np.float64)


def _check_probabilities(frame: pd.DataFrame, classes: list[str], path) -> None:
    cols = prob_columns(classes)
    try:
        probs = frame[cols].to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"predictions file {path}: non-numeric probability ({exc})") from exc
    ids = frame["id"].to_numpy()
    bad = ~np.isfinite(probs).all(axis=1)
    if bad.any():
        raise ValueError(f"predictions file {path}: missing or non-finite probability for id(s) {list(ids[bad][:10])}")
    bad = ((probs < 0) | (probs > 1)).any(axis=1)
    if bad.any():
        raise ValueError(f"predictions file {path}: probability outside [0, 1] for id(s) {list(ids[bad][:10])}")
    sums = probs.sum(axis=1)
    bad = np.abs(sums - 1) > SUM_TOLERANCE
    if bad.any():
        raise ValueError(
            f"predictions file {path}: probabilities do not sum to 1 for id(s) {list(ids[bad][:10])} "
            f"(sums {np.round(sums[bad][:10], 4).tolist()})"
        )
    chosen = probs[np.arange(len(probs)), label_indices(frame, "pred_label", classes)]
    bad = chosen < probs.max(axis=1) - 1e-9
    if bad.any():
        raise ValueError(
            f"predictions file {path}: pred_label is not a class of highest probability for id(s) {list(ids[bad][:10])}"
        )


def _label_name(label, classes: list[str], path) -> str:
    if isinstance(label, (int, np.integer)) and not isinstance(label, (bool, np.bool_)):
        if not 0 <= int(label) < len(classes):
            raise ValueError(f"{path}: true label index {int(label)} outside 0..{len(classes) - 1}")
        return classes[int(label)]
    name = str(label)
    if name not in classes:
        raise ValueError(f"{path}: true label {name!r} not among the classes {classes}")
    return name
