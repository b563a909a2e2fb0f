"""The report's figures and tables, and `snakemake --report` on the tiny run opened in headless
Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from hmf.report.curves import DPI, FIGSIZE, plot_training_curves
from hmf.report.selection import fold_test_patients, heatmap_jobs
from hmf.report.tables import table_html

R = "results/tiny_camelyon17"
CELL = re.compile(r"\d\.\d{3} ± \d\.\d{3}")


# -- figures and tables ------------------------------------------------------------------------

def test_training_curves(tmp_path):
    log = tmp_path / "train_log.csv"
    pd.DataFrame({"epoch": [0, 1, 2], "train_loss": [1.2, 0.9, 0.7], "lr": [1e-4] * 3, "val_loss": [1.1, 0.8, 0.9],
                  "val_accuracy": [0.4, 0.6, 0.5], "val_kappa_quadratic": [0.1, 0.3, 0.2],
                  "seconds": [1, 2, 3]}).to_csv(log, index=False)
    size = plot_training_curves(log, tmp_path / "curves.png", title="hmf fold 0")
    with Image.open(tmp_path / "curves.png") as image:
        assert image.size == size == (FIGSIZE[0] * DPI, FIGSIZE[1] * DPI)
        assert np.asarray(image.convert("L")).std() > 5


def test_training_curves_without_validation_and_bad_logs(tmp_path):
    log = tmp_path / "train_log.csv"
    pd.DataFrame({"epoch": [0, 1], "train_loss": [1.0, 0.5]}).to_csv(log, index=False)
    plot_training_curves(log, tmp_path / "a.png")
    assert (tmp_path / "a.png").stat().st_size > 0
    pd.DataFrame({"epoch": [0], "loss": [1.0]}).to_csv(log, index=False)
    with pytest.raises(ValueError, match=r"train_log.csv: missing column\(s\) \['train_loss'\]"):
        plot_training_curves(log, tmp_path / "b.png")


def test_table_html_from_a_results_table(tmp_path):
    from hmf.evaluation.tables import build_tables

    paths = {}
    for model, accs in (("hmf", (0.8, 0.7)), ("meanpool", (0.5, 0.6))):
        paths[model] = []
        for fold, acc in enumerate(accs):
            path = tmp_path / f"{model}_{fold}.json"
            path.write_text(json.dumps({"classes": ["a", "b"], "accuracy": acc, "precision_macro": acc,
                                        "recall_macro": acc, "f1_macro": acc, "auc": None,
                                        "kappa_quadratic": acc}))
            paths[model].append(path)
    build_tables(paths, tmp_path / "t.csv", tmp_path / "t.md", tmp_path / "t.png", "demo: slide level")
    fragment = table_html(tmp_path / "t.csv", "demo <slide>")
    assert "demo &lt;slide&gt;" in fragment
    assert fragment.count("<tr>") == 3 and "<td" in fragment and "hmf" in fragment and "meanpool" in fragment
    assert "0.750 ± 0.071" in fragment and "AUC" not in fragment  # no fold has an AUC


def test_heatmap_slide_choice():
    sheet = pd.DataFrame({
        "slide_id": ["b1", "a1", "c1", "d1", "e1", "f1"],
        "patient_id": ["p1", "p1", "p2", "p3", "p4", "p4"],
        "slide_label": ["macro", "negative", "negative", "micro", "negative", "macro"],
    })
    test_patients = [{"p1", "p2"}, {"p3", "p4"}]
    assert heatmap_jobs(sheet, test_patients) == [(0, "a1"), (0, "b1"), (1, "d1"), (1, "e1"), (1, "f1")]
    assert heatmap_jobs(sheet, test_patients, per_class=2) == [(0, "a1"), (0, "b1"), (0, "c1"), (1, "d1"),
                                                               (1, "e1"), (1, "f1")]
    assert heatmap_jobs(sheet, test_patients, slides=["f1", "c1"]) == [(0, "c1"), (1, "f1")]
    with pytest.raises(ValueError, match="report.heatmap_slides: slide\\(s\\) not in the sample sheet: zz"):
        heatmap_jobs(sheet, test_patients, slides=["zz"])


def test_parse_time_folds_match_the_split_files(tmp_path):
    from hmf.data.splits import make_split_files

    sheet = pd.DataFrame({"slide_id": [f"s{i}" for i in range(12)], "patient_id": [f"p{i // 2}" for i in range(12)],
                          "patient_label": ["A", "A", "B", "B"] * 3, "slide_label": ["A", "A", "B", "B"] * 3})
    sheet.to_csv(tmp_path / "sheet.csv", index=False)
    written = make_split_files(tmp_path / "sheet.csv", tmp_path / "splits", k=2, val_fraction=0.25, seed=3)
    expected = [set(pd.read_csv(p, dtype=str).query("split == 'test'")["patient_id"]) for p in written]
    assert fold_test_patients(sheet, {"k": 2, "val_fraction": 0.25, "seed": 3, "files": None}) == expected
    assert fold_test_patients(sheet, {"k": 2, "val_fraction": 0.25, "seed": 3,
                                      "files": [str(p) for p in written]}) == expected


# -- the report in a browser -------------------------------------------------------------------

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"]


def chromium() -> str:
    """The chromium binary, installed with apt-get when missing (as root); skip otherwise."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.geteuid() != 0:
        pytest.skip("chromium is not installed and installing it needs root (apt-get install chromium)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        if proc.returncode != 0:
            pytest.skip(f"chromium could not be installed ({' '.join(cmd)}): {proc.stderr[-500:]}")
    found = shutil.which("chromium")
    if not found:
        pytest.skip("apt-get installed chromium but no chromium binary is on PATH")
    return found


def browse(binary: str, page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=10000",
                           *args, page.as_uri()], capture_output=True, text=True, timeout=180)


def embedded_results(html: str) -> dict:
    match = re.search(r"var results = (\{.*?\});\s*</script>", html, re.S)
    assert match, "no results in the report"
    return json.loads(match.group(1))


@pytest.mark.workflow
def test_report_opens_in_chromium(tiny_run, tmp_path):
    from conftest import run_snakemake

    binary = chromium()
    workdir = tmp_path / "wf"
    shutil.copytree(tiny_run, workdir, symlinks=True)
    config = ("--configfile", "tests/configs/tiny.yaml")
    run_snakemake(workdir, "report_inputs", "--cores", "2", *config)
    sheet = pd.read_csv(workdir / R / "sample_sheet.csv", dtype=str)
    heatmaps = sorted((workdir / R / "heatmaps").glob("fold_*/*.png"))
    # Default choice: per fold, one test slide per slide class.
    assert len(heatmaps) == sum(
        sheet[sheet.patient_id.isin(set(pd.read_csv(workdir / R / f"splits/fold_{k}.csv", dtype=str)
                                        .query("split == 'test'").patient_id))].slide_label.nunique()
        for k in (0, 1))
    for heatmap in heatmaps:
        assert (heatmap.parent / "top_patches" / heatmap.name).is_file()

    # --cores: extract_features sets its threads from workflow.cores, which the report's DAG evaluates.
    run_snakemake(workdir, "report_inputs", "--report", "report.html", "--cores", "1", *config)
    report = workdir / "report.html"
    text = report.read_text(encoding="utf-8")
    assert text.lstrip().lower().startswith("<!doctype html")
    names = {Path(entry["filename"]).name for entry in embedded_results(text).values()}
    expected = {"slide.html", "patient.html", "slide.csv", "patient.png", "summary.csv", "confusion.png",
                "curves.png", *(h.name for h in heatmaps), *(f"{s}.jpg" for s in sheet.slide_id)}
    assert expected <= names, expected - names

    dom = browse(binary, report, tmp_path / "profile", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    for section in ("Quality control", "Result tables", "Confusion matrices", "Training curves",
                    "Attention heatmaps"):
        assert f"<span>{section}</span>" in html, section
    # The workflow page shows both result tables, rendered by the browser from the report's data.
    page = html[html.find('id="app"'):]
    assert "hmf" in page and "meanpool" in page and "pn_rule" in page
    assert len(CELL.findall(page)) >= 4

    shot = tmp_path / "report.png"
    result = browse(binary, report, tmp_path / "profile2", f"--screenshot={shot}", "--window-size=1280,900",
                    "--hide-scrollbars")
    assert shot.is_file(), result.stderr[-2000:]
    with Image.open(shot) as image:
        assert image.size == (1280, 900)
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.std() > 20 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50
