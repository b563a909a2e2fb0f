"""The workflow from an existing folder of CLAM-layout feature files (bring your own features),
and preprocessing without labels."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
import torch
import yaml
from conftest import copy_workflow, run_snakemake
from synthetic import make_cohort

pytestmark = pytest.mark.workflow
R = "results/byo"


def _config(cohort: dict, features, models=("hmf", "meanpool")) -> dict:
    return {
        "dataset": {"name": "byo", "task": "camelyon17", "format": "generic", "sample_sheet": str(cohort["sheet"])},
        "features": {"precomputed_dir": str(features)},
        "text": {"source": "bank", "encoder": "minilm"},
        "splits": {"k": 2, "val_fraction": 0.2, "seed": 0},
        "models": {
            "slide": list(models),
            "patient": ["hmf_patient", "pn_rule"],
            "slide_params": {"hmf": {"model": {"dim": 32, "embed_dim": 64}}},
        },
        "training": {"max_epochs": 2, "seed": 0},
    }


def _write(workdir, config: dict, name: str = "byo.yaml"):
    path = workdir / name
    path.write_text(yaml.safe_dump(config))
    return path.name


@pytest.fixture(scope="module")
def byo(tmp_path_factory):
    root = tmp_path_factory.mktemp("byo")
    cohort = make_cohort(root / "cohort")
    features = cohort["features"]
    # A few slides only as CLAM's pt_files/ (features alone), the rest as h5_files/.
    (features / "pt_files").mkdir()
    import h5py

    for h5 in sorted((features / "h5_files").glob("*.h5"))[:3]:
        with h5py.File(h5) as fh:
            torch.save(torch.from_numpy(fh["features"][()]), features / "pt_files" / f"{h5.stem}.pt")
        h5.unlink()
    workdir = copy_workflow(root / "wf")
    return {"workdir": workdir, "cohort": cohort, "features": features}


def test_a_run_from_clam_feature_files_reaches_the_tables(byo):
    workdir = byo["workdir"]
    config = _write(workdir, _config(byo["cohort"], byo["features"]))
    dry = run_snakemake(workdir, "-n", "--configfile", config)
    for skipped in ("segment_and_patch", "extract_features", "qc_summary"):
        assert f"rule {skipped}:" not in dry.stdout, skipped
    run_snakemake(workdir, "--cores", "2", "--configfile", config)
    for level, models in (("slide", ["hmf", "meanpool"]), ("patient", ["hmf_patient", "pn_rule"])):
        table = pd.read_csv(workdir / R / f"tables/{level}.csv", keep_default_na=False)
        assert list(table["model"]) == models
    sheet = pd.read_csv(byo["cohort"]["sheet"])
    predicted = pd.concat(pd.read_csv(workdir / R / f"slide/hmf/fold_{k}/predictions.csv") for k in (0, 1))
    assert sorted(predicted["id"]) == sorted(sheet["slide_id"])  # pt-only slides included
    assert not (workdir / R / "features").exists() and not (workdir / R / "masks").exists()


def test_missing_or_mismatched_files_fail_before_any_job(byo, tmp_path):
    workdir, cohort = byo["workdir"], byo["cohort"]
    broken = tmp_path / "features"
    shutil.copytree(byo["features"], broken)
    first = sorted((broken / "h5_files").glob("*.h5"))[0]
    first.unlink()
    failed = run_snakemake(
        workdir, "-n", "--configfile", _write(workdir, _config(cohort, broken), "a.yaml"), check=False
    )
    assert failed.returncode != 0
    assert f"slide {first.stem}: no feature file" in failed.stdout + failed.stderr

    shutil.rmtree(broken)
    shutil.copytree(byo["features"], broken)
    pt = sorted((broken / "pt_files").glob("*.pt"))[0]
    torch.save(torch.zeros(4, 7), pt)
    failed = run_snakemake(
        workdir, "-n", "--configfile", _write(workdir, _config(cohort, broken), "b.yaml"), check=False
    )
    said = failed.stdout + failed.stderr
    assert failed.returncode != 0 and "have features of different sizes" in said
    assert pt.stem in said and ("(7 and 16)" in said or "(16 and 7)" in said)

    failed = run_snakemake(
        workdir,
        "-n",
        "--configfile",
        _write(workdir, _config(cohort, byo["features"], models=("hmf", "gatmil")), "c.yaml"),
        check=False,
    )
    assert failed.returncode != 0
    assert "has no patch coordinates, which gatmil needs" in failed.stdout + failed.stderr


def test_preprocessing_needs_no_labels(tmp_path, aperio_slide):
    """Two unlabelled slides: the features target plans; a target that trains says why not."""
    workdir = copy_workflow(tmp_path / "wf")
    sheet = tmp_path / "sheet.csv"
    second = tmp_path / "second.svs"  # one slide file in two rows is refused: a copy with its own last bytes
    second.write_bytes(aperio_slide.read_bytes() + b"second")
    pd.DataFrame({"slide_id": ["a", "b"], "patient_id": ["p1", "p2"], "path": [str(aperio_slide), str(second)]}).to_csv(
        sheet, index=False
    )
    config = {"dataset": {"name": "unlabelled", "task": "camelyon17", "format": "generic", "sample_sheet": str(sheet)}}
    name = _write(workdir, config)
    dry = run_snakemake(workdir, "-n", "features", "--configfile", name)
    assert "extract_features" in dry.stdout
    failed = run_snakemake(workdir, "-n", "--configfile", name, check=False)
    assert failed.returncode != 0
    assert "slide a has no patient label" in failed.stdout + failed.stderr
