"""Train one slide-level model on one fold, predict its test slides and embed every slide."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from hmf.data.sample_sheet import read_sample_sheet
from hmf.data.splits import read_split
from hmf.evaluation.predictions import write_predictions
from hmf.features.io import feature_file
from hmf.tasks import Task
from hmf.training.bags import BagStore, class_weights, fold_parts, scan_slides
from hmf.training.checkpoints import SlideCheckpoint, write_checkpoint
from hmf.training.hparams import resolve
from hmf.training.loop import (
    Item,
    file_digest,
    file_stamp,
    fingerprint,
    fit_model,
    predict,
    resume_state_path,
    seed_everything,
)
from hmf.training.settings import TrainingSettings, training_settings
from hmf.training.slide_embeddings import write_slide_embeddings

log = logging.getLogger(__name__)


@dataclass
class SlideOutputs:
    checkpoint: str
    train_log: str
    predictions: str
    embeddings: str


def load_text_inputs(path: str | Path, classes: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """The text bank (P, E) and the class index of each description, checked against the task."""
    from hmf.text.embeddings import load_text_bank, prompt_class_index

    bank = load_text_bank(path)
    names = list(bank["class_names"])
    if names != list(classes):
        raise ValueError(f"{path}: text bank classes {names} differ from the task's {list(classes)}")
    return torch.as_tensor(bank["embeddings"], dtype=torch.float32), prompt_class_index(bank)


def _items(
    store: BagStore, ids: list[str], labels: dict[str, int], text: torch.Tensor | None, needs_coords: bool
) -> list[Item]:
    """One item per slide; its features are read from disk when a step asks for them."""
    return [Item(key=s, label=labels[s], inputs=store.loader(s, needs_coords, text)) for s in ids]


def train_slide_fold(
    model_name: str,
    task: Task,
    sheet_csv: str,
    split_csv: str,
    feature_files: Mapping[str, str | Path] | str | Path,
    outputs: SlideOutputs,
    overrides: dict | None = None,
    training: TrainingSettings | Mapping | None = None,
    text_bank: str | None = None,
    device: str = "cpu",
    progress_file=None,
) -> dict:
    """``feature_files``: slide id -> its ``.h5``/``.pt`` file (a folder in CLAM's layout is
    also accepted). Bags are read from disk as steps need them, so the job's memory is bounded
    by the model, the largest bag and ``training.cache_mb``, not by the number of slides.
    ``training``: the ``training:`` settings (a partial section is filled from the schema)."""
    from hmf.models import build_slide_model

    training = training_settings(training)
    sheet = read_sample_sheet(sheet_csv)
    parts = fold_parts(sheet, read_split(split_csv), split_name=str(split_csv))
    if not isinstance(feature_files, Mapping):
        feature_files = {s: feature_file(feature_files, s) for s in sheet["slide_id"]}
    records = scan_slides(sheet, feature_files)
    store = BagStore(records, cache_mb=training.cache_mb)
    for name in parts:
        parts[name] = [s for s in parts[name] if s in records]
    if not parts["train"]:
        raise ValueError(f"{split_csv}: no training slides with patches")
    mean = std = None
    if training.standardize_features:
        mean, std = store.fit_standardisation(parts["train"])
        store.standardise_with(mean, std)
    classes = task.classes("slide")
    labels = {row.slide_id: classes.index(row.slide_label) for row in sheet.itertuples() if row.slide_id in records}
    in_dim = store.dim

    hp = resolve("slide", model_name, overrides, training)
    seed_everything(hp.fit.seed)
    text, prompt_classes = (None, None)
    text_dim = None
    if text_bank is not None:
        text, prompt_classes = load_text_inputs(text_bank, classes)
        text_dim = text.shape[1]
    model = build_slide_model(model_name, in_dim, len(classes), hp.model, text_dim=text_dim)
    if model.requires_text and text is None:
        raise ValueError(f"model {model_name} needs a text bank")
    if not model.requires_text:
        text = None

    train_labels = [labels[s] for s in parts["train"]]
    context = {"class_weights": class_weights(train_labels, len(classes))}
    if prompt_classes is not None:
        context["prompt_classes"] = prompt_classes
    train_items = _items(store, parts["train"], labels, text, model.needs_coords)
    val_items = _items(store, parts["val"], labels, text, model.needs_coords)
    log.info(
        "%s: %d train, %d val, %d test slides; D=%d; %d classes; largest bag %d patches; bag cache %s MB",
        model_name,
        len(train_items),
        len(val_items),
        len(parts["test"]),
        in_dim,
        len(classes),
        store.largest_bag,
        training.cache_mb,
    )

    run_id = fingerprint(
        "slide",
        model_name,
        hp.as_dict(),
        Path(split_csv).read_text(),
        sorted(parts["train"]),
        in_dim,
        classes,
        mean is not None,
        sorted(labels.items()),
        [file_stamp(r.file.path) for r in records.values()],
        None if text_bank is None else file_digest(text_bank),
    )
    result = fit_model(
        model, hp, train_items, val_items, context, device, run_id, outputs.checkpoint, outputs.train_log, progress_file
    )

    # One pass over every slide (embeddings for the patient models); the test rows of it are
    # the fold's predictions. Only the features (and the full text bank) reach the model.
    all_ids = sorted(records)
    every = predict(
        model,
        _items(store, all_ids, labels, text, model.needs_coords),
        torch.device(device),
        hp.fit.bf16,
        keys=("logits", "embedding"),
    )
    row_of = {slide_id: i for i, slide_id in enumerate(all_ids)}
    test_rows = [row_of[s] for s in parts["test"]]
    write_predictions(
        parts["test"],
        [classes[labels[s]] for s in parts["test"]],
        every["probs"].reshape(len(all_ids), len(classes))[test_rows],
        classes,
        outputs.predictions,
    )

    write_slide_embeddings(
        outputs.embeddings,
        all_ids,
        every["embedding"],
        every["probs"],
        classes,
        model=model_name,
        settings=hp.as_dict(),
    )
    write_checkpoint(
        outputs.checkpoint,
        SlideCheckpoint(
            model=model_name,
            state_dict=result.best_state,
            in_dim=in_dim,
            n_classes=len(classes),
            classes=tuple(classes),
            text_dim=text_dim,
            params=hp.as_dict(),
            best_epoch=result.best_epoch,
            feature_mean=mean,
            feature_std=std,
            best_score=result.best_score,
        ),
    )
    resume_state_path(outputs.checkpoint).unlink(missing_ok=True)
    return {"best_epoch": result.best_epoch, "best_score": result.best_score}
