"""The slide embeddings file (``embeddings.pt``): a slide model's embedding and class
probabilities of every slide, which the patient models read.

Keys: ``slide_ids`` (S), ``embeddings`` (S, E) and ``probs`` (S, C), or (M, S, E) and
(M, S, C) with one row block per model, ``classes`` (C), and where known ``model`` (the slide
model's name), ``source`` (per slide, for cross-fitted embeddings) and ``provenance`` (the
code version and the digest of the settings that made the file, :mod:`hmf.provenance`).

The blocks are the K fold models in the predict target's ``embeddings.pt``, and the J inner
models of one outer fold in a cross-fitted file (``embeddings_cross_fitted.pt``, and the
predict target's ``fold_<k>/embeddings_inner.pt``). In a cross-fitted training file a
training or validation slide has the same row in every block, from the inner model that held
its patient out (``source`` ``inner_<j>``); any other slide has inner model j's embedding in
block j (``source`` ``each_inner``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from hmf.atomic import save_torch
from hmf.provenance import stamp

REQUIRED_KEYS = ("slide_ids", "embeddings", "probs", "classes")


@dataclass(frozen=True)
class SlideEmbeddings:
    slide_ids: list[str]
    embeddings: torch.Tensor  # (S, E) or (K, S, E), float32
    probs: torch.Tensor  # (S, C) or (K, S, C), float32
    classes: list[str]
    model: str | None = None
    source: list[str] | None = None

    def row_of(self) -> dict[str, int]:
        """Slide id -> its row."""
        return {slide_id: i for i, slide_id in enumerate(self.slide_ids)}

    def blocks(self) -> torch.Tensor:
        """The embeddings as (M, S, E) float32: the file's row blocks, or its one block."""
        embeddings = self.embeddings.float()
        return embeddings if embeddings.dim() == 3 else embeddings[None]


def _float(values: torch.Tensor | np.ndarray) -> torch.Tensor:
    return (torch.from_numpy(values) if isinstance(values, np.ndarray) else values).float()


def write_slide_embeddings(
    path: str | os.PathLike,
    slide_ids,
    embeddings: torch.Tensor | np.ndarray,
    probs: torch.Tensor | np.ndarray,
    classes,
    model: str | None = None,
    source: list[str] | None = None,
    settings: Any = None,
) -> None:
    """Write an embeddings file atomically (``model`` and ``source`` only where given), with
    ``provenance``: :func:`hmf.provenance.stamp` of the ``settings`` that made it."""
    saved = {
        "slide_ids": list(slide_ids),
        "embeddings": _float(embeddings),
        "probs": _float(probs),
        "classes": list(classes),
    }
    if model is not None:
        saved["model"] = model
    if source is not None:
        saved["source"] = list(source)
    saved["provenance"] = stamp(settings)
    _check(saved, path)
    save_torch(path, saved)


def read_slide_embeddings(path: str | os.PathLike) -> SlideEmbeddings:
    """An embeddings file, checked: its keys, and one embedding and probability row per slide."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"slide embeddings file not found: {path}") from None
    except Exception as err:
        raise ValueError(f"slide embeddings file {path} cannot be loaded with torch.load: {err}") from None
    missing = [k for k in REQUIRED_KEYS if not isinstance(saved, dict) or k not in saved]
    if missing:
        raise ValueError(f"slide embeddings file {path} lacks key(s) {missing}")
    _check(saved, path)
    return SlideEmbeddings(
        slide_ids=list(saved["slide_ids"]),
        embeddings=saved["embeddings"],
        probs=saved["probs"],
        classes=list(saved["classes"]),
        model=saved.get("model"),
        source=None if saved.get("source") is None else list(saved["source"]),
    )


def _check(saved: dict, path) -> None:
    """One embedding and probability row per slide (per fold), one probability per class."""
    n, n_classes = len(saved["slide_ids"]), len(saved["classes"])
    embeddings, probs = saved["embeddings"], saved["probs"]
    shapes = f"{n} slide ids, {n_classes} classes, embeddings {tuple(embeddings.shape)}, probs {tuple(probs.shape)}"
    folds_agree = embeddings.dim() == 2 or embeddings.shape[0] == probs.shape[0]
    if (
        embeddings.dim() not in (2, 3)
        or embeddings.dim() != probs.dim()
        or not folds_agree
        or embeddings.shape[-2] != n
        or tuple(probs.shape[-2:]) != (n, n_classes)
    ):
        raise ValueError(
            f"slide embeddings file {path}: {shapes}; expected embeddings (slides, size) and probs "
            "(slides, classes), or both with a leading folds axis"
        )
    if saved.get("source") is not None and len(saved["source"]) != n:
        raise ValueError(f"slide embeddings file {path}: {len(saved['source'])} sources for {n} slides")
