"""A feature job killed with SIGKILL leaves no finished-looking file; its rerun equals a clean run."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from hmf.features.extract import extract_features
from hmf.wsi.patching import read_coords, write_coords
from hmf.wsi.steps import run_patching, run_segmentation

SETTINGS = {"weights": "random", "device": "cpu", "batch_size": 4, "progress_interval_s": 0}
N_PATCHES = 24

CHILD = """
import sys
from hmf.logs import setup_logging
from hmf.features.extract import extract_features
slide, coords, h5, pt, log = sys.argv[1:6]
setup_logging(log)
extract_features(slide, coords, h5, pt, {settings!r}, slide_id="cmu", log_file=log)
"""


def test_sigkill_mid_extraction_then_rerun_matches_uninterrupted(aperio_slide, tmp_path):
    cfg = {"preset": "bwh_biopsy", "patching": {"step_size": 128}}
    run_segmentation(aperio_slide, "cmu", cfg, tmp_path / "c.geojson", tmp_path / "m.jpg", tmp_path / "s.json")
    run_patching(aperio_slide, "cmu", cfg, tmp_path / "c.geojson", tmp_path / "all.h5", tmp_path / "st.jpg")
    coords, attrs = read_coords(tmp_path / "all.h5")
    assert len(coords) >= N_PATCHES
    write_coords(tmp_path / "p.h5", coords[:N_PATCHES], attrs)

    clean_h5, clean_pt = tmp_path / "clean" / "cmu.h5", tmp_path / "clean" / "cmu.pt"
    extract_features(aperio_slide, tmp_path / "p.h5", clean_h5, clean_pt, SETTINGS, slide_id="cmu")

    out = tmp_path / "killed"
    h5, pt, log = out / "h5_files" / "cmu.h5", out / "pt_files" / "cmu.pt", tmp_path / "extract.log"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CHILD.format(settings=SETTINGS),
            str(aperio_slide),
            str(tmp_path / "p.h5"),
            str(h5),
            str(pt),
            str(log),
        ],
        env=env,
        start_new_session=True,
    )
    deadline = time.time() + 120
    started = False
    while time.time() < deadline and child.poll() is None:
        text = log.read_text(errors="replace") if log.exists() else ""
        done = [int(n) for n in re.findall(rf"(\d+)/{N_PATCHES}\b", text)]
        if done and 0 < max(done) < N_PATCHES:
            started = True
            break
        time.sleep(0.05)
    assert started and child.poll() is None, "extraction finished or failed before it could be killed"
    os.killpg(child.pid, signal.SIGKILL)  # the job and its reader process
    child.wait()
    assert not h5.exists() and not pt.exists()  # nothing that looks finished
    leftovers = [p.name for p in out.rglob("*") if p.is_file()]
    assert all(name.startswith(".") and ".part" in name for name in leftovers)

    extract_features(aperio_slide, tmp_path / "p.h5", h5, pt, SETTINGS, slide_id="cmu")
    assert h5.read_bytes() == clean_h5.read_bytes()
    rerun, clean = torch.load(pt, weights_only=True), torch.load(clean_pt, weights_only=True)
    assert rerun.shape == (N_PATCHES, 1024) and torch.equal(rerun, clean)
    assert not [p for p in out.rglob(".*") if p.is_file()]  # the rerun cleared stale parts
    assert np.isfinite(rerun.numpy()).all()
