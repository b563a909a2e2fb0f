"""Opening slides: resolution, clear errors for missing, corrupt, truncated and unsupported files."""

from __future__ import annotations

import numpy as np
import pytest

from hmf.wsi.segmentation import segment_slide
from hmf.wsi.settings import resolve_preprocessing
from hmf.wsi.slide import SlideError, mpp_from_properties, open_slide


def test_real_slide_geometry_and_mpp(aperio_slide):
    slide = open_slide(aperio_slide, name="cmu")
    assert slide.dimensions == (2220, 2967) and slide.level_count == 1
    assert slide.mpp == pytest.approx(0.499) and slide.mpp_source == "metadata"
    patch = slide.read_region((100, 200), 0, (64, 32))
    assert patch.shape == (32, 64, 3) and patch.dtype == np.uint8
    assert open_slide(aperio_slide, mpp=0.25).mpp == 0.25
    with pytest.raises(SlideError, match="cmu.*mpp override"):
        open_slide(aperio_slide, name="cmu", mpp=-1.0)


def test_mpp_from_tiff_resolution_tags():
    assert mpp_from_properties({"tiff.ResolutionUnit": "centimeter", "tiff.XResolution": "40000"}) == pytest.approx(
        0.25
    )
    assert mpp_from_properties({"tiff.ResolutionUnit": "inch", "tiff.XResolution": "72"}) is None  # placeholder dpi
    assert mpp_from_properties({}) is None


def test_missing_file(tmp_path):
    with pytest.raises(SlideError, match="gone.*does not exist"):
        open_slide(tmp_path / "gone.svs")


def test_random_bytes_and_unsupported_formats(tmp_path):
    junk = tmp_path / "junk.svs"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(SlideError, match="junk.*not in a format OpenSlide can read"):
        open_slide(junk)
    text = tmp_path / "notes.txt"
    text.write_text("not a slide")
    with pytest.raises(SlideError, match="notes"):
        open_slide(text)
    broken_png = tmp_path / "broken.png"
    broken_png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)
    with pytest.raises(SlideError, match="broken.*not a readable image"):
        open_slide(broken_png)


def test_truncated_slide(aperio_slide, tmp_path):
    data = aperio_slide.read_bytes()
    truncated = tmp_path / "cut.svs"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(SlideError, match="cut"):
        open_slide(truncated)


def test_failing_region_read_names_slide_and_cause(aperio_slide, tmp_path):
    data = bytearray(aperio_slide.read_bytes())
    a, b = int(len(data) * 0.2), int(len(data) * 0.6)
    data[a:b] = bytes(b - a)  # wipe the middle tiles, keep the directories
    damaged = tmp_path / "damaged.svs"
    damaged.write_bytes(bytes(data))
    slide = open_slide(damaged, name="damaged")
    with pytest.raises(SlideError, match=r"slide damaged: reading .* failed: .*JPEG"):
        segment_slide(slide, resolve_preprocessing({"preset": "tcga"}).segmentation)
    with pytest.raises(SlideError, match="level 3 does not exist"):
        slide.read_region((0, 0), 3, (10, 10))
