"""TransMIL (Shao et al., NeurIPS 2021): fc -> class token -> TransLayer -> PPEG -> TransLayer ->
LayerNorm -> head on the class token.

The self-attention is exact multi-head attention through ``scaled_dot_product_attention``
(fused kernels, no N x N matrix held in memory) in place of the paper's Nystrom approximation.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from hmf.models.base import SlideModel
from hmf.models.layers import MultiHeadAttention


class TransLayer(nn.Module):
    """Pre-norm self-attention with a residual connection."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, heads, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(x)
        return x + self.attn(y, y)


class PPEG(nn.Module):
    """Pyramid position encoding generator: depthwise 7x7, 5x5 and 3x3 convolutions on the square
    token grid, added to the identity. The class token passes unchanged."""

    def __init__(self, dim: int):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(dim, dim, k, 1, k // 2, groups=dim) for k in (7, 5, 3))

    def forward(self, x: torch.Tensor, side: int) -> torch.Tensor:
        cls_token, tokens = x[:1], x[1:]
        grid = tokens.T.reshape(1, -1, side, side)
        grid = grid + sum(conv(grid) for conv in self.convs)
        return torch.cat([cls_token, grid.reshape(x.shape[1], -1).T])


class TransMIL(SlideModel):
    def __init__(self, in_dim: int, n_classes: int, hidden: int = 512, heads: int = 8, dropout: float = 0.1):
        super().__init__("transmil", in_dim, n_classes)
        self.fc = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU())
        self.cls_token = nn.Parameter(torch.randn(1, hidden))
        self.layer1 = TransLayer(hidden, heads, dropout)
        self.ppeg = PPEG(hidden)
        self.layer2 = TransLayer(hidden, heads, dropout)
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, features, coords=None, text=None) -> dict:
        self.check_inputs(features)
        h = self.fc(features)
        n = h.shape[0]
        side = math.ceil(math.sqrt(n))
        # Square the token grid by repeating the first patches (as in the paper's code).
        pad = torch.arange(side * side - n, device=h.device) % n
        h = torch.cat([self.cls_token, h, h[pad]])
        h = self.layer1(h)
        h = self.ppeg(h, side)
        h = self.layer2(h)
        cls_out = self.norm(h)[0]
        return {"logits": self.head(cls_out), "embedding": cls_out}
