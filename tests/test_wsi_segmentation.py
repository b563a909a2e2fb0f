"""Segmentation: area-filter units, holes and id selection on synthetic masks; the real slide."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from hmf.config import ConfigError
from hmf.wsi.presets import PRESETS
from hmf.wsi.segmentation import reference_area, segment_slide, tissue_from_mask, tissue_mask
from hmf.wsi.settings import resolve_preprocessing
from hmf.wsi.slide import open_slide


def seg_params(**overrides):
    """Segmentation settings: the tcga preset and the schema's defaults, with ``overrides``."""
    return dataclasses.replace(resolve_preprocessing({"preset": "tcga"}).segmentation, **overrides)


def square_mask(size=1200, squares=(), holes=()):
    mask = np.zeros((size, size), np.uint8)
    for x0, y0, x1, y1 in squares:
        mask[y0:y1, x0:x1] = 255
    for x0, y0, x1, y1 in holes:
        mask[y0:y1, x0:x1] = 0
    return mask


def test_area_filter_is_in_units_of_a_512_level0_patch_at_the_mask_scale():
    mask = square_mask(squares=[(100, 100, 401, 401)])  # contour area 300 x 300 = 90000 px
    params = seg_params(a_t=0.3, a_h=0, max_n_holes=0)
    assert reference_area(params, (1.0, 1.0)) == 512 * 512
    assert len(tissue_from_mask(mask, params, (1.0, 1.0))) == 1  # 90000 > 0.3 * 262144
    assert tissue_from_mask(mask, seg_params(a_t=0.35), (1.0, 1.0)) == []
    # At a 4x downsampled mask one reference patch is 128 x 128 = 16384 px.
    assert reference_area(params, (4.0, 4.0)) == 16384
    assert len(tissue_from_mask(mask, seg_params(a_t=5), (4.0, 4.0))) == 1  # 81920 < 90000
    assert tissue_from_mask(mask, seg_params(a_t=6), (4.0, 4.0)) == []  # 98304 > 90000


def test_holes_largest_first_limited_by_count_and_area_and_subtracted_from_tissue():
    mask = square_mask(
        squares=[(100, 100, 1101, 1101)], holes=[(200, 200, 401, 401), (600, 600, 701, 701), (900, 900, 906, 906)]
    )
    ds = (1.0, 1.0)
    tissues = tissue_from_mask(mask, seg_params(a_t=1, a_h=0.01, max_n_holes=8), ds)
    assert len(tissues) == 1
    # 0.01 * 262144 = 2621 px: the 6 x 6 hole is dropped, the others kept, largest first.
    areas = [cv2.contourArea(h.astype(np.int32).reshape(-1, 1, 2)) for h in tissues[0].holes]
    assert len(areas) == 2 and areas[0] > areas[1]
    assert areas[0] == pytest.approx(200 * 200, rel=0.05)
    one = tissue_from_mask(mask, seg_params(a_t=1, a_h=0.01, max_n_holes=1), ds)[0]
    assert len(one.holes) == 1
    assert cv2.contourArea(one.holes[0].astype(np.int32).reshape(-1, 1, 2)) == pytest.approx(areas[0])
    # The tissue filter subtracts every hole (kept or not): 1000^2 - holes is < 3.7 reference patches.
    assert tissue_from_mask(mask, seg_params(a_t=3.7, a_h=0.01, max_n_holes=1), ds) == []
    assert len(tissue_from_mask(mask, seg_params(a_t=3.6, a_h=0.01, max_n_holes=1), ds)) == 1


def test_keep_and_exclude_ids_index_the_kept_contours():
    mask = square_mask(squares=[(50, 50, 400, 400), (600, 50, 950, 400), (50, 600, 400, 950)])
    base = seg_params(a_t=0.1)
    all_three = tissue_from_mask(mask, base, (1.0, 1.0))
    assert len(all_three) == 3
    starts = [tuple(t.contour.min(axis=0)) for t in all_three]
    kept = tissue_from_mask(mask, seg_params(a_t=0.1, keep_ids=(0, 2)), (1.0, 1.0))
    assert [tuple(t.contour.min(axis=0)) for t in kept] == [starts[0], starts[2]]
    dropped = tissue_from_mask(mask, seg_params(a_t=0.1, exclude_ids=(1,)), (1.0, 1.0))
    assert [tuple(t.contour.min(axis=0)) for t in dropped] == [starts[0], starts[2]]
    with pytest.raises(ValueError, match="keep_ids"):
        tissue_from_mask(mask, seg_params(a_t=0.1, keep_ids=(5,)), (1.0, 1.0))


def test_tissue_mask_thresholds_saturation_and_otsu():
    rgb = np.full((200, 200, 3), 240, np.uint8)
    rgb[50:150, 50:150] = (200, 80, 160)  # saturated pink "tissue"
    mask = tissue_mask(rgb, seg_params(sthresh=15, mthresh=5, close=2))
    assert mask[100, 100] == 255 and mask[10, 10] == 0
    otsu = tissue_mask(rgb, seg_params(use_otsu=True, mthresh=5, close=0))
    assert otsu[100, 100] == 255 and otsu[10, 10] == 0


def test_presets_and_overrides():
    s = resolve_preprocessing({"preset": "tcga", "segmentation": {"sthresh": 20}})
    assert s.segmentation.sthresh == 20 and s.segmentation.mthresh == PRESETS["tcga"]["mthresh"]
    assert s.segmentation.a_t == 16 and s.patching.contour_fn == "four_pt"
    r = resolve_preprocessing({"preset": "bwh_resection", "patching": {"contour_fn": "center"}})
    assert r.segmentation.a_t == 100 and r.patching.contour_fn == "center"
    with pytest.raises(ConfigError, match="preprocessing.preset"):
        resolve_preprocessing({"preset": "nope"})
    with pytest.raises(ConfigError, match="preprocessing.segmentation.sthres: unknown key"):
        resolve_preprocessing({"segmentation": {"sthres": 3}})
    with pytest.raises(ConfigError, match="preprocessing.segmentation.mthresh: 4: the median blur kernel must be odd"):
        resolve_preprocessing({"segmentation": {"mthresh": 4}})
    with pytest.raises(ConfigError, match="preprocessing.segmentation.sthresh"):
        resolve_preprocessing({"segmentation": {"sthresh": 256}})
    with pytest.raises(ConfigError, match="preprocessing.patching.target_mpp: mode 'mpp' needs target_mpp"):
        resolve_preprocessing({"patching": {"mode": "mpp"}})
    with pytest.raises(ConfigError, match="preprocessing.patching.contour_fn"):
        resolve_preprocessing({"patching": {"contour_fn": "three_pt"}})


def test_settings_match_the_former_defaults():
    """The schema's defaults and the tcga preset give what the workflow has always used."""
    settings = resolve_preprocessing({"preset": "tcga"})
    assert settings.as_dict() == {
        "preset": "tcga",
        "segmentation": dict(
            sthresh=8,
            mthresh=7,
            close=4,
            use_otsu=False,
            a_t=16,
            a_h=4,
            max_n_holes=8,
            keep_ids=[],
            exclude_ids=[],
            seg_level=-1,
            ref_patch_size=512,
            max_seg_dim=16384,
            vis_downsample=64.0,
        ),
        "patching": dict(
            mode="level",
            patch_level=0,
            patch_size=256,
            step_size=None,
            target_mpp=None,
            mpp_tolerance=0.05,
            contour_fn="four_pt",
            use_padding=True,
            stitch_downsample=64,
        ),
    }
    assert isinstance(settings.segmentation.vis_downsample, float) and settings.patching.step == 256
    assert resolve_preprocessing({"segmentation": {"keep_ids": [2, 0]}}).segmentation.keep_ids == (2, 0)


def test_real_slide_tissue_found_with_plausible_area(aperio_slide):
    slide = open_slide(aperio_slide)
    assert slide.mpp == pytest.approx(0.499)
    seg = segment_slide(slide, resolve_preprocessing({"preset": "bwh_biopsy"}).segmentation)
    assert len(seg.tissues) >= 1 and seg.source == "level 0"
    area_mm2 = seg.tissue_area_px() * slide.mpp**2 / 1e6
    slide_mm2 = 2220 * 2967 * 0.499**2 / 1e6
    # The biopsy strip covers roughly a third of this field of view.
    assert 0.2 * slide_mm2 < area_mm2 < 0.7 * slide_mm2
    for t in seg.tissues:
        assert t.contour[:, 0].min() >= 0 and t.contour[:, 0].max() < 2220
        assert t.contour[:, 1].min() >= 0 and t.contour[:, 1].max() < 2967


def test_large_level_falls_back_to_a_thumbnail(aperio_slide):
    slide = open_slide(aperio_slide)
    params = seg_params(max_seg_dim=1000, sthresh=15, mthresh=3, close=0, a_t=1, a_h=1)
    seg = segment_slide(slide, params)
    assert seg.source == "thumbnail"
    assert seg.downsample[0] == pytest.approx(2220 / round(2220 / 64))
    assert seg.image_size == (round(2220 / 64), round(2967 / 64))
    assert len(seg.tissues) >= 1


def test_every_schema_default_is_accepted():
    """The `preprocessing:` section as the workflow hands it over (schema defaults filled in)."""
    from pathlib import Path

    from snakemake.utils import validate

    section: dict = {"preset": "tcga"}
    validate(section, str(Path(__file__).resolve().parents[1] / "config/schema/preprocessing.schema.yaml"))
    assert section["patching"]["patch_size"] == 256
    settings = resolve_preprocessing(section)
    assert settings.segmentation.a_t == 16 and settings.patching.contour_fn == "four_pt"
