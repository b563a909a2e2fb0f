"""Mean- and max-pooling MIL baselines: a shared instance embedding, pooled over the bag."""

from __future__ import annotations

from torch import nn

from hmf.models.base import SlideModel


class PoolingMIL(SlideModel):
    """Linear D->hidden + ReLU + dropout on every patch, mean or max over the bag, linear head."""

    def __init__(self, in_dim: int, n_classes: int, pool: str = "mean", hidden: int = 512, dropout: float = 0.25):
        if pool not in ("mean", "max"):
            raise ValueError(f"pooling must be 'mean' or 'max', got {pool!r}")
        super().__init__(f"{pool}pool", in_dim, n_classes)
        self.pool = pool
        self.embed = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, features, coords=None, text=None) -> dict:
        self.check_inputs(features)
        h = self.embed(features)
        pooled = h.mean(0) if self.pool == "mean" else h.max(0).values
        return {"logits": self.head(pooled), "embedding": pooled}
