"""HMF slide model: attention-gated patch filter, bi-cross attention with the class-description
bank, transformer classifier (docs: design/hmf-model.md).

The model never sees a label: the text input is always the full description bank, in the bank's
order, and ``prompt_classes`` (the class of each description) enters only the loss.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hmf.models.base import SlideModel
from hmf.models.layers import GatedAttention, MultiHeadAttention, TransformerEncoder
from hmf.models.losses import (
    FocalCELoss,
    check_label,
    class_weight_of,
    prompt_contrastive_loss,
    weighted_cross_entropy,
)

SCORE_CHUNK = 8192  # patches scored at once when the filter selects without gradients


class PatchFilter(nn.Module):
    """Gated-attention scorer (Linear D->512, ReLU, dropout; gated 512->256; 256->1) with its own
    attention-MIL head, so that it learns from the bag label inside the training fold."""

    def __init__(self, in_dim: int, n_classes: int, hidden: int, attn_hidden: int, dropout: float):
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.attention = GatedAttention(hidden, attn_hidden, 1)
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention over the bag (N,) and the auxiliary bag logits (C,)."""
        h = self.embed(features)
        weights = torch.softmax(self.attention(h)[:, 0], dim=0)
        return weights, self.head(weights @ h)

    @torch.no_grad()
    def scores(self, features: torch.Tensor) -> torch.Tensor:
        """Eval-mode attention over the bag (N,), scored in chunks to bound memory."""
        was_training = self.training
        self.eval()
        try:
            raw = torch.cat([self.attention(self.embed(chunk))[:, 0] for chunk in torch.split(features, SCORE_CHUNK)])
        finally:
            self.train(was_training)
        return torch.softmax(raw, dim=0)


def kept_count(n: int, ratio: float, max_kept: int | None) -> int:
    """ceil(ratio * n) patches, at least one, at most ``max_kept``."""
    k = max(1, math.ceil(ratio * n))
    return min(k, max_kept) if max_kept else k


class BiCrossAttention(nn.Module):
    """Text attends to image (-> T'), then image attends to T' (-> I'); residual + LayerNorm each."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.text_to_image = MultiHeadAttention(dim, heads, dropout)
        self.image_to_text = MultiHeadAttention(dim, heads, dropout)
        self.norm_text = nn.LayerNorm(dim)
        self.norm_image = nn.LayerNorm(dim)

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        attended, weights = self.text_to_image.forward_with_weights(text, image)  # weights (P, K)
        text_out = self.norm_text(text + attended)
        image_out = self.norm_image(image + self.image_to_text(image, text_out))
        return image_out, text_out, weights


class HMFSlide(SlideModel):
    requires_text = True

    def __init__(
        self,
        in_dim: int,
        n_classes: int,
        text_dim: int,
        dim: int = 512,
        embed_dim: int = 1024,
        filter_ratio: float = 0.5,
        max_kept: int | None = None,
        filter_hidden: int = 512,
        filter_attn_hidden: int = 256,
        filter_dropout: float = 0.25,
        filter_loss_weight: float = 1.0,
        bca_heads: int = 8,
        bca_dropout: float = 0.25,
        encoder_layers: int = 2,
        encoder_heads: int = 4,
        encoder_ff: int = 1024,
        encoder_dropout: float = 0.1,
        temperature: float = 0.07,
        label_smoothing: float = 0.1,
        focal_gamma: float = 2.0,
    ):
        super().__init__("hmf", in_dim, n_classes)
        if not text_dim:
            raise ValueError("hmf: text_dim (width of the text embeddings) is required")
        if not 0.0 < filter_ratio <= 1.0:
            raise ValueError(f"hmf: filter_ratio must be in (0, 1], got {filter_ratio}")
        if max_kept is not None and max_kept < 1:
            raise ValueError(f"hmf: max_kept must be >= 1 or null, got {max_kept}")
        self.text_dim, self.filter_ratio, self.max_kept = text_dim, filter_ratio, max_kept
        self.filter_loss_weight, self.temperature = filter_loss_weight, temperature
        self.filter = PatchFilter(in_dim, n_classes, filter_hidden, filter_attn_hidden, filter_dropout)
        self.image_in = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, dim))
        self.text_in = nn.Linear(text_dim, dim)
        self.bca = BiCrossAttention(dim, bca_heads, bca_dropout)
        self.image_proj = nn.Linear(dim, dim)
        self.text_proj = nn.Linear(dim, dim)
        self.encoder = TransformerEncoder(dim, encoder_heads, encoder_ff, encoder_layers, encoder_dropout)
        self.embedding = nn.Sequential(nn.Linear(dim, embed_dim), nn.GELU(), nn.LayerNorm(embed_dim))
        self.head = nn.Linear(embed_dim, n_classes)
        self.classification_loss = FocalCELoss(n_classes, label_smoothing, focal_gamma)

    def forward(self, features, coords=None, text=None) -> dict:
        self.check_inputs(features)
        if text is None:
            raise ValueError("hmf: the text embedding bank (P, E) is required")
        if text.dim() != 2 or text.shape[1] != self.text_dim or text.shape[0] < 1:
            raise ValueError(f"hmf: text bank has shape {tuple(text.shape)}, expected (P, {self.text_dim}) with P >= 1")
        n = features.shape[0]

        # 1. Filter: selection by the scorer in eval mode; in training it also learns via its head.
        # The selection is a discrete decision: scored in fp32 even under bf16 autocast, so that
        # the precision does not change which patches are kept.
        with torch.autocast(features.device.type, enabled=False):
            selection_scores = self.filter.scores(features.float())
        kept = torch.topk(selection_scores, kept_count(n, self.filter_ratio, self.max_kept), sorted=True).indices
        out: dict[str, torch.Tensor] = {"kept_index": kept}
        if self.training:
            filter_attention, out["filter_logits"] = self.filter(features)
        else:
            filter_attention = selection_scores
        out["attention"] = filter_attention

        # 2-4. Image and text tokens, bi-cross attention.
        image = self.image_in(features[kept])
        text_tokens = self.text_in(text)
        image_cross, text_cross, text_to_image = self.bca(image, text_tokens)
        bca = torch.zeros(n, device=features.device, dtype=text_to_image.dtype)
        out["bca_attention"] = bca.index_copy(0, kept, text_to_image.sum(0).detach())

        # 5. Normalised projections for the contrastive loss: slide vector = mean of I', projected.
        out["slide_vector"] = F.normalize(self.image_proj(image_cross.mean(0)), dim=0)
        out["text_vectors"] = F.normalize(self.text_proj(text_cross), dim=-1)

        # 6. Classifier.
        encoded = self.encoder(image_cross).mean(0)
        embedding = self.embedding(encoded)
        out["embedding"] = embedding
        out["logits"] = self.head(embedding)
        return out

    def loss(self, output: dict, label: torch.Tensor, context: dict | None = None) -> torch.Tensor:
        logits = output["logits"]
        label = check_label(label, self.n_classes).to(logits.device)
        total = self.classification_loss(logits, label, context)
        prompt_classes = (context or {}).get("prompt_classes")
        if prompt_classes is None:
            raise ValueError("hmf: context['prompt_classes'] (class index of each text row) is required for the loss")
        prompt_classes = torch.as_tensor(prompt_classes, device=logits.device)
        if prompt_classes.shape != output["text_vectors"].shape[:1]:
            raise ValueError(
                f"hmf: prompt_classes has shape {tuple(prompt_classes.shape)}, "
                f"the text bank has {output['text_vectors'].shape[0]} rows"
            )
        total = total + prompt_contrastive_loss(
            output["slide_vector"], output["text_vectors"], prompt_classes == label, self.temperature
        )
        if "filter_logits" in output and self.filter_loss_weight > 0:
            weight = class_weight_of(context, label, self.n_classes, logits.device)
            total = total + self.filter_loss_weight * weighted_cross_entropy(output["filter_logits"], label, weight)
        return total
