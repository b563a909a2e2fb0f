"""The rule files: each input function and param helper written once (in rules/common.smk or
rules/slide_helpers.smk), every local rule declared in one place, src/ put on sys.path once,
scripts that take what they need from their rule; and the values those helpers give the jobs
of the default configuration (a dry run that records every job)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RULE_FILES = [ROOT / "Snakefile", *sorted((ROOT / "rules").glob("*.smk"))]
SCRIPTS = sorted((ROOT / "workflow" / "scripts").glob("*.py"))

# The rules that run on the submitting host (never sent to a cluster executor).
LOCAL_RULES = {
    "all",
    "features",
    "tables",
    "figures",
    "heatmaps",
    "report_inputs",
    "predict",
    "sample_sheet",
    "splits",
    "prompts",
    "evaluate",
    "table",
    "table_html",
    "training_curves",
    "heatmap_jpeg",
    "predict_sheet",
    "predict_submission",
    "feature_index",
}


def _texts() -> dict[str, str]:
    return {path.relative_to(ROOT).as_posix(): path.read_text(encoding="utf-8") for path in RULE_FILES}


def test_local_rules_are_declared_once_in_the_snakefile():
    declarations = {
        name: re.findall(r"^localrules:\n((?:[ \t]+\w+,?\n)+)", text, flags=re.M) for name, text in _texts().items()
    }
    where = {name: len(found) for name, found in declarations.items() if found}
    assert where == {"Snakefile": 1}, where
    declared = re.findall(r"\w+", declarations["Snakefile"][0])
    assert len(declared) == len(set(declared)) and set(declared) == LOCAL_RULES
    defined = {rule for text in _texts().values() for rule in re.findall(r"^\s*rule (\w+):", text, flags=re.M)}
    assert set(declared) <= defined, set(declared) - defined


def test_src_goes_on_sys_path_once():
    inserts = [name for name, text in _texts().items() for line in text.splitlines() if "sys.path.insert" in line]
    assert inserts == ["Snakefile"]


def test_no_lambda_is_written_twice_in_the_rule_files():
    lambdas = Counter(
        re.sub(r"\s+", " ", found).rstrip(",")
        for text in _texts().values()
        for found in re.findall(r"lambda [^:\n]*:[^\n]*", text)
    )
    assert not {body: n for body, n in lambdas.items() if n > 1}


def test_helpers_are_defined_once_and_used():
    texts = _texts()
    defined = Counter(name for text in texts.values() for name in re.findall(r"^def (\w+)\(", text, flags=re.M))
    assert not {name: n for name, n in defined.items() if n > 1}
    everything = "\n".join(texts.values())
    unused = [name for name in defined if name.startswith("get_") and len(re.findall(rf"\b{name}\b", everything)) < 2]
    assert not unused


def test_scripts_take_settings_from_their_rule_not_the_config():
    readers = [path.name for path in SCRIPTS if "snakemake.config" in path.read_text(encoding="utf-8")]
    assert not readers


@pytest.fixture(scope="module")
def dry_run_jobs(tmp_path_factory) -> list[dict]:
    """Every job of the default configuration's `all` target, as Snakemake would run it."""
    from conftest import copy_workflow
    from dry_run import record_jobs

    workdir = copy_workflow(tmp_path_factory.mktemp("rules") / "wf")
    jobs = record_jobs(workdir)
    assert jobs, "the dry run recorded no job"
    return jobs


def _job(jobs, rule, **wildcards):
    found = [j for j in jobs if j["rule"] == rule and all(j["wildcards"].get(k) == v for k, v in wildcards.items())]
    assert len(found) == 1, (rule, wildcards, len(found))
    return found[0]


@pytest.mark.workflow
def test_per_fold_and_per_level_params(dry_run_jobs):
    from hmf.tasks import get_task

    task = get_task("camelyon17")
    slide_classes, patient_classes = list(task.classes("slide")), list(task.classes("patient"))
    name, r = "demo_camelyon17", "results/demo_camelyon17"

    evaluate = _job(dry_run_jobs, "evaluate", level="slide", model="abmil", fold="2")
    assert evaluate["params"] == {"classes": slide_classes, "ordinal": True, "title": f"{name} slide abmil fold 2"}
    curves = _job(dry_run_jobs, "training_curves", level="patient", model="hmf_patient", fold="1")
    assert curves["params"] == {"title": f"{name} patient hmf_patient fold 1"}

    models = ["hmf_patient", "meanpool", "maxpool", "pn_rule"]
    files = [f"{r}/patient/{m}/fold_{k}/{{}}" for m in models for k in (0, 1, 2)]  # model by model, then fold
    table = _job(dry_run_jobs, "table", level="patient")
    assert table["input"]["metrics"] == [f.format("metrics.json") for f in files]
    assert table["input"]["predictions"] == [f.format("predictions.csv") for f in files]
    title = f"{name}: patient level ({', '.join(patient_classes)})"
    assert {k: table["params"][k] for k in ("models", "folds", "classes", "ordinal", "title")} == {
        "models": models,
        "folds": [0, 1, 2],
        "classes": patient_classes,
        "ordinal": True,
        "title": title,
    }
    assert len(table["params"]["notes"]) == 1 and "quadratic weighted kappa" in table["params"]["notes"][0]
    assert _job(dry_run_jobs, "table", level="slide")["params"]["notes"] == []
    assert _job(dry_run_jobs, "table_html", level="patient")["params"] == {"title": title}

    comparison = _job(dry_run_jobs, "comparison", level="slide")
    assert comparison["input"]["predictions"] == [
        f"{r}/slide/{m}/fold_{k}/predictions.csv" for m in ("hmf", "meanpool", "maxpool", "abmil") for k in (0, 1, 2)
    ]
    assert comparison["params"]["reference"] == "hmf"
    assert comparison["params"]["title"] == f"{name}: slide level, paired comparison with hmf"


@pytest.mark.workflow
def test_per_slide_inputs_and_local_jobs(dry_run_jobs):
    r = "results/demo_camelyon17"
    slides = _job(dry_run_jobs, "qc_summary")["params"]["slides"]
    assert len(slides) == 125
    summary = _job(dry_run_jobs, "qc_summary")["input"]
    assert summary["segmentation"] == [f"{r}/segmentation/{s}.json" for s in slides]
    assert summary["coords"] == [f"{r}/patches/{s}.h5" for s in slides]
    assert summary["extraction"] == [f"{r}/features/resnet50_trunc/stats/{s}.json" for s in slides]
    review = _job(dry_run_jobs, "qc_review")["input"]
    assert review["masks"] == [f"{r}/masks/{s}.jpg" for s in slides]
    assert review["stitches"] == [f"{r}/stitches/{s}.jpg" for s in slides]
    # The jobs that read the whole cohort's features depend on the feature index, which
    # depends on every feature file (in sheet order).
    features = [f"{r}/features/resnet50_trunc/h5_files/{s}.h5" for s in slides]
    index = _job(dry_run_jobs, "feature_index")
    assert index["input"]["features"] == features and index["params"]["slides"] == slides
    assert review["features"] == [f"{r}/feature_index.csv"]
    assert _job(dry_run_jobs, "train_slide", model="hmf", fold="0")["input"]["features"] == [f"{r}/feature_index.csv"]
    assert "slides" not in _job(dry_run_jobs, "train_slide", model="hmf", fold="0")["params"]

    local = {job["rule"] for job in dry_run_jobs if job["local"]}
    assert local == LOCAL_RULES & {job["rule"] for job in dry_run_jobs}
    assert {"evaluate", "table", "training_curves", "heatmap_jpeg", "prompts", "all"} <= local


def test_a_levels_files_split_by_model_as_the_rules_list_them():
    from hmf.evaluation.tables import paths_by_model

    files = [f"{m}/fold_{k}.csv" for m in ("hmf", "abmil") for k in (0, 1, 2)]
    assert paths_by_model(files, ["hmf", "abmil"], [0, 1, 2]) == {
        "hmf": ["hmf/fold_0.csv", "hmf/fold_1.csv", "hmf/fold_2.csv"],
        "abmil": ["abmil/fold_0.csv", "abmil/fold_1.csv", "abmil/fold_2.csv"],
    }
    with pytest.raises(ValueError, match="5 files for 2 models x 3 folds"):
        paths_by_model(files[:5], ["hmf", "abmil"], [0, 1, 2])
