"""GATMIL: graph attention over the patch-neighbour graph, then gated attention pooling.

The graph is a dense neighbour table (N, K) of patch indices (-1 = no neighbour), the patch
itself first, built with a KD-tree in O(N log N): the 8-neighbourhood on the patch grid
(neighbours within one diagonal patch step, which also holds across tissue fragments whose
grids are offset from each other) or the k nearest patches. With at most 9 entries per row it
needs no scatter operations, so it is deterministic on the CPU and O(N) in memory.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.neighbors import KDTree
from torch import nn
from torch.utils.checkpoint import checkpoint

from hmf.models.base import SlideModel
from hmf.models.layers import GatedAttention

NEIGHBOURS = 8  # the 8-neighbourhood of a grid patch
RADIUS_TOLERANCE = 0.05  # relative slack on the diagonal distance step * sqrt(2)


def patch_step(coords: torch.Tensor) -> float | None:
    """The patch step in the coordinates' units: the most common gap between horizontally or
    vertically adjacent patches (patches on one row or column, next to each other).

    Robust to tissue fragments whose grids are offset from each other (CLAM restarts its grid
    at each fragment's bounding box) and to holes in the tissue; None when no two patches share
    a row or a column.
    """
    points = coords.detach().cpu().double().numpy()
    gaps = []
    for axis in (0, 1):
        other = 1 - axis
        ordered = points[np.lexsort((points[:, axis], points[:, other]))]
        same_line = ordered[1:, other] == ordered[:-1, other]
        gap = np.diff(ordered[:, axis])[same_line]
        gaps.append(gap[gap > 0])
    gaps = np.concatenate(gaps)
    if gaps.size == 0:
        return None
    values, counts = np.unique(gaps, return_counts=True)
    return float(values[counts.argmax()])


def _neighbour_table(coords: torch.Tensor, k: int, max_distance: float | None) -> torch.Tensor:
    """Self first, then up to ``k`` nearest other patches (within ``max_distance`` when given),
    nearest first: LongTensor (N, k + 1), -1 where absent. A KD-tree: O(N log N) time, O(N k) memory."""
    n = coords.shape[0]
    table = torch.full((n, k + 1), -1, dtype=torch.long)
    table[:, 0] = torch.arange(n)  # the patch itself, even with duplicate coordinates
    if n == 1 or k == 0:
        return table
    points = coords.detach().cpu().double().numpy()
    distance, index = KDTree(points).query(points, k=min(k + 1, n))
    # Drop the patch itself from its row (wherever a duplicate coordinate put it), keep k others.
    is_self = index == np.arange(n)[:, None]
    is_self[~is_self.any(1), -1] = True  # no self in the row (duplicates): drop the farthest instead
    others = index[~is_self].reshape(n, -1)[:, :k]
    others_distance = distance[~is_self].reshape(n, -1)[:, :k]
    if max_distance is not None:
        others = np.where(others_distance <= max_distance, others, -1)
    table[:, 1 : others.shape[1] + 1] = torch.from_numpy(others)
    return table


def grid_neighbours(coords: torch.Tensor, step: float | None = None) -> torch.Tensor:
    """The 8-neighbourhood on the patch grid, plus the patch itself: LongTensor (N, 9), -1 where absent.

    Neighbours are the (at most 8) nearest patches within ``step * sqrt(2)`` (5 % slack), so
    grids of several tissue fragments, offset from each other by any amount, each keep their
    own 8-neighbourhood. ``step`` is the patch step in the coordinates' units (level-0 pixels
    for CLAM's coordinates); by default it is estimated with :func:`patch_step`.
    """
    step = patch_step(coords) if step is None else float(step)
    if step is None:  # no two patches on a row or column: no edges
        table = torch.full((coords.shape[0], NEIGHBOURS + 1), -1, dtype=torch.long)
        table[:, 0] = torch.arange(coords.shape[0])
        return table
    if step <= 0:
        raise ValueError(f"gatmil: the patch step must be positive, got {step}")
    return _neighbour_table(coords, NEIGHBOURS, step * math.sqrt(2) * (1 + RADIUS_TOLERANCE))


def knn_neighbours(coords: torch.Tensor, k: int = 8, max_distance: float | None = None) -> torch.Tensor:
    """The patch itself, then its k nearest patches by Euclidean distance (KD-tree, O(N log N)),
    optionally only those within ``max_distance``: LongTensor (N, k + 1), -1 where absent."""
    return _neighbour_table(coords, min(k, coords.shape[0] - 1), max_distance)


class GraphAttentionLayer(nn.Module):
    """GAT layer (Velickovic et al. 2018) over a neighbour table."""

    def __init__(self, in_dim: int, out_dim: int, heads: int, concat: bool = True, dropout: float = 0.0):
        super().__init__()
        self.heads, self.out_dim, self.concat, self.dropout = heads, out_dim, concat, dropout
        self.lin = nn.Linear(in_dim, heads * out_dim, bias=False)
        self.att_src = nn.Parameter(torch.empty(heads, out_dim))
        self.att_dst = nn.Parameter(torch.empty(heads, out_dim))
        self.bias = nn.Parameter(torch.zeros(heads * out_dim if concat else out_dim))
        nn.init.xavier_uniform_(self.att_src)
        nn.init.xavier_uniform_(self.att_dst)

    def forward(self, x: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        h = self.lin(x).view(n, self.heads, self.out_dim)
        score_dst = (h * self.att_dst).sum(-1)  # (N, H): the receiving patch
        score_src = (h * self.att_src).sum(-1)  # (N, H): the sending patch
        valid = neighbours >= 0
        index = neighbours.clamp(min=0)
        logits = F.leaky_relu(score_dst.unsqueeze(1) + score_src[index], 0.2)  # (N, K, H)
        logits = logits.masked_fill(~valid.unsqueeze(-1), float("-inf"))
        alpha = F.dropout(torch.softmax(logits, dim=1), self.dropout, self.training)
        if torch.is_grad_enabled() and (alpha.requires_grad or h.requires_grad):
            # The backward recomputes the K gathered copies of h instead of keeping them.
            out = checkpoint(_aggregate, alpha, h, index, use_reentrant=False)
        else:
            out = _aggregate(alpha, h, index)
        out = out.reshape(n, -1) if self.concat else out.mean(1)
        return out + self.bias


def _aggregate(alpha: torch.Tensor, h: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """sum_j alpha[:, j] * h[index[:, j]], one neighbour slot at a time (memory O(N))."""
    out = torch.zeros_like(h)
    for j in range(index.shape[1]):
        out = out + alpha[:, j].unsqueeze(-1) * h[index[:, j]]
    return out


class GATMIL(SlideModel):
    """Linear D->hidden + ReLU, two GAT layers (``heads`` heads concatenated, then one head) over
    the patch graph with ELU, gated attention pooling, linear head."""

    needs_coords = True

    def __init__(
        self,
        in_dim: int,
        n_classes: int,
        hidden: int = 256,
        heads: int = 4,
        attn_hidden: int = 128,
        dropout: float = 0.25,
        graph: str = "grid",
        k: int = 8,
    ):
        super().__init__("gatmil", in_dim, n_classes)
        if graph not in ("grid", "knn"):
            raise ValueError(f"gatmil: graph must be 'grid' (8-neighbourhood) or 'knn', got {graph!r}")
        if hidden % heads:
            raise ValueError(f"gatmil: hidden {hidden} is not divisible by {heads} heads")
        self.graph, self.k = graph, k
        self.embed = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.gat1 = GraphAttentionLayer(hidden, hidden // heads, heads, concat=True, dropout=dropout)
        self.gat2 = GraphAttentionLayer(hidden, hidden, 1, concat=False, dropout=dropout)
        self.drop = nn.Dropout(dropout)
        self.attention = GatedAttention(hidden, attn_hidden, 1, dropout)
        self.head = nn.Linear(hidden, n_classes)

    def neighbours(self, coords: torch.Tensor, patch_step: float | None = None) -> torch.Tensor:
        """The neighbour table of a bag; ``patch_step`` (grid graph) is the patch step in the
        coordinates' units, estimated from the coordinates when not given."""
        coords = coords.detach().cpu()
        if self.graph == "grid":
            return grid_neighbours(coords, patch_step)
        return knn_neighbours(coords, self.k)

    def forward(self, features, coords=None, text=None, patch_step: float | None = None) -> dict:
        self.check_inputs(features, coords)
        table = self.neighbours(coords, patch_step).to(features.device)
        h = self.embed(features)
        h = self.drop(F.elu(self.gat1(h, table)))
        h = F.elu(self.gat2(h, table))
        weights = torch.softmax(self.attention(h)[:, 0], dim=0)
        pooled = weights @ h
        return {"logits": self.head(pooled), "embedding": pooled, "attention": weights}
