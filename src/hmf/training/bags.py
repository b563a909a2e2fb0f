"""Bags of patch features per slide, and the train / val / test parts of a fold."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

log = logging.getLogger(__name__)


@dataclass
class Bag:
    slide_id: str
    patient_id: str
    features: torch.Tensor          # (N, D) float32
    coords: torch.Tensor | None     # (N, 2) long
    node: int | None


class FeatureFileError(RuntimeError):
    """A slide's feature file is missing or does not fit the others."""


def load_bags(sheet: pd.DataFrame, features_dir: str | Path) -> dict[str, Bag]:
    """Load ``h5_files/<slide>.h5`` (or ``pt_files/<slide>.pt``) for every slide of ``sheet``.

    Slides with no patches are dropped with a warning (they are listed in the QC summary).
    """
    from hmf.features.io import read_features

    features_dir = Path(features_dir)
    bags: dict[str, Bag] = {}
    dims = set()
    for row in sheet.itertuples():
        h5 = features_dir / "h5_files" / f"{row.slide_id}.h5"
        path = h5 if h5.exists() else features_dir / "pt_files" / f"{row.slide_id}.pt"
        if not path.exists():
            raise FeatureFileError(f"slide {row.slide_id}: no feature file ({h5} or {path})")
        features, coords = read_features(path)
        if features.shape[0] == 0:
            log.warning("slide %s: no patches (no tissue found); left out of training and evaluation", row.slide_id)
            continue
        dims.add(int(features.shape[1]))
        node = None if pd.isna(row.node) else int(row.node)
        bags[row.slide_id] = Bag(
            slide_id=row.slide_id,
            patient_id=row.patient_id,
            features=features.float().contiguous(),
            coords=None if coords is None else torch.as_tensor(coords, dtype=torch.long),
            node=node,
        )
    if len(dims) > 1:
        raise FeatureFileError(f"{features_dir}: feature files with different dimensions {sorted(dims)}")
    return bags


def read_split(path: str | Path) -> dict[str, str]:
    """patient_id -> split ('train', 'val' or 'test') from a fold's split CSV."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if not {"patient_id", "split"} <= set(frame.columns):
        raise ValueError(f"{path}: expected columns patient_id, split")
    bad = set(frame["split"]) - {"train", "val", "test"}
    if bad:
        raise ValueError(f"{path}: unknown split value(s) {sorted(bad)}")
    return dict(zip(frame["patient_id"], frame["split"]))


def fold_parts(sheet: pd.DataFrame, split: dict[str, str], split_name: str = "split") -> dict[str, list[str]]:
    """Slide ids per part. Slides follow their patient, so no patient straddles two parts."""
    missing = sorted(set(sheet["patient_id"]) - set(split))
    if missing:
        raise ValueError(f"{split_name}: patient(s) not in the split file: {', '.join(missing[:10])}")
    parts: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for slide_id, patient_id in zip(sheet["slide_id"], sheet["patient_id"]):
        parts[split[patient_id]].append(slide_id)
    for name in parts:
        parts[name].sort()
    return parts


def class_weights(labels: list[int], n_classes: int) -> torch.Tensor:
    """Inverse-frequency weights from the training fold (mean 1 over present classes; a class
    absent from the fold gets weight 0 so it cannot dominate)."""
    counts = torch.bincount(torch.as_tensor(labels, dtype=torch.long), minlength=n_classes).float()
    weights = torch.where(counts > 0, counts.sum() / (n_classes * counts.clamp(min=1)), torch.zeros_like(counts))
    present = counts > 0
    return weights / weights[present].mean()
