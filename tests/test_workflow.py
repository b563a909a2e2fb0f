"""Snakemake end to end on the tiny configuration: the DAG, the outputs of every step, bad input
failing before any job runs, and rerunning one fold."""

from __future__ import annotations

import json
import shutil

import h5py
import pandas as pd
import pytest
import yaml
from conftest import copy_workflow, run_snakemake

pytestmark = pytest.mark.workflow
R = "results/tiny_camelyon17"


def test_dry_run_and_lint_of_the_default_config(tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    dry = run_snakemake(workdir, "-n", "--quiet", "rules")
    for rule in (
        "demo_slide",
        "segment_and_patch",
        "extract_features",
        "prompts",
        "encode_text",
        "splits",
        "train_slide",
        "train_patient",
        "aggregate_patient",
        "evaluate",
        "table",
    ):
        assert rule in dry.stdout, rule
    lint = run_snakemake(workdir, "--lint", check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_tiny_run_outputs(tiny_run):
    sheet = pd.read_csv(tiny_run / R / "sample_sheet.csv")
    assert len(sheet) == 50 and sheet["patient_id"].nunique() == 10
    for slide in sheet["slide_id"]:
        for path in (
            f"masks/{slide}.jpg",
            f"stitches/{slide}.jpg",
            f"contours/{slide}.geojson",
            f"features/resnet50_trunc/pt_files/{slide}.pt",
        ):
            assert (tiny_run / R / path).stat().st_size > 0, path
        with h5py.File(tiny_run / R / "features/resnet50_trunc/h5_files" / f"{slide}.h5") as fh:
            assert fh["features"].shape[1] == 1024 and fh["features"].shape[0] == fh["coords"].shape[0]
    qc = pd.read_csv(tiny_run / R / "qc/summary.csv")
    assert set(qc["slide_id"]) == set(sheet["slide_id"])
    for fold in (0, 1):
        split = pd.read_csv(tiny_run / R / f"splits/fold_{fold}.csv")
        assert set(split["patient_id"]) == set(sheet["patient_id"])
    tested = pd.concat([pd.read_csv(tiny_run / R / f"splits/fold_{k}.csv") for k in (0, 1)])
    assert sorted(tested.loc[tested.split == "test", "patient_id"]) == sorted(sheet["patient_id"].unique())
    for level, models in (("slide", ["hmf", "meanpool"]), ("patient", ["hmf_patient", "pn_rule"])):
        table = pd.read_csv(tiny_run / R / f"tables/{level}.csv")
        assert list(table["model"]) == models
        assert (table["folds"] == 2).all()
        markdown = (tiny_run / R / f"tables/{level}.md").read_text()
        assert "±" in markdown and models[0] in markdown
        for model in models:
            for fold in (0, 1):
                metrics = json.loads((tiny_run / R / f"{level}/{model}/fold_{fold}/metrics.json").read_text())
                preds = pd.read_csv(tiny_run / R / f"{level}/{model}/fold_{fold}/predictions.csv")
                assert metrics["n"] == len(preds)
                assert metrics["accuracy"] == pytest.approx((preds.true_label == preds.pred_label).mean())


def test_forcing_one_fold_reruns_only_that_fold(tiny_run, tmp_path):
    workdir = tmp_path / "wf"
    shutil.copytree(tiny_run, workdir, symlinks=True)
    outputs = [p for p in (workdir / R).rglob("*") if p.is_file() and p.suffix in (".pt", ".csv", ".json", ".md")]
    before = {p: p.stat().st_mtime_ns for p in outputs}
    target = f"{R}/slide/hmf/fold_1/metrics.json"
    run_snakemake(
        workdir, target, "--cores", "2", "--configfile", "tests/configs/tiny.yaml", "--forcerun", "train_slide"
    )
    run_snakemake(workdir, "--cores", "2", "--configfile", "tests/configs/tiny.yaml")
    changed = {str(p.relative_to(workdir / R)) for p in outputs if p.stat().st_mtime_ns != before[p]}
    retrained = {
        "slide/hmf/fold_1/checkpoint.pt",
        "slide/hmf/fold_1/train_log.csv",
        "slide/hmf/fold_1/predictions.csv",
        "slide/hmf/fold_1/embeddings.pt",
        "slide/hmf/fold_1/metrics.json",
    }
    # Downstream of fold 1's HMF: its patient models, their evaluations, and the tables. Snakemake
    # skips those whose inputs were rewritten with identical content: training is deterministic
    # and torch files are written byte-reproducibly (hmf.atomic.save_torch), so fold 1's
    # predictions, metrics and embeddings come out the same.
    downstream = {
        "patient/hmf_patient/fold_1/checkpoint.pt",
        "patient/hmf_patient/fold_1/train_log.csv",
        "patient/hmf_patient/fold_1/predictions.csv",
        "patient/hmf_patient/fold_1/metrics.json",
        "patient/pn_rule/fold_1/predictions.csv",
        "patient/pn_rule/fold_1/metrics.json",
        "tables/slide.csv",
        "tables/slide.md",
        "tables/patient.csv",
        "tables/patient.md",
        "tables/slide_comparison.csv",
        "tables/slide_comparison.md",
        "tables/patient_comparison.csv",
        "tables/patient_comparison.md",
    }
    assert retrained <= changed, retrained - changed
    assert changed <= retrained | downstream, changed - (retrained | downstream)
    assert "patient/hmf_patient/fold_1/checkpoint.pt" not in changed  # same embeddings: not retrained
    assert not any("fold_0" in path for path in changed)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["dataset"].update(colour="red"), "config key dataset.colour: unknown key"),
        (lambda c: c["splits"].update(k="three"), "config key splits.k"),
    ],
    ids=["unknown-key", "wrong-type"],
)
def test_bad_config_fails_before_any_job(tmp_path, edit, message):
    workdir = copy_workflow(tmp_path / "wf")
    config = yaml.safe_load((workdir / "tests/configs/tiny.yaml").read_text())
    edit(config)
    (workdir / "bad.yaml").write_text(yaml.safe_dump(config))
    proc = run_snakemake(workdir, "-n", "--configfile", "bad.yaml", check=False)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    assert not (workdir / "results").exists()


def test_bad_sample_sheet_fails_before_any_job(tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    (workdir / "slides").mkdir()
    (workdir / "slides" / "a.svs").write_bytes(b"x")
    (workdir / "sheet.csv").write_text(
        "slide_id,patient_id,path,patient_label\ns1,p1,slides/a.svs,IDC\ns2,p2,slides/missing.svs,ILC\n"
    )
    (workdir / "user.yaml").write_text(
        yaml.safe_dump(
            {
                "dataset": {"name": "user", "task": "tcga_brca", "format": "generic", "sample_sheet": "sheet.csv"},
                "splits": {"k": 2},
            }
        )
    )
    proc = run_snakemake(workdir, "-n", "--configfile", "user.yaml", check=False)
    assert proc.returncode != 0
    assert "sheet.csv line 3: slide s2: file not found" in proc.stdout + proc.stderr
