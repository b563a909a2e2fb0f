"""Patient-level baselines: pooling of slide embeddings + linear head, and the untrained
aggregators of slide predictions (the CAMELYON17 pN rule on predicted slide labels, the mean of
slide probabilities)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from hmf.models.hmf_patient import check_patient_inputs
from hmf.models.layers import GatedAttention
from hmf.models.losses import check_label, class_weight_of, weighted_cross_entropy
from hmf.models.names import model_info, task_refusal
from hmf.tasks import Task, pn_stage

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


def aggregate_slides(method: str, task: Task, slide_probs: np.ndarray) -> np.ndarray:
    """One patient's probability row (``task.classes("patient")`` order) by the untrained
    patient model ``method`` from its slides' probabilities (rows, ``task.classes("slide")``
    order): the pN stage of the predicted slide labels, one-hot, or the mean probabilities,
    as ``hmf.models.names`` says ``method`` aggregates. ValueError naming the model when the
    task does not allow it or it is a trained model."""
    info = model_info("patient", method)
    refusal = task_refusal("patient", method, task)
    if refusal:
        raise ValueError(refusal)
    slide_probs = np.asarray(slide_probs)
    slide_classes, patient_classes = list(task.classes("slide")), list(task.classes("patient"))
    if slide_probs.ndim != 2 or slide_probs.shape[1] != len(slide_classes) or not len(slide_probs):
        raise ValueError(
            f"{method}: a patient's slide probabilities must have shape (n_slides >= 1, {len(slide_classes)}), "
            f"got {slide_probs.shape}"
        )
    if info.aggregates == "labels":
        stage = pn_stage([slide_classes[i] for i in slide_probs.argmax(axis=1)])
        return np.eye(len(patient_classes))[patient_classes.index(stage)]
    if info.aggregates == "probabilities":
        return slide_probs.mean(axis=0)
    raise ValueError(f"{method} is a trained patient model: it does not aggregate slide predictions")
