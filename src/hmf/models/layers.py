"""Building blocks shared by the bag models: gated attention, memory-bounded multi-head
attention and a transformer encoder that never materialises an N x N matrix.

Why attention needs care on the CPU: ``F.scaled_dot_product_attention`` has a fused (flash)
CPU kernel that keeps memory linear in the sequence length, but only without dropout. With
``dropout_p > 0`` it falls back to the math path, which holds the whole (heads, L, S) weight
matrix and its dropout mask: 4 heads over 16,384 tokens are 4 GiB per copy in fp32. So
:func:`bounded_attention` uses the fused kernel whenever dropout is off (evaluation, or a
dropout of 0), the math path as before when the weight matrix is small, and otherwise computes
the attention in blocks of query rows, each wrapped in ``torch.utils.checkpoint``: the forward
keeps no weight matrix, the backward recomputes one block at a time, and checkpoint restores
the random-number state, so a block's recomputed dropout mask is the one of its forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

# Attention weights (heads x queries x keys) held at once: up to this many the math path with
# dropout runs as one block (its peak is a few copies of the matrix, 128 MiB each in fp32);
# above it the queries are processed in blocks of about this many weights.
DENSE_ATTENTION_ELEMENTS = 2**25
ATTENTION_BLOCK_ELEMENTS = 2**24


def _dropout_attention_block(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float, scale: float
) -> torch.Tensor:
    weights = torch.softmax((q * scale) @ k.transpose(-2, -1), dim=-1)
    return F.dropout(weights, dropout_p, training=True) @ v


def bounded_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0, scale: float | None = None
) -> torch.Tensor:
    """``dropout(softmax(q k^T * scale)) v`` without holding a (…, L, S) matrix when it is large.

    q (…, L, E), k (…, S, E), v (…, S, F); ``scale`` defaults to E**-0.5. Dropout is applied
    to the attention weights (as ``F.scaled_dot_product_attention`` does) when ``dropout_p > 0``.
    """
    if dropout_p == 0.0:
        return F.scaled_dot_product_attention(q, k, v, scale=scale)  # fused kernel, linear memory
    matrices = q.numel() // (q.shape[-1] * q.shape[-2])  # batch x heads
    keys = k.shape[-2]
    if matrices * q.shape[-2] * keys <= DENSE_ATTENTION_ELEMENTS:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, scale=scale)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    block = max(1, ATTENTION_BLOCK_ELEMENTS // (matrices * keys))
    recompute = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    outputs = []
    for q_block in q.split(block, dim=-2):
        if recompute:
            outputs.append(checkpoint(_dropout_attention_block, q_block, k, v, dropout_p, scale, use_reentrant=False))
        else:
            outputs.append(_dropout_attention_block(q_block, k, v, dropout_p, scale))
    return torch.cat(outputs, dim=-2)


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
    """Multi-head attention through :func:`bounded_attention`.

    Unlike ``nn.MultiheadAttention`` with weights requested, no L x S matrix is held for long
    inputs (fused kernels without dropout, query blocks with recomputation with dropout), so
    10^4-10^5 patch tokens fit in memory. Inputs are unbatched: query (L, d), key/value (S, d).
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
        out = bounded_attention(
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
