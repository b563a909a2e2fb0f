"""The checkpoint files of trained models (``checkpoint.pt``): written here, read here, and the
model rebuilt from them here.

A slide checkpoint holds the model's name, weights, input and text sizes, classes, the
hyperparameters it was trained with, its best epoch and score, and the training fold's feature
statistics (None when features were not standardised). A patient checkpoint holds the name,
weights, slide-embedding size, classes, hyperparameters and best epoch. Both also hold
``provenance`` (the code version and the hyperparameters' digest, :mod:`hmf.provenance`) and
are plain dicts of tensors and Python values, so they load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hmf.atomic import save_torch
from hmf.provenance import stamp
from hmf.training import standardise


class CheckpointError(ValueError):
    """A checkpoint file that is missing, unreadable or not of the kind asked for; the message
    names the file and the cause."""


@dataclass(frozen=True)
class SlideCheckpoint:
    model: str
    state_dict: Mapping[str, torch.Tensor]
    in_dim: int
    n_classes: int
    classes: tuple[str, ...]
    text_dim: int | None
    params: Mapping[str, Any]  # hmf.training.hparams.HyperParameters.as_dict()
    best_epoch: int | None
    feature_mean: torch.Tensor | None
    feature_std: torch.Tensor | None
    best_score: float | None

    def standardise(self, features: torch.Tensor) -> torch.Tensor:
        """``features`` on the scale the model was trained on (unchanged if it was not standardised)."""
        return standardise.apply(features, self.feature_mean, self.feature_std)

    def build_model(self) -> torch.nn.Module:
        """The model, untrained (see :func:`load_model`)."""
        from hmf.models import build_slide_model

        return build_slide_model(
            self.model, int(self.in_dim), int(self.n_classes), self.params["model"], text_dim=self.text_dim
        )


@dataclass(frozen=True)
class PatientCheckpoint:
    model: str
    state_dict: Mapping[str, torch.Tensor]
    emb_dim: int
    classes: tuple[str, ...]
    params: Mapping[str, Any]
    best_epoch: int | None

    def build_model(self) -> torch.nn.Module:
        """The model, untrained (see :func:`load_model`)."""
        from hmf.models import build_patient_model

        return build_patient_model(self.model, int(self.emb_dim), len(self.classes), self.params["model"])


Checkpoint = SlideCheckpoint | PatientCheckpoint


def _as_dict(checkpoint: Checkpoint) -> dict[str, Any]:
    values = {f.name: getattr(checkpoint, f.name) for f in dataclasses.fields(checkpoint)}
    return {**values, "classes": list(checkpoint.classes)}


def write_checkpoint(path: str | os.PathLike, checkpoint: Checkpoint) -> None:
    """Write ``checkpoint`` atomically: a dict with one key per field, and ``provenance``
    (:func:`hmf.provenance.stamp` of the hyperparameters ``params``)."""
    save_torch(path, {**_as_dict(checkpoint), "provenance": stamp(checkpoint.params)})


def read_checkpoint(path: str | os.PathLike, kind: type[Checkpoint]) -> Checkpoint:
    """The checkpoint at ``path`` as ``kind``; CheckpointError names the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"checkpoint {path} cannot be loaded with torch.load: {err}") from None
    names = [f.name for f in dataclasses.fields(kind)]
    missing = [k for k in names if not isinstance(saved, dict) or k not in saved]
    if missing:
        level = "slide" if kind is SlideCheckpoint else "patient"
        raise CheckpointError(
            f"checkpoint {path} lacks key(s) {missing}; expected a {level} checkpoint from train_{level}"
        )
    return kind(**{**{k: saved[k] for k in names}, "classes": tuple(saved["classes"])})


def load_model(path: str | os.PathLike, kind: type[Checkpoint], classes: Sequence[str] | None = None):
    """The model of a checkpoint of ``kind``, rebuilt with its weights and in eval mode, and the
    checkpoint; ``classes``, when given, must be the checkpoint's."""
    checkpoint = read_checkpoint(path, kind)
    if classes is not None and list(checkpoint.classes) != list(classes):
        raise CheckpointError(f"{path}: classes {list(checkpoint.classes)} differ from the task's {list(classes)}")
    model = checkpoint.build_model()
    try:
        model.load_state_dict(checkpoint.state_dict)
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint {path}: weights do not fit model {checkpoint.model!r}: {err}") from None
    return model.eval(), checkpoint


def load_slide_model(
    path: str | os.PathLike, classes: Sequence[str] | None = None
) -> tuple[torch.nn.Module, SlideCheckpoint]:
    return load_model(path, SlideCheckpoint, classes)


def load_patient_model(
    path: str | os.PathLike, classes: Sequence[str] | None = None
) -> tuple[torch.nn.Module, PatientCheckpoint]:
    return load_model(path, PatientCheckpoint, classes)
