"""Building blocks shared by the bag models: gated attention, SDPA-based multi-head attention
and a transformer encoder that never materialises an N x N matrix of its own."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GatedAttention(nn.Module):
    """Gated attention scorer of Ilse et al. (2018): ``w^T (tanh(V h) * sigmoid(U h))``.

    Returns unnormalised scores of shape (N, n_branches).
    """

    def __init__(self, in_dim: int, hidden: int, n_branches: int = 1, dropout: float = 0.0):
        super().__init__()
        self.tanh_branch = nn.Sequential(nn.Linear(in_dim, hidden), nn.Tanh(), nn.Dropout(dropout))
        self.sigmoid_branch = nn.Sequential(nn.Linear(in_dim, hidden), nn.Sigmoid(), nn.Dropout(dropout))
        self.score = nn.Linear(hidden, n_branches)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.score(self.tanh_branch(h) * self.sigmoid_branch(h))


class MultiHeadAttention(nn.Module):
    """Multi-head attention on top of ``F.scaled_dot_product_attention``.

    Unlike ``nn.MultiheadAttention`` with weights requested, the attention matrix is left to the
    fused kernel (flash / memory-efficient on GPU, blocked flash kernel on CPU), so thousands of
    patch tokens fit in memory. Inputs are unbatched: query (L, d), key/value (S, d).
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, kv_dim: int | None = None):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        kv_dim = kv_dim or dim
        self.heads = heads
        self.head_dim = dim // heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(kv_dim, dim)
        self.v = nn.Linear(kv_dim, dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = dropout

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        # (L, d) -> (heads, L, head_dim)
        return x.view(x.shape[0], self.heads, self.head_dim).transpose(0, 1)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor | None = None) -> torch.Tensor:
        value = key if value is None else value
        q, k, v = self._split(self.q(query)), self._split(self.k(key)), self._split(self.v(value))
        # A leading batch dimension of 1 selects the fused CPU/GPU kernels.
        out = F.scaled_dot_product_attention(
            q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0), dropout_p=self.dropout if self.training else 0.0
        )[0]
        return self.out(out.transpose(0, 1).reshape(query.shape[0], -1))

    def forward_with_weights(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Explicit attention that also returns the head-averaged weights (L, S).

        Only for a short query side (text prompts): the weights are L x S, never S x S.
        """
        value = key if value is None else value
        q, k, v = self._split(self.q(query)), self._split(self.k(key)), self._split(self.v(value))
        weights = torch.softmax(q @ k.transpose(1, 2) / self.head_dim**0.5, dim=-1)  # (h, L, S)
        dropped = F.dropout(weights, p=self.dropout, training=self.training)
        out = (dropped @ v).transpose(0, 1).reshape(query.shape[0], -1)
        return self.out(out), weights.mean(0)


class TransformerEncoderLayer(nn.Module):
    """Post-norm transformer encoder layer (self-attention + feed-forward) over (N, d) tokens."""

    def __init__(self, dim: int, heads: int, ff_dim: int, dropout: float = 0.1):
        super().__init__()
        self.attn = MultiHeadAttention(dim, heads, dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, ff_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff_dim, dim))
        self.norm2 = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.drop(self.attn(x, x)))
        return self.norm2(x + self.drop(self.ff(x)))


class TransformerEncoder(nn.Module):
    def __init__(self, dim: int, heads: int, ff_dim: int, layers: int, dropout: float = 0.1):
        super().__init__()
        self.layers = nn.ModuleList(TransformerEncoderLayer(dim, heads, ff_dim, dropout) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x
