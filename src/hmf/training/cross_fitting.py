"""Cross-fitted slide embeddings for the patient models.

The outer slide model of a fold was trained on that fold's training slides, so its embeddings
of those slides are in-sample, while the test patients' slides are unseen: a train/test shift
for the patient model. Cross-fitting removes it: the fold's training and validation patients
are split into inner folds; an inner slide model trained without inner fold j embeds the
slides of inner fold j's patients. Test patients keep the outer model's embeddings.

An inner split file has the usual ``patient_id,split`` rows: inner fold j's patients and the
outer fold's test patients are ``test`` (never trained or validated on; only the former's
embeddings are used), the rest is ``train`` and a stratified ``val`` part for early stopping.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from hmf.atomic import write_csv
from hmf.data.sample_sheet import read_sample_sheet
from hmf.data.splits import _stratified_subset, patient_table, read_split
from hmf.training.slide_embeddings import read_slide_embeddings, write_slide_embeddings

log = logging.getLogger(__name__)


def inner_splits(
    sheet: pd.DataFrame, outer: dict[str, str], k: int, val_fraction: float, seed: int
) -> list[pd.DataFrame]:
    """``k`` inner split frames over the outer fold's non-test patients, stratified by label."""
    patients = patient_table(sheet)
    patients = patients[patients["patient_id"].map(outer).isin(["train", "val"])].reset_index(drop=True)
    if len(patients) < k:
        raise ValueError(
            f"cross-fitting: {len(patients)} training patients in the fold, fewer than models.inner_folds={k}"
        )
    ids, labels = patients["patient_id"].to_numpy(), patients["patient_label"].to_numpy()
    outer_test = sorted(p for p, s in outer.items() if s == "test")
    # Stratified dealing: each class's patients, shuffled, are dealt to the inner folds in turn
    # (continuing across classes), so fold sizes differ by at most one and every class is spread
    # over as many folds as it has patients, however small it is.
    rng = np.random.default_rng(seed)
    inner_of = np.empty(len(ids), dtype=int)
    position = 0
    for cls in sorted(set(labels)):
        for member in rng.permutation(np.flatnonzero(labels == cls)):
            inner_of[member] = position % k
            position += 1
    folds = []
    for j in range(int(k)):
        held, rest = np.flatnonzero(inner_of == j), np.flatnonzero(inner_of != j)
        split = np.full(len(ids), "train", dtype=object)
        split[held] = "test"
        split[_stratified_subset(rest, labels, val_fraction, np.random.default_rng([seed, 1000 + j]))] = "val"
        frame = pd.DataFrame({"patient_id": [*ids, *outer_test], "split": [*split, *["test"] * len(outer_test)]})
        folds.append(frame.sort_values("patient_id").reset_index(drop=True))
    return folds


def write_inner_splits(
    sheet_csv, split_csv, out_paths: Sequence[str | os.PathLike], val_fraction: float, seed: int
) -> None:
    sheet = read_sample_sheet(sheet_csv)
    for path, frame in zip(
        out_paths, inner_splits(sheet, read_split(split_csv), len(out_paths), val_fraction, seed), strict=True
    ):
        write_csv(path, frame)


def cross_fitted_embeddings(
    sheet_csv, outer_split_csv, outer_embeddings, inner_split_csvs: Sequence, inner_embeddings: Sequence, out_path
) -> dict:
    """The outer model's embeddings file with every training and validation slide's row
    replaced by the inner model that held its patient out. Same layout as ``embeddings.pt``
    plus ``source`` (per slide: ``outer`` or ``inner_<j>``)."""
    sheet = read_sample_sheet(sheet_csv)
    outer = read_split(outer_split_csv)
    patient_of = dict(zip(sheet["slide_id"], sheet["patient_id"]))
    saved = read_slide_embeddings(outer_embeddings)
    ids = saved.slide_ids
    embeddings, probs = saved.embeddings.clone(), saved.probs.clone()
    source = ["outer"] * len(ids)
    held_by: dict[str, int] = {}
    for j, split_csv in enumerate(inner_split_csvs):
        for patient, part in read_split(split_csv).items():
            if part == "test" and outer.get(patient) in ("train", "val"):
                if patient in held_by:
                    raise ValueError(
                        f"{split_csv}: patient {patient} is also held out by inner fold {held_by[patient]}"
                    )
                held_by[patient] = j
    for j, path in enumerate(inner_embeddings):
        inner = read_slide_embeddings(path)
        row_of = inner.row_of()
        for i, slide in enumerate(ids):
            if held_by.get(patient_of[slide]) == j:
                if slide not in row_of:
                    raise ValueError(f"{path}: no embedding of slide {slide}")
                embeddings[i], probs[i] = inner.embeddings[row_of[slide]], inner.probs[row_of[slide]]
                source[i] = f"inner_{j}"
    missing = sorted(
        s for s, src in zip(ids, source) if src == "outer" and outer.get(patient_of[s]) in ("train", "val")
    )
    if missing:
        raise ValueError(f"cross-fitting: training slide(s) {missing[:10]} held out by no inner fold")
    write_slide_embeddings(out_path, ids, embeddings, probs, saved.classes, model=saved.model, source=source)
    log.info(
        "%d slides: %d from inner models, %d from the outer model",
        len(ids),
        sum(s != "outer" for s in source),
        sum(s == "outer" for s in source),
    )
    return {"inner": sum(s != "outer" for s in source), "outer": sum(s == "outer" for s in source)}
