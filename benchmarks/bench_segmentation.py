"""Segmentation and patching seconds per slide (real Aperio slide, and a 4x-tiled copy).

    .venv/bin/python benchmarks/bench_segmentation.py [--repeats 3]

Prints, per slide and preset, the best-of-N seconds of segmentation (mask, contours) and of
patching (grid and contour tests), excluding the QC pictures, then the full
run_segmentation + run_patching steps (with pictures and file writing).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from hmf.demo.sources import aperio_slide
from hmf.demo.writer import write_pyramid_tiff
from hmf.wsi.patching import patch_slide
from hmf.wsi.segmentation import segment_slide
from hmf.wsi.settings import resolve_preprocessing
from hmf.wsi.slide import open_slide
from hmf.wsi.steps import run_patching, run_segmentation


def tiled_copy(src: Path, out: Path) -> Path:
    """A 2 x 2 mosaic of the slide as a tiled, pyramidal TIFF (4 levels, mpp tags)."""
    slide = open_slide(src)
    rgb = slide.read_region((0, 0), 0, slide.dimensions)
    top, bottom = np.concatenate([rgb, rgb[:, ::-1]], 1), np.concatenate([rgb[::-1], rgb[::-1, ::-1]], 1)
    write_pyramid_tiff(out, np.concatenate([top, bottom], 0), slide.mpp, downsamples=(1, 2, 4, 8))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_seg_"))
    slides = {
        "cmu (2220x2967, 1 level)": aperio_slide(),
        "mosaic (4440x5934, 4 levels)": tiled_copy(aperio_slide(), work / "mosaic.tif"),
    }
    for name, path in slides.items():
        for preset in ("bwh_biopsy", "tcga"):
            settings = resolve_preprocessing({"preset": preset})
            slide = open_slide(path)
            seg_s, patch_s = [], []
            for _ in range(args.repeats):
                start = time.perf_counter()
                seg = segment_slide(slide, settings.segmentation)
                seg_s.append(time.perf_counter() - start)
                start = time.perf_counter()
                coords, _, _ = patch_slide(slide, seg.tissues, settings.patching)
                patch_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            run_segmentation(path, "b", {"preset": preset}, work / "c.geojson", work / "m.jpg", work / "s.json")
            run_patching(path, "b", {"preset": preset}, work / "c.geojson", work / "p.h5", work / "st.jpg")
            steps = time.perf_counter() - start
            print(
                f"{name:32s} {preset:11s} seg from {seg.source:9s}: segmentation {min(seg_s):.3f} s, "
                f"patching {min(patch_s):.3f} s ({len(coords)} patches, {len(seg.tissues)} contours); "
                f"both steps with pictures and files {steps:.2f} s"
            )


if __name__ == "__main__":
    main()
