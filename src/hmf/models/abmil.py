"""ABMIL: gated attention MIL (Ilse et al., ICML 2018), with CLAM's layer sizes."""

from __future__ import annotations

import torch
from torch import nn

from hmf.models.base import SlideModel
from hmf.models.layers import GatedAttention


class ABMIL(SlideModel):
    """Linear D->hidden + ReLU + dropout, gated attention hidden->attn_hidden->1, softmax over the
    bag, attention-weighted sum, linear head."""

    def __init__(self, in_dim: int, n_classes: int, hidden: int = 512, attn_hidden: int = 256, dropout: float = 0.25):
        super().__init__("abmil", in_dim, n_classes)
        self.embed = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.attention = GatedAttention(hidden, attn_hidden, 1, dropout)
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, features, coords=None, text=None) -> dict:
        self.check_inputs(features)
        h = self.embed(features)
        weights = torch.softmax(self.attention(h)[:, 0], dim=0)
        pooled = weights @ h
        return {"logits": self.head(pooled), "embedding": pooled, "attention": weights}
