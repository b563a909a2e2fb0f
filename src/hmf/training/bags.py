"""Bags of patch features per slide, read from disk when needed, and the parts of a fold."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from hmf.features.io import FeatureFileError, FeatureFileInfo, check_uniform_precision, describe, read_features
from hmf.training import standardise

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SlideRecord:
    """A slide as known before its features are read: ids, node and its feature file's header."""

    slide_id: str
    patient_id: str
    node: int | None
    file: FeatureFileInfo

    @property
    def n_patches(self) -> int:
        return self.file.n_patches


def scan_slides(sheet: pd.DataFrame, feature_files: Mapping[str, str | Path]) -> dict[str, SlideRecord]:
    """Every slide of ``sheet`` with its feature file's header (shape only, no features read).

    ``feature_files`` maps slide id to its ``.h5`` or ``.pt`` file (the job's inputs). Slides
    with no patches are dropped with a warning (they are listed in the QC summary). Files of
    different feature sizes are refused, naming a slide of each size.
    """
    records: dict[str, SlideRecord] = {}
    dims: dict[int, str] = {}
    for row in sheet.itertuples():
        if row.slide_id not in feature_files:
            raise FeatureFileError(f"slide {row.slide_id}: no feature file among the job's inputs")
        info = describe(feature_files[row.slide_id])
        if info.n_patches == 0:
            log.warning("slide %s: no patches (no tissue found); left out of training and evaluation", row.slide_id)
            continue
        dims.setdefault(info.dim, row.slide_id)
        node = None if pd.isna(row.node) or row.node == "" else int(row.node)
        records[row.slide_id] = SlideRecord(row.slide_id, row.patient_id, node, info)
    if len(dims) > 1:
        sizes = ", ".join(f"{dim} (slide {slide})" for dim, slide in sorted(dims.items()))
        raise FeatureFileError(f"feature files with different feature sizes: {sizes}")
    check_uniform_precision(r.file.path for r in records.values())  # no fp32 / bf16 mixture
    return records


class BagStore:
    """Each slide's features read from its file when a step needs them.

    Memory is bounded by the largest bag plus the cache, never by the number of slides: a bag
    is read (and standardised in place) on request, and up to ``cache_mb`` of the most recently
    used bags are kept, so small cohorts stay in memory and large ones stream from disk.
    """

    def __init__(self, records: Mapping[str, SlideRecord], cache_mb: float = 0.0):
        self.records = dict(records)
        self.cache_bytes = int(cache_mb * 2**20)
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None
        self._cache: OrderedDict[str, tuple[torch.Tensor, torch.Tensor | None]] = OrderedDict()
        self._cached_bytes = 0
        self.reads = 0  # bags read from disk (for tests and logs)

    @property
    def dim(self) -> int:
        return next(iter(self.records.values())).file.dim

    @property
    def largest_bag(self) -> int:
        return max((r.n_patches for r in self.records.values()), default=0)

    def raw(self, slide_id: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The file's features (float32) and coords, not standardised, not cached."""
        record = self.records[slide_id]
        features, coords = read_features(record.file.path)
        self.reads += 1
        if features.shape != (record.file.n_patches, record.file.dim):
            raise FeatureFileError(
                f"slide {slide_id}: {record.file.path} changed while the job ran "
                f"(shape {tuple(features.shape)}, was {(record.file.n_patches, record.file.dim)})"
            )
        return features, None if coords is None else torch.as_tensor(coords, dtype=torch.long)

    def standardise_with(self, mean: torch.Tensor | None, std: torch.Tensor | None) -> None:
        """Standardise every bag read from now on (statistics of the training fold)."""
        self.mean, self.std = mean, std
        self._cache.clear()
        self._cached_bytes = 0

    def get(self, slide_id: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Standardised features (N, D) and coords (N, 2) or None."""
        if slide_id in self._cache:
            self._cache.move_to_end(slide_id)
            return self._cache[slide_id]
        features, coords = self.raw(slide_id)
        if self.mean is not None:
            features = standardise.apply_(features, self.mean, self.std)
        size = features.numel() * features.element_size()
        if size <= self.cache_bytes:
            while self._cached_bytes + size > self.cache_bytes:
                _, (old, _) = self._cache.popitem(last=False)
                self._cached_bytes -= old.numel() * old.element_size()
            self._cache[slide_id] = (features, coords)
            self._cached_bytes += size
        return features, coords

    def fit_standardisation(self, slide_ids: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-dimension mean and std over the patches of ``slide_ids``, one bag at a time."""
        moments = standardise.RunningMoments()
        for slide_id in slide_ids:
            moments.update(self.raw(slide_id)[0])
        return moments.result()

    def loader(self, slide_id: str, needs_coords: bool, text: torch.Tensor | None) -> Callable[[], dict]:
        """A function giving the model's keyword inputs for one slide, read when called."""

        def load() -> dict:
            features, coords = self.get(slide_id)
            inputs = {"features": features}
            if needs_coords:
                if coords is None:
                    raise FeatureFileError(
                        f"slide {slide_id}: {self.records[slide_id].file.path} has no patch coordinates, "
                        "which this model needs"
                    )
                inputs["coords"] = coords
            if text is not None:
                inputs["text"] = text
            return inputs

        return load


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
