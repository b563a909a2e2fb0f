"""Patient-level K-fold splits: make them, write them, or load and check user-supplied ones.

A split file ``fold_<f>.csv`` has one row per patient with columns ``patient_id`` and
``split`` (``train``, ``val`` or ``test``). Splitting is done on patients, never on slides, so
the slides of one patient always share a part.

Repeated cross-validation (``splits.repeats`` = R): fold ids run 0..R*K-1; fold f is fold
``f % K`` of repeat ``f // K``, and repeat r is the K folds made with seed ``splits.seed + r``
(repeat 0 is the single cross-validation of the same seed). Within a repeat the K test parts
partition the patients, so every patient is tested exactly once per repeat.

Grouped folds (``splits.group_by``): no group (CAMELYON17 centre, TCGA tissue source site or a
sample-sheet column, see :func:`patient_groups`) has patients in both a fold's test part and
its training or validation part; ``splits.leave_one_group_out`` makes one fold per group.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hmf.atomic import write_csv
from hmf.settings import build, section

log = logging.getLogger(__name__)

SPLIT_VALUES = ("train", "val", "test")
_FOLD_FILE = re.compile(r"^fold_(\d+)\.csv$")
# What a caller of make_splits leaves out is the schema's default (splits.k, val_fraction, seed, ...).
_SPLIT_DEFAULTS = section("splits")
# Groups the splits derive from the normalised sample sheet; any other splits.group_by names a column.
CENTRE, SITE = "centre", "site"
CENTRE_FOLDER = re.compile(r"^centre_(\d+)$")  # CAMELYON17's download: centre_<i>/patient_XXX_node_Y.tif
CAMELYON_PATIENT = re.compile(r"^patient_(\d+)$")
PATIENTS_PER_CENTRE = 20  # CAMELYON17: patients 0-19 come from centre 0, 20-39 from centre 1, ...
TCGA_SITE = re.compile(r"^TCGA-([A-Za-z0-9]{2})-")  # the barcode's second field: tissue source site
# Columns of the normalised sample sheet (hmf.data.sample_sheet.COLUMNS): group_by naming one of
# these needs no extra column.
_SHEET_COLUMNS = ("slide_id", "patient_id", "path", "slide_label", "patient_label", "node", "mpp")


@dataclass(frozen=True)
class SplitSettings:
    """The ``splits:`` section of the config (defaults and ranges: config/schema/splits.schema.yaml)."""

    k: int
    val_fraction: float
    seed: int
    files: tuple[str, ...] | str | None  # the user's split files (a folder or a list), or None to make them
    repeats: int  # cross-validations, repeat r with seed + r
    group_by: str | None  # None, "centre", "site" or a sample-sheet column
    leave_one_group_out: bool  # one fold per group (K = number of groups)


def split_settings(given: dict | None = None) -> SplitSettings:
    """The ``splits:`` config section, filled and checked by its schema."""
    return build(SplitSettings, section("splits", given), where="splits")


GROUP_NOUNS = {CENTRE: "centre", SITE: "tissue source site"}


@dataclass(frozen=True)
class FoldDesign:
    """How the folds of a run were made, for the tables' footnotes: ``folds_per_repeat`` (K)
    folds, ``repeats`` (R) times; grouped by ``group_by`` (one fold per group with
    ``leave_one_group_out``); ``user_files``: the user's split files."""

    folds_per_repeat: int
    repeats: int = 1
    seed: int = 0
    group_by: str | None = None
    leave_one_group_out: bool = False
    user_files: bool = False

    @classmethod
    def of(cls, settings: SplitSettings, n_folds: int) -> FoldDesign:
        """The design of ``n_folds`` folds made under ``settings``."""
        return cls(
            folds_per_repeat=n_folds // settings.repeats,
            repeats=settings.repeats,
            seed=settings.seed,
            group_by=settings.group_by,
            leave_one_group_out=settings.leave_one_group_out,
            user_files=bool(settings.files),
        )

    def sentence(self) -> str:
        """One sentence naming the folds, their repeats and grouping."""
        k = self.folds_per_repeat
        one = GROUP_NOUNS.get(self.group_by, f"{self.group_by} group")
        if self.user_files:
            text = f"Folds: the user's {k} split files"
        elif self.leave_one_group_out:
            text = f"Folds: leave one {one} out ({k} folds, each testing the patients of one {one})"
        else:
            text = f"Folds: {k}-fold cross-validation over patients, stratified by class"
            if self.repeats > 1:
                text += f", repeated {self.repeats} times (seeds {self.seed}-{self.seed + self.repeats - 1})"
        if self.group_by and not self.leave_one_group_out:
            text += f", grouped by {one}: no {one} has patients in both the training and the test part of a fold"
        elif self.group_by:
            text += f"; no {one} has patients in both the training and the test part of a fold"
        return text + "."


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
    repeats: int = _SPLIT_DEFAULTS["repeats"],
    groups: pd.Series | None = None,
    leave_one_group_out: bool = _SPLIT_DEFAULTS["leave_one_group_out"],
) -> list[pd.DataFrame]:
    """Stratified K-fold over patients, with a stratified validation part carved from each
    fold's training part; ``repeats`` times, repeat r with seed ``seed + r``.

    ``groups`` (patient id -> group, see :func:`patient_groups`) keeps every group on one side
    of each fold's test / training split (stratified group K-fold, shuffled with the seed);
    ``leave_one_group_out`` makes one fold per group instead (K = number of groups, one repeat).
    The validation part is carved from the training part and may share its groups.

    Returns R*K frames (fold f is fold f % K of repeat f // K) with columns ``patient_id`` and
    ``split``, one row per patient, sorted by patient id. The result depends only on the set
    of patients, their labels (and groups) and the settings (not on row order). Settings the
    cohort cannot meet raise ValueError with the class (and group) counts.
    """
    if not isinstance(k, (int, np.integer)) or k < 2:
        raise ValueError(f"splits.k must be an integer >= 2, got {k!r}")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"splits.val_fraction must be in [0, 1), got {val_fraction!r}")
    if not isinstance(repeats, (int, np.integer)) or repeats < 1:
        raise ValueError(f"splits.repeats must be an integer >= 1, got {repeats!r}")
    table = patient_table(patients)
    ids = table["patient_id"].to_numpy()
    labels = table["patient_label"].to_numpy()
    group_of = None if groups is None else _groups_of(table, groups)
    if leave_one_group_out:
        if group_of is None:
            raise ValueError("splits.leave_one_group_out needs splits.group_by (centre, site or a sample-sheet column)")
        if repeats != 1:
            raise ValueError(
                f"splits.leave_one_group_out makes one fold per group, the same for every seed: "
                f"splits.repeats must be 1, got {repeats}"
            )
        tests = _leave_one_group_out(labels, group_of)
        return _check_training_classes(
            [_fold_frame(ids, labels, t, val_fraction, seed, i) for i, t in enumerate(tests)], labels, group_of
        )
    _check_class_counts(labels, k, group_of)
    # Imported here, not with the module: the workflow imports this module when it is read, and
    # scikit-learn takes about a second to import.
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    folds = []
    for r in range(int(repeats)):
        if group_of is None:
            parts = StratifiedKFold(n_splits=int(k), shuffle=True, random_state=seed + r).split(ids, labels)
        else:
            sgkf = StratifiedGroupKFold(n_splits=int(k), shuffle=True, random_state=seed + r)
            parts = sgkf.split(ids, labels, groups=group_of)
        for i, (_, test_idx) in enumerate(parts):
            folds.append(_fold_frame(ids, labels, test_idx, val_fraction, seed + r, i))
    if group_of is not None:
        _check_training_classes(folds, labels, group_of)
    return folds


def _fold_frame(ids, labels, test_idx, val_fraction: float, seed: int, fold: int) -> pd.DataFrame:
    """One fold: ``test_idx`` tested, a stratified validation part drawn from the rest with the
    generator ``[seed, fold]`` (fold: the fold's number within its repeat)."""
    rest_idx = np.setdiff1d(np.arange(len(ids)), test_idx)
    val_idx = _stratified_subset(rest_idx, labels, val_fraction, np.random.default_rng([seed, fold]))
    split = np.full(len(ids), "train", dtype=object)
    split[test_idx] = "test"
    split[val_idx] = "val"
    return pd.DataFrame({"patient_id": ids, "split": split})


def _check_class_counts(labels: np.ndarray, k: int, group_of: np.ndarray | None) -> None:
    counts = pd.Series(labels).value_counts()
    too_small = {str(label): int(n) for label, n in counts.items() if n < k}
    if too_small:
        detail = ", ".join(f"class {label!r} has {n} patient(s)" for label, n in sorted(too_small.items()))
        raise ValueError(
            f"cannot make {k} stratified folds: {detail}, fewer than k={k}, so some test folds would "
            f"lack the class. Lower splits.k (to at most {min(too_small.values())}) or supply split "
            f"files with splits.files."
        )
    if group_of is not None:
        n_groups = len(set(group_of))
        if n_groups < k:
            raise ValueError(
                f"cannot make {k} grouped folds from {n_groups} group(s): every group must lie on one side of "
                f"each fold, so k can be at most the number of groups. Lower splits.k to at most {n_groups} or "
                f"set splits.leave_one_group_out. Patients per group and class: {group_counts(labels, group_of)}"
            )


def _leave_one_group_out(labels: np.ndarray, group_of: np.ndarray) -> list[np.ndarray]:
    """The test part of each fold: the patients of one group, groups in sorted order."""
    names = sorted(set(group_of))
    if len(names) < 2:
        raise ValueError(
            f"splits.leave_one_group_out needs at least 2 groups, the cohort has {len(names)} "
            f"({group_counts(labels, group_of)})"
        )
    return [np.flatnonzero(group_of == name) for name in names]


def _check_training_classes(folds: list[pd.DataFrame], labels: np.ndarray, group_of: np.ndarray) -> list[pd.DataFrame]:
    """Grouped folds: each fold's training part has a patient of every class (a model cannot
    learn a class it never sees); a test part without some class is allowed (groups cannot be
    split) and logged."""
    classes = sorted(set(labels))
    for f, fold in enumerate(folds):
        split = fold["split"].to_numpy()
        trained = set(labels[split == "train"])
        lacking = [c for c in classes if c not in trained]
        if lacking:
            tested = sorted(set(group_of[split == "test"]))
            raise ValueError(
                f"grouped folds: fold {f} (test group(s) {', '.join(tested)}) has no training patient of "
                f"class(es) {lacking}: their patients are in the fold's test group(s) or its validation part. "
                f"Patients per group and class: {group_counts(labels, group_of)}. Use fewer, larger groups, "
                f"lower splits.k or splits.val_fraction, or drop splits.group_by."
            )
        absent = [c for c in classes if c not in set(labels[split == "test"])]
        if absent:
            log.warning("fold %d: no test patient of class(es) %s (groups are not split)", f, absent)
    return folds


def group_counts(labels: np.ndarray, group_of: np.ndarray) -> str:
    """``centre_0: pN0 5, pN1 3; centre_1: ...``: patients per group and class, for messages."""
    table = pd.crosstab(pd.Series(group_of, name="group"), pd.Series(labels, name="class"))
    return "; ".join(
        f"{group}: " + ", ".join(f"{cls} {int(n)}" for cls, n in row.items() if n) for group, row in table.iterrows()
    )


def _groups_of(table: pd.DataFrame, groups) -> np.ndarray:
    """The group of each patient of ``table`` (a patient table) as strings, in its row order."""
    groups = pd.Series(groups)
    groups.index = groups.index.astype(str)
    missing = sorted(set(table["patient_id"]) - set(groups.index))
    if missing:
        raise ValueError(f"splits.group_by: no group for patient(s) {_preview(missing)}")
    return groups.loc[table["patient_id"]].astype(str).to_numpy()


def group_column(group_by: str | None) -> str | None:
    """The extra sample-sheet column ``splits.group_by`` reads, if any (None for no grouping,
    ``centre``, ``site`` and the sheet's own columns)."""
    if group_by in (None, CENTRE, SITE) or group_by in _SHEET_COLUMNS:
        return None
    return group_by


def _slide_centre(path: str, patient_id: str) -> str | None:
    for part in reversed(Path(str(path)).parts[:-1]):
        if match := CENTRE_FOLDER.match(part):
            return f"centre_{int(match.group(1))}"
    if match := CAMELYON_PATIENT.match(patient_id):
        return f"centre_{int(match.group(1)) // PATIENTS_PER_CENTRE}"
    return None


def patient_groups(sheet: pd.DataFrame, group_by: str) -> pd.Series:
    """patient_id -> group (strings, sorted by patient id) from a sample sheet (one row per slide).

    ``centre``: CAMELYON17's centre, from a ``centre_<i>/`` folder in the slide's path, else the
    patient number (``patient_<n>``: centre n // 20); ``site``: the TCGA tissue source site, the
    second field of the barcode (``TCGA-<site>-...``); any other value: that sample-sheet column.
    A patient whose slides disagree, or without a group, is an error naming the patient.
    """
    if not group_by:
        raise ValueError("splits.group_by: empty")
    frame = sheet.astype({"patient_id": str})
    if group_by == CENTRE:
        values = []
        for slide, patient, path in zip(frame["slide_id"], frame["patient_id"], frame["path"]):
            centre = _slide_centre(path, patient)
            if centre is None:
                raise ValueError(
                    f"splits.group_by centre: slide {slide} of patient {patient}: no centre_<i>/ folder in its path "
                    f"({path}) and the patient id is not CAMELYON17's patient_<n>"
                )
            values.append(centre)
    elif group_by == SITE:
        values = []
        for patient in frame["patient_id"]:
            match = TCGA_SITE.match(patient)
            if not match:
                raise ValueError(
                    f"splits.group_by site: patient {patient} is not a TCGA barcode (TCGA-<site>-<participant>)"
                )
            values.append(match.group(1))
    else:
        if group_by not in frame.columns:
            extra = [c for c in frame.columns if c not in _SHEET_COLUMNS and c != "line"]
            raise ValueError(
                f"splits.group_by: column {group_by!r} is not in the sample sheet (its extra columns: "
                f"{extra or 'none'}); use centre, site or a column of a generic sample sheet"
            )
        values = ["" if pd.isna(v) else str(v).strip() for v in frame[group_by]]
    groups = pd.DataFrame({"patient_id": frame["patient_id"].to_numpy(), "group": values})
    empty = sorted(groups.loc[groups["group"] == "", "patient_id"].unique())
    if empty:
        raise ValueError(f"splits.group_by {group_by}: patient(s) with an empty {group_by}: {_preview(empty)}")
    per_patient = groups.drop_duplicates().groupby("patient_id")["group"].agg(sorted)
    mixed = per_patient[per_patient.map(len) > 1]
    if not mixed.empty:
        raise ValueError(
            f"splits.group_by {group_by}: patient {mixed.index[0]} has slides in more than one group "
            f"{mixed.iloc[0]}; a patient belongs to one group"
        )
    return per_patient.map(lambda g: g[0]).sort_index().rename("group")


def check_grouped(folds: list[pd.DataFrame], groups: pd.Series) -> None:
    """No group has patients in both the test part and the training or validation part of a
    fold (ValueError naming the fold and the group)."""
    for f, fold in enumerate(folds):
        group = fold["patient_id"].astype(str).map(groups)
        tested = set(group[fold["split"] == "test"])
        shared = sorted(tested & set(group[fold["split"] != "test"]))
        if shared:
            raise ValueError(f"fold {f}: group(s) {shared} have patients both in the test part and in training")


def check_inner_folds(folds: list[pd.DataFrame], inner_folds: int) -> None:
    """Cross-fitting splits each fold's training and validation patients into
    ``models.inner_folds`` inner folds: every fold needs at least that many."""
    sizes = [int((fold["split"] != "test").sum()) for fold in folds]
    smallest = int(np.argmin(sizes))
    if sizes[smallest] < inner_folds:
        raise ValueError(
            f"models.inner_folds={inner_folds} but fold {smallest} has {sizes[smallest]} training and validation "
            f"patient(s) to split into inner folds (cross-fitted patient inputs); lower models.inner_folds to at "
            f"most {sizes[smallest]} or use models.patient_inputs: in_sample"
        )


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
    repeats: int = _SPLIT_DEFAULTS["repeats"],
    groups: pd.Series | None = None,
    leave_one_group_out: bool = _SPLIT_DEFAULTS["leave_one_group_out"],
) -> list[pd.DataFrame]:
    """The folds the ``splits:`` settings give for ``patients``: the user's split files
    (``files``: a folder of ``fold_<k>.csv`` or a list; their number must equal ``k``; one
    repeat), checked (against ``groups`` too, when given), or else seeded stratified folds
    (see :func:`make_splits`)."""
    if files:
        if repeats != 1:
            raise ValueError(
                f"splits.files with splits.repeats={repeats}: user split files are one cross-validation; "
                f"set splits.repeats to 1 (or drop splits.files to make {repeats} seeded repeats)"
            )
        if leave_one_group_out:
            raise ValueError("splits.files with splits.leave_one_group_out: drop one (both define the folds)")
        folds = load_splits(files, patients)
        if len(folds) != k:
            raise ValueError(
                f"splits.files holds {len(folds)} fold file(s) but splits.k is {k}; set splits.k to {len(folds)}"
            )
        if groups is not None:
            try:
                check_grouped(folds, groups)
            except ValueError as err:
                raise ValueError(f"splits.files with splits.group_by: {err}") from None
        log.info("using %d user-supplied split files", len(folds))
    else:
        folds = make_splits(
            patients,
            k=k,
            val_fraction=val_fraction,
            seed=seed,
            repeats=repeats,
            groups=groups,
            leave_one_group_out=leave_one_group_out,
        )
        log.info(
            "made %d %sfolds over %d patients (seed %d, %d repeat(s))",
            len(folds),
            "grouped " if groups is not None else "stratified ",
            patient_table(patients)["patient_id"].nunique(),
            seed,
            repeats,
        )
    return folds


def sheet_folds(sheet: pd.DataFrame, settings: SplitSettings, source: str = "sample sheet") -> list[pd.DataFrame]:
    """The folds of :func:`folds_for` for a sample sheet (one row per slide) under the
    ``splits:`` settings, its groups taken from the sheet (:func:`patient_groups`)."""
    patients = patient_table(sheet, source=source)
    groups = patient_groups(sheet, settings.group_by) if settings.group_by else None
    return folds_for(
        patients,
        k=settings.k,
        val_fraction=settings.val_fraction,
        seed=settings.seed,
        files=settings.files,
        repeats=settings.repeats,
        groups=groups,
        leave_one_group_out=settings.leave_one_group_out,
    )


def sheet_fold(sheet: pd.DataFrame, settings: SplitSettings, fold: int, source: str = "sample sheet") -> pd.DataFrame:
    """Fold ``fold`` of :func:`sheet_folds`, made from its repeat alone (repeat ``fold // K``
    with seed ``settings.seed + fold // K``), so that it does not depend on ``settings.repeats``."""
    if settings.files or settings.leave_one_group_out:
        folds = sheet_folds(sheet, dataclasses.replace(settings, repeats=1), source)
        position = fold
    else:
        repeat, position = divmod(int(fold), settings.k)
        folds = sheet_folds(sheet, dataclasses.replace(settings, seed=settings.seed + repeat, repeats=1), source)
    if not 0 <= position < len(folds):
        raise ValueError(f"fold {fold} does not exist: the settings give {len(folds)} fold(s) per repeat")
    return folds[position]


def make_fold_file(
    sample_sheet: str | os.PathLike, out_path: str | os.PathLike, fold: int, settings: SplitSettings
) -> Path:
    """Workflow entry point: fold ``fold``'s split file (see :func:`sheet_fold`) for the patients
    of ``sample_sheet``."""
    frame = sheet_fold(read_sheet(sample_sheet), settings, fold, source=str(sample_sheet))
    n = frame["split"].value_counts()
    log.info("fold %d: %d train, %d val, %d test", fold, n.get("train", 0), n.get("val", 0), n.get("test", 0))
    write_csv(out_path, frame[["patient_id", "split"]].sort_values("patient_id").reset_index(drop=True))
    return Path(out_path)


def read_sheet(sample_sheet: str | os.PathLike) -> pd.DataFrame:
    """The workflow's sample sheet with every column as written (strings)."""
    return pd.read_csv(sample_sheet, dtype=str, keep_default_na=False)


def make_split_files(
    sample_sheet: str | os.PathLike,
    out_dir: str | os.PathLike,
    k: int = _SPLIT_DEFAULTS["k"],
    val_fraction: float = _SPLIT_DEFAULTS["val_fraction"],
    seed: int = _SPLIT_DEFAULTS["seed"],
    files=None,
    repeats: int = _SPLIT_DEFAULTS["repeats"],
    group_by: str | None = _SPLIT_DEFAULTS["group_by"],
    leave_one_group_out: bool = _SPLIT_DEFAULTS["leave_one_group_out"],
) -> list[Path]:
    """Workflow entry point: the folds of :func:`sheet_folds` for the patients of
    ``sample_sheet``, written to ``out_dir`` (``fold_0.csv`` .. ``fold_<R*K-1>.csv``)."""
    settings = SplitSettings(k, val_fraction, seed, files, repeats, group_by, leave_one_group_out)
    folds = sheet_folds(read_sheet(sample_sheet), settings, source=str(sample_sheet))
    for i, fold in enumerate(folds):
        n = fold["split"].value_counts()
        log.info("fold %d: %d train, %d val, %d test", i, n.get("train", 0), n.get("val", 0), n.get("test", 0))
    return write_splits(folds, out_dir)


def _preview(items: list[str], limit: int = 10) -> str:
    shown = ", ".join(items[:limit])
    return f"{shown} (+{len(items) - limit} more)" if len(items) > limit else shown
