"""Demo slides from real H&E: OpenSlide opens them with the promised pyramid and mpp, the
tumour painted on each slide has the physical size its label says, bytes depend only on the
seed, and the label files read back through the real loaders."""

from __future__ import annotations

import hashlib
import math

import cv2
import numpy as np
import openslide
import pytest

from hmf.data.sample_sheet import load_camelyon17, load_tcga
from hmf.demo.camelyon17 import size_label
from hmf.demo.labels import write_labels
from hmf.demo.plan import find_slide, plan_from_config, planned_sample_sheet
from hmf.demo.tissue import render_slide
from hmf.demo.writer import write_slide

CFG = {"kind": "camelyon17", "n_patients": 25, "seed": 17}


@pytest.fixture(scope="module")
def cohort():
    return plan_from_config(CFG)


@pytest.fixture(scope="module")
def one_per_label(cohort):
    chosen = {}
    for plan in cohort:
        chosen.setdefault(plan.slide_label, plan)
    return chosen


@pytest.fixture(scope="module")
def written(one_per_label, aperio_slide, tumour_image, tmp_path_factory):
    """One slide per label, written to disk: {label: (plan, path, rendered)}."""
    out = tmp_path_factory.mktemp("demo_slides")
    result = {}
    for label, plan in one_per_label.items():
        path = out / f"{plan.slide_id}.tif"
        result[label] = (plan, path, write_slide(plan, path, aperio_slide, tumour_image))
    return result


def largest_dimensions_um(changed: np.ndarray, mpp: float) -> list[float]:
    """Largest dimension (um) of every connected region of ``changed``, largest first."""
    closed = cv2.morphologyEx(changed.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    contours, _ = cv2.findContours(closed, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    sizes = []
    for contour in contours:
        hull = cv2.convexHull(contour).reshape(-1, 2).astype(float)
        diff = hull[:, None] - hull[None]
        sizes.append((math.sqrt((diff**2).sum(-1).max()) + 1.0) * mpp)
    return sorted(sizes, reverse=True)


def test_slides_open_in_openslide_with_pyramid_and_mpp(written):
    for plan, path, _ in written.values():
        with openslide.OpenSlide(path) as slide:
            assert slide.level_count >= 3
            assert slide.dimensions == (plan.width, plan.height)
            assert slide.level_downsamples[:3] == pytest.approx((1.0, 4.0, 16.0))
            assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(plan.mpp, rel=1e-6)
            assert float(slide.properties["openslide.mpp-y"]) == pytest.approx(plan.mpp, rel=1e-6)
            assert slide.properties["openslide.vendor"] == "generic-tiff"
        assert path.stat().st_size < 3_000_000


def test_tumour_extent_matches_the_label(written, aperio_slide, tumour_image):
    """Measure the tumour from pixels: where the slide differs from the same slide rendered
    without tumour, and check the file on disk shows those pixels."""
    for label, (plan, path, rendered) in written.items():
        clean = render_slide(plan, aperio_slide, tumour_image, include_tumour=False).rgb
        changed = (rendered.rgb != clean).any(axis=2)
        sizes = largest_dimensions_um(changed, plan.mpp)
        largest = sizes[0] if sizes else 0.0
        assert size_label(largest) == label, (plan.slide_id, sizes[:3])
        assert largest == pytest.approx(plan.largest_deposit_um, abs=5 * plan.mpp)
        with openslide.OpenSlide(path) as slide:
            disk = np.asarray(slide.read_region((0, 0), 0, slide.dimensions).convert("RGB")).astype(float)
        assert np.abs(disk - rendered.rgb).mean() < 6.0  # JPEG keeps the rendered pixels
        if label == "negative":
            assert not changed.any() and not rendered.tumour_mask.any()
            continue
        inside = rendered.tumour_mask
        assert np.abs(disk - clean)[inside].mean() > 15.0  # tumour on disk, unlike normal tissue
        assert np.abs(disk - clean)[~changed].mean() < 6.0


def test_same_seed_same_bytes_other_seed_other_bytes(written, aperio_slide, tumour_image, tmp_path):
    plan, path, _ = written["itc"]
    again = tmp_path / "again.tif"
    write_slide(plan, again, aperio_slide, tumour_image)
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    assert digest(again) == digest(path)
    other = find_slide(plan_from_config({**CFG, "seed": 18}), plan.slide_id)
    write_slide(other, tmp_path / "other.tif", aperio_slide, tumour_image)
    assert digest(tmp_path / "other.tif") != digest(path)
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_stage_labels_round_trip(cohort, tmp_path):
    path = tmp_path / "stage_labels.csv"
    write_labels(CFG, path)
    lines = path.read_text().splitlines()
    assert lines[0] == "patient,stage"
    assert lines[1] == f"patient_000.zip,{cohort[0].patient_label}"
    assert lines[2:7] == [f"patient_000_node_{p.node}.tif,{p.slide_label}" for p in cohort[:5]]
    assert len(lines) == 1 + 25 * 6
    loaded = load_camelyon17(path, tmp_path / "slides").sort_values("slide_id").reset_index(drop=True)
    planned = planned_sample_sheet({**CFG, "slide_dir": str(tmp_path / "slides")})
    columns = ["slide_id", "patient_id", "path", "slide_label", "patient_label", "node"]
    assert loaded[columns].equals(planned[columns])


def test_tcga_slides_idc_nests_ilc_single_cells(aperio_slide, tumour_image, tmp_path):
    cfg = {"kind": "tcga", "n_patients": 4, "seed": 5}
    plans = plan_from_config(cfg)
    slide_dir = tmp_path / "slides"
    chosen = {}
    for plan in plans:
        chosen.setdefault(plan.patient_label, plan)
    for label, plan in chosen.items():
        rendered = write_slide(plan, slide_dir / f"{plan.slide_id}.tif", aperio_slide, tumour_image)
        clean = render_slide(plan, aperio_slide, tumour_image, include_tumour=False).rgb
        changed = (rendered.rgb != clean).any(axis=2)
        sizes = largest_dimensions_um(changed, plan.mpp)
        # radius of the widest solid tumour area: nests are wide, single cells are not
        solid_um = cv2.distanceTransform(changed.astype(np.uint8), cv2.DIST_L2, 5).max() * plan.mpp
        if label == "IDC":  # a few large cohesive nests
            assert sizes[0] >= 250 and len(sizes) <= 12 and solid_um >= 60, (sizes[:12], solid_um)
        else:  # hundreds of separate small cells, alone or in single file
            assert len(sizes) >= 100 and np.median(sizes) < 25 and solid_um <= 10, (len(sizes), solid_um)
    write_labels(cfg, tmp_path / "labels.csv")
    loaded = load_tcga(slide_dir, tmp_path / "labels.csv")
    planned = planned_sample_sheet({**cfg, "slide_dir": str(slide_dir)})
    planned = planned[planned["slide_id"].isin(loaded["slide_id"])].reset_index(drop=True)
    columns = ["slide_id", "patient_id", "path", "slide_label", "patient_label", "node"]
    assert loaded[columns].equals(planned[columns])
