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


class RunningMoments:
    """Per-dimension mean and (population) variance over patches seen one bag at a time.

    Rows are folded in chunks in float64 with Chan et al.'s pairwise update, so a cohort of
    any size is summarised in O(D) memory, plus one chunk of one bag.
    """

    CHUNK = 8192

    def __init__(self):
        self.count = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None

    def update(self, features: torch.Tensor) -> None:
        for chunk in torch.split(features, self.CHUNK):
            chunk = chunk.double()
            n = chunk.shape[0]
            if n == 0:
                continue
            mean = chunk.mean(0)
            m2 = ((chunk - mean) ** 2).sum(0)
            if self.count == 0:
                self.count, self.mean, self.m2 = n, mean, m2
                continue
            total = self.count + n
            delta = mean - self.mean
            self.mean = self.mean + delta * (n / total)
            self.m2 = self.m2 + m2 + delta**2 * (self.count * n / total)
            self.count = total

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.count == 0:
            raise ValueError("no patches to fit the standardisation on")
        std = (self.m2 / self.count).sqrt()
        return self.mean.float(), std.clamp(min=MIN_STD).float()


def fit(features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std over all patches of ``features`` (a list of (N_i, D) tensors), in float64."""
    moments = RunningMoments()
    for bag in features:
        moments.update(bag)
    return moments.result()


def apply(features: torch.Tensor, mean: torch.Tensor | None, std: torch.Tensor | None) -> torch.Tensor:
    if mean is None or std is None:
        return features
    return ((features - mean) / std).contiguous()


def apply_(features: torch.Tensor, mean: torch.Tensor | None, std: torch.Tensor | None) -> torch.Tensor:
    """``apply`` in place (the same values, without a second copy of a large bag)."""
    if mean is None or std is None:
        return features
    return features.sub_(mean).div_(std)
