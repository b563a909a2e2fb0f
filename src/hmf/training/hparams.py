"""Hyperparameters of one training run: a model's own recipe (its paper's, from
``hmf.models.registry``), then the config's per-model overrides, then the ``training:``
section on top (seed, monitor, global caps on epochs and patience).

Two settings types with distinct jobs: :class:`hmf.training.settings.TrainingSettings` is the
``training:`` section as the config gives it (one per job); :class:`HyperParameters` is one
model's resolved recipe for one run, built here by :func:`resolve`, whose ``fit`` part
(:class:`FitConfig`) is what the training loop (``hmf.training.loop``) reads."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from hmf.training.settings import TrainingSettings, training_settings

MERGED_KEYS = ("model", "optimizer", "scheduler")  # overridden key by key


@dataclass
class FitConfig:
    """How one model is fitted (the loop's part of :class:`HyperParameters`): its recipe's epochs,
    patience, accumulation, clipping and precision merged with the ``training:`` settings."""

    epochs: int
    patience: int
    accumulation: int
    grad_clip: float | None
    monitor: str
    min_epochs: int
    seed: int
    bf16: bool | str  # training.bf16: cuda (= True), auto, always or false; see hmf.precision.training_autocast
    max_patches: int | None


@dataclass
class HyperParameters:
    model: dict
    optimizer: dict
    scheduler: dict
    fit: FitConfig

    def as_dict(self) -> dict:
        return {"model": self.model, "optimizer": self.optimizer, "scheduler": self.scheduler, "fit": asdict(self.fit)}


def resolve(
    level: str, name: str, overrides: dict | None, training: TrainingSettings | Mapping[str, Any] | None
) -> HyperParameters:
    from hmf.models.registry import check_model_overrides, training_defaults

    recipe = training_defaults(name, level)
    overrides = copy.deepcopy(overrides or {})
    check_model_overrides(level, name, overrides)
    for key, value in overrides.items():
        if key in MERGED_KEYS:
            recipe[key] = {**recipe[key], **value}
        else:
            recipe[key] = value
    training = training_settings(training)
    epochs = int(recipe["epochs"])
    if training.max_epochs:
        epochs = min(epochs, int(training.max_epochs))
    fit = FitConfig(
        epochs=epochs,
        patience=int(training.patience or recipe["patience"]),
        accumulation=int(training.accumulation or recipe.get("accumulation") or 1),
        grad_clip=recipe.get("grad_clip"),
        monitor=training.monitor,
        min_epochs=int(training.min_epochs),
        seed=int(training.seed),
        # training.bf16 for the models whose recipe trains in bf16; fp32 for the others.
        bf16=training.bf16 if recipe.get("mixed_precision") == "bf16" else False,
        max_patches=training.max_patches,
    )
    return HyperParameters(model=recipe["model"], optimizer=recipe["optimizer"], scheduler=recipe["scheduler"], fit=fit)
