"""Common contract of the slide (bag) models: input checks and the default loss."""

from __future__ import annotations

import torch
from torch import nn

from hmf.models.losses import check_label, class_weight_of, weighted_cross_entropy


class SlideModel(nn.Module):
    """Base class: ``forward(features, coords=None, text=None) -> dict`` and ``loss(output, label, context)``.

    The default loss is the class-weighted cross-entropy of ``output['logits']``.
    """

    requires_text: bool = False
    needs_coords: bool = False

    def __init__(self, name: str, in_dim: int, n_classes: int):
        super().__init__()
        if n_classes < 2:
            raise ValueError(f"{name}: n_classes must be at least 2, got {n_classes}")
        if in_dim < 1:
            raise ValueError(f"{name}: in_dim must be positive, got {in_dim}")
        self.name = name
        self.in_dim = in_dim
        self.n_classes = n_classes

    def check_inputs(self, features: torch.Tensor, coords: torch.Tensor | None = None) -> None:
        if features.dim() != 2:
            raise ValueError(f"{self.name}: features must be (N, D), got shape {tuple(features.shape)}")
        if features.shape[0] < 1:
            raise ValueError(f"{self.name}: empty bag (0 patches)")
        if features.shape[1] != self.in_dim:
            raise ValueError(f"{self.name}: features have D={features.shape[1]}, the model expects {self.in_dim}")
        if self.needs_coords:
            if coords is None:
                raise ValueError(f"{self.name}: needs patch coordinates (coords) but none were given")
            if coords.shape != (features.shape[0], 2):
                raise ValueError(
                    f"{self.name}: coords have shape {tuple(coords.shape)}, expected ({features.shape[0]}, 2)"
                )

    def loss(self, output: dict, label: torch.Tensor, context: dict | None = None) -> torch.Tensor:
        logits = output["logits"]
        label = check_label(label, self.n_classes).to(logits.device)
        weight = class_weight_of(context, label, self.n_classes, logits.device)
        return weighted_cross_entropy(logits, label, weight)
