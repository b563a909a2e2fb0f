"""Training on a synthetic cohort: outputs, seeded determinism, resume after a kill, and no
label reaching a model outside its loss."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
import torch
from synthetic import make_cohort

from hmf.tasks import get_task
from hmf.training import loop
from hmf.training.patient import aggregate_patient_fold, train_patient_fold
from hmf.training.slide import SlideOutputs, train_slide_fold

TASK = get_task("camelyon17")
FAST = {"max_epochs": 4, "patience": 10, "seed": 3}


def _outputs(folder: Path) -> SlideOutputs:
    return SlideOutputs(
        *(str(folder / n) for n in ("checkpoint.pt", "train_log.csv", "predictions.csv", "embeddings.pt"))
    )


def _train(cohort, folder, model="meanpool", training=FAST, overrides=None, sheet=None):
    out = _outputs(folder)
    train_slide_fold(
        model,
        TASK,
        str(sheet or cohort["sheet"]),
        str(cohort["split"]),
        str(cohort["features"]),
        out,
        overrides=overrides,
        training=training,
        text_bank=str(cohort["text"]) if model == "hmf" else None,
    )
    return out


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return make_cohort(tmp_path_factory.mktemp("cohort"))


def test_slide_training_outputs(cohort, tmp_path):
    out = _train(cohort, tmp_path)
    preds = pd.read_csv(out.predictions)
    split = pd.read_csv(cohort["split"])
    test_patients = set(split.loc[split.split == "test", "patient_id"])
    sheet = cohort["frame"]
    assert set(preds["id"]) == set(sheet.loc[sheet.patient_id.isin(test_patients), "slide_id"])
    log = pd.read_csv(out.train_log)
    assert list(log["epoch"]) == [0, 1, 2, 3]
    assert {"train_loss", "val_loss", "val_f1_macro", "seconds"} <= set(log.columns)
    emb = torch.load(out.embeddings, weights_only=True)
    assert len(emb["slide_ids"]) == len(sheet) and emb["embeddings"].shape[0] == len(sheet)
    ckpt = torch.load(out.checkpoint, weights_only=True)
    assert ckpt["model"] == "meanpool" and ckpt["classes"] == list(TASK.classes("slide"))
    assert not Path(out.checkpoint).with_name("resume_state.pt").exists()


def test_same_seed_same_predictions(cohort, tmp_path):
    a = _train(cohort, tmp_path / "a", model="hmf", overrides={"model": {"dim": 32, "embed_dim": 64}})
    b = _train(cohort, tmp_path / "b", model="hmf", overrides={"model": {"dim": 32, "embed_dim": 64}})
    assert Path(a.predictions).read_bytes() == Path(b.predictions).read_bytes()
    assert Path(a.train_log).read_text().count("\n") == Path(b.train_log).read_text().count("\n")


def test_test_labels_do_not_change_predictions(cohort, tmp_path):
    """Permuting the labels of the test slides handed to the loader changes no logit."""
    sheet = cohort["frame"].copy()
    split = pd.read_csv(cohort["split"])
    test_patients = set(split.loc[split.split == "test", "patient_id"])
    test_rows = sheet.patient_id.isin(test_patients)
    permuted = sheet.copy()
    classes = list(TASK.classes("slide"))
    shifted = {c: classes[(i + 1) % len(classes)] for i, c in enumerate(classes)}
    permuted.loc[test_rows, "slide_label"] = permuted.loc[test_rows, "slide_label"].map(shifted)
    assert (permuted.loc[test_rows, "slide_label"] != sheet.loc[test_rows, "slide_label"]).all()
    permuted_csv = tmp_path / "permuted.csv"
    permuted.to_csv(permuted_csv, index=False)
    overrides = {"model": {"dim": 32, "embed_dim": 64}}
    a = _train(cohort, tmp_path / "a", model="hmf", overrides=overrides)
    b = _train(cohort, tmp_path / "b", model="hmf", overrides=overrides, sheet=permuted_csv)
    pa, pb = pd.read_csv(a.predictions), pd.read_csv(b.predictions)
    prob_cols = [c for c in pa.columns if c.startswith("prob_")]
    pd.testing.assert_frame_equal(pa[["id", "pred_label", *prob_cols]], pb[["id", "pred_label", *prob_cols]])
    assert list(pa["true_label"]) != list(pb["true_label"])  # the permutation did reach the loader
    ea, eb = torch.load(a.embeddings, weights_only=True), torch.load(b.embeddings, weights_only=True)
    assert torch.equal(ea["embeddings"], eb["embeddings"])


def _shift_labels(frame, rows, column, classes):
    shifted = {c: classes[(i + 1) % len(classes)] for i, c in enumerate(classes)}
    out = frame.copy()
    out.loc[rows, column] = out.loc[rows, column].map(shifted)
    assert (out.loc[rows, column] != frame.loc[rows, column]).all()
    return out


def test_validation_labels_reach_only_the_checkpoint_choice(cohort, tmp_path):
    """Permuted validation labels leave every training step unchanged (identical training
    losses); with a single epoch there is no choice to make, and no prediction changes."""
    sheet = cohort["frame"]
    split = pd.read_csv(cohort["split"])
    val_rows = sheet.patient_id.isin(set(split.loc[split.split == "val", "patient_id"]))
    permuted_csv = tmp_path / "permuted.csv"
    _shift_labels(sheet, val_rows, "slide_label", list(TASK.classes("slide"))).to_csv(permuted_csv, index=False)
    overrides = {"model": {"dim": 32, "embed_dim": 64}}
    a = _train(cohort, tmp_path / "a", model="hmf", overrides=overrides)
    b = _train(cohort, tmp_path / "b", model="hmf", overrides=overrides, sheet=permuted_csv)
    la, lb = pd.read_csv(a.train_log), pd.read_csv(b.train_log)
    assert list(la["train_loss"]) == list(lb["train_loss"])
    assert not la["val_loss"].equals(lb["val_loss"])  # the permutation did reach validation
    one = {**FAST, "max_epochs": 1}
    a = _train(cohort, tmp_path / "a1", model="hmf", overrides=overrides, training=one)
    b = _train(cohort, tmp_path / "b1", model="hmf", overrides=overrides, training=one, sheet=permuted_csv)
    assert Path(a.predictions).read_bytes() == Path(b.predictions).read_bytes()
    assert torch.equal(
        torch.load(a.embeddings, weights_only=True)["embeddings"],
        torch.load(b.embeddings, weights_only=True)["embeddings"],
    )


def test_patient_labels_of_test_and_validation_patients_do_not_change_patient_predictions(cohort, tmp_path):
    """The patient models: permuted test-patient labels change no prediction; permuted
    validation-patient labels change none with a single epoch (nothing to choose)."""
    slide = _train(cohort, tmp_path / "slide")
    sheet = cohort["frame"]
    split = pd.read_csv(cohort["split"])
    classes = list(TASK.classes("patient"))
    runs = {}
    for name, part, training in (("test", "test", FAST), ("val", "val", {**FAST, "max_epochs": 1})):
        rows = sheet.patient_id.isin(set(split.loc[split.split == part, "patient_id"]))
        permuted = _shift_labels(sheet, rows, "patient_label", classes)
        permuted_csv = tmp_path / f"{name}.csv"
        permuted.to_csv(permuted_csv, index=False)
        for label, sheet_csv in (("orig", cohort["sheet"]), ("perm", permuted_csv)):
            out = tmp_path / f"{name}_{label}"
            train_patient_fold(
                "hmf_patient",
                TASK,
                str(sheet_csv),
                str(cohort["split"]),
                slide.embeddings,
                str(out / "checkpoint.pt"),
                str(out / "train_log.csv"),
                str(out / "predictions.csv"),
                training=training,
            )
            runs[name, label] = pd.read_csv(out / "predictions.csv")
    probs = [c for c in runs["test", "orig"].columns if c.startswith("prob_")]
    for name in ("test", "val"):
        pd.testing.assert_frame_equal(
            runs[name, "orig"][["id", "pred_label", *probs]], runs[name, "perm"][["id", "pred_label", *probs]]
        )
    assert list(runs["test", "orig"]["true_label"]) != list(runs["test", "perm"]["true_label"])


def test_patience_replaces_each_models_own():
    """training.patience sets every model's patience (it is not a cap): docs/model.md says so."""
    from hmf.models.registry import training_defaults
    from hmf.training.hparams import resolve

    own = training_defaults("hmf", "slide")["patience"]
    assert resolve("slide", "hmf", None, {"patience": own + 7}).fit.patience == own + 7
    assert resolve("slide", "hmf", None, {"patience": 1}).fit.patience == 1
    assert resolve("slide", "hmf", None, {}).fit.patience == own


def test_inner_splits_hold_out_every_training_patient_once(cohort):
    from hmf.data.splits import read_split
    from hmf.training.cross_fitting import inner_splits

    outer = read_split(cohort["split"])
    folds = inner_splits(cohort["frame"], outer, k=3, val_fraction=0.2, seed=0)
    assert len(folds) == 3
    held = [
        set(f.loc[(f.split == "test") & f.patient_id.map(outer).isin(["train", "val"]), "patient_id"]) for f in folds
    ]
    non_test = {p for p, s in outer.items() if s != "test"}
    assert set().union(*held) == non_test and sum(map(len, held)) == len(non_test)
    for f in folds:
        parts = dict(zip(f.patient_id, f.split))
        assert all(parts[p] == "test" for p, s in outer.items() if s == "test")  # never trained on
        assert (f.split == "val").any() and (f.split == "train").any()
    again = inner_splits(cohort["frame"], outer, k=3, val_fraction=0.2, seed=0)
    assert all(a.equals(b) for a, b in zip(folds, again))


def test_cross_fitted_embeddings_come_from_the_inner_model_that_held_the_patient_out(cohort, tmp_path):
    from hmf.data.splits import read_split
    from hmf.training.cross_fitting import cross_fitted_embeddings, write_inner_splits

    inner_csvs = [tmp_path / f"inner_{j}.csv" for j in range(3)]
    write_inner_splits(cohort["sheet"], cohort["split"], inner_csvs, val_fraction=0.2, seed=0)
    sheet = cohort["frame"]
    ids = sorted(sheet["slide_id"])

    def fake(path, value):
        torch.save(
            {
                "slide_ids": ids,
                "embeddings": torch.full((len(ids), 4), float(value)),
                "probs": torch.full((len(ids), 4), 0.25),
                "classes": list(TASK.classes("slide")),
                "model": "meanpool",
            },
            path,
        )
        return path

    outer = fake(tmp_path / "outer.pt", 0)
    inner = [fake(tmp_path / f"inner_{j}.pt", j + 1) for j in range(3)]
    out = tmp_path / "cross.pt"
    cross_fitted_embeddings(cohort["sheet"], cohort["split"], outer, inner_csvs, inner, out)
    saved = torch.load(out, weights_only=True)
    assert saved["embeddings"].shape == (3, len(ids), 4) and saved["probs"].shape == (3, len(ids), 4)
    outer_split = read_split(cohort["split"])
    patient_of = dict(zip(sheet.slide_id, sheet.patient_id))
    for i, slide in enumerate(saved["slide_ids"]):
        patient = patient_of[slide]
        if outer_split[patient] == "test":  # block j: inner model j's embedding, never the outer model's
            assert saved["embeddings"][:, i, 0].tolist() == [1, 2, 3] and saved["source"][i] == "each_inner"
        else:  # every block: the inner model that held the patient out
            j = next(j for j, csv in enumerate(inner_csvs) if read_split(csv)[patient] == "test")
            assert saved["embeddings"][:, i, 0].tolist() == [j + 1] * 3 and saved["source"][i] == f"inner_{j}"


def test_resume_after_interruption_matches_uninterrupted(cohort, tmp_path, monkeypatch):
    training = {**FAST, "max_epochs": 6}
    full = _train(cohort, tmp_path / "full", model="abmil", training=training)

    real_fit = loop.fit

    class Killed(RuntimeError):
        pass

    def interrupted_fit(*args, **kwargs):
        def on_epoch(rows):
            kwargs_on_epoch(rows)
            if len(rows) == 3:
                raise Killed("simulated kill after epoch 2")

        kwargs_on_epoch = kwargs.pop("on_epoch")
        return real_fit(*args, on_epoch=on_epoch, **kwargs)

    monkeypatch.setattr(loop, "fit", interrupted_fit)
    with pytest.raises(Killed):
        _train(cohort, tmp_path / "resumed", model="abmil", training=training)
    state = tmp_path / "resumed" / "resume_state.pt"
    assert state.exists() and not (tmp_path / "resumed" / "predictions.csv").exists()
    monkeypatch.setattr(loop, "fit", real_fit)
    resumed = _train(cohort, tmp_path / "resumed", model="abmil", training=training)
    assert Path(resumed.predictions).read_bytes() == Path(full.predictions).read_bytes()
    log_full, log_resumed = pd.read_csv(full.train_log), pd.read_csv(resumed.train_log)
    pd.testing.assert_frame_equal(log_full.drop(columns="seconds"), log_resumed.drop(columns="seconds"))
    assert not state.exists()


def test_stale_resume_state_is_ignored(cohort, tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    torch.save({"run_id": "another run"}, folder / "resume_state.pt")
    out = _train(cohort, folder)
    assert list(pd.read_csv(out.train_log)["epoch"]) == [0, 1, 2, 3]


def test_patient_models_and_pn_rule(cohort, tmp_path):
    slide = _train(cohort, tmp_path / "slide")
    patient_dir = tmp_path / "patient"
    train_patient_fold(
        "hmf_patient",
        TASK,
        str(cohort["sheet"]),
        str(cohort["split"]),
        slide.embeddings,
        str(patient_dir / "checkpoint.pt"),
        str(patient_dir / "train_log.csv"),
        str(patient_dir / "predictions.csv"),
        training=FAST,
    )
    preds = pd.read_csv(patient_dir / "predictions.csv")
    split = pd.read_csv(cohort["split"])
    assert set(preds["id"]) == set(split.loc[split.split == "test", "patient_id"])
    assert {f"prob_{c}" for c in TASK.classes("patient")} <= set(preds.columns)

    rule = aggregate_patient_fold(
        "pn_rule", TASK, str(cohort["sheet"]), str(cohort["split"]), slide.predictions, str(tmp_path / "pn.csv")
    )
    slides = pd.read_csv(slide.predictions)
    from hmf.tasks import pn_stage

    for patient, row in rule.set_index("id").iterrows():
        expected = pn_stage(list(slides.loc[slides.id.str.startswith(patient), "pred_label"]))
        assert row["pred_label"] == expected


def test_class_weights_from_training_fold():
    from hmf.training.bags import class_weights

    weights = class_weights([0, 0, 0, 1], 3)
    assert weights[2] == 0 and weights[1] > weights[0]
    assert torch.isclose(weights[:2].mean(), torch.tensor(1.0))


def test_features_standardised_with_training_statistics(cohort, tmp_path):
    from hmf.training import standardise

    out = _train(cohort, tmp_path)
    ckpt = torch.load(out.checkpoint, weights_only=True)
    split = pd.read_csv(cohort["split"])
    sheet = cohort["frame"]
    train_patients = set(split.loc[split.split == "train", "patient_id"])
    from hmf.features.io import read_features

    train = [
        read_features(cohort["features"] / "h5_files" / f"{s}.h5")[0]
        for s in sheet.loc[sheet.patient_id.isin(train_patients), "slide_id"]
    ]
    mean, std = standardise.fit(train)
    assert torch.allclose(ckpt["feature_mean"], mean) and torch.allclose(ckpt["feature_std"], std)
    everything = [read_features(p)[0] for p in sorted((cohort["features"] / "h5_files").glob("*.h5"))]
    assert not torch.allclose(standardise.fit(everything)[0], mean)  # validation and test patches left out


def test_sigkill_mid_training_then_rerun_matches_uninterrupted(cohort, tmp_path):
    """A training process killed with SIGKILL leaves no outputs that look complete; the rerun
    resumes from the last finished epoch and ends where an uninterrupted run ends."""
    import os
    import signal
    import subprocess
    import sys
    import time

    training = {**FAST, "max_epochs": 30, "patience": 100}
    full = _train(cohort, tmp_path / "full", model="abmil", training=training)

    folder = tmp_path / "killed"
    # %r writes Python literals into the child's source.
    script = (  # noqa: UP031
        "import sys, torch; sys.path.insert(0, %r); torch.set_num_threads(1)\n"
        "from test_training import _train, TASK\n"
        "from synthetic import make_cohort\n"
        "from pathlib import Path\n"
        "cohort = {k: Path(v) for k, v in %r.items()}\n"
        "_train(cohort, Path(%r), model='abmil', training=%r)\n"
    ) % (
        str(Path(__file__).parent),
        {k: str(v) for k, v in cohort.items() if k != "frame"},
        str(folder),
        training,
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).parent)
    state = folder / "resume_state.pt"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        log = folder / "train_log.csv"
        if state.exists() and log.exists() and log.read_text().count("\n") >= 4:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert state.exists()
    assert not (folder / "predictions.csv").exists() and not (folder / "checkpoint.pt").exists()
    resumed = _train(cohort, folder, model="abmil", training=training)
    assert Path(resumed.predictions).read_bytes() == Path(full.predictions).read_bytes()
    pd.testing.assert_frame_equal(
        pd.read_csv(full.train_log).drop(columns="seconds"), pd.read_csv(resumed.train_log).drop(columns="seconds")
    )


@pytest.mark.workflow
def test_cross_fitted_patient_inputs_on_the_tiny_run(tiny_run, tmp_path):
    """models.patient_inputs: cross_fitted trains inner slide models per fold and the patient
    models on embeddings none of which comes from a model that saw its patient."""
    import shutil

    import yaml
    from conftest import run_snakemake

    from hmf.data.splits import read_split

    workdir = tmp_path / "wf"
    shutil.copytree(tiny_run, workdir, symlinks=True)
    config = yaml.safe_load((workdir / "tests/configs/tiny.yaml").read_text())
    config["models"].update(patient_inputs="cross_fitted", inner_folds=2)
    (workdir / "cf.yaml").write_text(yaml.safe_dump(config))
    run_snakemake(workdir, "tables", "--cores", "2", "--configfile", "cf.yaml")
    r = workdir / "results/tiny_camelyon17"
    sheet = pd.read_csv(r / "sample_sheet.csv", dtype=str)
    patient_of = dict(zip(sheet.slide_id, sheet.patient_id))
    for fold in (0, 1):
        outer = read_split(r / f"splits/fold_{fold}.csv")
        saved = torch.load(r / f"slide/hmf/fold_{fold}/embeddings_cross_fitted.pt", weights_only=True)
        assert saved["embeddings"].shape[0] == 2  # one block per inner model
        for slide, source in zip(saved["slide_ids"], saved["source"]):
            patient = patient_of[slide]
            if outer[patient] == "test":
                assert source == "each_inner"
            else:
                inner = read_split(r / f"splits/fold_{fold}/{source}.csv")
                assert inner[patient] == "test"  # the inner model never trained or validated on it
        cka = (workdir / f"logs/tiny_camelyon17/slide/hmf/fold_{fold}/cross_fitted.log").read_text()
        assert len(re.findall(r"inner model \d: linear CKA with the outer model", cka)) == 2
        assert (r / f"patient/hmf_patient/fold_{fold}/predictions.csv").stat().st_mtime_ns > (
            r / f"slide/hmf/fold_{fold}/inner_1/checkpoint.pt"
        ).stat().st_mtime_ns
