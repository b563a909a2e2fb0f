"""The figures of an attention heatmap: patch scores as colours over a slide thumbnail, and a
montage of the top-scoring patches, drawn at fixed pixel sizes.

Scores are min-max normalised per slide, so colours compare patches within a slide, not
across slides.
"""

from __future__ import annotations

import os

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from hmf.atomic import atomic_path

DPI = 100
PANEL_INCHES = 5.0  # width of one panel of the heatmap figure
HEATMAP_MARGIN_INCHES = 2.2  # title, panel titles, colour bars and the note below the images
TILE_INCHES = 2.2  # one patch of the top-k montage
MONTAGE_COLUMNS = 4
CMAP = "jet"


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
    *,
    alpha: float,
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
