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

import numpy as np
import pandas as pd
import torch

from hmf.atomic import write_csv
from hmf.data.sample_sheet import read_sample_sheet
from hmf.evaluation.predictions import read_predicted_labels, write_ensemble_predictions, write_fold_predictions
from hmf.models.names import model_info
from hmf.models.patient_aggregators import aggregate_slides
from hmf.tasks import CAMELYON17_PATIENT, Task, pn_stage
from hmf.training.slide_embeddings import read_slide_embeddings, write_slide_embeddings

log = logging.getLogger(__name__)

CAMELYON_PATIENT_ID = re.compile(r"^patient_\d+$")


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
    sheet = read_sample_sheet(sheet_csv)
    classes = list(task.classes("slide"))
    slides, probs, embeddings = _run_slide_models(sheet, feature_files, checkpoints, classes, text_bank, device)
    patient_of = dict(zip(sheet["slide_id"], sheet["patient_id"]))
    marked = in_sample(sheet, "slide")
    frame = write_ensemble_predictions(
        slides, probs, classes, out_predictions, extra={"patient_id": [patient_of[s] for s in slides]}, in_sample=marked
    )
    write_fold_predictions(slides, probs, classes, out_folds, in_sample=marked)
    write_slide_embeddings(out_embeddings, slides, embeddings, probs, classes)
    return frame


def embed_slides_inner(
    task: Task,
    sheet_csv,
    feature_files: Mapping[str, str | os.PathLike],
    checkpoints: Sequence[str | os.PathLike],
    out_embeddings,
    text_bank: str | None = None,
    device: str = "cpu",
) -> None:
    """The new slides' embeddings by the J inner slide models of one outer fold (cross-fitted
    patient inputs): ``out_embeddings`` holds embeddings (J, S, E) and probs (J, S, C), one
    block per inner checkpoint, for that fold's patient models."""
    sheet = read_sample_sheet(sheet_csv)
    classes = list(task.classes("slide"))
    slides, probs, embeddings = _run_slide_models(sheet, feature_files, checkpoints, classes, text_bank, device)
    write_slide_embeddings(out_embeddings, slides, embeddings, probs, classes)


def _run_slide_models(
    sheet: pd.DataFrame,
    feature_files: Mapping[str, str | os.PathLike],
    checkpoints: Sequence[str | os.PathLike],
    classes: list[str],
    text_bank: str | None,
    device: str,
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Every checkpoint on every slide of ``sheet`` with patches: the slide ids, probabilities
    (M, S, C) and embeddings (M, S, E), one block per checkpoint."""
    from hmf.features.io import FeatureFileError, read_features
    from hmf.training.checkpoints import load_slide_model
    from hmf.training.slide import load_text_inputs

    missing = [s for s in sheet["slide_id"] if s not in feature_files]
    if missing:
        raise FeatureFileError(f"slide {missing[0]}: no feature file among the job's inputs ({len(missing)} slides)")
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
        log.info("model %d (%s): %d slides predicted", k, checkpoint, len(ids))
    return slides, np.stack(fold_probs), np.stack(fold_embeddings)


# -- patient models ------------------------------------------------------------------------------


def predict_patients(
    method: str,
    task: Task,
    sheet_csv,
    slide_embeddings,
    checkpoints: Sequence[str | os.PathLike],
    out_predictions,
    out_folds,
    device: str = "cpu",
    inner_embeddings: Sequence[str | os.PathLike] = (),
) -> pd.DataFrame:
    """Patient predictions of one patient model, fold by fold; the ensemble is the mean over
    folds, with its std and the per-fold rows.

    In-sample inputs: fold k's model reads block k of ``slide_embeddings`` (the source slide
    model's predict embeddings, one block per fold model). Cross-fitted inputs
    (``inner_embeddings``: one file per fold, in the order of ``checkpoints``, each with one
    block per inner slide model of that fold): fold k's model predicts from each block of file
    k and its probabilities are averaged over the blocks, as for the fold's test patients in
    training. ``pn_rule`` / ``mean_prob`` read the fold models' slide probabilities of
    ``slide_embeddings``."""
    sheet = read_sample_sheet(sheet_csv)
    classes = list(task.classes("patient"))
    trained = model_info("patient", method).trained
    if not trained:
        if inner_embeddings:
            raise ValueError(f"{method} aggregates slide predictions: it takes no inner slide embeddings")
        probs, patients = _aggregate_folds(method, task, sheet, read_slide_embeddings(slide_embeddings))
    else:
        if inner_embeddings:
            if len(inner_embeddings) != len(checkpoints):
                raise ValueError(
                    f"{len(checkpoints)} patient checkpoints but inner slide embeddings of "
                    f"{len(inner_embeddings)} folds"
                )
            fold_files = [(path, None) for path in inner_embeddings]
        else:
            n_folds = read_slide_embeddings(slide_embeddings).blocks().shape[0]
            if len(checkpoints) != n_folds:
                raise ValueError(f"{len(checkpoints)} patient checkpoints but slide embeddings of {n_folds} folds")
            fold_files = [(slide_embeddings, k) for k in range(n_folds)]
        probs, patients = _patient_model_folds(sheet, classes, checkpoints, fold_files, device)
    # An ensemble of label aggregators (the pN rule) breaks its ties by that rule over the ensemble's node labels.
    by_labels = model_info("patient", method).aggregates == "labels"
    preferred = pn_rule_tie_break(sheet, read_slide_embeddings(slide_embeddings), task) if by_labels else None
    marked = in_sample(sheet, "patient")
    frame = write_ensemble_predictions(patients, probs, classes, out_predictions, preferred=preferred, in_sample=marked)
    write_fold_predictions(patients, probs, classes, out_folds, in_sample=marked)
    return frame


def _patient_model_folds(sheet, classes, checkpoints, fold_files, device) -> tuple[np.ndarray, list[str]]:
    """Per fold k, checkpoint k on the embeddings ``fold_files[k]`` = (file, block): that one
    block, or every block of the file (probabilities averaged over them) when block is None."""
    from hmf.training.checkpoints import load_patient_model
    from hmf.training.patient import patient_inputs

    dev = torch.device(device)
    fold_probs, patients = [], None
    for checkpoint, (path, block) in zip(checkpoints, fold_files, strict=True):
        saved = read_slide_embeddings(path)
        blocks = saved.blocks() if block is None else saved.blocks()[block : block + 1]
        model, _ = load_patient_model(checkpoint, classes)
        model.to(dev).eval()
        block_probs = []
        for embeddings in blocks:
            inputs = patient_inputs(sheet, saved.slide_ids, embeddings)
            if patients is None:
                patients = sorted(inputs)
            elif sorted(inputs) != patients:
                raise ValueError(f"{path}: slide embeddings of other patients than the first fold's")
            rows = []
            with torch.inference_mode():
                for patient in patients:
                    out = model(**{key: v.to(dev) for key, v in inputs[patient].items()})
                    rows.append(torch.softmax(out["logits"].float(), -1).cpu().numpy())
            block_probs.append(np.array(rows).reshape(len(patients), len(classes)))
        fold_probs.append(np.mean(block_probs, axis=0))
        if len(blocks) > 1:
            log.info("%s: probabilities averaged over %d inner slide models' embeddings", checkpoint, len(blocks))
    return np.stack(fold_probs), patients or []


def _aggregate_folds(method: str, task: Task, sheet: pd.DataFrame, saved) -> tuple[np.ndarray, list[str]]:
    """``pn_rule`` / ``mean_prob`` per fold on that fold model's slide probabilities."""
    classes = list(task.classes("patient"))
    by_patient = _patient_slides(sheet, saved.slide_ids)
    patients = sorted(by_patient)
    fold_probs = []
    for per_slide in saved.probs.numpy() if saved.probs.dim() == 3 else saved.probs.numpy()[None]:
        rows = []
        for patient in patients:
            rows.append(aggregate_slides(method, task, per_slide[by_patient[patient]]))
        fold_probs.append(np.array(rows).reshape(len(patients), len(classes)))
    return np.stack(fold_probs), patients


def _patient_slides(sheet: pd.DataFrame, slide_ids: list[str]) -> dict[str, list[int]]:
    index = {s: i for i, s in enumerate(slide_ids)}
    out: dict[str, list[int]] = {}
    for slide, patient in zip(sheet["slide_id"], sheet["patient_id"]):
        if slide in index:
            out.setdefault(patient, []).append(index[slide])
    return out


# -- in-sample predictions and the pN rule's ties ---------------------------------------------


def in_sample(sheet: pd.DataFrame, level: str) -> set[str]:
    """The slide or patient ids of the predict sheet that are training slides or patients
    (accepted by predict.allow_training_slides), with a warning in the log when there are any."""
    from hmf.data.predict_sheet import in_sample_ids

    ids = in_sample_ids(sheet, level)
    if ids:
        log.warning(
            "%d %s(s) predicted in-sample (training slides or patients, predict.allow_training_slides): "
            "marked in_sample in the predictions: %s",
            len(ids),
            level,
            ", ".join(sorted(ids)[:20]),
        )
    return ids


def pn_rule_tie_break(sheet: pd.DataFrame, saved, task: Task) -> dict[str, str]:
    """Per patient, the pN rule over the ensemble's node labels (the arg-max of the slide
    probabilities averaged over the fold models): what decides a tie between stages in the
    ensemble of the fold models' pN-rule stages."""
    probs = saved.probs.numpy()
    mean = probs.mean(axis=0) if probs.ndim == 3 else probs
    slide_classes = list(task.classes("slide"))
    return {
        patient: pn_stage([slide_classes[i] for i in mean[rows].argmax(axis=1)])
        for patient, rows in _patient_slides(sheet, saved.slide_ids).items()
    }


# -- the CAMELYON17 submission ----------------------------------------------------------------

CONFLICT_COLUMNS = ["patient", "stage", "model", "node_labels", "pn_rule_stage"]


KAPPA_COLUMN = "kappa_quadratic_pooled"


def best_pooled_kappa(table_csv: str | os.PathLike, models: Sequence[str]) -> tuple[str, dict[str, float]]:
    """Of ``models``, the patient model with the highest pooled out-of-fold quadratic kappa (the
    challenge's metric) in the patient-level results table ``table_csv`` (``tables/patient.csv``,
    computed from the fold predictions files), and each one's kappa. Models whose kappa is
    undefined are passed over; a tie goes to the model listed first."""
    try:
        table = pd.read_csv(table_csv, dtype={"model": str}, keep_default_na=False, na_values=[""])
    except FileNotFoundError:
        raise FileNotFoundError(f"patient results table not found: {table_csv}") from None
    if not {"model", KAPPA_COLUMN} <= set(table.columns):
        raise ValueError(f"{table_csv}: no columns 'model' and {KAPPA_COLUMN!r}: not a patient-level results table")
    kappa_of = dict(zip(table["model"], pd.to_numeric(table[KAPPA_COLUMN], errors="coerce")))
    missing = [m for m in models if m not in kappa_of]
    if missing:
        raise ValueError(f"{table_csv}: no row for patient model(s) {missing}")
    kappas = {m: float(kappa_of[m]) for m in models}
    defined = [m for m in models if np.isfinite(kappas[m])]
    if not defined:
        raise ValueError(
            f"{table_csv}: no pooled out-of-fold kappa for any of {list(models)}; name the model in "
            f"predict.submission_model"
        )
    return max(defined, key=lambda m: (kappas[m], -list(models).index(m))), kappas


def camelyon17_submission(
    sheet_csv,
    patient_predictions: Mapping[str, str | os.PathLike],
    slide_predictions,
    out_csv,
    out_conflicts,
    model: str | None = None,
    patient_table: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """The challenge's file: header ``patient,stage``; per patient (sorted) a row
    ``patient_XXX.zip,<pN stage>`` followed by one row per node ``patient_XXX_node_Y.tif,<label>``.

    ``patient_predictions``: model -> its predict ensemble file. The stages come from ``model``,
    or where that is None from the one with the best pooled out-of-fold kappa in the patient
    results table ``patient_table`` (see :func:`best_pooled_kappa`); the log says which.
    The node labels come from ``slide_predictions``. A patient whose stage is not the pN rule
    over its submitted node labels is listed in the log and in ``out_conflicts`` (columns
    patient, stage, model, node_labels, pn_rule_stage).

    A slide without patches (no tissue, no prediction) is written ``negative`` and a patient
    none of whose slides has patches ``pN0``, both with a warning in the log.
    """
    if model is None:
        if patient_table is None:
            raise ValueError("no submission model named and no patient results table to choose one by")
        model, kappas = best_pooled_kappa(patient_table, list(patient_predictions))
        log.info(
            "submission stages from %s: the best pooled out-of-fold quadratic kappa (%s)",
            model,
            ", ".join(f"{m} {k:.3f}" for m, k in kappas.items()),
        )
    else:
        log.info("submission stages from %s (predict.submission_model)", model)
    if model not in patient_predictions:
        raise ValueError(f"submission model {model!r} has no predictions among {sorted(patient_predictions)}")
    sheet = read_sample_sheet(sheet_csv)
    patients = read_predicted_labels(patient_predictions[model])
    slides = read_predicted_labels(slide_predictions)
    rows, conflicts = [], []
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
            raise ValueError(f"{patient_predictions[model]}: patient {patient}: {stage!r} is not a pN stage")
        rows.append((f"{patient}.zip", stage))
        nodes = []
        for row in group.sort_values("node").itertuples():
            label = slides.get(row.slide_id)
            if label is None:
                log.warning("slide %s: no prediction (no patches): written as negative", row.slide_id)
                label = "negative"
            nodes.append(label)
            rows.append((f"{patient}_node_{int(row.node)}.tif", label))
        rule = pn_stage(nodes)
        if rule != stage:
            conflicts.append((patient, stage, model, " ".join(nodes), rule))
    frame = pd.DataFrame(rows, columns=["patient", "stage"])
    conflict_frame = pd.DataFrame(conflicts, columns=CONFLICT_COLUMNS)
    if conflicts:
        log.warning(
            "%d of %d patients: the submitted stage (%s) is not the pN rule over the submitted node labels: %s "
            "(listed in %s)",
            len(conflicts),
            sheet["patient_id"].nunique(),
            model,
            "; ".join(f"{p} {s} but nodes {n} give {r}" for p, s, _, n, r in conflicts[:20]),
            out_conflicts,
        )
    write_csv(out_csv, frame)
    write_csv(out_conflicts, conflict_frame)
    return frame
