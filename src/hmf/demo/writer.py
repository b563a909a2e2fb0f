"""Pyramidal tiled TIFF output that OpenSlide's generic-tiff reader opens, and the demo's
slide-writing entry points.

Levels are separate tiled, JPEG-compressed pages (downsamples 1, 4, 16 by default) with the
resolution in pixels per centimetre, which OpenSlide reports as ``openslide.mpp-x/y``.
Nothing time-dependent is written (no DateTime tag, fixed Software tag), so the same pixels
give the same bytes.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import cv2
import numpy as np
import tifffile

from hmf.atomic import atomic_path
from hmf.demo.slide_plan import SlidePlan
from hmf.demo.tissue import Rendered, render_slide

log = logging.getLogger(__name__)

DOWNSAMPLES = (1, 4, 16)
TILE = 256
JPEG_QUALITY = 90
SOFTWARE = "hmf demo cohort"


def pyramid(rgb: np.ndarray, downsamples=DOWNSAMPLES) -> list[np.ndarray]:
    """Area-averaged levels; level-0 sides should be multiples of the largest downsample."""
    height, width = rgb.shape[:2]
    levels = []
    for factor in downsamples:
        if factor == 1:
            levels.append(rgb)
        else:
            size = (max(1, width // factor), max(1, height // factor))
            levels.append(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA))
    return levels


def write_pyramid_tiff(
    path: str | Path,
    rgb: np.ndarray,
    mpp: float,
    downsamples=DOWNSAMPLES,
    tile: int = TILE,
    quality: int = JPEG_QUALITY,
) -> None:
    """Write ``rgb`` (H, W, 3 uint8) as a tiled JPEG pyramid at ``mpp`` um/px, atomically."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"{path}: expected an (H, W, 3) uint8 image, got {rgb.shape} {rgb.dtype}")
    if not mpp > 0:
        raise ValueError(f"{path}: mpp must be positive, got {mpp!r}")
    # Pixels per centimetre as an exact rational of the 4-decimal mpp.
    px_per_cm = (100_000_000, int(round(mpp * 10_000)))
    with atomic_path(path) as tmp:
        with tifffile.TiffWriter(tmp, bigtiff=False) as tiff:
            for index, level in enumerate(pyramid(rgb, downsamples)):
                factor = downsamples[index]
                resolution = (px_per_cm[0], px_per_cm[1] * factor)
                tiff.write(
                    level,
                    photometric="rgb",
                    tile=(tile, tile),
                    compression="jpeg",
                    compressionargs={"level": quality},
                    resolution=(resolution, resolution),
                    resolutionunit="CENTIMETER",
                    subfiletype=0 if index == 0 else 1,
                    software=SOFTWARE,
                    metadata=None,
                    datetime=None,
                )


def write_slide(plan: SlidePlan, path: str | Path, aperio_path: str | Path, tumour_path: str | Path) -> Rendered:
    """Render ``plan`` from the real H&E sources and write it to ``path``; returns the pixels
    and the tumour mask."""
    start = time.perf_counter()
    rendered = render_slide(plan, aperio_path, tumour_path)
    write_pyramid_tiff(path, rendered.rgb, plan.mpp)
    log.info(
        "%s: %s, %d x %d px at %.4f um/px, largest deposit %.0f um, %.2f s",
        plan.slide_id,
        plan.slide_label,
        plan.width,
        plan.height,
        plan.mpp,
        plan.largest_deposit_um,
        time.perf_counter() - start,
    )
    return rendered
