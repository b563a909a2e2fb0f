"""Predictions for new, unlabelled patients with the K fold models of a trained workflow.

Every fold's model predicts every new slide (or patient); the prediction is the mean of the K
fold models' probabilities, with their standard deviation kept beside it and the per-fold
probabilities in a second file. Patient models of fold k read the slide embeddings of the
source slide model of the same fold k (the pairing they were trained with). For CAMELYON17 a
submission file in the challenge's format is written from the patient and slide predictions.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hmf.atomic import write_csv
from hmf.data.sample_sheet import SAFE_NAME, SampleSheetError, load_generic, read_sample_sheet, write_sample_sheet
from hmf.evaluation.predictions import read_predicted_labels, write_ensemble_predictions, write_fold_predictions
from hmf.models.names import model_info
from hmf.tasks import CAMELYON17_PATIENT, Task, pn_stage
from hmf.training.slide_embeddings import read_slide_embeddings, write_slide_embeddings

log = logging.getLogger(__name__)

CAMELYON_PATIENT_ID = re.compile(r"^patient_\d+$")


# -- the sheet of new slides --------------------------------------------------------------------


def load_predict_sheet(
    csv_path: str | os.PathLike, known_slide_ids: Sequence[str] = (), check_files: bool = True
) -> pd.DataFrame:
    """The unlabelled sample sheet: ``slide_id, patient_id, path`` and optionally ``node, mpp``
    (label columns, if present, are ignored: nothing here is scored). Slide ids must be safe
    file names and unique, also against the training sheet's ``known_slide_ids`` (the two share
    the per-slide preprocessing outputs)."""
    frame = load_generic(csv_path)
    source = str(csv_path)
    if frame.empty:
        raise SampleSheetError(f"{source}: no slides")
    known = set(known_slide_ids)
    for _, row in frame.iterrows():
        where = f"{source} line {int(row['line'])}" if "line" in frame else source
        for column in ("slide_id", "patient_id"):
            value = row[column]
            if not value or not SAFE_NAME.match(value) or ".." in value:
                raise SampleSheetError(
                    f"{where}: {column} {value!r} is not a safe file name "
                    f"(letters, digits, '._+()-'; no '/', '\\' or '..')"
                )
        if row["slide_id"] in known:
            raise SampleSheetError(
                f"{where}: slide id {row['slide_id']!r} is also in the training sample sheet; "
                f"slide ids must be unique across both sheets"
            )
        if check_files and not Path(row["path"]).is_file():
            raise SampleSheetError(f"{where}: slide {row['slide_id']}: file not found: {row['path']}")
    duplicated = frame.loc[frame["slide_id"].duplicated(), "slide_id"]
    if not duplicated.empty:
        raise SampleSheetError(f"{source}: duplicate slide id {duplicated.iloc[0]!r}")
    frame["slide_label"] = ""
    frame["patient_label"] = ""
    return frame.drop(columns=[c for c in ("line",) if c in frame]).sort_values("slide_id").reset_index(drop=True)


# -- slide models --------------------------------------------------------------------------------


def predict_slides(
    task: Task,
    sheet_csv,
    feature_files: Mapping[str, str | os.PathLike],
    checkpoints: Sequence[str | os.PathLike],
    out_predictions,
    out_folds,
    out_embeddings,
    text_bank: str | None = None,
    device: str = "cpu",
) -> pd.DataFrame:
    """Slide predictions of the K fold checkpoints of one slide model for the new slides.

    ``feature_files``: slide id -> its ``.h5``/``.pt`` feature file (the job's inputs), for
    every slide of the sheet. Writes the ensemble (``out_predictions``: id, patient_id,
    pred_label, prob_*, std_*, folds), the per-fold probabilities (``out_folds``) and every
    fold's slide embeddings (``out_embeddings``: slide_ids, embeddings (K, S, E), probs (K, S, C))
    for the patient models. Slides without patches get no row (logged).
    """
    from hmf.features.io import FeatureFileError, read_features
    from hmf.training.checkpoints import load_slide_model
    from hmf.training.slide import load_text_inputs

    sheet = read_sample_sheet(sheet_csv)
    missing = [s for s in sheet["slide_id"] if s not in feature_files]
    if missing:
        raise FeatureFileError(f"slide {missing[0]}: no feature file among the job's inputs ({len(missing)} slides)")
    classes = list(task.classes("slide"))
    slides, fold_probs, fold_embeddings = [], [], []
    dev = torch.device(device)
    for k, checkpoint in enumerate(checkpoints):
        model, ckpt = load_slide_model(checkpoint, classes)
        model.to(dev)
        text = None
        if model.requires_text:
            if text_bank is None:
                raise ValueError(f"{checkpoint}: model {ckpt.model} needs the text bank")
            text = load_text_inputs(text_bank, tuple(classes))[0].to(dev)
        probs, embeddings, ids = [], [], []
        for row in sheet.itertuples():
            features, coords = read_features(feature_files[row.slide_id])
            if features.shape[0] == 0:
                if k == 0:
                    log.warning("slide %s: no patches (no tissue found): no prediction", row.slide_id)
                continue
            inputs = {"features": ckpt.standardise(features.float()).to(dev)}
            if model.needs_coords:
                inputs["coords"] = torch.as_tensor(coords, dtype=torch.long, device=dev)
            if text is not None:
                inputs["text"] = text
            with torch.inference_mode():
                out = model(**inputs)
            probs.append(torch.softmax(out["logits"].float(), -1).cpu().numpy())
            embeddings.append(out["embedding"].float().cpu().numpy())
            ids.append(row.slide_id)
        slides = ids
        fold_probs.append(np.stack(probs) if probs else np.zeros((0, len(classes))))
        fold_embeddings.append(np.stack(embeddings) if embeddings else np.zeros((0, 0)))
        log.info("fold %d (%s): %d slides predicted", k, checkpoint, len(ids))
    probs = np.stack(fold_probs)  # (K, S, C)
    patient_of = dict(zip(sheet["slide_id"], sheet["patient_id"]))
    frame = write_ensemble_predictions(
        slides, probs, classes, out_predictions, extra={"patient_id": [patient_of[s] for s in slides]}
    )
    write_fold_predictions(slides, probs, classes, out_folds)
    write_slide_embeddings(out_embeddings, slides, np.stack(fold_embeddings), probs, classes)
    return frame


# -- patient models ------------------------------------------------------------------------------


def _patient_inputs(sheet: pd.DataFrame, slide_ids: list[str], embeddings: torch.Tensor) -> dict[str, dict]:
    """Per patient, the model inputs (slides with patches in node order) as in training."""
    index = {s: i for i, s in enumerate(slide_ids)}
    inputs = {}
    for patient, group in sheet.groupby("patient_id", sort=True):
        group = group[group["slide_id"].isin(index)].sort_values(["node", "slide_id"], na_position="last")
        if group.empty:
            log.warning("patient %s: no slide with patches: no prediction", patient)
            continue
        item = {"slide_embeddings": embeddings[[index[s] for s in group["slide_id"]]]}
        if group["node"].notna().all():
            item["node_index"] = torch.tensor([int(n) for n in group["node"]], dtype=torch.long)
        inputs[patient] = item
    return inputs


def predict_patients(
    method: str,
    task: Task,
    sheet_csv,
    slide_embeddings,
    checkpoints: Sequence[str | os.PathLike],
    out_predictions,
    out_folds,
    device: str = "cpu",
) -> pd.DataFrame:
    """Patient predictions of one patient model, fold by fold on the source slide model's
    embeddings (or predicted slide labels / probabilities for ``pn_rule`` / ``mean_prob``) of
    the same fold; the ensemble is the mean over folds, with its std and the per-fold rows."""
    sheet = read_sample_sheet(sheet_csv)
    saved = read_slide_embeddings(slide_embeddings)
    slide_ids = saved.slide_ids
    classes = list(task.classes("patient"))
    slide_classes = list(task.classes("slide"))
    n_folds = saved.probs.shape[0]
    fold_probs = []
    patients: list[str] = []
    for k in range(n_folds):
        if not model_info("patient", method).trained:
            per_slide = saved.probs[k].numpy()
            by_patient = _patient_slides(sheet, slide_ids)
            patients = sorted(by_patient)
            rows = []
            for patient in patients:
                rows_of = by_patient[patient]
                if method == "pn_rule":
                    stage = pn_stage([slide_classes[i] for i in per_slide[rows_of].argmax(axis=1)])
                    rows.append(np.eye(len(classes))[classes.index(stage)])
                else:
                    rows.append(per_slide[rows_of].mean(axis=0))
            fold_probs.append(np.array(rows).reshape(len(patients), len(classes)))
            continue
        from hmf.training.checkpoints import load_patient_model

        model, _ = load_patient_model(checkpoints[k], classes)
        model.to(torch.device(device))
        items = _patient_inputs(sheet, slide_ids, saved.embeddings[k].float())
        patients = sorted(items)
        rows = []
        with torch.inference_mode():
            for patient in patients:
                out = model(**{key: v.to(device) for key, v in items[patient].items()})
                rows.append(torch.softmax(out["logits"].float(), -1).cpu().numpy())
        fold_probs.append(np.array(rows).reshape(len(patients), len(classes)))
    if model_info("patient", method).trained and len(checkpoints) != n_folds:
        raise ValueError(f"{len(checkpoints)} patient checkpoints but slide embeddings of {n_folds} folds")
    probs = np.stack(fold_probs)
    frame = write_ensemble_predictions(patients, probs, classes, out_predictions)
    write_fold_predictions(patients, probs, classes, out_folds)
    return frame


def _patient_slides(sheet: pd.DataFrame, slide_ids: list[str]) -> dict[str, list[int]]:
    index = {s: i for i, s in enumerate(slide_ids)}
    out: dict[str, list[int]] = {}
    for slide, patient in zip(sheet["slide_id"], sheet["patient_id"]):
        if slide in index:
            out.setdefault(patient, []).append(index[slide])
    return out


# -- the CAMELYON17 submission ----------------------------------------------------------------


def camelyon17_submission(sheet_csv, patient_predictions, slide_predictions, out_csv) -> pd.DataFrame:
    """The challenge's file: header ``patient,stage``; per patient (sorted) a row
    ``patient_XXX.zip,<pN stage>`` followed by one row per node ``patient_XXX_node_Y.tif,<label>``.

    A slide without patches (no tissue, no prediction) is written ``negative`` and a patient
    none of whose slides has patches ``pN0``, both with a warning in the log.
    """
    sheet = read_sample_sheet(sheet_csv)
    patients = read_predicted_labels(patient_predictions)
    slides = read_predicted_labels(slide_predictions)
    rows = []
    for patient, group in sheet.groupby("patient_id", sort=True):
        if not CAMELYON_PATIENT_ID.match(patient):
            raise ValueError(f"{sheet_csv}: patient id {patient!r} is not a CAMELYON17 id (patient_<number>)")
        if group["node"].isna().any():
            raise ValueError(
                f"{sheet_csv}: patient {patient}: slide(s) "
                f"{list(group.loc[group['node'].isna(), 'slide_id'])} without a node number"
            )
        stage = patients.get(patient)
        if stage is None:
            log.warning("patient %s: no prediction (no slide with patches): written as pN0", patient)
            stage = "pN0"
        if stage not in CAMELYON17_PATIENT:
            raise ValueError(f"{patient_predictions}: patient {patient}: {stage!r} is not a pN stage")
        rows.append((f"{patient}.zip", stage))
        for row in group.sort_values("node").itertuples():
            label = slides.get(row.slide_id)
            if label is None:
                log.warning("slide %s: no prediction (no patches): written as negative", row.slide_id)
                label = "negative"
            rows.append((f"{patient}_node_{int(row.node)}.tif", label))
    frame = pd.DataFrame(rows, columns=["patient", "stage"])
    write_csv(out_csv, frame)
    return frame


def write_predict_sheet(
    csv_path, out_csv, known_slide_ids: Sequence[str] = (), check_files: bool = True
) -> pd.DataFrame:
    frame = load_predict_sheet(csv_path, known_slide_ids, check_files)
    write_sample_sheet(frame, out_csv)
    return frame
