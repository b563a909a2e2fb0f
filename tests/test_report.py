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
from hmf.report.selection import heatmap_jobs
from hmf.report.table_html import table_html

R = "results/tiny_camelyon17"
CELL = re.compile(r"\d\.\d{3} ± \d\.\d{3}")


# -- figures and tables ------------------------------------------------------------------------


def test_training_curves(tmp_path):
    log = tmp_path / "train_log.csv"
    pd.DataFrame(
        {
            "epoch": [0, 1, 2],
            "train_loss": [1.2, 0.9, 0.7],
            "lr": [1e-4] * 3,
            "val_loss": [1.1, 0.8, 0.9],
            "val_accuracy": [0.4, 0.6, 0.5],
            "val_kappa_quadratic": [0.1, 0.3, 0.2],
            "seconds": [1, 2, 3],
        }
    ).to_csv(log, index=False)
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
            path.write_text(
                json.dumps(
                    {
                        "classes": ["a", "b"],
                        "accuracy": acc,
                        "precision_macro": acc,
                        "recall_macro": acc,
                        "f1_macro": acc,
                        "auc": None,
                        "kappa_quadratic": acc,
                    }
                )
            )
            paths[model].append(path)
    build_tables(paths, tmp_path / "t.csv", tmp_path / "t.md", tmp_path / "t.png", "demo: slide level")
    fragment = table_html(tmp_path / "t.csv", "demo <slide>")
    assert "demo &lt;slide&gt;" in fragment
    assert fragment.count("<tr>") == 3 and "<td" in fragment and "hmf" in fragment and "meanpool" in fragment
    assert "0.750 ± 0.071" in fragment and "AUC" not in fragment  # no fold has an AUC


def test_heatmap_slide_choice():
    sheet = pd.DataFrame(
        {
            "slide_id": ["b1", "a1", "c1", "d1", "e1", "f1"],
            "patient_id": ["p1", "p1", "p2", "p3", "p4", "p4"],
            "slide_label": ["macro", "negative", "negative", "micro", "negative", "macro"],
        }
    )
    test_patients = [{"p1", "p2"}, {"p3", "p4"}]
    assert heatmap_jobs(sheet, test_patients) == [(0, "a1"), (0, "b1"), (1, "d1"), (1, "e1"), (1, "f1")]
    assert heatmap_jobs(sheet, test_patients, per_class=2) == [
        (0, "a1"),
        (0, "b1"),
        (0, "c1"),
        (1, "d1"),
        (1, "e1"),
        (1, "f1"),
    ]
    assert heatmap_jobs(sheet, test_patients, slides=["f1", "c1"]) == [(0, "c1"), (1, "f1")]
    with pytest.raises(ValueError, match="report.heatmap_slides: slide\\(s\\) not in the sample sheet: zz"):
        heatmap_jobs(sheet, test_patients, slides=["zz"])


# -- QC review: which slides' pictures the report shows ----------------------------------------


def qc_set(tmp_path, n_patches, areas, features=None, no_tissue=()):
    """A QC summary, pictures and feature files for slides s00, s01, ... (``features``: rows per
    slide, default the patch count; None for an unreadable file)."""
    import h5py

    features = list(n_patches) if features is None else features
    rng = np.random.default_rng(0)
    masks, stitches, feature_files, rows = [], [], [], []
    for i, (n, area, rows_n) in enumerate(zip(n_patches, areas, features)):
        slide = f"s{i:02d}"
        for kind, paths, size in (("mask", masks, (300, 200)), ("stitch", stitches, (90, 160))):
            path = tmp_path / kind / f"{slide}.jpg"
            path.parent.mkdir(exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(path)
            paths.append(path)
        path = tmp_path / "h5" / f"{slide}.h5"
        path.parent.mkdir(exist_ok=True)
        if rows_n is None:
            path.write_bytes(b"not an hdf5 file")
        else:
            with h5py.File(path, "w") as fh:
                fh["features"] = np.zeros((rows_n, 4), np.float32)
                fh["coords"] = np.zeros((rows_n, 2), np.int64)
        feature_files.append(path)
        rows.append(
            {
                "slide_id": slide,
                "tissue_area_mm2": area,
                "n_contours": 0 if i in no_tissue else 2,
                "n_holes": 0,
                "n_patches": n,
                "no_tissue": i in no_tissue or n == 0,
            }
        )
    return pd.DataFrame(rows), masks, stitches, feature_files


def test_review_flags_and_orders_the_slides_needing_a_look(tmp_path):
    from hmf.report.qc_review import ReviewSettings, review_table

    n = [100, 110, 95, 105, 0, 102, 2000, 98, 101, 7, 99, 103]
    area = [10.0, 11, 9, 10, 0.0, 0.5, 12, 10, 10, 1.2, 10, 10]
    features = list(n)
    features[3] = None  # unreadable feature file
    features[8] = 50  # fewer feature rows than patches
    summary, masks, stitches, files = qc_set(tmp_path, n, area, features, no_tissue=(4,))
    table = review_table(summary, masks, stitches, files, ReviewSettings(slides=8))
    review = dict(zip(table["slide_id"], table["review"]))
    assert review["s03"] == "feature file unreadable"
    assert review["s08"] == "features != patches"
    assert review["s04"] == "no features; no tissue"
    assert review["s05"] == "little tissue"  # 0.5 < 0.1 x median 10
    assert review["s06"] == "many patches" and review["s09"] == "few patches"
    assert not any(review[s] for s in ("s00", "s01", "s02", "s07", "s10", "s11"))
    # Worst reason first; then the unflagged slides spread over the patch counts.
    shown = table[table["in_report"]]
    assert list(shown["order"]) == list(range(1, 9))
    assert list(shown["slide_id"][:6]) == ["s03", "s04", "s08", "s05", "s09", "s06"]
    assert list(shown["slide_id"][6:]) == ["s02", "s01"]  # fewest and most patches of the rest
    assert table["order"][8:].isna().all() and not table["in_report"][8:].any()
    # Every slide is listed with the paths of its pictures.
    assert sorted(table["slide_id"]) == sorted(summary["slide_id"])
    assert table.set_index("slide_id").loc["s10", "mask"] == str(masks[10])
    # The cap holds even when more slides are flagged than may be shown.
    capped = review_table(summary, masks, stitches, files, ReviewSettings(slides=3))
    assert list(capped.loc[capped["in_report"], "slide_id"]) == ["s03", "s04", "s08"]
    assert not review_table(summary, masks, stitches, files, ReviewSettings(slides=0))["in_report"].any()


def test_review_of_a_uniform_cohort_flags_nothing(tmp_path):
    from hmf.report.qc_review import ReviewSettings, review_table

    summary, masks, stitches, files = qc_set(tmp_path, [100] * 6 + [104], [5.0] * 7)
    table = review_table(summary, masks, stitches, files, ReviewSettings(slides=4))
    assert (table["review"] == "").all()
    assert table["in_report"].sum() == 4


def test_review_rejects_a_summary_that_does_not_match(tmp_path):
    from hmf.report.qc_review import review_table

    summary, masks, stitches, files = qc_set(tmp_path, [10, 12], [1.0, 1.0])
    with pytest.raises(ValueError, match="2 slides in the QC summary but 1 masks"):
        review_table(summary, masks[:1], stitches, files)
    with pytest.raises(ValueError, match=r"QC summary: missing column\(s\) \['n_patches'\]"):
        review_table(summary.drop(columns="n_patches"), masks, stitches, files)


def test_qc_pictures_have_one_fixed_size_and_the_table_lists_every_slide(tmp_path):
    from hmf.report.qc_review import ReviewSettings, picture_labels, write_review

    summary, masks, stitches, files = qc_set(tmp_path, [100, 104, 0, 99, 101], [4.0, 4, 0, 4, 4], no_tissue=(2,))
    summary.to_csv(tmp_path / "summary.csv", index=False)
    out = tmp_path / "qc"
    table = write_review(
        tmp_path / "summary.csv",
        masks,
        stitches,
        files,
        out / "review.csv",
        out / "review.html",
        out / "pictures",
        ReviewSettings(slides=3, picture_px=128),
        title="demo <QC>",
    )
    pictures = sorted((out / "pictures").glob("*"))
    assert [p.name for p in pictures] == sorted(f"{s}.jpg" for s in table.loc[table["in_report"], "slide_id"])
    sizes = set()
    for picture in pictures:
        with Image.open(picture) as image:
            sizes.add(image.size)
    assert len(sizes) == 1 and sizes.pop()[0] == 2 * 128 + 3 * 4
    assert not list(out.glob(".pictures.*"))  # the temporary folder is gone
    page = (out / "review.html").read_text(encoding="utf-8")
    assert "demo &lt;QC&gt;" in page and page.count("<tr") == 1 + 5
    assert str(masks[4]) in page and str(stitches[1]) in page
    assert "5 slides; 1 flagged for review (1 no features, 1 no tissue)" in page
    assert picture_labels(out / "review.csv", "s02") == {
        "order": "1",
        "slide": "s02",
        "review": "no features; no tissue",
    }
    with pytest.raises(ValueError, match="has no slide zz"):
        picture_labels(out / "review.csv", "zz")
    masks[2].write_bytes(b"not a picture")
    with pytest.raises(ValueError, match="QC picture of slide s02: cannot identify image file"):
        write_review(
            tmp_path / "summary.csv",
            masks,
            stitches,
            files,
            out / "review.csv",
            out / "review.html",
            out / "pictures",
            ReviewSettings(slides=3, picture_px=128),
        )
    assert len(list((out / "pictures").glob("*.jpg"))) == 3  # the earlier pictures are untouched


def test_report_jpeg_copy_flattens_onto_white(tmp_path):
    from hmf.report.jpeg import jpeg_copy

    rgba = np.zeros((40, 60, 4), np.uint8)
    rgba[:, :30] = (200, 30, 30, 255)  # opaque red left half, transparent right half
    Image.fromarray(rgba, "RGBA").save(tmp_path / "figure.png")
    assert jpeg_copy(tmp_path / "figure.png", tmp_path / "figure.jpg") == (60, 40)
    with Image.open(tmp_path / "figure.jpg") as image:
        assert image.format == "JPEG" and image.mode == "RGB"
        pixels = np.asarray(image).astype(int)
    assert abs(pixels[20, 10] - (200, 30, 30)).max() < 12 and (pixels[20, 50] > 243).all()
    with pytest.raises(FileNotFoundError, match="missing.png does not exist"):
        jpeg_copy(tmp_path / "missing.png", tmp_path / "x.jpg")


def test_report_size_of_a_report(tmp_path):
    from hmf.report.size import main, report_size

    data = "data:image/jpeg;base64," + "A" * 4000
    page = (
        '<!doctype html><script id="results">\n    var results = '
        + json.dumps({"a.jpg": {"data_uri": data}, "b.csv": {"data_uri": "data:text/csv;base64,QUJD"}})
        + ";\n    </script>"
        '<script id="categories">\n    var categories = '
        + json.dumps({"Quality control": {"Slides": ["a.jpg"]}, "Tables": {"": ["b.csv"]}})
        + ";\n    </script>"
    )
    (tmp_path / "r.html").write_text(page)
    size = report_size(tmp_path / "r.html")
    assert size.total == len(page)
    assert size.categories == {"Quality control": (1, len(data)), "Tables": (1, len("data:text/csv;base64,QUJD"))}
    assert main([str(tmp_path / "r.html")]) == 0
    (tmp_path / "bad.html").write_text("<html></html>")
    assert main([str(tmp_path / "bad.html")]) == 1


# -- the report in a browser -------------------------------------------------------------------

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


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
    return subprocess.run(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=10000", *args, page.as_uri()],
        capture_output=True,
        text=True,
        timeout=180,
    )


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
        sheet[
            sheet.patient_id.isin(
                set(pd.read_csv(workdir / R / f"splits/fold_{k}.csv", dtype=str).query("split == 'test'").patient_id)
            )
        ].slide_label.nunique()
        for k in (0, 1)
    )
    for heatmap in heatmaps:
        assert (heatmap.parent / "top_patches" / heatmap.name).is_file()

    # --cores: extract_features sets its threads from workflow.cores, which the report's DAG evaluates.
    run_snakemake(workdir, "report_inputs", "--report", "report.html", "--cores", "1", *config)
    report = workdir / "report.html"
    text = report.read_text(encoding="utf-8")
    assert text.lstrip().lower().startswith("<!doctype html")
    names = {Path(entry["filename"]).name for entry in embedded_results(text).values()}
    expected = {
        "slide.html",
        "patient.html",
        "slide.csv",
        "patient.png",
        "summary.csv",
        "review.html",
        "confusion.png",
        "curves.png",
        # the paired comparisons with the reference model: table and forest plot
        "slide_comparison.html",
        "patient_comparison.html",
        "slide_comparison.png",
        "patient_comparison.png",
    }
    assert expected <= names, expected - names
    categories = embedded_categories(text)
    # Heatmaps: the JPEG copies of the selected ones (the PNGs stay on disk).
    shown = sorted(p for paths in categories["Attention heatmaps"].values() for p in paths)
    assert shown == sorted(
        f"{R}/report/heatmaps/{h.relative_to(workdir / R / 'heatmaps').with_suffix('.jpg')}"
        for h in [*heatmaps, *(h.parent / "top_patches" / h.name for h in heatmaps)]
    )
    # QC: the pictures of report.qc_slides (default 24) of the 50 slides, not every mask and stitch.
    review = pd.read_csv(workdir / R / "qc/review.csv", dtype={"slide_id": str})
    chosen = review.loc[review["in_report"], "slide_id"]
    assert len(review) == len(sheet) == 50 and len(chosen) == 24
    assert sorted(categories["Quality control"]["Slides for review"]) == sorted(
        f"{R}/qc/pictures/{s}.jpg" for s in chosen
    )
    assert not any("/masks/" in p or "/stitches/" in p for c in categories.values() for ps in c.values() for p in ps)

    dom = browse(binary, report, tmp_path / "profile", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    for section in ("Quality control", "Result tables", "Confusion matrices", "Training curves", "Attention heatmaps"):
        assert f"<span>{section}</span>" in html, section
    # The workflow page shows both result tables, rendered by the browser from the report's data.
    page = html[html.find('id="app"') :]
    assert "hmf" in page and "meanpool" in page and "pn_rule" in page
    assert len(CELL.findall(page)) >= 4
    assert "Quality control: 50 slides; " in page

    # At 1,400 px the result tables lie clear of the rule graph and inside the window.
    layout = page_layout(binary, report, tmp_path / "profile3", 1400, 900)
    assert len(layout["tables"]) >= 2 and layout["graph"] is not None, layout
    graph = layout["graph"]
    assert graph[2] - graph[0] > 100 and graph[3] - graph[1] > 100, layout  # the graph is drawn
    for table in layout["tables"]:
        assert not overlap(table, graph), layout
        assert table[0] >= 0 and table[2] <= layout["right"], layout
    assert layout["tables"][0][1] >= 0, layout  # the page starts at the top, not scrolled past it

    shot = tmp_path / "report.png"
    result = browse(
        binary, report, tmp_path / "profile2", f"--screenshot={shot}", "--window-size=1400,900", "--hide-scrollbars"
    )
    assert shot.is_file(), result.stderr[-2000:]
    with Image.open(shot) as image:
        assert image.size == (1400, 900)
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.std() > 20 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50


def embedded_categories(html: str) -> dict:
    match = re.search(r"var categories = (\{.*?\});\s*</script>", html, re.S)
    assert match, "no categories in the report"
    return json.loads(match.group(1))


# Appended to a copy of the report: once the page has rendered, the boxes (left, top, right,
# bottom, in px) of the result tables and of the rule graph on the workflow page, and the right
# edge of the visible part of the content pane.
LAYOUT_PROBE = """<script>
setTimeout(function () {
  function box(e) { var r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; }
  var graph = document.querySelector("#app #rulegraph");
  var table = document.querySelector("#app .hmf-table");
  var pane = table ? table.closest(".overflow-auto") : null;  // the scrolled content pane
  var out = {right: pane ? pane.getBoundingClientRect().left + pane.clientWidth : null,
             graph: graph ? box(graph) : null,
             tables: Array.from(document.querySelectorAll("#app .hmf-table table")).map(box)};
  var pre = document.createElement("pre");
  pre.id = "hmf-layout";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
}, 4000);
</script>"""


def page_layout(binary: str, report: Path, profile: Path, width: int, height: int) -> dict:
    probe = report.with_name("report_probe.html")
    head, body_end, tail = report.read_text(encoding="utf-8").rpartition("</body>")
    probe.write_text(head + LAYOUT_PROBE + body_end + tail, encoding="utf-8")
    dom = browse(binary, probe, profile, "--dump-dom", f"--window-size={width},{height}")
    match = re.search(r'<pre id="hmf-layout">(.*?)</pre>', dom.stdout, re.S)
    assert match, f"the layout probe did not run: {dom.stderr[-2000:]}"
    return json.loads(match.group(1))


def overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
