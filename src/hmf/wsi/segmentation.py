"""Tissue segmentation as CLAM does it: HSV saturation, median blur, threshold, close, contours.

Contours come from ``cv2.RETR_CCOMP`` (outer outlines and their holes). Area filters are in
units of a ``ref_patch_size``² patch at level 0 scaled to the segmentation image, so the same
``a_t``/``a_h`` mean the same tissue size whatever level the mask was computed at.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from hmf.wsi.settings import SegmentationParams
from hmf.wsi.slide import Slide, SlideError

log = logging.getLogger(__name__)

AUTO_SEG_DOWNSAMPLE = 64.0


@dataclass
class Tissue:
    """One tissue region: outer contour and kept holes, each an (K, 2) int64 array of (x, y)."""

    contour: np.ndarray
    holes: list[np.ndarray] = field(default_factory=list)

    @property
    def area(self) -> float:
        """Area of the contour minus its kept holes, in the contour's pixel units."""
        return float(cv2.contourArea(as_cv(self.contour)) - sum(cv2.contourArea(as_cv(h)) for h in self.holes))

    def scaled(self, sx: float, sy: float) -> Tissue:
        """The same region with coordinates multiplied by (sx, sy), as int64 (CLAM truncates)."""
        factor = np.array([sx, sy], dtype=np.float64)
        return Tissue(
            contour=(self.contour * factor).astype(np.int64),
            holes=[(h * factor).astype(np.int64) for h in self.holes],
        )


def as_cv(points: np.ndarray) -> np.ndarray:
    """(K, 2) points in the (K, 1, 2) int32 layout OpenCV's contour functions take."""
    return np.asarray(points, dtype=np.int32).reshape(-1, 1, 2)


@dataclass
class Segmentation:
    tissues: list[Tissue]  # level-0 coordinates
    downsample: tuple[float, float]  # of the image the mask was computed on
    source: str  # "level <n>" or "thumbnail"
    image_size: tuple[int, int]  # (w, h) of that image
    seconds: float = 0.0

    @property
    def n_holes(self) -> int:
        return sum(len(t.holes) for t in self.tissues)

    def tissue_area_px(self) -> float:
        return float(sum(t.area for t in self.tissues))


def tissue_mask(rgb: np.ndarray, params: SegmentationParams) -> np.ndarray:
    """Binary (0/255) tissue mask of an RGB uint8 image."""
    saturation = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2HSV)[:, :, 1]
    blurred = cv2.medianBlur(saturation, params.mthresh)
    if params.use_otsu:
        _, mask = cv2.threshold(blurred, 0, 255, cv2.THRESH_OTSU + cv2.THRESH_BINARY)
    else:
        _, mask = cv2.threshold(blurred, params.sthresh, 255, cv2.THRESH_BINARY)
    if params.close > 0:
        kernel = np.ones((params.close, params.close), np.uint8)
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)
    return mask


def reference_area(params: SegmentationParams, downsample: tuple[float, float]) -> int:
    """Area in mask pixels of one ``ref_patch_size``² level-0 patch (CLAM truncates to int)."""
    return int(params.ref_patch_size**2 / (downsample[0] * downsample[1]))


def tissue_from_mask(mask: np.ndarray, params: SegmentationParams, downsample: tuple[float, float]) -> list[Tissue]:
    """Kept tissue regions of ``mask``, in mask pixel coordinates.

    A region is kept when its area minus all of its holes exceeds ``a_t`` reference areas;
    of its holes, the ``max_n_holes`` largest are considered and those larger than ``a_h``
    reference areas kept. ``keep_ids``/``exclude_ids`` then index the kept regions.
    """
    contours, hierarchy = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    if hierarchy is None or len(contours) == 0:
        return []
    parents = hierarchy.reshape(-1, 4)[:, 3]
    ref = reference_area(params, downsample)
    min_tissue, min_hole = params.a_t * ref, params.a_h * ref
    areas = [cv2.contourArea(c) for c in contours]
    tissues: list[Tissue] = []
    for idx in np.flatnonzero(parents == -1):
        hole_ids = np.flatnonzero(parents == idx)
        net = areas[idx] - sum(areas[h] for h in hole_ids)
        if net == 0 or not net > min_tissue:
            continue
        # sorted() is stable, so equal-area holes keep OpenCV's order.
        largest = sorted(hole_ids, key=lambda h: areas[h], reverse=True)[: params.max_n_holes]
        holes = [contours[h].reshape(-1, 2).astype(np.int64) for h in largest if areas[h] > min_hole]
        tissues.append(Tissue(contour=contours[idx].reshape(-1, 2).astype(np.int64), holes=holes))
    if params.keep_ids or params.exclude_ids:
        base = set(params.keep_ids) if params.keep_ids else set(range(len(tissues)))
        chosen = sorted(base - set(params.exclude_ids))
        bad = [i for i in chosen if i >= len(tissues)]
        if bad:
            raise ValueError(f"preprocessing.segmentation.keep_ids: {bad} out of range ({len(tissues)} contours kept)")
        tissues = [tissues[i] for i in chosen]
    return tissues


def segmentation_image(slide: Slide, params: SegmentationParams) -> tuple[np.ndarray, tuple[float, float], str]:
    """The RGB image to segment, its per-axis downsample, and where it came from.

    Automatic (``seg_level=-1``): the coarsest pyramid level at or finer than 64x, as CLAM.
    When that level is larger than ``max_seg_dim`` on a side (huge single-level slides, or
    pyramids without coarse levels) a thumbnail about 64x smaller is read tile by tile
    instead of failing or exhausting memory.
    """
    level = _segmentation_level(slide, params)
    w, h = slide.level_dimensions[level]
    if max(w, h) <= params.max_seg_dim:
        return slide.read_region((0, 0), level, (w, h)), slide.level_downsamples[level], f"level {level}"
    image, downsample = slide.read_downsampled(_thumbnail_downsample(slide, params))
    return image, downsample, "thumbnail"


def _segmentation_level(slide: Slide, params: SegmentationParams) -> int:
    if params.seg_level >= 0:
        if params.seg_level >= slide.level_count:
            raise SlideError(
                f"slide {slide.name}: preprocessing.segmentation.seg_level={params.seg_level} but the slide "
                f"has {slide.level_count} level(s)"
            )
        return params.seg_level
    return slide.best_level_for_downsample(AUTO_SEG_DOWNSAMPLE)


def _thumbnail_downsample(slide: Slide, params: SegmentationParams) -> float:
    return max(AUTO_SEG_DOWNSAMPLE, max(slide.dimensions) / params.max_seg_dim)


def segmentation_image_size(slide: Slide, params: SegmentationParams) -> tuple[int, int]:
    """Width and height of the image :func:`segmentation_image` reads, without reading it."""
    w, h = slide.level_dimensions[_segmentation_level(slide, params)]
    if max(w, h) <= params.max_seg_dim:
        return int(w), int(h)
    downsample = _thumbnail_downsample(slide, params)
    return int(slide.dimensions[0] / downsample) + 1, int(slide.dimensions[1] / downsample) + 1


def segment_slide(slide: Slide, params: SegmentationParams) -> Segmentation:
    """Segment ``slide``; tissue contours come back in level-0 coordinates."""
    start = time.perf_counter()
    image, downsample, source = segmentation_image(slide, params)
    try:
        tissues = tissue_from_mask(tissue_mask(image, params), params, downsample)
    except ValueError as err:  # keep_ids out of range
        raise SlideError(f"slide {slide.name}: {err}") from None
    tissues = [t.scaled(*downsample) for t in tissues]
    seg = Segmentation(
        tissues=tissues,
        downsample=(float(downsample[0]), float(downsample[1])),
        source=source,
        image_size=(int(image.shape[1]), int(image.shape[0])),
    )
    seg.seconds = time.perf_counter() - start
    log.info(
        "slide %s: %d tissue contour(s), %d hole(s) from %s (downsample %.2f) in %.2f s",
        slide.name,
        len(tissues),
        seg.n_holes,
        source,
        downsample[0],
        seg.seconds,
    )
    return seg
