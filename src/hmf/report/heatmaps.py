"""Attention heatmaps of a trained slide model over its slide (the paper's compare figure).

For one slide and one fold's checkpoint: the model's patch attention and, for HMF, the
bi-cross attention (hmf.report.attention) are drawn as semi-transparent colour maps over the
patch squares of a thumbnail, beside the plain thumbnail; a second figure shows the top-k
attended patches read from the slide (hmf.report.heatmap_figures). Patches the filter dropped
carry no bi-cross attention and stay uncoloured.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from hmf.report.attention import HeatmapError, load_scorer
from hmf.report.heatmap_figures import draw_heatmap, draw_montage, overlay
from hmf.settings import section

log = logging.getLogger(__name__)


# What a caller leaves out is the schema's default (report.top_k, thumbnail_px, alpha).
_REPORT_DEFAULTS = section("report")


@dataclass
class HeatmapSummary:
    """What was drawn, for logs and tests."""

    slide_id: str
    n_patches: int
    predicted: str | None
    probability: float | None
    top_index: list[int] = field(default_factory=list)
    top_scores: list[float] = field(default_factory=list)
    thumbnail_shape: tuple[int, int] = (0, 0)  # (h, w) of the slide thumbnail drawn on
    heatmap_size: tuple[int, int] = (0, 0)
    montage_size: tuple[int, int] = (0, 0)


def patch_extent(attrs: dict, level_downsamples: list[tuple[float, float]]) -> tuple[int, int]:
    """Level-0 size (w, h) of a patch from the coordinate file's attributes (ours or CLAM's)."""
    if "patch_size_level0" in attrs:
        w, h = np.asarray(attrs["patch_size_level0"]).reshape(-1)[:2]
        return int(w), int(h)
    size, level = int(attrs["patch_size"]), int(attrs["patch_level"])
    if "downsample" in attrs:
        dx, dy = (list(np.asarray(attrs["downsample"], dtype=float).reshape(-1)) * 2)[:2]
    elif level < len(level_downsamples):
        dx, dy = level_downsamples[level]
    else:
        raise HeatmapError(f"coordinates at patch_level {level}, but the slide has {len(level_downsamples)} level(s)")
    return int(round(size * dx)), int(round(size * dy))


def _read_inputs(features_path, coords_path) -> tuple[torch.Tensor, np.ndarray, dict]:
    from hmf.features.io import read_features
    from hmf.wsi.patching import read_coords

    features, feature_coords = read_features(features_path)
    try:
        coords, attrs = read_coords(coords_path)
    except (OSError, KeyError) as err:
        raise HeatmapError(str(err).strip("'\"")) from None
    if feature_coords is not None:
        if len(feature_coords) != len(coords) or not np.array_equal(feature_coords, coords):
            raise HeatmapError(
                f"feature file {features_path} has {len(feature_coords)} patch coordinates that differ from the "
                f"{len(coords)} of {coords_path}; re-extract the features of this slide"
            )
    elif len(coords) != features.shape[0]:
        raise HeatmapError(
            f"{features_path} has {features.shape[0]} feature rows but {coords_path} has {len(coords)} coords"
        )
    return features, coords, attrs


def render_slide_heatmap(
    checkpoint: str | os.PathLike,
    features_path: str | os.PathLike,
    coords_path: str | os.PathLike,
    slide_path: str | os.PathLike,
    slide_id: str,
    out_heatmap: str | os.PathLike,
    out_top: str | os.PathLike,
    text_bank: str | os.PathLike | None = None,
    true_label: str | None = None,
    context: str = "",
    top_k: int = _REPORT_DEFAULTS["top_k"],
    thumbnail_px: int = _REPORT_DEFAULTS["thumbnail_px"],
    alpha: float = _REPORT_DEFAULTS["alpha"],
    mpp: float | None = None,
) -> HeatmapSummary:
    """Draw the attention heatmaps and the top-k montage of one slide under one checkpoint.

    ``context`` (e.g. ``"fold 0, test slide"``) goes into the titles after the model name.
    """
    from hmf.wsi.slide import open_slide

    scorer = load_scorer(checkpoint, text_bank)
    features, coords, attrs = _read_inputs(features_path, coords_path)
    scorer.check_features(features, features_path, checkpoint)

    slide = open_slide(slide_path, name=slide_id, mpp=mpp)
    try:
        w0, h0 = slide.dimensions
        thumbnail, downsample = slide.read_downsampled(max(w0, h0) / max(int(thumbnail_px), 16))
        extent = patch_extent(attrs, slide.level_downsamples)
        summary = HeatmapSummary(
            slide_id=slide_id,
            n_patches=int(features.shape[0]),
            predicted=None,
            probability=None,
            thumbnail_shape=tuple(int(v) for v in thumbnail.shape[:2]),
        )
        truth = f"true: {true_label}" if true_label else "true: unknown"
        head = f"{slide_id} ({scorer.checkpoint.model}{', ' + context if context else ''})"

        if features.shape[0] == 0:
            log.warning("slide %s: no patches; drawing the thumbnail only", slide_id)
            title = f"{head}\n{truth}; no patches, no prediction"
            summary.heatmap_size = draw_heatmap(
                out_heatmap, thumbnail, [("Patch attention", None)], title, note="no tissue patches on this slide"
            )
            summary.montage_size = draw_montage(out_top, [], [], f"{slide_id}: no patches")
            return summary

        result = scorer.scores(features, coords)
        summary.predicted, summary.probability = result.predicted, result.probability
        title = f"{head}\n{truth}; predicted: {result.predicted} (p = {result.probability:.2f})"
        panels = [
            (
                "Patch attention (filter)" if result.bca_attention is not None else "Patch attention",
                overlay(thumbnail, coords, extent, downsample, result.attention, alpha=alpha),
            )
        ]
        if result.bca_attention is not None:
            kept = result.bca_attention > 0
            panels.append(
                (
                    "Bi-cross attention (text to kept patches)",
                    overlay(thumbnail, coords, extent, downsample, result.bca_attention, shown=kept, alpha=alpha),
                )
            )
        summary.heatmap_size = draw_heatmap(
            out_heatmap, thumbnail, panels, title, note=f"{len(coords)} patches of {extent[0]} x {extent[1]} level-0 px"
        )

        order = np.argsort(-result.attention, kind="stable")[: max(int(top_k), 0)]
        level, size = int(attrs["patch_level"]), int(attrs["patch_size"])
        tiles, labels = [], []
        for rank, index in enumerate(order, start=1):
            x, y = (int(v) for v in coords[index])
            tiles.append(slide.read_region((x, y), level, (size, size)))
            label = f"#{rank} att {result.attention[index]:.3g}"
            if result.bca_attention is not None:
                label += f", bca {result.bca_attention[index]:.3g}"
            labels.append(f"{label}\n({x}, {y})")
        summary.top_index = [int(i) for i in order]
        summary.top_scores = [float(result.attention[i]) for i in order]
        summary.montage_size = draw_montage(
            out_top, tiles, labels, f"{head}: top {len(tiles)} patches by attention; predicted {result.predicted}"
        )
    finally:
        slide.close()
    log.info(
        "slide %s: %d patches, predicted %s (p=%.3f), top patch %s",
        slide_id,
        summary.n_patches,
        summary.predicted,
        summary.probability,
        summary.top_index[:1],
    )
    return summary


def heatmap_for_fold(
    checkpoint: str | os.PathLike,
    text_bank: str | os.PathLike | None,
    features_path: str | os.PathLike,
    coords_path: str | os.PathLike,
    sheet_csv: str | os.PathLike,
    split_csv: str | os.PathLike,
    slide_id: str,
    fold: int | str,
    out_heatmap: str | os.PathLike,
    out_top: str | os.PathLike,
    **options,
) -> HeatmapSummary:
    """Workflow entry point: slide path, true label and the slide's part of the fold from the
    sample sheet and the split file, then :func:`render_slide_heatmap`."""
    from hmf.data.sample_sheet import read_sample_sheet
    from hmf.data.splits import read_split

    sheet = read_sample_sheet(sheet_csv)
    rows = sheet[sheet["slide_id"] == slide_id]
    if rows.empty:
        raise HeatmapError(f"slide {slide_id} is not in the sample sheet {sheet_csv}")
    row = rows.iloc[0]
    part = read_split(split_csv).get(row["patient_id"])
    if part is None:
        raise HeatmapError(f"split file {split_csv}: patient {row['patient_id']} of slide {slide_id} is missing")
    mpp = float(row["mpp"]) if pd.notna(row.get("mpp")) else None
    return render_slide_heatmap(
        checkpoint,
        features_path,
        coords_path,
        row["path"],
        slide_id,
        out_heatmap,
        out_top,
        text_bank=text_bank,
        true_label=row["slide_label"] or None,
        context=f"fold {fold}, {part} slide",
        mpp=mpp,
        **options,
    )
