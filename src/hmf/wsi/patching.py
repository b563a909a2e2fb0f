"""Patch grids over tissue contours (CLAM's ``process_contour``) and the coordinates file.

For each tissue region a grid covers its bounding box; a grid point is kept when the contour
test passes and the patch centre is not inside one of the region's kept holes. Coordinates
are level-0 top-left corners. No pixels are read here.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import h5py
import numpy as np

from hmf.atomic import atomic_path
from hmf.wsi.segmentation import Tissue, as_cv
from hmf.wsi.settings import PatchingParams
from hmf.wsi.slide import Slide, SlideError

log = logging.getLogger(__name__)

CENTER_SHIFT = 0.5  # four_pt tests the centre +- (patch_size // 2) * 0.5, i.e. +- a quarter patch


@dataclass
class PatchGeometry:
    """Where and how big patches are, resolved for one slide."""

    patch_level: int
    patch_size: int  # pixels read at patch_level
    ref_size: tuple[int, int]  # patch extent in level-0 pixels (x, y)
    step: tuple[int, int]  # grid step in level-0 pixels (x, y)
    downsample: tuple[float, float]  # of patch_level
    level_dim: tuple[int, int]  # size of patch_level
    mpp: float | None  # level-0 µm per pixel
    patch_size_um: float | None  # physical side of a patch
    target_mpp: float | None = None
    target_patch_size: int | None = None


def resolve_geometry(slide: Slide, params: PatchingParams) -> PatchGeometry:
    """Patch level and sizes for ``slide``: CLAM's level mode or physical (mpp) mode.

    In mpp mode the patch is read at the coarsest level at or finer than ``target_mpp``
    (within ``mpp_tolerance``), over the field of view ``patch_size`` x ``target_mpp`` µm;
    readers resize it to their input size.
    """
    if params.mode == "level":
        level = params.patch_level
        if level >= slide.level_count:
            raise SlideError(
                f"slide {slide.name}: preprocessing.patching.patch_level={level} but the slide has "
                f"{slide.level_count} level(s)"
            )
        read_size = params.patch_size
        dx, dy = slide.level_downsamples[level]
        ref = (read_size * round(dx), read_size * round(dy))
        step = (params.step * round(dx), params.step * round(dy))
        target_mpp = target_size = None
    else:
        mpp0 = slide.require_mpp("patching by physical size (preprocessing.patching.mode: mpp)")
        limit = params.target_mpp * (1 + params.mpp_tolerance)
        level = 0
        for candidate in range(slide.level_count):
            if slide.level_mpp(candidate) <= limit:
                level = candidate
        if slide.level_mpp(0) > limit:
            log.warning(
                "slide %s: level 0 (%.3f µm/px) is coarser than target_mpp %.3f; patches are upsampled",
                slide.name,
                mpp0,
                params.target_mpp,
            )
        dx, dy = slide.level_downsamples[level]
        read_size = max(1, round(params.patch_size * params.target_mpp / slide.level_mpp(level)))
        ref = (round(read_size * dx), round(read_size * dy))
        ratio = params.step / params.patch_size
        step = (max(1, round(ref[0] * ratio)), max(1, round(ref[1] * ratio)))
        target_mpp, target_size = float(params.target_mpp), int(params.patch_size)
    mpp_level = slide.level_mpp(level)
    return PatchGeometry(
        patch_level=level,
        patch_size=int(read_size),
        ref_size=(int(ref[0]), int(ref[1])),
        step=(int(step[0]), int(step[1])),
        downsample=(float(dx), float(dy)),
        level_dim=tuple(int(v) for v in slide.level_dimensions[level]),
        mpp=slide.mpp,
        patch_size_um=None if mpp_level is None else float(read_size * mpp_level),
        target_mpp=target_mpp,
        target_patch_size=target_size,
    )


def contour_test_points(corner: np.ndarray, patch_size: int, contour_fn: str) -> list[tuple[float, float]]:
    """The points ``contour_fn`` tests for a patch with level-0 top-left ``corner``."""
    cx, cy = int(corner[0]) + patch_size // 2, int(corner[1]) + patch_size // 2
    if contour_fn == "basic":
        return [(float(corner[0]), float(corner[1]))]
    if contour_fn == "center":
        return [(float(cx), float(cy))]
    shift = int(patch_size // 2 * CENTER_SHIFT)
    if shift == 0:
        return [(float(cx), float(cy))]
    return [
        (float(cx - shift), float(cy - shift)),
        (float(cx + shift), float(cy + shift)),
        (float(cx + shift), float(cy - shift)),
        (float(cx - shift), float(cy + shift)),
    ]


def passes_contour(contour_cv: np.ndarray, corner: np.ndarray, patch_size: int, contour_fn: str) -> bool:
    """CLAM's contour tests; points on the contour line count as inside.

    ``four_pt``: any of the four points inside; ``four_pt_hard``: all four; ``center``: the
    centre; ``basic``: the top-left corner.
    """
    points = contour_test_points(corner, patch_size, contour_fn)
    inside = (cv2.pointPolygonTest(contour_cv, p, False) >= 0 for p in points)
    return all(inside) if contour_fn == "four_pt_hard" else any(inside)


def in_hole(holes_cv: list[np.ndarray], corner: np.ndarray, patch_size: int) -> bool:
    """Whether the patch centre lies strictly inside one of the holes."""
    centre = (float(corner[0]) + patch_size / 2, float(corner[1]) + patch_size / 2)
    return any(cv2.pointPolygonTest(h, centre, False) > 0 for h in holes_cv)


def contour_patches(
    tissue: Tissue, geometry: PatchGeometry, slide_dim: tuple[int, int], contour_fn: str, use_padding: bool
) -> np.ndarray:
    """Level-0 top-left corners of the kept patches of one tissue region, (M, 2) int64."""
    contour_cv = as_cv(tissue.contour)
    start_x, start_y, w, h = cv2.boundingRect(contour_cv)
    ref_w, ref_h = geometry.ref_size
    stop_x, stop_y = start_x + w, start_y + h
    if not use_padding:  # the whole patch must lie on the slide
        stop_x = min(stop_x, slide_dim[0] - ref_w + 1)
        stop_y = min(stop_y, slide_dim[1] - ref_h + 1)
    xs = np.arange(start_x, stop_x, geometry.step[0], dtype=np.int64)
    ys = np.arange(start_y, stop_y, geometry.step[1], dtype=np.int64)
    if len(xs) == 0 or len(ys) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    grid_x, grid_y = np.meshgrid(xs, ys, indexing="ij")
    candidates = np.stack([grid_x.ravel(), grid_y.ravel()], axis=1)
    holes_cv = [as_cv(hole) for hole in tissue.holes]
    keep = [
        passes_contour(contour_cv, corner, ref_w, contour_fn) and not in_hole(holes_cv, corner, ref_w)
        for corner in candidates
    ]
    return candidates[np.asarray(keep, dtype=bool)]


def patch_coordinates(
    tissues: list[Tissue], geometry: PatchGeometry, slide_dim: tuple[int, int], params: PatchingParams
) -> np.ndarray:
    """All kept patches of a slide: unique level-0 corners sorted by (x, y), (N, 2) int64."""
    parts = [contour_patches(t, geometry, slide_dim, params.contour_fn, params.use_padding) for t in tissues]
    parts = [p for p in parts if len(p)]
    if not parts:
        return np.zeros((0, 2), dtype=np.int64)
    return np.unique(np.concatenate(parts), axis=0).astype(np.int64)


def coords_attributes(
    slide: Slide, geometry: PatchGeometry, params: PatchingParams, save_dir: str, n_contours: int, seconds: float
) -> dict:
    """CLAM's coords attributes plus the physical size and how the grid was made."""
    nan = float("nan")
    attrs = {
        "patch_size": int(geometry.patch_size),
        "patch_level": int(geometry.patch_level),
        "downsample": np.asarray(geometry.downsample, dtype=np.float64),
        "downsampled_level_dim": np.asarray(geometry.level_dim, dtype=np.int64),
        "level_dim": np.asarray(geometry.level_dim, dtype=np.int64),
        "name": slide.name,
        "save_path": save_dir,
        "mpp": nan if geometry.mpp is None else float(geometry.mpp),
        "patch_size_um": nan if geometry.patch_size_um is None else float(geometry.patch_size_um),
        "patch_size_level0": np.asarray(geometry.ref_size, dtype=np.int64),
        "step_size_level0": np.asarray(geometry.step, dtype=np.int64),
        "mode": params.mode,
        "contour_fn": params.contour_fn,
        "use_padding": bool(params.use_padding),
        "n_contours": int(n_contours),
        "seconds": float(seconds),
    }
    if geometry.target_mpp is not None:
        attrs["target_mpp"] = geometry.target_mpp
        attrs["target_patch_size"] = int(geometry.target_patch_size)
    return attrs


def write_coords(path: str | os.PathLike, coords: np.ndarray, attrs: dict) -> None:
    """Write the coordinates file atomically; an empty slide gets a (0, 2) dataset."""
    coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as fh:
            dset = fh.create_dataset("coords", data=coords, maxshape=(None, 2))
            for key, value in attrs.items():
                dset.attrs[key] = value


def read_coords(path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """Coordinates (N, 2) int64 and their attributes from a coordinates file (ours or CLAM's)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"patch coordinates file {path} does not exist")
    try:
        with h5py.File(path, "r") as fh:
            if "coords" not in fh:
                raise KeyError(f"patch coordinates file {path} has no 'coords' dataset")
            dset = fh["coords"]
            coords = np.asarray(dset[()], dtype=np.int64).reshape(-1, 2)
            attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in dset.attrs.items()}
    except OSError as err:
        raise OSError(f"patch coordinates file {path} cannot be read: {err}") from None
    for key in ("patch_size", "patch_level"):
        if key not in attrs:
            raise KeyError(f"patch coordinates file {path}: attribute {key!r} missing from 'coords'")
    return coords, attrs


def patch_slide(slide: Slide, tissues: list[Tissue], params: PatchingParams) -> tuple[np.ndarray, PatchGeometry, float]:
    """Coordinates of the kept patches of ``slide``, the resolved geometry and the seconds taken."""
    start = time.perf_counter()
    geometry = resolve_geometry(slide, params)
    coords = patch_coordinates(tissues, geometry, slide.dimensions, params)
    seconds = time.perf_counter() - start
    log.info(
        "slide %s: %d patch(es) of %d px at level %d (%s µm) from %d contour(s) in %.2f s",
        slide.name,
        len(coords),
        geometry.patch_size,
        geometry.patch_level,
        "?" if geometry.patch_size_um is None else f"{geometry.patch_size_um:.1f}",
        len(tissues),
        seconds,
    )
    return coords, geometry, seconds
