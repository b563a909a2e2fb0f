"""Patching: contour tests, holes, padding and grid on known geometry; the real slide end to end."""

from __future__ import annotations

import dataclasses
import json

import h5py
import numpy as np
import pytest
from PIL import Image

from hmf.wsi.contours_io import read_contours
from hmf.wsi.patching import PatchGeometry, contour_patches, passes_contour, read_coords, resolve_geometry
from hmf.wsi.qc import write_qc_summary
from hmf.wsi.segmentation import Tissue, as_cv
from hmf.wsi.settings import resolve_preprocessing
from hmf.wsi.slide import SlideError, open_slide
from hmf.wsi.steps import run_patching, run_segmentation


def patching_params(**overrides):
    """Patching settings: the schema's defaults and the default preset, with ``overrides``."""
    return dataclasses.replace(resolve_preprocessing({}).patching, **overrides)


def box(x0, y0, x1, y1):
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.int64)


def geometry(ps=256, step=256):
    return PatchGeometry(
        patch_level=0,
        patch_size=ps,
        ref_size=(ps, ps),
        step=(step, step),
        downsample=(1.0, 1.0),
        level_dim=(1000, 1000),
        mpp=None,
        patch_size_um=None,
    )


def test_contour_tests_any_all_centre_corner():
    corner = np.array([0, 0])
    # Patch 256: centre (128, 128), four points at +-64: (64, 64), (192, 192), (192, 64), (64, 192).
    only_one_point = as_cv(box(50, 50, 80, 80))
    assert passes_contour(only_one_point, corner, 256, "four_pt")  # any of the four
    assert not passes_contour(only_one_point, corner, 256, "four_pt_hard")
    assert not passes_contour(only_one_point, corner, 256, "center")
    assert not passes_contour(only_one_point, corner, 256, "basic")
    corner_region = as_cv(box(0, 0, 100, 100))  # the top-left corner lies on its edge
    assert passes_contour(corner_region, corner, 256, "basic")
    assert not passes_contour(corner_region, corner, 256, "center")
    centre_only = as_cv(box(120, 120, 140, 140))
    assert passes_contour(centre_only, corner, 256, "center")
    assert not passes_contour(centre_only, corner, 256, "four_pt")
    everything = as_cv(box(0, 0, 300, 300))
    assert all(passes_contour(everything, corner, 256, fn) for fn in ("four_pt", "four_pt_hard", "center", "basic"))


def test_patch_with_centre_in_a_hole_is_dropped():
    hole = box(256 + 100, 256 + 100, 256 + 160, 256 + 160)  # holds the centre of patch (256, 256)
    tissue = Tissue(contour=box(0, 0, 999, 999), holes=[hole])
    coords = contour_patches(tissue, geometry(), (1000, 1000), "four_pt", True)
    assert [256, 256] not in coords.tolist() and len(coords) == 15
    off_centre = Tissue(contour=box(0, 0, 999, 999), holes=[box(260, 260, 300, 300)])
    assert len(contour_patches(off_centre, geometry(), (1000, 1000), "four_pt", True)) == 16


def test_padding_allows_patches_past_the_edge_and_grid_starts_at_the_bounding_box():
    tissue = Tissue(contour=box(0, 0, 999, 999))
    padded = contour_patches(tissue, geometry(), (1000, 1000), "four_pt", True)
    assert sorted(set(padded[:, 0].tolist())) == [0, 256, 512, 768]
    inside = contour_patches(tissue, geometry(), (1000, 1000), "four_pt", False)
    assert sorted(set(inside[:, 0].tolist())) == [0, 256, 512] and len(inside) == 9
    assert (inside + 256 <= 1000).all()
    shifted = contour_patches(Tissue(contour=box(37, 11, 700, 700)), geometry(step=128), (1000, 1000), "four_pt", True)
    assert ((shifted - [37, 11]) % 128 == 0).all()


def test_real_slide_patches_inside_tissue_on_grid_with_clam_attributes(aperio_slide, tmp_path):
    cfg = {"preset": "bwh_biopsy", "patching": {"patch_size": 256, "step_size": 256, "use_padding": False}}
    stats = run_segmentation(aperio_slide, "cmu", cfg, tmp_path / "c.geojson", tmp_path / "m.jpg", tmp_path / "s.json")
    assert stats["n_contours"] >= 1 and 0.3 < stats["tissue_area_mm2"] < 1.2
    geo = json.loads((tmp_path / "c.geojson").read_text())
    assert geo["type"] == "FeatureCollection"
    props = geo["features"][0]["properties"]
    assert props["objectType"] == "annotation" and props["classification"]["name"] == "Tissue"
    ring = geo["features"][0]["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1]
    n = run_patching(aperio_slide, "cmu", cfg, tmp_path / "c.geojson", tmp_path / "p.h5", tmp_path / "st.jpg")
    coords, attrs = read_coords(tmp_path / "p.h5")
    assert n == len(coords) > 20
    with h5py.File(tmp_path / "p.h5") as fh:
        assert fh["coords"].dtype == np.int64
        for key in (
            "patch_size",
            "patch_level",
            "downsample",
            "downsampled_level_dim",
            "level_dim",
            "name",
            "save_path",
            "mpp",
            "patch_size_um",
        ):
            assert key in fh["coords"].attrs, key
    assert attrs["patch_size"] == 256 and attrs["patch_level"] == 0 and attrs["name"] == "cmu"
    assert attrs["patch_size_um"] == pytest.approx(256 * 0.499)
    assert (coords >= 0).all() and (coords[:, 0] + 256 <= 2220).all() and (coords[:, 1] + 256 <= 2967).all()
    assert np.array_equal(coords, np.unique(coords, axis=0))  # sorted, no duplicates
    tissues = read_contours(tmp_path / "c.geojson")
    for x, y in coords:
        owners = [t for t in tissues if passes_contour(as_cv(t.contour), np.array([x, y]), 256, "four_pt")]
        assert owners, (x, y)
        bx, by = as_cv(owners[0].contour).reshape(-1, 2).min(axis=0)
        assert (x - bx) % 256 == 0 and (y - by) % 256 == 0
    assert (tmp_path / "st.jpg").stat().st_size > 1000 and (tmp_path / "m.jpg").stat().st_size > 1000


def test_mpp_mode_reads_the_right_field_of_view(aperio_slide):
    slide = open_slide(aperio_slide)
    geo = resolve_geometry(slide, patching_params(mode="mpp", target_mpp=1.0, patch_size=224))
    assert geo.patch_level == 0 and geo.patch_size == round(224 * 1.0 / 0.499)
    assert geo.patch_size_um == pytest.approx(224.0, rel=0.01) and geo.target_mpp == 1.0
    overridden = open_slide(aperio_slide, mpp=0.25)
    assert resolve_geometry(overridden, patching_params(mode="mpp", target_mpp=0.5, patch_size=256)).patch_size == 512


def test_mpp_mode_without_resolution_names_the_slide(tumour_image, tmp_path):
    slide = open_slide(tumour_image, name="png_region")
    assert slide.mpp is None
    with pytest.raises(SlideError, match="png_region.*no mpp"):
        resolve_geometry(slide, patching_params(mode="mpp", target_mpp=0.5))
    assert (
        resolve_geometry(open_slide(tumour_image, mpp=0.5), patching_params(mode="mpp", target_mpp=0.5)).patch_size
        == 256
    )


def test_slide_without_tissue_gets_an_empty_coords_file_and_a_qc_flag(aperio_slide, tmp_path):
    blank = tmp_path / "blank.png"
    Image.new("RGB", (900, 700), (245, 245, 245)).save(blank)
    cfg = {"preset": "bwh_biopsy"}
    out = {}
    for sid, path in (("blank", blank), ("cmu", aperio_slide)):
        run_segmentation(
            path,
            sid,
            cfg,
            tmp_path / f"{sid}.geojson",
            tmp_path / f"{sid}.jpg",
            tmp_path / f"{sid}.json",
            mpp=0.5 if sid == "blank" else None,
        )
        out[sid] = run_patching(
            path,
            sid,
            cfg,
            tmp_path / f"{sid}.geojson",
            tmp_path / f"{sid}.h5",
            tmp_path / f"{sid}_stitch.jpg",
            mpp=0.5 if sid == "blank" else None,
        )
    assert out["blank"] == 0 and out["cmu"] > 0
    with h5py.File(tmp_path / "blank.h5") as fh:
        assert fh["coords"].shape == (0, 2) and fh["coords"].attrs["patch_size"] == 256
    frame = write_qc_summary(
        tmp_path / "qc" / "summary.csv",
        ["blank", "cmu"],
        [tmp_path / "blank.json", tmp_path / "cmu.json"],
        [tmp_path / "blank.h5", tmp_path / "cmu.h5"],
    )
    assert frame["no_tissue"].tolist() == [True, False]
    assert frame.loc[1, "n_patches"] == out["cmu"] and frame.loc[0, "tissue_area_mm2"] == 0
    assert (tmp_path / "qc" / "summary.csv").read_text().startswith("slide_id,tissue_area_mm2,n_contours")
