"""Quality-control outputs: the mask and stitch pictures, and the per-dataset summary table."""

from __future__ import annotations

import json
import logging
import math
import os

import cv2
import numpy as np

from hmf.atomic import atomic_path, write_csv
from hmf.wsi.segmentation import Tissue, as_cv
from hmf.wsi.slide import Slide

log = logging.getLogger(__name__)

TISSUE_RGB = (0, 255, 0)
HOLE_RGB = (0, 0, 255)
# Pictures of small slides are not shrunk below this many pixels on the long side.
MIN_PICTURE_SIDE = 1024
JPEG_QUALITY = 90


def picture_downsample(slide: Slide, downsample: float) -> float:
    """``downsample``, lowered for small slides so the picture keeps a readable size."""
    return max(1.0, min(float(downsample), max(slide.dimensions) / MIN_PICTURE_SIDE))


def write_jpeg(path: str | os.PathLike, rgb: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        ok = cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise OSError(f"could not write JPEG {path}")


def draw_tissue(thumbnail: np.ndarray, tissues: list[Tissue], downsample: tuple[float, float]) -> np.ndarray:
    """Tissue outlines in green and kept holes in blue on a copy of ``thumbnail``."""
    canvas = np.ascontiguousarray(thumbnail.copy())
    thickness = max(1, round(max(canvas.shape[:2]) / 400))
    scale = (1.0 / downsample[0], 1.0 / downsample[1])
    for tissue in tissues:
        small = tissue.scaled(*scale)
        cv2.drawContours(canvas, [as_cv(small.contour)], -1, TISSUE_RGB, thickness, lineType=cv2.LINE_8)
        if small.holes:
            cv2.drawContours(canvas, [as_cv(h) for h in small.holes], -1, HOLE_RGB, thickness, lineType=cv2.LINE_8)
    return canvas


def write_mask_picture(path: str | os.PathLike, slide: Slide, tissues: list[Tissue], downsample: float = 64.0) -> None:
    thumbnail, ds = slide.read_downsampled(picture_downsample(slide, downsample))
    write_jpeg(path, draw_tissue(thumbnail, tissues, ds))


def stitch_canvas(
    thumbnail: np.ndarray, downsample: tuple[float, float], coords: np.ndarray, ref_size: tuple[int, int]
) -> np.ndarray:
    """Black canvas with the kept patches pasted from ``thumbnail`` (grid lines in dark grey)."""
    canvas = np.zeros_like(thumbnail)
    height, width = canvas.shape[:2]
    for x, y in np.asarray(coords).reshape(-1, 2):
        x0, y0 = int(x / downsample[0]), int(y / downsample[1])
        x1 = min(width, int(math.ceil((x + ref_size[0]) / downsample[0])))
        y1 = min(height, int(math.ceil((y + ref_size[1]) / downsample[1])))
        x0, y0 = max(0, x0), max(0, y0)
        if x1 <= x0 or y1 <= y0:
            continue
        canvas[y0:y1, x0:x1] = thumbnail[y0:y1, x0:x1]
        if min(x1 - x0, y1 - y0) >= 6:
            cv2.rectangle(canvas, (x0, y0), (x1 - 1, y1 - 1), (40, 40, 40), 1)
    return canvas


def write_stitch_picture(
    path: str | os.PathLike, slide: Slide, coords: np.ndarray, ref_size: tuple[int, int], downsample: float = 64.0
) -> None:
    thumbnail, ds = slide.read_downsampled(picture_downsample(slide, downsample))
    write_jpeg(path, stitch_canvas(thumbnail, ds, coords, ref_size))


# -- summary -----------------------------------------------------------------------------

SUMMARY_COLUMNS = [
    "slide_id",
    "tissue_area_mm2",
    "n_contours",
    "n_holes",
    "n_patches",
    "no_tissue",
    "mpp",
    "patch_size_um",
    "seconds_segment",
    "seconds_patch",
    "seconds_extract",
]


def _read_json(path) -> dict:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def summary_row(slide_id: str, segmentation_json, patches_h5, extraction_json=None) -> dict:
    """One row of the QC summary from a slide's segmentation stats, coords file and extraction stats."""
    from hmf.wsi.patching import read_coords

    seg = _read_json(segmentation_json)
    coords, attrs = read_coords(patches_h5)
    extract = _read_json(extraction_json) if extraction_json else {}
    mpp = attrs.get("mpp", float("nan"))
    size_um = attrs.get("patch_size_um", float("nan"))
    return {
        "slide_id": slide_id,
        "tissue_area_mm2": seg.get("tissue_area_mm2"),
        "n_contours": seg.get("n_contours"),
        "n_holes": seg.get("n_holes"),
        "n_patches": int(len(coords)),
        "no_tissue": bool(seg.get("n_contours", 0) == 0 or len(coords) == 0),
        "mpp": None if mpp != mpp else float(mpp),
        "patch_size_um": None if size_um != size_um else float(size_um),
        "seconds_segment": seg.get("seconds"),
        "seconds_patch": float(attrs.get("seconds", float("nan"))),
        "seconds_extract": extract.get("seconds"),
    }


def write_qc_summary(
    out_csv: str | os.PathLike,
    slide_ids: list[str],
    segmentation_jsons: list,
    patch_files: list,
    extraction_jsons: list | None = None,
):
    """``qc/summary.csv``: one row per slide; ``no_tissue`` flags slides without tissue or patches."""
    import pandas as pd

    if not (len(slide_ids) == len(segmentation_jsons) == len(patch_files)):
        raise ValueError("write_qc_summary: slide_ids, segmentation_jsons and patch_files differ in length")
    extraction_jsons = list(extraction_jsons) if extraction_jsons else [None] * len(slide_ids)
    rows = [
        summary_row(s, seg, patches, ext)
        for s, seg, patches, ext in zip(slide_ids, segmentation_jsons, patch_files, extraction_jsons)
    ]
    frame = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    write_csv(out_csv, frame)
    empty = frame.loc[frame["no_tissue"], "slide_id"].tolist()
    if empty:
        log.warning("%d slide(s) without tissue patches: %s", len(empty), ", ".join(empty))
    return frame
