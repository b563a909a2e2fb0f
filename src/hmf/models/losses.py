"""Losses for one bag (one slide or one patient) per call.

Class weights multiply the loss of the bag's class. With one bag per step this is the only form
that has an effect: ``F.cross_entropy(weight=..., reduction="mean")`` divides by the weight of the
single target and cancels it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def check_label(label: torch.Tensor | int, n_classes: int) -> torch.Tensor:
    """A scalar long tensor in [0, n_classes), or a ValueError saying what is wrong."""
    label = torch.as_tensor(label)
    if label.numel() != 1:
        raise ValueError(f"a bag label must be a scalar, got shape {tuple(label.shape)}")
    if label.dtype.is_floating_point:
        raise ValueError(f"a bag label must be an integer class index, got dtype {label.dtype}")
    label = label.reshape(()).long()
    if not 0 <= int(label) < n_classes:
        raise ValueError(f"label {int(label)} is outside the {n_classes} classes [0, {n_classes - 1}]")
    return label


def class_weight_of(context: dict | None, label: torch.Tensor, n_classes: int, device) -> torch.Tensor:
    """Weight of the bag's class from ``context['class_weights']`` (1 when absent)."""
    weights = (context or {}).get("class_weights")
    if weights is None:
        return torch.ones((), device=device)
    weights = torch.as_tensor(weights, dtype=torch.float32, device=device)
    if weights.shape != (n_classes,):
        raise ValueError(f"context['class_weights'] has shape {tuple(weights.shape)}, expected ({n_classes},)")
    return weights[label]


def weighted_cross_entropy(
    logits: torch.Tensor, label: torch.Tensor, weight: torch.Tensor | None = None, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Cross-entropy of one bag's logits (C,) (or several rows (K, C) with the same label, averaged)."""
    logits2d = logits.reshape(-1, logits.shape[-1])
    target = label.reshape(1).expand(logits2d.shape[0]).to(logits.device)
    loss = F.cross_entropy(logits2d, target, label_smoothing=label_smoothing)
    return loss if weight is None else weight * loss


def focal_loss(
    logits: torch.Tensor, label: torch.Tensor, gamma: float = 2.0, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Focal loss (Lin et al. 2017) of one bag: -alpha (1 - p_y)^gamma log p_y."""
    log_p = torch.log_softmax(logits.reshape(-1), dim=0)[label]
    loss = -((1.0 - log_p.exp()) ** gamma) * log_p
    return loss if weight is None else weight * loss


class UncertaintyWeighting(nn.Module):
    """Learned homoscedastic uncertainty weights (Kendall et al. 2018): sum_i exp(-s_i) L_i + s_i."""

    def __init__(self, n_terms: int = 2):
        super().__init__()
        self.log_vars = nn.Parameter(torch.zeros(n_terms))

    def forward(self, *terms: torch.Tensor) -> torch.Tensor:
        if len(terms) != self.log_vars.numel():
            raise ValueError(f"expected {self.log_vars.numel()} loss terms, got {len(terms)}")
        total = torch.zeros((), device=self.log_vars.device)
        for s, term in zip(self.log_vars, terms):
            total = total + torch.exp(-s) * term + s
        return total


class FocalCELoss(nn.Module):
    """HMF classification loss: CE (label smoothing) and class-weighted focal loss, combined with
    learned uncertainty weights."""

    def __init__(self, n_classes: int, label_smoothing: float = 0.1, gamma: float = 2.0):
        super().__init__()
        self.n_classes = n_classes
        self.label_smoothing = label_smoothing
        self.gamma = gamma
        self.weighting = UncertaintyWeighting(2)

    def forward(self, logits: torch.Tensor, label: torch.Tensor, context: dict | None) -> torch.Tensor:
        label = check_label(label, self.n_classes).to(logits.device)
        weight = class_weight_of(context, label, self.n_classes, logits.device)
        ce = weighted_cross_entropy(logits, label, label_smoothing=self.label_smoothing)
        focal = focal_loss(logits, label, self.gamma, weight)
        return self.weighting(ce, focal)


def prompt_contrastive_loss(
    slide_vector: torch.Tensor, text_vectors: torch.Tensor, positives: torch.Tensor, temperature: float = 0.07
) -> torch.Tensor:
    """Contrast one slide vector (d,) against the text bank (P, d), both L2-normalised.

    ``positives`` (P,) bool marks the descriptions of the bag's own class. Loss =
    1/2 [KL(uniform over positives || softmax(sim)) + BCE(sim, positives)], sim = cos / temperature.
    (KL is taken towards the target distribution, the direction that stays finite.)
    """
    if positives.shape != text_vectors.shape[:1]:
        raise ValueError(
            f"positive mask has shape {tuple(positives.shape)}, text bank has {text_vectors.shape[0]} rows"
        )
    if not positives.any():
        raise ValueError("no description of the bag's class in the text bank: check prompt_classes")
    sim = text_vectors @ slide_vector / temperature
    target = positives.float() / positives.sum()
    kl = F.kl_div(torch.log_softmax(sim, dim=0), target, reduction="sum")
    bce = F.binary_cross_entropy_with_logits(sim, positives.float())
    return 0.5 * (kl + bce)
