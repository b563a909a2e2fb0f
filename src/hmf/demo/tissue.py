"""Render a planned demo slide from real H&E: normal tissue from the Aperio slide, tumour from
the carcinoma image, both resampled to the slide's um/px.

Textures are built by quilting: random tissue-rich windows of the source (flipped and
turned at random) laid on an overlapping grid and feathered together, so large areas get
real texture without visible repetition of one crop. Independent random streams drive the
normal tissue, the tumour and the stain, so rendering a slide without its tumour gives
exactly the same normal tissue (the tests measure deposits that way).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from hmf.demo.geometry import Blob
from hmf.demo.slide_plan import SlidePlan

log = logging.getLogger(__name__)

APERIO_MPP = 0.499  # the source slide's own resolution
TUMOUR_MPP = 0.5  # treated resolution of the carcinoma region
# Texture windows (um): small for normal tissue (more distinct windows from the narrow
# source strip), larger for tumour (keeps its glandular architecture).
NORMAL_PATCH_UM = 200.0
TUMOUR_PATCH_UM = 300.0
BACKGROUND = np.array([242.0, 241.0, 244.0], dtype=np.float32)

# Ruifrok & Johnston haematoxylin / eosin / DAB optical densities (rows: H, E, D).
RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=np.float32)
RGB_FROM_HED[2] = np.cross(RGB_FROM_HED[0], RGB_FROM_HED[1])
RGB_FROM_HED /= np.linalg.norm(RGB_FROM_HED, axis=1, keepdims=True)
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED).astype(np.float32)


class SourceImageError(RuntimeError):
    """A source image that cannot be read or holds too little tissue."""


@dataclass
class Texture:
    """A source image at a slide's resolution and the top-left corners of its tissue-rich
    windows of ``patch`` pixels."""

    rgb: np.ndarray  # (H, W, 3) uint8
    patch: int
    corners: np.ndarray  # (K, 2) int (x, y)


@dataclass
class Rendered:
    rgb: np.ndarray  # (H, W, 3) uint8, level 0
    tumour_mask: np.ndarray  # (H, W) bool, where tumour was painted


# ----------------------------------------------------------------------------- sources


@functools.lru_cache(maxsize=2)
def _read_aperio(path: str) -> np.ndarray:
    import openslide

    try:
        with openslide.OpenSlide(path) as slide:
            image = slide.read_region((0, 0), 0, slide.dimensions).convert("RGB")
    except openslide.OpenSlideError as err:
        raise SourceImageError(f"{path}: OpenSlide cannot read the normal-tissue source ({err})") from err
    return np.asarray(image)


@functools.lru_cache(maxsize=2)
def _read_tumour(path: str) -> np.ndarray:
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise SourceImageError(f"{path}: cannot read the tumour source image")
    return np.ascontiguousarray(image[:, :, ::-1])


def tissue_mask(rgb: np.ndarray) -> np.ndarray:
    """Stained tissue: saturated, not near-white, and not green (marker ink on the source)."""
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    r, g, b = (rgb[:, :, i].astype(np.int16) for i in range(3))
    mask = (hsv[:, :, 1] > 25) & (hsv[:, :, 2] < 235) & (g < r + 5) & (g < b + 5)
    return cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)) > 0


def _texture(rgb: np.ndarray, source_mpp: float, mpp: float, patch_um: float, min_tissue: float, name: str) -> Texture:
    scale = source_mpp / mpp
    size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
    small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    patch = int(min(round(patch_um / mpp), small.shape[0] // 2, small.shape[1] // 2))
    # Fraction of tissue in every patch-sized window, from an integral image.
    integral = cv2.integral(tissue_mask(small).astype(np.uint8))
    frac = (
        integral[patch:, patch:] - integral[:-patch, patch:] - integral[patch:, :-patch] + integral[:-patch, :-patch]
    ) / float(patch * patch)
    ys, xs = np.nonzero(frac >= min_tissue)
    if len(xs) < 10:
        raise SourceImageError(
            f"{name}: fewer than 10 windows of {patch} px with {min_tissue:.0%} tissue at {mpp} um/px"
        )
    # Keep only the part of the image the windows cover (less to stain-jitter per slide).
    x0, y0 = int(xs.min()), int(ys.min())
    small = np.ascontiguousarray(small[y0 : int(ys.max()) + patch, x0 : int(xs.max()) + patch])
    return Texture(small, patch, np.stack([xs - x0, ys - y0], axis=1))


def load_textures(aperio_path: str | Path, tumour_path: str | Path, mpp: float) -> tuple[Texture, Texture]:
    """Normal-tissue and tumour textures at ``mpp`` um/px."""
    normal = _texture(_read_aperio(str(aperio_path)), APERIO_MPP, mpp, NORMAL_PATCH_UM, 0.85, str(aperio_path))
    tumour = _texture(_read_tumour(str(tumour_path)), TUMOUR_MPP, mpp, TUMOUR_PATCH_UM, 0.8, str(tumour_path))
    return normal, tumour


# ----------------------------------------------------------------------------- pixels


_OD_LUT = (-np.log((np.arange(256, dtype=np.float32) + 1.0) / 256.0)).astype(np.float32)


def stain_jitter(rgb: np.ndarray, alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Scale (``alpha``) and shift (``beta``) the H, E and D optical densities."""
    # od -> hed -> jittered hed -> od folds into one affine map of the optical densities.
    matrix = (HED_FROM_RGB * alpha.astype(np.float32)[None, :]) @ RGB_FROM_HED
    offset = beta.astype(np.float32) @ RGB_FROM_HED
    od = _OD_LUT[rgb.reshape(-1, 3)] @ matrix.astype(np.float32) + offset.astype(np.float32)
    out = 256.0 * np.exp(-od) - 1.0
    return np.clip(out, 0, 255).reshape(rgb.shape).astype(np.uint8)


def _feather(patch: int, overlap: int) -> np.ndarray:
    ramp = np.minimum(1.0, (np.arange(patch) + 0.5) / max(overlap, 1))
    w = np.minimum(ramp, ramp[::-1]).astype(np.float32)
    return (w[:, None] * w[None, :])[:, :, None]


def _window(texture: Texture, rng: np.random.Generator) -> np.ndarray:
    x, y = texture.corners[int(rng.integers(len(texture.corners)))]
    crop = texture.rgb[y : y + texture.patch, x : x + texture.patch]
    if rng.integers(2):
        crop = crop[::-1]
    return crop[:, ::-1] if rng.integers(2) else crop


def quilt(texture: Texture, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A (height, width, 3) float32 texture of feathered random windows of ``texture``."""
    patch = texture.patch
    overlap = max(2, patch // 3)
    step = patch - overlap
    rows = max(1, int(np.ceil((height - overlap) / step)))
    cols = max(1, int(np.ceil((width - overlap) / step)))
    # Each row starts at a random offset (brick-like rows hide the grid); ``step`` of padding
    # on the left keeps every output pixel covered.
    big_h, big_w = rows * step + overlap, (cols + 1) * step + overlap + step
    acc = np.zeros((big_h, big_w, 3), np.float32)
    weight = np.zeros((big_h, big_w, 1), np.float32)
    feather = _feather(patch, overlap)
    for i in range(rows):
        shift = int(rng.integers(step))
        for j in range(cols + 1):
            y, x = i * step, step + j * step - shift
            acc[y : y + patch, x : x + patch] += _window(texture, rng) * feather
            weight[y : y + patch, x : x + patch] += feather
    return acc[:height, step : step + width] / weight[:height, step : step + width]


def _fill(shape: tuple[int, int], blobs: list[Blob], origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Anti-aliased float32 coverage (0..1) of ``blobs`` on a grid whose (0, 0) is ``origin``."""
    canvas = np.zeros(shape, np.uint8)
    for blob in blobs:
        pts = np.round((blob.polygon() - np.array(origin)) * 16).astype(np.int32)
        cv2.fillPoly(canvas, [pts], 255, lineType=cv2.LINE_AA, shift=4)
    return canvas.astype(np.float32) / 255.0


def _box(blob: Blob, pad: int, height: int, width: int) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = blob.bbox()
    return (
        max(0, int(np.floor(x0)) - pad),
        max(0, int(np.floor(y0)) - pad),
        min(width, int(np.ceil(x1)) + pad + 1),
        min(height, int(np.ceil(y1)) + pad + 1),
    )


def _paint(canvas: np.ndarray, mask: np.ndarray, box, texture: np.ndarray, alpha: np.ndarray) -> None:
    x0, y0, x1, y1 = box
    region = canvas[y0:y1, x0:x1]
    a = alpha[:, :, None]
    region[:] = region * (1.0 - a) + texture * a
    mask[y0:y1, x0:x1] |= alpha > 0.5


def _nuclei(texture: Texture, radius: float) -> np.ndarray:
    """Centres (x, y) of dark, haematoxylin-rich spots: where single tumour cells are cut from."""
    od = -np.log((texture.rgb.astype(np.float32) + 1.0) / 256.0)
    haem = (od.reshape(-1, 3) @ HED_FROM_RGB)[:, 0].reshape(texture.rgb.shape[:2])
    haem = cv2.GaussianBlur(haem, (0, 0), max(radius / 2.0, 0.8))
    size = 2 * int(np.ceil(radius)) + 1
    peaks = (haem >= cv2.dilate(haem, np.ones((size, size), np.uint8))) & (haem > np.percentile(haem, 75))
    r = int(np.ceil(radius)) + 2
    peaks[:r], peaks[-r:], peaks[:, :r], peaks[:, -r:] = False, False, False, False
    ys, xs = np.nonzero(peaks)
    if len(xs) < 5:
        raise SourceImageError("tumour source: fewer than 5 nuclei found for single tumour cells")
    return np.stack([xs, ys], axis=1)


def _paint_cells(canvas, mask, plan: SlidePlan, tumour: Texture, rng: np.random.Generator) -> None:
    if not plan.cells:
        return
    height, width = canvas.shape[:2]
    centres = _nuclei(tumour, max(chain.radius for chain in plan.cells))
    for chain in plan.cells:
        radius = chain.radius
        r = int(np.ceil(radius)) + 1
        yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
        for cx, cy in chain.points:
            x, y = int(round(cx)), int(round(cy))
            if not (r <= x < width - r and r <= y < height - r):
                continue
            nx, ny = centres[int(rng.integers(len(centres)))]
            cell = tumour.rgb[ny - r : ny + r + 1, nx - r : nx + r + 1].astype(np.float32)
            if rng.integers(2):
                cell = cell[:, ::-1]
            # Soft disc, slightly elongated at random: small cells with a crisp rim.
            stretch = rng.uniform(0.8, 1.25)
            dist = np.hypot(xx * stretch, yy / stretch)
            alpha = np.clip(radius + 0.5 - dist, 0.0, 1.0).astype(np.float32)
            _paint(canvas, mask, (x - r, y - r, x + r + 1, y + r + 1), cell, alpha)


def render_slide(
    plan: SlidePlan, aperio_path: str | Path, tumour_path: str | Path, include_tumour: bool = True
) -> Rendered:
    """Level-0 pixels of ``plan``. With ``include_tumour=False`` the same slide without its
    tumour (identical everywhere else)."""
    normal, tumour = load_textures(aperio_path, tumour_path, plan.mpp)
    stain_rng = np.random.default_rng([plan.seed, 2])
    alpha, beta = stain_rng.uniform(0.9, 1.1, 3), stain_rng.uniform(-0.03, 0.03, 3) * np.array([1.0, 1.0, 0.3])
    normal = Texture(stain_jitter(normal.rgb, alpha, beta), normal.patch, normal.corners)
    tumour = Texture(stain_jitter(tumour.rgb, alpha, beta), tumour.patch, tumour.corners)

    height, width = plan.height, plan.width
    tissue_rng = np.random.default_rng([plan.seed, 0])
    background = BACKGROUND + stain_rng.uniform(-3.0, 3.0, 3).astype(np.float32)
    canvas = np.empty((height, width, 3), np.float32)
    canvas[:] = background
    mask = np.zeros((height, width), bool)
    for outline in plan.tissue:
        box = _box(outline, 2, height, width)
        x0, y0, x1, y1 = box
        cover = _fill((y1 - y0, x1 - x0), [outline], (x0, y0))
        holes = [h for h in plan.holes if outline.contains(Blob(h.cx, h.cy, 1e-3, 1e-3, 0.0))]
        if holes:
            cover *= 1.0 - cv2.GaussianBlur(_fill(cover.shape, holes, (x0, y0)), (0, 0), 1.0)
        _paint(canvas, np.zeros_like(mask), box, quilt(normal, y1 - y0, x1 - x0, tissue_rng), cover)

    if include_tumour:
        tumour_rng = np.random.default_rng([plan.seed, 1])
        for deposit in plan.deposits:
            box = _box(deposit.blob, 2, height, width)
            x0, y0, x1, y1 = box
            cover = _fill((y1 - y0, x1 - x0), [deposit.blob], (x0, y0))
            _paint(canvas, mask, box, quilt(tumour, y1 - y0, x1 - x0, tumour_rng), cover)
        _paint_cells(canvas, mask, plan, tumour, tumour_rng)
    return Rendered(np.clip(np.round(canvas), 0, 255).astype(np.uint8), mask)
