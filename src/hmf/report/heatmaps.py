"""Attention heatmaps of a trained slide model over its slide (the paper's compare figure).

For one slide and one fold's checkpoint: the model runs once in eval mode on the slide's
patch features and the text bank; its patch attention (HMF: the filter's attention over all
patches) and, for HMF, the bi-cross attention the text tokens give each kept patch are drawn
as semi-transparent colour maps over the patch squares of a thumbnail, beside the plain
thumbnail. A second figure shows the top-k attended patches read from the slide.

Scores are min-max normalised per slide, so colours compare patches within a slide, not
across slides. Patches the filter dropped carry no bi-cross attention and stay uncoloured.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from hmf.atomic import atomic_path
from hmf.training import standardise

log = logging.getLogger(__name__)

DPI = 100
PANEL_INCHES = 5.0  # width of one panel of the heatmap figure
HEATMAP_MARGIN_INCHES = 2.2  # title, panel titles, colour bars and the note below the images
TILE_INCHES = 2.2  # one patch of the top-k montage
MONTAGE_COLUMNS = 4
CMAP = "jet"
CHECKPOINT_KEYS = ("model", "state_dict", "in_dim", "n_classes", "classes", "text_dim", "params")


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


# -- model --------------------------------------------------------------------------------


def load_slide_checkpoint(path: str | os.PathLike) -> tuple[torch.nn.Module, dict]:
    """The slide model of a training checkpoint, rebuilt and in eval mode, and the checkpoint."""
    from hmf.models import build_slide_model

    path = Path(path)
    if not path.is_file():
        raise HeatmapError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise HeatmapError(f"checkpoint {path} cannot be loaded with torch.load: {err}") from None
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise HeatmapError(f"checkpoint {path} lacks key(s) {missing}; expected a slide checkpoint from train_slide")
    model_params = (ckpt["params"] or {}).get("model", {})
    model = build_slide_model(
        ckpt["model"], int(ckpt["in_dim"]), int(ckpt["n_classes"]), model_params, text_dim=ckpt["text_dim"]
    )
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        raise HeatmapError(f"checkpoint {path}: weights do not fit model {ckpt['model']!r}: {err}") from None
    model.eval()
    return model, ckpt


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


# -- geometry and drawing ----------------------------------------------------------------------


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


def normalise(scores: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1]; a constant vector maps to 0.5 (no patch stands out)."""
    scores = np.asarray(scores, dtype=float)
    if scores.size == 0:
        return scores
    low, high = float(np.min(scores)), float(np.max(scores))
    if high - low <= 1e-12:
        return np.full_like(scores, 0.5)
    return (scores - low) / (high - low)


def overlay(
    thumbnail: np.ndarray,
    coords: np.ndarray,
    extent: tuple[int, int],
    downsample: tuple[float, float],
    scores: np.ndarray,
    shown: np.ndarray | None = None,
    alpha: float = 0.5,
    cmap: str = CMAP,
) -> np.ndarray:
    """``thumbnail`` with each shown patch's square tinted by the colour of its normalised score.

    Overlapping patches average their scores; pixels outside every shown patch keep the
    thumbnail's colour. ``shown`` (bool, N) selects patches (default all).
    """
    h, w = thumbnail.shape[:2]
    scores = np.asarray(scores, dtype=float).reshape(-1)
    shown = np.ones(len(scores), dtype=bool) if shown is None else np.asarray(shown, dtype=bool)
    values = np.zeros(len(scores))
    values[shown] = normalise(scores[shown])  # over the shown patches only
    total = np.zeros((h, w), dtype=np.float64)
    count = np.zeros((h, w), dtype=np.float64)
    dx, dy = downsample
    for (x, y), value, keep in zip(np.asarray(coords).reshape(-1, 2), values, shown):
        if not keep:
            continue
        x0, y0 = int(np.floor(x / dx)), int(np.floor(y / dy))
        x1, y1 = int(np.ceil((x + extent[0]) / dx)), int(np.ceil((y + extent[1]) / dy))
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if x1 > x0 and y1 > y0:
            total[y0:y1, x0:x1] += value
            count[y0:y1, x0:x1] += 1
    covered = count > 0
    mean = np.divide(total, count, out=np.zeros_like(total), where=covered)
    colours = colormaps[cmap](mean)[..., :3] * 255.0
    out = thumbnail.astype(np.float64)
    out[covered] = (1 - alpha) * out[covered] + alpha * colours[covered]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _save(fig: Figure, path: str | os.PathLike) -> tuple[int, int]:
    """Save at a fixed pixel size (figure inches x DPI, no tight cropping); returns (w, h)."""
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    w, h = fig.get_size_inches() * DPI
    return int(round(w)), int(round(h))


def heatmap_figure_size(n_panels: int, thumbnail_shape: tuple[int, ...]) -> tuple[int, int]:
    """Pixel size (w, h) of the heatmap figure with ``n_panels`` panels (the plain slide
    included) for a thumbnail of ``thumbnail_shape`` (h, w[, 3]): the height follows the
    slide's aspect ratio, within bounds."""
    return tuple(int(round(v * DPI)) for v in _heatmap_inches(n_panels, thumbnail_shape))


def _heatmap_inches(n_panels: int, thumbnail_shape: tuple[int, ...]) -> tuple[float, float]:
    h, w = thumbnail_shape[:2]
    image_height = min(max(0.9 * PANEL_INCHES * h / max(w, 1), 2.0), 9.0)
    return PANEL_INCHES * n_panels, round(image_height + HEATMAP_MARGIN_INCHES, 2)


def montage_figure_size(k: int) -> tuple[int, int]:
    """Pixel size (w, h) of the top-k montage."""
    cols = min(MONTAGE_COLUMNS, max(k, 1))
    rows = max(1, -(-k // cols))
    return int(round(TILE_INCHES * cols * DPI)), int(round((TILE_INCHES + 0.45) * rows * DPI + 0.5 * DPI))


def draw_heatmap(
    path: str | os.PathLike,
    thumbnail: np.ndarray,
    panels: list[tuple[str, np.ndarray | None]],
    title: str,
    note: str | None = None,
) -> tuple[int, int]:
    """The plain thumbnail, then one overlay per (title, image) panel, each with a colour bar."""
    fig = Figure(figsize=_heatmap_inches(1 + len(panels), thumbnail.shape))
    fig.suptitle(f"{title}\n{note}" if note else title, fontsize=11)
    axes = fig.subplots(1, 1 + len(panels), squeeze=False)[0]
    height = fig.get_size_inches()[1]
    fig.subplots_adjust(left=0.02, right=0.98, top=1 - 0.95 / height, bottom=0.95 / height, wspace=0.08)
    axes[0].imshow(thumbnail)
    axes[0].set_title("Slide", fontsize=10)
    # An invisible colour bar under the plain slide keeps the three images the same height.
    spacer = fig.colorbar(
        ScalarMappable(Normalize(0, 1), colormaps[CMAP]), ax=axes[0], fraction=0.046, pad=0.02, orientation="horizontal"
    )
    spacer.ax.set_visible(False)
    for ax, (name, image) in zip(axes[1:], panels):
        ax.imshow(thumbnail if image is None else image)
        ax.set_title(name, fontsize=10)
        bar = fig.colorbar(
            ScalarMappable(Normalize(0, 1), colormaps[CMAP]), ax=ax, fraction=0.046, pad=0.02, orientation="horizontal"
        )
        bar.set_label("normalised score (min-max within the slide)", fontsize=8)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    return _save(fig, path)


def draw_montage(path: str | os.PathLike, tiles: list[np.ndarray], labels: list[str], title: str) -> tuple[int, int]:
    """Top-k patches in a grid, each labelled with its rank and scores."""
    k = max(len(tiles), 1)
    w, h = montage_figure_size(k)
    fig = Figure(figsize=(w / DPI, h / DPI))
    fig.suptitle(title, fontsize=10)
    cols = min(MONTAGE_COLUMNS, k)
    rows = max(1, -(-k // cols))
    axes = fig.subplots(rows, cols, squeeze=False).reshape(-1)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=1 - 0.5 / (h / DPI), wspace=0.08, hspace=0.35)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.axis("off")
    if not tiles:
        axes[0].text(0.5, 0.5, "no patches", ha="center", va="center", transform=axes[0].transAxes)
    for ax, tile, label in zip(axes, tiles, labels):
        ax.imshow(tile)
        ax.set_title(label, fontsize=8)
    return _save(fig, path)


# -- entry point --------------------------------------------------------------------------------


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
    top_k: int = 8,
    thumbnail_px: int = 1024,
    alpha: float = 0.5,
    mpp: float | None = None,
) -> HeatmapSummary:
    """Draw the attention heatmaps and the top-k montage of one slide under one checkpoint.

    ``context`` (e.g. ``"fold 0, test slide"``) goes into the titles after the model name.
    """
    from hmf.training.slide import load_text_inputs
    from hmf.wsi.slide import open_slide

    model, ckpt = load_slide_checkpoint(checkpoint)
    classes = list(ckpt["classes"])
    features, coords, attrs = _read_inputs(features_path, coords_path)
    text = None
    if getattr(model, "requires_text", False):
        if text_bank is None:
            raise HeatmapError(f"checkpoint {checkpoint}: model {ckpt['model']!r} needs the text bank")
        text, _ = load_text_inputs(text_bank, tuple(classes))
    if features.shape[0] and features.shape[1] != int(ckpt["in_dim"]):
        raise HeatmapError(
            f"feature file {features_path} has D={features.shape[1]}, checkpoint {checkpoint} expects {ckpt['in_dim']}"
        )

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
        head = f"{slide_id} ({ckpt['model']}{', ' + context if context else ''})"

        if features.shape[0] == 0:
            log.warning("slide %s: no patches; drawing the thumbnail only", slide_id)
            title = f"{head}\n{truth}; no patches, no prediction"
            summary.heatmap_size = draw_heatmap(
                out_heatmap, thumbnail, [("Patch attention", None)], title, note="no tissue patches on this slide"
            )
            summary.montage_size = draw_montage(out_top, [], [], f"{slide_id}: no patches")
            return summary

        features = standardise.from_checkpoint(features, ckpt)  # the scale the model was trained on
        result = slide_attention(model, classes, features, coords, text)
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
    from hmf.training.bags import read_split

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
