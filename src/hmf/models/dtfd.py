"""DTFD-MIL (Zhang et al., CVPR 2022): double-tier feature distillation, multi-class.

Tier 1 splits the bag into pseudo-bags (random in training, a fixed seeded split in eval), runs
gated attention MIL on each and is trained with the bag label on every pseudo-bag. From each
pseudo-bag a feature is distilled: MaxS (the patch with the highest class activation), MaxMinS
(highest and lowest) or AFS (the attention-pooled feature). Tier 2 runs gated attention MIL over
the distilled features and gives the bag prediction. Loss = tier-1 CE + tier-2 CE.

Multi-class generalisation of the patch activation: the paper's binary code scores patches by
the probability of the positive class; here by the probability of the class the pseudo-bag
predicts (no label involved).
"""

from __future__ import annotations

import torch
from torch import nn

from hmf.models.base import SlideModel
from hmf.models.layers import GatedAttention
from hmf.models.losses import check_label, class_weight_of, weighted_cross_entropy

DISTILL = ("maxs", "maxmins", "afs")
EVAL_SPLIT_SEED = 0


class AttentionClassifier(nn.Module):
    """Gated attention pooling + dropout + linear classifier."""

    def __init__(self, dim: int, attn_hidden: int, n_classes: int, dropout: float):
        super().__init__()
        self.attention = GatedAttention(dim, attn_hidden, 1)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(dim, n_classes)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        weights = torch.softmax(self.attention(h)[:, 0], dim=0)
        pooled = weights @ h
        return self.fc(self.drop(pooled)), pooled, weights


class DTFDMIL(SlideModel):
    def __init__(
        self,
        in_dim: int,
        n_classes: int,
        distill: str = "afs",
        n_pseudo_bags: int = 4,
        hidden: int = 512,
        attn_hidden: int = 128,
        dropout: float = 0.0,
    ):
        distill = distill.lower()
        if distill not in DISTILL:
            raise ValueError(f"dtfd: distill must be one of {DISTILL}, got {distill!r}")
        super().__init__(f"dtfd_{distill}", in_dim, n_classes)
        if n_pseudo_bags < 1:
            raise ValueError(f"dtfd: n_pseudo_bags must be >= 1, got {n_pseudo_bags}")
        self.distill, self.n_pseudo_bags = distill, n_pseudo_bags
        self.reduce = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU())
        self.tier1 = AttentionClassifier(hidden, attn_hidden, n_classes, dropout)
        self.tier2 = AttentionClassifier(hidden, attn_hidden, n_classes, dropout)

    def pseudo_bags(self, n: int, device) -> list[torch.Tensor]:
        if self.training:
            order = torch.randperm(n)
        else:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(EVAL_SPLIT_SEED))
        return [chunk.to(device) for chunk in torch.tensor_split(order, min(self.n_pseudo_bags, n))]

    def forward(self, features, coords=None, text=None) -> dict:
        self.check_inputs(features)
        h = self.reduce(features)
        attention = torch.zeros(h.shape[0], device=h.device)
        tier1_logits, distilled = [], []
        for index in self.pseudo_bags(h.shape[0], h.device):
            sub = h[index]
            logits, pooled, weights = self.tier1(sub)
            tier1_logits.append(logits)
            attention[index] = weights.detach().to(attention.dtype)
            if self.distill == "afs":
                distilled.append(pooled.unsqueeze(0))
                continue
            # Class activation of each patch: the tier-1 classifier on its attention-weighted feature.
            patch_probs = torch.softmax(self.tier1.fc(weights.unsqueeze(1) * sub), dim=1)
            score = patch_probs[:, int(logits.argmax())]
            order = torch.argsort(score, descending=True, stable=True)
            picks = order[:1] if self.distill == "maxs" else torch.stack([order[0], order[-1]])
            distilled.append(sub[picks])
        bag_logits, bag_feature, _ = self.tier2(torch.cat(distilled))
        return {
            "logits": bag_logits,
            "embedding": bag_feature,
            "attention": attention,
            "pseudo_bag_logits": torch.stack(tier1_logits),
        }

    def loss(self, output: dict, label: torch.Tensor, context: dict | None = None) -> torch.Tensor:
        logits = output["logits"]
        label = check_label(label, self.n_classes).to(logits.device)
        weight = class_weight_of(context, label, self.n_classes, logits.device)
        tier1 = weighted_cross_entropy(output["pseudo_bag_logits"], label, weight)
        return tier1 + weighted_cross_entropy(logits, label, weight)
