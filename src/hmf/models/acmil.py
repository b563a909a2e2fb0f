"""ACMIL (Zhang et al., ECCV 2024): attention-challenging MIL with gated attention.

Multiple-branch attention (``n_branches`` attention maps, each with its own classifier: the
semantic regularisation), stochastic top-k instance masking in training (of each branch's top
``n_masked_patch`` patches a random ``mask_drop`` fraction is hidden from the softmax), and a
slide classifier on the branch-averaged attention. Loss = CE(branch logits) + CE(slide logits) +
mean pairwise cosine similarity of the branch attention maps (diversity).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hmf.models.base import SlideModel
from hmf.models.layers import GatedAttention
from hmf.models.losses import check_label, class_weight_of, weighted_cross_entropy

MASKED = -1e9


class ACMIL(SlideModel):
    def __init__(
        self,
        in_dim: int,
        n_classes: int,
        hidden: int = 512,
        attn_hidden: int = 128,
        n_branches: int = 5,
        n_masked_patch: int = 10,
        mask_drop: float = 0.6,
        dropout: float = 0.0,
    ):
        super().__init__("acmil", in_dim, n_classes)
        if not 0.0 <= mask_drop < 1.0:
            raise ValueError(f"acmil: mask_drop must be in [0, 1), got {mask_drop}")
        self.n_branches, self.n_masked_patch, self.mask_drop = n_branches, n_masked_patch, mask_drop
        self.reduce = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU())
        self.attention = GatedAttention(hidden, attn_hidden, n_branches)
        self.branch_heads = nn.ModuleList(
            nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, n_classes)) for _ in range(n_branches)
        )
        self.slide_head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, n_classes))

    def _mask(self, scores: torch.Tensor) -> torch.Tensor:
        """Hide a random ``mask_drop`` share of each branch's top-k patches (training only)."""
        k_branches, n = scores.shape
        top = min(self.n_masked_patch, n)
        n_drop = int(top * self.mask_drop)
        if not self.training or n_drop == 0:
            return scores
        top_index = torch.topk(scores, top, dim=1).indices  # (K, top)
        chosen = torch.argsort(torch.rand(k_branches, top), dim=1)[:, :n_drop].to(scores.device)
        dropped = torch.gather(top_index, 1, chosen)
        keep = torch.ones_like(scores, dtype=torch.bool).scatter(1, dropped, False)
        return scores.masked_fill(~keep, MASKED)

    def forward(self, features, coords=None, text=None) -> dict:
        self.check_inputs(features)
        h = self.reduce(features)
        scores = self._mask(self.attention(h).T)  # (K, N)
        weights = torch.softmax(scores, dim=1)
        branch_features = weights @ h  # (K, hidden)
        branch_logits = torch.stack([head(f) for head, f in zip(self.branch_heads, branch_features)])
        bag_weights = weights.mean(0)
        pooled = bag_weights @ h
        return {
            "logits": self.slide_head(pooled),
            "embedding": pooled,
            "attention": bag_weights,
            "branch_logits": branch_logits,
            "branch_attention": weights,
        }

    def loss(self, output: dict, label: torch.Tensor, context: dict | None = None) -> torch.Tensor:
        logits = output["logits"]
        label = check_label(label, self.n_classes).to(logits.device)
        weight = class_weight_of(context, label, self.n_classes, logits.device)
        total = weighted_cross_entropy(logits, label, weight)
        total = total + weighted_cross_entropy(output["branch_logits"], label, weight)
        attn = output["branch_attention"]
        k = attn.shape[0]
        if k > 1:
            sim = F.cosine_similarity(attn.unsqueeze(1), attn.unsqueeze(0), dim=-1)  # (K, K)
            pairs = torch.triu_indices(k, k, offset=1, device=attn.device)
            total = total + sim[pairs[0], pairs[1]].mean()
        return total
