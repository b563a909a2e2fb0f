"""The report's size does not grow with the number of slides: the QC part of the report, built by
the workflow's own rules from a synthetic QC set (pictures, QC stats and feature files; no
slides, no training), is about as large for 500 slides as for the demo's 125."""

from __future__ import annotations

import json
import re
import shutil
from io import BytesIO
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from conftest import copy_workflow, run_snakemake
from PIL import Image

PICTURE_POOL = 12


def picture_pool(rng: np.random.Generator, size=(1024, 760)) -> list[bytes]:
    """JPEG bytes of tissue-like pictures (smooth blobs plus grain) the size of the demo's masks."""
    pictures = []
    for _ in range(PICTURE_POOL):
        low = rng.random((size[1] // 32, size[0] // 32, 3))
        image = np.asarray(Image.fromarray((low * 255).astype(np.uint8)).resize(size, Image.Resampling.BICUBIC))
        image = np.clip(image.astype(np.int16) + rng.integers(-40, 40, image.shape), 0, 255).astype(np.uint8)
        buffer = BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=90)
        pictures.append(buffer.getvalue())
    return pictures


def write_qc_set(workdir: Path, name: str, slides: list[str], seed: int = 0) -> None:
    """The inputs of the qc_summary and qc_review rules for ``slides``, as preprocessing writes
    them: segmentation stats, patch coordinates, extraction stats, feature files, masks and
    stitches. A few slides have no tissue, little tissue or an unusual patch count."""
    rng = np.random.default_rng(seed)
    pool = picture_pool(rng)
    results = workdir / "results" / name
    features = results / "features" / "resnet50_trunc"
    for sub in ("segmentation", "patches", "masks", "stitches"):
        (results / sub).mkdir(parents=True, exist_ok=True)
    for sub in ("stats", "h5_files"):
        (features / sub).mkdir(parents=True, exist_ok=True)
    for i, slide in enumerate(slides):
        kind = i % 50
        n = 0 if kind == 7 else 5000 if kind == 13 else int(rng.integers(80, 160))
        area = 0.0 if n == 0 else 0.02 if kind == 21 else float(rng.uniform(3, 6))
        (results / "segmentation" / f"{slide}.json").write_text(
            json.dumps({"tissue_area_mm2": area, "n_contours": 0 if n == 0 else 2, "n_holes": 1, "seconds": 0.1})
        )
        coords = np.stack([np.arange(n) * 256, np.zeros(n)], 1).astype(np.int64)
        with h5py.File(results / "patches" / f"{slide}.h5", "w") as fh:
            dset = fh.create_dataset("coords", data=coords.reshape(-1, 2), maxshape=(None, 2))
            dset.attrs.update({"patch_size": 256, "patch_level": 0, "mpp": 0.5, "patch_size_um": 128.0, "seconds": 0.1})
        (features / "stats" / f"{slide}.json").write_text(
            json.dumps({"slide_id": slide, "n_patches": n, "seconds": 0.5})
        )
        with h5py.File(features / "h5_files" / f"{slide}.h5", "w") as fh:
            fh["features"] = np.zeros((n, 4), np.float32)
            fh["coords"] = coords
        for sub in ("masks", "stitches"):
            (results / sub / f"{slide}.jpg").write_bytes(pool[int(rng.integers(PICTURE_POOL))])


def embedded_files(html: str) -> list[str]:
    match = re.search(r"var results = (\{.*?\});\s*</script>", html, re.S)
    assert match, "no results in the report"
    return [Path(entry["filename"]).name for entry in json.loads(match.group(1)).values()]


def qc_report(workdir: Path, n_patients: int) -> tuple[int, Path, list[str]]:
    """Size, path and embedded file names of the QC-only report of a demo-shaped cohort of
    ``n_patients`` x 5 slides, built from a synthetic QC set by qc_summary and qc_review."""
    from hmf.demo.plan import planned_sample_sheet

    name = f"qc_size_{n_patients}"
    config = yaml.safe_load((workdir / "config" / "config.yaml").read_text())
    config["dataset"].update(
        {
            "name": name,
            "stage_labels": f"resources/demo/{name}/stage_labels.csv",
            "slide_dir": f"resources/demo/{name}/slides",
        }
    )
    config["demo"]["n_patients"] = n_patients
    config_path = workdir / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump(config))
    slides = list(planned_sample_sheet({**config["demo"], "slide_dir": config["dataset"]["slide_dir"]})["slide_id"])
    write_qc_set(workdir, name, slides)
    results = f"results/{name}"
    targets = (f"{results}/qc/summary.csv", f"{results}/qc/review.html", f"{results}/qc/pictures")
    # Only the QC rules: the synthetic files stand in for preprocessing's outputs.
    args = (
        "--configfile",
        str(config_path),
        "--allowed-rules",
        "qc_summary",
        "feature_index",
        "qc_review",
        "--cores",
        "1",
    )
    report = workdir / f"{name}.html"
    run_snakemake(workdir, *args, *targets, "--report", str(report), "--report-after-run")
    html = report.read_text(encoding="utf-8")
    return report.stat().st_size, report, embedded_files(html)


@pytest.mark.workflow
def test_report_size_does_not_grow_with_the_slides(tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    shutil.rmtree(workdir / "resources", ignore_errors=True)  # no slides: only the QC set
    demo_size, _, demo_files = qc_report(workdir, 25)  # the demo's 125 slides
    size, report, files = qc_report(workdir, 100)  # 500 slides
    qc_slides = 24  # report.qc_slides' default
    for names in (demo_files, files):
        pictures = [n for n in names if n.endswith(".jpg")]
        assert len(pictures) == qc_slides, pictures
        assert {"summary.csv", "review.html"} <= set(names)
    # The flagged slides (no tissue, little tissue, extreme patch counts) come first.
    review = (workdir / "results/qc_size_100/qc/review.csv").read_text()
    assert review.count("\n") == 1 + 500
    assert "no tissue" in review and "little tissue" in review and "many patches" in review
    print(f"QC-only report: {demo_size / 1e6:.2f} MB for 125 slides, {size / 1e6:.2f} MB for 500 slides")
    assert size <= 1.10 * demo_size, (size, demo_size)
    # Each slide's mask and stitch alone would be 500 x 2 pictures of ~40-60 KB.
    assert size < 25e6
