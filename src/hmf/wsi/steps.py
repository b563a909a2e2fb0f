"""The per-slide segment and patch steps, from a slide file to their output files.

These are what the workflow scripts call. Neither imports torch, so jobs start quickly.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from hmf.atomic import write_json
from hmf.wsi.contours_io import read_contours, write_contours
from hmf.wsi.patching import coords_attributes, patch_slide, write_coords
from hmf.wsi.qc import write_mask_picture, write_stitch_picture
from hmf.wsi.segmentation import segment_slide
from hmf.wsi.settings import resolve_preprocessing
from hmf.wsi.slide import open_slide

log = logging.getLogger(__name__)


def run_segmentation(
    slide_path: str | os.PathLike,
    slide_id: str,
    preprocessing: dict | None,
    contours_geojson: str | os.PathLike,
    mask_jpg: str | os.PathLike,
    stats_json: str | os.PathLike,
    mpp: float | None = None,
) -> dict:
    """Segment one slide; write its contours (GeoJSON), QC mask picture and stats (JSON).

    ``mpp`` is the sample sheet's per-slide resolution override (None: read the slide's).
    Returns the stats written to ``stats_json``.
    """
    start = time.perf_counter()
    settings = resolve_preprocessing(preprocessing)
    with open_slide(slide_path, name=slide_id, mpp=mpp) as slide:
        seg = segment_slide(slide, settings.segmentation)
        write_contours(contours_geojson, seg.tissues, slide_id)
        write_mask_picture(mask_jpg, slide, seg.tissues, settings.segmentation.vis_downsample)
        area_px = seg.tissue_area_px()
        stats = {
            "slide_id": slide_id,
            "path": str(slide_path),
            "width": slide.dimensions[0],
            "height": slide.dimensions[1],
            "level_count": slide.level_count,
            "mpp": slide.mpp,
            "mpp_source": slide.mpp_source,
            "segmentation_source": seg.source,
            "segmentation_downsample": list(seg.downsample),
            "segmentation_image_size": list(seg.image_size),
            "n_contours": len(seg.tissues),
            "n_holes": seg.n_holes,
            "no_tissue": len(seg.tissues) == 0,
            "tissue_area_px": area_px,
            "tissue_area_mm2": None if slide.mpp is None else area_px * slide.mpp**2 / 1e6,
            "preset": settings.preset,
            "params": settings.as_dict()["segmentation"],
            "seconds_segmentation": seg.seconds,
        }
        stats["seconds"] = time.perf_counter() - start
    write_json(stats_json, stats)
    if not seg.tissues:
        log.warning("slide %s: no tissue found (preset %s); it will have no patches", slide_id, settings.preset)
    return stats


def run_patching(
    slide_path: str | os.PathLike,
    slide_id: str,
    preprocessing: dict | None,
    contours_geojson: str | os.PathLike,
    patches_h5: str | os.PathLike,
    stitch_jpg: str | os.PathLike,
    mpp: float | None = None,
) -> int:
    """Patch one slide from its contours; write the coordinates file and the stitch picture.

    A slide without tissue gets a coordinates file with zero rows. Returns the patch count.
    """
    start = time.perf_counter()
    settings = resolve_preprocessing(preprocessing)
    tissues = read_contours(contours_geojson)
    with open_slide(slide_path, name=slide_id, mpp=mpp) as slide:
        coords, geometry, _ = patch_slide(slide, tissues, settings.patching)
        write_stitch_picture(stitch_jpg, slide, coords, geometry.ref_size, settings.patching.stitch_downsample)
        attrs = coords_attributes(
            slide, geometry, settings.patching, str(Path(patches_h5).parent), len(tissues), time.perf_counter() - start
        )
    write_coords(patches_h5, coords, attrs)
    return int(len(coords))
