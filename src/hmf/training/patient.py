"""Patient-level models of one fold: trained on the frozen slide model's embeddings, or
rule-based aggregations of its predicted slide labels and probabilities."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hmf.data.sample_sheet import read_sample_sheet
from hmf.data.splits import read_split
from hmf.evaluation.predictions import probabilities, read_predictions, write_predictions
from hmf.models.patient_aggregators import aggregate_slides
from hmf.tasks import Task
from hmf.training.bags import class_weights
from hmf.training.checkpoints import PatientCheckpoint, write_checkpoint
from hmf.training.hparams import resolve
from hmf.training.loop import Item, file_digest, fingerprint, fit_model, predict, resume_state_path, seed_everything
from hmf.training.settings import TrainingSettings
from hmf.training.slide_embeddings import read_slide_embeddings

log = logging.getLogger(__name__)


def patient_inputs(sheet: pd.DataFrame, slide_ids: list[str], embeddings: torch.Tensor) -> dict[str, dict]:
    """Per patient, the patient model's inputs: the embeddings (rows of ``embeddings``, one per
    slide of ``slide_ids``) of its slides in node order, and the node indices when every slide
    of the patient has one. Patients without any slide in ``slide_ids`` are left out (logged)."""
    index = {s: i for i, s in enumerate(slide_ids)}
    inputs = {}
    for patient, group in sheet.groupby("patient_id", sort=True):
        group = group[group["slide_id"].isin(index)]
        if group.empty:
            log.warning("patient %s: no slide with patches; left out", patient)
            continue
        group = group.sort_values(["node", "slide_id"], na_position="last")
        item = {"slide_embeddings": embeddings[[index[s] for s in group["slide_id"]]]}
        if group["node"].notna().all():
            item["node_index"] = torch.tensor([int(n) for n in group["node"]], dtype=torch.long)
        inputs[patient] = item
    return inputs


def patient_items(
    sheet: pd.DataFrame, slide_ids: list[str], embeddings: torch.Tensor, classes: tuple[str, ...]
) -> dict[str, Item]:
    """One labelled item per patient with slide embeddings (see :func:`patient_inputs`)."""
    label_of = dict(zip(sheet["patient_id"], sheet["patient_label"]))
    return {
        patient: Item(key=patient, label=classes.index(label_of[patient]), inputs=inputs)
        for patient, inputs in patient_inputs(sheet, slide_ids, embeddings).items()
    }


def mean_over_blocks(model, blocks: list[list[Item]], device: torch.device, bf16) -> np.ndarray:
    """The model's class probabilities (N, C) for the same N patients given by each block of
    items (their inputs from one slide model each), averaged over the blocks."""
    return np.mean([predict(model, items, device, bf16)["probs"] for items in blocks], axis=0)


def train_patient_fold(
    model_name: str,
    task: Task,
    sheet_csv: str,
    split_csv: str,
    embeddings: str,
    checkpoint: str,
    train_log: str,
    predictions: str,
    overrides: dict | None = None,
    training: TrainingSettings | Mapping | None = None,
    device: str = "cpu",
    progress_file=None,
) -> dict:
    """Train one patient model on the slide embeddings of one fold and predict its test
    patients. ``training``: the ``training:`` settings (a partial section is filled from the schema).

    ``embeddings``: one slide model's file, or a cross-fitted file with one block per inner
    slide model (hmf.training.cross_fitting): training and validation patients have the same
    rows in every block (refused otherwise); each test patient is predicted from every block
    and the probabilities are averaged."""
    from hmf.models import build_patient_model

    sheet = read_sample_sheet(sheet_csv)
    split = read_split(split_csv)
    classes = task.classes("patient")
    saved = read_slide_embeddings(embeddings)
    blocks = [patient_items(sheet, saved.slide_ids, block, classes) for block in saved.blocks()]
    items = blocks[0]
    parts = {name: [items[p] for p in sorted(items) if split.get(p) == name] for name in ("train", "val", "test")}
    if not parts["train"]:
        raise ValueError(f"{split_csv}: no training patients with slide embeddings")
    _check_one_input_per_patient(blocks, parts["train"] + parts["val"], embeddings)
    emb_dim = parts["train"][0].load()["slide_embeddings"].shape[1]

    hp = resolve("patient", model_name, overrides, training)
    seed_everything(hp.fit.seed)
    model = build_patient_model(model_name, emb_dim, len(classes), hp.model)
    context = {"class_weights": class_weights([i.label for i in parts["train"]], len(classes))}
    run_id = fingerprint(
        "patient",
        model_name,
        hp.as_dict(),
        Path(split_csv).read_text(),
        emb_dim,
        classes,
        file_digest(embeddings),
        sorted((i.key, i.label) for i in items.values()),
    )
    log.info("%s: %d train, %d val, %d test patients", model_name, *(len(parts[k]) for k in ("train", "val", "test")))
    result = fit_model(
        model, hp, parts["train"], parts["val"], context, device, run_id, checkpoint, train_log, progress_file
    )
    # The best weights (fit_model leaves the model at its best epoch) on each block's test
    # inputs; with cross-fitted embeddings, one block per inner slide model.
    test_keys = [i.key for i in parts["test"]]
    if len(blocks) > 1:
        log.info("test patients: probabilities averaged over the %d inner slide models' embeddings", len(blocks))
    test_probs = mean_over_blocks(
        model, [[block[p] for p in test_keys] for block in blocks], torch.device(device), hp.fit.bf16
    )
    write_predictions(
        test_keys,
        [classes[i.label] for i in parts["test"]],
        test_probs.reshape(len(parts["test"]), len(classes)),
        classes,
        predictions,
    )
    write_checkpoint(
        checkpoint,
        PatientCheckpoint(
            model=model_name,
            state_dict=result.best_state,
            emb_dim=emb_dim,
            classes=tuple(classes),
            params=hp.as_dict(),
            best_epoch=result.best_epoch,
        ),
    )
    resume_state_path(checkpoint).unlink(missing_ok=True)
    return {"best_epoch": result.best_epoch, "best_score": result.best_score}


def _check_one_input_per_patient(blocks: list[dict[str, Item]], patients: list[Item], path) -> None:
    """Training and validation patients must have the same inputs in every block of the file."""
    for item in patients:
        first = item.inputs["slide_embeddings"]
        for j, block in enumerate(blocks[1:], start=1):
            if not torch.equal(block[item.key].inputs["slide_embeddings"], first):
                raise ValueError(
                    f"{path}: training/validation patient {item.key} has different slide embeddings in "
                    f"blocks 0 and {j}; a patient model trains on one embedding per slide"
                )


def aggregate_patient_fold(
    method: str, task: Task, sheet_csv: str, split_csv: str, slide_predictions: str, predictions: str
) -> pd.DataFrame:
    """Patient predictions for the fold's test patients from the slide model's test predictions.

    ``pn_rule``: CAMELYON17's pN rule applied to the predicted slide labels (one-hot output).
    ``mean_prob``: the mean of the slide probabilities over the patient's slides.
    """
    sheet = read_sample_sheet(sheet_csv)
    split = read_split(split_csv)
    slide_classes, patient_classes = task.classes("slide"), task.classes("patient")
    slides = read_predictions(slide_predictions, slide_classes)
    patient_of = dict(zip(sheet["slide_id"], sheet["patient_id"]))
    label_of = dict(zip(sheet["patient_id"], sheet["patient_label"]))
    unknown = sorted(set(slides["id"]) - set(patient_of))
    if unknown:
        raise ValueError(f"{slide_predictions}: slide(s) not in the sample sheet: {unknown[:5]}")
    slides["patient_id"] = slides["id"].map(patient_of)
    leaked = sorted({p for p in slides["patient_id"] if split.get(p) != "test"})
    if leaked:
        raise ValueError(f"{slide_predictions}: predictions for non-test patient(s) {leaked[:5]} of {split_csv}")
    ids, truth, probs = [], [], []
    for patient, group in slides.groupby("patient_id", sort=True):
        row = aggregate_slides(method, task, probabilities(group, slide_classes))
        ids.append(patient)
        truth.append(label_of[patient])
        probs.append(row)
    tested = {p for p, s in split.items() if s == "test"}
    missing = sorted(tested - set(ids))
    if missing:
        log.warning("test patient(s) without slide predictions (no tissue): %s", ", ".join(missing))
    return write_predictions(
        ids, truth, np.array(probs).reshape(len(ids), len(patient_classes)), patient_classes, predictions
    )
