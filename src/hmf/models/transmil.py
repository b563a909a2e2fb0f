"""TransMIL (Shao et al., NeurIPS 2021): fc -> class token -> TransLayer -> PPEG -> TransLayer ->
LayerNorm -> head on the class token.

Self-attention is the paper's Nystrom approximation (``attention="nystrom"``: dim/2 landmarks,
6 iterations of the Moore-Penrose pseudo-inverse, depthwise residual convolution over values,
Xiong et al., AAAI 2021), or exact attention (``attention="sdpa"``: no N x N matrix held in
memory, but its time grows with N^2: meant for bags of a few thousand patches).
The default's memory grows linearly with N (a training step at 10^5 patches: under 5 GB peak
for the whole process, ``benchmarks/bench_models.py``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from hmf.models.base import SlideModel
from hmf.models.layers import MultiHeadAttention, bounded_attention


def iterative_pinv(x: torch.Tensor, iterations: int = 6) -> torch.Tensor:
    """Moore-Penrose pseudo-inverse of softmax matrices (..., m, m) by the iteration of
    Razavi et al. (2014), as used by Nystromformer."""
    abs_x = x.abs()
    z = x.transpose(-1, -2) / (abs_x.sum(-1).max() * abs_x.sum(-2).max())
    eye = torch.eye(x.shape[-1], device=x.device, dtype=x.dtype)
    for _ in range(iterations):
        xz = x @ z
        z = 0.25 * z @ (13 * eye - xz @ (15 * eye - xz @ (7 * eye - xz)))
    return z


class NystromAttention(nn.Module):
    """Nystrom self-attention over (N, dim) tokens with ``landmarks`` segment-mean landmarks."""

    def __init__(
        self, dim: int, heads: int, landmarks: int, dropout: float, pinv_iterations: int = 6, residual_kernel: int = 33
    ):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        self.heads, self.head_dim, self.landmarks = heads, dim // heads, landmarks
        self.pinv_iterations = pinv_iterations
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Sequential(nn.Linear(dim, dim), nn.Dropout(dropout))
        self.residual = nn.Conv2d(
            heads, heads, (residual_kernel, 1), padding=(residual_kernel // 2, 0), groups=heads, bias=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, m = x.shape[0], self.landmarks
        if n <= m:
            # No more tokens than landmarks: exact attention is cheaper than the approximation
            # (which would pad the bag to m tokens and invert an m x m matrix per head).
            q, k, v = (t.reshape(n, self.heads, self.head_dim).transpose(0, 1) for t in self.qkv(x).chunk(3, -1))
            out = F.scaled_dot_product_attention(q, k, v) + self.residual(v.unsqueeze(0))[0]
            return self.out(out.transpose(0, 1).reshape(n, -1))
        pad = (m - n % m) % m
        x = F.pad(x, (0, 0, pad, 0))  # zero tokens in front, as in the reference implementation
        q, k, v = (t.reshape(-1, self.heads, self.head_dim).transpose(0, 1) for t in self.qkv(x).chunk(3, -1))
        scale = self.head_dim**-0.5
        per_landmark = x.shape[0] // m
        q_land = q.reshape(self.heads, m, per_landmark, self.head_dim).mean(2)
        k_land = k.reshape(self.heads, m, per_landmark, self.head_dim).mean(2)
        # out = kernel1 @ pinv(kernel2) @ (kernel3 @ v) with kernel1 = softmax(q k_land^T) (h, N, m),
        # kernel2 = softmax(q_land k_land^T) (h, m, m), kernel3 = softmax(q_land k^T) (h, m, N).
        # kernel3 @ v and kernel1 @ (...) are attentions: the fused kernel computes them without
        # holding the two (h, N, m) matrices (820 MB each at 10^5 tokens, 8 heads, 256 landmarks).
        kernel2 = torch.softmax(scale * q_land @ k_land.transpose(1, 2), dim=-1)
        landmark_values = bounded_attention(q_land.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0), scale=scale)[0]
        mixed = iterative_pinv(kernel2, self.pinv_iterations) @ landmark_values  # (h, m, head_dim)
        out = bounded_attention(q.unsqueeze(0), k_land.unsqueeze(0), mixed.unsqueeze(0), scale=scale)[0]
        # channels-last: the CPU's depthwise convolution backward is about twice as fast in it.
        out = out + self.residual(v.unsqueeze(0).contiguous(memory_format=torch.channels_last))[0]
        out = out.transpose(0, 1).reshape(x.shape[0], -1)
        return self.out(out)[pad:]


class SDPASelfAttention(MultiHeadAttention):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x, x)


class TransLayer(nn.Module):
    """Pre-norm self-attention with a residual connection."""

    def __init__(self, dim: int, heads: int, dropout: float, attention: str = "nystrom"):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        if attention == "nystrom":
            self.attn = NystromAttention(dim, heads, landmarks=max(1, dim // 2), dropout=dropout)
        elif attention == "sdpa":
            self.attn = SDPASelfAttention(dim, heads, dropout)
        else:
            raise ValueError(f"transmil: attention must be 'nystrom' or 'sdpa', got {attention!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.attn(self.norm(x))


class PPEG(nn.Module):
    """Pyramid position encoding generator: depthwise 7x7, 5x5 and 3x3 convolutions on the square
    token grid, added to the identity. The class token passes unchanged."""

    def __init__(self, dim: int):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(dim, dim, k, 1, k // 2, groups=dim) for k in (7, 5, 3))

    def forward(self, x: torch.Tensor, side: int) -> torch.Tensor:
        cls_token, tokens = x[:1], x[1:]
        grid = tokens.T.reshape(1, -1, side, side)
        # conv7(g) + conv5(g) + conv3(g) computed as one 7x7 depthwise convolution whose kernel is
        # the sum of the three (zero-padded to 7x7): the same sum in a third of the passes.
        conv7, conv5, conv3 = self.convs
        weight = conv7.weight + F.pad(conv5.weight, (1, 1, 1, 1)) + F.pad(conv3.weight, (2, 2, 2, 2))
        bias = conv7.bias + conv5.bias + conv3.bias
        grid = grid + F.conv2d(
            grid.contiguous(memory_format=torch.channels_last), weight, bias, padding=3, groups=grid.shape[1]
        )
        return torch.cat([cls_token, grid.reshape(x.shape[1], -1).T])


class TransMIL(SlideModel):
    """``checkpoint_tokens``: in training, bags of at least this many tokens recompute each
    layer's activations during the backward instead of keeping them (torch.utils.checkpoint;
    the dropout masks are replayed): the peak memory of a step at 10^5 patches drops by about
    half for about a third more time. None: never."""

    def __init__(
        self,
        in_dim: int,
        n_classes: int,
        hidden: int = 512,
        heads: int = 8,
        dropout: float = 0.1,
        attention: str = "nystrom",
        checkpoint_tokens: int | None = 16384,
    ):
        super().__init__("transmil", in_dim, n_classes)
        if checkpoint_tokens is not None and checkpoint_tokens < 1:
            raise ValueError(f"transmil: checkpoint_tokens must be >= 1 or null, got {checkpoint_tokens}")
        self.checkpoint_tokens = checkpoint_tokens
        self.fc = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU())
        self.cls_token = nn.Parameter(torch.randn(1, hidden))
        self.layer1 = TransLayer(hidden, heads, dropout, attention)
        self.ppeg = PPEG(hidden)
        self.layer2 = TransLayer(hidden, heads, dropout, attention)
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
        recompute = (
            self.training
            and torch.is_grad_enabled()
            and self.checkpoint_tokens is not None
            and h.shape[0] >= self.checkpoint_tokens
        )
        for block, args in ((self.layer1, ()), (self.ppeg, (side,)), (self.layer2, ())):
            h = checkpoint(block, h, *args, use_reentrant=False) if recompute else block(h, *args)
        cls_out = self.norm(h)[0]
        return {"logits": self.head(cls_out), "embedding": cls_out}
