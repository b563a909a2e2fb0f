"""Cross-fitted slide embeddings for the patient models.

The outer slide model of a fold was trained on that fold's training slides, so its embeddings
of those slides are in-sample, while the test patients' slides are unseen: a train/test shift
for the patient model. Cross-fitting removes it: the fold's training and validation patients
are split into J inner folds; an inner slide model trained without inner fold j embeds the
slides of inner fold j's patients, out of sample.

Every slide model learns its own embedding space, so the test patients must be embedded by
the same inner models, not by the outer one: the cross-fitted file holds one block per inner
model. A training or validation slide has the same row in every block (the inner model that
held its patient out); a test slide has inner model j's embedding in block j. The patient
model trains on those rows and predicts each test patient from every block; its J
probabilities are averaged (hmf.training.patient).

An inner split file has the usual ``patient_id,split`` rows: inner fold j's patients and the
outer fold's test patients are ``test`` (never trained or validated on), the rest is
``train`` and a stratified ``val`` part for early stopping.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from hmf.atomic import write_csv
from hmf.data.sample_sheet import read_sample_sheet
from hmf.data.splits import _stratified_subset, patient_table, read_split
from hmf.training.slide_embeddings import SlideEmbeddings, read_slide_embeddings, write_slide_embeddings

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


def _one_block(path) -> SlideEmbeddings:
    """A slide model's embeddings file (one row per slide, no blocks)."""
    saved = read_slide_embeddings(path)
    if saved.embeddings.dim() != 2:
        shape = tuple(saved.embeddings.shape)
        raise ValueError(f"{path}: embeddings {shape}; expected one slide model's (slides, size)")
    return saved


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear centred kernel alignment of two embeddings of the same rows (n, p) and (n, q):
    1 when one is an orthogonal transform and scaling of the other, near 0 when unrelated;
    NaN with fewer than two rows or a constant embedding."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"linear CKA: {x.shape[0]} rows against {y.shape[0]}")
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    scale = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    if x.shape[0] < 2 or scale == 0:
        return float("nan")
    return float(np.linalg.norm(y.T @ x) ** 2 / scale)


def cross_fitted_embeddings(
    sheet_csv, outer_split_csv, outer_embeddings, inner_split_csvs: Sequence, inner_embeddings: Sequence, out_path
) -> dict:
    """Write the fold's cross-fitted embeddings file: one block per inner model (embeddings
    (J, S, E), probs (J, S, C)) over the outer file's slides. A training or validation slide's
    row is the same in every block, from the inner model that held its patient out (``source``
    ``inner_<j>``); every other slide has inner model j's row in block j (``each_inner``).

    The outer model's embeddings are only compared with the inner ones: the linear CKA of the
    two embeddings of the fold's test slides is logged per inner model (and returned)."""
    if len(inner_split_csvs) != len(inner_embeddings):
        raise ValueError(
            f"{len(inner_split_csvs)} inner split files but {len(inner_embeddings)} inner embeddings files"
        )
    sheet = read_sample_sheet(sheet_csv)
    outer = read_split(outer_split_csv)
    patient_of = dict(zip(sheet["slide_id"], sheet["patient_id"]))
    saved = _one_block(outer_embeddings)
    ids = saved.slide_ids
    unknown = [s for s in ids if s not in patient_of]
    if unknown:
        raise ValueError(f"{outer_embeddings}: slide(s) {unknown[:5]} not in the sample sheet {sheet_csv}")
    held_by: dict[str, int] = {}
    for j, split_csv in enumerate(inner_split_csvs):
        for patient, part in read_split(split_csv).items():
            if part == "test" and outer.get(patient) in ("train", "val"):
                if patient in held_by:
                    raise ValueError(
                        f"{split_csv}: patient {patient} is also held out by inner fold {held_by[patient]}"
                    )
                held_by[patient] = j
    trained = [outer.get(patient_of[s]) in ("train", "val") for s in ids]
    missing = sorted(s for s, t in zip(ids, trained) if t and patient_of[s] not in held_by)
    if missing:
        raise ValueError(f"cross-fitting: training slide(s) {missing[:10]} held out by no inner fold")
    blocks, block_probs = [], []
    for path in inner_embeddings:
        inner = _one_block(path)
        row_of = inner.row_of()
        absent = [s for s in ids if s not in row_of]
        if absent:
            raise ValueError(f"{path}: no embedding of slide(s) {absent[:5]} ({len(absent)} slides)")
        rows = [row_of[s] for s in ids]
        blocks.append(inner.embeddings.float()[rows])
        block_probs.append(inner.probs.float()[rows])
    embeddings, probs = torch.stack(blocks), torch.stack(block_probs)  # (J, S, E), (J, S, C)
    source = ["each_inner"] * len(ids)
    for i, slide in enumerate(ids):
        if trained[i]:
            j = held_by[patient_of[slide]]
            embeddings[:, i], probs[:, i] = embeddings[j, i].clone(), probs[j, i].clone()
            source[i] = f"inner_{j}"
    write_slide_embeddings(out_path, ids, embeddings, probs, saved.classes, model=saved.model, source=source)
    n_inner = sum(s != "each_inner" for s in source)
    log.info(
        "%d slides: %d training/validation slides from the inner model that held their patient out, "
        "%d others embedded by each of the %d inner models",
        len(ids),
        n_inner,
        len(ids) - n_inner,
        len(blocks),
    )
    test = [i for i, s in enumerate(ids) if outer.get(patient_of[s]) == "test"]
    outer_test = saved.embeddings.float()[test].numpy()
    cka = []
    for j, block in enumerate(blocks):
        cka.append(linear_cka(outer_test, block[test].numpy()))
        log.info(
            "inner model %d: linear CKA with the outer model on the fold's %d test slides: %.3f",
            j,
            len(test),
            cka[-1],
        )
    return {"inner": n_inner, "each_inner": len(ids) - n_inner, "cka": cka}
