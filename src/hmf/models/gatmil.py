"""GATMIL: graph attention over the patch-neighbour graph, then gated attention pooling.

The graph is a dense neighbour table (N, K) of patch indices (-1 = no neighbour), the patch
itself first. With at most 9 entries per row it needs no scatter operations, so it is
deterministic on the CPU and O(N) in memory.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hmf.models.base import SlideModel
from hmf.models.layers import GatedAttention

GRID_OFFSETS = [(0, 0), (-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]


def grid_step(coords: torch.Tensor) -> int:
    """Patch spacing: the smallest positive difference between distinct x or y coordinates."""
    steps = []
    for axis in (0, 1):
        values = torch.unique(coords[:, axis])
        if values.numel() > 1:
            steps.append(int(torch.diff(values).min()))
    return min(steps) if steps else 1


def grid_neighbours(coords: torch.Tensor) -> torch.Tensor:
    """8-neighbourhood on the patch grid (plus the patch itself): LongTensor (N, 9), -1 where absent."""
    coords = coords.long()
    step = grid_step(coords)
    cell = torch.div(coords - coords.min(0).values, step, rounding_mode="floor") + 1  # >= 1, room for -1
    width = int(cell[:, 1].max()) + 2
    keys = cell[:, 0] * width + cell[:, 1]
    sorted_keys, order = torch.sort(keys, stable=True)
    table = torch.full((coords.shape[0], len(GRID_OFFSETS)), -1, dtype=torch.long)
    for j, (dx, dy) in enumerate(GRID_OFFSETS):
        query = (cell[:, 0] + dx) * width + (cell[:, 1] + dy)
        pos = torch.searchsorted(sorted_keys, query).clamp(max=keys.numel() - 1)
        found = sorted_keys[pos] == query
        table[:, j] = torch.where(found, order[pos], torch.full_like(pos, -1))
    table[:, 0] = torch.arange(coords.shape[0])  # the patch itself, even with duplicate coordinates
    return table


def knn_neighbours(coords: torch.Tensor, k: int = 8, chunk: int = 2048) -> torch.Tensor:
    """k nearest patches by Euclidean distance (plus the patch itself), computed in row chunks."""
    points = coords.double()
    n = points.shape[0]
    k = min(k, n - 1)
    rows = []
    for start in range(0, n, chunk):
        dist = torch.cdist(points[start : start + chunk], points)
        dist[torch.arange(dist.shape[0]), torch.arange(start, start + dist.shape[0])] = -1.0  # self first
        rows.append(torch.topk(dist, k + 1, dim=1, largest=False, sorted=True).indices)
    return torch.cat(rows)


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
        out = torch.zeros_like(h)
        for j in range(neighbours.shape[1]):  # one neighbour slot at a time keeps memory at O(N)
            out = out + alpha[:, j].unsqueeze(-1) * h[index[:, j]]
        out = out.reshape(n, -1) if self.concat else out.mean(1)
        return out + self.bias


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

    def neighbours(self, coords: torch.Tensor) -> torch.Tensor:
        coords = coords.detach().cpu()
        table = grid_neighbours(coords) if self.graph == "grid" else knn_neighbours(coords, self.k)
        return table

    def forward(self, features, coords=None, text=None) -> dict:
        self.check_inputs(features, coords)
        table = self.neighbours(coords).to(features.device)
        h = self.embed(features)
        h = self.drop(F.elu(self.gat1(h, table)))
        h = F.elu(self.gat2(h, table))
        weights = torch.softmax(self.attention(h)[:, 0], dim=0)
        pooled = weights @ h
        return {"logits": self.head(pooled), "embedding": pooled, "attention": weights}
