"""rules/preprocess.smk run by Snakemake on the real slide and a blank one, through a minimal
Snakefile that defines the names rules/common.smk provides."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import pandas as pd
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]

SNAKEFILE = """
import sys
sys.path.insert(0, {src!r})
R = "results/t"
LOGS = "logs/t"
BENCH = "benchmarks/t"
FEATURES_DIR = R + "/features/resnet50_trunc"
_SLIDES = {slides!r}
_PATHS = _SLIDES
_MPP = {mpp!r}
SLIDE_IDS = list(_SLIDES)

include: {helpers!r}
include: {rules!r}

rule all:
    input:
        R + "/qc/summary.csv",
        expand(FEATURES_DIR + "/pt_files/{{slide}}.pt", slide=SLIDE_IDS),
        expand(R + "/stitches/{{slide}}.jpg", slide=SLIDE_IDS),
        expand(R + "/masks/{{slide}}.jpg", slide=SLIDE_IDS),
"""


@pytest.mark.skipif(sys.platform != "linux", reason="runs Snakemake with the local executor")
def test_preprocess_rules_end_to_end(aperio_slide, tmp_path):
    blank = tmp_path / "blank.png"
    Image.new("RGB", (600, 500), (246, 246, 246)).save(blank)
    (tmp_path / "Snakefile").write_text(
        SNAKEFILE.format(
            src=str(ROOT / "src"),
            rules=str(ROOT / "rules" / "preprocess.smk"),
            helpers=str(ROOT / "rules" / "slide_helpers.smk"),
            slides={"cmu": str(aperio_slide), "blank": str(blank)},
            mpp={"blank": 0.5},
        )
    )
    (tmp_path / "config.yaml").write_text(
        "preprocessing: {preset: bwh_biopsy, segmentation: {}, patching: {patch_size: 512, step_size: 512}}\n"
        "features: {encoder: resnet50_trunc, weights: random, device: cpu, slides_per_job: 1}\n"
    )
    snakemake = Path(sys.executable).parent / "snakemake"
    cmd = [str(snakemake), "--cores", "2", "--configfile", "config.yaml", "--quiet", "all"]
    proc = subprocess.run(
        cmd,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, PYTHONPATH=str(ROOT / "src")),
    )
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
    assert (tmp_path / "benchmarks/t/segment/cmu.tsv").exists()
    stats = json.loads((tmp_path / "results/t/segmentation/cmu.json").read_text())
    assert stats["n_contours"] >= 1 and stats["mpp_source"] == "metadata"
    # A second run has nothing to do.
    again = subprocess.run([*cmd, "--dry-run"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
