"""The ``training:`` section of the config as a typed, frozen settings object.

Defaults and ranges come from the schema only (``config/schema/config.schema.yaml``); a job
builds the settings once from the section it receives and hands the object on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hmf.settings import build, section


@dataclass(frozen=True)
class TrainingSettings:
    seed: int
    device: str  # auto | cpu | cuda | cuda:<i> (hmf.devices)
    max_epochs: int | None  # cap on every model's epochs; None keeps each model's own
    patience: int | None  # replaces each model's own patience; None keeps it
    min_epochs: int
    monitor: str  # validation metric for checkpoint choice and early stopping
    accumulation: int | None  # bags per optimiser step; None keeps each model's own
    bf16: bool | str  # cuda (= True) | auto | always | false, for models whose recipe trains in bf16
    standardize_features: bool
    max_patches: int | None
    cache_mb: float


def training_settings(given: TrainingSettings | Mapping[str, Any] | None = None) -> TrainingSettings:
    """``given`` as :class:`TrainingSettings`: a (partial) ``training:`` section is filled with
    the schema's defaults and checked; settings already built are returned as they are."""
    if isinstance(given, TrainingSettings):
        return given
    return build(TrainingSettings, section("training", given), where="training")
