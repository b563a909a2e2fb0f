"""Pooled out-of-fold metrics with patient-level bootstrap confidence intervals, and paired
comparisons of two models on the same resamples.

The K test folds of a cross-validation partition the patients, so the K predictions files of a
model hold one prediction per slide (or patient) of the cohort. Pooled, each metric is computed
once over all of them (for CAMELYON17 at patient level this is the challenge's quadratic kappa).
With R repeats (fold f is fold f % K of repeat f // K) each repeat is pooled on its own; a
metric is the mean over repeats of the per-repeat pooled values, with their range.

Uncertainty comes from resampling *patients* with replacement (a patient's slides stay
together): resample b draws as many patients as there are, with a fixed seed, and counts each
prediction as often as its patient was drawn. Every model of a level is scored on the same
draws, so differences between models are paired. With repeats, a resample draws the patients
once and scores every repeat on that draw: the interval is the one of the mean over repeats.
Intervals are percentile intervals over the resamples in which the metric is defined (AUC needs
every class among the drawn patients). The trained models are held fixed: the intervals cover
the sampling of test patients, not the variability of training.
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
    paths: Sequence[str | os.PathLike],
    classes: Sequence[str],
    patient_of: Mapping[str, str] | None = None,
    folds_per_repeat: int | None = None,
) -> pd.DataFrame:
    """The R*K fold predictions files of one model as one frame with ``fold``, ``repeat`` and
    ``patient_id`` columns; file f is fold f % K of repeat f // K (K = ``folds_per_repeat``,
    None: all files are one repeat). ``patient_of`` maps slide ids to patients (slide level);
    without it each id is a patient. An id in two files of a repeat means its test folds
    overlap: an error."""
    paths = list(paths)
    k = len(paths) if folds_per_repeat is None else int(folds_per_repeat)
    if k < 1 or len(paths) % k:
        raise ValueError(f"{len(paths)} predictions files are not whole repeats of {k} folds")
    frames = []
    for fold, path in enumerate(paths):
        frame = read_predictions(path, classes)
        frame["fold"] = fold
        frame["repeat"] = fold // k
        frame["source"] = str(path)
        frames.append(frame)
    if not frames:
        raise ValueError("no predictions files to pool")
    pooled = pd.concat(frames, ignore_index=True)
    twice = pooled[pooled.duplicated(["repeat", "id"], keep=False)]
    if not twice.empty:
        first = twice.iloc[0]
        others = sorted(set(twice.loc[(twice["id"] == first["id"]) & (twice["repeat"] == first["repeat"]), "source"]))
        raise ValueError(
            f"id {first['id']!r} is predicted in more than one test fold ({', '.join(others)}): "
            f"the test folds {'of a repeat ' if len(paths) > k else ''}must partition the cohort"
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
    return pooled.drop(columns="source").sort_values(["repeat", "id"], kind="stable").reset_index(drop=True)


def repeats_of(frame: pd.DataFrame) -> list[pd.DataFrame]:
    """A pooled frame's repeats, in order (a frame without a ``repeat`` column is one repeat)."""
    if "repeat" not in frame:
        return [frame]
    return [part.reset_index(drop=True) for _, part in frame.groupby("repeat", sort=True)]


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


def repeat_values(frame: pd.DataFrame, classes: Sequence[str], ordinal: bool) -> tuple[list[dict], list[str]]:
    """Each repeat's pooled metrics (``compute_metrics``) and the notes of all repeats."""
    points = [compute_metrics(part, classes, ordinal) for part in repeats_of(frame)]
    notes = list(dict.fromkeys(n for point in points for n in point["notes"]))
    return points, notes


def mean_over_repeats(values: Sequence[float | None]) -> tuple[float, float, float]:
    """(mean, min, max) of one metric's per-repeat values; NaN when undefined in some repeat."""
    if not values or any(v is None or not np.isfinite(v) for v in values):
        return math.nan, math.nan, math.nan
    array = np.asarray(values, dtype=float)
    low, high = float(array.min()), float(array.max())
    # The mean, kept within the range it cannot leave (rounding: 3 x 0.2 / 3 > 0.2).
    return float(np.clip(array.mean(), low, high)) if len(array) > 1 else float(array[0]), low, high


def resampled_mean(frame: pd.DataFrame, classes: Sequence[str], ordinal: bool, resamples: Resamples) -> dict:
    """Every metric under each resample, averaged over the repeats of ``frame``: each resample's
    patient draw scores every repeat; (B,) arrays, NaN where some repeat is undefined."""
    total: dict[str, np.ndarray] = {}
    parts = repeats_of(frame)
    for part in parts:
        boot = resampled_scores(part, classes, ordinal, resamples)
        for key, values in boot.items():
            total[key] = values if key not in total else total[key] + values
    if len(parts) == 1:
        return total
    return {key: values / len(parts) for key, values in total.items()}


def pooled_summary(
    frame: pd.DataFrame,
    classes: Sequence[str],
    ordinal: bool,
    resamples: Resamples,
    metrics: Sequence[str],
    level: float = 0.95,
) -> dict:
    """Pooled value and bootstrap interval of each metric: ``<m>_pooled`` (the mean over repeats
    of the per-repeat pooled value), ``<m>_ci_low``, ``<m>_ci_high``, ``<m>_resamples``
    (resamples where it is defined), ``<m>_pooled_min`` and ``<m>_pooled_max`` (the range over
    repeats), plus ``n`` (predictions per repeat), ``patients``, ``repeats`` and the notes."""
    points, notes = repeat_values(frame, classes, ordinal)
    boot = resampled_mean(frame, classes, ordinal, resamples)
    row: dict = {
        "n": int(max(len(part) for part in repeats_of(frame))),
        "patients": int(frame["patient_id"].nunique()),
        "pooled_notes": notes,
    }
    for m in metrics:
        value, low_r, high_r = mean_over_repeats([point[m] for point in points])
        low, high, kept = percentile_interval(boot[m], level) if np.isfinite(value) else (math.nan, math.nan, 0)
        row[f"{m}_pooled"] = value
        row[f"{m}_ci_low"], row[f"{m}_ci_high"], row[f"{m}_resamples"] = low, high, kept
    row["repeats"] = len(points)
    for m in metrics:
        row[f"{m}_pooled_min"], row[f"{m}_pooled_max"] = mean_over_repeats([point[m] for point in points])[1:]
    return row


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (NaN entries are not part of it):
    the i-th smallest of m is multiplied by m - i + 1, then made monotone and capped at 1."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(len(p), math.nan)
    finite = np.flatnonzero(np.isfinite(p))
    m = len(finite)
    running = 0.0
    for rank, i in enumerate(finite[np.argsort(p[finite], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


COMPARISON_COLUMNS = [
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
    "p_holm",
    "comparisons",
    "repeats",
    "difference_min",
    "difference_max",
]


def _common(frame: pd.DataFrame, reference: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows of two pooled frames on the (repeat, id) pairs both predicted, in the same order."""
    keys = ["repeat", "id"] if "repeat" in frame and "repeat" in reference else ["id"]
    a, r = frame.set_index(keys), reference.set_index(keys)
    common = a.index.intersection(r.index).sort_values()
    return a.loc[common].reset_index(), r.loc[common].reset_index()


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

    One row per model and metric: ``difference`` (the mean over repeats of the per-repeat
    pooled difference; ``difference_min`` / ``difference_max`` its range), ``ci_low``,
    ``ci_high``, ``p_value``, ``p_holm`` (Holm-adjusted within the metric over the
    ``comparisons`` models with a p-value), ``n`` (ids compared per repeat) and ``resamples``
    (resamples where both are defined). A metric that is undefined for either model (AUC of a
    one-hot predictor) has NaN everywhere.
    """
    if reference not in frames:
        raise ValueError(f"reference model {reference!r} has no predictions; models: {sorted(frames)}")
    rows = []
    for model, frame in frames.items():
        if model == reference:
            continue
        a, r = _common(frame, frames[reference])
        if a.empty:
            raise ValueError(f"models {model!r} and {reference!r} have no predicted id in common")
        points_a, _ = repeat_values(a, classes, ordinal)
        points_r, _ = repeat_values(r, classes, ordinal)
        boot_a = resampled_mean(a, classes, ordinal, resamples)
        boot_r = resampled_mean(r, classes, ordinal, resamples)
        for m in metrics:
            if m == "kappa_quadratic" and not ordinal:
                continue
            value_a = mean_over_repeats([p[m] for p in points_a])[0]
            value_r = mean_over_repeats([p[m] for p in points_r])[0]
            defined = np.isfinite(value_a) and np.isfinite(value_r)
            per_repeat = [pa[m] - pr[m] for pa, pr in zip(points_a, points_r)] if defined else []
            difference, diff_min, diff_max = mean_over_repeats(per_repeat)
            diff = boot_a[m] - boot_r[m]
            low, high, kept = percentile_interval(diff, level) if defined else (math.nan, math.nan, 0)
            rows.append(
                {
                    "model": model,
                    "reference": reference,
                    "metric": m,
                    "n": int(max(len(part) for part in repeats_of(a))),
                    "model_value": value_a,
                    "reference_value": value_r,
                    "difference": difference,
                    "ci_low": low,
                    "ci_high": high,
                    "p_value": two_sided_p(diff) if defined else math.nan,
                    "resamples": kept,
                    "repeats": len(points_a),
                    "difference_min": diff_min,
                    "difference_max": diff_max,
                }
            )
    table = pd.DataFrame(rows, columns=[c for c in COMPARISON_COLUMNS if c not in ("p_holm", "comparisons")])
    table["p_holm"] = math.nan
    table["comparisons"] = 0
    for _, index in table.groupby("metric", sort=False).groups.items():
        p = table.loc[index, "p_value"].to_numpy(dtype=float)
        table.loc[index, "p_holm"] = holm(p)
        table.loc[index, "comparisons"] = int(np.isfinite(p).sum())
    return table[COMPARISON_COLUMNS]
