"""Patient-level baselines: pooling of slide embeddings + linear head, and the CAMELYON17 pN rule
applied to predicted slide labels (no parameters)."""

from __future__ import annotations

import torch
from torch import nn

from hmf.models.hmf_patient import check_patient_inputs
from hmf.models.layers import GatedAttention
from hmf.models.losses import check_label, class_weight_of, weighted_cross_entropy
from hmf.tasks import CAMELYON17_PATIENT, CAMELYON17_SLIDE, pn_stage

POOLINGS = ("mean", "max", "sum", "min", "attn")


class PoolingPatient(nn.Module):
    """Mean / max / sum / min / gated-attention pooling over the slides, then a linear head.
    Node indices are accepted and ignored (the pooling is order-free)."""

    def __init__(self, emb_dim: int, n_classes: int, pool: str = "mean", attn_hidden: int = 256, dropout: float = 0.0):
        super().__init__()
        if pool not in POOLINGS:
            raise ValueError(f"patient pooling must be one of {POOLINGS}, got {pool!r}")
        if n_classes < 2:
            raise ValueError(f"{pool}pool: n_classes must be at least 2, got {n_classes}")
        self.pool, self.emb_dim, self.n_classes = pool, emb_dim, n_classes
        self.attention = GatedAttention(emb_dim, attn_hidden, 1) if pool == "attn" else None
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(emb_dim, n_classes)

    def forward(self, slide_embeddings: torch.Tensor, node_index: torch.Tensor | None = None) -> dict:
        check_patient_inputs(f"{self.pool}pool", slide_embeddings, node_index, self.emb_dim)
        x = slide_embeddings
        out = {}
        if self.pool == "mean":
            pooled = x.mean(0)
        elif self.pool == "max":
            pooled = x.max(0).values
        elif self.pool == "min":
            pooled = x.min(0).values
        elif self.pool == "sum":
            pooled = x.sum(0)
        else:
            weights = torch.softmax(self.attention(x)[:, 0], dim=0)
            pooled = weights @ x
            out["attention"] = weights
        out.update(logits=self.head(self.drop(pooled)), embedding=pooled)
        return out

    def loss(self, output: dict, label: torch.Tensor, context: dict | None = None) -> torch.Tensor:
        logits = output["logits"]
        label = check_label(label, self.n_classes).to(logits.device)
        return weighted_cross_entropy(logits, label, class_weight_of(context, label, self.n_classes, logits.device))


def pn_rule_predict(slide_label_names: list[str]) -> str:
    """pN stage from the (predicted) CAMELYON17 slide labels of one patient's lymph nodes."""
    if not slide_label_names:
        raise ValueError("pN rule: a patient needs at least one slide label")
    return pn_stage(list(slide_label_names))


def pn_rule_predict_index(slide_class_indices: list[int] | torch.Tensor) -> int:
    """Same rule on class indices in the order of ``hmf.tasks`` (slide -> patient classes)."""
    indices = [int(i) for i in torch.as_tensor(slide_class_indices).reshape(-1)]
    bad = [i for i in indices if not 0 <= i < len(CAMELYON17_SLIDE)]
    if bad:
        raise ValueError(f"pN rule: slide class indices {bad} outside 0..{len(CAMELYON17_SLIDE) - 1}")
    return CAMELYON17_PATIENT.index(pn_rule_predict([CAMELYON17_SLIDE[i] for i in indices]))
