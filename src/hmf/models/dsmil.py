"""DSMIL: dual-stream MIL (Li et al., CVPR 2021), multi-class.

Stream 1 classifies every patch and max-pools the patch logits. Stream 2 picks, per class, the
critical patch (highest patch score), attends from every patch to it by the distance of their
query embeddings, pools per-class bag vectors B (C, D) and scores them with a 1-D convolution
spanning the feature axis. Loss = 1/2 CE(bag) + 1/2 CE(max-instance).
"""

from __future__ import annotations

import torch
from torch import nn

from hmf.models.base import SlideModel
from hmf.models.losses import check_label, class_weight_of, weighted_cross_entropy


class DSMIL(SlideModel):
    def __init__(self, in_dim: int, n_classes: int, q_dim: int = 128, passing_v: bool = False, dropout_v: float = 0.0):
        super().__init__("dsmil", in_dim, n_classes)
        self.instance_classifier = nn.Linear(in_dim, n_classes)
        self.q = nn.Sequential(nn.Linear(in_dim, q_dim), nn.ReLU(), nn.Linear(q_dim, q_dim), nn.Tanh())
        self.v = (
            nn.Sequential(nn.Dropout(dropout_v), nn.Linear(in_dim, in_dim), nn.ReLU()) if passing_v else nn.Identity()
        )
        self.fcc = nn.Conv1d(n_classes, n_classes, kernel_size=in_dim)

    def forward(self, features, coords=None, text=None) -> dict:
        self.check_inputs(features)
        instance_logits = self.instance_classifier(features)  # (N, C)
        max_logits = instance_logits.max(0).values  # (C,)
        values = self.v(features)
        queries = self.q(features)  # (N, q)
        critical = instance_logits.argmax(0)  # (C,) index of the critical patch per class
        q_critical = self.q(features[critical])  # (C, q)
        attention = torch.softmax(queries @ q_critical.T / queries.shape[1] ** 0.5, dim=0)  # (N, C)
        bag_vectors = attention.T @ values  # (C, D)
        bag_logits = self.fcc(bag_vectors.unsqueeze(0)).reshape(-1)  # (C,)
        # Prediction = mean of the two streams' class probabilities (as in the DSMIL evaluation),
        # kept as log-probabilities so that softmax(logits) gives those probabilities.
        logits = torch.log(0.5 * torch.softmax(bag_logits, 0) + 0.5 * torch.softmax(max_logits, 0))
        predicted = int(logits.argmax())
        return {
            "logits": logits,
            "embedding": bag_vectors.reshape(-1),
            "attention": attention[:, predicted],
            "bag_logits": bag_logits,
            "max_instance_logits": max_logits,
        }

    def loss(self, output: dict, label: torch.Tensor, context: dict | None = None) -> torch.Tensor:
        bag = output["bag_logits"]
        label = check_label(label, self.n_classes).to(bag.device)
        weight = class_weight_of(context, label, self.n_classes, bag.device)
        return 0.5 * weighted_cross_entropy(bag, label, weight) + 0.5 * weighted_cross_entropy(
            output["max_instance_logits"], label, weight
        )
