"""Pooled out-of-fold metrics with patient-level bootstrap confidence intervals, and paired
comparisons of two models on the same resamples.

The K test folds partition the patients, so the K predictions files of a model hold one
prediction per slide (or patient) of the cohort. Pooled, each metric is computed once over all
of them (for CAMELYON17 at patient level this is the challenge's quadratic kappa).

Uncertainty comes from resampling *patients* with replacement (a patient's slides stay
together): resample b draws as many patients as there are, with a fixed seed, and counts each
prediction as often as its patient was drawn. Every model of a level is scored on the same
draws, so differences between models are paired. Intervals are percentile intervals over the
resamples in which the metric is defined (AUC needs every class among the drawn patients).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hmf.evaluation.metrics import compute_metrics, scores
from hmf.evaluation.predictions import label_indices, probabilities, read_predictions

CHUNK = 256  # resamples scored at a time: memory stays at CHUNK x predictions


def pool_predictions(
    paths: Sequence[str | os.PathLike], classes: Sequence[str], patient_of: Mapping[str, str] | None = None
) -> pd.DataFrame:
    """The K fold predictions files of one model as one frame with ``fold`` and ``patient_id``
    columns. ``patient_of`` maps slide ids to patients (slide level); without it each id is a
    patient. An id in two files means the test folds overlap: an error."""
    frames = []
    for fold, path in enumerate(paths):
        frame = read_predictions(path, classes)
        frame["fold"] = fold
        frame["source"] = str(path)
        frames.append(frame)
    if not frames:
        raise ValueError("no predictions files to pool")
    pooled = pd.concat(frames, ignore_index=True)
    twice = pooled[pooled["id"].duplicated(keep=False)]
    if not twice.empty:
        first = twice.iloc[0]
        others = sorted(set(twice.loc[twice["id"] == first["id"], "source"]))
        raise ValueError(
            f"id {first['id']!r} is predicted in more than one test fold ({', '.join(others)}): "
            f"the test folds must partition the cohort"
        )
    if patient_of is None:
        pooled["patient_id"] = pooled["id"]
    else:
        unknown = sorted(set(pooled["id"]) - set(patient_of))
        if unknown:
            raise ValueError(
                f"{pooled.loc[pooled['id'] == unknown[0], 'source'].iloc[0]}: id(s) not in the sample "
                f"sheet: {unknown[:10]}"
            )
        pooled["patient_id"] = pooled["id"].map(patient_of)
    return pooled.drop(columns="source").sort_values("id", kind="stable").reset_index(drop=True)


@dataclass(frozen=True)
class Resamples:
    """Patient draws shared by every model of a level: ``counts[b, p]`` is how often patient
    ``patients[p]`` was drawn in resample b."""

    patients: tuple[str, ...]
    counts: np.ndarray
    seed: int

    @property
    def n(self) -> int:
        return int(self.counts.shape[0])

    def weights(self, frame: pd.DataFrame, start: int = 0, stop: int | None = None) -> np.ndarray:
        """(B, rows) multiplicity of each row of ``frame`` in resamples ``start:stop``."""
        index = {p: i for i, p in enumerate(self.patients)}
        missing = sorted(set(frame["patient_id"]) - set(index))
        if missing:
            raise ValueError(f"patient(s) {missing[:10]} are not among the resampled patients")
        columns = frame["patient_id"].map(index).to_numpy(dtype=int)
        return self.counts[start:stop][:, columns]


def draw_resamples(patients, n_resamples: int, seed: int) -> Resamples:
    """``n_resamples`` draws with replacement of as many patients as there are (sorted ids, so
    the draws depend only on the set of patients and the seed)."""
    patients = tuple(sorted({str(p) for p in patients}))
    if not patients:
        raise ValueError("no patients to resample")
    if n_resamples < 1:
        raise ValueError(f"evaluation.bootstrap_resamples must be at least 1, got {n_resamples}")
    rng = np.random.default_rng(seed)
    n = len(patients)
    counts = np.zeros((n_resamples, n), dtype=np.float64)
    for b in range(n_resamples):
        counts[b] = np.bincount(rng.integers(0, n, size=n), minlength=n)
    return Resamples(patients=patients, counts=counts, seed=int(seed))


def resampled_scores(
    frame: pd.DataFrame, classes: Sequence[str], ordinal: bool, resamples: Resamples
) -> dict[str, np.ndarray]:
    """Every metric of ``frame`` (a pooled predictions frame) under each resample: (B,) arrays."""
    classes = [str(c) for c in classes]
    y_true = label_indices(frame, "true_label", classes)
    y_pred = label_indices(frame, "pred_label", classes)
    probs = probabilities(frame, classes)
    parts = [
        scores(y_true, y_pred, probs, len(classes), ordinal, resamples.weights(frame, start, start + CHUNK))
        for start in range(0, resamples.n, CHUNK)
    ]
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def percentile_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float, int]:
    """(low, high, resamples with a value): the percentile interval over the finite values."""
    finite = values[np.isfinite(values)]
    if not len(finite):
        return math.nan, math.nan, 0
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high), int(len(finite))


def two_sided_p(differences: np.ndarray) -> float:
    """Two-sided bootstrap p-value of "no difference": twice the smaller share of resampled
    differences on either side of zero, with the +1 correction (never exactly 0); the smallest
    alpha at which the (1 - alpha) percentile interval excludes 0."""
    finite = differences[np.isfinite(differences)]
    if not len(finite):
        return math.nan
    below = (np.sum(finite <= 0) + 1) / (len(finite) + 1)
    above = (np.sum(finite >= 0) + 1) / (len(finite) + 1)
    return float(min(1.0, 2 * min(below, above)))


def pooled_summary(
    frame: pd.DataFrame,
    classes: Sequence[str],
    ordinal: bool,
    resamples: Resamples,
    metrics: Sequence[str],
    level: float = 0.95,
) -> dict:
    """Pooled value and bootstrap interval of each metric: ``<m>_pooled``, ``<m>_ci_low``,
    ``<m>_ci_high``, ``<m>_resamples`` (resamples where it is defined), plus ``n`` and the notes."""
    point = compute_metrics(frame, classes, ordinal)
    boot = resampled_scores(frame, classes, ordinal, resamples)
    row: dict = {"n": int(len(frame)), "patients": int(frame["patient_id"].nunique()), "pooled_notes": point["notes"]}
    for m in metrics:
        value = point[m]
        low, high, kept = percentile_interval(boot[m], level) if value is not None else (math.nan, math.nan, 0)
        row[f"{m}_pooled"] = math.nan if value is None else float(value)
        row[f"{m}_ci_low"], row[f"{m}_ci_high"], row[f"{m}_resamples"] = low, high, kept
    return row


def paired_comparison(
    frames: Mapping[str, pd.DataFrame],
    reference: str,
    classes: Sequence[str],
    ordinal: bool,
    resamples: Resamples,
    metrics: Sequence[str],
    level: float = 0.95,
) -> pd.DataFrame:
    """Each model minus ``reference`` on the ids both predicted, on the same resamples.

    One row per model and metric: ``difference`` (pooled), ``ci_low``, ``ci_high``, ``p_value``,
    ``n`` (ids compared) and ``resamples`` (resamples where both are defined). A metric that is
    undefined for either model (AUC of a one-hot predictor) has NaN everywhere.
    """
    if reference not in frames:
        raise ValueError(f"reference model {reference!r} has no predictions; models: {sorted(frames)}")
    rows = []
    for model, frame in frames.items():
        if model == reference:
            continue
        common = sorted(set(frame["id"]) & set(frames[reference]["id"]))
        if not common:
            raise ValueError(f"models {model!r} and {reference!r} have no predicted id in common")
        a = frame.set_index("id").loc[common].reset_index()
        r = frames[reference].set_index("id").loc[common].reset_index()
        point_a, point_r = compute_metrics(a, classes, ordinal), compute_metrics(r, classes, ordinal)
        boot_a = resampled_scores(a, classes, ordinal, resamples)
        boot_r = resampled_scores(r, classes, ordinal, resamples)
        for m in metrics:
            if m == "kappa_quadratic" and not ordinal:
                continue
            defined = point_a[m] is not None and point_r[m] is not None
            diff = boot_a[m] - boot_r[m]
            low, high, kept = percentile_interval(diff, level) if defined else (math.nan, math.nan, 0)
            rows.append(
                {
                    "model": model,
                    "reference": reference,
                    "metric": m,
                    "n": len(common),
                    "model_value": math.nan if point_a[m] is None else point_a[m],
                    "reference_value": math.nan if point_r[m] is None else point_r[m],
                    "difference": point_a[m] - point_r[m] if defined else math.nan,
                    "ci_low": low,
                    "ci_high": high,
                    "p_value": two_sided_p(diff) if defined else math.nan,
                    "resamples": kept,
                }
            )
    return pd.DataFrame(
        rows,
        columns=[
            "model",
            "reference",
            "metric",
            "n",
            "model_value",
            "reference_value",
            "difference",
            "ci_low",
            "ci_high",
            "p_value",
            "resamples",
        ],
    )
