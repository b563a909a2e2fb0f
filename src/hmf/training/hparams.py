"""Hyperparameters of one training run: a model's own defaults (its paper's), then the
config's per-model overrides, then the config's ``training:`` section on top."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

from hmf.training.loop import FitConfig

# Keys of a model's defaults that drive the optimiser and the loop rather than the network.
OPTIMISER_KEYS = {"optimizer", "lr", "weight_decay", "scheduler", "betas", "momentum", "lookahead",
                  "lookahead_k", "lookahead_alpha", "eta_min", "warmup_epochs"}
LOOP_KEYS = {"epochs", "patience", "accumulation", "grad_clip", "min_epochs"}


@dataclass
class HyperParameters:
    model: dict
    optimizer: dict
    fit: FitConfig

    def as_dict(self) -> dict:
        return {"model": self.model, "optimizer": self.optimizer, "fit": asdict(self.fit)}


def _defaults(level: str, name: str) -> dict:
    from hmf.models import registry

    table = registry.SLIDE_DEFAULTS if level == "slide" else registry.PATIENT_DEFAULTS
    if name not in table:
        raise ValueError(f"unknown {level} model {name!r}; choose one of {sorted(table)}")
    return copy.deepcopy(table[name])


def resolve(level: str, name: str, overrides: dict | None, training: dict | None) -> HyperParameters:
    merged = _defaults(level, name)
    unknown_keys = set(overrides or {}) - set(merged)
    if unknown_keys:
        raise ValueError(
            f"models.{level}_params.{name}: unknown key(s) {sorted(unknown_keys)}; "
            f"{name} takes {sorted(merged)}"
        )
    merged.update(copy.deepcopy(overrides or {}))
    training = training or {}
    model = {k: v for k, v in merged.items() if k not in OPTIMISER_KEYS | LOOP_KEYS}
    optimizer = {k: v for k, v in merged.items() if k in OPTIMISER_KEYS}
    epochs = merged.get("epochs", 50)
    if training.get("max_epochs"):
        epochs = min(epochs, training["max_epochs"])
    fit = FitConfig(
        epochs=epochs,
        patience=training.get("patience") or merged.get("patience", 10),
        accumulation=training.get("accumulation") or merged.get("accumulation", 1),
        grad_clip=merged.get("grad_clip"),
        monitor=training.get("monitor", "f1_macro"),
        min_epochs=training.get("min_epochs", merged.get("min_epochs", 0)),
        seed=training.get("seed", 0),
        bf16=training.get("bf16", True),
        max_patches=training.get("max_patches"),
    )
    return HyperParameters(model=model, optimizer=optimizer, fit=fit)
