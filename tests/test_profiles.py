"""The profiles reach every GPU job: the plan Snakemake makes with profiles/slurm and
profiles/local-gpu gives each job of a GPU rule (extraction, batched or not; slide, inner and
patient training; prediction; text encoding) the threads and the run time its profile names,
the same as its counterpart's for train_slide_inner and the extraction batches, and one GPU
unless the device of its config section is cpu (then none).

A dry run is recorded with Snakemake's dry-run executor wrapped: every job's rule, threads and
resources, as the executor would receive them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from dry_run import record_jobs

ROOT = Path(__file__).resolve().parents[1]
TINY = "tests/configs/tiny.yaml"

# The rules whose jobs compute with torch, and their config section's device key.
GPU_RULES = {
    "extract_features": "features",
    "train_slide": "training",
    "train_slide_inner": "training",
    "train_patient": "training",
    "predict_slide": "training",
    "predict_slide_inner": "training",
    "predict_patient": "training",
    "encode_text": "text",
}
# Jobs that take the profile entry of another rule.
COUNTERPART = {"train_slide_inner": "train_slide", "predict_slide_inner": "predict_slide"}


@pytest.fixture(scope="module")
def workflow(tmp_path_factory) -> Path:
    """A copy of the workflow with a predict sheet of two new slides (placeholder files: the
    plan does not read them), so that the predict rules are planned too."""
    from conftest import copy_workflow

    workdir = copy_workflow(tmp_path_factory.mktemp("profiles") / "wf")
    new = workdir / "new_slides"
    new.mkdir()
    for node in (0, 1):
        (new / f"patient_200_node_{node}.tif").write_bytes(f"placeholder {node}".encode())
    (new / "sheet.csv").write_text(
        "slide_id,patient_id,path,node\n"
        + "".join(f"patient_200_node_{n},patient_200,patient_200_node_{n}.tif,{n}\n" for n in (0, 1))
    )
    return workdir


def _plan(workdir: Path, profile: str, *options: str, **changes) -> list[dict]:
    """Every job of `all` and `predict` for the tiny configuration with cross-fitted patient
    inputs, a predict sheet and ``changes`` (section -> keys), planned with ``profile``."""
    config = yaml.safe_load((workdir / TINY).read_text())
    config["models"]["patient_inputs"] = "cross_fitted"
    config["predict"] = {"sample_sheet": "new_slides/sheet.csv"}
    for section, keys in changes.items():
        config.setdefault(section, {}).update(keys)
    (workdir / "plan.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return record_jobs(
        workdir, "all", "predict", "--configfile", "plan.yaml", "--workflow-profile", f"profiles/{profile}", *options
    )


def _profile(name: str) -> dict:
    return yaml.safe_load((ROOT / "profiles" / name / "config.yaml").read_text())


def _entry(rule: str) -> str:
    """The profile entry that reaches a job's rule: its own, extract_features for the
    extraction batch rules (extract_features_batch_<id>, predict_extract_features_batch_<id>)."""
    if rule.startswith(("extract_features", "predict_extract_features")):
        return "extract_features"
    return rule


def _settings(jobs: list[dict]) -> set[tuple]:
    return {(job["threads"], job["resources"]["runtime"], job["resources"].get("gpu")) for job in jobs}


def _gpu_jobs(jobs: list[dict]) -> dict[str, list[dict]]:
    by_rule: dict[str, list[dict]] = {}
    for job in jobs:
        if _entry(job["rule"]) in GPU_RULES:
            by_rule.setdefault(job["rule"], []).append(job)
    return by_rule


def test_profiles_name_every_gpu_rule_alike():
    slurm, local = _profile("slurm"), _profile("local-gpu")
    for rule in GPU_RULES:
        assert rule in slurm["set-threads"] and rule in slurm["set-resources"], rule
        assert rule in local["set-threads"], rule
        # the GPU comes from the rule (none for a cpu device): a profile value would replace it
        assert "gpu" not in slurm["set-resources"][rule], rule
        assert "runtime" in slurm["set-resources"][rule], rule
    for rule, counterpart in COUNTERPART.items():
        assert slurm["set-threads"][rule] == slurm["set-threads"][counterpart]
        assert slurm["set-resources"][rule] == slurm["set-resources"][counterpart]
        assert local["set-threads"][rule] == local["set-threads"][counterpart]


@pytest.mark.workflow
@pytest.mark.parametrize("slides_per_job", [1, 25])
def test_slurm_plan_gives_every_gpu_job_its_profile_entry(workflow, slides_per_job):
    auto = {"device": "auto"}
    jobs = _plan(
        workflow,
        "slurm",
        features={**auto, "slides_per_job": slides_per_job},
        training=auto,
        text=auto,
    )
    profile = _profile("slurm")
    gpu_jobs = _gpu_jobs(jobs)
    assert {_entry(rule) for rule in gpu_jobs} == set(GPU_RULES), sorted(gpu_jobs)
    extraction = [
        job for rule, rule_jobs in gpu_jobs.items() if _entry(rule) == "extract_features" for job in rule_jobs
    ]
    assert len(extraction) == (52 if slides_per_job == 1 else 3)  # 50 + 2 slides, or 2 + 1 batches
    # the same GPU, threads and run time as their counterpart (extraction: checked below)
    for rule, counterpart in COUNTERPART.items():
        assert _settings(gpu_jobs[rule]) == _settings(gpu_jobs[counterpart]), rule
    for rule, rule_jobs in gpu_jobs.items():
        entry = _entry(rule)
        for job in rule_jobs:
            assert job["resources"].get("gpu") == 1, (rule, job["resources"])
            assert job["threads"] == profile["set-threads"][entry], (rule, job["threads"])
            assert job["resources"]["runtime"] == profile["set-resources"][entry]["runtime"], (rule, job["resources"])


@pytest.mark.workflow
def test_a_cpu_device_asks_for_no_gpu(workflow):
    cpu = {"device": "cpu"}
    jobs = _plan(workflow, "slurm", features={**cpu, "slides_per_job": 25}, training=cpu, text=cpu)
    gpu_jobs = _gpu_jobs(jobs)
    assert {_entry(rule) for rule in gpu_jobs} == set(GPU_RULES)
    asked = {rule: job["resources"].get("gpu", 0) for rule, rule_jobs in gpu_jobs.items() for job in rule_jobs}
    assert set(asked.values()) == {0}, asked
    # and no other job asks for one
    assert not [job["rule"] for job in jobs if job["resources"].get("gpu", 0)]


@pytest.mark.workflow
def test_local_gpu_plan_gives_every_gpu_job_its_threads(workflow):
    # --cores: the profile's `all` would cap the threads at this machine's cores
    jobs = _plan(
        workflow,
        "local-gpu",
        "--cores",
        "64",
        features={"device": "auto", "slides_per_job": 25},
        training={"device": "auto"},
    )
    profile = _profile("local-gpu")
    gpu_jobs = _gpu_jobs(jobs)
    assert {_entry(rule) for rule in gpu_jobs} == set(GPU_RULES)
    for rule, rule_jobs in gpu_jobs.items():
        for job in rule_jobs:
            assert job["resources"].get("gpu") == 1, (rule, job["resources"])
            assert job["threads"] == profile["set-threads"][_entry(rule)], (rule, job["threads"])
