"""Per-dimension standardisation of patch features, fitted on the training fold's patches.

Patch features come on arbitrary scales (a ResNet's pooled activations average around 10 with
a long tail); standardising them with statistics of the *training* patches only keeps every
model's optimiser in a sensible range without letting validation or test slides inform the
fit. The statistics travel in the checkpoint (``feature_mean``, ``feature_std``) so anything
that reruns the model (predictions, heatmaps) sees features on the same scale.
"""

from __future__ import annotations

import torch

MIN_STD = 1e-6


def fit(features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std over all patches of ``features`` (a list of (N_i, D) tensors), in float64."""
    stacked = torch.cat([f.double() for f in features])
    return stacked.mean(0).float(), stacked.std(0, unbiased=False).clamp(min=MIN_STD).float()


def apply(features: torch.Tensor, mean: torch.Tensor | None, std: torch.Tensor | None) -> torch.Tensor:
    if mean is None or std is None:
        return features
    return ((features - mean) / std).contiguous()


def from_checkpoint(features: torch.Tensor, checkpoint: dict) -> torch.Tensor:
    """Standardise ``features`` as the model of ``checkpoint`` was trained (no-op if it wasn't)."""
    return apply(features, checkpoint.get("feature_mean"), checkpoint.get("feature_std"))
