"""The two kinds of config keys: each key of the schema says whether a change of its value
changes what the jobs write (``x-reruns: true``) or only how and where they run
(``x-reruns: false``). A rule's params hold the first kind only (hmf.settings.result_params),
so on a finished run a changed run-time key plans nothing, and a changed result key reruns the
jobs that read it and those after them, no others. The jobs read the run-time keys from the
config (hmf.settings.job_section)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from conftest import run_snakemake

TINY = "tests/configs/tiny.yaml"

# A changed value for every run-time key (the tiny configuration's, or the schema's default,
# is the other value). The test below requires one for each key the schema marks run-time.
RUNTIME_CHANGES = {
    "features.allow_download": True,
    "features.device": "auto",  # tiny: cpu (auto then asks Snakemake for a GPU)
    "features.batch_size": 3,
    "features.num_workers": 1,
    "features.num_threads": 1,
    "features.cpu_streams": 1,
    "features.cpu_optimize": "none",
    "features.progress_interval_s": 1,
    "features.slides_per_job": 16,  # tiny: 25 (batches are kept once made)
    "preprocessing.slides_per_job": 16,  # tiny: 25
    "text.allow_download": True,
    "text.device": "cpu",
    "text.batch_size": 4,
    "text.llm.base_url": "http://localhost:9/v1",
    "text.llm.api_key_env": "OTHER_KEY_VARIABLE",
    "text.llm.timeout_s": 5,
    "text.llm.max_retries": 1,
    "text.llm.backoff_s": 0.5,
    "training.device": "cpu",
    "training.cache_mb": 512,
}


def _set(config: dict, dotted: str, value) -> None:
    *path, last = dotted.split(".")
    node = config
    for key in path:
        node = node.setdefault(key, {})
    node[last] = value


def _planned(workdir: Path, changes: dict) -> dict[str, int]:
    """Rule -> jobs that `snakemake -n` plans on the finished run with ``changes`` to the tiny
    configuration (empty: nothing to be done)."""
    config = yaml.safe_load((workdir / TINY).read_text())
    for key, value in changes.items():
        _set(config, key, value)
    (workdir / "changed.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    proc = run_snakemake(workdir, "-n", "--quiet", "rules", "--configfile", "changed.yaml", timeout=600)
    out = proc.stdout + proc.stderr
    if "Nothing to be done" in out:
        return {}
    table = out.split("Job stats:", 1)[1].split("total", 1)[0]
    return {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)\s*$", table, flags=re.M)}


# -- without the workflow ---------------------------------------------------------------------


def test_every_schema_key_says_whether_it_reruns():
    from hmf.settings import key_kinds

    kinds = key_kinds()
    assert not [key for key, kind in kinds.items() if kind is None], "keys without x-reruns"
    assert not [key for key, kind in kinds.items() if not isinstance(kind, bool)]
    runtime = {key for key, kind in kinds.items() if kind is False}
    assert runtime == set(RUNTIME_CHANGES), "every run-time key needs a changed value in RUNTIME_CHANGES"
    # the keys a job's outputs depend on stay result keys
    for key in ("features.precision", "features.encoder", "training.seed", "training.bf16", "splits.seed"):
        assert kinds[key] is True, key


def test_result_params_leave_out_run_time_keys():
    from hmf.settings import result_params, section

    training = section("training", {"seed": 3, "cache_mb": 512, "device": "cuda"})
    params = result_params("training", training)
    assert params["seed"] == 3 and "cache_mb" not in params and "device" not in params
    assert result_params("training", {**training, "cache_mb": 64, "device": "cpu"}) == params
    assert result_params("training", {**training, "seed": 4}) != params

    features = section("features", {"device": "cpu", "slides_per_job": 8, "precision": "auto"})
    params = result_params("features", features)
    assert params["precision"] == "auto" and params["encoder"] == "resnet50_trunc"
    assert not {"device", "batch_size", "num_threads", "allow_download"} & set(params)

    # a nested section: text.llm holds keys of both kinds
    text = section("text", {"source": "llm", "llm": {"base_url": "http://h/v1", "timeout_s": 9, "model": "m"}})
    params = result_params("text", text)
    assert params["llm"]["model"] == "m" and params["source"] == "llm"
    assert not {"base_url", "timeout_s", "api_key_env", "max_retries", "backoff_s"} & set(params["llm"])
    assert "device" not in params and "batch_size" not in params

    preprocessing = section("preprocessing", {"patching": {"patch_size": 128}})
    assert result_params("preprocessing", preprocessing, only=("preset", "segmentation")) == {
        "preset": "bwh_biopsy",
        "segmentation": preprocessing["segmentation"],
    }
    with pytest.raises(KeyError, match="no key"):
        result_params("preprocessing", preprocessing, only=("patch",))


def test_text_jobs_params_hold_no_run_time_key():
    from hmf.settings import result_params
    from hmf.text.settings import encoding_params, prompts_params, text_settings

    base = {"source": "llm", "llm": {"model": "m"}}
    other = {
        "source": "llm",
        "device": "cpu",
        "batch_size": 2,
        "allow_download": True,
        "llm": {"model": "m", "base_url": "http://h/v1", "api_key_env": "K2", "timeout_s": 3, "max_retries": 0},
    }
    for params in (prompts_params, lambda t: encoding_params(t, "minilm")):
        assert result_params("text", params(text_settings(base))) == result_params("text", params(text_settings(other)))
    changed = {"source": "llm", "llm": {"model": "m2"}}
    assert result_params("text", prompts_params(text_settings(changed))) != result_params(
        "text", prompts_params(text_settings(base))
    )


def test_a_job_takes_result_keys_from_params_and_run_time_keys_from_the_config():
    from hmf.settings import job_section, result_params, section

    planned = section("training", {"seed": 3, "cache_mb": 512, "device": "cpu"})
    config = {"training": {**planned, "seed": 99, "cache_mb": 64, "device": "cuda:1"}}
    job = SimpleNamespace(params=SimpleNamespace(training=result_params("training", planned)), config=config)
    seen = job_section(job, "training")
    assert (seen["seed"], seen["cache_mb"], seen["device"]) == (3, 64, "cuda:1")

    # a rule without the section in its params: result keys at the schema's defaults
    seen = job_section(SimpleNamespace(params=SimpleNamespace(), config=config), "training")
    assert (seen["seed"], seen["device"]) == (0, "cuda:1")

    text = {"source": "llm", "llm": {"model": "m", "api_key_env": "MY_KEY", "timeout_s": 7}}
    params = result_params("text", section("text", text))
    seen = job_section(SimpleNamespace(params=SimpleNamespace(text=params), config={"text": text}), "text")
    assert seen["llm"]["api_key_env"] == "MY_KEY" and seen["llm"]["timeout_s"] == 7 and seen["llm"]["model"] == "m"


# -- on a finished tiny run ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished(tiny_run, tmp_path_factory) -> Path:
    """A copy of the finished tiny run (dry runs only)."""
    workdir = tmp_path_factory.mktemp("rerun") / "wf"
    shutil.copytree(tiny_run, workdir, symlinks=True)
    assert _planned(workdir, {}) == {}, "the tiny run is not finished"
    return workdir


@pytest.mark.workflow
def test_run_time_keys_plan_nothing(finished):
    # One dry run for every run-time key (training.cache_mb and training.device and
    # features.device among them); a failure names the keys one by one.
    planned = _planned(finished, RUNTIME_CHANGES)
    if planned:
        culprits = {key: jobs for key, value in RUNTIME_CHANGES.items() if (jobs := _planned(finished, {key: value}))}
        pytest.fail(f"run-time keys planned jobs on a finished run: {culprits or planned}")


# The jobs after the slide models of the tiny run (2 slide models x 2 folds; hmf_patient
# trained on hmf's embeddings, pn_rule aggregating hmf's predictions; heatmaps of hmf).
AFTER_SLIDE_MODELS = {
    "train_patient",
    "aggregate_patient",
    "evaluate",
    "training_curves",
    "heatmap",
    "heatmap_jpeg",
    "table",
    "table_html",
    "comparison",
    "all",
}


def _extraction(planned: dict[str, int]) -> int:
    """Extraction jobs planned: one-slide jobs and batches (extract_features_batch_<id>)."""
    return sum(n for rule, n in planned.items() if rule.startswith("extract_features"))


def _segmentation(planned: dict[str, int]) -> int:
    """Segmentation jobs planned: one-slide jobs and batches (segment_and_patch_batch_<id>)."""
    return sum(n for rule, n in planned.items() if rule.startswith("segment_and_patch"))


@pytest.mark.workflow
def test_result_keys_rerun_exactly_the_jobs_that_read_them(finished):
    # training.seed: every model, nothing before them
    planned = _planned(finished, {"training.seed": 1})
    assert planned["train_slide"] == 4 and planned["train_patient"] == 2
    assert set(planned) == {"train_slide"} | AFTER_SLIDE_MODELS, planned

    # one model's parameter: that model's folds only (meanpool keeps its checkpoints)
    planned = _planned(finished, {"models.slide_params.hmf.model": {"dim": 32, "embed_dim": 128}})
    assert planned["train_slide"] == 2 and planned["evaluate"] == 6, planned
    assert set(planned) == {"train_slide"} | AFTER_SLIDE_MODELS, planned

    # the folds: the splits and every job after them, no preprocessing, no text
    planned = _planned(finished, {"splits.seed": 1})
    assert planned["splits"] == 2 and planned["train_slide"] == 4  # one splits job per fold
    assert not _extraction(planned) and not _segmentation(planned), planned
    assert not set(planned) & {"prompts", "encode_text", "sample_sheet", "qc_summary"}, planned

    # the encoder's precision (auto too: see docs/configuration.md): every slide's features again
    planned = _planned(finished, {"features.precision": "auto"})
    assert _extraction(planned) == 2, planned  # the tiny run's two batches, as they were
    assert {"train_slide", "qc_summary", "qc_review"} <= set(planned)
    assert not _segmentation(planned), planned
    assert not set(planned) & {"splits", "prompts", "encode_text", "sample_sheet"}, planned

    # a patching key: segmentation and patching (the tiny run's two batches) and what follows
    planned = _planned(finished, {"preprocessing.patching.stitch_downsample": 32})
    assert _segmentation(planned) == 2 and _extraction(planned) == 2 and "splits" not in planned, planned

    # a heatmap key: the heatmaps, not the QC review beside them in the report
    planned = _planned(finished, {"report.top_k": 4})
    assert set(planned) == {"heatmap", "heatmap_jpeg", "all"}, planned


@pytest.mark.workflow
def test_batches_are_kept_whatever_slides_per_job_says(finished):
    from hmf.batches import batch_folder, read_manifests

    results = next(finished.glob("results/*/sample_sheet.csv")).parent
    for folder in (results / "patches", next(results.glob("features/*"))):
        # tiny: 50 slides, 25 per segmentation and per extraction job
        assert sorted(len(m) for m in read_manifests(batch_folder(folder))) == [25, 25], folder
    # one slide per job, or other batch sizes: the slides keep the batches that did them
    for size in (1, 7, 50):
        planned = _planned(finished, {"features.slides_per_job": size, "preprocessing.slides_per_job": size})
        assert planned == {}, size
