"""rules/preprocess.smk run by Snakemake on the real slide and a blank one, through the minimal
Snakefile of tests/standalone.py (it defines the names rules/common.smk provides)."""

from __future__ import annotations

import json
import sys

import h5py
import pandas as pd
import pytest
from PIL import Image
from standalone import StandalonePreprocessing


@pytest.mark.skipif(sys.platform != "linux", reason="runs Snakemake with the local executor")
def test_preprocess_rules_end_to_end(aperio_slide, tmp_path):
    blank = tmp_path / "blank.png"
    Image.new("RGB", (600, 500), (246, 246, 246)).save(blank)
    run = StandalonePreprocessing(
        tmp_path,
        {"cmu": aperio_slide, "blank": blank},
        {
            "preprocessing": {"preset": "bwh_biopsy", "patching": {"patch_size": 512, "step_size": 512}},
            "features": {"weights": "random", "device": "cpu"},  # one slide per job: the schema's default
        },
        mpp={"blank": 0.5},
    )
    targets = [
        "results/t/qc/summary.csv",
        *(run.features(slide).pt for slide in ("cmu", "blank")),
        *(f"results/t/{kind}/{slide}.jpg" for kind in ("stitches", "masks") for slide in ("cmu", "blank")),
    ]
    proc = run.snakemake(*targets, cores="2", timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    summary = pd.read_csv(tmp_path / "results/t/qc/summary.csv").set_index("slide_id")
    assert bool(summary.loc["blank", "no_tissue"]) and summary.loc["blank", "n_patches"] == 0
    assert not bool(summary.loc["cmu", "no_tissue"]) and summary.loc["cmu", "n_patches"] > 5
    assert summary["seconds_extract"].notna().all() and summary["seconds_segment"].notna().all()
    with h5py.File(tmp_path / "results/t/features/resnet50_trunc/h5_files/cmu.h5") as fh:
        assert fh["features"].shape == (summary.loc["cmu", "n_patches"], 1024)
    with h5py.File(tmp_path / "results/t/features/resnet50_trunc/h5_files/blank.h5") as fh:
        assert fh["features"].shape == (0, 1024)
    assert (tmp_path / "logs/t/extract_features/cmu.log").read_text().count("features") >= 1
    assert (tmp_path / "benchmarks/t/segment_and_patch/cmu.tsv").exists()
    stats = json.loads((tmp_path / "results/t/segmentation/cmu.json").read_text())
    assert stats["n_contours"] >= 1 and stats["mpp_source"] == "metadata"
    # A second run has nothing to do.
    again = run.snakemake(*targets, cores="2", args=("--dry-run",), timeout=120)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
