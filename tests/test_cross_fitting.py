"""Cross-fitted patient inputs: the patient model is trained and tested in the same embedding
spaces, those of the inner slide models, so its predictions do not depend on how the outer
and inner slide models were seeded."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hmf.data.splits import read_split
from hmf.tasks import get_task
from hmf.training.cross_fitting import cross_fitted_embeddings, linear_cka, write_inner_splits
from hmf.training.patient import train_patient_fold
from hmf.training.slide_embeddings import read_slide_embeddings, write_slide_embeddings

TASK = get_task("tcga_brca")
CLASSES = TASK.classes("patient")
LATENT, EMBEDDING = 4, 128
TRAINING = {"max_epochs": 40, "patience": 40, "seed": 0}
OVERRIDES = {"optimizer": {"lr": 0.01}}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """40 patients x 2 slides whose label is plain in a latent slide signal; one outer fold
    (10 test, 6 validation, 24 training patients) and three inner splits of it."""
    root = tmp_path_factory.mktemp("cross_fitting")
    rng = np.random.default_rng(0)
    rows, latent = [], {}
    for p in range(40):
        label = CLASSES[p % 2]
        centre = np.full(LATENT, 1.0 if p % 2 else -1.0)
        for s in range(2):
            slide = f"patient_{p:03d}_slide_{s}"
            latent[slide] = centre + 0.5 * rng.normal(size=LATENT)
            rows.append(
                {
                    "slide_id": slide,
                    "patient_id": f"patient_{p:03d}",
                    "path": f"{slide}.svs",
                    "slide_label": label,
                    "patient_label": label,
                    "node": "",
                    "mpp": "",
                }
            )
    sheet = root / "sample_sheet.csv"
    pd.DataFrame(rows).to_csv(sheet, index=False)
    parts = ["test"] * 10 + ["val"] * 6 + ["train"] * 24
    split = root / "fold_0.csv"
    pd.DataFrame({"patient_id": [f"patient_{p:03d}" for p in range(40)], "split": parts}).to_csv(split, index=False)
    inner_splits = [root / f"inner_{j}.csv" for j in range(3)]
    write_inner_splits(sheet, split, inner_splits, val_fraction=0.2, seed=0)
    return {"root": root, "sheet": sheet, "split": split, "inner_splits": inner_splits, "latent": latent}


def slide_model_embeddings(cohort, path, seed: int):
    """The embeddings file of a slide model trained with ``seed``: every seed learns its own
    space, here a random ReLU layer over the latent signal drawn from the seed."""
    rng = np.random.default_rng(1000 + seed)
    weight, bias = rng.normal(size=(EMBEDDING, LATENT)), rng.normal(size=EMBEDDING)
    ids = sorted(cohort["latent"])
    embeddings = np.stack([np.maximum(weight @ cohort["latent"][s] + bias, 0.0) for s in ids])
    write_slide_embeddings(path, ids, embeddings, np.full((len(ids), 2), 0.5), CLASSES, model="abmil")
    return path


def patient_predictions(cohort, embeddings, name: str) -> pd.DataFrame:
    out = cohort["root"] / name
    out.mkdir(exist_ok=True)
    train_patient_fold(
        "meanpool",
        TASK,
        str(cohort["sheet"]),
        str(cohort["split"]),
        str(embeddings),
        str(out / "checkpoint.pt"),
        str(out / "train_log.csv"),
        str(out / "predictions.csv"),
        overrides=OVERRIDES,
        training=TRAINING,
    )
    return pd.read_csv(out / "predictions.csv").set_index("id").sort_index()


def cross_fitted(cohort, outer_seed: int, inner_seeds: list[int], name: str):
    root = cohort["root"]
    outer = slide_model_embeddings(cohort, root / f"{name}_outer.pt", outer_seed)
    inner = [slide_model_embeddings(cohort, root / f"{name}_inner_{j}.pt", s) for j, s in enumerate(inner_seeds)]
    out = root / f"{name}.pt"
    result = cross_fitted_embeddings(cohort["sheet"], cohort["split"], outer, cohort["inner_splits"], inner, out)
    return out, result


def accuracy(predictions: pd.DataFrame) -> float:
    return float((predictions["pred_label"] == predictions["true_label"]).mean())


def test_patient_predictions_do_not_depend_on_the_inner_models_seeds(cohort):
    in_sample = patient_predictions(cohort, slide_model_embeddings(cohort, cohort["root"] / "outer.pt", 0), "in")
    same_file, same = cross_fitted(cohort, 0, [0, 0, 0], "same")
    other_file, other = cross_fitted(cohort, 0, [1, 2, 3], "other")
    same_seed = patient_predictions(cohort, same_file, "same")
    other_seeds = patient_predictions(cohort, other_file, "other")

    assert accuracy(in_sample) == 1.0
    assert accuracy(same_seed) == 1.0
    # Inner models seeded apart from the outer one (and from each other): the test patients are
    # embedded by the same inner models the patient model learned from, so nothing changes.
    assert accuracy(other_seeds) == 1.0
    assert (other_seeds["pred_label"] == same_seed["pred_label"]).all()
    # The logged agreement of the outer and inner spaces: the same map, or other maps (that
    # still encode the same signal: CKA near 1 does not make the coordinates interchangeable).
    assert same["cka"] == pytest.approx([1.0] * 3)
    assert max(other["cka"]) < 0.999

    # The earlier design (test patients embedded by the outer model, a space the patient model
    # never saw) on the same files collapses once the seeds differ.
    saved = read_slide_embeddings(other_file)
    outer = read_slide_embeddings(cohort["root"] / "other_outer.pt")
    split = read_split(cohort["split"])
    test_rows = [i for i, s in enumerate(saved.slide_ids) if split[s.rsplit("_slide_", 1)[0]] == "test"]
    mixed = saved.embeddings[0].clone()
    mixed[test_rows] = outer.embeddings[test_rows]
    write_slide_embeddings(cohort["root"] / "as_built.pt", saved.slide_ids, mixed, saved.probs[0], CLASSES)
    as_built = patient_predictions(cohort, cohort["root"] / "as_built.pt", "as_built")
    assert accuracy(as_built) <= 0.7


def test_training_patients_need_one_embedding_per_slide(cohort):
    """A cross-fitted file gives a training patient the same row in every block; a file whose
    blocks disagree there is refused, naming the file and the patient."""
    file, _ = cross_fitted(cohort, 0, [1, 2, 3], "blocks")
    saved = read_slide_embeddings(file)
    split = read_split(cohort["split"])
    row = next(i for i, s in enumerate(saved.slide_ids) if split[s.rsplit("_slide_", 1)[0]] == "train")
    embeddings = saved.embeddings.clone()
    embeddings[1, row] += 1.0
    bad = cohort["root"] / "bad_blocks.pt"
    write_slide_embeddings(bad, saved.slide_ids, embeddings, saved.probs, CLASSES, source=saved.source)
    patient = saved.slide_ids[row].rsplit("_slide_", 1)[0]
    with pytest.raises(ValueError, match=rf"bad_blocks.pt: training/validation patient {patient} has different"):
        patient_predictions(cohort, bad, "bad")


def test_a_slide_missing_from_an_inner_model_is_named(cohort):
    root = cohort["root"]
    outer = slide_model_embeddings(cohort, root / "m_outer.pt", 0)
    inner = [slide_model_embeddings(cohort, root / f"m_inner_{j}.pt", j + 1) for j in range(3)]
    saved = read_slide_embeddings(inner[2])
    write_slide_embeddings(inner[2], saved.slide_ids[1:], saved.embeddings[1:], saved.probs[1:], CLASSES)
    with pytest.raises(ValueError, match=rf"m_inner_2.pt: no embedding of slide\(s\) \['{saved.slide_ids[0]}'\]"):
        cross_fitted_embeddings(cohort["sheet"], cohort["split"], outer, cohort["inner_splits"], inner, root / "m.pt")


def test_linear_cka():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 8))
    rotation = np.linalg.qr(rng.normal(size=(8, 8)))[0]
    assert linear_cka(x, 2.5 * x @ rotation + 1.0) == pytest.approx(1.0)
    assert linear_cka(x, rng.normal(size=(50, 8))) < 0.4
    assert np.isnan(linear_cka(x[:1], x[:1]))
    assert np.isnan(linear_cka(x, np.ones((50, 3))))
    with pytest.raises(ValueError, match="50 rows against 49"):
        linear_cka(x, x[:49])


@pytest.mark.workflow
def test_cross_fitted_predict_runs_each_folds_inner_models(tmp_path):
    """The `predict` target with cross-fitted inputs (a dry run of the demo configuration):
    per outer fold, the fold's inner checkpoints of the source model embed the new slides, and
    a trained patient model reads those files, fold by fold; the pN rule keeps the outer
    models' predictions."""

    import yaml
    from conftest import copy_workflow
    from dry_run import record_jobs

    workdir = copy_workflow(tmp_path / "wf")
    new = workdir / "new"
    new.mkdir()
    rows = [
        {
            "slide_id": f"patient_900_node_{n}",
            "patient_id": "patient_900",
            "path": f"patient_900_node_{n}.tif",
            "node": n,
        }
        for n in range(5)
    ]
    for row in rows:
        (new / row["path"]).write_bytes(f"slide {row['slide_id']}".encode())
    pd.DataFrame(rows).to_csv(new / "sheet.csv", index=False)
    config = yaml.safe_load((workdir / "config/config.yaml").read_text())
    config["models"].update(patient_inputs="cross_fitted", inner_folds=2)
    config["predict"] = {"sample_sheet": "new/sheet.csv"}
    (workdir / "cf.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    jobs = record_jobs(workdir, "predict", "--configfile", "cf.yaml", "--cores", "1")
    r = "results/demo_camelyon17"
    folds = sorted({int(j["wildcards"]["fold"]) for j in jobs if j["rule"] == "train_slide"})
    inner = {j["wildcards"]["fold"]: j["input"] for j in jobs if j["rule"] == "predict_slide_inner"}
    assert sorted(map(int, inner)) == folds and all(
        j["wildcards"]["model"] == "hmf" for j in jobs if j["rule"] == "predict_slide_inner"
    )
    for fold, inputs in inner.items():
        assert inputs["checkpoints"] == [f"{r}/slide/hmf/fold_{fold}/inner_{j}/checkpoint.pt" for j in (0, 1)]
    patient = {j["wildcards"]["model"]: j["input"] for j in jobs if j["rule"] == "predict_patient"}
    assert patient["hmf_patient"]["inner"] == [f"{r}/predict/slide/hmf/fold_{k}/embeddings_inner.pt" for k in folds]
    assert patient["hmf_patient"]["embeddings"] == []
    assert patient["hmf_patient"]["checkpoints"] == [f"{r}/patient/hmf_patient/fold_{k}/checkpoint.pt" for k in folds]
    assert (
        patient["pn_rule"]["embeddings"] == [f"{r}/predict/slide/hmf/embeddings.pt"]
        and patient["pn_rule"]["inner"] == []
    )
    assert {j["wildcards"]["fold"] for j in jobs if j["rule"] == "cross_fitted_embeddings"} == set(inner)
