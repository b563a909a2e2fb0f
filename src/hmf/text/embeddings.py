"""Text embeddings of a label set's descriptions: ``R/text/<labelset>/<encoder>.pt``.

The file is a dict saved with ``torch.save``: ``prompts`` (list[str]), ``classes`` (the class
of each prompt), ``class_names`` (the label set's classes in order), ``embeddings`` float32
(P, E), ``encoder`` (str), ``dim`` (int), plus ``labelset``. Prompts are grouped by class in
class order, so the bank is the same, in the same order, for every slide.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from hmf.atomic import save_torch
from hmf.text.encoders import TextEncoder, build_text_encoder
from hmf.text.prompts import read_prompts
from hmf.text.settings import TextSettings

log = logging.getLogger(__name__)

KEYS = ("prompts", "classes", "class_names", "embeddings", "encoder", "dim")


def flatten_prompts(prompts: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(texts, class of each text), class by class in the file's class order."""
    texts, owners = [], []
    for name in prompts["classes"]:
        for text in prompts["descriptions"][name]:
            texts.append(text)
            owners.append(name)
    return texts, owners


def embed_prompts(prompts: dict[str, Any], encoder: TextEncoder) -> dict[str, Any]:
    """The text-bank dict for checked prompts (``read_prompts`` output) and a loaded encoder."""
    texts, owners = flatten_prompts(prompts)
    emb = encoder.encode(texts).float().contiguous()
    if emb.shape != (len(texts), encoder.dim):
        raise RuntimeError(
            f"encoder {encoder.name!r} returned shape {tuple(emb.shape)}, expected {(len(texts), encoder.dim)}"
        )
    if not torch.isfinite(emb).all():
        raise RuntimeError(f"encoder {encoder.name!r} produced non-finite embeddings")
    return {
        "prompts": texts,
        "classes": owners,
        "class_names": list(prompts["classes"]),
        "embeddings": emb,
        "encoder": encoder.name,
        "dim": int(encoder.dim),
        "labelset": prompts.get("labelset"),
    }


def encode_prompts(
    prompts_path: str | Path, output: str | Path, encoder_name: str, text: TextSettings
) -> dict[str, Any]:
    """Embed the descriptions in ``prompts_path`` with encoder ``encoder_name``; write ``output`` atomically."""
    prompts = read_prompts(prompts_path)
    encoder = build_text_encoder(encoder_name, text)
    bank = embed_prompts(prompts, encoder)
    save_torch(output, bank)
    log.info("wrote %s: %d prompts x %d dims (%s)", output, len(bank["prompts"]), bank["dim"], encoder_name)
    return bank


def load_text_bank(path: str | Path) -> dict[str, Any]:
    """Load a text-bank file (``weights_only=True``) and check its keys and shapes."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"text embeddings {path} not found (rule encode_text writes it)")
    bank = torch.load(path, map_location="cpu", weights_only=True)
    missing = [k for k in KEYS if k not in bank]
    if missing:
        raise ValueError(f"text embeddings {path}: missing keys {missing}")
    emb = bank["embeddings"]
    if (
        emb.ndim != 2
        or emb.shape[0] != len(bank["prompts"])
        or len(bank["classes"]) != len(bank["prompts"])
        or emb.shape[1] != bank["dim"]
    ):
        raise ValueError(
            f"text embeddings {path}: embeddings {tuple(emb.shape)} do not match {len(bank['prompts'])} prompts "
            f"x dim {bank['dim']}"
        )
    unknown = set(bank["classes"]) - set(bank["class_names"])
    if unknown:
        raise ValueError(f"text embeddings {path}: prompt classes {sorted(unknown)} not in class_names")
    return bank


def prompt_class_index(bank: dict[str, Any]) -> torch.Tensor:
    """(P,) long: index into ``class_names`` of each prompt's class (the HMF contrastive positives)."""
    index = {name: i for i, name in enumerate(bank["class_names"])}
    return torch.tensor([index[c] for c in bank["classes"]], dtype=torch.long)
