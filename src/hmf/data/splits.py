"""Patient-level K-fold splits: make them, write them, or load and check user-supplied ones.

A split file ``fold_<k>.csv`` has one row per patient with columns ``patient_id`` and
``split`` (``train``, ``val`` or ``test``). Across the K files the test parts partition the
patients, so every patient is tested exactly once. Splitting is done on patients, never on
slides, so the slides of one patient always share a part.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from hmf.atomic import write_csv
from hmf.settings import section

log = logging.getLogger(__name__)

SPLIT_VALUES = ("train", "val", "test")
_FOLD_FILE = re.compile(r"^fold_(\d+)\.csv$")
# What a caller of make_splits leaves out is the schema's default (splits.k, val_fraction, seed).
_SPLIT_DEFAULTS = section("splits")


@dataclass(frozen=True)
class SplitSettings:
    """The ``splits:`` section of the config (defaults and ranges: config/schema/splits.schema.yaml)."""

    k: int
    val_fraction: float
    seed: int
    files: tuple[str, ...] | str | None  # the user's split files (a folder or a list), or None to make them


def patient_table(frame: pd.DataFrame, source: str = "patient table") -> pd.DataFrame:
    """One row per patient (``patient_id``, ``patient_label``), sorted by patient id.

    ``frame`` may hold one row per slide (a sample sheet); a patient whose rows disagree on
    the label is an error.
    """
    missing = [c for c in ("patient_id", "patient_label") if c not in frame.columns]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing}; expected patient_id and patient_label")
    table = frame[["patient_id", "patient_label"]].copy()
    if table["patient_id"].isna().any():
        raise ValueError(f"{source}: empty patient_id in {int(table['patient_id'].isna().sum())} row(s)")
    unlabelled = sorted(table.loc[table["patient_label"].isna(), "patient_id"].astype(str).unique())
    if unlabelled:
        raise ValueError(f"{source}: patient(s) without patient_label: {_preview(unlabelled)}")
    table["patient_id"] = table["patient_id"].astype(str)
    table["patient_label"] = table["patient_label"].astype(str)
    table = table.drop_duplicates()
    conflicting = sorted(table.loc[table["patient_id"].duplicated(), "patient_id"].unique())
    if conflicting:
        raise ValueError(f"{source}: patient(s) with more than one patient_label: {_preview(conflicting)}")
    if table.empty:
        raise ValueError(f"{source}: no patients")
    return table.sort_values("patient_id").reset_index(drop=True)


def make_splits(
    patients: pd.DataFrame,
    k: int = _SPLIT_DEFAULTS["k"],
    val_fraction: float = _SPLIT_DEFAULTS["val_fraction"],
    seed: int = _SPLIT_DEFAULTS["seed"],
) -> list[pd.DataFrame]:
    """Stratified K-fold over patients, with a stratified validation part carved from each
    fold's training part.

    Returns K frames with columns ``patient_id`` and ``split``, one row per patient, sorted by
    patient id. The result depends only on the set of patients, their labels, ``k``,
    ``val_fraction`` and ``seed`` (not on row order).
    """
    if not isinstance(k, (int, np.integer)) or k < 2:
        raise ValueError(f"splits.k must be an integer >= 2, got {k!r}")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"splits.val_fraction must be in [0, 1), got {val_fraction!r}")
    table = patient_table(patients)
    counts = table["patient_label"].value_counts()
    too_small = {str(label): int(n) for label, n in counts.items() if n < k}
    if too_small:
        detail = ", ".join(f"class {label!r} has {n} patient(s)" for label, n in sorted(too_small.items()))
        raise ValueError(
            f"cannot make {k} stratified folds: {detail}, fewer than k={k}, so some test folds would "
            f"lack the class. Lower splits.k (to at most {min(too_small.values())}) or supply split "
            f"files with splits.files."
        )

    ids = table["patient_id"].to_numpy()
    labels = table["patient_label"].to_numpy()
    skf = StratifiedKFold(n_splits=int(k), shuffle=True, random_state=seed)
    folds = []
    for fold, (rest_idx, test_idx) in enumerate(skf.split(ids, labels)):
        rng = np.random.default_rng([seed, fold])
        val_idx = _stratified_subset(rest_idx, labels, val_fraction, rng)
        split = np.full(len(ids), "train", dtype=object)
        split[test_idx] = "test"
        split[val_idx] = "val"
        folds.append(pd.DataFrame({"patient_id": ids, "split": split}))
    return folds


def _stratified_subset(candidates: np.ndarray, labels: np.ndarray, fraction: float, rng) -> np.ndarray:
    """Pick about ``fraction`` of ``candidates`` with class proportions kept.

    Counts per class follow the largest-remainder rule; no class gives up its last patient
    (training must see every class it can), so tiny classes may have none in the subset.
    Works for any class sizes, where a library stratified split would refuse tiny classes.
    """
    n_total = len(candidates)
    n_pick = int(round(fraction * n_total))
    if fraction > 0:
        n_pick = max(1, n_pick)
    n_pick = min(n_pick, n_total - 1)
    if n_pick <= 0:
        return np.array([], dtype=int)
    classes, sizes = np.unique(labels[candidates], return_counts=True)
    capacity = sizes - 1  # leave one patient of every class for training
    quota = n_pick * sizes / n_total
    take = np.minimum(np.floor(quota).astype(int), capacity)
    # Hand out what is left by largest remainder; ties broken by class order (deterministic).
    while take.sum() < n_pick:
        room = take < capacity
        if not room.any():  # every class is down to its last patient: take from the largest
            room = take < sizes
        remainder = np.where(room, quota - take, -np.inf)
        take[int(np.argmax(remainder))] += 1
    picked = []
    for cls, n in zip(classes, take):
        members = np.sort(candidates[labels[candidates] == cls])
        picked.extend(rng.permutation(members)[:n])
    return np.array(sorted(picked), dtype=int)


def write_splits(folds: list[pd.DataFrame], out_dir: str | os.PathLike) -> list[Path]:
    """Write ``fold_<k>.csv`` (k = 0..K-1) into ``out_dir``; returns the paths."""
    out = Path(out_dir)
    paths = []
    for k, fold in enumerate(folds):
        path = out / f"fold_{k}.csv"
        frame = fold[["patient_id", "split"]].sort_values("patient_id").reset_index(drop=True)
        write_csv(path, frame)
        paths.append(path)
    return paths


def _read_split_csv(path: str | os.PathLike) -> pd.DataFrame:
    """A split file's ``patient_id`` and ``split`` columns as strings, as written."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"split file {path}: not a readable CSV ({exc})") from exc
    missing_cols = [c for c in ("patient_id", "split") if c not in frame.columns]
    if missing_cols:
        raise ValueError(f"split file {path}: missing column(s) {missing_cols}; expected patient_id,split")
    return frame[["patient_id", "split"]].copy()


def _check_split_values(fold: pd.DataFrame, path) -> None:
    bad = sorted(set(fold["split"]) - set(SPLIT_VALUES))
    if bad:
        raise ValueError(f"split file {path}: unknown split value(s) {bad}; allowed {list(SPLIT_VALUES)}")


def read_split(path: str | os.PathLike) -> dict[str, str]:
    """patient_id -> split ('train', 'val' or 'test') from a fold's split file (written by
    :func:`write_splits`, or an inner split of cross-fitting)."""
    fold = _read_split_csv(path)
    _check_split_values(fold, path)
    return dict(zip(fold["patient_id"], fold["split"]))


def split_files(paths_or_dir: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """Resolve a folder of ``fold_<k>.csv`` files (ordered by k) or an explicit list of files."""
    if isinstance(paths_or_dir, (str, os.PathLike)):
        root = Path(paths_or_dir)
        if root.is_dir():
            found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _FOLD_FILE.match(p.name))]
            if not found:
                raise FileNotFoundError(f"no fold_<k>.csv split files in {root}")
            found.sort()
            numbers = [n for n, _ in found]
            if numbers != list(range(len(found))):
                raise ValueError(
                    f"split files in {root} must be numbered fold_0.csv .. fold_{len(found) - 1}.csv, found {numbers}"
                )
            return [p for _, p in found]
        paths = [root]
    else:
        paths = [Path(p) for p in paths_or_dir]
    if not paths:
        raise ValueError("no split files given")
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"split file not found: {p}")
    return paths


def load_splits(paths_or_dir, patients: pd.DataFrame) -> list[pd.DataFrame]:
    """Read split files and check them against the patients of the sample sheet.

    Every patient must appear exactly once per file, split values must be train/val/test,
    each fold needs training and test patients, and the test parts of all files together
    must partition the patients.
    """
    table = patient_table(patients)
    known = set(table["patient_id"])
    folds = []
    for path in split_files(paths_or_dir):
        fold = _read_split_csv(path)
        fold["patient_id"] = fold["patient_id"].str.strip()
        fold["split"] = fold["split"].str.strip().str.lower()
        _check_split_values(fold, path)
        dup = sorted(fold.loc[fold["patient_id"].duplicated(), "patient_id"].unique())
        if dup:
            raise ValueError(f"split file {path}: patient(s) listed more than once: {_preview(dup)}")
        unknown = sorted(set(fold["patient_id"]) - known)
        if unknown:
            raise ValueError(f"split file {path}: patient(s) not in the sample sheet: {_preview(unknown)}")
        absent = sorted(known - set(fold["patient_id"]))
        if absent:
            raise ValueError(f"split file {path}: patient(s) of the sample sheet missing: {_preview(absent)}")
        for part in ("train", "test"):
            if not (fold["split"] == part).any():
                raise ValueError(f"split file {path}: no patient in the {part!r} part")
        folds.append(fold.sort_values("patient_id").reset_index(drop=True))

    tested = pd.concat([f.loc[f["split"] == "test", "patient_id"] for f in folds])
    twice = sorted(tested[tested.duplicated()].unique())
    if twice:
        raise ValueError(f"split files: test folds overlap; patient(s) in more than one test part: {_preview(twice)}")
    never = sorted(known - set(tested))
    if never:
        raise ValueError(f"split files: test folds do not cover every patient; never tested: {_preview(never)}")
    return folds


def folds_for(
    patients: pd.DataFrame,
    k: int = _SPLIT_DEFAULTS["k"],
    val_fraction: float = _SPLIT_DEFAULTS["val_fraction"],
    seed: int = _SPLIT_DEFAULTS["seed"],
    files=None,
) -> list[pd.DataFrame]:
    """The folds the ``splits:`` settings give for ``patients``: the user's split files
    (``files``: a folder of ``fold_<k>.csv`` or a list; their number must equal ``k``), checked,
    or else seeded stratified folds."""
    if files:
        folds = load_splits(files, patients)
        if len(folds) != k:
            raise ValueError(
                f"splits.files holds {len(folds)} fold file(s) but splits.k is {k}; set splits.k to {len(folds)}"
            )
        log.info("using %d user-supplied split files", len(folds))
    else:
        folds = make_splits(patients, k=k, val_fraction=val_fraction, seed=seed)
        log.info("made %d stratified folds over %d patients (seed %d)", len(folds), len(patients), seed)
    return folds


def make_split_files(
    sample_sheet: str | os.PathLike,
    out_dir: str | os.PathLike,
    k: int = _SPLIT_DEFAULTS["k"],
    val_fraction: float = _SPLIT_DEFAULTS["val_fraction"],
    seed: int = _SPLIT_DEFAULTS["seed"],
    files=None,
) -> list[Path]:
    """Workflow entry point: the folds of :func:`folds_for` for the patients of
    ``sample_sheet``, written to ``out_dir``."""
    sheet = pd.read_csv(sample_sheet, dtype={"patient_id": str, "patient_label": str}, keep_default_na=False)
    patients = patient_table(sheet, source=str(sample_sheet))
    folds = folds_for(patients, k=k, val_fraction=val_fraction, seed=seed, files=files)
    for i, fold in enumerate(folds):
        n = fold["split"].value_counts()
        log.info("fold %d: %d train, %d val, %d test", i, n.get("train", 0), n.get("val", 0), n.get("test", 0))
    return write_splits(folds, out_dir)


def _preview(items: list[str], limit: int = 10) -> str:
    shown = ", ".join(items[:limit])
    return f"{shown} (+{len(items) - limit} more)" if len(items) > limit else shown
