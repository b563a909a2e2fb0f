"""Repeated and grouped folds in the workflow: settings the cohort cannot meet fail the dry run
with the counts; three repeats and leave-one-centre-out run on the tiny configuration (one
incremental run each on top of the shared tiny run)."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
import yaml
from conftest import copy_workflow, run_snakemake

pytestmark = pytest.mark.workflow
R = "results/tiny_camelyon17"


def _dry_run(workdir, *configs: dict, check: bool = False):
    names = []
    for i, config in enumerate(configs):
        (workdir / f"extra_{i}.yaml").write_text(yaml.safe_dump(config))
        names.append(f"extra_{i}.yaml")
    return run_snakemake(workdir, "-n", "--configfile", "tests/configs/tiny.yaml", *names, check=check)


@pytest.mark.parametrize(
    "override, message",
    [
        (  # no heatmap model: the folds used to be checked only in the splits job
            {
                "splits": {"k": 3},
                "models": {"slide": ["meanpool"], "patient": ["pn_rule"], "patient_source": "meanpool"},
            },
            "cannot make 3 stratified folds: class 'pN0' has 2 patient(s)",
        ),
        (
            {"models": {"patient_inputs": "cross_fitted", "inner_folds": 6}},
            "models.inner_folds=6 but fold 0 has 5 training and validation patient(s)",
        ),
        (  # the tiny cohort's patients 0-9 all come from CAMELYON17's centre 0
            {"splits": {"group_by": "centre", "leave_one_group_out": True}},
            "needs at least 2 groups, the cohort has 1 (centre_0: pN0 2, pN0(i+) 2, pN1 2, pN1mi 2, pN2 2)",
        ),
    ],
    ids=["k-above-class-count", "inner-folds", "one-centre"],
)
def test_infeasible_folds_fail_the_dry_run(tmp_path, override, message):
    workdir = copy_workflow(tmp_path / "wf")
    proc = _dry_run(workdir, override)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    # preprocessing does not need folds
    (workdir / "extra_0.yaml").write_text(yaml.safe_dump(override))
    features = run_snakemake(
        workdir, "features", "-n", "--configfile", "tests/configs/tiny.yaml", "extra_0.yaml", check=False
    )
    assert features.returncode == 0, features.stdout + features.stderr


def _loco_sheet(workdir, column_from_path: bool) -> pd.DataFrame:
    """The tiny cohort as a generic sample sheet over two centres, each with one patient of every
    pN stage, in a ``centre`` column or as the slides' ``centre_<i>/`` folders."""
    sheet = pd.read_csv(workdir / R / "sample_sheet.csv", dtype=str, keep_default_na=False)
    patients = sheet[["patient_id", "patient_label"]].drop_duplicates().sort_values("patient_id")
    centre = {
        p: f"H{i % 2}" for _, group in patients.groupby("patient_label") for i, p in enumerate(group["patient_id"])
    }
    if column_from_path:
        sheet["path"] = [
            f"slides/centre_{centre[p][1]}/{s}.tif" for s, p in zip(sheet["slide_id"], sheet["patient_id"])
        ]
    else:
        sheet["hospital"] = sheet["patient_id"].map(centre)
    return sheet.drop(columns=["node", "mpp"])


def _loco_config(workdir, group_by: str) -> dict:
    config = yaml.safe_load((workdir / "tests/configs/tiny.yaml").read_text())
    config["dataset"] = {"name": "tiny_loco", "task": "camelyon17", "format": "generic", "sample_sheet": "loco.csv"}
    config["demo"] = {"enabled": False}
    config["features"]["precomputed_dir"] = f"{R}/features/resnet50_trunc"
    # One patient per class and centre: a validation part would take a class's last training patient.
    config["splits"] = {"group_by": group_by, "leave_one_group_out": True, "val_fraction": 0.0}
    config["models"].update(slide=["meanpool"], patient=["pn_rule", "meanpool"], patient_source="meanpool")
    return config


def test_repeats_and_leave_one_centre_out(tiny_run, tmp_path):
    workdir = tmp_path / "wf"
    shutil.copytree(tiny_run, workdir, symlinks=True)
    single = {k: (workdir / R / f"splits/fold_{k}.csv").read_bytes() for k in (0, 1)}
    trained = workdir / R / "slide/hmf/fold_0/checkpoint.pt"
    before = trained.stat().st_mtime_ns

    # Three repeats of the tiny config's 2 folds: repeat 0 is the run's folds, byte for byte, and
    # its models are not retrained (a fold's split job does not depend on splits.repeats).
    (workdir / "repeats.yaml").write_text(yaml.safe_dump({"splits": {"repeats": 3}}))
    run_snakemake(workdir, "--cores", "2", "--configfile", "tests/configs/tiny.yaml", "repeats.yaml", timeout=2400)
    sheet = pd.read_csv(workdir / R / "sample_sheet.csv", dtype=str)
    folds = [pd.read_csv(workdir / R / f"splits/fold_{f}.csv", dtype=str) for f in range(6)]
    assert not (workdir / R / "splits/fold_6.csv").exists()
    assert [(workdir / R / f"splits/fold_{k}.csv").read_bytes() for k in (0, 1)] == list(single.values())
    assert trained.stat().st_mtime_ns == before  # repeat 0's models are kept
    for r in range(3):
        tested = pd.concat([f.loc[f["split"] == "test", "patient_id"] for f in folds[2 * r : 2 * r + 2]])
        assert sorted(tested) == sorted(sheet["patient_id"].unique())  # once per repeat
    assert not folds[2].equals(folds[0]) or not folds[4].equals(folds[0])
    for level, models in (("slide", ["hmf", "meanpool"]), ("patient", ["hmf_patient", "pn_rule"])):
        table = pd.read_csv(workdir / R / f"tables/{level}.csv")
        assert list(table["model"]) == models and (table["folds"] == 6).all() and (table["repeats"] == 3).all()
        assert (table["accuracy_pooled_min"] <= table["accuracy_pooled"]).all()
        assert (table["accuracy_pooled"] <= table["accuracy_pooled_max"]).all()
        markdown = (workdir / R / f"tables/{level}.md").read_text()
        assert "| Folds | Repeats |" in markdown and ", range " in markdown
        assert "mean over 3 repeats" in markdown and "repeated 3 times (seeds 0-2)" in markdown
        comparison = (workdir / R / f"tables/{level}_comparison.md").read_text()
        assert "(Holm " in comparison and "held fixed" in comparison
        # the repeats' patient predictions: one per patient and repeat
        for model in models:
            preds = pd.concat(
                pd.read_csv(workdir / R / f"{level}/{model}/fold_{f}/predictions.csv").assign(repeat=f // 2)
                for f in range(6)
            )
            assert not preds.duplicated(["repeat", "id"]).any()
            assert preds.groupby("repeat")["id"].nunique().nunique() == 1

    # Leave one centre out, the centres in a column of a generic sample sheet, on the run's features.
    _loco_sheet(workdir, column_from_path=False).to_csv(workdir / "loco.csv", index=False)
    (workdir / "loco.yaml").write_text(yaml.safe_dump(_loco_config(workdir, "hospital")))
    run_snakemake(workdir, "tables", "--cores", "2", "--configfile", "loco.yaml", timeout=2400)
    loco = workdir / "results/tiny_loco"
    written = pd.read_csv(loco / "sample_sheet.csv", dtype=str)
    centre = dict(zip(written["patient_id"], written["hospital"]))  # the workflow's sheet keeps the column
    assert sorted(set(centre.values())) == ["H0", "H1"]
    assert not (loco / "splits/fold_2.csv").exists()
    for k, name in enumerate(["H0", "H1"]):
        fold = pd.read_csv(loco / f"splits/fold_{k}.csv", dtype=str)
        groups = fold["patient_id"].map(centre)
        assert set(groups[fold["split"] == "test"]) == {name}
        assert name not in set(groups[fold["split"] != "test"])  # no centre on both sides
    table = pd.read_csv(loco / "tables/patient.csv")
    assert (table["folds"] == 2).all() and (table["repeats"] == 1).all()
    markdown = (loco / "tables/patient.md").read_text()
    assert "Folds: leave one hospital group out (2 folds" in markdown


def test_leave_one_centre_out_from_the_slide_folders_plans_a_fold_per_centre(tiny_run, tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    shutil.copytree(tiny_run / R / "features", workdir / R / "features", symlinks=True)
    (workdir / R / "sample_sheet.csv").parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(tiny_run / R / "sample_sheet.csv", workdir / R / "sample_sheet.csv")
    _loco_sheet(workdir, column_from_path=True).to_csv(workdir / "loco.csv", index=False)
    (workdir / "loco.yaml").write_text(yaml.safe_dump(_loco_config(workdir, "centre")))
    proc = run_snakemake(workdir, "tables", "-n", "--quiet", "rules", "--configfile", "loco.yaml")
    jobs = dict(
        line.split() for line in proc.stdout.splitlines() if len(line.split()) == 2 and line.split()[1].isdigit()
    )
    assert jobs["train_slide"] == "2" and jobs["train_patient"] == "2"  # meanpool on 2 centres
