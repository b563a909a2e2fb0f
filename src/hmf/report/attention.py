"""Attention scores of a trained slide model over one slide, from its checkpoint.

The model runs once in eval mode on the slide's patch features (standardised as in training)
and, for models that read text, the text bank; the result is its patch attention (HMF: the
filter's attention over all patches), for HMF the bi-cross attention the text tokens give each
kept patch, and the class probabilities.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from hmf.training.checkpoints import SlideCheckpoint, load_slide_model


class HeatmapError(ValueError):
    """Inputs of a heatmap that do not fit together; the message names the file and the cause."""


@dataclass
class SlideAttention:
    """One forward pass of a slide model over a slide: per-patch scores and the prediction."""

    attention: np.ndarray  # (N,) patch attention (HMF: the filter's)
    bca_attention: np.ndarray | None  # (N,) text-to-patch attention, 0 for dropped patches
    probs: np.ndarray  # (C,)
    classes: list[str]

    @property
    def predicted(self) -> str:
        return self.classes[int(np.argmax(self.probs))]

    @property
    def probability(self) -> float:
        return float(np.max(self.probs))


@torch.inference_mode()
def slide_attention(
    model: torch.nn.Module,
    classes: list[str],
    features: torch.Tensor,
    coords: np.ndarray | None = None,
    text: torch.Tensor | None = None,
) -> SlideAttention:
    """Run ``model`` (eval mode) on one slide and return its attention and prediction."""
    model.eval()
    inputs = {"features": features.float()}
    if getattr(model, "needs_coords", False):
        inputs["coords"] = torch.as_tensor(coords, dtype=torch.long)
    if getattr(model, "requires_text", False):
        inputs["text"] = text
    out = model(**inputs)
    if "attention" not in out:
        raise HeatmapError(f"model {type(model).__name__} returns no patch attention; no heatmap can be drawn")
    bca = out.get("bca_attention")
    return SlideAttention(
        attention=out["attention"].float().cpu().numpy().reshape(-1),
        bca_attention=None if bca is None else bca.float().cpu().numpy().reshape(-1),
        probs=torch.softmax(out["logits"].float(), dim=-1).cpu().numpy().reshape(-1),
        classes=list(classes),
    )


@dataclass
class SlideScorer:
    """A checkpoint's slide model with what it reads besides the features (the text bank)."""

    model: torch.nn.Module
    checkpoint: SlideCheckpoint
    text: torch.Tensor | None

    def check_features(self, features: torch.Tensor, features_path: str | os.PathLike, checkpoint_path) -> None:
        if features.shape[0] and features.shape[1] != int(self.checkpoint.in_dim):
            raise HeatmapError(
                f"feature file {features_path} has D={features.shape[1]}, checkpoint {checkpoint_path} "
                f"expects {self.checkpoint.in_dim}"
            )

    def scores(self, features: torch.Tensor, coords: np.ndarray | None) -> SlideAttention:
        """The attention and prediction of the model on one slide's (raw) features."""
        features = self.checkpoint.standardise(features)  # the scale the model was trained on
        return slide_attention(self.model, list(self.checkpoint.classes), features, coords, self.text)


def load_scorer(checkpoint: str | os.PathLike, text_bank: str | os.PathLike | None = None) -> SlideScorer:
    """The slide model of ``checkpoint`` with the text bank it needs (an error if it needs one
    and none is given)."""
    from hmf.training.slide import load_text_inputs

    model, ckpt = load_slide_model(checkpoint)
    text = None
    if getattr(model, "requires_text", False):
        if text_bank is None:
            raise HeatmapError(f"checkpoint {checkpoint}: model {ckpt.model!r} needs the text bank")
        text, _ = load_text_inputs(text_bank, tuple(ckpt.classes))
    return SlideScorer(model, ckpt, text)
