"""HMF patient model: slides of a patient -> pN stage (or subtype) logits.

Slide embeddings (plus a learned bias per lymph-node position when node indices are known) go
through a 2-layer transformer encoder over the slides, attention pooling (emb->512 tanh
->256 tanh ->1, softmax over slides), a residual MLP (emb->256->emb), LayerNorm and a linear
head. Loss: CE (label smoothing) + focal with learned uncertainty weights.
"""

from __future__ import annotations

import torch
from torch import nn

from hmf.models.layers import TransformerEncoder
from hmf.models.losses import FocalCELoss


class HMFPatient(nn.Module):
    def __init__(
        self,
        emb_dim: int,
        n_classes: int,
        heads: int = 8,
        layers: int = 2,
        ff_dim: int = 1024,
        dropout: float = 0.1,
        attn_hidden: tuple[int, int] = (512, 256),
        mlp_hidden: int = 256,
        max_nodes: int = 16,
        label_smoothing: float = 0.1,
        focal_gamma: float = 2.0,
    ):
        super().__init__()
        if n_classes < 2:
            raise ValueError(f"hmf_patient: n_classes must be at least 2, got {n_classes}")
        if emb_dim % heads:
            raise ValueError(f"hmf_patient: emb_dim {emb_dim} is not divisible by {heads} heads")
        self.emb_dim, self.n_classes, self.max_nodes = emb_dim, n_classes, max_nodes
        self.node_bias = nn.Embedding(max_nodes, emb_dim)
        nn.init.normal_(self.node_bias.weight, std=0.02)
        self.encoder = TransformerEncoder(emb_dim, heads, ff_dim, layers, dropout)
        a1, a2 = attn_hidden
        self.attention = nn.Sequential(
            nn.Linear(emb_dim, a1), nn.Tanh(), nn.Linear(a1, a2), nn.Tanh(), nn.Linear(a2, 1)
        )
        self.mlp = nn.Sequential(
            nn.Linear(emb_dim, mlp_hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp_hidden, emb_dim)
        )
        self.norm = nn.LayerNorm(emb_dim)
        self.head = nn.Linear(emb_dim, n_classes)
        self.classification_loss = FocalCELoss(n_classes, label_smoothing, focal_gamma)

    def forward(self, slide_embeddings: torch.Tensor, node_index: torch.Tensor | None = None) -> dict:
        check_patient_inputs("hmf_patient", slide_embeddings, node_index, self.emb_dim)
        x = slide_embeddings
        if node_index is not None:
            node_index = node_index.to(x.device).long()
            if int(node_index.min()) < 0 or int(node_index.max()) >= self.max_nodes:
                raise ValueError(
                    f"hmf_patient: node indices {node_index.tolist()} outside [0, {self.max_nodes - 1}] (max_nodes)"
                )
            x = x + self.node_bias(node_index)
        x = self.encoder(x)
        weights = torch.softmax(self.attention(x)[:, 0], dim=0)
        pooled = weights @ x
        pooled = self.norm(pooled + self.mlp(pooled))
        return {"logits": self.head(pooled), "embedding": pooled, "attention": weights}

    def loss(self, output: dict, label: torch.Tensor, context: dict | None = None) -> torch.Tensor:
        return self.classification_loss(output["logits"], label, context)


def check_patient_inputs(name: str, slide_embeddings: torch.Tensor, node_index, emb_dim: int) -> None:
    if slide_embeddings.dim() != 2 or slide_embeddings.shape[0] < 1:
        raise ValueError(f"{name}: slide embeddings must be (S, E) with S >= 1, got {tuple(slide_embeddings.shape)}")
    if slide_embeddings.shape[1] != emb_dim:
        raise ValueError(f"{name}: slide embeddings have E={slide_embeddings.shape[1]}, the model expects {emb_dim}")
    if node_index is not None and node_index.shape != slide_embeddings.shape[:1]:
        raise ValueError(
            f"{name}: node_index has shape {tuple(node_index.shape)}, expected ({slide_embeddings.shape[0]},)"
        )
